"""The books design of the layered market: merchants price with optimistic, extragradient
and Broyden rules read off their own books; the study's market names and market
hyperparameters.

Economies are small (tens to a few hundred agents) so the module runs in seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_layered import check_books, economy

from tatonnet.agents.jacobian import aggregate_demand_jacobian
from tatonnet.agents.rules import make_rule
from tatonnet.agents.utility import Family
from tatonnet.environment.equilibrium import cobb_douglas_equilibrium, distance
from tatonnet.environment.network import Network, build_network
from tatonnet.environment.trade import merchant_rules
from tatonnet.environment.trade.layered import (
    DEFAULTS,
    BooksMarket,
    LayeredError,
    LayeredMarket,
    make_layered_dynamics,
)
from tatonnet.studies import grid, search_space
from tatonnet.studies.grid import Cell, StudyError, make_market, split_hyperparameters

#: Each merchant rule and the cell rule it stands for, at a step that converges centrally.
MERCHANTS = [("optimistic", "optimistic", 0.2), ("extragradient", "extragradient", 0.3),
             ("broyden", "newton", 0.5)]  # fmt: skip


def books(econ, net, merchant_rule, step=0.05, **params):
    rule = {"optimistic": "optimistic", "extragradient": "extragradient", "broyden": "newton"}
    return make_layered_dynamics(econ, net, rule[merchant_rule], design="books",
                                 step_size=step, **params)  # fmt: skip


def days(dyn, state, rounds):
    """Every market day of ``rounds`` rounds after ``state``, in order (day 0 first)."""
    out = [state]
    for _ in range(rounds):
        out.extend(dyn.market_days(out[-1]))
    return out


def converge(dyn, prices, rounds, tol):
    state = dyn.init_state(prices)
    for _ in range(rounds):
        state, m = dyn.step(state)
        if m.excess_demand < tol and m.price_dispersion < tol:
            break
    return state, m


# ---- accounting ----------------------------------------------------------------------------
@pytest.mark.parametrize("merchant_rule", sorted(merchant_rules.MERCHANT_RULES))
@pytest.mark.parametrize(
    "n, merchants, layers, seed",
    [(30, 1, 1, 0), (40, 4, 1, 1), (36, 3, 2, 2)],
)
def test_goods_and_money_conserved_every_market_day(merchant_rule, n, merchants, layers, seed):
    econ = economy(n, 3, Family.CES, 1.5, seed)
    net = Network.central(n) if merchants == 1 else build_network("ring", n, seed)
    dyn = books(econ, net, merchant_rule, n_merchants=merchants, layers=layers, fan_in=2,
                rebalance=0.3, seed=seed)  # fmt: skip
    start = np.exp(np.random.default_rng(seed).uniform(-1, 1, 3))
    trail = days(dyn, dyn.init_state(start), 12)
    assert len(trail) == 1 + 12 * dyn.days_per_round
    day0 = dataclasses.replace(trail[0], inventory=DEFAULTS["initial_inventory"] * dyn.target)
    check_books(dyn, day0, trail[0])
    for before, after in zip(trail, trail[1:], strict=False):
        check_books(dyn, before, after)
        assert np.isfinite(after.coords).all()


def test_extragradient_trades_at_the_look_ahead_then_at_the_base_price():
    econ = economy(40, 3, seed=3)
    dyn = books(econ, Network.central(40), "extragradient", step=0.2, inventory_gain=0.0)
    s0 = dyn.init_state(np.array([1.0, 2.0, 0.5]))
    ahead, new = dyn.market_days(s0)
    eta = 0.2
    np.testing.assert_allclose(ahead.coords[0, 1:], s0.coords[0, 1:] + eta * s0.tracker[0, 1:])
    np.testing.assert_allclose(new.coords[0, 1:], s0.coords[0, 1:] + eta * ahead.tracker[0, 1:])
    # each day is a real trade: the stock moved twice
    assert not np.allclose(ahead.inventory, s0.inventory)
    assert not np.allclose(new.inventory, ahead.inventory)
    assert dyn.days_per_round == 2 and dyn.messages_per_round()["exchanges"] == 2
    stepped, _ = dyn.step(s0)
    np.testing.assert_array_equal(stepped.coords, new.coords)


# ---- equivalence and known answers -----------------------------------------------------------
def test_optimistic_merchants_are_the_kernel_design_bit_for_bit():
    econ = economy(90, 3, seed=4)
    net = build_network("small-world", 90, 1, k=4, p=0.1)
    kw = dict(step_size=0.05, n_merchants=4, inventory_gain=0.3)
    old = make_layered_dynamics(econ, net, "optimistic", **kw)
    new = make_layered_dynamics(econ, net, "optimistic", design="books", **kw)
    assert isinstance(new, BooksMarket) and type(old) is LayeredMarket
    a, b = old.init_state(np.ones(3)), new.init_state(np.ones(3))
    for _ in range(40):
        a, _ = old.step(a)
        b, _ = new.step(b)
    for field in ("coords", "inventory", "cash", "tracker", "buffers"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("merchant_rule, rule, step", MERCHANTS)
def test_cobb_douglas_one_merchant_reaches_the_closed_form(merchant_rule, rule, step):
    econ = economy(80, 3, Family.COBB_DOUGLAS, seed=5)
    dyn = books(econ, Network.central(80), merchant_rule, step)
    state, m = converge(dyn, np.array([1.0, 3.0, 0.3]), 3000, 1e-10)
    assert m.excess_demand < 1e-10, m.excess_demand
    assert distance(dyn.prices(state)[0], cobb_douglas_equilibrium(econ)) < 1e-8
    fill = state.inventory / dyn.target
    np.testing.assert_allclose(fill[:, 1:], 1.0, atol=1e-9)  # the priced goods' stock on target


def test_broyden_merchants_on_a_graph_reach_walras_and_agree():
    n = 200
    econ = economy(n, 3, Family.COBB_DOUGLAS, seed=1)
    net = build_network("small-world", n, 3, k=6, p=0.1)
    dyn = books(econ, net, "broyden", 0.5, n_merchants=5)
    state, m = converge(dyn, np.ones(3), 3000, 1e-10)
    assert m.excess_demand < 1e-10 and m.price_dispersion < 1e-10
    assert distance(m.mean_price, cobb_douglas_equilibrium(econ)) < 1e-8
    # each merchant sent its Jacobian estimate too
    kernel = make_layered_dynamics(econ, net, "entropic", n_merchants=5).messages_per_round()
    assert dyn.messages_per_round()["floats"] > kernel["floats"]


@pytest.mark.parametrize("scenario", ["scarf", "scarf-variant"])
def test_broyden_merchant_finds_scarfs_equilibrium(scenario):
    """Leontief complements: plain tâtonnement spirals out on scarf, and on scarf-variant a
    Newton step that clears only the priced goods walks off to a root at infinity; the
    merchant learns its Jacobian from its books and lands on p = (1, 1, 1)."""
    from tatonnet.environment.scenario import build_market, initial_prices, load_scenario

    sc = load_scenario(scenario).with_overrides(agents=150, graph="central")
    econ, _, net, _ = build_market(sc)
    dyn = make_layered_dynamics(econ, net, "newton", design="books", step_size=0.5)
    state, m = converge(dyn, initial_prices(sc), 1000, 1e-8)
    assert m.excess_demand < 1e-8
    np.testing.assert_allclose(dyn.prices(state)[0], 1.0, atol=1e-6)


def test_broyden_learns_the_jacobian_from_its_probe_days():
    econ = economy(60, 3, Family.CES, 2.0, seed=7)
    dyn = books(econ, Network.central(60), "broyden", 0.5)
    p0 = np.array([1.0, 1.5, 0.8])
    state = dyn.init_state(p0)
    for _ in range(2):  # g - 1 probe days: one good's price each, by PROBE
        state, _ = dyn.step(state)
    np.testing.assert_allclose(np.log(dyn.merchant_prices(state)[0] / p0),
                               [0.0, merchant_rules.PROBE, merchant_rules.PROBE], atol=1e-15)  # fmt: skip
    state, _ = dyn.step(state)  # reads the second probe's orders, then steps
    exact = aggregate_demand_jacobian(p0, econ.endowments, econ.shares, econ.family, econ.sigma)
    learned = state.buffers[0, 5:][:, 1:]  # d zeta / d log p of the priced goods, zeta = Z / S
    np.testing.assert_allclose(learned, exact[:, 1:] / econ.supply[:, None], rtol=0, atol=5e-3)


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule, kwargs, words",
    [
        ("entropic", {"design": "books"}, "no merchant version"),
        ("optimistic", {"design": "books", "merchant_rule": "newton"}, "merchant_rule"),
        ("optimistic", {"merchant_rule": "broyden"}, "design='books'"),
        ("optimistic", {"design": "ledger"}, "design"),
        (make_rule("entropic", space="price"), {"design": "books", "merchant_rule": "broyden"},
         "log-prices"),
        (make_rule("entropic", clip=1.0), {"design": "books", "merchant_rule": "broyden"},
         "clip"),
    ],
)  # fmt: skip
def test_books_design_one_line_errors(rule, kwargs, words):
    econ = economy(30, 3)
    with pytest.raises(LayeredError) as info:
        make_layered_dynamics(econ, build_network("ring", 30, 0), rule, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_any_rule_gives_its_step_to_an_explicit_merchant_rule():
    econ = economy(30, 3)
    dyn = make_layered_dynamics(econ, Network.central(30), "entropic", design="books",
                                merchant_rule="extragradient", step_size=0.3)  # fmt: skip
    assert dyn.merchant_rule.name == "extragradient" and dyn.rule.step_size == 0.3
    newton = make_rule("newton", max_step=0.2, damping=1e-3)
    dyn = make_layered_dynamics(econ, Network.central(30), newton, design="books")
    assert (dyn.merchant_rule.max_step, dyn.merchant_rule.damping) == (0.2, 1e-3)


# ---- the study: market names and market hyperparameters ------------------------------------
def test_split_hyperparameters():
    rule, market = split_hyperparameters(
        {"step_size": 0.1, "market.flow_gain": 0.5, "momentum": 0.9, "market.merchant_rule": "x"}
    )
    assert rule == {"step_size": 0.1, "momentum": 0.9}
    assert market == {"flow_gain": 0.5, "merchant_rule": "x"}
    assert split_hyperparameters({}) == ({}, {})


def test_make_market_layered_books_passes_market_parameters():
    econ = economy(40, 3)
    net = build_network("ring", 40, 0)
    rule = make_rule("extragradient", step_size=0.1)
    dyn, reason = make_market("layered-books", econ, net, rule, "tracking",
                              {"flow_gain": 0.5, "n_merchants": 3})  # fmt: skip
    assert reason is None and isinstance(dyn, BooksMarket)
    assert dyn.params["flow_gain"] == 0.5 and dyn.n_merchants == 3
    assert dyn.merchant_rule.name == "extragradient"
    dyn, reason = make_market("layered", econ, net, rule, "tracking")
    assert dyn is None and reason.startswith("not applicable") and "engine" in reason
    dyn, reason = make_market("layered-books", econ, net, make_rule("entropic"), "tracking")
    assert dyn is None and "no merchant version" in reason
    dyn, reason = make_market("layered-books", econ, net, rule, "tracking", {"rebalance": 0.9})
    assert dyn is None and "rebalance" in reason  # a bad value: the cell cannot run


@pytest.mark.parametrize(
    "market, params, words",
    [
        ("flat", {"flow_gain": 1.0}, "'market.flow_gain'"),
        ("layered", {"warehouse": 1.0}, "unknown market parameter 'market.warehouse'"),
        ("layered", {"merchant_rule": "broyden"}, "'market.merchant_rule'"),
        ("layered-books", {"signal": "local"}, "'market.signal'"),
    ],
)
def test_market_parameter_errors_are_one_line(market, params, words):
    econ = economy(20, 2)
    with pytest.raises(StudyError) as info:
        make_market(market, econ, Network.central(20), make_rule("optimistic"), "tracking",
                    params)  # fmt: skip
    assert words in str(info.value) and "\n" not in str(info.value)


def test_every_market_has_a_search_space_the_market_takes():
    econ = economy(30, 3)
    net = build_network("ring", 30, 0)
    for market in grid.MARKETS:
        dims = search_space.market_space_for(market)
        assert all(d.name.startswith("market.") for d in dims)
        low = {d.name: (d.choices[0] if d.choices else d.low) for d in dims}
        _, params = split_hyperparameters(low)
        rule = make_rule("optimistic")
        dyn, reason = make_market(market, econ, net, rule, "tracking", params)
        assert reason is None, (market, reason)
    books_dims = {d.name for d in search_space.market_space_for("layered-books")}
    assert {"market.flow_gain", "market.inventory_gain", "market.merchant_rule"} <= books_dims
    central = {d.name for d in search_space.market_space_for("layered", central=True)}
    assert "market.rebalance" not in central and "market.flow_gain" in central
    assert search_space.market_space_for("layered", fixed=("market.flow_gain",))[0].name != (
        "market.flow_gain"
    )
    assert search_space.market_space_for("flat") == ()
    with pytest.raises(KeyError):
        search_space.market_space_for("bazaar")
    with pytest.raises(ValueError, match="market."):
        search_space.register_market_space("bazaar", search_space.Dimension("gain", 0, 1))


def test_sweep_accepts_layered_books_and_a_cell_runs():
    sweep = grid.Sweep(scenarios=["cobb-douglas"], rules=["newton"], markets=["layered-books"])
    assert sweep.markets == ["layered-books"]
    cell = Cell(0, "t", "cobb-douglas", "central", 60, "layered-books", "newton", 0.5,
                (("market.inventory_gain", 0.5),), 0, 400, 1e-8, "tracking")  # fmt: skip
    row = grid.run_cell(cell)["row"]
    assert row["status"] == "converged", row
    flat = dataclasses.replace(cell, market="flat")
    with pytest.raises(StudyError, match="takes no market parameters"):
        grid.run_cell(flat)
