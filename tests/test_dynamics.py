"""Tâtonnement dynamics: round invariants, metrics, the numpy reference round, central vs
network equilibrium, determinism, and validation of economies and rules.

The numba round is compiled once per rule per process (cached on disk afterwards); the
economies here are small so that the whole module stays within a few seconds.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tatonnet.agents.rules import PRICE_FLOOR, RULES, RuleError, make_rule
from tatonnet.agents.utility import Family
from tatonnet.environment.economy import Economy, EconomyError
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.network import Network, build_network
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    SIGNALS,
    CentralTatonnement,
    MarketState,
    NetworkTatonnement,
)

# rules run by the fused kernel (composite rules have their own dynamics: test_composite.py)
RULE_NAMES = sorted(name for name, cls in RULES.items() if cls.engine is None)


def ces_economy(n=30, g=3, sigma=2.0, seed=0, numeraire=0, scales=None) -> Economy:
    """A CES economy with positive endowments and weights; ``scales`` (e, a) per good."""
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.1, 2.0, (n, g))
    a = rng.uniform(0.1, 1.0, (n, g))
    if scales is not None:
        e, a = e * scales[0], a * scales[1]
    return Economy(e, a, np.full(n, Family.CES, np.int8), np.full(n, sigma),
                   numeraire=numeraire)  # fmt: skip


def dense(net: Network, weights=None) -> np.ndarray:
    w = net.mixing if weights is None else weights
    return sp.csr_matrix((w, net.indices, net.indptr), shape=(net.n_agents,) * 2).toarray()


def run(dyn, prices, rounds, use_spare=True):
    """``rounds`` rounds from ``prices``; yields (state, metrics) after every round.

    With ``use_spare`` the state of two rounds ago is recycled as the output buffers (the
    ping-pong the engine supports); states yielded are then only valid until the next one.
    """
    state = dyn.init_state(prices)
    spare = None
    for _ in range(rounds):
        new, metrics = dyn.step(state, spare)
        spare = state if use_spare else None
        state = new
        yield state, metrics


# ---------------------------------------------------------------------------------------
# Round invariants, every rule x signal
# ---------------------------------------------------------------------------------------

INIT_PRICES = np.array([1.0, 2.5, 0.4])


@pytest.fixture(scope="module")
def small_world():
    return build_network("small-world", 30, 1, k=4, p=0.2)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("numeraire", [0, 2])
def test_round_invariants(rule_name, signal, numeraire, small_world):
    economy = ces_economy(numeraire=numeraire)
    endowments = economy.endowments.copy()
    supply = economy.supply.copy()
    dyn = NetworkTatonnement(economy, small_world, make_rule(rule_name), signal)
    assert dyn.space == RULES[rule_name].space
    for t, (state, metrics) in enumerate(run(dyn, INIT_PRICES, 50), start=1):
        assert state.round == metrics.round == t
        prices = dyn.prices(state)
        assert prices.shape == (30, 3)
        assert np.isfinite(prices).all() and (prices > 0).all()
        # the numeraire is exactly 1 for every agent, every round
        assert (prices[:, numeraire] == 1.0).all()
        # price search neither creates nor destroys goods
        np.testing.assert_array_equal(economy.endowments, endowments)
        np.testing.assert_array_equal(economy.supply, supply)
        # Walras' law per agent at its own prices: p_i . z_i = 0
        wealth = np.einsum("ij,ij->i", prices, endowments)
        np.testing.assert_allclose(np.einsum("ij,ij->i", prices, state.excess) / wealth, 0.0,
                                   atol=1e-12)  # fmt: skip
        if signal == "tracking":
            # gradient tracking: W doubly stochastic keeps sum_i y_i == sum_i z_i
            gap = state.tracker.sum(axis=0) - state.excess.sum(axis=0)
            assert (np.abs(gap) <= 1e-9 * supply).all(), (t, gap / supply)
        assert metrics.finite


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_metrics_match_numpy(rule_name, signal, small_world):
    economy = ces_economy(seed=4)
    dyn = NetworkTatonnement(economy, small_world, make_rule(rule_name), signal)
    checked = 0
    for state, metrics in run(dyn, INIT_PRICES, 30):
        prices = dyn.prices(state)
        # per-agent excess demand at own prices, recomputed with the numpy demand
        z = economy.excess_demand(prices)
        np.testing.assert_allclose(state.excess, z, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(metrics.excess, z.sum(axis=0) / economy.supply,
                                   rtol=0, atol=1e-10)  # fmt: skip
        np.testing.assert_allclose(metrics.mean_price, prices.mean(axis=0), rtol=1e-12)
        logp = np.log(prices)
        np.testing.assert_allclose(metrics.log_min, logp.min(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(metrics.log_max, logp.max(axis=0), rtol=0, atol=1e-12)
        assert metrics.excess_demand == pytest.approx(np.abs(metrics.excess).max(), rel=1e-15)
        assert metrics.price_dispersion == pytest.approx((metrics.log_max - metrics.log_min).max())
        checked += 1
    assert checked == 30


# ---------------------------------------------------------------------------------------
# Equivalence: the fused numba round vs the round written out in numpy
# ---------------------------------------------------------------------------------------


def numpy_rule(rule, u, signal, buffers):
    """Every rule's update written out in numpy for all rows at once: new ``u`` (n, g).

    ``buffers`` (n, n_buffers, g) is a copy of the optimizer state; it is updated here.
    """
    name, step = rule.name, rule.step_size
    if name == "multiplicative":
        return u + np.log1p(step * np.clip(signal, -1.0, 1.0))
    if name in ("momentum", "nesterov"):
        v_old = buffers[:, 0].copy()
        v = rule.momentum * v_old + step * signal
        buffers[:, 0] = v
        return u + (v if name == "momentum" else (1 + rule.momentum) * v - rule.momentum * v_old)
    if name == "adam":
        t = buffers[:, 2, :1] + 1
        m = rule.beta1 * buffers[:, 0] + (1 - rule.beta1) * signal
        w = rule.beta2 * buffers[:, 1] + (1 - rule.beta2) * signal**2
        buffers[:, 0], buffers[:, 1], buffers[:, 2] = m, w, t
        return u + step * (m / (1 - rule.beta1**t)) / (np.sqrt(w / (1 - rule.beta2**t)) + rule.eps)
    if name == "optimistic":
        previous = buffers[:, 0].copy()
        buffers[:, 0] = signal
        return u + step * (2 * signal - previous)
    if name == "async-goods":
        k = int(buffers[0, 1, 0])  # the same count in every row
        u = u.copy()
        buffers[:, 0, k] = rule.momentum * buffers[:, 0, k] + step * signal[:, k]
        u[:, k] += buffers[:, 0, k]
        buffers[:, 1, 0] = (k + 1) % u.shape[1]
        return u
    if name == "async-blocks":
        count = buffers[:, 1, 0]
        active = count == buffers[:, 1, 1]
        v = np.where(active[:, None], rule.momentum * buffers[:, 0] + step * signal, buffers[:, 0])
        buffers[:, 0] = v
        buffers[:, 1, 0] = (count + 1) % rule.blocks
        return u + np.where(active[:, None], v, 0.0)
    return u + step * signal  # additive (price space) and entropic (log space)


def numpy_round(dyn, state):
    """The documented round (environment/tatonnement/kernel.py docstring) in plain numpy."""
    economy, net = dyn.economy, dyn.network
    W = dense(net)
    A = dense(net, np.ones_like(net.mixing))  # closed-neighbourhood adjacency
    e = economy.endowments
    if dyn.signal == "tracking":
        signal = state.tracker / (A @ e / A.sum(axis=1, keepdims=True))
    else:
        signal = (A @ state.excess) / (A @ e)
    u = numpy_rule(dyn.rule, W @ state.coords, signal, state.buffers.copy())
    if dyn.space == "log":
        u[:, economy.numeraire] = 0.0
        prices = np.exp(u)
    else:
        u[:, economy.numeraire] = 1.0
        u = np.maximum(u, PRICE_FLOOR)
        prices = u
    z = economy.excess_demand(prices)
    y = W @ state.tracker + z - state.excess
    return u, y, z


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_round_matches_numpy_reference(rule_name, signal):
    economy = ces_economy(n=25, seed=7, numeraire=1)
    net = build_network("scale-free", 25, 3, m=2)  # unequal degrees
    dyn = NetworkTatonnement(economy, net, make_rule(rule_name), signal)
    state = dyn.init_state(INIT_PRICES)
    for _ in range(20):
        u, y, z = numpy_round(dyn, state)
        state, _ = dyn.step(state)
        np.testing.assert_allclose(state.coords, u, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.excess, z, rtol=1e-10, atol=1e-12)
        if signal == "tracking":
            np.testing.assert_allclose(state.tracker, y, rtol=1e-10, atol=1e-11)


def test_additive_floors_prices():
    """A price-space step that would push a price below zero is floored at PRICE_FLOOR."""
    economy = ces_economy(n=10, g=2, seed=2)
    net = build_network("complete", 10, 0)
    dyn = NetworkTatonnement(economy, net, make_rule("additive", step_size=50.0), "local")
    # good 1 too expensive: z/s near -0.9, and 10 - 50 * 0.9 < 0 overshoots below zero
    state, metrics = dyn.step(dyn.init_state(np.array([1.0, 10.0])))
    prices = dyn.prices(state)
    assert (prices[:, 1] == PRICE_FLOOR).all()
    assert (prices[:, 0] == 1.0).all()
    assert metrics.log_min[1] == pytest.approx(math.log(PRICE_FLOOR))


# ---------------------------------------------------------------------------------------
# Random economies and graphs (hypothesis)
# ---------------------------------------------------------------------------------------


@st.composite
def markets(draw):
    n = draw(st.integers(4, 24))
    g = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.5, 2.0, (n, g))
    a = rng.uniform(0.1, 1.0, (n, g))
    family = rng.integers(0, 4, n).astype(np.int8)
    sigma = np.where(family == Family.CES, rng.uniform(0.2, 5.0, n), 1.0)
    economy = Economy(e, a, family, sigma, numeraire=draw(st.integers(0, g - 1)))
    kind = draw(st.sampled_from(["ring", "complete", "grid", "small-world"]))
    net = build_network(kind, n, seed, k=2, p=0.3)
    rule = draw(st.sampled_from(RULE_NAMES))
    signal = draw(st.sampled_from(SIGNALS))
    prices = np.exp(rng.uniform(-1.0, 1.0, g))
    return economy, net, rule, signal, prices


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_invariants_random_markets(market):
    """Mixed families (incl. linear and Leontief) on random graphs, small steps."""
    economy, net, rule_name, signal, init = market
    endowments = economy.endowments.copy()
    dyn = NetworkTatonnement(economy, net, make_rule(rule_name, step_size=0.02), signal)
    for state, _ in run(dyn, init, 20):
        prices = dyn.prices(state)
        assert np.isfinite(prices).all() and (prices > 0).all()
        assert (prices[:, economy.numeraire] == 1.0).all()
        np.testing.assert_array_equal(economy.endowments, endowments)
        if signal == "tracking":
            # exact in real arithmetic; in floating point, relative to the magnitudes summed
            # (a diverging additive run can reach excess demands of 1e12)
            gap = state.tracker.sum(axis=0) - state.excess.sum(axis=0)
            scale = economy.supply + np.abs(state.tracker).sum(0) + np.abs(state.excess).sum(0)
            assert (np.abs(gap) <= 1e-9 * scale).all()


# ---------------------------------------------------------------------------------------
# Central auctioneer
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_central_round_invariants(rule_name):
    economy = ces_economy(n=40, g=3, seed=5, numeraire=1)
    dyn = make_dynamics(economy, Network.central(40), make_rule(rule_name))
    assert isinstance(dyn, CentralTatonnement)
    for state, metrics in run(dyn, INIT_PRICES, 30):
        prices = dyn.prices(state)
        assert prices.shape == (1, 3)
        assert np.isfinite(prices).all() and (prices > 0).all()
        assert prices[0, 1] == 1.0
        aggregate = economy.aggregate_excess_demand(prices[0])
        np.testing.assert_allclose(state.excess[0], aggregate, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(metrics.excess, aggregate / economy.supply, atol=1e-12)
        np.testing.assert_allclose(metrics.mean_price, prices[0], rtol=1e-15)
        assert metrics.price_dispersion == 0.0


def test_central_and_network_reach_the_same_equilibrium():
    """CES sigma = 2 (gross substitutes: unique equilibrium). The central auctioneer
    converges; gradient-tracking entropic tâtonnement on a small world reaches the same
    prices at every agent."""
    economy = ces_economy(n=200, g=4, sigma=2.0, seed=0,
                          scales=([1.0, 4.0, 0.5, 2.0], [1.0, 1.0, 2.0, 0.5]))  # fmt: skip
    init = np.ones(4)

    central = CentralTatonnement(economy, make_rule("entropic", step_size=0.5))
    for state, metrics in run(central, init, 1000):  # noqa: B007  (state used below)
        if metrics.excess_demand < 1e-12:
            break
    assert metrics.excess_demand < 1e-10
    p_star = central.prices(state)[0]
    np.testing.assert_allclose(economy.aggregate_excess_demand(p_star) / economy.supply, 0.0,
                               atol=1e-10)  # fmt: skip
    assert np.abs(p_star - 1.0).max() > 0.4  # a non-trivial equilibrium, far from the start

    net = build_network("small-world", 200, 0, k=6, p=0.1)
    dyn = NetworkTatonnement(economy, net, make_rule("entropic", step_size=0.05), "tracking")
    converged_at = None
    # ~3000 rounds of one reduction block: one numba thread avoids the parallel launch
    # overhead, which on a busy 2-core machine costs milliseconds a round (the bits are
    # the same whatever the thread count: test_bit_identical_across_thread_counts)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for state, metrics in run(dyn, init, 5000):
            if metrics.excess_demand < 1e-11 and metrics.price_dispersion < 1e-10:
                converged_at = state.round
                break
    finally:
        numba.set_num_threads(threads)
    assert converged_at is not None, (metrics.excess_demand, metrics.price_dispersion)
    np.testing.assert_allclose(dyn.prices(state), np.broadcast_to(p_star, (200, 4)),
                               rtol=1e-8, atol=0)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------


def _trajectory(dyn, init, rounds, use_spare=True):
    out = []
    for state, metrics in run(dyn, init, rounds, use_spare):
        out.append((state.coords.copy(), state.tracker.copy(), state.excess.copy(),
                    metrics.excess, metrics.mean_price, metrics.log_min, metrics.log_max))  # fmt: skip
    return out


def _assert_identical(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for xa, xb in zip(ra, rb, strict=True):
            assert np.array_equal(xa, xb)


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_two_runs_bit_identical(rule_name, small_world):
    economy = ces_economy(seed=9)
    make = lambda: NetworkTatonnement(economy, small_world, make_rule(rule_name), "tracking")  # noqa: E731
    first = _trajectory(make(), INIT_PRICES, 25)
    second = _trajectory(make(), INIT_PRICES, 25)
    _assert_identical(first, second)
    # fresh output buffers every round give the same bits as recycled (ping-pong) ones
    _assert_identical(first, _trajectory(make(), INIT_PRICES, 25, use_spare=False))


def test_bit_identical_across_thread_counts():
    """More agents than two reduction blocks: metrics reduce over fixed blocks of global
    ids, so 1 thread and all threads give the same bits."""
    n = 2 * kernel.BLOCK + 123
    assert kernel.n_blocks(n) == 3
    economy = ces_economy(n=n, g=3, seed=11)
    net = build_network("ring", n, 0)
    dyn = NetworkTatonnement(economy, net, make_rule("entropic"), "tracking")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _trajectory(dyn, INIT_PRICES, 5)
    finally:
        numba.set_num_threads(threads)
    many = _trajectory(dyn, INIT_PRICES, 5)
    _assert_identical(one, many)


def test_step_does_not_modify_its_input_state(small_world):
    economy = ces_economy(seed=3)
    dyn = NetworkTatonnement(economy, small_world, make_rule("entropic"), "tracking")
    state = dyn.init_state(INIT_PRICES)
    before = [state.coords.copy(), state.tracker.copy(), state.excess.copy()]
    new, _ = dyn.step(state)
    for old, arr in zip(before, (state.coords, state.tracker, state.excess), strict=True):
        np.testing.assert_array_equal(old, arr)
    assert new.coords is not state.coords and new.round == state.round + 1


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


def _economy_arrays(n=3, g=2):
    return dict(
        endowments=np.ones((n, g)),
        shares=np.ones((n, g)),
        family=np.full(n, Family.CES, np.int8),
        sigma=np.full(n, 2.0),
    )


def _with(key, row, col, value):
    arrays = _economy_arrays()
    arr = arrays[key].astype(float) if key != "family" else arrays[key]
    if col is None:
        arr[row] = value
    else:
        arr[row, col] = value
    arrays[key] = arr
    return arrays


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (_with("endowments", 1, 0, -0.5), "endowments"),
        (_with("endowments", 1, 0, np.nan), "endowments: NaN"),
        (_with("endowments", 0, 1, np.inf), "endowments"),
        (_with("shares", 2, 1, np.nan), "shares: NaN"),
        (_with("shares", 2, 1, -1.0), "shares"),
        (_with("shares", 2, slice(None), 0.0), "agent 2 wants nothing"),
        (_with("endowments", 1, slice(None), 0.0), "agent 1 owns nothing"),
        (_with("endowments", slice(None), 1, 0.0), "nobody owns good 1"),
        (_with("sigma", 0, None, 0.0), "sigma"),
        (_with("sigma", 0, None, -2.0), "sigma"),
        (_with("sigma", 0, None, np.inf), "sigma"),
        (_with("sigma", 0, None, np.nan), "sigma"),
    ],
    ids=[
        "negative-endowment", "nan-endowment", "inf-endowment", "nan-share", "negative-share",
        "zero-shares", "zero-endowment-agent", "good-nobody-owns", "ces-sigma-zero",
        "ces-sigma-negative", "ces-sigma-inf", "sigma-nan",
    ],
)  # fmt: skip
def test_economy_rejects(arrays, match):
    with pytest.raises(EconomyError, match=match) as info:
        Economy(**arrays)
    assert "\n" not in str(info.value)


def test_economy_rejects_shapes_and_numeraire():
    base = _economy_arrays()
    with pytest.raises(EconomyError, match="must be"):
        Economy(**{**base, "shares": np.ones((3, 3))})
    with pytest.raises(EconomyError, match="at least 2 goods"):
        Economy(**{**_economy_arrays(g=1)})
    with pytest.raises(EconomyError, match="numeraire"):
        Economy(**base, numeraire=2)
    with pytest.raises(EconomyError, match="numeraire"):
        Economy(**base, numeraire=-1)
    with pytest.raises(EconomyError, match="goods"):
        Economy(**base, goods=("only-one",))


def test_economy_accepts_limit_families_with_their_sigma():
    """sigma is only checked for CES rows: linear carries inf, Leontief 0."""
    economy = Economy(np.ones((3, 2)), np.ones((3, 2)),
                      np.array([Family.LINEAR, Family.LEONTIEF, Family.COBB_DOUGLAS], np.int8),
                      np.array([np.inf, 0.0, 1.0]), goods=("bread", "wine"))  # fmt: skip
    assert economy.goods == ("bread", "wine")
    np.testing.assert_array_equal(economy.supply, [3.0, 3.0])


def test_economy_rejects_unknown_family_code():
    with pytest.raises(EconomyError):
        Economy(np.ones((3, 2)), np.ones((3, 2)), np.array([7, 1, 1], np.int8), np.ones(3))


def test_economy_rejects_short_family_array():
    with pytest.raises(EconomyError):
        Economy(np.ones((3, 2)), np.ones((3, 2)), np.array([1, 1], np.int8), np.ones(3))


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("no-such-rule", {}, "unknown rule"),
        ("entropic", {"momentum": 0.9}, "no hyperparameter 'momentum'"),
        ("additive", {"step": 0.1}, "no hyperparameter 'step'"),
        ("entropic", {"step_size": 0.0}, "positive finite"),
        ("entropic", {"step_size": -0.1}, "positive finite"),
        ("additive", {"step_size": float("nan")}, "positive finite"),
        ("additive", {"step_size": float("inf")}, "positive finite"),
        ("entropic", {"step_size": "0.1"}, "positive finite"),
        ("multiplicative", {"step_size": 0.0}, "positive finite"),
        ("multiplicative", {"step_size": 1.0}, "must be < 1"),
        ("multiplicative", {"step_size": 1.5}, "must be < 1"),
    ],
)
def test_make_rule_rejects(name, params, match):
    with pytest.raises(RuleError, match=match) as info:
        make_rule(name, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", RULE_NAMES)
def test_make_rule_builds_registered_rules(name):
    rule = make_rule(name, step_size=0.25)
    assert type(rule) is RULES[name] and rule.name == name
    assert rule.space in ("log", "price")
    assert rule.params()[0] == 0.25  # step_size first, then the rule's own hyperparameters
    assert make_rule(name).step_size == RULES[name]().step_size > 0


def test_dynamics_rejects_bad_setup(small_world):
    economy = ces_economy()
    rule = make_rule("entropic")
    with pytest.raises(ValueError, match="needs a graph"):
        NetworkTatonnement(economy, Network.central(30), rule)
    with pytest.raises(ValueError, match="signal"):
        NetworkTatonnement(economy, small_world, rule, "gossip")
    with pytest.raises(ValueError, match="31 agents"):
        NetworkTatonnement(economy, build_network("ring", 31, 0), rule)


def test_init_state_normalizes_to_numeraire(small_world):
    economy = ces_economy(numeraire=2)
    dyn = NetworkTatonnement(economy, small_world, make_rule("additive"), "local")
    state = dyn.init_state(np.array([2.0, 4.0, 8.0]))
    assert isinstance(state, MarketState) and state.round == 0
    np.testing.assert_array_equal(dyn.prices(state), np.broadcast_to([0.25, 0.5, 1.0], (30, 3)))
    np.testing.assert_allclose(state.excess, economy.excess_demand(np.array([0.25, 0.5, 1.0])),
                               rtol=1e-12, atol=1e-13)  # fmt: skip
    np.testing.assert_array_equal(state.tracker, state.excess)
