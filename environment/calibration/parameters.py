"""How a unit's CES parameters are searched: shares on the simplex, sigma > 0.

A unit (agent or group) with ``g`` goods has normalized shares ``a`` (``sum a = 1``) and an
elasticity ``sigma``. The search coordinates ``q`` (``n_free + 1`` values) are

    log a_j - log a_ref = eta_j   for the free goods (bought, not the reference good)
    eta_ref = 0, a_j = 0          for the reference good and the never-bought goods
    log sigma                     last coordinate

so ``a = softmax(eta)`` over the bought goods. The reference good is the bought good with
the largest mean budget share. Estimates are reported in natural units (``a``, ``sigma``);
their covariance is carried over by the delta method with :meth:`UnitLayout.natural_jacobian`.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class UnitLayout:
    """Which goods a unit's coordinates move: ``free`` (g,) bool, ``bought`` (g,) bool,
    ``ref`` the reference good."""

    free: np.ndarray
    bought: np.ndarray
    ref: int

    @classmethod
    def from_shares(cls, budget_shares: np.ndarray) -> UnitLayout:
        """From a unit's observed budget shares (n_obs, g): a good is bought if any share > 0."""
        mean = budget_shares.mean(axis=0)
        bought = (budget_shares > 0).any(axis=0)
        ref = int(np.argmax(np.where(bought, mean, -1.0)))
        free = bought.copy()
        free[ref] = False
        return cls(free, bought, ref)

    @property
    def n_goods(self) -> int:
        return self.free.size

    @property
    def n_params(self) -> int:
        return int(self.free.sum()) + 1

    def log_shares(self, q: np.ndarray) -> np.ndarray:
        """``eta`` (g,): 0 at the reference good, -inf at never-bought goods."""
        eta = np.where(self.bought, 0.0, -np.inf)
        eta[self.free] = q[:-1]
        return eta

    def natural(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """``(shares (g,), sigma)`` from coordinates ``q``; shares sum to 1."""
        eta = self.log_shares(q)
        a = np.exp(eta - eta[self.bought].max())
        return a / a.sum(), float(np.exp(q[-1]))

    def coords(self, shares: np.ndarray, sigma: float) -> np.ndarray:
        """Coordinates of natural parameters (shares > 0 on the bought goods)."""
        shares = np.asarray(shares, dtype=float)
        eta = np.log(np.maximum(shares, 1e-300)) - np.log(max(shares[self.ref], 1e-300))
        return np.append(eta[self.free], np.log(sigma))

    def natural_jacobian(self, q: np.ndarray) -> np.ndarray:
        """``d (a_1..a_g, sigma) / d q``; (g + 1, n_params) (softmax and exp derivatives)."""
        a, sigma = self.natural(q)
        da = np.diag(a) - np.outer(a, a)  # d a / d eta
        out = np.zeros((self.n_goods + 1, self.n_params))
        out[:-1, :-1] = da[:, self.free]
        out[-1, -1] = sigma
        return out

    def names(self, goods) -> list[str]:
        """One label per coordinate: ``log(a_cloth/a_grain)``, ..., ``log sigma``."""
        ref = goods[self.ref]
        return [f"log(a_{g}/a_{ref})" for g, f in zip(goods, self.free, strict=True) if f] + [
            "log sigma"
        ]
