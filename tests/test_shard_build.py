"""Shard-built economies (``builder = "shards"``): any shard count builds the same economy.

* 1, 2, 3 and 4 shards building their own rows give, bit for bit, the shard data the
  driver cuts from the whole build (agents, CSR rows, Metropolis weights, signal scale,
  ghosts and messages' routes), for every generator the shards draw;
* the whole build equals :func:`tatonnet.environment.network.from_edges` of the same
  edges, and its signal scale equals ``NetworkTatonnement``'s;
* runs are bit-identical: the in-process kernel on the whole build, in-process shards and
  Ray workers that built themselves;
* a disconnected graph is found without gathering it (one-line error).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.partition import shard_ranges
from tatonnet.distributed.shard import build_specs, spec_from_rows
from tatonnet.environment.build.graphs import decided_edges
from tatonnet.environment.build.shard_rows import build_in_process
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import from_edges
from tatonnet.environment.scenario import ScenarioError, build_market, load_scenario
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement

N = 4 * kernel.BLOCK + 300  # enough blocks for 4 shards, not a multiple of BLOCK
GRAPHS = {
    "ring": {},
    "grid": {},
    "small-world": {"k": 10, "p": 0.1},
    "scale-free": {"m": 3},
    "random-geometric": {"k": 40},
    "central": {},
}


def _scenario(graph: str, n: int = N, base: str = "default", **overrides):
    sc = load_scenario(base).with_overrides(agents=n, graph=graph, rounds=40, **overrides)
    data = sc.model_dump()
    data["network"].update({"kind": graph, **GRAPHS.get(graph, {})})
    data["builder"] = "shards"
    data["dynamics"]["initial_spread"] = 0.1
    return type(sc).model_validate(data)


def _spec_fields(spec):
    return {
        name: getattr(spec, name)
        for name in ("start", "stop", "indptr", "indices", "mixing", "ghost_ids", "endowments",
                     "shares", "family", "sigma", "inv_scale", "group", "tracking")
    }  # fmt: skip


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return np.array_equal(a, b)


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_any_shard_count_builds_the_driver_cut_of_the_whole_build(graph):
    sc = _scenario(graph)
    economy, group, network, prices = build_market(sc)
    rule = sc.dynamics.make_rule()
    central = network.is_central
    if central:
        inv_scale = np.ones_like(economy.endowments)
        cut_net = None
    else:
        inv_scale = NetworkTatonnement(economy, network, rule, "tracking").inv_scale
        cut_net = network
    for k in (1, 2, 3, 4):
        ranges = shard_ranges(sc.n_agents, k)
        rows = build_in_process(sc, ranges)
        if cut_net is None:
            from tatonnet.distributed.engine import _empty

            cut_net = _empty(sc.n_agents)
        expected = build_specs(economy, cut_net, ranges, rule, inv_scale, not central, group)
        for j, (r, want) in enumerate(zip(rows, expected, strict=True)):
            got = spec_from_rows(j, r, rule, not central, sc.numeraire, sc.good_names)
            assert _equal(_spec_fields(got), _spec_fields(want)), (graph, k, j)
            assert _equal(got.recv, want.recv) and _equal(got.send, want.send), (graph, k, j)
            p = prices if prices.ndim == 1 else prices[r.start : r.stop]
            assert np.array_equal(r.prices, p)


@pytest.mark.parametrize("graph", ["small-world", "scale-free", "random-geometric", "grid"])
def test_whole_build_is_from_edges_of_the_decided_edges(graph):
    sc = _scenario(graph)
    _, _, network, _ = build_market(sc)
    us, vs = decided_edges(graph, sc.n_agents, sc.graph_seed, sc.network.params(), 0, N)
    ref = from_edges(np.stack([us, vs], axis=1), N, graph)
    for name in ("indptr", "indices", "mixing"):
        assert np.array_equal(getattr(network, name), getattr(ref, name)), name


def _engine_history(engine, rounds):
    out = [engine.initial_metrics()]
    for _ in range(rounds):
        out.append(engine.step())
    return [(m.excess, m.mean_price, m.log_min, m.log_max) for m in out]


def _model_history(sc, rounds, engine=None):
    model = MarketModel(sc, engine=engine, mesa_agents=False)
    out = [model.metrics]
    for _ in range(rounds):
        model.step()
        out.append(model.metrics)
    return model, [(m.excess, m.mean_price, m.log_min, m.log_max) for m in out]


def _same(a, b) -> bool:
    return all(_equal(list(x), list(y)) for x, y in zip(a, b, strict=True)) and len(a) == len(b)


@pytest.mark.parametrize("graph", ["small-world", "scale-free", "central"])
def test_shards_that_built_themselves_run_like_the_kernel(graph):
    sc = _scenario(graph, base="scarf" if graph == "central" else "default")
    model, ref = _model_history(sc, 25)
    rule = sc.dynamics.make_rule()
    for k in (1, 2, 3):
        engine = ShardEngine.from_scenario(sc, rule, sc.dynamics.signal, k, use_ray=False)
        assert _same(_engine_history(engine, 25), ref), k
        np.testing.assert_array_equal(engine.prices(), model.prices())
        if graph != "central":
            assert engine.partition.n_edges == model.network.n_edges


def test_a_disconnected_graph_is_refused_in_one_line():
    sc = _scenario("random-geometric")
    data = sc.model_dump()
    data["network"]["k"] = 3.0  # far below the connectivity threshold
    sc = type(sc).model_validate(data)
    with pytest.raises(ScenarioError, match="disconnected") as info:
        build_market(sc)
    assert "\n" not in str(info.value)
    rule = sc.dynamics.make_rule()
    with pytest.raises(ValueError, match="disconnected"):
        ShardEngine.from_scenario(sc, rule, "tracking", 3, use_ray=False)


def test_shards_builder_refuses_what_it_cannot_draw():
    with pytest.raises(ScenarioError, match="driver"):
        load_scenario("fisher-ces").with_overrides(builder="shards")
    with pytest.raises(ScenarioError, match="complete"):
        load_scenario("default").with_overrides(graph="complete", builder="shards", agents=50)


@pytest.mark.ray
def test_ray_shards_that_built_themselves_are_bit_identical(local_ray):
    sc = _scenario("small-world")
    model, ref = _model_history(sc, 20)
    rule = sc.dynamics.make_rule()
    for k in (2, 3):
        engine = ShardEngine.from_scenario(sc, rule, "tracking", k, use_ray=True)
        try:
            assert _same(_engine_history(engine, 20), ref), k
            np.testing.assert_array_equal(engine.prices(), model.prices())
        finally:
            engine.shutdown()


@pytest.mark.ray
def test_a_killed_self_built_worker_recovers_bit_identically(local_ray, tmp_path):
    sc = _scenario("small-world")
    _, ref = _model_history(sc, 30)
    rule = sc.dynamics.make_rule()
    engine = ShardEngine.from_scenario(
        sc, rule, "tracking", 2, use_ray=True, checkpoint_dir=tmp_path, kill_worker_at_round=17
    )
    try:
        history = [engine.initial_metrics()]
        for _ in range(30):
            history.append(engine.step())
            if engine.round == 10:
                engine.checkpoint()
        got = [(m.excess, m.mean_price, m.log_min, m.log_max) for m in history]
        assert engine.recoveries == 1
        assert _same(got, ref)
    finally:
        engine.shutdown()


def test_model_engine_factory_uses_self_built_shards():
    sc = _scenario("small-world")
    _, ref = _model_history(sc, 10)
    _, got = _model_history(sc, 10, functools.partial(ShardEngine, n_shards=2, use_ray=False))
    assert _same(got, ref)


def test_a_run_the_shards_wrote_exports_their_edges(tmp_path, monkeypatch):
    """``edges/`` (parts by shard) is read as the run's edges, not rebuilt from run.json."""
    from tatonnet.cli import run
    from tatonnet.environment import scenario as scenario_module
    from tatonnet.results.export import open_run

    out = tmp_path / "sharded"
    args = ["--builder", "shards", "--agents", str(N), "--rounds", "5", "--workers", "1",
            "--no-reference", "--quiet", "--out", str(out)]  # fmt: skip
    assert run.main(args) == 0
    assert (out / "edges").is_dir() and not (out / "edges.parquet").exists()

    def no_rebuild(*_):
        raise AssertionError("the edges were rebuilt from the scenario")

    monkeypatch.setattr(scenario_module, "build_network_for", no_rebuild)
    edges = open_run(out).edges()
    _, _, network, _ = build_market(_scenario("small-world").with_overrides(rounds=5))
    src, dst, _ = network.edge_list()
    assert np.array_equal(np.sort(edges[:, 0] * N + edges[:, 1]), np.sort(src * N + dst))
