"""What the data pin down: flat directions, never-bought goods, standard errors.

At the optimum ``q*`` with residuals ``r`` (m,) and Jacobian ``J = dr/dq`` (m, k):

* **flat directions** are the right singular vectors of ``J`` whose singular value is below
  ``rtol * s_max``: moving along them does not change the fit, so a coordinate with a
  loading above ``LOADING`` on one is *not identified*;
* a good a unit **never bought** has share 0 at every observation: the data bound its
  share above by nothing but 0 and say nothing about it otherwise, so it is reported as
  not identified (estimate 0, no standard error);
* **standard errors** come from ``cov(q) = s^2 (J^T J + R^T R)^+`` with the residual
  variance ``s^2 = |r|^2 / (m_eff - k)`` (``m_eff`` counts independent residuals: budget
  shares sum to 1, so each observation gives ``n_bought - 1``), ``R`` the regularization
  rows (none when the fit is not regularized) and ``+`` the pseudo-inverse that drops the
  flat directions; natural units by the delta method ``G cov G^T`` with
  ``G = d(a, sigma)/dq``. Coordinates that are not identified get NaN standard errors.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: A singular value below RTOL * the largest is a flat direction.
RTOL = 1e-6
#: A coordinate that loads above this on a flat direction is not identified.
LOADING = 0.1


@dataclasses.dataclass(frozen=True)
class Identification:
    """Per coordinate ``identified`` (k,) bool; ``singular_values`` (k,); ``condition``
    number (inf when flat); ``cov`` (k, k) covariance of the coordinates."""

    identified: np.ndarray
    singular_values: np.ndarray
    condition: float
    cov: np.ndarray
    residual_variance: float
    dof: int


def identify(jac: np.ndarray, residuals: np.ndarray, n_effective: int,
             penalty_jac: np.ndarray | None = None, rtol: float = RTOL) -> Identification:  # fmt: skip
    """Identification and covariance of one least-squares fit (see the module docstring).

    Parameters
    ----------
    jac : (m, k) data Jacobian at the optimum (no regularization rows)
    residuals : (m,) data residuals at the optimum
    n_effective : independent data residuals (``m_eff``)
    penalty_jac : (r, k) regularization rows' Jacobian, or None
    """
    k = jac.shape[1]
    _, sv, vt = np.linalg.svd(jac, full_matrices=False)
    sv = np.concatenate([sv, np.zeros(k - sv.size)])
    if vt.shape[0] < k:  # fewer residuals than coordinates
        vt = np.linalg.svd(np.vstack([jac, np.zeros((k - vt.shape[0], k))]))[2]
    top = sv.max() if sv.size else 0.0
    flat = sv <= rtol * top if top > 0 else np.ones(k, dtype=bool)
    loading = np.abs(vt[flat]).max(axis=0) if flat.any() else np.zeros(k)
    identified = loading <= LOADING
    dof = max(n_effective - k, 1)
    s2 = float(residuals @ residuals) / dof
    info = jac.T @ jac
    if penalty_jac is not None:
        info = info + penalty_jac.T @ penalty_jac
    cov = s2 * np.linalg.pinv(info, rcond=rtol**2, hermitian=True)
    cov[~identified, :] = np.nan
    cov[:, ~identified] = np.nan
    low = sv[~flat].min() if (~flat).any() else 0.0
    condition = float(top / low) if low > 0 and not flat.any() else float("inf")
    return Identification(identified, sv, condition, cov, s2, n_effective - k)


def natural_errors(layout, q: np.ndarray, ident: Identification):
    """Standard errors and identified flags in natural units: ``(share_se (g,), sigma_se,
    share_identified (g,), sigma_identified)``.

    Shares are normalized (``a = softmax(eta)``), so every bought good's share moves with
    every log-ratio: they are identified when all the log-ratio coordinates are; a
    never-bought good's share never is (its estimate is 0).
    """
    g = layout.n_goods
    share_ok = np.zeros(g, dtype=bool)
    share_ok[layout.bought] = bool(ident.identified[:-1].all())
    grad = layout.natural_jacobian(q)
    cov = np.nan_to_num(ident.cov, nan=0.0)
    var = np.einsum("ik,kl,il->i", grad, cov, grad)
    se = np.sqrt(np.maximum(var, 0.0))
    share_se = np.where(share_ok, se[:-1], np.nan)
    sigma_ok = bool(ident.identified[-1])
    sigma_se = float(se[-1]) if sigma_ok else float("nan")
    return share_se, sigma_se, share_ok, sigma_ok
