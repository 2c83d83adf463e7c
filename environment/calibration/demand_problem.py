"""One unit's demand system as a least-squares problem: residuals and their analytic Jacobian.

For unit ``u`` with observations ``t`` (prices ``p_t``, wealth ``w_t = p_t . e_t``, observed
bundle ``x_t``) and coordinates ``q`` (:mod:`.parameters`), the residual of good ``j`` is the
error in its budget share,

    r_tj(q) = p_tj x_tj / w_t  -  p_tj x_j(p_t, w_t; a(q), sigma(q)) / w_t,

taken over the goods the unit buys (never-bought goods fit exactly: their share is 0). The
model demand is :func:`tatonnet.agents.utility.demand` (CES), its derivative
:func:`tatonnet.agents.jacobian.demand_parameter_jacobian` chained with ``d log a / d eta``
(identity on the free goods) and ``d sigma / d log sigma = sigma``. Budget shares make the
residuals scale-free across markets of different wealth.

**Regularization** (strength ``lam >= 0``, default 0) adds the rows ``sqrt(lam) q``: a
ridge towards equal shares on the bought goods and ``sigma = 1`` (Cobb–Douglas), so the
objective is ``1/2 |r|^2 + lam/2 |q|^2``. It keeps a weakly identified unit finite; it
biases estimates by about ``lam / (n_obs * curvature)``.
"""

from __future__ import annotations

import numpy as np

from tatonnet.agents import utility
from tatonnet.agents.jacobian import demand_parameter_jacobian
from tatonnet.agents.utility import Family
from tatonnet.environment.calibration.parameters import UnitLayout


class UnitProblem:
    """The demand-system residuals of one unit; counts its evaluations.

    Parameters
    ----------
    prices, endowments, quantities : (n, g) — the unit's observations
    regularize : float >= 0 — ridge strength ``lam``
    """

    def __init__(self, prices, endowments, quantities, regularize: float = 0.0):
        self.prices = np.asarray(prices, dtype=float)
        self.endowments = np.asarray(endowments, dtype=float)
        self.wealth = np.einsum("ij,ij->i", self.prices, self.endowments)[:, None]
        self.observed = self.prices * np.asarray(quantities, dtype=float) / self.wealth
        self.layout = UnitLayout.from_shares(self.observed)
        self.regularize = float(regularize)
        self.n_evaluations = 0  # demand-system evaluations (a Jacobian counts as one)
        n = self.prices.shape[0]
        self._family = np.full(n, Family.CES, dtype=np.int8)

    @property
    def n_effective(self) -> int:
        """Independent residuals: ``n_obs * (n_bought - 1)`` (budget shares sum to 1)."""
        return self.prices.shape[0] * (int(self.layout.bought.sum()) - 1)

    def start(self) -> np.ndarray:
        """Mean observed budget shares and ``sigma = 1`` (the Cobb–Douglas fit)."""
        mean = self.observed.mean(axis=0)
        return self.layout.coords(mean / mean.sum(), 1.0)

    def demand(self, q: np.ndarray) -> np.ndarray:
        """Model bundles at every observation; (n, g)."""
        a, sigma = self.layout.natural(q)
        n = self.prices.shape[0]
        return utility.demand(self.prices, self.endowments, np.tile(a, (n, 1)), self._family,
                              np.full(n, sigma))  # fmt: skip

    def data_residuals(self, q: np.ndarray) -> np.ndarray:
        """``r`` (n * n_bought,): observed minus model budget shares on the bought goods."""
        self.n_evaluations += 1
        model = self.prices * self.demand(q) / self.wealth
        return (self.observed - model)[:, self.layout.bought].ravel()

    def data_jacobian(self, q: np.ndarray) -> np.ndarray:
        """``dr/dq`` (n * n_bought, k), analytic."""
        self.n_evaluations += 1
        a, sigma = self.layout.natural(q)
        n = self.prices.shape[0]
        x = self.demand(q)
        d_log_a, d_sigma = demand_parameter_jacobian(
            self.prices, self.endowments, np.tile(a, (n, 1)), np.full(n, sigma), demand=x
        )
        scale = (self.prices / self.wealth)[:, :, None]
        jac = np.concatenate(
            [scale * d_log_a[:, :, self.layout.free], scale * (d_sigma * sigma)[:, :, None]],
            axis=2,
        )
        bought = self.layout.bought
        return -jac[:, bought, :].reshape(-1, self.layout.n_params)

    def residuals(self, q: np.ndarray) -> np.ndarray:
        """Data residuals, then the regularization rows ``sqrt(lam) q`` (if ``lam > 0``)."""
        r = self.data_residuals(q)
        return np.concatenate([r, np.sqrt(self.regularize) * q]) if self.regularize else r

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        jac = self.data_jacobian(q)
        if self.regularize:
            jac = np.vstack([jac, self.penalty_jacobian()])
        return jac

    def penalty_jacobian(self) -> np.ndarray | None:
        k = self.layout.n_params
        return np.sqrt(self.regularize) * np.eye(k) if self.regularize else None

    def objective(self, q: np.ndarray) -> float:
        """``1/2 |r|^2 + lam/2 |q|^2``: what every method minimizes."""
        r = self.residuals(q)
        return 0.5 * float(r @ r)
