"""Reference Walrasian equilibria of the centralized economy.

* :func:`cobb_douglas_equilibrium` — exact, by linear algebra: with Cobb–Douglas agents
  market clearing reads ``p_j S_j = sum_i alpha_ij (p . e_i)``, i.e. ``p = M p`` with
  ``M_jk = sum_i alpha_ij e_ik / S_j``, a column-stochastic matrix; ``p`` is its
  Perron eigenvector (unique when ``M`` is irreducible).
* :func:`find_equilibria` — numerical: ``scipy.optimize.root`` on the relative excess
  demand of the non-numeraire goods in log-prices, from several starts; every distinct
  root whose relative excess demand is below ``accept`` is returned, and an empty list
  says honestly that none was found (linear utilities, whose demand is discontinuous,
  often end there).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.optimize

from agents.utility import Family
from environment import kernel
from environment.dynamics import use_threads
from environment.economy import Economy


def cobb_douglas_equilibrium(economy: Economy) -> np.ndarray:
    """The exact equilibrium price vector (numeraire = 1) of an all-Cobb–Douglas economy."""
    if not (economy.family == Family.COBB_DOUGLAS).all():
        raise ValueError("the closed form needs every agent to be Cobb-Douglas")
    alpha = economy.shares / economy.shares.sum(axis=1, keepdims=True)
    M = alpha.T @ economy.endowments / economy.supply[:, None]
    # null space of (M - I): the eigenvector for eigenvalue 1
    null = scipy.linalg.null_space(M - np.eye(economy.n_goods), rcond=1e-12)
    if null.shape[1] != 1:
        raise ValueError("the Cobb-Douglas equilibrium is not unique (reducible economy)")
    p = np.abs(null[:, 0])
    return p / p[economy.numeraire]


def relative_excess_demand(economy: Economy, prices: np.ndarray) -> np.ndarray:
    """``Z(p) / supply`` at one price vector (g,), by the fused kernel (deterministic)."""
    arrays = economy.kernel_arrays()
    blocks = np.empty((kernel.n_blocks(economy.n_agents), economy.n_goods))
    use_threads(blocks.shape[0])
    kernel.excess_demand_blocks(np.asarray(prices, dtype=float), *arrays, 0, blocks)
    return kernel.sum_blocks(blocks) / economy.supply


def find_equilibria(
    economy: Economy,
    n_starts: int = 8,
    seed: int = 0,
    accept: float = 1e-10,
    distinct: float = 1e-6,
) -> list[np.ndarray]:
    """Distinct equilibrium price vectors (numeraire = 1) found from ``n_starts`` starts.

    Starts: all prices 1, then log-prices drawn uniformly in [-2, 2] (seeded). Each
    returned ``p`` satisfies ``max_j |Z_j(p)| / S_j < accept``; two roots are distinct
    when their prices differ by more than ``distinct`` relatively. Sorted by price vector.
    """
    g, num = economy.n_goods, economy.numeraire
    free = np.array([j for j in range(g) if j != num])

    def prices_of(x):
        p = np.ones(g)
        p[free] = np.exp(np.clip(x, -700, 700))
        return p

    def residual(x):
        return relative_excess_demand(economy, prices_of(x))[free]

    rng = np.random.default_rng(seed)
    starts = [np.zeros(free.size)] + [rng.uniform(-2, 2, free.size) for _ in range(n_starts - 1)]
    found: list[np.ndarray] = []
    for x0 in starts:
        for method in ("hybr", "lm"):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                sol = scipy.optimize.root(residual, x0, method=method, options={"xtol": 1e-14})
            if not np.isfinite(sol.x).all():
                continue
            p = prices_of(sol.x)
            if np.max(np.abs(relative_excess_demand(economy, p))) < accept:
                if not any(np.max(np.abs(p / q - 1)) < distinct for q in found):
                    found.append(p)
                break
    return sorted(found, key=tuple)


def distance(prices: np.ndarray, reference: np.ndarray) -> float:
    """Largest relative price difference ``max_j |p_j / p*_j - 1|`` (numeraire-normalized)."""
    return float(np.max(np.abs(np.asarray(prices) / np.asarray(reference) - 1.0)))


def nearest(prices: np.ndarray, references: list[np.ndarray]) -> tuple[int, float] | None:
    """Index of and distance to the nearest reference equilibrium, or None if there is none."""
    if not references:
        return None
    d = [distance(prices, r) for r in references]
    k = int(np.argmin(d))
    return k, d[k]
