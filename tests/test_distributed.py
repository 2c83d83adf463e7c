"""Partitioning, shards and the Ray engine: same numbers as one process, whatever happens.

* partitions cover every agent exactly once, in contiguous block-aligned ranges;
* shard exchange (in-process shards, then Ray actors) is bit-identical to the
  single-process kernel for 1-4 workers on ring, grid, small-world and scale-free graphs;
* a worker killed mid-run is recovered from the last checkpoint with a bit-identical result;
* a stopped driver is resumed from its work folder with a bit-identical result;
* a run against an existing cluster (started by ``.ci/run``) equals the in-process run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import assert_same_run

from tatonnet.cli import run
from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.partition import partition, shard_ranges
from tatonnet.distributed.runner import DriverStopped, RunOptions, run_scenario, save_run_config
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import build_network
from tatonnet.environment.ordering import locality_order, reorder
from tatonnet.environment.scenario import load_scenario
from tatonnet.environment.tatonnement import kernel
from tatonnet.results.output import claim_new

ROOT = Path(__file__).resolve().parent.parent
N = 4 * kernel.BLOCK + 300  # enough blocks for 4 shards
GRAPHS = {
    "ring": {},
    "grid": {},
    "small-world": {"k": 10, "p": 0.1},
    "scale-free": {"m": 3},
}


def _scenario(graph: str, **overrides):
    base = load_scenario("default").with_overrides(agents=N, graph=graph, rounds=40, **overrides)
    params = {"kind": graph, **GRAPHS[graph]}
    data = base.model_dump()
    data["network"].update(params)
    return type(base).model_validate(data)


def _run_model(scenario, engine=None, rounds: int = 25):
    model = MarketModel(scenario, engine=engine, mesa_agents=False)
    history = []
    for _ in range(rounds):
        model.step()
        m = model.metrics
        history.append((m.excess.copy(), m.mean_price.copy(), m.log_min.copy(), m.log_max.copy()))
    return model, history


@functools.cache
def _reference(graph: str):
    """The single-process model of ``_scenario(graph)`` after 25 rounds and its history,
    computed once per graph (the shard tests compare every shard count with it; the
    model is only read)."""
    return _run_model(_scenario(graph))


def _same(history_a, history_b) -> bool:
    return all(
        all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        for a, b in zip(history_a, history_b, strict=True)
    )


# ---- partitioning ---------------------------------------------------------------------------
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_partition_covers_every_agent_once(graph, k):
    net = build_network(graph, N, seed=1, **GRAPHS[graph])
    part = partition(net, k)
    owned = np.concatenate([np.arange(a, b) for a, b in part.ranges])
    np.testing.assert_array_equal(owned, np.arange(N))  # each id once, in order
    assert all(a % kernel.BLOCK == 0 for a, _ in part.ranges)
    blocks = [kernel.n_blocks(b) - a // kernel.BLOCK for a, b in part.ranges]
    assert max(blocks) - min(blocks) <= 1 and sum(blocks) == kernel.n_blocks(N)
    G = net.to_networkx()
    owner = part.owner(np.arange(N))
    brute = sum(owner[u] != owner[v] for u, v in G.edges)
    assert part.edge_cut == brute
    assert part.n_edges == G.number_of_edges()


def test_more_workers_than_blocks_is_refused():
    with pytest.raises(ValueError, match="blocks"):
        shard_ranges(kernel.BLOCK + 1, 3)


@pytest.mark.parametrize("graph", ["random-geometric", "small-world"])
def test_locality_order_is_a_relabelling_that_cuts_no_worse(graph):
    params = {"k": 30} if graph == "random-geometric" else GRAPHS[graph]
    net = build_network(graph, N, seed=2, **params)
    order, method = locality_order(net, seed=0)
    np.testing.assert_array_equal(np.sort(order), np.arange(N))
    new = reorder(net, order)
    # the same graph under the relabelling: edge sets correspond exactly
    rank = np.empty(N, dtype=int)
    rank[order] = np.arange(N)
    old_edges = {tuple(sorted((rank[u], rank[v]))) for u, v in net.to_networkx().edges}
    assert old_edges == {tuple(sorted(e)) for e in new.to_networkx().edges}
    assert partition(new, 4).edge_cut <= partition(net, 4).edge_cut
    if graph == "random-geometric":  # random node order: a locality order must help a lot
        assert method != "generator"
        assert partition(new, 4).edge_cut < 0.5 * partition(net, 4).edge_cut


# ---- in-process shards = single-process kernel ---------------------------------------------
@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_in_process_shards_equal_the_kernel(graph, k):
    scenario = _scenario(graph)
    ref, ref_history = _reference(graph)
    engine = functools.partial(ShardEngine, n_shards=k, use_ray=False)
    model, history = _run_model(scenario, engine)
    assert _same(ref_history, history)
    np.testing.assert_array_equal(model.prices(), ref.prices())
    assert model.engine.partition.n_shards == k


@pytest.mark.parametrize("signal", ["local"])
@pytest.mark.parametrize("rule", ["additive", "multiplicative"])
def test_in_process_shards_equal_the_kernel_for_other_rules(rule, signal):
    step = {"additive": 0.02, "multiplicative": 0.05}[rule]
    scenario = _scenario("small-world", rule=rule, step_size=step, signal=signal)
    _, ref_history = _run_model(scenario)
    _, history = _run_model(scenario, functools.partial(ShardEngine, n_shards=3, use_ray=False))
    assert _same(ref_history, history)


def test_central_shards_equal_the_central_auctioneer():
    scenario = load_scenario("scarf").with_overrides(agents=N, graph="central", rounds=60)
    _, ref_history = _run_model(scenario, rounds=60)
    _, history = _run_model(
        scenario, functools.partial(ShardEngine, n_shards=4, use_ray=False), rounds=60
    )
    assert _same(ref_history, history)


def test_in_process_shard_resume_equals_uninterrupted_run(tmp_path):
    scenario = _scenario("small-world").with_overrides(rounds=60)
    fault_free = run_scenario(scenario, RunOptions(workers=1, progress=False, reference=False))
    options = RunOptions(workers=1, checkpoint_every=10, progress=False, reference=False)
    work = _interrupted_run(tmp_path, scenario, options, 35)
    assert (work / "checkpoints" / "round-000000030" / "COMPLETE").exists()
    resumed = run_scenario(scenario, options, work, resume=True)
    assert resumed.summary["resumed_from_round"] == 30
    assert_same_run(fault_free, resumed)


def _interrupted_run(tmp_path, scenario, options, stop_after_round):
    """A run whose driver stops after ``stop_after_round``: its work folder, as --resume finds it."""
    with claim_new(tmp_path / "out", "run") as claim:  # the marked work folder of a run
        work = claim.work
        save_run_config(work, scenario, options, run_id=claim.run_id)
    with pytest.raises(DriverStopped):
        stopping = dataclasses.replace(options, stop_after_round=stop_after_round)
        run_scenario(scenario, stopping, work)
    return work


# ---- Ray ------------------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.parametrize("graph, workers", [("small-world", (2, 4)), ("scale-free", (3,))])
def test_ray_workers_are_bit_identical_to_one_process(local_ray, graph, workers):
    """2, 3 and 4 Ray workers over the two graphs (each worker count once: an actor group
    costs seconds; the in-process shard tests run every count on every graph)."""
    scenario = _scenario(graph)
    ref, ref_history = _reference(graph)
    for k in workers:
        engine = functools.partial(ShardEngine, n_shards=k, use_ray=True)
        model, history = _run_model(scenario, engine)
        assert _same(ref_history, history), k
        np.testing.assert_array_equal(model.prices(), ref.prices())
        i = N - 7
        np.testing.assert_array_equal(model.agent_prices(i), ref.agent_prices(i))
        assert model.engine.bytes_per_round > 0
        model.engine.shutdown()


@pytest.mark.ray
def test_killed_worker_is_recovered_bit_identically(local_ray, tmp_path):
    scenario = _scenario("small-world").with_overrides(rounds=60)
    fault_free = run_scenario(scenario, RunOptions(workers=0, progress=False, reference=False))
    work = tmp_path / ".out.partial"
    work.mkdir()
    options = RunOptions(
        workers=3, checkpoint_every=10, progress=False, reference=False, kill_worker_at_round=25
    )
    recovered = run_scenario(scenario, options, work)
    assert recovered.summary["worker_recoveries"] == 1
    assert_same_run(fault_free, recovered)
    recovered.model.engine.shutdown()


@pytest.mark.ray
def test_stopped_driver_resumes_bit_identically_on_ray(local_ray, tmp_path):
    scenario = _scenario("scale-free").with_overrides(rounds=50)
    fault_free = run_scenario(scenario, RunOptions(workers=0, progress=False, reference=False))
    options = RunOptions(workers=2, checkpoint_every=20, progress=False, reference=False)
    work = _interrupted_run(tmp_path, scenario, options, 30)
    resumed = run_scenario(scenario, options, work, resume=True)
    assert resumed.summary["resumed_from_round"] == 20
    assert_same_run(fault_free, resumed)
    resumed.model.engine.shutdown()


# ---- the command line ------------------------------------------------------------------------
def _cli(*args, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip


def test_unreachable_cluster_is_a_one_line_error(tmp_path):
    out = tmp_path / "out"
    proc = _cli("--address", "127.0.0.1:9", "--workers", "2", "--agents", "5000", "--out", out,
                "--quiet")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Ray cluster at 127.0.0.1:9" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_address_auto_is_refused(tmp_path):
    proc = _cli("--address", "auto", "--agents", "5000", "--out", tmp_path / "o", "--quiet")
    assert proc.returncode == 2
    assert "--address auto is refused" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("builder", ["driver", "shards"])
def test_cli_resume_continues_an_interrupted_run(tmp_path, capsys, builder):
    """A driver that died leaves its work folder; --resume finishes the same result
    (``shards``: the resumed shard builds its rows again and restores them)."""
    args = ["--agents", N, "--rounds", 60, "--workers", 1, "--checkpoint-every", 10,
            "--no-reference", "--quiet", "--builder", builder]  # fmt: skip
    ref = tmp_path / "ref"
    assert run.main([str(a) for a in [*args, "--out", ref]]) == 0
    out = tmp_path / "out"
    scenario = load_scenario("default").with_overrides(agents=N, rounds=60, builder=builder)
    options = RunOptions(workers=1, checkpoint_every=10, progress=False, reference=False)
    work = _interrupted_run(tmp_path, scenario, options, 45)
    assert run.main(["--resume", str(out), "--quiet"]) == 0
    assert not work.exists()
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert b["resumed_from_round"] == 40
    for key in ("rounds", "prices", "excess_demand", "price_dispersion", "status"):
        assert a[key] == b[key], key
    assert pq.read_table(ref / "agents").equals(pq.read_table(out / "agents"))
    assert pq.read_table(ref / "metrics.parquet").equals(pq.read_table(out / "metrics.parquet"))


@pytest.mark.ray
@pytest.mark.skipif(
    not os.environ.get("TATONNET_TEST_CLUSTER"),
    reason="no Ray cluster to join (.ci/run starts one and sets TATONNET_TEST_CLUSTER)",
)
@pytest.mark.parametrize("builder", ["driver", "shards"])
def test_run_on_existing_cluster_equals_in_process(tmp_path, builder):
    """``shards``: the workers on the cluster's two nodes draw their own rows."""
    address = os.environ["TATONNET_TEST_CLUSTER"]
    common = ["--agents", N, "--rounds", 80, "--seed", 9, "--no-reference", "--quiet",
              "--builder", builder]  # fmt: skip
    local = _cli(*common, "--workers", 0, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    remote = _cli(*common, "--workers", 3, "--address", address, "--out", tmp_path / "cluster")
    assert remote.returncode == 0, remote.stderr
    a = json.loads((tmp_path / "local" / "summary.json").read_text())
    b = json.loads((tmp_path / "cluster" / "summary.json").read_text())
    assert b["engine"].startswith(f"ray cluster at {address}")
    for key in ("rounds", "prices", "excess_demand_per_good", "price_dispersion", "status"):
        assert a[key] == b[key], key
    ta = pq.read_table(tmp_path / "local" / "agents").sort_by("id")
    tb = pq.read_table(tmp_path / "cluster" / "agents").sort_by("id")
    assert ta.equals(tb)
    if builder == "shards":  # the shards wrote the edges they hold: the same graph
        edges = pq.read_table(tmp_path / "cluster" / "edges").sort_by([("source", "ascending"),
                                                                      ("target", "ascending")])
        assert pq.read_table(tmp_path / "local" / "edges.parquet").equals(edges)


@pytest.mark.parametrize("graph", ["scale-free", "random-geometric", "small-world"])
def test_network_build_is_reproducible(graph):
    """The locality order decides who neighbours whom: it must not vary between builds
    (METIS did, under load, and was dropped for that)."""
    from tatonnet.environment.scenario import build_network_for

    params = {"k": 30} if graph == "random-geometric" else GRAPHS[graph]
    data = load_scenario("default").with_overrides(agents=N).model_dump()
    data["network"].update({"kind": graph, **params})
    scenario = type(load_scenario("default")).model_validate(data)
    first, second = build_network_for(scenario), build_network_for(scenario)
    np.testing.assert_array_equal(first.indptr, second.indptr)
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.mixing, second.mixing)
