"""Calibration data from known CES parameters: the known answers of the tests and examples.

``demand_table`` draws ``n_markets`` price vectors per agent (log-normal around 1, spread
``price_spread``), computes each agent's CES demand at its endowment's wealth and records
it with multiplicative noise ``x_obs = x exp(noise * N(0, 1))``. Draws come from
``SeedSequence(seed)`` streams by purpose (prices, noise), never from global state.
"""

from __future__ import annotations

import numpy as np

from tatonnet.agents import utility
from tatonnet.agents.utility import Family

PRICES, NOISE = 0, 1


def demand_table(shares, sigma, endowments, n_markets: int, noise: float = 0.0,
                 seed: int = 0, price_spread: float = 0.5, goods=None, groups=None):  # fmt: skip
    """The long table (pandas DataFrame) of ``n_agents`` agents observed in ``n_markets``.

    Parameters
    ----------
    shares : (n_agents, g) true shares (normalized when written)
    sigma : (n_agents,) true elasticities
    endowments : (n_agents, g)
    n_markets : observations per agent
    noise : standard deviation of the log-noise on bundles (0: exact)
    groups : (n_agents,) labels, or None (then no ``group`` column)

    Columns: market, agent, [group], good, price, quantity, endowment, true_share, true_sigma.
    """
    import pandas as pd

    shares = np.asarray(shares, dtype=float)
    shares = shares / shares.sum(axis=1, keepdims=True)
    sigma = np.asarray(sigma, dtype=float)
    endowments = np.asarray(endowments, dtype=float)
    n, g = shares.shape
    goods = list(goods) if goods is not None else [f"good{j}" for j in range(g)]
    rng_p = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PRICES,)))
    rng_n = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(NOISE,)))
    prices = rng_p.lognormal(0.0, price_spread, (n_markets, n, g))
    rep = lambda a: np.broadcast_to(a, (n_markets, *a.shape)).reshape(-1, *a.shape[1:])  # noqa: E731
    flat_p = prices.reshape(-1, g)
    x = utility.demand(flat_p, rep(endowments), rep(shares),
                       np.full(n * n_markets, Family.CES, dtype=np.int8), rep(sigma))  # fmt: skip
    if noise:
        x = x * np.exp(noise * rng_n.standard_normal(x.shape))
    market = np.repeat(np.arange(n_markets), n * g)
    agent = np.tile(np.repeat(np.arange(n), g), n_markets)
    good = np.tile(np.arange(g), n * n_markets)
    table = {
        "market": market, "agent": agent,
        **({"group": np.asarray(groups)[agent]} if groups is not None else {}),
        "good": np.asarray(goods)[good], "price": flat_p.ravel(), "quantity": x.ravel(),
        "endowment": rep(endowments).ravel(), "true_share": shares[agent, good],
        "true_sigma": sigma[agent],
    }  # fmt: skip
    return pd.DataFrame(table)


def truth_from_table(table, units, goods, per: str = "agent"):
    """``(shares (n_units, g), sigma (n_units,))`` from a table's ``true_share`` and
    ``true_sigma`` columns (None if it has none, or if a unit's agents differ)."""
    if not {"true_share", "true_sigma"} <= set(table.columns):
        return None
    key = per if per in table.columns else "agent"
    df = table.assign(_unit=table[key].astype(str), _good=table["good"].astype(str))
    spread = df.groupby(["_unit", "_good"])["true_share"].agg(lambda v: v.max() - v.min())
    if (spread > 1e-12).any() or (df.groupby("_unit")["true_sigma"].nunique() > 1).any():
        return None  # the unit pools agents of different parameters: no single truth
    first = df.groupby(["_unit", "_good"])["true_share"].first()
    shares = np.array([[first.get((u, g), np.nan) for g in goods] for u in units], dtype=float)
    sig = df.groupby("_unit")["true_sigma"].first()
    sigma = np.array([sig.get(u, np.nan) for u in units], dtype=float)
    if not (np.isfinite(shares).all() and np.isfinite(sigma).all()):
        return None
    return shares, sigma
