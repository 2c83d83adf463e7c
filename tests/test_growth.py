"""Growing markets (``[growth]``, :mod:`tatonnet.environment.growth`): invariants across
every join and leave, the equilibrium of the grown market, reproducibility, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from tatonnet.distributed.runner import RunConfigError, RunOptions, run_scenario
from tatonnet.environment.growth import GrowthSpec, MarketState, _Picker, apply_join, apply_leave
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import ScenarioError, _validate, load_scenario
from tests.helpers import invoke


def scenario(n=40, goods=3, seed=1, growth=None, utility="cobb-douglas", rule="entropic",
             rounds=400, kind="small-world", groups=1, tol=1e-8, **extra):  # fmt: skip
    """A small valid scenario with a ``[growth]`` table (``growth``: the table's dict)."""
    sizes = [n // groups + (k < n % groups) for k in range(groups)]
    agents = [
        {"count": c, "utility": utility, "shares": {"distribution": "dirichlet", "alpha": 2.0},
         "endowment": {"distribution": "uniform", "low": 0.2, "high": 2.0},
         **({"sigma": 3.0} if utility == "ces" else {})}
        for c in sizes
    ]  # fmt: skip
    net = {"kind": kind, **({"k": 4} if kind == "small-world" else {})}
    data = {"name": "grow", "seed": seed, "goods": goods, "agents": agents, "network": net,
            "dynamics": {"rule": rule, "step_size": 0.05, "rounds": rounds, "tol": tol},
            "growth": growth, **extra}  # fmt: skip
    return _validate(data, "test")


def _sums(model):
    s = model.state
    return s.tracker.sum(axis=0), s.excess.sum(axis=0)


def _check_market(model):
    """Every invariant of the present market, checked after a change."""
    g, e = model.growth, model.economy
    ids = g.present
    assert np.unique(ids).size == ids.size
    np.testing.assert_array_equal(e.endowments, g.universe.endowments[ids])
    np.testing.assert_allclose(e.supply, g.universe.endowments[ids].sum(axis=0), rtol=1e-14)
    y, z = _sums(model)
    if model.dynamics.signal == "tracking":
        np.testing.assert_allclose(y, z, atol=1e-9 * (1 + np.abs(z).max()))
    prices = model.prices()
    # Walras' law per agent: every row's excess demand is worth nothing at its own prices
    value = np.einsum("ij,ij->i", prices, model.state.excess)
    wealth = np.einsum("ij,ij->i", prices, e.endowments)
    assert np.all(np.abs(value) <= 1e-9 * wealth)
    net = model.network
    n = ids.size
    assert net.n_agents == n == model.state.coords.shape[0]
    W = sp.csr_matrix((net.mixing, net.indices, net.indptr), shape=(n, n))
    np.testing.assert_allclose(W.sum(axis=0).A1, 1.0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=1).A1, 1.0, atol=1e-12)
    assert connected_components(W, directed=False)[0] == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    start=st.integers(2, 8),
    add=st.integers(1, 6),
    remove=st.integers(0, 3),
    every=st.integers(1, 4),
    attach=st.sampled_from(["preferential", "uniform", "community"]),
    links=st.integers(1, 4),
    space=st.sampled_from(["log", "price"]),
)
def test_goods_and_tracking_are_conserved_across_every_join_and_leave(
    seed, start, add, remove, every, attach, links, space
):
    growth = {"start": start, "attach": attach, "links": links,
              "schedule": [{"every": every, "add": add}, {"every": every + 1, "remove": remove}]
              if remove else [{"every": every, "add": add}]}  # fmt: skip
    try:
        sc = scenario(n=24, seed=seed, growth=growth, kind="ring", groups=2, rounds=400)
    except ScenarioError as exc:  # e.g. the market would shrink below 2 agents
        assert "growth" in str(exc)
        return
    sc = sc.with_overrides(space=space)
    model = MarketModel(sc)
    universe = model.growth.universe.endowments
    _check_market(model)
    while model.growth.pending:
        before = model.growth.present.copy()
        supply = model.economy.supply.copy()
        model.step()
        after = model.growth.present
        if not np.array_equal(before, after):
            joined = np.setdiff1d(after, before)
            left = np.setdiff1d(before, after)
            expected = supply + universe[joined].sum(axis=0) - universe[left].sum(axis=0)
            np.testing.assert_allclose(model.economy.supply, expected, rtol=1e-12)
            _check_market(model)
    assert sorted(model.growth.present.tolist()) == list(range(24))  # everybody, at the end


def test_apply_join_and_leave_keep_the_tracking_sum():
    rng = np.random.default_rng(0)
    n, g = 5, 3
    state = MarketState(rng.normal(size=(n, g)), rng.normal(size=(n, g)),
                        rng.normal(size=(n, g)), np.zeros((n, 0, g)), 7)  # fmt: skip
    state.coords[:, 0] = 0.0
    gap = state.tracker.sum(0) - state.excess.sum(0)
    e = rng.uniform(0.5, 1.5, (2, g))
    arrays = (e, rng.uniform(0.5, 1.5, (2, g)), np.ones(2, np.int8), np.ones(2))
    # the second newcomer links to the first (row 5) and to row 0
    joined = apply_join(state, [np.array([1, 2]), np.array([5, 0])], arrays, 0, True,
                        np.zeros((2, 0, g)))  # fmt: skip
    np.testing.assert_allclose(joined.coords[5], state.coords[[1, 2]].mean(0))
    np.testing.assert_allclose(joined.coords[6], (joined.coords[5] + state.coords[0]) / 2)
    np.testing.assert_array_equal(joined.tracker[5:], joined.excess[5:])
    np.testing.assert_allclose(joined.tracker.sum(0) - joined.excess.sum(0), gap, atol=1e-12)
    p = np.exp(joined.coords[5:])
    np.testing.assert_allclose(np.einsum("ij,ij->i", p, joined.excess[5:]), 0, atol=1e-12)
    left = apply_leave(joined, [3, 5], [np.array([2, 4]), np.array([1, 2, 6])])
    assert left.coords.shape == (5, g) and left.round == 7
    np.testing.assert_allclose(left.tracker.sum(0) - left.excess.sum(0), gap, atol=1e-12)


def test_a_grown_market_reaches_the_at_once_equilibrium():
    growth = {"start": 30, "links": 3, "schedule": [{"every": 15, "add": 40},
                                                    {"every": 40, "remove": 5}]}  # fmt: skip
    kw = {"n": 300, "rounds": 3000, "tol": 1e-9, "seed": 3, "kind": "scale-free"}
    grown = run_scenario(scenario(growth=growth, **kw), RunOptions(workers=0, progress=False))
    at_once = run_scenario(scenario(**kw), RunOptions(workers=0, progress=False))
    for r in (grown, at_once):
        assert r.summary["status"] == "converged"
        assert r.summary["n_agents"] == 300
    assert grown.summary["growth"]["left"] > 0
    assert grown.summary["rounds"] > grown.summary["growth"]["last_event_round"]
    np.testing.assert_allclose(grown.references[0], at_once.references[0], rtol=1e-12)
    np.testing.assert_allclose(grown.summary["prices"], at_once.summary["prices"], rtol=1e-7)
    np.testing.assert_allclose(grown.summary["prices"], at_once.references[0], rtol=1e-7)


def test_a_grown_ces_gross_substitutes_market_reaches_the_equilibrium():
    growth = {"start": 20, "attach": "uniform", "schedule": [{"every": 10, "add": 30}]}
    kw = {"n": 200, "utility": "ces", "rule": "multiplicative", "groups": 2, "seed": 5,
          "rounds": 4000, "kind": "scale-free"}  # fmt: skip
    grown = run_scenario(scenario(growth=growth, **kw), RunOptions(workers=0, progress=False))
    at_once = run_scenario(scenario(**kw), RunOptions(workers=0, progress=False))
    assert grown.summary["status"] == at_once.summary["status"] == "converged"
    np.testing.assert_allclose(grown.summary["prices"], at_once.summary["prices"], rtol=1e-6)


def test_the_schedule_is_reproducible_from_the_seed():
    growth = {"start": 10, "schedule": [{"every": 5, "add": 12}, {"every": 7, "remove": 2}]}

    def run(seed):
        model = MarketModel(scenario(n=80, growth=growth, seed=seed))
        for _ in range(60):
            model.step()
        return model

    a, b, c = run(4), run(4), run(5)
    assert a.growth.log == b.growth.log
    np.testing.assert_array_equal(a.growth.present, b.growth.present)
    np.testing.assert_array_equal(a.growth.edges, b.growth.edges)
    np.testing.assert_array_equal(a.state.coords, b.state.coords)
    assert not np.array_equal(a.growth.present, c.growth.present)


def test_community_newcomers_link_within_their_group():
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6], [6, 7]])
    picker = _Picker(edges, np.arange(8), group, np.random.default_rng(0))
    for grp in (0, 1):
        targets = picker.pick("community", 3, grp)
        assert len(set(targets)) == 3 and all(group[j] == grp for j in targets)
    assert sorted(picker.pick("uniform", 8, 0)) == list(range(8))  # links to all there are


def test_the_default_scenario_dump_has_no_growth_key():
    sc = load_scenario("default")
    assert "growth" not in sc.model_dump() and sc.growth is None
    grown = scenario(growth={"start": 5, "schedule": [{"every": 2, "add": 5}]})
    assert _validate(grown.model_dump(), "again").growth == grown.growth


GOOD_GROWTH = """\
name = "tiny-grow"
seed = 1
goods = 3

[[agents]]
count = 30
utility = "cobb-douglas"
shares = { distribution = "dirichlet", alpha = 1.0 }
endowment = { distribution = "uniform", low = 0.5, high = 1.5 }

[network]
kind = "ring"

[dynamics]
rounds = 200

[growth]
start = 10
schedule = [{ every = 5, add = 5 }]
"""

BAD_GROWTH = [
    ("start = 10", "start = 30", ["growth.start", "smaller"]),
    ("start = 10", "start = 1", ["growth.start", "greater than or equal to 2"]),
    ("every = 5, add = 5", "every = 5", ["growth.schedule.0", "add or remove"]),
    ("every = 5, add = 5", "every = 15, add = 1", ["growth.schedule", "dynamics.rounds"]),
    ("every = 5, add = 5", "every = 0, add = 5", ["growth.schedule.0.every"]),
    ("start = 10", 'start = 10\nattach = "nearest"', ["growth.attach"]),
    ("start = 10", "start = 10\ncolour = 1", ["growth.colour", "Extra inputs"]),
    ('kind = "ring"', 'kind = "central"', ["growth", "central"]),
    ("every = 5, add = 5", "every = 5, add = 5, remove = 12", ["at least 2 must stay"]),
    ('kind = "ring"', 'kind = "small-world"\nk = 20', ["growth.start = 10", "founders"]),
]


@pytest.mark.parametrize(("old", "new", "phrases"), BAD_GROWTH, ids=[b[1] for b in BAD_GROWTH])
def test_a_bad_growth_table_is_one_line_and_exit_2(old, new, phrases, tmp_path, capsys):
    assert old in GOOD_GROWTH
    path = tmp_path / "g.toml"
    path.write_text(GOOD_GROWTH.replace(old, new))
    code, _, err = invoke(["--scenario", path, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, (phrase, err)
    assert not (tmp_path / "out").exists()


def test_growth_with_workers_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GOOD_GROWTH)
    code, _, err = invoke(["--scenario", path, "--workers", "1", "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "growth" in err and "in this process" in err and "--workers 0" in err
    with pytest.raises(RunConfigError, match="in this process"):
        RunOptions(workers=2).check(load_scenario(path))


def test_a_grown_run_through_the_cli_writes_its_folder(tmp_path, capsys):
    path = tmp_path / "g.toml"
    path.write_text(GOOD_GROWTH)
    code, out, err = invoke(["--scenario", path, "--out", tmp_path / "o", "--quiet"], capsys)
    assert code in (0, 1), err  # converged, or max_rounds: both a finished run
    import json

    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_agents"] == 30 and summary["graph"] == "grown"
    assert summary["growth"]["joined"] == 20


def test_growth_spec_events_stop_when_everybody_is_in():
    spec = GrowthSpec(start=10, schedule=[{"every": 3, "add": 4}, {"every": 6, "remove": 1}])
    events = spec.events(30, 1000)
    count = 10
    for ev in events:
        count += ev.add - ev.remove
    assert count == 30 and events[-1].add > 0
    assert [ev.round for ev in events] == sorted(ev.round for ev in events)
