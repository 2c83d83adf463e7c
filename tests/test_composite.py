"""Composite rules (issue 4, part B): extragradient and Newton-type tâtonnement.

* Analytic demand Jacobians (:mod:`tatonnet.agents.jacobian`) against central finite differences of
  :func:`tatonnet.agents.utility.demand`, every utility family, random economies (hypothesis); the
  identities they must satisfy (homogeneity of degree zero, differentiated Walras' law).
* Known answers: both rules reach the closed-form Cobb–Douglas equilibrium and the
  ``ces-substitutes`` equilibrium (``find_equilibria``), centrally and on a small world.
* Newton needs far fewer rounds than entropic tâtonnement on a smooth economy (measured).
* Round invariants: trackers sum to the excess demand, the numeraire is pinned, the
  central extragradient round equals its formula, runs are deterministic.
* Message accounting and the CLI: in-process by default, a one-line error for workers under
  central (on a graph the sharded engine runs them: test_shard_composite.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tatonnet.agents.jacobian import aggregate_demand_jacobian, demand_jacobian
from tatonnet.agents.rules import RULES, RuleError, make_rule
from tatonnet.agents.utility import Family, demand
from tatonnet.distributed.runner import RunConfigError, RunOptions
from tatonnet.environment import equilibrium
from tatonnet.environment.economy import Economy
from tatonnet.environment.engines import DYNAMICS, make_dynamics
from tatonnet.environment.network import Network, build_network
from tatonnet.environment.scenario import build_economy, load_scenario
from tatonnet.environment.tatonnement.composite import (
    CentralExtragradient,
    CentralNewton,
    NetworkExtragradient,
    NetworkNewton,
    newton_direction,
)
from tatonnet.environment.tatonnement.dynamics import (
    CentralTatonnement,
    NetworkTatonnement,
    messages_per_round,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------


def random_agents(seed: int, family: Family, n: int = 6, g: int = 4):
    """Random prices, endowments, shares and sigma for ``n`` agents of one family."""
    rng = np.random.default_rng(seed)
    prices = np.exp(rng.uniform(-1.5, 1.5, (n, g)))
    endowments = rng.uniform(0.0, 2.0, (n, g))
    endowments[:, 0] += 0.1  # nobody owns nothing
    shares = rng.dirichlet(np.ones(g), n)
    if family == Family.LEONTIEF:
        shares[rng.random((n, g)) < 0.2] = 0.0  # goods an agent does not want
        shares[:, 1] += 0.1
    sigma = rng.uniform(0.2, 5.0, n)
    codes = np.full(n, int(family), dtype=np.int8)
    return prices, endowments, shares, codes, sigma


def finite_difference(prices, endowments, shares, family, sigma, h=1e-6):
    """Central differences of demand in log-prices: (n, g, g)."""
    n, g = prices.shape
    out = np.empty((n, g, g))
    for k in range(g):
        step = np.zeros(g)
        step[k] = h
        up = demand(prices * np.exp(step), endowments, shares, family, sigma)
        down = demand(prices * np.exp(-step), endowments, shares, family, sigma)
        out[:, :, k] = (up - down) / (2 * h)
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(list(Family)))
def test_jacobian_matches_finite_differences(seed, family):
    prices, e, a, codes, sigma = random_agents(seed, family)
    if family == Family.LINEAR:  # differentiable only away from bang-per-buck ties
        bang = np.sort(a / prices, axis=1)
        assume((bang[:, -1] > bang[:, -2] * (1 + 1e-3)).all())
    fd = finite_difference(prices, e, a, codes, sigma)
    for log_prices in (True, False):
        jac = demand_jacobian(prices, e, a, codes, sigma, log_prices=log_prices)
        expected = fd if log_prices else fd / prices[:, None, :]
        scale = np.abs(expected).max() + 1.0
        np.testing.assert_allclose(jac, expected, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("family", list(Family))
def test_jacobian_identities(family):
    """Homogeneity: J_log 1 = 0. Walras' law p.z = 0 differentiated: p^T J_log = -p * z."""
    prices, e, a, codes, sigma = random_agents(3, family, n=20, g=5)
    jac = demand_jacobian(prices, e, a, codes, sigma, log_prices=True)
    z = demand(prices, e, a, codes, sigma) - e
    np.testing.assert_allclose(jac.sum(axis=2), 0.0, atol=1e-12 * np.abs(jac).max())
    np.testing.assert_allclose(np.einsum("ij,ijk->ik", prices, jac), -prices * z, atol=1e-11)


def test_jacobian_without_income_effect_is_the_fixed_wealth_derivative():
    """At fixed wealth, Cobb-Douglas demand a_j w / p_j has d x / d log p = -diag(x)."""
    prices, e, a, codes, sigma = random_agents(5, Family.COBB_DOUGLAS)
    x = demand(prices, e, a, codes, sigma)
    jac = demand_jacobian(prices, e, a, codes, sigma, log_prices=True, income_effect=False)
    np.testing.assert_allclose(jac, -x[:, :, None] * np.eye(x.shape[1]), atol=1e-14)


def test_linear_tie_uses_the_tie_splitting_piece():
    """At an exact tie the derivative of the current piece (x_j = w / (m p_j)) is returned."""
    prices = np.array([[1.0, 2.0, 1.0]])
    e = np.array([[1.0, 1.0, 1.0]])
    a = np.array([[1.0, 2.0, 0.5]])  # goods 0 and 1 tie: bang-per-buck 1, 1, 0.5
    codes = np.array([Family.LINEAR], dtype=np.int8)
    x = demand(prices, e, a, codes, np.ones(1))
    np.testing.assert_allclose(x, [[2.0, 1.0, 0.0]])
    jac = demand_jacobian(prices, e, a, codes, np.ones(1), log_prices=True)
    expected = -np.diag(x[0]) + np.outer(x[0], prices[0] * e[0]) / 4.0
    np.testing.assert_allclose(jac[0], expected, atol=1e-14)


def test_aggregate_jacobian_is_the_sum_of_the_agents():
    rng = np.random.default_rng(8)
    n, g = 40, 4
    e = rng.uniform(0.1, 2.0, (n, g))
    a = rng.dirichlet(np.ones(g), n)
    codes = rng.integers(0, 4, n).astype(np.int8)
    sigma = rng.uniform(0.3, 4.0, n)
    p = np.exp(rng.uniform(-1, 1, g))
    per_agent = demand_jacobian(np.broadcast_to(p, (n, g)), e, a, codes, sigma, log_prices=True)
    total = aggregate_demand_jacobian(p, e, a, codes, sigma, log_prices=True)
    np.testing.assert_allclose(total, per_agent.sum(axis=0), atol=1e-12)
    total_p = aggregate_demand_jacobian(p, e, a, codes, sigma, log_prices=False)
    np.testing.assert_allclose(total_p, total / p[None, :], atol=1e-12)


# ---------------------------------------------------------------------------------------
# Newton direction
# ---------------------------------------------------------------------------------------


def test_newton_direction_solves_regular_systems():
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(5, 3, 3)) + 3 * np.eye(3)
    zeta = rng.normal(size=(5, 3)) * 0.01
    d = newton_direction(zeta, jac, damping=1e-12, max_step=10.0)
    np.testing.assert_allclose(np.einsum("mij,mj->mi", jac, d), -zeta, atol=1e-12)


def test_newton_direction_singular_cap_and_nan():
    zeta = np.array([[1.0, 2.0], [1.0, 1.0], [np.nan, 1.0], [100.0, 0.0]])
    jac = np.stack([
        np.zeros((2, 2)),  # singular: no information, no step
        np.array([[1.0, 1.0], [1.0, 1.0]]),  # rank one: a finite damped step
        np.eye(2),  # non-finite residual: zero step
        -np.eye(2),  # a long Newton step: capped
    ])  # fmt: skip
    d = newton_direction(zeta, jac, damping=1e-6, max_step=0.5)
    assert np.isfinite(d).all()
    np.testing.assert_array_equal(d[0], 0.0)
    np.testing.assert_allclose(d[1], [-0.5, -0.5], rtol=1e-5)  # least-squares, capped
    np.testing.assert_array_equal(d[2], 0.0)
    np.testing.assert_allclose(d[3], [0.5, 0.0], rtol=1e-5)


def test_newton_rejects_bad_hyperparameters():
    with pytest.raises(RuleError, match="step_size must be <= 1"):
        make_rule("newton", step_size=1.5)
    with pytest.raises(RuleError, match="damping"):
        make_rule("newton", damping=float("nan"))
    with pytest.raises(RuleError, match="max_step"):
        make_rule("newton", max_step=0.0)


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------


def scenario_economy(name: str, agents: int) -> Economy:
    return build_economy(load_scenario(name).with_overrides(agents=agents))[0]


def small_world(n: int) -> Network:
    return build_network("small-world", n, 1, k=10, p=0.3)


def run_until(dyn, init, rounds, tol):
    """Step until excess demand and dispersion are <= tol; (state, metrics, rounds run)."""
    state = dyn.init_state(init)
    for _ in range(rounds):
        state, m = dyn.step(state)
        if not m.finite or (m.excess_demand <= tol and m.price_dispersion <= tol):
            break
    return state, m, state.round


CENTRAL_CASES = [
    ("extragradient", {"step_size": 0.2}),
    ("newton", {}),
]
NETWORK_CASES = [
    ("extragradient", {"step_size": 0.05}),
    ("newton", {"step_size": 0.3, "max_step": 0.3}),
]


@pytest.mark.parametrize(("rule_name", "hyper"), CENTRAL_CASES + NETWORK_CASES)
@pytest.mark.parametrize("scenario", ["cobb-douglas", "ces-substitutes"])
def test_reaches_the_equilibrium(rule_name, hyper, scenario):
    central = (rule_name, hyper) in CENTRAL_CASES
    n = 300 if central else 120
    economy = scenario_economy(scenario, n)
    if scenario == "cobb-douglas":
        reference = equilibrium.cobb_douglas_equilibrium(economy)
    else:
        (reference,) = equilibrium.find_equilibria(economy)
    net = Network.central(n) if central else small_world(n)
    dyn = make_dynamics(economy, net, make_rule(rule_name, **hyper))
    init = np.linspace(0.5, 2.0, economy.n_goods)
    state, m, rounds = run_until(dyn, init, 2000, 1e-9)
    assert m.excess_demand <= 1e-9 and m.price_dispersion <= 1e-9, (rounds, m.excess_demand)
    assert equilibrium.distance(m.mean_price, reference) < 1e-7
    np.testing.assert_allclose(dyn.prices(state), np.broadcast_to(reference, (state.coords.shape[0], economy.n_goods)), rtol=1e-7)  # fmt: skip


def test_newton_needs_far_fewer_rounds_than_entropic():
    """Smooth economy (CES sigma = 2, 500 agents): measured 6 Newton rounds against 118
    entropic ones (step 0.5) to 1e-10."""
    economy = scenario_economy("default", 500)
    init = np.linspace(0.5, 2.0, economy.n_goods)
    central = Network.central(500)
    _, m_newton, r_newton = run_until(make_dynamics(economy, central, make_rule("newton")),
                                      init, 2000, 1e-10)  # fmt: skip
    _, m_entropic, r_entropic = run_until(
        make_dynamics(economy, central, make_rule("entropic", step_size=0.5)), init, 2000, 1e-10
    )
    assert m_newton.excess_demand <= 1e-10 and m_entropic.excess_demand <= 1e-10
    assert r_newton <= 8
    assert 10 * r_newton < r_entropic, (r_newton, r_entropic)


def test_newton_converges_quadratically_near_the_equilibrium():
    economy = scenario_economy("cobb-douglas", 200)
    reference = equilibrium.cobb_douglas_equilibrium(economy)
    dyn = make_dynamics(economy, Network.central(200), make_rule("newton", damping=1e-12))
    state = dyn.init_state(reference * np.array([1.0, 1.2, 0.9, 1.1]))
    errors = [0.2]
    for _ in range(4):
        state, m = dyn.step(state)
        errors.append(equilibrium.distance(dyn.prices(state)[0], reference))
    # measured: 0.2 -> 0.057 -> 1.6e-3 -> 1.2e-6 -> 6.9e-13 (e_k+1 ~ 0.5 e_k^2)
    for before, after in zip(errors[:-1], errors[1:], strict=True):
        assert after < 2.0 * before**2
    assert errors[-1] < 1e-11


def test_newton_solves_scarf_centrally():
    """Measured: the full Newton step finds Scarf's (1, 1, 1) from (1, 2, 3) (its Jacobian is
    regular there), where plain tâtonnement cycles."""
    economy = scenario_economy("scarf", 300)
    dyn = make_dynamics(economy, Network.central(300), make_rule("newton"))
    state, m, rounds = run_until(dyn, np.array([1.0, 2.0, 3.0]), 100, 1e-12)
    assert m.excess_demand <= 1e-12 and rounds <= 10
    np.testing.assert_allclose(dyn.prices(state)[0], 1.0, rtol=1e-10)


# ---------------------------------------------------------------------------------------
# Round invariants
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule_name", ["extragradient", "newton"])
@pytest.mark.parametrize("signal", ["tracking", "local"])
def test_network_round_invariants(rule_name, signal):
    economy = scenario_economy("ces-substitutes", 60)
    economy = Economy(economy.endowments, economy.shares, economy.family, economy.sigma, 2)
    net = build_network("small-world", 60, 2, k=4, p=0.2)
    hyper = {"step_size": 0.02} if rule_name == "extragradient" else {"step_size": 0.2}
    dyn = make_dynamics(economy, net, make_rule(rule_name, **hyper), signal)
    assert isinstance(dyn, NetworkExtragradient if rule_name == "extragradient" else NetworkNewton)
    state = dyn.init_state(np.array([1.0, 2.5, 0.4]))
    for _ in range(15):
        state, m = dyn.step(state)
        prices = dyn.prices(state)
        assert np.isfinite(prices).all() and (prices[:, 2] == 1.0).all()
        z = economy.excess_demand(prices)
        np.testing.assert_allclose(state.excess, z, atol=1e-12)
        np.testing.assert_allclose(m.excess, z.sum(axis=0) / economy.supply, atol=1e-12)
        if signal == "tracking":  # W doubly stochastic: sum_i y_i = sum_i z_i
            np.testing.assert_allclose(state.tracker.sum(axis=0), z.sum(axis=0), atol=1e-10)
    if rule_name == "newton" and signal == "tracking":
        own = dyn._jacobian(state.coords, state.excess)
        np.testing.assert_allclose(state.jac_tracker.sum(axis=0), own.sum(axis=0), atol=1e-9)


def test_central_extragradient_round_is_the_formula():
    economy = scenario_economy("ces-substitutes", 50)
    eta = 0.3
    dyn = make_dynamics(economy, Network.central(50), make_rule("extragradient", step_size=eta))
    assert isinstance(dyn, CentralExtragradient) and isinstance(dyn, CentralTatonnement)
    p0 = np.array([1.0, 1.5, 0.7])
    state, m = dyn.step(dyn.init_state(p0))
    zeta = lambda p: economy.aggregate_excess_demand(p) / economy.supply  # noqa: E731
    u = np.log(p0)
    uh = u + eta * zeta(p0)
    uh[0] = 0.0
    u1 = u + eta * zeta(np.exp(uh))
    u1[0] = 0.0
    np.testing.assert_allclose(state.coords[0], u1, atol=1e-13)
    np.testing.assert_allclose(m.excess, zeta(np.exp(u1)), atol=1e-13)
    assert m.price_dispersion == 0.0


@pytest.mark.parametrize("rule_name", ["extragradient", "newton"])
@pytest.mark.parametrize("central", [True, False])
def test_runs_are_deterministic(rule_name, central):
    economy = scenario_economy("ces-substitutes", 80)
    net = Network.central(80) if central else build_network("small-world", 80, 4, k=6, p=0.2)

    def trajectory():
        dyn = make_dynamics(economy, net, make_rule(rule_name, step_size=0.05))
        state = dyn.init_state(np.array([1.0, 2.0, 0.5]))
        for _ in range(10):
            state, _ = dyn.step(state)
        return dyn.prices(state)

    np.testing.assert_array_equal(trajectory(), trajectory())


def test_divergence_is_reported_not_raised():
    """A far too large extragradient step overflows prices: NaN/inf metrics, no exception."""
    economy = scenario_economy("ces-substitutes", 60)
    net = build_network("small-world", 60, 2, k=4, p=0.2)
    dyn = make_dynamics(economy, net, make_rule("extragradient", step_size=50.0))
    state = dyn.init_state(np.array([1.0, 3.0, 0.2]))
    finite = True
    with np.errstate(all="ignore"):
        for _ in range(30):
            state, m = dyn.step(state)
            finite = m.finite and m.excess_demand < 1e300
            if not finite:
                break
    assert not finite


# ---------------------------------------------------------------------------------------
# Registration, messages, CLI
# ---------------------------------------------------------------------------------------


def test_registered_and_dispatched():
    assert RULES["extragradient"].engine == "extragradient" and RULES["newton"].engine == "newton"
    assert {"extragradient", "newton"} <= set(DYNAMICS)
    economy = scenario_economy("cobb-douglas", 30)
    net = build_network("ring", 30, 0)
    assert isinstance(make_dynamics(economy, net, make_rule("newton")), NetworkTatonnement)
    assert isinstance(make_dynamics(economy, Network.central(30), make_rule("newton")),
                      CentralNewton)  # fmt: skip


@pytest.mark.parametrize(
    "first",
    [
        "tatonnet.agents.rules",
        pytest.param("tatonnet.environment.tatonnement.dynamics", marks=pytest.mark.slow),
        pytest.param("tatonnet.environment.tatonnement.composite", marks=pytest.mark.slow),
    ],
)
def test_no_import_cycle(first):
    """Whatever is imported first, make_dynamics finds the composite engines."""
    code = (
        f"import {first}\n"
        "from tatonnet.environment.engines import DYNAMICS\n"
        "assert {'extragradient', 'newton'} <= set(DYNAMICS), DYNAMICS\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_message_accounting():
    g = 4
    net = build_network("ring", 10, 0)  # 20 directed edges
    central = Network.central(10)
    eg, newton = make_rule("extragradient"), make_rule("newton")
    assert messages_per_round(eg, net, g) == {"exchanges": 2, "messages": 40, "floats": 20 * 3 * g}
    assert messages_per_round(eg, central, g) == {"exchanges": 2, "messages": 40,
                                                  "floats": 10 * 4 * g}  # fmt: skip
    floats = 2 * g + (g - 1) ** 2
    assert newton.message_floats(g) == floats == 17
    assert messages_per_round(newton, net, g) == {"exchanges": 1, "messages": 20,
                                                  "floats": 20 * floats}  # fmt: skip
    assert messages_per_round(newton, central, g)["floats"] == 10 * floats


def test_workers_are_refused_under_central_only():
    """On a graph the sharded engine runs the composite rules (tests/test_shard_composite.py);
    their central versions run in this process only."""
    scenario = load_scenario("scarf").with_overrides(rule="newton")
    RunOptions(workers=0).check(scenario)
    RunOptions(workers=1).check(scenario)
    central = scenario.with_overrides(graph="central")
    for workers in (1, 2):
        with pytest.raises(RunConfigError, match="runs its own dynamics") as info:
            RunOptions(workers=workers).check(central)
        assert "\n" not in str(info.value)


def test_cli(tmp_path, capsys):
    from tatonnet.cli import run

    argv = ["--scenario", "scarf", "--graph", "central", "--rule", "newton", "--step-size", "1",
            "--rounds", "50", "--quiet", "--no-reference"]  # fmt: skip
    assert run.main([*argv, "--workers", "2", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--workers 0" in err
    assert not (tmp_path / "a").exists()
    assert run.main([*argv, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "in-process (newton dynamics" in out and "converged" in out


def test_model_runs_composite_rules_and_refuses_the_reference_path():
    from tatonnet.environment.model import MarketModel

    model = MarketModel("ces-substitutes", agents=60, rule="newton", step_size=0.2, rounds=5)
    assert isinstance(model.dynamics, NetworkNewton)
    model.step()
    assert model.round == 1 and np.isfinite(model.prices()).all()
    with pytest.raises(ValueError, match="fused-kernel rules only"):
        model.reference_step()
