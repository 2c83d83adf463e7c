"""Analytic demand Jacobians of the CES family, vectorized over agents.

Every agent's Marshallian demand is linear in its wealth, ``x(p, w) = w phi(p)``, and its
wealth is the value of its endowment, ``w = p . e``. Write ``theta_k = p_k x_k / w`` (the
budget shares, summing to 1) and ``s`` the agent's effective elasticity of substitution.
Then, in log-prices, for every family of :mod:`tatonnet.agents.utility`::

    d x_j / d log p_k |_w  = -s x_j delta_jk - (1 - s) x_j theta_k     (substitution part)
    d x_j / d w            =  x_j / w                                  (income part)
    d x_j / d log p_k      = -s x_j delta_jk - (1 - s) x_j theta_k + x_j p_k e_k / w

with ``s = 1`` (Cobb–Douglas), ``s = 0`` (Leontief), ``s = sigma`` (CES). The formula
follows from ``log x_j = log a_j - s log p_j + log w - log sum_k a_k p_k^(1-s)``.
Endowments are fixed, so the excess-demand Jacobian ``dz/dp`` equals the total demand
Jacobian ``dx/dp`` (wealth effect included). Two identities hold for every agent and are
tested: homogeneity of degree zero, ``J_log @ 1 = 0``, and Walras' law differentiated,
``p^T J_log + diag(p) z = 0`` (i.e. ``sum_j p_j dz_j/dlog p_k = -p_k z_k``).

**Linear utility.** Demand is piecewise: all wealth goes to the goods with the best
bang-per-buck ``a_j / p_j`` (split equally on ties). On every piece the set of bought
goods is fixed and ``x_j = w / (m p_j)`` there, so the derivative of the *current piece* is
the ``s = 1`` formula (``-diag(x)`` plus the income part); that is what is returned. It is
the true derivative wherever the best good is unique (almost every price vector); at a
tie demand is discontinuous (set-valued), no derivative exists, and the returned matrix
is the one-sided derivative of the tie-splitting piece that :func:`tatonnet.agents.utility.demand`
selects. Newton steps built on it may therefore jump at ties; that is a property of linear
economies, not hidden.
"""

from __future__ import annotations

import numpy as np

from tatonnet.agents import utility
from tatonnet.agents.utility import Family


def effective_sigma(family: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The ``s`` of the module formula per agent: (n,) (CD 1, Leontief 0, CES sigma, linear 1)."""
    family = np.asarray(family)
    s = np.where(family == Family.CES, np.asarray(sigma, dtype=float), 1.0)
    return np.where(family == Family.LEONTIEF, 0.0, s)


def demand_jacobian(
    prices: np.ndarray,
    endowments: np.ndarray,
    shares: np.ndarray,
    family: np.ndarray,
    sigma: np.ndarray,
    *,
    log_prices: bool = False,
    income_effect: bool = True,
    demand: np.ndarray | None = None,
) -> np.ndarray:
    """Jacobian of each agent's demand at its own prices; (n, g, g).

    Parameters
    ----------
    prices : (n, g) positive prices (one row per agent)
    endowments, shares : (n, g)
    family : (n,) :class:`tatonnet.agents.utility.Family` codes
    sigma : (n,) elasticities (read on CES rows)
    log_prices : bool
        ``False``: ``J[i, j, k] = d x_ij / d p_ik``; ``True``: ``d x_ij / d log p_ik``
        (``= p_ik d x_ij / d p_ik``).
    income_effect : bool
        Include the change of wealth ``w = p . e`` with prices (the total derivative of
        :func:`tatonnet.agents.utility.demand`, which equals the excess-demand Jacobian). ``False``
        gives the derivative at fixed wealth.
    demand : (n, g) or None
        The demand at ``prices`` if already computed (saves one evaluation).

    Returns
    -------
    (n, g, g) float64. See the module docstring for the formula and the linear-utility
    convention.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[1.0, 2.0]]); e = np.array([[1.0, 1.0]]); a = np.array([[0.5, 0.5]])
    >>> demand_jacobian(p, e, a, np.array([Family.COBB_DOUGLAS]), np.array([1.0]))
    array([[[-1.   ,  0.5  ],
            [ 0.25 , -0.125]]])
    """
    prices = np.asarray(prices, dtype=float)
    endowments = np.asarray(endowments, dtype=float)
    if demand is None:
        demand = utility.demand(prices, endowments, shares, family, sigma)
    x = np.asarray(demand, dtype=float)
    wealth = np.einsum("ij,ij->i", prices, endowments)[:, None]  # (n, 1)
    theta = prices * x / wealth  # budget shares (n, g)
    s = effective_sigma(family, sigma)[:, None]  # (n, 1)
    # substitution part: -s diag(x) - (1 - s) x theta^T
    jac = -(1.0 - s)[:, :, None] * x[:, :, None] * theta[:, None, :]
    diag = np.einsum("ijj->ij", jac)  # writable view of the diagonals
    diag -= s * x
    if income_effect:
        jac += x[:, :, None] * (prices * endowments / wealth)[:, None, :]
    if not log_prices:
        jac /= prices[:, None, :]
    return jac


def excess_demand_jacobian(prices, endowments, shares, family, sigma, *, log_prices=False,
                           demand=None) -> np.ndarray:  # fmt: skip
    """``d z_i / d p`` (or ``d log p``) per agent, (n, g, g): endowments are fixed, so this is
    :func:`demand_jacobian` with the income effect."""
    return demand_jacobian(prices, endowments, shares, family, sigma, log_prices=log_prices,
                           income_effect=True, demand=demand)  # fmt: skip


def aggregate_demand_jacobian(
    prices: np.ndarray,
    endowments: np.ndarray,
    shares: np.ndarray,
    family: np.ndarray,
    sigma: np.ndarray,
    *,
    log_prices: bool = True,
) -> np.ndarray:
    """``sum_i d x_i / d log p`` (or ``d p``) at one price vector ``prices`` (g,); (g, g).

    The market excess-demand Jacobian (wealth effects included), summed term by term
    without forming the (n, g, g) per-agent array: memory O(n g).
    """
    prices = np.asarray(prices, dtype=float).reshape(-1)
    endowments = np.asarray(endowments, dtype=float)
    p = np.broadcast_to(prices, endowments.shape)
    x = utility.demand(p, endowments, shares, family, sigma)
    wealth = endowments @ prices  # (n,)
    theta = p * x / wealth[:, None]
    s = effective_sigma(family, sigma)
    jac = -np.einsum("i,ij,ik->jk", 1.0 - s, x, theta)
    jac[np.diag_indices_from(jac)] -= s @ x
    jac += np.einsum("ij,ik->jk", x / wealth[:, None], endowments) * prices[None, :]
    if not log_prices:
        jac /= prices[None, :]
    return jac


def demand_parameter_jacobian(
    prices: np.ndarray,
    endowments: np.ndarray,
    shares: np.ndarray,
    sigma: np.ndarray,
    *,
    demand: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Derivatives of CES demand with respect to the utility parameters, at fixed prices.

    From ``log x_j = log a_j - s log p_j + log w - log sum_k a_k p_k^(1-s)`` with
    ``theta_k = p_k x_k / w`` (budget shares) and ``w = p . e``::

        d x_j / d log a_m = x_j (delta_jm - theta_m)
        d x_j / d s       = x_j (sum_k theta_k log p_k - log p_j)

    Shares enter through their logarithm (goods with ``a_m = 0`` are never bought; their
    column is zero), so any positive rescaling of ``a`` is a flat direction (``sum_m`` of
    the first array's columns is zero): a calibration fixes one log-share.

    Parameters
    ----------
    prices, endowments, shares : (n, g) — one row per agent or observation
    sigma : (n,) positive CES elasticities
    demand : (n, g) or None — CES demand at these arguments, if already computed

    Returns
    -------
    ``(d_log_shares, d_sigma)``: (n, g, g) with ``[i, j, m] = d x_ij / d log a_im``, and
    (n, g) with ``[i, j] = d x_ij / d sigma_i``.
    """
    prices = np.asarray(prices, dtype=float)
    endowments = np.asarray(endowments, dtype=float)
    sigma = np.asarray(sigma, dtype=float)
    if demand is None:
        family = np.full(prices.shape[0], Family.CES, dtype=np.int8)
        demand = utility.demand(prices, endowments, shares, family, sigma)
    x = np.asarray(demand, dtype=float)
    wealth = np.einsum("ij,ij->i", prices, endowments)[:, None]
    theta = prices * x / wealth
    d_log_shares = -x[:, :, None] * theta[:, None, :]
    np.einsum("ijj->ij", d_log_shares)[...] += x
    logp = np.log(prices)
    d_sigma = x * (np.einsum("ij,ij->i", theta, logp)[:, None] - logp)
    return d_log_shares, d_sigma
