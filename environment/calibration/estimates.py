"""The outcome of a calibration, whatever made it: estimates per unit in natural units."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Estimates:
    """Estimated CES parameters of ``n_units`` units over ``g`` goods.

    Attributes
    ----------
    method : str — ``least-squares``, ``random`` or ``optuna`` (and the mode, e.g.
        ``least-squares (demand)``)
    units, goods : tuple of str
    shares : (n_units, g) normalized shares (sum 1 per unit; 0 on never-bought goods)
    sigma : (n_units,)
    share_se, sigma_se : same shapes — standard errors (NaN: not identified or not computed)
    share_identified, sigma_identified : same shapes, bool
    objective : (n_units,) — ``1/2 |r|^2 (+ penalty)`` at the estimate
    evaluations : (n_units,) int — demand-system evaluations (mode ``path``: dynamics runs)
    notes : per unit, the reasons a parameter is not identified
    condition : (n_units,) — condition number of the data Jacobian (inf: a flat direction)
    """

    method: str
    units: tuple[str, ...]
    goods: tuple[str, ...]
    shares: np.ndarray
    sigma: np.ndarray
    share_se: np.ndarray
    sigma_se: np.ndarray
    share_identified: np.ndarray
    sigma_identified: np.ndarray
    objective: np.ndarray
    evaluations: np.ndarray
    notes: tuple[tuple[str, ...], ...]
    condition: np.ndarray

    @property
    def total_objective(self) -> float:
        return float(self.objective.sum())

    @property
    def total_evaluations(self) -> int:
        return int(self.evaluations.sum())

    def errors(self, true_shares: np.ndarray, true_sigma: np.ndarray) -> dict:
        """Largest absolute errors against known parameters: ``share`` (over units and
        goods), ``sigma`` (relative, ``|s_hat / s - 1|``), and ``coverage``: the fraction of
        identified parameters within 1.96 standard errors of the truth (NaN: none)."""
        true_shares = np.asarray(true_shares, dtype=float)
        true_shares = true_shares / true_shares.sum(axis=1, keepdims=True)
        true_sigma = np.asarray(true_sigma, dtype=float)
        d_share = np.abs(self.shares - true_shares)
        d_sigma = np.abs(self.sigma / true_sigma - 1.0)
        inside = np.concatenate([
            (d_share <= 1.96 * self.share_se)[self.share_identified & np.isfinite(self.share_se)],
            (np.abs(self.sigma - true_sigma) <= 1.96 * self.sigma_se)[
                self.sigma_identified & np.isfinite(self.sigma_se)],
        ])  # fmt: skip
        return {
            "share": float(d_share.max()),
            "sigma": float(d_sigma.max()),
            "coverage": float(inside.mean()) if inside.size else float("nan"),
        }

    def table(self) -> dict[str, list]:
        """One row per unit and parameter (``share_<good>`` ..., ``sigma``): columns
        ``unit``, ``parameter``, ``estimate``, ``se``, ``identified``, ``note``."""
        keys = ("unit", "parameter", "estimate", "se", "identified", "note")
        rows: dict[str, list] = {k: [] for k in keys}
        for u, unit in enumerate(self.units):
            note = "; ".join(self.notes[u])
            values = [
                (
                    f"share_{good}",
                    self.shares[u, j],
                    self.share_se[u, j],
                    bool(self.share_identified[u, j]),
                )
                for j, good in enumerate(self.goods)
            ]
            values.append(
                ("sigma", self.sigma[u], self.sigma_se[u], bool(self.sigma_identified[u]))
            )
            for name, estimate, se, ok in values:
                for key, value in zip(keys, (unit, name, estimate, se, ok, note), strict=True):
                    rows[key].append(value)
        return rows
