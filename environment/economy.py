"""The Arrow–Debreu pure-exchange economy as a structure of arrays (row ``i`` = agent ``i``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from tatonnet.agents import utility
from tatonnet.agents.utility import Family


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
    """

    endowments: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    numeraire: int = 0
    goods: tuple[str, ...] = ()

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
        supply = e.sum(axis=0)
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

    @property
    def supply(self) -> np.ndarray:
        """Total endowment of each good; (n_goods,)."""
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

    def kernel_arrays(self):
        """(endowments, shares, family, sigma) as contiguous arrays for the numba kernels."""
        return (
            np.ascontiguousarray(self.endowments, dtype=np.float64),
            np.ascontiguousarray(self.shares, dtype=np.float64),
            np.ascontiguousarray(self.family, dtype=np.int8),
            np.ascontiguousarray(self.sigma, dtype=np.float64),
        )
