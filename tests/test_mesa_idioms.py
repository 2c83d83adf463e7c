"""Mesa's tutorial idioms against MarketModel, on a network and a central scenario.

``do`` / ``shuffle_do`` / ``select`` / ``agg`` / ``groupby``, ``run_model``, ``batch_run``
(with ``rng`` and with ``iterations``), agent reporters and ``remove``: each with values,
invariants or determinism that can fail. Small models (60 agents), a few seconds in all.
"""

from __future__ import annotations

import multiprocessing
import warnings

import mesa
import numpy as np
import pytest

import tatonnet.environment.model as model_module
from tatonnet.agents.trader import AgentRemovalError, Trader
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import Scenario, load_scenario

TWO_GROUPS = """\
name = "two-groups"
description = "Cobb-Douglas and CES agents on a small world"
seed = 11
goods = ["bread", "wine", "wool"]

[[agents]]
name = "cd"
count = 24
utility = "cobb-douglas"
shares = { distribution = "dirichlet", alpha = 2.0 }
endowment = { distribution = "uniform", low = 0.5, high = 1.5 }

[[agents]]
name = "ces"
count = 36
utility = "ces"
sigma = 2.0
shares = { distribution = "dirichlet", alpha = 1.0 }
endowment = { distribution = "uniform", low = 0.2, high = 2.0 }

[network]
kind = "small-world"
k = 6
p = 0.2

[dynamics]
rule = "entropic"
step_size = 0.05
signal = "tracking"
rounds = 200
initial_prices = [1.0, 1.3, 0.8]
initial_spread = 0.2
"""

N = 60
GRAPHS = ["small-world", "central"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    path = tmp_path_factory.mktemp("scenario") / "two-groups.toml"
    path.write_text(TWO_GROUPS)
    return load_scenario(path)


def _model(scenario, graph="small-world", **kw) -> MarketModel:
    return MarketModel(scenario, graph=None if graph == "small-world" else graph, **kw)


def _copy(state):
    return state.coords.copy(), state.tracker.copy(), state.excess.copy()


def _assert_tracking_invariant(model):
    s = model.state
    np.testing.assert_allclose(s.tracker.sum(axis=0), s.excess.sum(axis=0), rtol=0, atol=1e-12)


@pytest.fixture(autouse=True, scope="module")
def _restore_start_method():
    """batch_run forces the 'spawn' start method process-wide; put it back afterwards."""
    before = multiprocessing.get_start_method(allow_none=True)
    yield
    multiprocessing.set_start_method(before, force=True)


# ---- ids and the AgentSet ---------------------------------------------------------------


def test_unique_id_is_the_row_and_the_agentset_is_complete(scenario):
    model = _model(scenario)
    assert [a.unique_id for a in model.agents] == list(range(N))
    assert all(a.index == a.unique_id for a in model.agents)
    assert model.agents[17] is model.trader(17)
    with pytest.raises(AttributeError, match="row id"):
        model.agents[3].unique_id = 4


def test_lazy_agents_are_complete_in_row_order(scenario, monkeypatch):
    monkeypatch.setattr(model_module, "MESA_AGENTS_UP_TO", 10)  # "large" model: lazy views
    model = _model(scenario)
    early = model.trader(41)  # one view made on demand before the set is complete
    assert len(model._traders) == 1
    assert len(model.agents) == N  # first use creates the rest
    assert [a.unique_id for a in model.agents] == list(range(N))
    assert model.agents[41] is early
    assert list(model.agents_by_type[Trader]) == list(model.agents)


# ---- do / shuffle_do: per-agent (asynchronous) updates ----------------------------------


def test_one_agent_step_equals_its_row_of_the_fused_round(scenario):
    """The first agent to move sees the round's state, so its new row is the fused one."""
    model, fused = _model(scenario), _model(scenario)
    before = _copy(model.state)
    fused.step()
    i = 7
    model.agents.select(lambda a: a.unique_id == i).do("step")
    s, f = model.state, fused.state
    np.testing.assert_allclose(s.coords[i], f.coords[i], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.excess[i], f.excess[i], rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.tracker[i], f.tracker[i], rtol=0, atol=1e-12)
    assert np.max(np.abs(s.coords[i] - before[0][i])) > 1e-4  # it really moved
    # nobody else's prices or excess demand changed; only neighbours' trackers did
    others = np.arange(N) != i
    np.testing.assert_array_equal(s.coords[others], before[0][others])
    np.testing.assert_array_equal(s.excess[others], before[2][others])
    touched = np.flatnonzero(np.any(s.tracker != before[1], axis=1))
    assert set(touched) <= set(model.network.neighbors(i).tolist()) | {i}
    assert len(touched) > 1
    assert model.round == 0 and model.steps == 0  # an agent step is not a round


def test_tracking_invariant_holds_after_every_agent_step(scenario):
    model = _model(scenario)
    count = []

    def step_and_check(agent):
        agent.step()
        _assert_tracking_invariant(model)
        count.append(agent.unique_id)

    for _ in range(3):
        model.agents.shuffle_do(step_and_check)
    assert len(count) == 3 * N and sorted(count[:N]) == list(range(N))
    assert count[:N] != count[N : 2 * N]  # each sweep draws its own order


def test_shuffle_do_is_seeded_and_order_matters(scenario):
    a, b, c = _model(scenario), _model(scenario), _model(scenario)
    for _ in range(3):
        a.agents.shuffle_do("step")
        b.agents.shuffle_do("step")
        c.agents.do("step")  # row order
    for x, y in zip(_copy(a.state), _copy(b.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert np.max(np.abs(a.state.coords - c.state.coords)) > 1e-6  # asynchronous: order counts


def test_asynchronous_sweeps_reduce_excess_demand(scenario):
    model = _model(scenario)
    start = model.metrics.excess_demand
    for _ in range(30):
        model.asynchronous_step()
        _assert_tracking_invariant(model)
    assert model.round == model.steps == 30 and model.time == 30
    assert model.metrics.excess_demand < 0.5 * start
    df = model.datacollector.get_model_vars_dataframe()
    assert len(df) == 31
    assert df["excess_demand"].iloc[-1] == pytest.approx(model.metrics.excess_demand)


def test_central_agent_step_changes_nothing_and_the_sweep_is_the_auctioneer_round(scenario):
    model = _model(scenario, "central")
    before = _copy(model.state)
    model.agents.shuffle_do("step")
    for x, y in zip(before, _copy(model.state), strict=True):
        np.testing.assert_array_equal(x, y)
    # the agents' demands at the posted prices add up to the auctioneer's aggregate
    total = np.sum(model.agents.get("excess_demand"), axis=0)
    np.testing.assert_allclose(total, model.state.excess[0], rtol=1e-10, atol=1e-12)
    fused = _model(scenario, "central")
    for _ in range(5):
        model.asynchronous_step()
        fused.step()
    np.testing.assert_array_equal(model.state.coords, fused.state.coords)


# ---- select / agg / groupby --------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS)
def test_select_agg_groupby_read_the_arrays(scenario, graph):
    model = _model(scenario, graph)
    for _ in range(3):
        model.step()
    e, prices = model.economy.endowments, model.prices()
    wealth = (prices * e).sum(axis=1)
    assert model.agents.agg("wealth", sum) == pytest.approx(wealth.sum(), rel=1e-12)
    rich = model.agents.select(lambda a: a.wealth > np.median(wealth))
    assert sorted(a.unique_id for a in rich) == np.flatnonzero(wealth > np.median(wealth)).tolist()
    assert len(model.agents.select(at_most=5)) == 5
    by_family = model.agents.groupby("utility_family")
    assert by_family.count() == {"cobb-douglas": 24, "ces": 36}
    means = model.agents.groupby("group").agg("wealth", np.mean)
    for k, value in means.items():
        assert value == pytest.approx(wealth[model.group == k].mean(), rel=1e-12)


# ---- run_model and running ---------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS)
def test_run_model_honours_the_scenarios_rounds(scenario, graph):
    model = _model(scenario, graph, rounds=25)
    model.run_model()
    assert model.round == model.steps == 25
    assert not model.running and model.verdict is None  # budget spent, not converged
    assert len(model.datacollector.get_model_vars_dataframe()) == 26


def test_run_model_stops_on_convergence():
    model = MarketModel("ces-substitutes", n_agents=100, tol=1e-6)
    model.run_model()
    assert model.verdict is not None and model.verdict.status == "converged"
    assert model.round < model.config.dynamics.rounds
    assert model.metrics.excess_demand <= 1e-6


# ---- seeds: rng, seed, batch_run ---------------------------------------------------------


def test_rng_overrides_the_scenario_seed_and_omitted_keeps_it(scenario):
    assert _model(scenario).config.seed == scenario.seed == _model(scenario).scenario.rng
    a, b = _model(scenario, rng=3), _model(scenario, seed=3)
    assert a.config.seed == b.config.seed == 3
    np.testing.assert_array_equal(a.economy.endowments, b.economy.endowments)
    assert not np.array_equal(a.economy.endowments, _model(scenario).economy.endowments)
    with pytest.raises(ValueError, match="rng or seed"):
        _model(scenario, rng=3, seed=3)
    fresh = [_model(scenario, rng=None).config.seed for _ in range(2)]
    assert fresh[0] != fresh[1]
    replay = _model(scenario, seed=fresh[0])
    again = _model(scenario, rng=fresh[0])
    np.testing.assert_array_equal(replay.state.coords, again.state.coords)
    seq = np.random.SeedSequence(5)
    assert (
        _model(scenario, rng=seq).config.seed
        == _model(scenario, rng=np.random.SeedSequence(5)).config.seed
    )


def _batch(scenario, graph, **kw):
    params = {"scenario": [scenario], "rounds": 8, "agent_data_every": 4}
    if graph == "central":
        params["graph"] = "central"
    return mesa.batch_run(
        MarketModel, params, number_processes=1, display_progress=False, max_steps=100, **kw
    )


def _final_prices(rows, run_id, goods):
    last = [r for r in rows if r["RunId"] == run_id]
    return np.array([[r[f"price_{g}"] for g in goods] for r in last])


@pytest.mark.parametrize("graph", GRAPHS)
def test_batch_run_with_rng_replays_and_varies(scenario, graph):
    rows = _batch(scenario, graph, rng=[1, 2, 1])
    goods = ["bread", "wine", "wool"]
    assert {r["Step"] for r in rows} == {8}  # stopped at the scenario's rounds
    for run_id in range(3):  # final step: one row per agent (agents sampled at the stop)
        ids = [r["AgentID"] for r in rows if r["RunId"] == run_id]
        assert sorted(ids) == list(range(N))
    p = [_final_prices(rows, k, goods) for k in range(3)]
    np.testing.assert_array_equal(p[0], p[2])  # same rng, same run
    assert np.max(np.abs(p[0] - p[1])) > 1e-6  # another rng, another economy


def test_batch_run_with_iterations_gives_different_replicates(scenario):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Mesa deprecates iterations
        rows = _batch(scenario, "small-world", iterations=3)
    assert sorted({r["iteration"] for r in rows}) == [0, 1, 2]
    excess = {r["RunId"]: r["excess_demand"] for r in rows}
    assert len(set(excess.values())) == 3


# ---- agent reporters ---------------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS)
def test_agent_reporters_are_sampled_every_k_rounds(scenario, graph):
    model = _model(scenario, graph, rounds=12, agent_data_every=5)
    model.run_model()
    df = model.datacollector.get_agent_vars_dataframe()
    steps = df.index.get_level_values("Step")
    assert sorted(set(steps)) == [0, 5, 10, 12]  # every 5 rounds and the stopping round
    assert (steps.value_counts() == N).all()
    goods = model.economy.goods
    last = df.xs(12, level="Step")
    assert list(last.index) == list(range(N))
    for agent in model.agents.select(lambda a: a.unique_id % 7 == 0):
        row = last.loc[agent.unique_id]
        np.testing.assert_allclose([row[f"price_{g}"] for g in goods], agent.prices, rtol=1e-14)
        np.testing.assert_allclose(
            [row[f"excess_{g}"] for g in goods], agent.excess_demand, rtol=1e-12, atol=1e-13
        )
        assert row["wealth"] == pytest.approx(agent.wealth, rel=1e-12)
        assert row["utility"] == pytest.approx(agent.utility, rel=1e-12)
    # the per-agent reporter computes the same value for one agent
    reporter = model.datacollector.agent_reporters["wealth"]
    assert reporter(model.agents[3]) == pytest.approx(last.loc[3, "wealth"], rel=1e-12)
    # budget balance: the value of each agent's excess demand is zero (Walras' law)
    excess = last[[f"excess_{g}" for g in goods]].to_numpy()
    prices = last[[f"price_{g}" for g in goods]].to_numpy()
    np.testing.assert_allclose((excess * prices).sum(axis=1), 0.0, atol=1e-10)


def test_agent_reporters_default_on_when_small_off_when_large(scenario):
    assert _model(scenario).agent_data_every == 10
    big = _model(scenario, rounds=10**5)  # 60 agents x 10^4 samples: over the default budget
    assert big.agent_data_every == 0
    with pytest.raises(UserWarning, match="No agent reporters"):
        big.datacollector.get_agent_vars_dataframe()
    with pytest.raises(ValueError, match="agent_data_every"):
        _model(scenario, agent_data_every=-1)


# ---- views and remove --------------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS)
def test_views_are_read_only(scenario, graph):
    model = _model(scenario, graph)
    agent = model.agents[4]
    endowments = model.economy.endowments.copy()
    for name in ("prices", "endowment", "shares", "demand", "excess_demand"):
        view = getattr(agent, name)
        with pytest.raises(ValueError, match="read-only"):
            view[1] = 5.0
    np.testing.assert_array_equal(model.economy.endowments, endowments)
    with pytest.raises(AttributeError):
        agent.endowment = np.ones(3)


def test_setting_prices_writes_the_row_consistently(scenario):
    model = _model(scenario)
    agent = model.agents[9]
    agent.prices = [2.0, 3.0, 5.0]  # divided by the numeraire's price
    np.testing.assert_allclose(agent.prices, [1.0, 1.5, 2.5], rtol=1e-14)
    np.testing.assert_allclose(model.state.excess[9], agent.excess_demand, rtol=1e-12, atol=1e-13)
    _assert_tracking_invariant(model)
    assert model.metrics.mean_price[1] == pytest.approx(model.prices()[:, 1].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="positive"):
        agent.prices = [1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="auctioneer"):
        _model(scenario, "central").agents[0].prices = [1.0, 2.0, 3.0]


@pytest.mark.parametrize("graph", GRAPHS)
def test_remove_is_refused_and_changes_nothing(scenario, graph):
    model = _model(scenario, graph)
    with pytest.raises(AgentRemovalError, match="cannot be removed"):
        model.agents[5].remove()
    with pytest.raises(AgentRemovalError):
        model.remove_all_agents()
    assert len(model.agents) == N
    model.step()
    assert model.round == 1


# ---- names that do not shadow Mesa's -----------------------------------------------------


def test_config_is_tatonnets_scenario_and_n_agents_the_count(scenario):
    model = _model(scenario, n_agents=40)
    assert isinstance(model.config, Scenario) and model.config.n_agents == 40
    assert isinstance(model.scenario, mesa.experimental.scenarios.Scenario)
    assert model.scenario.rng == model.config.seed and model.scenario.n_agents == 40
    assert len(model.agents) == 40
    alias = _model(scenario, agents=40)
    np.testing.assert_array_equal(alias.economy.endowments, model.economy.endowments)
    with pytest.raises(ValueError, match="n_agents or agents"):
        _model(scenario, n_agents=40, agents=40)
    with pytest.raises(TypeError, match="not a mesa Scenario"):
        MarketModel(mesa.experimental.scenarios.Scenario(rng=1))


def test_per_agent_path_refuses_a_distributed_engine(scenario):
    import functools

    from tatonnet.distributed.engine import ShardEngine

    engine = functools.partial(ShardEngine, n_shards=1, use_ray=False)
    model = MarketModel(scenario, engine=engine)
    assert model.agent_data_every == 0  # gathering every shard per sample: off by default
    with pytest.raises(ValueError, match="distributed engine"):
        model.agents.shuffle_do("step")
    with pytest.raises(ValueError, match="distributed engine"):
        model.asynchronous_step()
    model.step()
    assert model.round == 1 and len(model.agents) == N
