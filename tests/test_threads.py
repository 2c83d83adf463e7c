"""Node-sized Ray workers: any worker and thread count gives the same bits, and ``auto``.

* in-process (``--workers 0``) = one Ray worker with 2 threads (rounds batched per remote
  call) = two Ray workers with 1 thread: prices, per-round metrics and agents tables;
* a batched one-worker run stops at the very round the in-process run stops at (a verdict
  in the middle of a batch), and resumes from a checkpoint bit-identically;
* :meth:`Shard.run_rounds` equals round-by-round stepping and stops at the verdict round;
* ``--workers auto`` picks this process on one machine (whatever the economy's size), one
  worker per node with an address; explicit ``--workers K`` splits the CPUs given to the
  run over the workers.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest

from tatonnet.cli import run
from tatonnet.distributed import cluster, runner
from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.runner import (
    AUTO_SYNC_EVERY,
    DriverStopped,
    RunConfigError,
    RunOptions,
    object_store_bytes,
    resolve_options,
    run_scenario,
    save_run_config,
)
from tatonnet.distributed.shard import Shard
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import load_scenario
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.status import check_stop
from tatonnet.results.output import agent_table, claim_new

N = 3 * kernel.BLOCK + 100


def _scenario(**overrides):
    return load_scenario("default").with_overrides(agents=N, **overrides)


def _options(**kw):
    return RunOptions(progress=False, reference=False, **kw)


def _assert_same(a, b):
    assert a.summary["rounds"] == b.summary["rounds"]
    for key in ("prices", "excess_demand_per_good", "price_dispersion", "status", "reason"):
        assert a.summary[key] == b.summary[key], key
    np.testing.assert_array_equal(a.model.prices(), b.model.prices())
    da = a.model.datacollector.get_model_vars_dataframe()
    db = b.model.datacollector.get_model_vars_dataframe()
    assert da.equals(db)


def _stop_and_resume(scenario, options, work, ref):
    """A driver that dies after round 30 (checkpoint at 20); resumed, it ends like ``ref``."""
    with pytest.raises(DriverStopped):
        run_scenario(scenario, dataclasses.replace(options, stop_after_round=30), work)
    resumed = run_scenario(scenario, options, work, resume=True)
    assert resumed.summary["resumed_from_round"] == 20
    _assert_same(ref, resumed)
    resumed.model.engine.shutdown()


def _agents_table(result, folder):
    """The run's agents table, as ``write_results`` writes it (shards write parts)."""
    if result.model.engine is None:
        return agent_table(result.model)
    folder.mkdir(parents=True)
    result.model.engine.write_agents(folder / "agents")
    return pq.read_table(folder / "agents").sort_by("id")


# ---- without Ray ---------------------------------------------------------------------------
def test_run_rounds_equals_stepping_and_stops_at_the_verdict():
    scenario = load_scenario("cobb-douglas").with_overrides(agents=500, graph="ring")
    model = MarketModel(scenario, engine=None, mesa_agents=False)
    engine = ShardEngine(model.economy, model.network, model.dynamics.rule, "tracking",
                         np.ones(model.economy.n_goods), model.group, 1, use_ray=False)  # fmt: skip
    spec = engine.specs[0]
    a = Shard(spec, np.ones(model.economy.n_goods))
    b = Shard(spec, np.ones(model.economy.n_goods))
    stepped = np.stack([a.step() for _ in range(30)])
    batched = b.run_rounds(30, engine.supply, engine.n_agents, None)
    np.testing.assert_array_equal(stepped, batched)
    # a tolerance reached at some round r: the batch ends there, not at 30
    c = Shard(spec, np.ones(model.economy.n_goods))
    from tatonnet.environment.tatonnement.dynamics import reduce_partials

    ms = [reduce_partials(r + 1, p, engine.supply, engine.n_agents) for r, p in enumerate(stepped)]
    tol = sorted(max(m.excess_demand, m.price_dispersion) for m in ms)[3]  # met at some round
    first = next(
        r for r, m in enumerate(ms, 1)
        if check_stop(m.excess_demand, m.price_dispersion, m.log_min, m.log_max, tol)
    )  # fmt: skip
    out = c.run_rounds(30, engine.supply, engine.n_agents, tol)
    assert out.shape[0] == first < 30
    assert c.round == first


def test_auto_runs_in_process_on_one_machine():
    o = resolve_options(_options(), _scenario(), cpus=2)
    assert (o.workers, o.use_ray) == (0, False)
    assert o.reason == f"--workers auto: one machine, {N:,} agents"


def test_auto_keeps_a_large_economy_in_process():
    """A Ray worker would hold a copy of the state beside the driver's economy: no gain."""
    scenario = _scenario()
    o = resolve_options(_options(), scenario, cpus=2)
    assert (o.workers, o.use_ray) == (0, False)


def test_auto_with_an_address_is_one_worker_per_node():
    o = resolve_options(_options(address="127.0.0.1:1"), _scenario(), connect=False, cpus=2)
    assert o.use_ray and o.workers == 1 and "one worker per node" in o.reason


def test_auto_keeps_own_dynamics_in_process():
    o = resolve_options(_options(), _scenario(rule="extragradient"), cpus=2)
    assert (o.workers, o.use_ray) == (0, False)


@pytest.mark.parametrize(
    ("workers", "cpus", "threads"), [(2, 2, 1), (1, 2, 2), (2, 8, 4), (3, 2, 1)]
)
def test_explicit_workers_split_the_cpus(workers, cpus, threads):
    o = resolve_options(_options(workers=workers), _scenario(), cpus=cpus)
    assert o.use_ray == (workers >= 2)
    if o.use_ray:
        assert o.threads == threads and o.reason == f"--workers {workers} --threads {threads}"
    else:
        assert o.threads is None and o.reason == "--workers 1"


def test_threads_cap_the_in_process_run_without_changing_results():
    scenario = _scenario(rounds=40)
    a = run_scenario(scenario, _options(workers=0))
    b = run_scenario(scenario, _options(workers=0, threads=1))
    _assert_same(a, b)
    assert b.summary["threads"] == 1 and b.summary["setup_seconds"] > 0
    assert b.summary["round_seconds"] > 0


def test_cli_prints_the_engine_first(tmp_path, capsys):
    """Runs before the module's Ray starts: the command line shuts Ray down when it ends."""
    argv = ["--agents", str(N), "--rounds", "20", "--no-reference", "--quiet"]
    assert run.main([*argv, "--out", str(tmp_path / "a")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"engine:   in-process (--workers auto: one machine, {N:,} agents)"
    assert any(line.startswith("speed:") and "set-up" in line for line in lines)


# ---- on a local Ray ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    cluster.connect(2, threads=2)  # a private local Ray with 4 CPUs
    yield
    cluster.shutdown()


@pytest.fixture(scope="module")
def converging():
    """A run that converges (the verdict falls inside a batch), and its in-process result."""
    scenario = load_scenario("cobb-douglas").with_overrides(agents=N, rounds=3000, tol=1e-3)
    ref = run_scenario(scenario, _options(workers=0))
    assert ref.summary["status"] == "converged" and ref.summary["rounds"] % 7  # 304 rounds
    return scenario, ref


@pytest.mark.ray
def test_any_worker_and_thread_count_gives_the_same_bits(local_ray, tmp_path):
    """One worker of 2 threads, two of 1 (``--sync-every auto`` and 1), and in-process.

    The module's Ray has 4 CPUs: each run's workers are shut down before the next starts.
    """
    scenario = _scenario(rounds=60)
    ref = run_scenario(scenario, _options(workers=0))
    ref_table = _agents_table(ref, tmp_path / "ref")
    configs = {
        "one": (dict(workers=1, threads=2, ray=True), True, 1, [2]),
        "two": (dict(workers=2, threads=1), True, AUTO_SYNC_EVERY, [1, 1]),
        "step": (dict(workers=2, threads=1, sync_every=1), False, 1, [1, 1]),
    }
    for name, (options, batched, sync_every, threads) in configs.items():
        result = run_scenario(scenario, _options(**options))
        engine = result.model.engine
        try:
            assert engine.batched == batched and engine.worker_threads == threads, name
            assert result.summary["sync_every"] == sync_every, name
            if name != "one":  # the rate leaves out the first round and the rest of its batch
                assert result.summary["timed_rounds"] == 60 - sync_every, name
            _assert_same(ref, result)
            assert _agents_table(result, tmp_path / name).equals(ref_table), name
        finally:
            engine.shutdown()
        if name == "one":
            assert result.summary["engine_reason"] == "--workers 1 --threads 2, Ray"


@pytest.mark.ray
def test_batched_worker_stops_at_the_same_round(local_ray, converging):
    """A run that converges: the verdict falls inside a batch of the one-worker run (the
    converging run of the two-worker tests below, its in-process result computed once)."""
    scenario, ref = converging
    one = run_scenario(scenario, _options(workers=1, threads=2, ray=True))
    _assert_same(ref, one)
    assert one.model.engine.pending_rounds == 0
    one.model.engine.shutdown()


@pytest.fixture(scope="module")
def fifty_rounds():
    """The 50-round default economy and its in-process result (two tests resume it)."""
    scenario = _scenario(rounds=50)
    return scenario, run_scenario(scenario, _options(workers=0))


@pytest.mark.ray
def test_batched_worker_resumes_bit_identically(local_ray, fifty_rounds, tmp_path):
    scenario, ref = fifty_rounds
    options = _options(workers=1, threads=2, ray=True, checkpoint_every=20)
    with claim_new(tmp_path / "out", "run") as claim:
        work = claim.work
        save_run_config(work, scenario, options, run_id=claim.run_id)
    _stop_and_resume(scenario, options, work, ref)


# ---- two workers: rounds submitted in batches (--sync-every), shard-to-shard exchange ----
@pytest.mark.ray
@pytest.mark.parametrize(("exchange", "sync_every"), [("driver", 7), ("peer", 7)])
def test_two_workers_stop_at_the_same_round_in_batches(local_ray, converging, exchange,
                                                        sync_every):  # fmt: skip
    scenario, ref = converging
    two = run_scenario(
        scenario, _options(workers=2, threads=1, exchange=exchange, sync_every=sync_every)
    )
    engine = two.model.engine
    assert engine.batched and engine.peer == (exchange == "peer") and engine.pending_rounds == 0
    assert (two.summary["exchange"], two.summary["sync_every"]) == (exchange, sync_every)
    _assert_same(ref, two)
    engine.shutdown()


@pytest.mark.ray
def test_shard_to_shard_exchange_recovers_and_resumes_bit_identically(local_ray, fifty_rounds,
                                                                     tmp_path):  # fmt: skip
    scenario, ref = fifty_rounds
    options = _options(workers=2, threads=1, exchange="peer", sync_every=4, checkpoint_every=20)
    with claim_new(tmp_path / "out", "run") as claim:
        work = claim.work
        save_run_config(work, scenario, options, run_id=claim.run_id)
    killed = run_scenario(scenario, dataclasses.replace(options, kill_worker_at_round=27), work)
    assert killed.model.engine.recoveries == 1
    _assert_same(ref, killed)
    killed.model.engine.shutdown()
    _stop_and_resume(scenario, options, work, ref)


def test_local_object_store_is_sized_to_the_economy(monkeypatch):
    """Four rounds of every row's boundary (4 n g float64), within [512 MiB, memory / 4]."""
    assert object_store_bytes(_scenario()) == cluster.OBJECT_STORE_BYTES
    big = load_scenario("default").with_overrides(agents=10_000_000)
    monkeypatch.setattr(runner, "available_memory", lambda: 64 * 2**30)
    assert object_store_bytes(big) == 4 * 10_000_000 * big.n_goods * 8
    monkeypatch.setattr(runner, "available_memory", lambda: 4 * 2**30)
    assert object_store_bytes(big) == 2**30


def test_sync_every_and_exchange_are_checked():
    scenario = _scenario()
    for bad, match in (({"sync_every": 0}, "--sync-every 0"), ({"exchange": "x"}, "--exchange")):
        with pytest.raises(RunConfigError, match=match):
            _options(workers=2, **bad).check(scenario)
