"""Calibration data: prices and chosen bundles, one row per observation (a structure of arrays).

The long table (Parquet or CSV) has one row per observation and good:

============  ========  =====================================================================
column        required  meaning
============  ========  =====================================================================
``market``    yes       observation id (a round or a market); with the agent, one observation
``agent``     one of    the agent's id (integer >= 0)
``group``     one of    the agent's group (any label); ``--per group`` pools its agents
``good``      yes       the good's name; every observation lists every good once
``price``     yes       positive price the agent faced
``quantity``  one of    the chosen bundle (>= 0)
``net_trade`` one of    bundle minus endowment (needs ``endowment``)
``endowment`` no        the agent's endowment (wealth ``p . e``; else wealth = ``p . x``)
============  ========  =====================================================================

Other columns are ignored (the example files carry ``true_share`` and ``true_sigma``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


class CalibrationError(ValueError):
    """The calibration data or options are invalid (one-line message)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Observations:
    """Demand observations of ``n_units`` units (agents or groups) over ``n_goods`` goods.

    Attributes
    ----------
    prices : (n_obs, g) positive prices of each observation
    quantities : (n_obs, g) chosen bundles, non-negative
    endowments : (n_obs, g) what wealth is computed from: the endowment, or the bundle
        itself when no endowment was observed (wealth = expenditure)
    unit : (n_obs,) int — the unit (row of the estimates) each observation belongs to
    units : tuple of str — unit labels, ``units[unit[t]]``
    goods : tuple of str
    market : (n_obs,) str — the observation ids, for figures and tables
    """

    prices: np.ndarray
    quantities: np.ndarray
    endowments: np.ndarray
    unit: np.ndarray
    units: tuple[str, ...]
    goods: tuple[str, ...]
    market: np.ndarray

    @property
    def n_obs(self) -> int:
        return self.prices.shape[0]

    @property
    def n_goods(self) -> int:
        return self.prices.shape[1]

    @property
    def n_units(self) -> int:
        return len(self.units)

    @property
    def wealth(self) -> np.ndarray:
        """``p . e`` per observation; (n_obs,)."""
        return np.einsum("ij,ij->i", self.prices, self.endowments)

    @property
    def budget_shares(self) -> np.ndarray:
        """Observed expenditure shares ``p_j x_j / w``; (n_obs, g)."""
        return self.prices * self.quantities / self.wealth[:, None]

    def rows(self, u: int) -> np.ndarray:
        """Indices of unit ``u``'s observations."""
        return np.flatnonzero(self.unit == u)

    def check(self, min_obs: int = 2) -> None:
        """Refuse data that cannot identify anything (CalibrationError, one line)."""
        for name in ("prices", "quantities", "endowments"):
            arr = getattr(self, name)
            if not np.isfinite(arr).all():
                raise CalibrationError(f"{name}: NaN or infinite values")
        if (self.prices <= 0).any():
            raise CalibrationError("price: expected positive prices")
        if (self.quantities < 0).any():
            raise CalibrationError("quantity: negative quantities (a bundle is >= 0)")
        if (self.wealth <= 0).any():
            t = int(np.argmin(self.wealth))
            raise CalibrationError(f"market {self.market[t]}: the agent has no wealth")
        counts = np.bincount(self.unit, minlength=self.n_units)
        if self.n_goods < 2:
            raise CalibrationError(f"need at least 2 goods, got {self.n_goods}")
        if counts.min() < min_obs:
            u = int(np.argmin(counts))
            raise CalibrationError(
                f"too few observations: unit {self.units[u]!r} has {counts[u]}, at least "
                f"{min_obs} markets are needed per unit"
            )


REQUIRED = ("market", "good", "price")


def read_table(path: str | Path):
    """A Parquet or CSV file as a pandas DataFrame (CalibrationError if unreadable)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{str(path)!r} is not a file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise CalibrationError(f"{str(path)!r}: cannot read ({type(exc).__name__})") from None
    raise CalibrationError(f"{str(path)!r}: expected a .parquet or .csv file")


def from_table(table, per: str = "agent", min_obs: int = 2) -> Observations:
    """Observations from the long table (a pandas DataFrame); ``per``: ``agent`` or ``group``.

    Raises CalibrationError (one line) for missing columns, NaN, non-positive prices,
    negative bundles, bad agent ids, observations missing a good, or too few observations.
    """
    import pandas as pd

    if per not in ("agent", "group"):
        raise CalibrationError(f"--per: expected agent or group, got {per!r}")
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise CalibrationError(
            f"missing column(s) {', '.join(missing)} (see docs/11-calibration.md)"
        )
    who = per if per in table.columns else None
    if who is None:
        raise CalibrationError(f"--per {per}: the data has no {per!r} column")
    agent = "agent" if "agent" in table.columns else "group"
    if "quantity" in table.columns:
        quantity = "quantity"
    elif "net_trade" in table.columns:
        if "endowment" not in table.columns:
            raise CalibrationError(
                "net_trade needs an endowment column (bundle = endowment + net_trade)"
            )
        quantity = "net_trade"
    else:
        raise CalibrationError("missing column: quantity or net_trade")
    if len(table) == 0:
        raise CalibrationError("the data has no rows")
    cols = ["market", agent, "good", "price", quantity]
    if who != agent:
        cols.append(who)
    if "endowment" in table.columns:
        cols.append("endowment")
    df = table[cols].copy()
    for c in ("price", quantity, *(["endowment"] if "endowment" in df else [])):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if df.isna().any().any():
        bad = [c for c in df.columns if df[c].isna().any()]
        raise CalibrationError(f"NaN or non-numeric values in column(s) {', '.join(bad)}")
    if agent == "agent":
        ids = pd.to_numeric(df["agent"], errors="coerce")
        if ids.isna().any() or (ids < 0).any() or (ids != np.floor(ids)).any():
            raise CalibrationError("agent: unknown agent ids (expected integers >= 0)")
    if (df["price"] <= 0).any():
        raise CalibrationError("price: expected positive prices")
    if "endowment" in df and (df["endowment"] < 0).any():
        raise CalibrationError("endowment: negative endowments")
    if who != agent:
        groups_per_agent = df.groupby(agent)[who].nunique()
        if (groups_per_agent > 1).any():
            raise CalibrationError(
                f"agent {groups_per_agent.idxmax()} is listed in more than one group"
            )
    goods = tuple(str(g) for g in pd.unique(df["good"]))
    df["good"] = df["good"].astype(str)
    key = ["market", agent]
    if df.duplicated([*key, "good"]).any():
        raise CalibrationError("an observation (market, agent) lists a good twice")
    wide = df.pivot_table(index=key, columns="good", values=["price", quantity]
                          + (["endowment"] if "endowment" in df else []), aggfunc="first")  # fmt: skip
    if wide.isna().any().any():
        raise CalibrationError("an observation (market, agent) does not list every good")
    prices = wide["price"][list(goods)].to_numpy(float)
    endow = wide["endowment"][list(goods)].to_numpy(float) if "endowment" in df else None
    q = wide[quantity][list(goods)].to_numpy(float)
    if quantity == "net_trade":
        q = endow + q
        if (q < -1e-12 * np.maximum(1.0, endow)).any():
            raise CalibrationError("net_trade: an agent sells more than its endowment")
        q = np.maximum(q, 0.0)
    if endow is None:
        endow = q.copy()
    index = wide.index.to_frame(index=False)
    labels = index[agent] if who == agent else index[agent].map(df.groupby(agent)[who].first())
    labels = labels.astype(str)
    units = tuple(sorted(pd.unique(labels), key=_natural))
    unit = labels.map({u: k for k, u in enumerate(units)}).to_numpy(np.int64)
    obs = Observations(prices, q, endow, unit, units, goods, index["market"].astype(str).to_numpy())
    obs.check(min_obs)
    return obs


def _natural(label: str):
    """Sort ``"2"`` before ``"10"``; labels that are not numbers after numbers."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)
