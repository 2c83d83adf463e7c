"""``run.py --trade`` on every engine: the same bits, recovery, resume, the invariants.

* ``--workers 1`` (one in-process shard), ``--workers 3`` (Ray shards, two-phase settlement
  across their boundaries) and ``--workers 2`` on the CI's two-node cluster write the same
  ``summary.json`` (but for the engine's own fields), per-round metrics, per-agent table
  and per-edge table as ``--workers 0``;
* a killed Ray trade worker is recovered from the last checkpoint, bit-identically;
* a run stopped after a checkpoint continues with ``--resume`` to the same result;
* on Ray shards, every round conserves every good (holdings plus escrow), keeps holdings
  non-negative and makes only trades that raise both utilities (hypothesis, the checks of
  ``test_trade.check_round``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trade import check_round, random_economy, random_graph

from tatonnet.cli.run import main
from tatonnet.distributed.trade_shard import ShardedTrade
from tatonnet.environment.trade import bilateral as tr

SCENARIO = "trade-core-periphery"  # 200 agents, 67 reduction blocks
#: summary keys that say how the run ran, not what it found
RAN = ("engine", "engine_reason", "workers", "worker_recoveries", "resumed_from_round",
       "setup_seconds", "round_seconds", "run_id", "out", "versions")  # fmt: skip


def _run(out, *extra) -> int:
    return main(["--trade", "--scenario", SCENARIO, "--rounds", "40", "--quiet",
                 "--out", str(out), *map(str, extra)])  # fmt: skip


def _results(folder):
    summary = json.loads((folder / "summary.json").read_text())
    found = {k: v for k, v in summary.items() if k not in RAN}
    tables = [pq.read_table(folder / f"{name}.parquet")
              for name in ("trade_metrics", "trade_agents", "edges")]  # fmt: skip
    return summary, found, tables


def assert_same(reference, folder) -> dict:
    _, found_a, tables_a = _results(reference)
    summary, found_b, tables_b = _results(folder)
    assert found_a == found_b
    for a, b in zip(tables_a, tables_b, strict=True):
        assert a.equals(b)
    return summary


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("trade") / "in-process"
    assert _run(out, "--workers", 0) == 0
    return out


def test_one_in_process_shard_equals_in_process(reference, tmp_path, capsys):
    assert _run(tmp_path / "w1", "--workers", 1) == 0
    assert "engine:   in-process trade shard (--workers 1)" in capsys.readouterr().out
    summary = assert_same(reference, tmp_path / "w1")
    assert summary["engine"] == "in-process shard" and summary["worker_recoveries"] == 0


@pytest.mark.ray
def test_ray_workers_equal_in_process_and_a_killed_worker_recovers(reference, tmp_path):
    # two workers: on the CI's cluster, below (each local Ray costs seconds of CI time)
    assert _run(tmp_path / "w3", "--workers", 3, "--checkpoint-every", 10,
                "--kill-worker-at-round", 12) == 0  # fmt: skip
    summary = assert_same(reference, tmp_path / "w3")
    assert summary["workers"] == 3 and summary["worker_recoveries"] == 1


def test_stopped_run_resumes_to_the_same_result(reference, tmp_path, monkeypatch, capsys):
    real_step = ShardedTrade.step

    def stop_at_25(self):
        if self.round == 25:
            raise KeyboardInterrupt  # as signals.guarded turns SIGINT into
        return real_step(self)

    monkeypatch.setattr(ShardedTrade, "step", stop_at_25)
    out = tmp_path / "stopped"
    assert _run(out, "--workers", 1, "--checkpoint-every", 10) != 0
    assert f"continue with --resume {out}" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / ".stopped.partial" / "checkpoints").is_dir()
    monkeypatch.setattr(ShardedTrade, "step", real_step)
    assert main(["--resume", str(out), "--quiet"]) == 0  # --trade need not be repeated
    summary = assert_same(reference, out)
    assert summary["resumed_from_round"] == 20


@pytest.mark.ray
@pytest.mark.skipif(
    not os.environ.get("TATONNET_TEST_CLUSTER"),
    reason="no Ray cluster to join (.ci/run starts one and sets TATONNET_TEST_CLUSTER)",
)
def test_trade_on_existing_cluster_equals_in_process(reference, tmp_path):
    address = os.environ["TATONNET_TEST_CLUSTER"]
    assert _run(tmp_path / "cluster", "--workers", 2, "--address", address) == 0
    summary = assert_same(reference, tmp_path / "cluster")
    assert summary["engine"].startswith(f"ray cluster at {address}")


@pytest.mark.ray
@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n=st.integers(8, 30),
       medium=st.sampled_from(["barter", "numeraire"]))  # fmt: skip
def test_every_ray_round_conserves_and_every_trade_is_rational(local_ray, seed, n, medium):
    economy = random_economy(seed, n, 3)
    network = random_graph(seed, n)
    config = tr.TradeConfig(seed=seed, medium=medium)
    engine = ShardedTrade(economy, network, config, 3, use_ray=True)
    try:
        before, _ = engine.gather()
        trades = 0
        for _ in range(5):
            engine.step()
            after, log = engine.gather()
            assert np.allclose(np.sum(engine._call("ledger"), axis=0), economy.supply,
                               rtol=1e-12, atol=1e-12)  # fmt: skip
            trades += check_round(economy, before, after, log[log[:, 0] == after.round - 1])
            before = after
        assert trades > 0
    finally:
        engine.close()
