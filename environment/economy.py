"""The Arrow–Debreu pure-exchange economy as a structure of arrays (row ``i`` = agent ``i``)."""

from __future__ import annotations

import dataclasses
import functools

import numba
import numpy as np

from tatonnet.agents import utility
from tatonnet.agents.utility import Family
from tatonnet.environment.tatonnement.kernel import BLOCK, sum_blocks


class EconomyError(ValueError):
    """The economy's parameters are invalid (one-line message)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Economy:
    """Endowments and preferences of ``n_agents`` agents over ``n_goods`` goods.

    Attributes
    ----------
    endowments : (n_agents, n_goods) float64, non-negative, no row all zero
    shares : (n_agents, n_goods) float64, non-negative utility weights, no row all zero
    family : (n_agents,) int8 — :class:`tatonnet.agents.utility.Family` codes
    sigma : (n_agents,) float64 — elasticity of substitution (0 Leontief, 1 Cobb–Douglas,
        inf linear, anything positive for CES)
    numeraire : int — the good whose price is fixed at 1
    goods : tuple of str — good names
    block_supply : bool — take :attr:`supply` as :func:`block_sums` reduced in block order
        (shard-built economies: the order every shard count reproduces) instead of numpy's
        column sum
    """

    endowments: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    numeraire: int = 0
    goods: tuple[str, ...] = ()
    block_supply: bool = False

    def __post_init__(self):
        e, a = self.endowments, self.shares
        if e.ndim != 2 or e.shape != a.shape:
            raise EconomyError(f"endowments {e.shape} and shares {a.shape} must be (n, g) alike")
        n, g = e.shape
        if self.family.shape != (n,) or self.sigma.shape != (n,):
            raise EconomyError(
                f"family {self.family.shape} and sigma {self.sigma.shape} must have one entry "
                f"per agent ({n})"
            )
        if not np.isin(self.family, [int(f) for f in Family]).all():
            raise EconomyError(
                f"family: unknown utility family codes; expected {list(map(int, Family))}"
            )
        if g < 2:
            raise EconomyError(f"an exchange economy needs at least 2 goods, got {g}")
        for name, arr in (("endowments", e), ("shares", a), ("sigma", self.sigma)):
            if np.isnan(arr).any():
                raise EconomyError(f"{name}: NaN values")
        if not np.isfinite(e).all() or (e < 0).any():
            raise EconomyError("endowments: expected finite non-negative quantities")
        if (e.sum(axis=1) <= 0).any():
            raise EconomyError(f"endowments: agent {int(np.argmin(e.sum(axis=1)))} owns nothing")
        if not np.isfinite(a).all() or (a < 0).any():
            raise EconomyError("shares: expected finite non-negative weights")
        if (a.sum(axis=1) <= 0).any():
            raise EconomyError(f"shares: agent {int(np.argmin(a.sum(axis=1)))} wants nothing")
        ces = self.family == Family.CES
        if (self.sigma[ces] <= 0).any() or not np.isfinite(self.sigma[ces]).all():
            raise EconomyError("sigma: a CES elasticity must be positive and finite")
        supply = self.supply
        if (supply <= 0).any():
            raise EconomyError(f"endowments: nobody owns good {int(np.argmin(supply))}")
        if not 0 <= self.numeraire < g:
            raise EconomyError(
                f"numeraire: expected a good index in [0, {g}), got {self.numeraire}"
            )
        if not self.goods:
            object.__setattr__(self, "goods", tuple(f"good{j}" for j in range(g)))
        elif len(self.goods) != g:
            raise EconomyError(f"goods: {len(self.goods)} names for {g} goods")

    @property
    def n_agents(self) -> int:
        return self.endowments.shape[0]

    @property
    def n_goods(self) -> int:
        return self.endowments.shape[1]

    @functools.cached_property
    def supply(self) -> np.ndarray:
        """Total endowment of each good; (n_goods,) (computed once: the arrays are fixed)."""
        if self.block_supply:
            return sum_blocks(block_sums(self.endowments, 0))
        return self.endowments.sum(axis=0)

    def demand(self, prices: np.ndarray, rows=slice(None)) -> np.ndarray:
        """Demand of agents ``rows`` at their own prices ``prices`` (len(rows), g) or one (g,)."""
        e = self.endowments[rows]
        p = np.broadcast_to(prices, e.shape)
        return utility.demand(p, e, self.shares[rows], self.family[rows], self.sigma[rows])

    def excess_demand(self, prices: np.ndarray, rows=slice(None)) -> np.ndarray:
        """Demand minus endowment, per agent; same shapes as :meth:`demand`."""
        return self.demand(prices, rows) - self.endowments[rows]

    def aggregate_excess_demand(self, prices: np.ndarray) -> np.ndarray:
        """Market excess demand ``sum_i z_i(p)`` at one price vector ``prices`` (g,)."""
        return self.excess_demand(prices).sum(axis=0)

    def utility(self, quantities: np.ndarray, rows=slice(None)) -> np.ndarray:
        return utility.utility(quantities, self.shares[rows], self.family[rows], self.sigma[rows])

    def families(self) -> set[int]:
        """The utility family codes present (:class:`Family` values)."""
        return {int(f) for f in np.unique(self.family)}

    def cobb_douglas_matrix(self) -> np.ndarray:
        """``M = sum_i alpha_i e_i^T / S`` (g, g) with ``alpha_i`` the normalized shares:
        the exchange matrix of a Cobb–Douglas economy (its equilibrium is ``M p = p``).
        ``block_supply`` economies sum it per block in block order, as shards do."""
        if self.block_supply:
            blocks = cobb_douglas_blocks(self.shares, self.endowments, 0)
            return sum_blocks(blocks) / self.supply[:, None]
        alpha = self.shares / self.shares.sum(axis=1, keepdims=True)
        return alpha.T @ self.endowments / self.supply[:, None]

    def kernel_arrays(self):
        """(endowments, shares, family, sigma) as contiguous arrays for the numba kernels."""
        return (
            np.ascontiguousarray(self.endowments, dtype=np.float64),
            np.ascontiguousarray(self.shares, dtype=np.float64),
            np.ascontiguousarray(self.family, dtype=np.int8),
            np.ascontiguousarray(self.sigma, dtype=np.float64),
        )


@numba.njit(cache=True)
def block_sums(x, start):
    """Column sums of rows ``x`` (global ids ``start..``) per reduction block of
    ``BLOCK`` ids, each sequential in id order from 0.0; (blocks met, g)."""
    block = BLOCK
    n, g = x.shape
    first = start // block
    last = (start + n - 1) // block if n else first - 1
    out = np.zeros((last - first + 1, g))
    for r in range(n):
        b = (start + r) // block - first
        for j in range(g):
            out[b, j] += x[r, j]
    return out


@numba.njit(cache=True)
def cobb_douglas_blocks(a, e, start):
    """Per reduction block, ``sum_i alpha_i e_i^T`` (blocks met, g, g), sequential in id
    order; ``alpha_i = a_i / sum(a_i)``."""
    block = BLOCK
    n, g = e.shape
    first = start // block
    last = (start + n - 1) // block if n else first - 1
    out = np.zeros((last - first + 1, g, g))
    for r in range(n):
        b = (start + r) // block - first
        total = 0.0
        for j in range(g):
            total += a[r, j]
        for j in range(g):
            alpha = a[r, j] / total
            for k in range(g):
                out[b, j, k] += alpha * e[r, k]
    return out
