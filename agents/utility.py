"""The CES utility family: demand, utility and excess demand, vectorized over agents.

Every agent ``i`` has a utility family code ``family[i]``, an elasticity of substitution
``sigma[i]``, non-negative weights ``shares[i]`` of shape ``(n_goods,)`` and an endowment.
The four families are exact forms, never approximations by a tiny or huge ``sigma``:

=============  ======  ==============================================  ================================
family         sigma   utility u(x)                                    Marshallian demand x_j(p, w)
=============  ======  ==============================================  ================================
linear         inf     sum_j a_j x_j                                   w / (m p_j) on the m goods with the
                                                                        best a_j / p_j (ties split equally)
cobb-douglas   1       prod_j x_j ** (a_j / sum a)                     (a_j / sum a) w / p_j
leontief       0       min_{j: a_j > 0} x_j / a_j                      a_j w / sum_k a_k p_k
ces            (0, inf) (sum_j a_j^(1/s) x_j^((s-1)/s))^(s/(s-1))      a_j p_j^-s w / sum_k a_k p_k^(1-s)
=============  ======  ==============================================  ================================

with wealth ``w = p . e``. Demand is homogeneous of degree zero in ``p`` and satisfies
Walras' law ``p . x = w`` for every agent, to rounding.

**Linear tie rule.** Linear demand is set-valued where several goods share the best
bang-per-buck ``a_j / p_j``. tatonnet splits wealth *equally* among the goods whose
bang-per-buck is within a relative ``LINEAR_TIE_RTOL`` of the best (a scale-free test, so
the rule is homogeneous of degree zero too).

Two implementations exist on purpose (the NetworkX ``*_numpy`` habit): :func:`demand`
is plain numpy over a block of agents, readable and used for inspection, equilibrium
solves and the per-agent reference path; :func:`demand_rows` is the numba
kernel the round runs on tiles of agents (:func:`demand_row`, its one-agent form, is what
the tests compare). Tests check they agree to 1e-12.

numba's on-disk cache does not notice that the round kernel in
:mod:`tatonnet.environment.tatonnement.kernel` inlines :func:`demand_rows`: after editing this module, touch
``environment/tatonnement/kernel.py`` (or clear ``__pycache__``) so that no process loads a stale kernel.
"""

from __future__ import annotations

import enum

import numba
import numpy as np

LINEAR_TIE_RTOL = 1e-12


class Family(enum.IntEnum):
    """Utility family codes, as stored in ``Economy.family`` (int8)."""

    LINEAR = 0
    COBB_DOUGLAS = 1
    LEONTIEF = 2
    CES = 3

    @classmethod
    def from_name(cls, name: str) -> Family:
        return FAMILY_NAMES[name]

    @property
    def label(self) -> str:
        """The family's one spelling, as scenario files write it (``"cobb-douglas"``)."""
        return _LABELS[self]


FAMILY_NAMES: dict[str, Family] = {
    "linear": Family.LINEAR,
    "cobb-douglas": Family.COBB_DOUGLAS,
    "leontief": Family.LEONTIEF,
    "ces": Family.CES,
}
_LABELS = {code: name for name, code in FAMILY_NAMES.items()}


def family_labels(family) -> list[str]:
    """The name of every family code in ``family`` (n,), e.g. ``["ces", "cobb-douglas"]``."""
    return [_LABELS[Family(int(c))] for c in np.asarray(family).ravel()]

#: sigma each limit family stands for (for reporting; the kernels branch on the code).
FAMILY_SIGMA = {Family.LINEAR: np.inf, Family.COBB_DOUGLAS: 1.0, Family.LEONTIEF: 0.0}


def demand(prices, endowments, shares, family, sigma):
    """Marshallian demand of a block of agents, each at its own price vector.

    Parameters
    ----------
    prices : (n, g) array, positive
    endowments, shares : (n, g) arrays, non-negative
    family : (n,) int array of :class:`Family` codes
    sigma : (n,) float array (used by ``Family.CES`` rows only)

    Returns
    -------
    (n, g) array of demanded quantities.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[1.0, 2.0]]); e = np.array([[1.0, 1.0]]); a = np.array([[0.5, 0.5]])
    >>> demand(p, e, a, np.array([Family.COBB_DOUGLAS]), np.array([1.0]))
    array([[1.5 , 0.75]])
    """
    prices = np.asarray(prices, dtype=float)
    shares = np.asarray(shares, dtype=float)
    family = np.asarray(family)
    sigma = np.asarray(sigma, dtype=float)
    wealth = np.einsum("ij,ij->i", prices, endowments)[:, None]
    out = np.zeros_like(prices)

    rows = family == Family.COBB_DOUGLAS
    if rows.any():
        a = shares[rows] / shares[rows].sum(axis=1, keepdims=True)
        out[rows] = a * wealth[rows] / prices[rows]

    rows = family == Family.LEONTIEF
    if rows.any():
        a = shares[rows]
        out[rows] = a * wealth[rows] / np.einsum("ij,ij->i", a, prices[rows])[:, None]

    rows = family == Family.CES
    if rows.any():
        s = sigma[rows][:, None]
        t = shares[rows] * np.exp(-s * np.log(prices[rows]))
        out[rows] = t * wealth[rows] / np.einsum("ij,ij->i", t, prices[rows])[:, None]

    rows = family == Family.LINEAR
    if rows.any():
        bang = shares[rows] / prices[rows]
        best = bang.max(axis=1, keepdims=True)
        tied = bang >= best * (1.0 - LINEAR_TIE_RTOL)
        m = tied.sum(axis=1, keepdims=True)
        out[rows] = np.where(tied, wealth[rows] / (m * prices[rows]), 0.0)
    return out


def utility(quantities, shares, family, sigma):
    """Utility of bundles ``quantities`` (n, g) for agents with the given parameters; (n,)."""
    x = np.asarray(quantities, dtype=float)
    shares = np.asarray(shares, dtype=float)
    family = np.asarray(family)
    sigma = np.asarray(sigma, dtype=float)
    out = np.empty(x.shape[0])
    for code in Family:
        rows = family == code
        if not rows.any():
            continue
        a, q = shares[rows], x[rows]
        used = a > 0
        if code == Family.LINEAR:
            out[rows] = (a * q).sum(axis=1)
        elif code == Family.COBB_DOUGLAS:
            w = a / a.sum(axis=1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[rows] = np.exp(np.where(used, w * np.log(q), 0.0).sum(axis=1))
        elif code == Family.LEONTIEF:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(used, q / np.where(used, a, 1.0), np.inf)
            out[rows] = ratio.min(axis=1)
        else:
            s = sigma[rows][:, None]
            unit = s[:, 0] == 1.0  # sigma = 1 is the Cobb-Douglas limit, up to a monotone map
            r = np.where(s == 1.0, 0.5, (s - 1.0) / s)
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(used, a ** (1.0 / s) * q**r, 0.0)
                ces = terms.sum(axis=1) ** (1.0 / r[:, 0])
                w = a / a.sum(axis=1, keepdims=True)
                cd = np.exp(np.where(used, w * np.log(q), 0.0).sum(axis=1))
            out[rows] = np.where(unit, cd, ces)
    return out


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def demand_rows(p, pw, e, a, family, out):
    """Demand of ``n`` agents, row ``i`` at its own prices ``p[i]``; written to ``out`` (n, g).

    The scalar twin of :func:`demand` that the fused round kernels run, once per tile of
    agents: never once per agent, so that their inner loops make no array views (each view
    costs two atomic reference-count updates on an array that all threads share).

    Parameters
    ----------
    p : (n, g) positive prices
    pw : (n, g) ``p ** -sigma = exp(-sigma * log p)`` on CES rows; not read on other rows
    e, a : (n, g) endowments and utility weights of the same agents
    family : (n,) :class:`Family` codes
    out : (n, g) written

    FMA contraction is allowed (``fastmath={"contract"}``, nothing else): the results are
    the same on every thread and every call, and agree with :func:`demand` to ~1e-15.
    """
    n, g = out.shape
    for i in range(n):
        f = family[i]
        w = 0.0
        for j in range(g):
            w += p[i, j] * e[i, j]
        if f == 3:  # CES: x_j = a_j p_j^-s w / sum_k a_k p_k^(1-s)
            denom = 0.0
            for j in range(g):
                t = a[i, j] * pw[i, j]
                out[i, j] = t
                denom += t * p[i, j]
            scale = w / denom
            for j in range(g):
                out[i, j] = out[i, j] * scale
        elif f == 1:  # Cobb-Douglas
            total = 0.0
            for j in range(g):
                total += a[i, j]
            for j in range(g):
                out[i, j] = (a[i, j] / total) * w / p[i, j]
        elif f == 2:  # Leontief
            denom = 0.0
            for j in range(g):
                denom += a[i, j] * p[i, j]
            for j in range(g):
                out[i, j] = a[i, j] * w / denom
        else:  # linear
            best = 0.0
            for j in range(g):
                b = a[i, j] / p[i, j]
                if b > best:
                    best = b
            cut = best * (1.0 - LINEAR_TIE_RTOL)
            m = 0
            for j in range(g):
                if a[i, j] / p[i, j] >= cut:
                    m += 1
            for j in range(g):
                out[i, j] = w / (m * p[i, j]) if a[i, j] / p[i, j] >= cut else 0.0


@numba.njit(cache=True, error_model="numpy")
def demand_row(p, logp, e, a, family, sigma, out):
    """Demand of one agent at prices ``p`` (g,) with ``logp = log(p)``; written to ``out`` (g,).

    The one-agent form of :func:`demand_rows` (the code the round kernels run), for
    inspection and tests; the kernels call :func:`demand_rows` on whole tiles.
    """
    g = p.shape[0]
    pw = np.empty((1, g))
    if family == 3:  # CES
        for j in range(g):
            pw[0, j] = np.exp(-sigma * logp[j])
    codes = np.empty(1, dtype=np.int8)
    codes[0] = family
    demand_rows(p[np.newaxis, :], pw, e[np.newaxis, :], a[np.newaxis, :], codes,
                out[np.newaxis, :])  # fmt: skip
