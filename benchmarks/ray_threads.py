"""Node-sized Ray workers against the in-process kernel, and the default run's wall time.

Part 1 (``--n``, default 10^6 agents; ``--rounds`` timed rounds after one warm-up round):
the economy and graph of ``ray_scale.py`` (5 goods, CES sigma = 2, small world k = 10,
p = 0.1, entropic rule, gradient tracking), run side by side, repeats interleaved
(A B C A B C ...), medians of ``--repeats``:

* ``inproc-2t``  — :class:`NetworkTatonnement` in this process on 2 numba threads;
* ``ray-1x2``    — :class:`ShardEngine` with one Ray worker of 2 threads (``num_cpus=2``);
  planned (:meth:`ShardEngine.plan`, tol 0), so rounds run in batches per remote call;
* ``ray-2x1``    — two Ray workers of 1 thread each at the command line's default
  ``--sync-every auto`` (:data:`~tatonnet.distributed.runner.AUTO_SYNC_EVERY` rounds per
  driver synchronisation);
* ``ray-2x1-sync1`` — the same with one driver round trip per round (the default before);
* with ``--graph``, the same two over a Ray Compiled Graph (``--exchange peer``).

Both Ray configurations share one private local Ray of 2 CPUs (:func:`cluster.connect`).
Where a round's time goes, per round: each worker's ``receive`` / kernel / ``outgoing``
(:meth:`ShardEngine.shard_timings`), the driver's submit / wait / reduce
(``ShardEngine.seconds``) and the rest (orchestration: Ray's task dispatch, the object
store, waiting for the slower worker). ``--breakdown-n`` (default 10^4) repeats the
breakdown at a small economy. Final metrics and prices must equal the in-process run's bit
for bit.

Part 2: ``tatonnet --quiet --no-reference`` (the default, ``--workers auto``) against
``tatonnet --workers 0`` (and the old default ``--workers 2``), as subprocesses, medians of
``--repeats``; each run's ``summary.json`` gives its set-up and round seconds.

    .venv/bin/python benchmarks/ray_threads.py            # ~5 min on the 2-core machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from common import RESULTS, ROOT, git_info, load_average, machine_info, summary, write_report
from ray_scale import make_economy, make_network
from ray_scale_runs import same_metrics

from tatonnet.agents.rules import make_rule
from tatonnet.distributed import cluster
from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.runner import AUTO_SYNC_EVERY
from tatonnet.environment.tatonnement import dynamics
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_inproc(economy, network, rule, p0, rounds: int, threads: int) -> dict:
    saved, dynamics.MAX_THREADS = dynamics.MAX_THREADS, threads
    try:
        dyn = NetworkTatonnement(economy, network, rule, "tracking")
        state = dyn.init_state(p0)
        state, metrics = dyn.step(state)  # warm-up
        spare = None
        t0 = time.perf_counter()
        for _ in range(rounds):
            new, metrics = dyn.step(state, spare)
            spare, state = state, new
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "metrics": metrics, "prices": dyn.prices(state)}
    finally:
        dynamics.MAX_THREADS = saved


def run_ray(economy, network, rule, p0, group, rounds: int, workers: int, threads: int,
            exchange: str = "driver", sync_every: int = 1) -> dict:  # fmt: skip
    t0 = time.perf_counter()
    engine = ShardEngine(economy, network, rule, "tracking", p0, group, workers,
                         use_ray=True, threads=threads, exchange=exchange,
                         sync_every=sync_every)  # fmt: skip
    start_s = time.perf_counter() - t0
    try:
        engine.plan(0.0, rounds + 1)  # tol 0: never stops early; one worker batches rounds
        engine.step()  # warm-up
        shards0 = engine.shard_timings()
        driver0 = dict(engine.seconds)
        t1 = time.perf_counter()
        for _ in range(rounds):
            metrics = engine.step()
        wall = time.perf_counter() - t1
        shards = [
            {k: (b[k] - a[k]) / rounds * 1e3 for k in a}
            for a, b in zip(shards0, engine.shard_timings(), strict=True)
        ]
        driver = {k: (engine.seconds[k] - driver0[k]) / rounds * 1e3 for k in driver0}
        busiest = max(sum(s.values()) for s in shards)
        per_round = wall / rounds * 1e3
        return {
            "wall_s": wall, "start_s": start_s, "metrics": metrics, "prices": engine.prices(),
            "batched": engine.batched, "worker_threads": engine.worker_threads,
            "edge_cut": engine.partition.edge_cut, "bytes_per_round": engine.bytes_per_round,
            "ms_per_round": {
                "round": per_round, "workers": shards, "driver": driver,
                "busiest_worker": busiest, "orchestration": per_round - busiest,
            },
        }  # fmt: skip
    finally:
        engine.shutdown()


def part1(n: int, rounds: int, repeats: int, sync_every=(), graph: bool = False,
          seed: int = 0) -> dict:  # fmt: skip
    log(f"building the economy and graph ({n:,} agents) ...")
    t0 = time.perf_counter()
    economy = make_economy(n, seed)
    network, graph_info = make_network(n, seed, "numpy")
    build_s = time.perf_counter() - t0
    rule = make_rule("entropic", step_size=0.05)
    p0 = np.ones(economy.n_goods)
    group = np.zeros(n, dtype=np.int32)
    configs = {
        "inproc-2t": lambda: run_inproc(economy, network, rule, p0, rounds, 2),
        "ray-1x2": lambda: run_ray(economy, network, rule, p0, group, rounds, 1, 2),
        **{
            f"ray-2x1{kind}{'' if r == AUTO_SYNC_EVERY else f'-sync{r}'}": functools.partial(
                run_ray, economy, network, rule, p0, group, rounds, 2, 1, exchange, r
            )
            for kind, exchange in (("", "driver"), ("-graph", "peer"))
            if graph or exchange == "driver"
            for r in dict.fromkeys((AUTO_SYNC_EVERY, 1, *sync_every))
        },
    }
    t1 = time.perf_counter()
    where = cluster.connect(2)  # 2 CPUs: both 1 x 2 and 2 x 1 fit
    connect_s = time.perf_counter() - t1
    runs = {name: [] for name in configs}
    try:
        for rep in range(repeats):
            for name, fn in configs.items():
                r = fn()
                runs[name].append(r)
                log(f"  n={n:,} {name} repeat {rep + 1}: {r['wall_s']:.2f} s "
                    f"({n * rounds / r['wall_s'] / 1e6:.2f} M agent-rounds/s)")  # fmt: skip
    finally:
        cluster.shutdown()
    ref = runs["inproc-2t"][0]
    out = {"n": n, "rounds": rounds, "repeats": repeats, "build_s": build_s,
           "graph": graph_info, "ray": where, "ray_connect_s": connect_s, "configs": {}}  # fmt: skip
    base = statistics.median(r["wall_s"] for r in runs["inproc-2t"])
    for name, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        entry = {
            "wall_s": summary(r["wall_s"] for r in rs),
            "agent_rounds_per_s": n * rounds / wall,
            "rate_vs_inproc": base / wall,
            "bit_identical": all(
                same_metrics(r["metrics"], ref["metrics"])
                and np.array_equal(r["prices"], ref["prices"])
                for r in rs
            ),
        }
        if name != "inproc-2t":
            mid = sorted(rs, key=lambda r: r["wall_s"])[len(rs) // 2]
            entry.update({k: mid[k] for k in ("batched", "worker_threads", "edge_cut",
                                              "bytes_per_round", "ms_per_round")})  # fmt: skip
            entry["engine_start_s"] = summary(r["start_s"] for r in rs)
        out["configs"][name] = entry
    return out


def part2(repeats: int) -> dict:
    cases = {
        "default (--workers auto)": [],
        "--workers 0": ["--workers", "0"],
        "--workers 2 (the old default)": ["--workers", "2"],
    }
    runs = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for i, (name, extra) in enumerate(cases.items()):
                out = Path(tmp) / f"run-{rep}-{i}"
                cmd = [sys.executable, str(ROOT / "run.py"), "--quiet", "--no-reference",
                       "--out", str(out), *extra]  # fmt: skip
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                wall = time.perf_counter() - t0
                if proc.returncode:
                    raise RuntimeError(f"{cmd}: {proc.stderr[-2000:]}")
                s = json.loads((out / "summary.json").read_text())
                runs[name].append({
                    "process_wall_s": wall, "wall_s": s["wall_seconds"],
                    "setup_s": s["setup_seconds"], "round_s": s["round_seconds"],
                    "rounds": s["rounds"], "engine": s["engine"], "reason": s["engine_reason"],
                    "first_line": proc.stdout.splitlines()[0], "prices": s["prices"],
                })  # fmt: skip
                log(
                    f"  {name} repeat {rep + 1}: {wall:.2f} s (process), "
                    f"set-up {s['setup_seconds']:.2f} s, rounds {s['round_seconds']:.2f} s"
                )
    base = statistics.median(r["process_wall_s"] for r in runs["--workers 0"])
    out = {"repeats": repeats, "cases": {}}
    for name, rs in runs.items():
        wall = statistics.median(r["process_wall_s"] for r in rs)
        out["cases"][name] = {
            "process_wall_s": summary(r["process_wall_s"] for r in rs),
            "setup_s": summary(r["setup_s"] for r in rs),
            "round_s": summary(r["round_s"] for r in rs),
            "vs_workers_0": wall / base,
            "rounds": rs[0]["rounds"], "engine": rs[0]["engine"], "reason": rs[0]["reason"],
            "first_line": rs[0]["first_line"],
            "same_prices": all(r["prices"] == runs["--workers 0"][0]["prices"] for r in rs),
        }  # fmt: skip
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--breakdown-n", type=int, default=10_000)
    ap.add_argument("--breakdown-rounds", type=int, default=300)
    ap.add_argument("--sync-every", type=int, nargs="*", default=[],
                    help="--sync-every values of extra 2 x 1 runs (auto's and 1 always run)")
    ap.add_argument("--graph", action="store_true",
                    help="also run the 2 x 1 configurations over a Compiled Graph")
    ap.add_argument("--skip-default-run", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_threads.json")
    args = ap.parse_args(argv)
    report = {
        "benchmark": "ray_threads",
        "command": " ".join([".venv/bin/python", "benchmarks/ray_threads.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "git": git_info(),
    }
    report["large"] = part1(args.n, args.rounds, args.repeats, args.sync_every, args.graph)
    report["small"] = part1(args.breakdown_n, args.breakdown_rounds, 1, args.sync_every,
                            args.graph)  # fmt: skip
    if not args.skip_default_run:
        report["default_run"] = part2(args.repeats)
    report["numba_threading_layer"] = numba.threading_layer()
    report["load_average_end"] = load_average()
    write_report(args.out, report)
    print(json.dumps({k: report[k] for k in ("large", "small") if k in report}, indent=1,
                     default=lambda o: None)[:4000])  # fmt: skip
    if "default_run" in report:
        print(json.dumps(report["default_run"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
