"""The tuner per study cell (``studies/tune.py``, ``studies/search_space.py``).

Tiny economies, few rounds and budgets of 8-20 trials: the whole file runs in seconds.
"""

import concurrent.futures
import dataclasses
import math

import pytest

from tatonnet.agents.rules import RULES, make_rule
from tatonnet.studies import search_space, tune
from tatonnet.studies.grid import Cell, StudyError, run_cell

#: A 3-good Cobb-Douglas exchange economy whose prices differ by a factor of 30; see
#: :func:`test_tuner_finds_the_narrow_window_the_fixed_grid_misses`.
NARROW = """
name = "narrow"
description = "Cobb-Douglas, prices 1 : 0.8 : 30; additive steps converge in a narrow window"
seed = 0
goods = ["x0", "x1", "x2"]

[[agents]]
name = "a"
count = 2
utility = "cobb-douglas"
shares = [0.2, 0.4, 0.4]
endowment = [1.0, 0.0, 0.0]

[[agents]]
name = "b"
count = 2
utility = "cobb-douglas"
shares = [0.4, 0.2, 0.4]
endowment = [0.0, 1.0, 0.04]

[network]
kind = "complete"

[dynamics]
rule = "additive"
step_size = 0.1
"""

ROUNDS, TOL = 600, 1e-6
#: The step sizes the default study (``xor.toml``) ran additive at before it was tuned.
OLD_GRID = [0.05, 0.1, 0.5]


def _cell(scenario, rule="additive", hyper=(), rounds=ROUNDS, tol=TOL, agents=None,
          step=None, seed=0):  # fmt: skip
    return Cell(0, "tune", str(scenario), "central", agents, "flat", rule, step, tuple(hyper),
                seed, rounds, tol, "tracking")  # fmt: skip


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "narrow.toml"
    path.write_text(NARROW)
    # additive in its own geometry (price space), as the fixed grid runs it
    return _cell(path, hyper=(("space", "price"),))


@pytest.fixture(scope="module")
def narrow_search(narrow):
    return tune.search_cell(narrow, trials=20, batch=4, seed=0)


# ---- the search space ------------------------------------------------------------------
def test_every_rule_has_a_search_space_whose_corners_are_valid():
    assert set(search_space.SEARCH_SPACES) == set(RULES)
    for name, rule_cls in RULES.items():
        dims = search_space.space_for(name)
        assert dims[0].name == "step_size" and dims[0].log and dims[0].low <= 1e-4
        numeric = [d for d in dims if not d.choices]
        for corner in ("low", "high"):
            make_rule(name, **{d.name: getattr(d, corner) for d in numeric})  # no RuleError
        spaces = [d for d in dims if d.name == "space"]
        assert (len(spaces) == 1) == (len(rule_cls.spaces) > 1), name
        if spaces:
            assert set(spaces[0].choices) == set(rule_cls.spaces)


def test_the_step_range_is_wide_where_the_rule_allows_it():
    for name in ("additive", "entropic", "momentum", "adam", "optimistic", "async-goods"):
        step = search_space.space_for(name)[0]
        assert (step.low, step.high) == (1e-4, 10.0)


def test_pinned_hyperparameters_are_not_searched():
    names = [d.name for d in search_space.space_for("momentum", fixed=["momentum", "space"])]
    assert names == ["step_size"]


# ---- one trial ---------------------------------------------------------------------------
def test_a_run_still_improving_at_the_round_budget_is_max_rounds(narrow):
    """Step 1.0 on the narrow economy closes in on the equilibrium (the excess demand falls
    by orders of magnitude) but has not reached tol after 600 rounds: max_rounds."""
    result = tune.run_trial(narrow, {"space": "price", "step_size": 1.0})
    assert result.status == "max_rounds" and result.rounds == ROUNDS
    assert TOL < result.best_excess < 1e-3
    assert result.rounds_to_tol is None
    assert result.value > math.log10(TOL)  # worse than every converged trial


def test_the_objective_orders_converged_first_and_diverged_last(narrow):
    converged = tune.objective("converged", 100, 1e-7, narrow)
    slower = tune.objective("converged", 500, 1e-7, narrow)
    close = tune.objective("max_rounds", None, 2e-6, narrow)
    far = tune.objective("cycling", None, 0.1, narrow)
    diverged = tune.objective("diverged", None, 1e-3, narrow)
    assert converged < slower < math.log10(TOL) < close < far < diverged == tune.WORST


# ---- the narrow window -------------------------------------------------------------------
def test_tuner_finds_the_narrow_window_the_fixed_grid_misses(narrow, narrow_search):
    """Additive tâtonnement (price space) on an economy with prices 1 : 0.8 : 30.

    Construction: two Cobb-Douglas types; type a owns good 0 (the numeraire), type b owns
    good 1 and a little of good 2 (0.04 per agent), and both spend 40% on good 2, so good 2
    is scarce and costs about 30 while goods 0 and 1 cost about 1. The relative excess
    demand ``z_j / s_j`` is scale-free, so its slope in the price ``p_j`` is about
    ``-1 / p_j``: the step must be below about 2 (else the cheap good 1 overshoots, cycles,
    or is floored: diverged) and above about 1.2 for the expensive good 2 to close a gap
    of 1e6 (tol 1e-6) within 600 rounds (it contracts by about ``1 - step / 30`` a round).
    So only steps in roughly [1.2, 1.8] converge; the fixed grid the default study ran
    additive at before it was tuned (0.05, 0.1, 0.5) lies below it and reports max_rounds.
    """
    grid_steps = OLD_GRID
    grid_cell = dataclasses.replace(narrow, hyperparameters=())  # additive's own geometry
    assert make_rule("additive").space == "price"
    for step in grid_steps:
        row = run_cell(dataclasses.replace(grid_cell, step_size=step))["row"]
        assert row["status"] == "max_rounds", (step, row["status"])
    big = run_cell(dataclasses.replace(grid_cell, step_size=10.0))["row"]
    assert big["status"] == "diverged"

    verdict = tune._verdict(narrow, narrow_search[1], narrow_search[0])
    assert verdict.verdict == "converges" and verdict.status == "converged"
    best_step = dict(verdict.hyperparameters)["step_size"]
    assert 1.0 < best_step < 2.0 and verdict.rounds_to_tol <= ROUNDS
    assert 1.0 < verdict.converged_step_min <= verdict.converged_step_max < 2.0
    assert verdict.trials == 20 and 1 <= verdict.converged_trials < 20
    assert verdict.pruned_trials > 0  # successive halving stopped some hopeless trials
    assert verdict.searched == (("step_size", "0.0001..10 log"),)
    # the economy is explicit (a seed only shuffles its agents): no re-check needed
    assert verdict.recheck_status == "not needed" and verdict.recheck_seed is None
    # the verdict matches a fresh run of its best hyperparameters
    again = tune.run_trial(narrow, dict(verdict.hyperparameters))
    assert again.status == "converged" and again.rounds_to_tol == verdict.rounds_to_tol


def test_pruned_trials_were_stopped_at_a_rung_and_reported_before(narrow_search):
    results, _, _ = narrow_search
    assert [r.number for r in results] == list(range(20))
    for r in results:
        if r.status == "pruned":
            assert r.rounds < ROUNDS and r.reports and r.reports[-1][0] == r.rounds
            assert r.rungs  # the pruner recorded the rung it was judged at
            assert r.value == r.reports[-1][1]


# ---- determinism -------------------------------------------------------------------------
class _ReversedPool:
    """An executor that evaluates a batch last-first (as a busy pool might finish it)."""

    def map(self, fn, jobs):
        jobs = list(jobs)
        return [fn(j) for j in reversed(jobs)][::-1]


def test_same_trials_in_process_on_two_threads_in_any_order_and_again(narrow, narrow_search):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        threads = tune.search_cell(narrow, trials=20, batch=4, seed=0, pool=pool)
    reversed_ = tune.search_cell(narrow, trials=20, batch=4, seed=0, pool=_ReversedPool())
    assert threads[0] == narrow_search[0]
    assert reversed_[0] == narrow_search[0]
    again = tune.tune_cell(narrow, trials=20, batch=4, seed=0)
    assert again == tune._verdict(narrow, narrow_search[1], narrow_search[0])
    other = tune.search_cell(narrow, trials=20, batch=4, seed=1)
    assert other[0] != narrow_search[0]  # the seed matters (the test can fail)


@pytest.mark.ray
@pytest.mark.slow  # ~20 s here: Ray's start and numba's compile in each worker
def test_ray_workers_give_the_same_trials(narrow):
    ray = pytest.importorskip("ray")
    from tatonnet.distributed import cluster

    started = not ray.is_initialized()
    try:  # the tuner starts a private loopback Ray of 2 CPUs (cluster.connect)
        results, _, _ = tune.search_cell(narrow, trials=8, batch=4, seed=0, workers=2)
    finally:
        if started:
            cluster.shutdown()
    assert results == tune.search_cell(narrow, trials=8, batch=4, seed=0)[0]
    assert any(r.status == "pruned" for r in results)  # pruning decisions are compared too


# ---- verdicts ------------------------------------------------------------------------------
def test_a_rule_fails_only_when_every_trial_failed(narrow):
    """60 rounds are too few for any step on the narrow economy (good 2 needs ~300 rounds
    even at the largest stable step): every trial fails, and the row says how many were
    tried and over which range."""
    short = dataclasses.replace(narrow, rounds=60)
    verdict = tune.tune_cell(short, trials=8, batch=4, seed=0)
    assert verdict.verdict == "fails" and verdict.converged_trials == 0
    assert verdict.trials == 8 and verdict.status != "converged"
    assert verdict.converged_step_min is None and verdict.recheck_status == "not run"
    assert "0 of 8 trials" in verdict.reason and "0.0001..10 log" in verdict.reason


def test_a_drawn_economy_is_rechecked_on_a_second_seed():
    cell = _cell("cobb-douglas", rule="entropic", agents=20, rounds=300)
    assert tune.economy_depends_on_seed(cell)
    verdict = tune.tune_cell(cell, trials=16, batch=4, seed=0)
    assert verdict.status == "converged" and verdict.recheck_seed == 1
    assert verdict.recheck_status == "converged" and verdict.verdict == "converges"


def test_a_failed_recheck_makes_the_verdict_unconfirmed(monkeypatch, narrow, narrow_search):
    results, dims, _ = narrow_search
    real = tune.run_trial

    def recheck_diverges(cell, hyper, *args, **kwargs):
        result = real(cell, hyper, *args, **kwargs)
        return dataclasses.replace(result, status="diverged") if cell.seed == 1 else result

    monkeypatch.setattr(tune, "economy_depends_on_seed", lambda cell: True)
    monkeypatch.setattr(tune, "run_trial", recheck_diverges)
    verdict = tune._verdict(narrow, dims, results)
    assert verdict.status == "converged" and verdict.recheck_status == "diverged"
    assert verdict.verdict == "unconfirmed" and "re-check on seed 1" in verdict.reason


def test_a_rule_that_cannot_run_is_skipped_without_trials():
    verdict = tune.tune_cell(_cell("cobb-douglas", rule="proportional-response", agents=20))
    assert verdict.verdict == "skipped" and verdict.trials == 0
    assert "Fisher" in verdict.reason


@pytest.mark.parametrize(
    "options, message",
    [({"trials": 0}, "trials"), ({"batch": 1.5}, "batch"), ({"workers": -1}, "workers"),
     ({"reduction_factor": 1}, "reduction_factor")],
)  # fmt: skip
def test_bad_options_are_one_line_errors(narrow, options, message):
    with pytest.raises(StudyError, match=message) as exc:
        tune.tune_cell(narrow, **options)
    assert "\n" not in str(exc.value)


def test_a_layered_network_cell_gives_the_same_trials_on_two_threads():
    cell = dataclasses.replace(
        _cell("cobb-douglas", rule="entropic", agents=12, rounds=200, tol=1e-5),
        graph="ring", market="layered",
    )  # fmt: skip
    assert cell.mode == "network" and tune.economy_depends_on_seed(cell)
    alone = tune.search_cell(cell, trials=8, batch=4, seed=0)[0]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert tune.search_cell(cell, trials=8, batch=4, seed=0, pool=pool)[0] == alone
    assert not any(r.status in ("skipped", "invalid") for r in alone)
    searched = {name for r in alone for name, _ in r.params}
    assert {"market.flow_gain", "market.inventory_gain", "market.rebalance"} <= searched


def test_market_dimensions_follow_the_market_and_the_rule_names_the_merchants_rule():
    flat = _cell("scarf", rule="optimistic")
    assert tune.market_dimensions(flat) == ()
    central = dataclasses.replace(flat, market="layered-books")
    network = dataclasses.replace(central, graph="ring", agents=12)
    names = lambda cell: {d.name for d in tune.market_dimensions(cell)}  # noqa: E731
    assert names(central) == {"market.flow_gain", "market.inventory_gain"}  # one merchant
    assert names(network) == names(central) | {"market.rebalance"}
    assert "market.merchant_rule" not in names(network)  # the cell's rule is the merchants'
    pinned = dataclasses.replace(network, hyperparameters=(("market.flow_gain", 1.0),))
    assert names(pinned) == {"market.inventory_gain", "market.rebalance"}
