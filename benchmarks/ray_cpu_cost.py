"""CPU-seconds per agent-round of every process of a Ray run — driver, workers and Ray's
own — at K = 2, 4, 8 one-thread workers (oversubscribed beyond the machine's cores), against
the in-process kernel: an upper bound on the efficiency a larger machine can reach.

The economy and graph of ``ray_scale.py`` (``--agents``, default 10^6; 5 goods, CES sigma =
2, small world k = 10, p = 0.1, entropic rule, gradient tracking). One private local Ray of
``max(--workers)`` CPUs (:func:`tatonnet.distributed.cluster.connect`: loopback only,
512 MiB object store) is up for the whole run, idle during the in-process runs.
Configurations, each ``--warmup`` untimed rounds then ``--rounds`` timed rounds, repeats
interleaved (A B C D A B C D ...), medians of ``--repeats``:

* ``inproc``    — :class:`NetworkTatonnement` in this process on all numba threads (what
  ``tatonnet --workers 0`` runs): the kernel-only reference;
* ``inproc-1t`` — the same on one numba thread (``--no-1t`` skips it);
* ``ray-K``     — :class:`ShardEngine` with K one-thread Ray workers (one ``ray.get`` per
  round), a fresh engine per repeat, its workers gone before the next configuration.

CPU (user + system, from ``/proc/<pid>/stat``; Linux only) is the delta across the timed
rounds of: the driver (this process); each worker (``engine.pids``), split into its main
thread (where the actor's tasks run: receive, kernel, outgoing, (de)serialization) and its
other threads (Ray's core worker: gRPC, object transfers; ``(exited)``: the process's CPU
in no thread alive at the end — threads that ended during the timed rounds, also ones that
started and ended within them — give or take the kernel's rounding of per-thread times),
with its context switches; Ray's own — every other
descendant of this process (gcs_server, raylet, the dashboard, its agents, the autoscaler
monitor, the log monitor, idle pooled workers, the session's reaper). A process that exits
during the timed rounds is lost (counted as ``gone``). ``other_cores``: busy CPU of the
machine (``/proc/stat``) beyond ours, per wall second — other jobs on a shared machine.

Per agent-round: CPU-seconds / (agents x rounds); ``vs_inproc`` = total / the ``inproc``
driver's CPU (each a median over repeats). The workers' kernel wall seconds
(:meth:`ShardEngine.shard_timings`) are recorded too; on an oversubscribed machine they
include time the worker waited for a core. Final metrics and prices must equal the
in-process run's bit for bit.

Driver and workers must run the same code: where other jobs edit the checkout meanwhile,
run against a snapshot (``git archive HEAD | tar -x -C SNAP/tatonnet``, then
``PYTHONPATH=SNAP``; Ray's workers inherit it) and say so with ``--code-label``; the report
records which files driver and workers import.

    .venv/bin/python benchmarks/ray_cpu_cost.py            # ~5 min on the 2-core machine
    .venv/bin/python benchmarks/ray_cpu_cost.py --quick    # 10^5 agents, < 1 min
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from common import RESULTS, ROOT, git_info, load_average, machine_info, summary, write_report
from ray_scale import GOODS, K_DEGREE, P_REWIRE, SIGMA, STEP, make_economy, make_network
from ray_scale_runs import descendants, same_metrics

import tatonnet
from tatonnet.agents.rules import make_rule
from tatonnet.distributed import cluster
from tatonnet.distributed.engine import ShardEngine
from tatonnet.environment.tatonnement import dynamics
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement

HZ = os.sysconf("SC_CLK_TCK")
ECONOMY = {
    "goods": GOODS, "utility": "ces", "sigma": SIGMA, "shares": "dirichlet(1)",
    "endowments": "uniform[0.5, 1.5]", "initial_prices": "all 1",
    "graph": f"watts-strogatz k={K_DEGREE} p={P_REWIRE}, locality-ordered",
    "rule": f"entropic step {STEP}", "signal": "tracking",
}  # fmt: skip
MIB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- /proc CPU times ------------------------------------------------------------------------
def _stat_fields(path: str) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` after the command name (field 3 first)."""
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(start time, utime + stime) of a process in clock ticks, all its threads; None if gone."""
    f = _stat_fields(f"/proc/{pid}/stat")
    return None if f is None else (int(f[19]), int(f[11]) + int(f[12]))


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """{tid: (name, utime + stime)} of a process's threads; the main thread (tid = pid) is
    named ``main``, the others by their ``comm`` (trailing digits dropped)."""
    out = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        name = "main" if tid == pid else comm.rstrip("0123456789") or comm
        out[tid] = (name, int(fields[11]) + int(fields[12]))
    return out


def _thread_delta(a: dict, b: dict) -> dict[str, int]:
    """Ticks by thread name from ``a`` to ``b`` (a thread started meanwhile: all of it)."""
    out: dict[str, int] = {}
    for tid, (name, ticks) in b.items():
        out[name] = out.get(name, 0) + ticks - a.get(tid, (name, 0))[1]
    return out


def label(pid: int, comm: str) -> str:
    """A short name: the binary, ``ray::...``, or a Python process's script."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return comm
    if not argv:
        return comm
    if argv[0].startswith("ray::"):
        return argv[0].split()[0]
    if "python" in Path(argv[0]).name:
        script = next((a for a in argv[1:] if a.endswith(".py")), None)
        return Path(script).name if script else comm
    return Path(argv[0]).name


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches of a process so far; (0, 0) if gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.endswith("ctxt_switches"):
                    out[key] = int(value)
    except OSError:
        pass
    return out.get("voluntary_ctxt_switches", 0), out.get("nonvoluntary_ctxt_switches", 0)


def machine_busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq


class Snapshot:
    """CPU ticks of the driver, the workers (whole and by thread) and every other
    descendant of the driver, and the workers' context switches, at one moment."""

    def __init__(self, workers: list[int]):
        self.driver = os.getpid()
        self.workers = list(workers)
        self.busy = machine_busy_ticks()
        self.t = time.perf_counter()
        self.procs: dict[tuple[int, int], tuple[str, int]] = {}  # (pid, start): (label, ticks)
        for pid, comm in [(self.driver, "driver")] + descendants(self.driver):
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self.procs[(pid, ticks[0])] = (label(pid, comm), ticks[1])
        self.threads = {pid: thread_ticks(pid) for pid in [self.driver, *self.workers]}
        self.switches = [context_switches(pid) for pid in self.workers]


def cpu_delta(a: Snapshot, b: Snapshot) -> dict:
    """CPU seconds from ``a`` to ``b``: driver, workers, Ray's own (by name), machine load."""
    wall = b.t - a.t
    driver = workers = ray = 0
    per_worker, by_name = {}, {}
    for key, (name, ticks) in b.procs.items():
        d = ticks - a.procs.get(key, (name, 0))[1]  # a process started meanwhile: all of it
        pid = key[0]
        if pid == a.driver:
            driver += d
        elif pid in a.workers:
            workers += d
            per_worker[pid] = d
        else:
            ray += d
            by_name[name] = by_name.get(name, 0) + d
    gone = [a.procs[k][0] for k in a.procs.keys() - b.procs.keys()]
    threads = {p: _thread_delta(a.threads[p], b.threads[p]) for p in a.threads}
    threads[a.driver]["(exited)"] = driver - sum(threads[a.driver].values())
    worker_threads: dict[str, int] = {}
    for p in a.workers:
        threads[p]["(exited)"] = per_worker.get(p, 0) - sum(threads[p].values())
        for name, d in threads[p].items():
            worker_threads[name] = worker_threads.get(name, 0) + d
    workers_main = worker_threads.get("main", 0)
    total = driver + workers + ray
    busy = b.busy - a.busy
    s = 1 / HZ
    return {
        "wall_s": wall,
        "driver": driver * s,
        "driver_main": threads[a.driver].get("main", 0) * s,
        "workers": workers * s,
        "workers_main": workers_main * s,
        "workers_other": (workers - workers_main) * s,
        "ray_own": ray * s,
        "total": total * s,
        "per_worker": [per_worker.get(p, 0) * s for p in a.workers],
        "ray_by_name": {k: v * s for k, v in sorted(by_name.items())},
        "driver_threads": {k: v * s for k, v in sorted(threads[a.driver].items())},
        "worker_threads": {k: v * s for k, v in sorted(worker_threads.items())},
        "gone": gone,
        "worker_switches": {
            kind: sum(sb[i] - sa[i] for sa, sb in zip(a.switches, b.switches, strict=True))
            for i, kind in enumerate(("voluntary", "involuntary"))
        },
        "cores": total * s / wall,
        "other_cores": max(0.0, (busy - total) * s / wall),
    }


# ---- one configuration ----------------------------------------------------------------------
def run_inproc(economy, network, rule, p0, rounds: int, warmup: int, threads: int | None) -> dict:
    saved, dynamics.MAX_THREADS = dynamics.MAX_THREADS, threads
    try:
        dyn = NetworkTatonnement(economy, network, rule, "tracking")
        state, spare = dyn.init_state(p0), None
        for _ in range(warmup):
            new, metrics = dyn.step(state, spare)
            spare, state = state, new
        a = Snapshot([])
        for _ in range(rounds):
            new, metrics = dyn.step(state, spare)
            spare, state = state, new
        b = Snapshot([])
        return {"cpu": cpu_delta(a, b), "metrics": metrics, "prices": dyn.prices(state)}
    finally:
        dynamics.MAX_THREADS = saved


def wait_gone(pids: list[int], timeout: float = 15.0) -> bool:
    """Wait until the processes have exited (a killed actor's worker takes a moment)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if all(cpu_ticks(p) is None for p in pids):
            return True
        time.sleep(0.1)
    return False


def run_ray(economy, network, rule, p0, group, rounds: int, warmup: int, k: int) -> dict:
    t0 = time.perf_counter()
    engine = ShardEngine(economy, network, rule, "tracking", p0, group, k, use_ray=True)
    start_s = time.perf_counter() - t0
    pids = list(engine.pids)
    try:
        for _ in range(warmup):
            engine.step()
        shards0 = engine.shard_timings()
        a = Snapshot(pids)
        for _ in range(rounds):
            metrics = engine.step()
        b = Snapshot(pids)
        shards1 = engine.shard_timings()
        task_wall = {
            part: sum(s1[part] - s0[part] for s0, s1 in zip(shards0, shards1, strict=True))
            for part in shards0[0]
        }
        return {
            "cpu": cpu_delta(a, b), "metrics": metrics, "prices": engine.prices(),
            "start_s": start_s, "task_wall_s": task_wall, "pids": pids,
            "edge_cut": engine.partition.edge_cut, "bytes_per_round": engine.bytes_per_round,
        }  # fmt: skip
    finally:
        engine.shutdown()
        del engine
        gc.collect()
        if not wait_gone(pids):
            log(f"  WARNING: ray-{k} workers still alive 15 s after shutdown")


# ---- aggregation ----------------------------------------------------------------------------
PARTS = ("driver", "driver_main", "workers", "workers_main", "workers_other", "ray_own", "total")


def by_name(cpu: list[dict], key: str) -> dict[str, float]:
    """Median over repeats of each name's CPU seconds (0 where a repeat lacks it); names
    that never used a clock tick are left out."""
    names = sorted({k for c in cpu for k, v in c[key].items() if v})
    return {k: statistics.median(c[key].get(k, 0.0) for c in cpu) for k in names}


def aggregate(name: str, runs: list[dict], n: int, rounds: int) -> dict:
    agent_rounds = n * rounds
    cpu = [r["cpu"] for r in runs]
    med = {p: statistics.median(c[p] for c in cpu) for p in PARTS}
    out = {
        "config": name,
        "wall_s": summary(c["wall_s"] for c in cpu),
        "wall_s_per_round": statistics.median(c["wall_s"] for c in cpu) / rounds,
        "agent_rounds_per_s": agent_rounds / statistics.median(c["wall_s"] for c in cpu),
        "cpu_s": {p: summary(c[p] for c in cpu) for p in PARTS},
        "cpu_s_per_agent_round": {p: med[p] / agent_rounds for p in PARTS},
        "cores": summary(c["cores"] for c in cpu),
        "other_cores": summary(c["other_cores"] for c in cpu),
        "ray_by_name_s": by_name(cpu, "ray_by_name"),
        "driver_threads_s": by_name(cpu, "driver_threads"),
        "worker_threads_s": by_name(cpu, "worker_threads"),
        "per_worker_s": [
            statistics.median(w) for w in zip(*(c["per_worker"] for c in cpu), strict=True)
        ],
        "gone": [c["gone"] for c in cpu],
        "worker_switches_per_round": {
            kind: statistics.median(c["worker_switches"][kind] for c in cpu) / rounds
            for kind in ("voluntary", "involuntary")
        },
        "bit_identical": all(r["identical"] for r in runs),
    }
    if "start_s" in runs[0]:
        out["engine_start_s"] = summary(r["start_s"] for r in runs)
        out["task_wall_s_per_agent_round"] = {
            part: statistics.median(r["task_wall_s"][part] for r in runs) / agent_rounds
            for part in runs[0]["task_wall_s"]
        }
        out["edge_cut"] = runs[0]["edge_cut"]
        out["bytes_per_round"] = runs[0]["bytes_per_round"]
    return out


def engine_cpu(name: str, cpu: dict) -> float:
    """The CPU a configuration needs: all processes on Ray, the driver in-process (the idle
    Ray beside it is not part of a ``--workers 0`` run)."""
    return cpu["total"] if name.startswith("ray") else cpu["driver"]


def ratios(configs: dict, runs: dict) -> None:
    """``vs_inproc``: CPU needed / the in-process driver's CPU (medians; ``vs_inproc_1t``:
    against the one-thread run's); ``vs_inproc_paired``: the same ratio repeat by repeat
    (each against the ``inproc`` run of its repeat)."""
    base = configs["inproc"]["cpu_s"]["driver"]["median"]
    serial = configs.get("inproc-1t", {}).get("cpu_s", {}).get("driver", {}).get("median")
    for name, row in configs.items():
        need = statistics.median(engine_cpu(name, r["cpu"]) for r in runs[name])
        row["vs_inproc"] = need / base
        row["vs_inproc_1t"] = need / serial if serial else None
        row["vs_inproc_paired"] = summary(
            engine_cpu(name, r["cpu"]) / b["cpu"]["driver"]
            for r, b in zip(runs[name], runs["inproc"], strict=True)
        )


def table(configs: dict, n: int, rounds: int) -> str:
    ns = 1e9
    lines = [
        f"CPU per agent-round (ns, medians), {n:,} agents, {rounds} timed rounds",
        f"{'config':>10} {'s/round':>8} {'cores':>6} {'kernel':>7} {'workers':>8} "
        f"{'w.main':>7} {'w.other':>7} {'driver':>7} {'ray own':>8} {'total':>7} "
        f"{'x inproc':>8} {'bits':>5}",
    ]
    for name, r in configs.items():
        c = r["cpu_s_per_agent_round"]
        ray = name.startswith("ray")

        def col(v, w, on=True):
            return f"{v * ns:{w}.1f}" if on else f"{'–':>{w}}"

        total = c["total"] if ray else c["driver"]
        lines.append(
            f"{name:>10} {r['wall_s_per_round']:8.3f} {r['cores']['median']:6.2f} "
            f"{col(c['driver'], 7, not ray)} {col(c['workers'], 8, ray)} "
            f"{col(c['workers_main'], 7, ray)} {col(c['workers_other'], 7, ray)} "
            f"{col(c['driver'], 7, ray)} {col(c['ray_own'], 8)} {col(total, 7)} "
            f"{r['vs_inproc']:8.2f} {'ok' if r['bit_identical'] else 'NO':>5}"
        )
    lines += [
        "kernel: the in-process driver; w.main / w.other: the workers' main threads (the "
        "actor tasks) / other threads;",
        "ray own: every other Ray process (the idle Ray beside inproc*, not in their total); "
        "cores: CPU-s of all processes per wall s;",
        "x inproc: total / kernel of inproc (its inverse bounds the efficiency); bits: final "
        "metrics and prices equal inproc's",
    ]
    return "\n".join(lines)


# ---- the benchmark --------------------------------------------------------------------------
CHECKED = ("tatonnet", "tatonnet.distributed.shard", "tatonnet.environment.tatonnement.kernel")


def module_files() -> dict[str, str]:
    import importlib

    return {m: importlib.import_module(m).__file__ for m in CHECKED}


def code_info(label: str | None) -> dict:
    """Which files driver and Ray workers import (``PYTHONPATH`` may point at a snapshot:
    other jobs may edit the checkout while the benchmark runs)."""
    import ray

    here = module_files()
    there = ray.get(ray.remote(num_cpus=0)(module_files).remote())
    if here != there:
        log(f"WARNING: Ray workers import other files than the driver: {there}")
    return {"label": label, "package": str(Path(tatonnet.__file__).parent), "driver": here,
            "worker": there, "same": here == there}  # fmt: skip


def bench(args, ks: list[int]) -> dict:
    n = args.agents
    log(f"building the economy and graph ({n:,} agents) ...")
    t0 = time.perf_counter()
    economy = make_economy(n, args.seed)
    network, graph_info = make_network(n, args.seed, "numpy")
    build_s = time.perf_counter() - t0
    rule = make_rule("entropic", step_size=STEP)
    p0 = np.ones(economy.n_goods)
    group = np.zeros(n, dtype=np.int32)
    R, W = args.rounds, args.warmup
    configs = {"inproc": lambda: run_inproc(economy, network, rule, p0, R, W, None)}
    if not args.no_1t:
        configs["inproc-1t"] = lambda: run_inproc(economy, network, rule, p0, R, W, 1)
    for k in ks:
        configs[f"ray-{k}"] = lambda k=k: run_ray(economy, network, rule, p0, group, R, W, k)
    t1 = time.perf_counter()
    where = cluster.connect(max(ks), object_store_bytes=args.object_store_mib * MIB)
    connect_s = time.perf_counter() - t1
    log(f"  {where} started in {connect_s:.1f} s")
    code = code_info(args.code_label)
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        for rep in range(args.repeats):
            for name, fn in configs.items():
                r = fn()
                c = r["cpu"]
                runs[name].append(r)
                log(f"  {name} repeat {rep + 1}: {c['wall_s']:.2f} s, CPU driver "
                    f"{c['driver']:.2f} workers {c['workers']:.2f} ray {c['ray_own']:.2f} "
                    f"= {c['total']:.2f} s ({c['cores']:.2f} cores; other jobs "
                    f"{c['other_cores']:.2f})")  # fmt: skip
                ref = runs["inproc"][0]
                r["identical"] = same_metrics(r["metrics"], ref["metrics"]) and bool(
                    np.array_equal(r["prices"], ref["prices"])
                )
                if r is not ref:
                    r["prices"] = None  # keep one (n, g) copy
    finally:
        cluster.shutdown()
    out = {
        "n_agents": n, "rounds": R, "warmup_rounds": W, "repeats": args.repeats, "workers": ks,
        "build_s": build_s, "graph": graph_info, "ray": where, "ray_connect_s": connect_s,
        "object_store_mib": args.object_store_mib, "code": code, "configs": {},
    }  # fmt: skip
    for name, rs in runs.items():
        out["configs"][name] = aggregate(name, rs, n, R)
    ratios(out["configs"], runs)
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=float, default=None, help="default 1e6; --quick 1e5")
    ap.add_argument(
        "--rounds", type=int, default=None, help="timed rounds (default 25; --quick 20)"
    )
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--workers", default="2,4,8", help="comma list of Ray worker counts")
    ap.add_argument("--repeats", type=int, default=None, help="medians of (default 3; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    ap.add_argument("--no-1t", action="store_true", help="skip the one-thread in-process run")
    ap.add_argument("--object-store-mib", type=int, default=cluster.OBJECT_STORE_BYTES // MIB)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--code-label", default=None,
                    help="what code this is (e.g. 'snapshot of commit X'), recorded")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS / "ray_cpu_cost.json")
    args = ap.parse_args(argv)
    args.agents = int(args.agents if args.agents is not None else (1e5 if args.quick else 1e6))
    args.rounds = args.rounds if args.rounds is not None else (20 if args.quick else 25)
    args.repeats = max(1, args.repeats if args.repeats is not None else (1 if args.quick else 3))
    ks = [int(w) for w in args.workers.split(",") if w.strip()]
    if not ks or any(k < 1 for k in ks):
        ap.error("--workers: a comma list of positive integers")
    if not Path("/proc/self/stat").exists():
        ap.error("this benchmark reads /proc: Linux only")
    return args, ks


def main(argv=None) -> int:
    args, ks = parse_args(argv)
    started = time.perf_counter()
    command = shlex.join([".venv/bin/python", "benchmarks/ray_cpu_cost.py", *sys.argv[1:]])
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {command}"
    report = {
        "benchmark": "ray_cpu_cost",
        "command": command,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_start": load_average(),
        "git": git_info(),
        "economy": ECONOMY | {"seed": args.seed},
        "cpu": "user + system seconds from /proc/<pid>/stat, delta across the timed rounds; "
        "per agent-round = median CPU-seconds / (agents x rounds); vs_inproc = total / the "
        "inproc driver's CPU",
    }
    report["result"] = res = bench(args, ks)
    report["numba_threading_layer"] = numba.threading_layer()
    report["load_average_end"] = load_average()
    report["duration_s"] = time.perf_counter() - started
    report["all_bit_identical"] = all(c["bit_identical"] for c in res["configs"].values())
    text = table(res["configs"], res["n_agents"], res["rounds"])
    report["table"] = text
    write_report(args.out, report)
    print(text)
    log(f"run took {report['duration_s']:.0f} s; wrote {args.out.relative_to(ROOT)}"
        if args.out.is_relative_to(ROOT) else f"wrote {args.out}")  # fmt: skip
    return 0 if report["all_bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
