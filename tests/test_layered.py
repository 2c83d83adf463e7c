"""The layered (merchant) market: conservation, budgets, known answers, determinism, errors.

Economies are small (tens to a few hundred agents) so the module runs in seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tatonnet.agents.rules import PriceRule, RuleError, make_rule
from tatonnet.agents.rules.base import gradient_step
from tatonnet.agents.utility import Family
from tatonnet.environment.economy import Economy
from tatonnet.environment.equilibrium import cobb_douglas_equilibrium, distance
from tatonnet.environment.network import Network, build_network
from tatonnet.environment.tatonnement.dynamics import CentralTatonnement
from tatonnet.environment.trade.layered import (
    DEFAULTS,
    LayeredError,
    LayeredMarket,
    LayeredMetrics,
    make_layered_dynamics,
)


def economy(n=60, g=3, family=Family.CES, sigma=2.0, seed=0, numeraire=0) -> Economy:
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.1, 2.0, (n, g))
    a = rng.dirichlet(np.full(g, 2.0), n)
    return Economy(e, a, np.full(n, family, np.int8), np.full(n, float(sigma)),
                   numeraire=numeraire)  # fmt: skip


def run(dyn, prices, rounds):
    state = dyn.init_state(prices)
    out = [state]
    for _ in range(rounds):
        state, metrics = dyn.step(state)
        out.append(state)
    return out, metrics


def check_books(dyn, before, after):
    """Goods conserved per good; every agent's budget balances; merchant money sums to 0."""
    e = dyn.economy.endowments
    brought = e.sum(axis=0) + before.inventory.sum(axis=0)
    kept = after.allocation.sum(axis=0) + after.inventory.sum(axis=0)
    scale = e.sum() + np.abs(before.inventory).sum() + np.abs(after.allocation).sum()
    np.testing.assert_allclose(kept, brought, rtol=0, atol=1e-12 * scale)
    assert (after.allocation >= 0).all()
    p = dyn.merchant_prices(after)[dyn.merchant_of]  # (n, g) the prices each agent faced
    spent = np.einsum("ij,ij->i", p, after.allocation)
    earned = np.einsum("ij,ij->i", p, e)
    np.testing.assert_allclose(spent, earned, rtol=1e-12)
    traded = np.abs(p * (after.allocation - e)).sum()
    assert abs(after.cash.sum()) <= 1e-10 * (1.0 + traded * after.round)


# ---- conservation and budgets -------------------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(8, 40),
    g=st.integers(2, 4),
    sigma=st.sampled_from([0.5, 1.0, 3.0]),
    merchants=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    rebalance=st.sampled_from([0.0, 0.3, 0.5]),
    rule=st.sampled_from(["entropic", "multiplicative", "additive"]),
    layers=st.integers(1, 2),
)
def test_goods_and_money_conserved_every_round(
    n, g, sigma, merchants, seed, rebalance, rule, layers
):
    econ = economy(n, g, Family.CES, sigma, seed)
    net = Network.central(n) if merchants == 1 else build_network("ring", n, seed)
    dyn = make_layered_dynamics(econ, net, rule, step_size=0.05, n_merchants=merchants,
                                rebalance=rebalance, seed=seed, layers=layers,
                                fan_in=2)  # fmt: skip
    start = np.exp(np.random.default_rng(seed).uniform(-1, 1, g))
    states, _ = run(dyn, start, 15)
    # day 0 trades against the initial stock
    day0 = dataclasses.replace(states[0], inventory=DEFAULTS["initial_inventory"] * dyn.target)
    check_books(dyn, day0, states[0])
    for before, after in zip(states, states[1:], strict=False):
        check_books(dyn, before, after)


def test_rebalancing_shipments_are_paid_and_money_is_conserved():
    econ = economy(120, 3, seed=4)
    net = build_network("small-world", 120, 1, k=4, p=0.1)
    dyn = make_layered_dynamics(econ, net, "entropic", n_merchants=6, rebalance=0.5)
    state = dyn.init_state(np.ones(3))
    state, _ = dyn.step(state)
    assert dyn.merchant_network.n_edges >= 5
    assert np.abs(state.cash).max() > 1e-6  # shipments were paid for
    assert abs(state.cash.sum()) < 1e-12


# ---- known answers -------------------------------------------------------------------------
def test_flow_only_central_market_is_flat_central_tatonnement():
    """One merchant, flow_gain 1, inventory_gain 0: the merchant reads Z(p) off its books,
    so prices follow the central auctioneer's exactly."""
    econ = economy(50, 3, Family.CES, 2.0, seed=2)
    rule = make_rule("multiplicative", step_size=0.2)
    flat = CentralTatonnement(econ, rule)
    lay = make_layered_dynamics(econ, Network.central(50), rule, inventory_gain=0.0)
    p0 = np.array([1.0, 2.0, 0.5])
    fs, ls = flat.init_state(p0), lay.init_state(p0)
    for _ in range(60):
        fs, fm = flat.step(fs)
        ls, lm = lay.step(ls)
        np.testing.assert_allclose(lay.prices(ls), flat.prices(fs), rtol=1e-12)
        np.testing.assert_allclose(lm.excess, fm.excess, rtol=1e-9, atol=1e-14)


def test_cobb_douglas_central_converges_to_closed_form_with_stock_on_target():
    econ = economy(80, 3, Family.COBB_DOUGLAS, seed=5)
    pstar = cobb_douglas_equilibrium(econ)
    dyn = make_layered_dynamics(econ, Network.central(80), "entropic", step_size=0.3)
    state = dyn.init_state(np.array([1.0, 3.0, 0.3]))
    for _ in range(3000):
        state, m = dyn.step(state)
        if m.excess_demand < 1e-11:
            break
    assert m.excess_demand < 1e-11, m.excess_demand
    assert distance(dyn.prices(state)[0], pstar) < 1e-9
    fill = state.inventory / dyn.target
    np.testing.assert_allclose(fill[:, 1:], 1.0, atol=1e-10)  # priced goods back on target
    # the numeraire stock holds the merchant's trading result: it moved off target
    assert abs(fill[0, 0] - 1.0) > 1e-3


def test_cobb_douglas_network_tracking_reaches_walras_and_agreement():
    n = 200
    econ = economy(n, 3, Family.COBB_DOUGLAS, seed=1)
    pstar = cobb_douglas_equilibrium(econ)
    net = build_network("small-world", n, 3, k=6, p=0.1)
    dyn = make_layered_dynamics(econ, net, "multiplicative", step_size=0.2, n_merchants=5)
    state = dyn.init_state(np.ones(3))
    for _ in range(2000):
        state, m = dyn.step(state)
        if m.excess_demand < 1e-10 and m.price_dispersion < 1e-10:
            break
    assert isinstance(m, LayeredMetrics)
    assert m.excess_demand < 1e-10 and m.price_dispersion < 1e-10
    assert distance(m.mean_price, pstar) < 1e-8
    total = state.inventory.sum(axis=0) / dyn.target.sum(axis=0)
    np.testing.assert_allclose(total[1:], 1.0, atol=1e-9)
    # territories do not clear locally at p*: steady shipments keep their stocks apart
    fill = state.inventory / dyn.target
    assert np.ptp(fill[:, 1:], axis=0).max() > 1e-3
    state2, _ = dyn.step(state)
    np.testing.assert_allclose(state2.inventory, state.inventory, atol=1e-8)


def test_local_signal_without_price_mixing_gives_territorial_equilibria():
    """No price messages: each territory finds its own local equilibrium (dispersion)."""
    n = 120
    econ = economy(n, 3, Family.COBB_DOUGLAS, seed=8)
    net = build_network("small-world", n, 2, k=4, p=0.1)
    dyn = make_layered_dynamics(econ, net, "entropic", step_size=0.3, n_merchants=4,
                                signal="local", mix_prices=False, rebalance=0.0)  # fmt: skip
    state = dyn.init_state(np.ones(3))
    for _ in range(1500):
        state, m = dyn.step(state)
    assert np.abs(m.excess).max() < 1e-9
    p = dyn.merchant_prices(state)
    for k in range(dyn.n_merchants):
        rows = dyn.merchant_of == k
        local = Economy(econ.endowments[rows], econ.shares[rows], econ.family[rows],
                        econ.sigma[rows])  # fmt: skip
        assert distance(p[k], cobb_douglas_equilibrium(local)) < 1e-8
    assert m.price_dispersion > 1e-3


def test_agents_deal_with_their_nearest_merchant():
    n = 150
    econ = economy(n, 2, seed=3)
    net = build_network("small-world", n, 5, k=4, p=0.05)
    dyn = make_layered_dynamics(econ, net, n_merchants=7, seed=11)
    adj = scipy.sparse.csr_array((np.ones(net.indices.size), net.indices, net.indptr), (n, n))
    hops = scipy.sparse.csgraph.shortest_path(adj, unweighted=True, indices=dyn.sites)
    mine = hops[dyn.merchant_of, np.arange(n)]
    np.testing.assert_array_equal(mine, hops.min(axis=0))
    np.testing.assert_array_equal(dyn.merchant_of[dyn.sites], np.arange(7))
    G = dyn.merchant_network.to_networkx()
    import networkx as nx

    assert nx.is_connected(G)


# ---- determinism --------------------------------------------------------------------------
def test_same_seed_same_run_and_seed_moves_merchants():
    econ = economy(100, 3, seed=6)
    net = build_network("small-world", 100, 0, k=4, p=0.2)

    def final(seed):
        dyn = make_layered_dynamics(econ, net, "entropic", n_merchants=5, seed=seed)
        states, m = run(dyn, np.array([1.0, 1.5, 0.7]), 30)
        return dyn, states[-1], m

    d1, s1, m1 = final(3)
    d2, s2, m2 = final(3)
    for field in ("coords", "inventory", "cash", "tracker", "allocation"):
        np.testing.assert_array_equal(getattr(s1, field), getattr(s2, field))
    np.testing.assert_array_equal(m1.excess, m2.excess)
    d3, _, _ = final(4)
    assert not np.array_equal(d1.sites, d3.sites)


def test_step_is_pure():
    econ = economy(40, 3, seed=9)
    dyn = make_layered_dynamics(econ, build_network("ring", 40, 0), "entropic", n_merchants=3)
    s0 = dyn.init_state(np.ones(3))
    a, _ = dyn.step(s0)
    b, _ = dyn.step(s0)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.inventory, b.inventory)


# ---- errors ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Composite(PriceRule):
    """A stand-in for a rule that needs its own engine (extragradient-like)."""

    name = "composite-test"
    space = "log"
    engine = "composite-test"
    kernel = staticmethod(gradient_step)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"target": 0.0}, LayeredError, "target"),
        ({"target": float("nan")}, LayeredError, "target"),
        ({"inventory_gain": -1.0}, LayeredError, "inventory_gain"),
        ({"flow_gain": 0.0, "inventory_gain": 0.0}, LayeredError, "both 0"),
        ({"rebalance": 0.9}, LayeredError, "rebalance"),
        ({"n_merchants": 0}, LayeredError, "n_merchants"),
        ({"n_merchants": 2.5}, LayeredError, "n_merchants"),
        ({"signal": "oracle"}, LayeredError, "signal"),
        ({"seed": -1}, LayeredError, "seed"),
        ({"mix_prices": "yes"}, LayeredError, "mix_prices"),
        ({"warehouses": 3}, RuleError, "warehouses"),
        ({"step_size": float("nan")}, RuleError, "step_size"),
    ],
)
def test_bad_parameters_one_line_errors(kwargs, error, words):
    econ = economy(30, 3)
    with pytest.raises(error) as info:
        make_layered_dynamics(econ, build_network("ring", 30, 0), "entropic", **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_other_bad_inputs_one_line_errors():
    econ = economy(30, 3)
    with pytest.raises(RuleError, match="engine") as info:
        LayeredMarket(econ, Network.central(30), _Composite())
    assert "\n" not in str(info.value)
    with pytest.raises(LayeredError, match="one merchant"):
        make_layered_dynamics(econ, Network.central(30), n_merchants=3)
    with pytest.raises(LayeredError, match="network has"):
        make_layered_dynamics(econ, Network.central(31))
    with pytest.raises(RuleError, match="unknown rule"):
        make_layered_dynamics(econ, Network.central(30), "newtonish")
    dyn = make_layered_dynamics(econ, Network.central(30))
    for bad in (np.array([1.0, np.nan, 1.0]), np.array([1.0, -1.0, 1.0]), np.ones(4)):
        with pytest.raises(LayeredError, match="initial prices"):
            dyn.init_state(bad)


def test_interface_attributes():
    econ = economy(30, 3)
    dyn = make_layered_dynamics(econ, build_network("ring", 30, 0), n_merchants=3)
    assert dyn.rule.name == "multiplicative" and dyn.space == "log"
    assert dyn.signal == "tracking" and dyn.network.n_agents == 30
    np.testing.assert_array_equal(dyn.supply, econ.supply)
    state = dyn.init_state(np.ones(3))
    assert dyn.prices(state).shape == (30, 3)
    msgs = dyn.messages_per_round()
    assert msgs["messages"] >= 2 * 30 and msgs["floats"] > msgs["messages"]


# ---- layers -------------------------------------------------------------------------------
def test_wholesale_layers_structure_and_conservation():
    n = 150
    econ = economy(n, 3, seed=12)
    net = build_network("small-world", n, 7, k=4, p=0.1)
    dyn = make_layered_dynamics(econ, net, "entropic", n_merchants=9, layers=3, fan_in=3)
    np.testing.assert_array_equal(np.bincount(dyn.layer), [0, 9, 3, 1])
    # every non-top merchant hangs under a merchant one layer up; only the top has no parent
    below = dyn.parent >= 0
    np.testing.assert_array_equal(dyn.layer[dyn.parent[below]], dyn.layer[below] + 1)
    assert (~below).sum() == 1 and dyn.merchant_network.n_edges == 9 + 3  # a tree
    np.testing.assert_array_equal(dyn.clients[9:], 0)
    np.testing.assert_allclose(dyn.scale[12], econ.supply)  # the top holds everybody's scale
    states, _ = run(dyn, np.array([1.0, 0.5, 2.0]), 20)
    for before, after in zip(states, states[1:], strict=False):
        check_books(dyn, before, after)


def test_central_wholesale_chain_converges_to_closed_form():
    econ = economy(60, 3, Family.COBB_DOUGLAS, seed=13)
    pstar = cobb_douglas_equilibrium(econ)
    dyn = make_layered_dynamics(econ, Network.central(60), "multiplicative", step_size=0.2,
                                layers=2)  # fmt: skip
    assert dyn.n_merchants == 2 and dyn.parent.tolist() == [1, -1]
    state = dyn.init_state(np.ones(3))
    for _ in range(4000):
        state, m = dyn.step(state)
        if m.excess_demand < 1e-10 and m.price_dispersion < 1e-10:
            break
    assert m.excess_demand < 1e-10 and m.price_dispersion < 1e-10
    assert distance(dyn.prices(state)[0], pstar) < 1e-8
    assert dyn.prices(state).shape == (1, 3)


@pytest.mark.parametrize("kwargs", [{"layers": 0}, {"layers": 2, "fan_in": 1}, {"fan_in": 2.0}])
def test_bad_layer_parameters(kwargs):
    with pytest.raises(LayeredError, match="layers|fan_in"):
        make_layered_dynamics(economy(20, 2), build_network("ring", 20, 0), **kwargs)
