"""The CES utility family: closed-form demands, Walras' law, homogeneity, the numba twin,
and utility maximization on the budget line.

Random economies are drawn with hypothesis: 1..20 agents, 2..6 goods, every family
(CES with sigma in (0.05, 20)), prices log-uniform over six orders of magnitude.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tatonnet.agents import utility
from tatonnet.agents.utility import LINEAR_TIE_RTOL, Family, demand, demand_row

LIN, CD, LEO, CES = Family.LINEAR, Family.COBB_DOUGLAS, Family.LEONTIEF, Family.CES


def _demand1(p, e, a, family, sigma=np.nan):
    """Demand of one agent through the vectorized numpy path; (g,)."""
    return demand(
        np.array([p], dtype=float),
        np.array([e], dtype=float),
        np.array([a], dtype=float),
        np.array([family]),
        np.array([sigma], dtype=float),
    )[0]


# ---------------------------------------------------------------------------------------
# Known answers (closed forms worked by hand)
# ---------------------------------------------------------------------------------------

# (id, family, sigma, prices, endowment, shares, expected demand)
KNOWN_DEMANDS = [
    # Cobb-Douglas: x_j = (a_j / sum a) w / p_j
    ("cd-docstring", CD, np.nan, [1, 2], [1, 1], [0.5, 0.5], [1.5, 0.75]),
    # w = 6, normalized shares (1/4, 1/4, 1/2)
    ("cd-unnormalized", CD, np.nan, [1, 2, 4], [2, 0, 1], [1, 1, 2], [1.5, 0.75, 0.75]),
    # a zero share: nothing of that good
    ("cd-zero-share", CD, np.nan, [2, 5], [3, 0], [1, 0], [3.0, 0.0]),
    # Leontief: x_j = a_j w / (a . p)
    ("leontief", LEO, np.nan, [1, 1], [3, 0], [1, 2], [1.0, 2.0]),
    # w = 4, a.p = 2 + 4 = 6
    ("leontief-zero-share", LEO, np.nan, [1, 4, 9], [0, 1, 0], [2, 1, 0], [4 / 3, 2 / 3, 0.0]),
    # CES: x_j = a_j p_j^-s w / sum_k a_k p_k^(1-s)
    # s = 2, w = 3, t = (1, 1/4), t.p = 3/2
    ("ces-sigma2", CES, 2.0, [1, 2], [1, 1], [1, 1], [2.0, 0.5]),
    # s = 1/2, w = 4, t = (1/2, 4), t.p = 6
    ("ces-sigma-half", CES, 0.5, [4, 1], [1, 0], [1, 4], [1 / 3, 8 / 3]),
    # s = 1 is Cobb-Douglas with normalized shares (1/4, 3/4), w = 5
    ("ces-sigma1-is-cd", CES, 1.0, [1, 3], [2, 1], [1, 3], [1.25, 1.25]),
    # s = 3, p = (1, 1, 1): x proportional to a, w = 6
    ("ces-equal-prices", CES, 3.0, [1, 1, 1], [2, 2, 2], [1, 2, 3], [1.0, 2.0, 3.0]),
    # Linear: all wealth on the best a_j / p_j.  bang = (1, 1.5)
    ("linear-best", LIN, np.inf, [1, 2], [1, 1], [1, 3], [0.0, 1.5]),
    # Tie rule: exact tie of bang-per-buck (1, 1) splits wealth w = 4 equally: 2 / p_j
    ("linear-tie-2", LIN, np.inf, [1, 2], [2, 1], [1, 2], [2.0, 1.0]),
    # Tie rule: two of three goods tie at the best (1, 1, 0.5); w = 2 → 1 each in money
    ("linear-tie-2-of-3", LIN, np.inf, [1, 2, 2], [0, 0, 1], [1, 2, 1], [1.0, 0.5, 0.0]),
    # Tie rule: three-way tie, w = 3 → 1 unit of money on each
    ("linear-tie-3", LIN, np.inf, [1, 2, 4], [1, 1, 0], [1, 2, 4], [1.0, 0.5, 0.25]),
    # Tie rule: bang-per-buck within LINEAR_TIE_RTOL (1e-12) of the best counts as a tie
    ("linear-near-tie", LIN, np.inf, [1, 1], [1, 1], [1, 1 + 1e-14], [1.0, 1.0]),
    # ... but a gap of 1e-9 (far above the tolerance) is not a tie
    ("linear-no-tie", LIN, np.inf, [1, 1], [1, 1], [1, 1 + 1e-9], [0.0, 2.0]),
]


@pytest.mark.parametrize(
    ("family", "sigma", "prices", "endowment", "shares", "expected"),
    [case[1:] for case in KNOWN_DEMANDS],
    ids=[case[0] for case in KNOWN_DEMANDS],
)
def test_known_demand(family, sigma, prices, endowment, shares, expected):
    got = _demand1(prices, endowment, shares, family, sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    # and the numba scalar twin gives the same answer
    p = np.array(prices, dtype=float)
    out = np.empty_like(p)
    demand_row(p, np.log(p), np.array(endowment, float), np.array(shares, float),
               int(family), float(sigma), out)  # fmt: skip
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-15)


def test_linear_tie_rule_documented_tolerance():
    """The tie tolerance is the documented, scale-free 1e-12 relative."""
    assert LINEAR_TIE_RTOL == 1e-12
    # a relative gap of 1e-11 is ten times the tolerance: no tie
    x = _demand1([1.0, 1.0], [1.0, 1.0], [1.0, 1.0 + 1e-11], LIN, np.inf)
    assert x[0] == 0.0 and x[1] == pytest.approx(2.0, rel=1e-12)
    # and the rule is scale-free: scaling all prices by 1e6 keeps the near tie a tie
    x = _demand1([1e6, 1e6], [1.0, 1.0], [1.0, 1.0 + 1e-14], LIN, np.inf)
    np.testing.assert_allclose(x, [1.0, 1.0], rtol=1e-13)


def test_demand_mixed_families_in_one_block():
    """Rows of different families in one call each get their own closed form."""
    cases = [c for c in KNOWN_DEMANDS if len(c[3]) == 2]
    p = np.array([c[3] for c in cases], float)
    e = np.array([c[4] for c in cases], float)
    a = np.array([c[5] for c in cases], float)
    fam = np.array([c[1] for c in cases], dtype=np.int8)
    sig = np.array([c[2] for c in cases], float)
    got = demand(p, e, a, fam, sig)
    np.testing.assert_allclose(got, [c[6] for c in cases], rtol=1e-13, atol=1e-15)


KNOWN_UTILITIES = [
    # (id, family, sigma, shares, bundle, expected u)
    ("linear", LIN, np.inf, [1, 3], [2, 1], 5.0),
    ("cd", CD, np.nan, [1, 1], [4, 9], 6.0),  # sqrt(4 * 9)
    ("cd-unnormalized", CD, np.nan, [1, 3], [16, 1], 2.0),  # 16^(1/4)
    ("cd-zero-share-ignored", CD, np.nan, [1, 0], [3, 0], 3.0),
    ("leontief", LEO, np.nan, [1, 2], [3, 4], 2.0),  # min(3/1, 4/2)
    ("leontief-zero-share-ignored", LEO, np.nan, [1, 0], [3, 0], 3.0),
    ("ces-sigma2", CES, 2.0, [1, 1], [1, 1], 4.0),  # (1 + 1)^2
    ("ces-sigma2-b", CES, 2.0, [1, 4], [4, 1], 16.0),  # (1*2 + 2*1)^2
    ("ces-sigma-half", CES, 0.5, [1, 1], [1, 1], 0.5),  # r = -1: (1 + 1)^-1
]


@pytest.mark.parametrize(
    ("family", "sigma", "shares", "bundle", "expected"),
    [case[1:] for case in KNOWN_UTILITIES],
    ids=[case[0] for case in KNOWN_UTILITIES],
)
def test_known_utility(family, sigma, shares, bundle, expected):
    got = utility.utility(np.array([bundle], float), np.array([shares], float),
                          np.array([family]), np.array([sigma], float))  # fmt: skip
    assert got[0] == pytest.approx(expected, rel=1e-13)


def test_ces_utility_at_sigma_one_ranks_bundles():
    """sigma = 1 is a valid CES elasticity (Economy accepts it; demand handles it), so the
    utility must still rank bundles: more of a wanted good is strictly better."""
    shares = np.array([[0.5, 0.5], [0.5, 0.5]])
    u = utility.utility(np.array([[1.0, 1.0], [2.0, 1.0]]), shares,
                        np.array([CES, CES]), np.array([1.0, 1.0]))  # fmt: skip
    assert np.isfinite(u).all()
    assert u[1] > u[0]


# ---------------------------------------------------------------------------------------
# Random economies
# ---------------------------------------------------------------------------------------

FAMILIES = [LIN, CD, LEO, CES]


@st.composite
def economies(draw, families=FAMILIES, sigma_range=(0.05, 20.0), avoid_one=0.0):
    """A block of agents: (prices, endowments, shares, family, sigma), each row its own
    prices. Shares and endowments have random zeros but never an all-zero row."""
    n = draw(st.integers(1, 20))
    g = draw(st.integers(2, 6))
    shape = (n, g)
    log_prices = draw(hnp.arrays(float, shape, elements=st.floats(-3.0, 3.0)))
    positive = st.floats(0.0, 10.0).filter(lambda v: v == 0.0 or v > 1e-3)
    endowments = draw(hnp.arrays(float, shape, elements=positive))
    shares = draw(hnp.arrays(float, shape, elements=positive))
    # no all-zero row: give the diagonal-ish good a positive amount where a row is empty
    fix = np.arange(n) % g
    endowments[endowments.sum(1) == 0, fix[endowments.sum(1) == 0]] = 1.0
    shares[shares.sum(1) == 0, fix[shares.sum(1) == 0]] = 1.0
    family = np.array(draw(st.lists(st.sampled_from(families), min_size=n, max_size=n)),
                      dtype=np.int8)  # fmt: skip
    lo, hi = sigma_range
    sig_strategy = st.floats(lo, hi).filter(lambda s: abs(s - 1.0) >= avoid_one)
    ces_sigma = np.array(draw(st.lists(sig_strategy, min_size=n, max_size=n)))
    sigma = np.where(family == CES, ces_sigma,
                     np.select([family == LIN, family == CD], [np.inf, 1.0], 0.0))  # fmt: skip
    return 10.0**log_prices, endowments, shares, family, sigma


@settings(max_examples=100, deadline=None)
@given(economies())
def test_walras_law_per_agent(econ):
    p, e, a, fam, sig = econ
    x = demand(p, e, a, fam, sig)
    np.testing.assert_allclose(np.einsum("ij,ij->i", p, x), np.einsum("ij,ij->i", p, e),
                               rtol=1e-12, atol=0)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(economies(), st.floats(-3.0, 3.0))
def test_homogeneous_of_degree_zero(econ, log_scale):
    p, e, a, fam, sig = econ
    scale = 10.0**log_scale
    np.testing.assert_allclose(demand(scale * p, e, a, fam, sig), demand(p, e, a, fam, sig),
                               rtol=1e-10, atol=0)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(economies())
def test_demand_non_negative_and_finite(econ):
    p, e, a, fam, sig = econ
    x = demand(p, e, a, fam, sig)
    assert x.shape == p.shape
    assert np.isfinite(x).all()
    assert (x >= 0).all()
    # a good with zero weight is never demanded (every family)
    assert (x[a == 0] == 0).all()


@settings(max_examples=100, deadline=None)
@given(economies())
def test_demand_row_matches_numpy_demand(econ):
    """The numba scalar kernel fused into the round equals the readable numpy demand."""
    p, e, a, fam, sig = econ
    ref = demand(p, e, a, fam, sig)
    out = np.empty(p.shape[1])
    for i in range(p.shape[0]):
        demand_row(p[i], np.log(p[i]), e[i], a[i], int(fam[i]), float(sig[i]), out)
        np.testing.assert_allclose(out, ref[i], rtol=1e-12, atol=0,
                                   err_msg=f"row {i}, family {Family(fam[i]).name}")  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: Family(f).name.lower())
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_demand_maximizes_utility_on_budget_line(family, data):
    """The demanded bundle is weakly better than (i) random bundles spending the same
    wealth and (ii) small moves along the budget line away from it.

    CES elasticities within 0.05 of 1 are left out here: the CES formula's exponent
    s/(s-1) blows up there (sigma == 1 itself is tested above)."""
    p, e, a, fam, sig = data.draw(economies(families=[family], avoid_one=0.05))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n, g = p.shape
    x_star = demand(p, e, a, fam, sig)
    u_star = utility.utility(x_star, a, fam, sig)
    wealth = np.einsum("ij,ij->i", p, e)
    assert np.isfinite(u_star).all() and (u_star > 0).all()

    k = 64
    rep = lambda arr: np.repeat(arr, k, axis=0)  # noqa: E731
    # (i) random budget shares on the simplex: x_j = f_j w / p_j
    f = rng.dirichlet(np.ones(g), size=n * k)
    x_rand = f * rep(wealth[:, None]) / rep(p)
    u_rand = utility.utility(x_rand, rep(a), rep(fam), rep(sig)).reshape(n, k)
    assert (u_rand <= u_star[:, None] * (1 + 1e-9)).all()

    # (ii) local moves: x* + t d with p.d = 0, kept non-negative
    d = rng.standard_normal((n * k, g)) / rep(p)
    d -= (np.einsum("ij,ij->i", d, rep(p)) / np.einsum("ij,ij->i", rep(p), rep(p)))[:, None] * rep(
        p
    )
    x_loc = rep(x_star) + 1e-3 * d * rep(wealth[:, None])
    ok = (x_loc >= 0).all(axis=1)
    u_loc = utility.utility(np.maximum(x_loc, 0), rep(a), rep(fam), rep(sig))
    budget = np.einsum("ij,ij->i", x_loc, rep(p))
    np.testing.assert_allclose(budget[ok], rep(wealth)[ok], rtol=1e-9)  # on the budget line
    assert (u_loc[ok] <= rep(u_star)[ok] * (1 + 1e-9)).all()
