"""Known answers: closed-form equilibria matched, gross substitutes found, Scarf not found.

* Cobb-Douglas economies have a closed-form equilibrium (a Perron eigenvector; for the
  small economies of :data:`HAND_CASES`, a formula by hand). The numerical solver and the
  decentralized tâtonnement must both reach it to 1e-8.
* CES gross substitutes (sigma > 1): decentralized tâtonnement on a connected graph
  converges to the centralized equilibrium.
* Scarf (1960): plain additive tâtonnement does not converge, neither with one auctioneer
  nor on the network, although the equilibrium (1, 1, 1) exists.
"""

from __future__ import annotations

import numpy as np
import pytest

from tatonnet.agents.utility import Family
from tatonnet.distributed.runner import RunOptions, run_scenario
from tatonnet.environment import equilibrium
from tatonnet.environment.economy import Economy
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import Scenario, build_economy, load_scenario

# ---- hand-computed Cobb-Douglas economies -------------------------------------------------
#
# (a) two agents, two goods: agent 1 owns (1, 0) with shares (a, 1-a), agent 2 owns (0, 1)
#     with shares (b, 1-b). Clearing good 1: p1 = a p1 + b p2, so p2 / p1 = (1 - a) / b.
# (b) identical shares alpha: p_j S_j = alpha_j (p . S) for every j, so p_j ∝ alpha_j / S_j.
#     alpha = (0.2, 0.3, 0.5), S = (2, 2, 4): p ∝ (0.1, 0.15, 0.125) = (1, 1.5, 1.25).
# (c) numeraire 1 in (a) with a = 0.3, b = 0.6: p = (b / (1 - a), 1) = (6/7, 1).

HAND_CASES = {
    "two-agents": dict(
        shares=[[0.3, 0.7], [0.6, 0.4]],
        endowment=[[1.0, 0.0], [0.0, 1.0]],
        numeraire=0,
        expected=[1.0, 0.7 / 0.6],
    ),
    "identical-shares": dict(
        shares=[[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]],
        endowment=[[1.0, 2.0, 0.0], [1.0, 0.0, 4.0]],
        numeraire=0,
        expected=[1.0, 1.5, 1.25],
    ),
    "two-agents-numeraire-1": dict(
        shares=[[0.3, 0.7], [0.6, 0.4]],
        endowment=[[1.0, 0.0], [0.0, 1.0]],
        numeraire=1,
        expected=[0.6 / 0.7, 1.0],
    ),
}


def _hand_scenario(case: dict) -> Scenario:
    """One agent per group, in order, on a complete graph."""
    g = len(case["expected"])
    groups = [
        {"count": 1, "utility": "cobb-douglas", "shares": a, "endowment": e}
        for a, e in zip(case["shares"], case["endowment"], strict=True)
    ]
    return Scenario.model_validate(
        {
            "name": "hand",
            "goods": g,
            "numeraire": case["numeraire"],
            "agents": groups,
            "network": {"kind": "complete", "placement": "ordered"},
            "dynamics": {"rule": "entropic", "step_size": 0.2, "rounds": 3000, "tol": 1e-11},
        }
    )


def _run(model: MarketModel) -> MarketModel:
    for _ in range(model.config.dynamics.rounds):
        model.step()
        if not model.running:
            break
    return model


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_cobb_douglas_closed_form_matches_the_hand_computation(name):
    case = HAND_CASES[name]
    economy, _ = build_economy(_hand_scenario(case))
    assert (economy.family == Family.COBB_DOUGLAS).all()
    expected = np.array(case["expected"])
    p = equilibrium.cobb_douglas_equilibrium(economy)
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=0)
    # it clears every market
    assert np.max(np.abs(equilibrium.relative_excess_demand(economy, p))) < 1e-12


@pytest.mark.parametrize("name", sorted(HAND_CASES))
def test_solver_and_tatonnement_match_the_hand_computation(name):
    case = HAND_CASES[name]
    scenario = _hand_scenario(case)
    expected = np.array(case["expected"])
    found = equilibrium.find_equilibria(build_economy(scenario)[0])
    assert len(found) == 1
    np.testing.assert_allclose(found[0], expected, rtol=1e-8, atol=0)

    model = _run(MarketModel(scenario))
    verdict = model.classify()
    assert verdict.status == "converged", verdict.reason
    assert model.state.round < scenario.dynamics.rounds
    np.testing.assert_allclose(model.prices(), np.tile(expected, (2, 1)), rtol=1e-8, atol=0)


def test_two_agent_economy_is_not_cleared_off_equilibrium():
    """Guard for the test above: a wrong price vector does not clear the markets."""
    economy, _ = build_economy(_hand_scenario(HAND_CASES["two-agents"]))
    z = equilibrium.relative_excess_demand(economy, np.array([1.0, 1.0]))
    assert np.max(np.abs(z)) > 0.05
    # and the closed form refuses a non-Cobb-Douglas economy
    leontief = Economy(economy.endowments, economy.shares,
                       np.full(2, Family.LEONTIEF, dtype=np.int8), np.zeros(2))  # fmt: skip
    with pytest.raises(ValueError, match="Cobb-Douglas"):
        equilibrium.cobb_douglas_equilibrium(leontief)


# ---- the built-in cobb-douglas scenario --------------------------------------------------


@pytest.fixture(scope="module")
def cobb_douglas_run():
    model = _run(MarketModel("cobb-douglas", agents=400, tol=1e-11))
    return model, equilibrium.cobb_douglas_equilibrium(model.economy)


def test_cobb_douglas_closed_form_is_an_equilibrium(cobb_douglas_run):
    model, closed = cobb_douglas_run
    assert closed.shape == (4,)
    assert closed[model.economy.numeraire] == 1.0
    assert (closed > 0).all()
    assert np.max(np.abs(equilibrium.relative_excess_demand(model.economy, closed))) < 1e-12
    # the prices are not trivially all equal, so matching them is informative
    assert np.ptp(closed) > 1e-2


def test_find_equilibria_matches_cobb_douglas_closed_form(cobb_douglas_run):
    model, closed = cobb_douglas_run
    found = equilibrium.find_equilibria(model.economy)
    assert len(found) == 1
    assert np.max(np.abs(found[0] - closed)) < 1e-8


def test_decentralized_run_matches_cobb_douglas_closed_form(cobb_douglas_run):
    model, closed = cobb_douglas_run
    assert model.config.n_agents == 400
    assert not model.network.is_central
    verdict = model.classify()
    assert verdict.status == "converged", verdict.reason
    assert np.max(np.abs(model.metrics.mean_price - closed)) < 1e-8
    assert np.max(np.abs(model.prices() - closed)) < 1e-8  # every agent, every good


def test_decentralized_run_starts_far_from_cobb_douglas_closed_form(cobb_douglas_run):
    """Guard: the run had to move (it starts from all prices 1)."""
    model, closed = cobb_douglas_run
    df = model.datacollector.get_model_vars_dataframe()
    start = df[[f"price_{g}" for g in model.economy.goods]].to_numpy()[0]
    np.testing.assert_array_equal(start, np.ones(4))
    assert np.max(np.abs(start - closed)) > 1e-2


# ---- CES gross substitutes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("ces-substitutes", dict(agents=300)),
        ("default", dict(agents=200)),
    ],
)
def test_ces_gross_substitutes_converge_to_the_centralized_equilibrium(name, overrides):
    scenario = load_scenario(name).with_overrides(**overrides)
    assert all(group.utility == "ces" and group.sigma > 1 for group in scenario.agents)
    result = run_scenario(scenario, RunOptions(workers=0, progress=False))
    s = result.summary
    assert s["graph"] != "central"
    assert s["status"] == "converged", s["reason"]
    assert len(s["reference_prices"]) == 1
    assert s["distance_to_reference"] < 1e-6
    # every agent, not just the mean, agrees with the auctioneer's equilibrium
    ref = np.array(s["reference_prices"][0])
    assert np.max(np.abs(result.model.prices() / ref - 1)) < 1e-6


# ---- Scarf's economy: tâtonnement fails ----------------------------------------------------


@pytest.fixture(scope="module", params=["central", "network"])
def scarf_run(request):
    graph = "central" if request.param == "central" else None
    scenario = load_scenario("scarf").with_overrides(agents=300, graph=graph)
    return request.param, run_scenario(scenario, RunOptions(workers=0, progress=False))


def test_scarf_is_not_reported_as_converged(scarf_run):
    where, result = scarf_run
    s = result.summary
    assert s["rule"] == "additive"
    assert (s["graph"] == "central") == (where == "central")
    assert s["status"] in {"cycling", "diverged"}, (s["status"], s["reason"])
    assert s["excess_demand"] > 1e-3


def test_scarf_reference_equilibrium_is_one_one_one(scarf_run):
    _, result = scarf_run
    refs = result.summary["reference_prices"]
    assert any(np.allclose(p, [1.0, 1.0, 1.0], rtol=1e-8, atol=0) for p in refs), refs
    z = equilibrium.relative_excess_demand(result.model.economy, np.ones(3))
    assert np.max(np.abs(z)) < 1e-12
    # the run did not end near it
    assert result.summary["distance_to_reference"] > 1e-2
