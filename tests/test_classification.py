"""Outcome classification a researcher can trust, on constructed paths and measured runs.

Known answers: a rotating path is cycling with its period; an orbit longer than half the
window is cycling (found by first return), never "still improving"; Scarf's economy under
additive tâtonnement diverges (a price hits the floor, the orbit's sum of squared prices
grows) and under small entropic steps cycles; the naive local signal stalls at a
dispersed rest point; ces-complements has exactly three equilibria (r, 1, 1/r by the
symmetry of its two types), the outer two stable, and tâtonnement from two starting prices
reaches two different ones, which the verdict names.
"""

from __future__ import annotations

import numpy as np
import pytest

from tatonnet.environment import equilibrium
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import build_economy, load_scenario
from tatonnet.environment.tatonnement import status
from tatonnet.environment.tatonnement.status import classify_run, first_return


def _orbit(period: float, T: int, growth: float = 1.0):
    """A circle of log-prices (goods 1, 2; good 0 the numeraire) and its excess demand."""
    t = np.arange(T)
    phase = 2 * np.pi * t / period
    r = 0.3 * growth**t
    logp = np.column_stack([np.zeros(T), r * np.cos(phase), r * np.sin(phase)])
    excess = 0.05 * growth**t * (1.1 + 0.1 * np.sin(phase))
    return excess, np.zeros(T), logp


def _run(name, rounds, initial_prices=None, **overrides):
    scenario = load_scenario(name)
    if initial_prices is not None:
        dyn = scenario.dynamics.model_copy(update={"initial_prices": list(initial_prices)})
        scenario = scenario.model_copy(update={"dynamics": dyn})
    model = MarketModel(scenario, rounds=rounds, **overrides)
    while model.running and model.round < rounds:
        model.step()
    return model


# ---- constructed paths ---------------------------------------------------------------------
def test_rotating_path_is_cycling_with_period_and_steady_amplitude():
    verdict = classify_run(*_orbit(25, 400))
    assert verdict.status == "cycling", verdict.reason
    assert verdict.evidence["period"] == 25
    assert verdict.evidence["period_method"] == "autocorrelation"
    assert verdict.evidence["amplitude"] == pytest.approx(0.3, rel=0.02)
    assert verdict.evidence["amplitude_trend"] == "steady"
    assert verdict.evidence["rounds_to_tol"] is None


def test_spiral_out_is_diverged_with_a_growing_amplitude():
    verdict = classify_run(*_orbit(25, 400, growth=1.004))
    assert verdict.status == "diverged", verdict.reason
    assert verdict.evidence["amplitude_trend"] == "growing"


@pytest.mark.parametrize("period", [150, 260, 330])
def test_orbit_longer_than_half_the_window_is_cycling_not_improving(period):
    """The known weakness: the autocorrelation reads only the last half (200 rounds of
    400), so these periods are invisible to it; first return over the whole path sees
    them. Before the fix a descending phase of such an orbit read as 'still improving'."""
    excess, disp, logp = _orbit(period, 400)
    verdict = classify_run(excess, disp, logp)
    assert verdict.status == "cycling", verdict.reason
    assert verdict.status != "converged"
    assert abs(verdict.evidence["period"] - period) <= 2, verdict.evidence["period"]
    # excess demand falling while the prices orbit: a damped oscillation, still
    # converging, reported with its period (never converged, never a period-free reading)
    wave = 1.05 + 0.05 * np.cos(2 * np.pi * np.arange(400) / period)
    damped = classify_run(np.linspace(0.1, 0.05, 400) * wave, disp, logp)
    assert damped.status == "max_rounds", damped.reason
    assert "damped oscillation" in damped.reason
    assert abs(damped.evidence["period"] - period) <= 2


def test_first_return_ignores_noise_and_a_path_that_settles():
    rng = np.random.default_rng(3)
    assert first_return(rng.normal(size=(400, 2))) is None
    settle = np.exp(-np.arange(400) / 30.0)[:, None] * np.ones((1, 2))
    assert first_return(settle) is None


def test_converged_run_names_the_reference_equilibrium_and_rounds_to_tol():
    T = 300
    refs = [np.array([1.0, 0.5]), np.array([1.0, 2.0])]
    logp = np.column_stack([np.zeros(T), np.log(2.0) + 0.5 * 0.9 ** np.arange(T)])
    excess = 0.5 * 0.9 ** np.arange(T)
    verdict = classify_run(excess, excess, logp, tol=1e-8, references=refs)
    first = int(np.argmax(excess <= 1e-8)) + 1
    assert verdict.status == "converged", verdict.reason
    assert verdict.evidence["rounds_to_tol"] == first
    assert verdict.evidence["rounds"] == first  # rows after the stop are not read
    assert verdict.evidence["equilibrium"] == 1
    assert verdict.evidence["distances"][0] == pytest.approx(3.0, rel=1e-6)
    assert verdict.evidence["distances"][1] < 1e-7


def test_classify_run_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected"):
        classify_run(np.ones(10), np.ones(10), np.ones((9, 2)))


# ---- measured runs -------------------------------------------------------------------------
def test_scarf_additive_tatonnement_diverges_with_evidence():
    """NOTES: plain additive tâtonnement on Scarf's economy spirals out. Reported as
    diverged, with the floor round, the smallest price, and Scarf's invariant
    h = sum p^2 / (prod p)^(2/3) (constant for free continuous tâtonnement) grown >10x."""
    model = _run("scarf", 3000, agents=30, graph="central")
    verdict = model.classify([np.ones(3)])
    ev = verdict.evidence
    assert verdict.status == "diverged", verdict.reason
    assert ev["first_floor_round"] is not None and ev["first_floor_round"] <= model.round
    assert ev["min_price"] <= status.PRICE_FLOOR * 1.0001
    assert set(ev["heads_to"].values()) <= {"0", "infinity"} and ev["heads_to"]
    assert ev["conserved"]["equivalent"].startswith("sum_j p_j^2")
    # h = 4.24 at the start (1, 2, 3); row 0 is round 1
    assert ev["conserved"]["first"] == pytest.approx(14 / 36 ** (1 / 3), rel=0.02)
    assert ev["conserved"]["last"] > 10 * ev["conserved"]["first"]  # far out at the floor
    assert ev["distances"][0] > 0.5
    assert ev["equilibrium"] is None


def test_scarf_small_entropic_steps_cycle():
    """Measured: entropic (log-space) steps of 0.02 on Scarf's economy orbit around (1, 1, 1)
    with a period of ~1,500 rounds (linearization: 2 pi / (0.02 * 0.25) = 1,257 rounds at
    small amplitude), longer than half of the 2,000-round window."""
    model = _run("scarf", 2000, agents=30, graph="central", rule="entropic", step_size=0.02)
    verdict = model.classify([np.ones(3)])
    assert verdict.status == "cycling", verdict.reason
    assert 1000 < verdict.evidence["period"] < 2000
    assert verdict.evidence["period_method"] == "first return"
    assert verdict.evidence["excess_demand_last_period"] > 0.1  # nowhere near clearing


def test_local_signal_stalls_at_a_dispersed_rest_point():
    model = _run("ces-substitutes", 2000, agents=300, signal="local", graph="small-world")
    verdict = model.classify()
    assert verdict.status == "stalled", verdict.reason
    assert verdict.evidence["dispersion_last"] > 0.05
    assert verdict.evidence["excess_demand_last_quarter"] > 1e-3
    assert abs(verdict.evidence["excess_demand_trend"]) < 1e-3


# ---- several equilibria --------------------------------------------------------------------
@pytest.fixture(scope="module")
def complements():
    economy = build_economy(load_scenario("ces-complements").with_overrides(agents=300))[0]
    return economy, equilibrium.find_equilibria(economy)


def test_equilibrium_scan_finds_all_three_equilibria(complements):
    economy, found = complements
    assert len(found) == 3
    low, mid, high = (p[1] for p in found)
    assert mid == pytest.approx(1.0, abs=1e-12)  # the symmetric one
    assert low * high == pytest.approx(1.0, rel=1e-9)  # swapping the two types maps r to 1/r
    assert low == pytest.approx(0.10244057545873, rel=1e-9)
    for p in found:
        assert np.max(np.abs(equilibrium.relative_excess_demand(economy, p))) < 1e-10
    # completeness check independent of the scan: a 4x finer grid sees the same 3 crossings
    x = np.linspace(-np.log(1e8), np.log(1e8), 8001)
    z = np.array([economy.aggregate_excess_demand(np.array([1.0, np.exp(v)]))[1] for v in x])
    assert int(np.sum(np.sign(z[1:]) != np.sign(z[:-1]))) == 3


def test_stability_of_the_three_equilibria(complements):
    economy, found = complements
    stable = [equilibrium.stability(economy, p, "log").stable for p in found]
    assert stable == [True, False, True]
    scarf = build_economy(load_scenario("scarf").with_overrides(agents=3))[0]
    centre = equilibrium.stability(scarf, np.ones(3), "price")
    assert not centre.stable  # a centre (eigenvalues +-0.25i): tâtonnement cannot settle
    assert np.allclose(np.abs(centre.eigenvalues.imag), 0.25, atol=1e-6)
    variant = build_economy(load_scenario("scarf-variant").with_overrides(agents=3))[0]
    assert equilibrium.stability(variant, np.ones(3), "price").stable


@pytest.mark.parametrize(("start", "expected"), [(0.5, 0), (2.0, 2)])
def test_tatonnement_from_two_starts_reaches_two_named_equilibria(complements, start, expected):
    _, found = complements
    # central auctioneer with step 2 (locally stable up to ~35, see the scenario file)
    model = _run("ces-complements", 3000, [1.0, start], agents=300, graph="central", step_size=2.0)
    verdict = model.classify(found)
    assert verdict.status == "converged", verdict.reason
    assert verdict.evidence["equilibrium"] == expected
    assert verdict.evidence["distances"][expected] < 1e-6
    assert f"reference equilibrium {expected}" in verdict.reason
