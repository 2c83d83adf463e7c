"""Throughput and memory of the in-process engine against the Ray-sharded engine.

The economy: ``N`` agents (default 10^6), 5 goods, CES utility with sigma = 2, Dirichlet(1)
shares, endowments uniform on [0.5, 1.5], good 0 the numeraire, all initial prices 1; a
Watts-Strogatz small world (k = 10, p = 0.1) relabelled by
:func:`tatonnet.environment.ordering.locality_order` + :func:`tatonnet.environment.ordering.reorder`, as
:func:`tatonnet.environment.scenario.build_network_for` does; the entropic rule (step 0.05) with
gradient tracking.

Configurations (each runs one untimed warm-up round, then ``--rounds`` timed rounds):

* ``inproc``     — :class:`tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`, ping-pong spare state,
                   numba on all cores of this process (engine (a));
* ``inproc-1t``  — the same, one numba thread: the serial reference that parallel
                   efficiency is measured against;
* ``ray-K``      — :class:`tatonnet.distributed.engine.ShardEngine` with ``use_ray=True`` and K
                   actors, on a local Ray started by :func:`tatonnet.distributed.cluster.connect`
                   (``num_cpus = K``, 512 MiB object store) and shut down after that K;
* ``shards-K``   — (breakdown only, one repeat) ``ShardEngine(use_ray=False)`` with K
                   one-thread shards run one after another in this process, each shard's
                   ``receive`` / ``step`` / ``outgoing`` timed: what a Ray worker computes
                   per round, so ``ray round - slowest shard`` is the Ray overhead.

Every configuration's last-round :class:`RoundMetrics` (and every agent's final prices)
must equal the in-process engine's bit for bit; the script prints and records whether
they do.

Memory: the driver's high-water mark (``VmHWM`` of ``/proc/self/status``, reset before each
configuration by writing 5 to ``/proc/self/clear_refs``) and, for every Ray worker
(``engine.pids``), its ``VmHWM`` read from the driver just before the actors are killed,
plus RSS / PSS sampled every 0.25 s during the run. PSS splits pages shared with the object
store (Ray's plasma memory) between the processes that map them. Linux only.

The graph generator: the default ``--generator numpy`` is the vectorized Watts-Strogatz of
``common.watts_strogatz_edges`` (networkx needs minutes and several GiB at 10^6), drawn
from stream ``(1,)`` of the seed (the economy draws from ``(0,)``): the same distribution as
``networkx.connected_watts_strogatz_graph``, not the same draws. ``--generator networkx``
uses networkx itself.

Modes:

* default: ``inproc``, ``inproc-1t``, ``ray-K`` for every K in ``--workers`` (default 2),
  and the per-round breakdown ``shards-K``;
* ``--strong``: a fixed ``--n``; K over ``--workers`` (default 1,2,4,8,16); parallel
  efficiency ``E_K = rate(ray-K) / (K * rate(inproc-1t))`` and speedup against ``inproc``
  (all cores), both measured in the same run;
* ``--weak``: ``N = --per-worker (2.5e5) * K`` for every K; ``inproc`` at each N,
  ``inproc-1t`` at ``N = --per-worker``; weak efficiency
  ``E_K = rate(ray-K at K*N0) / (K * rate(inproc-1t at N0))``.

Examples::

    .venv/bin/python benchmarks/ray_scale.py --quick
    .venv/bin/python benchmarks/ray_scale.py --n 1000000 --rounds 100 --workers 2 --repeats 3
    .venv/bin/python benchmarks/ray_scale.py --strong --weak --n 4000000 --out benchmarks/results/ray_scale_device

Results go to ``<out>.md`` and ``<out>.json`` (default ``benchmarks/results/ray_scale``).

This file holds the command line, the modes and the code guard; ``ray_scale_runs.py``
measures one configuration (and reads ``/proc``), ``ray_scale_report.py`` writes the tables;
``common.py`` is what every benchmark shares (the graph, the machine description, writing
results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path

import numba
import numpy as np
from common import ROOT, git_info, machine_info, ordered_small_world, write_report
from ray_scale_report import describe, markdown, strong_table, weak_table
from ray_scale_runs import Run, run_inprocess, run_ray, run_shards_inprocess, summarize, wait_quiet

from tatonnet.agents.rules import make_rule
from tatonnet.agents.utility import Family
from tatonnet.distributed import cluster
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network

GOODS, SIGMA, K_DEGREE, P_REWIRE, STEP = 5, 2.0, 10, 0.1, 0.05
GRAPH_STREAM = (1,)  # the graph's draws: SeedSequence(seed, spawn_key=(1, attempt))
MIB = 2**20
OBJECT_STORE_MIB = cluster.OBJECT_STORE_BYTES // MIB


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- the economy and the graph -------------------------------------------------------------
def make_economy(n: int, seed: int) -> Economy:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    shares = rng.dirichlet(np.ones(GOODS), n)
    endowments = rng.uniform(0.5, 1.5, (n, GOODS))
    family = np.full(n, int(Family.CES), dtype=np.int8)
    sigma = np.full(n, SIGMA)
    return Economy(endowments, shares, family, sigma, 0)


def make_network(n: int, seed: int, generator: str) -> tuple[Network, dict]:
    """The small world, locality-ordered like ``tatonnet.environment.scenario.build_network_for``."""
    return ordered_small_world(n, K_DEGREE, P_REWIRE, seed, generator, stream=GRAPH_STREAM)


# ---- provenance -----------------------------------------------------------------------------
def kernel_hash() -> str:
    return hashlib.sha256(
        (ROOT / "environment" / "tatonnement" / "kernel.py").read_bytes()
    ).hexdigest()[:16]


SOURCE_PACKAGES = ("agents", "environment", "distributed")


def source_fingerprint() -> str:
    """sha256 of every .py file of the packages the engines import (path and content)."""
    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


class CodeGuard:
    """Ray actors import the packages when they start, i.e. during the run; if another job
    edits the source tree meanwhile, driver and workers run different code. The guard
    compares the tree's fingerprint with the one at start before and after every Ray
    configuration and checks, once per Ray runtime, that workers import the packages from
    the same files as the driver."""

    def __init__(self):
        self.start = source_fingerprint()
        self.changed: list[str] = []
        self.worker_files: dict | None = None

    def check(self, label: str) -> bool:
        ok = source_fingerprint() == self.start
        if not ok:
            self.changed.append(label)
            log(f"WARNING: the source tree changed ({label}); driver and workers may differ")
        return ok

    def check_workers(self) -> None:
        import ray

        def files():
            import importlib

            return {m: importlib.import_module(m).__file__ for m in DRIVER_MODULES}

        here = files()
        there = ray.get(ray.remote(num_cpus=0)(files).remote())
        self.worker_files = {"driver": here, "worker": there, "same": here == there}
        if here != there:
            log(f"WARNING: Ray workers import other files than the driver: {there}")


GUARD: CodeGuard | None = None

DRIVER_MODULES = (
    "tatonnet.agents.rules",
    "tatonnet.environment.tatonnement.kernel",
    "tatonnet.environment.tatonnement.dynamics",
    "tatonnet.distributed.shard",
)


# ---- the benchmark --------------------------------------------------------------------------
class Case:
    """One economy size: the economy, the graph and what they cost to build."""

    def __init__(self, n: int, seed: int, generator: str):
        self.n = n
        log(f"building N={n:,}: economy, small world ({generator}), locality order ...")
        t0 = time.perf_counter()
        self.economy = make_economy(n, seed)
        t1 = time.perf_counter()
        self.network, self.info = make_network(n, seed, generator)
        self.info["economy_seconds"] = t1 - t0
        self.rule = make_rule("entropic", step_size=STEP)
        self.p0 = np.ones(GOODS)
        self.group = np.zeros(n, dtype=np.int32)
        log(
            f"  economy {t1 - t0:.1f} s, graph {self.info['graph_seconds']:.1f} s, "
            f"ordering ({self.info['ordering']}) {self.info['ordering_seconds']:.1f} s, "
            f"{self.network.n_edges:,} edges"
        )

    def inprocess(self, rounds, threads=None):
        return run_inprocess(self.economy, self.network, self.rule, self.p0, rounds, threads)

    def ray(self, rounds, k):
        return run_ray(self.economy, self.network, self.rule, self.p0, rounds, k, self.group)

    def shards(self, rounds, k):
        return run_shards_inprocess(
            self.economy, self.network, self.rule, self.p0, rounds, k, self.group
        )


def bench_case(case: Case, args, ks: list[int], serial: bool, breakdown: bool,
               results: list[dict], ray_start: dict) -> None:  # fmt: skip
    """Every configuration once per repeat, interleaved, so that load from other jobs on a
    shared machine spreads over all of them: in-process (all cores, one thread), every K on
    Ray (one local Ray per K, kept up across repeats when there is one K; an idle Ray is up
    during the in-process runs too), the breakdown."""
    n, R = case.n, args.rounds
    runs: dict[str, list[Run]] = {}
    up = None  # the K of the Ray runtime now running

    def quiet() -> None:
        if args.quiet_wait > 0:
            waited = wait_quiet(args.quiet_wait)
            if waited > 2.5:
                log(f"    waited {waited:.0f} s for other jobs to quieten")

    def ray_up(k: int) -> None:
        nonlocal up
        if up == k:
            return
        if up is not None:
            cluster.shutdown()
        t0 = time.perf_counter()
        where = cluster.connect(k, object_store_bytes=args.object_store_mib * MIB)
        ray_start.setdefault(str(k), time.perf_counter() - t0)
        log(f"  {where} started in {time.perf_counter() - t0:.1f} s")
        up = k
        if GUARD is not None and GUARD.worker_files is None:
            GUARD.check_workers()

    def measure(name: str, fn, label: str) -> None:
        """Run one configuration (again, up to --retries times, while other jobs used more
        than --max-other-load cores); compare its prices with the reference and drop them."""
        for attempt in range(1 + max(0, args.retries)):
            quiet()
            before = GUARD is None or GUARD.check(f"before {label}")
            run = fn()
            after = GUARD is None or GUARD.check(f"after {label}")
            run.code_ok, run.attempts = before and after, attempt + 1
            other = run.load["other_cores"]
            log(f"    {name}: {run.wall_s:.2f} s, other jobs used {other:.2f} cores")
            if args.max_other_load is None or other <= args.max_other_load:
                break
            if attempt < args.retries:
                log(f"    {name}: other jobs used more than {args.max_other_load} cores; again")
        reference = runs["inproc"][0] if runs.get("inproc") else run
        run.prices_identical = bool(np.array_equal(run.prices, reference.prices))
        if run is not reference:
            run.prices = None  # keep one (n, g) copy, not one per run
        runs.setdefault(name, []).append(run)

    try:
        if ks:  # an idle Ray is up during every in-process run, not only after the first
            ray_up(ks[0])
        for rep in range(args.repeats):
            log(f"  repeat {rep + 1}/{args.repeats}")
            tag = f"repeat {rep + 1}"
            measure("inproc", lambda: case.inprocess(R), f"inproc {tag}")
            if serial:
                measure("inproc-1t", lambda: case.inprocess(R, threads=1), f"inproc-1t {tag}")
            for k in ks:
                ray_up(k)
                measure(f"ray-{k}", lambda k=k: case.ray(R, k), f"ray-{k} {tag}")
            if breakdown:
                for k in ks:
                    measure(f"shards-{k}", lambda k=k: case.shards(R, k), f"shards-{k} {tag}")
    finally:
        if up is not None:
            cluster.shutdown()
    reference = runs["inproc"][0]
    threads = numba.config.NUMBA_NUM_THREADS
    results.append(summarize("inproc", "inproc", n, None, threads, runs["inproc"], reference, R))
    log(describe(results[-1]))
    if serial:
        results.append(
            summarize("inproc-1t", "inproc-1t", n, None, 1, runs["inproc-1t"], reference, R)
        )
        log(describe(results[-1]))
    for k in ks:
        results.append(summarize(f"ray-{k}", "ray", n, k, 1, runs[f"ray-{k}"], reference, R))
        log(describe(results[-1]))
    if breakdown:
        for k in ks:
            results.append(
                summarize(f"shards-{k}", "shards", n, k, 1, runs[f"shards-{k}"], reference, R)
            )
            log(describe(results[-1]))


# ---- the modes ------------------------------------------------------------------------------
class Tally:
    """What the modes measure, gathered for the report."""

    def __init__(self):
        self.results: list[dict] = []
        self.cases: dict[str, dict] = {}
        self.ray_start: dict[str, float] = {}
        self.scaling: dict[str, list[dict]] = {}

    def case(self, n: int, args) -> Case:
        case = Case(n, args.seed, args.generator)
        self.cases[str(case.n)] = case.info
        return case

    def bench(self, case: Case, args, ks: list[int], serial: bool, breakdown: bool) -> None:
        bench_case(case, args, ks, serial=serial, breakdown=breakdown, results=self.results,
                   ray_start=self.ray_start)  # fmt: skip


def run_default(tally: Tally, args, ks: list[int]) -> None:
    """``inproc``, ``inproc-1t``, ``ray-K`` for every K and the breakdown ``shards-K``."""
    case = tally.case(args.n, args)
    tally.bench(case, args, ks, serial=True, breakdown=not args.no_breakdown)


def run_strong(tally: Tally, args, ks: list[int]) -> None:
    """Strong scaling: every configuration at ``--n``."""
    case = tally.case(args.n, args)
    start = len(tally.results)
    tally.bench(case, args, ks, serial=True, breakdown=False)
    for r in tally.results[start:]:
        r["mode"] = "strong"
    tally.scaling["strong"] = strong_table(tally.results[start:])


def run_weak(tally: Tally, args, ks: list[int]) -> None:
    """Weak scaling: ``inproc-1t`` at ``N0 = --per-worker``, then ``inproc`` and ``ray-K`` at
    ``K * N0`` for every K."""
    n0 = int(args.per_worker)
    start = len(tally.results)
    base = tally.case(n0, args)
    runs: list[Run] = []
    for _ in range(args.repeats):
        if args.quiet_wait > 0:
            wait_quiet(args.quiet_wait)
        runs.append(base.inprocess(args.rounds, threads=1))
    tally.results.append(summarize("inproc-1t", "inproc-1t", n0, None, 1, runs, None, args.rounds))
    log(describe(tally.results[-1]))
    del base, runs
    for k in ks:
        case = tally.case(n0 * k, args)
        tally.bench(case, args, [k], serial=False, breakdown=False)
        del case
        gc.collect()
    for r in tally.results[start:]:
        r["mode"] = "weak"
    tally.scaling["weak"] = weak_table(tally.results[start:], n0)


# ---- the command line -----------------------------------------------------------------------
def parse_args(argv=None):
    """The options, with their mode-dependent defaults filled in; ``(args, ks)``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=float, default=None, help="agents (default 1e6; --quick 2e4)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 100)")
    ap.add_argument(
        "--workers",
        default=None,
        help="comma list of Ray worker counts (default 2; --strong/--weak 1,2,4,8,16)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="median of this many (default 1)")
    ap.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    ap.add_argument("--strong", action="store_true", help="strong scaling at fixed --n")
    ap.add_argument("--weak", action="store_true", help="weak scaling, N = --per-worker * K")
    ap.add_argument(
        "--per-worker", type=float, default=2.5e5, help="weak scaling: agents per worker"
    )
    ap.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the in-process per-shard timing (default mode only)",
    )
    ap.add_argument(
        "--object-store-mib",
        type=int,
        default=OBJECT_STORE_MIB,
        help=f"local Ray object store (default {OBJECT_STORE_MIB}, as the tatonnet command uses; the static "
        "data of every shard is put there once, so larger N needs more)",
    )
    ap.add_argument("--generator", choices=("numpy", "networkx"), default="numpy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each configuration, wait up to this many seconds until other jobs use "
        "< 0.15 cores (shared machines; default 0: do not wait)",
    )
    ap.add_argument(
        "--max-other-load",
        type=float,
        default=None,
        help="rerun a configuration (up to --retries times) when other jobs used more than "
        "this many cores during its timed rounds (default: never)",
    )
    ap.add_argument("--retries", type=int, default=2, help="see --max-other-load (default 2)")
    ap.add_argument(
        "--code-label",
        default=None,
        help="what code this is (e.g. 'snapshot of commit X'), recorded in the results",
    )
    ap.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "ray_scale"),
        help="output path without suffix (.md and .json are written)",
    )
    args = ap.parse_args(argv)  # fmt: skip

    scaling = args.strong or args.weak
    args.n = int(args.n if args.n is not None else (2e4 if args.quick else 1e6))
    args.rounds = args.rounds if args.rounds is not None else (20 if args.quick else 100)
    args.repeats = max(1, args.repeats if args.repeats is not None else 1)
    ws = args.workers or ("1,2,4,8,16" if scaling else "2")
    ks = [int(w) for w in ws.split(",") if w.strip()]
    if any(k < 1 for k in ks):
        ap.error("--workers: positive integers")
    if not (hasattr(os, "sched_getaffinity") and Path("/proc/self/status").exists()):
        ap.error("this benchmark reads /proc: Linux only")

    return args, ks


def main(argv=None) -> int:
    args, ks = parse_args(argv)
    command = shlex.join([sys.executable.replace(str(ROOT) + "/", ""), *sys.argv])
    started = dt.datetime.now(dt.UTC)
    kh = kernel_hash()
    global GUARD
    guard = GUARD = CodeGuard()
    machine = machine_info()
    log(f"{machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"{machine['memory_total_gib']} GiB; numba threads {machine['numba_threads']}")  # fmt: skip

    tally = Tally()
    if not (args.strong or args.weak):
        run_default(tally, args, ks)
    if args.strong:
        run_strong(tally, args, ks)
    if args.weak:
        run_weak(tally, args, ks)
    results = tally.results

    finished = dt.datetime.now(dt.UTC)
    kh_end = kernel_hash()
    if kh_end != kh:
        log(
            "WARNING: environment/tatonnement/kernel.py changed during the run; results may mix versions"
        )
    report = {
        "benchmark": "ray_scale",
        "command": command,
        "date_utc": started.isoformat(timespec="seconds"),
        "duration_s": (finished - started).total_seconds(),
        "machine": machine,
        "git": git_info(),
        "kernel_py_sha256_16": {"start": kh, "end": kh_end},
        "code": {
            "root": str(ROOT),
            "label": args.code_label,
            "source_fingerprint": guard.start,
            "changed_during": guard.changed,
            "consistent": not guard.changed and source_fingerprint() == guard.start,
            "module_files": guard.worker_files,
        },
        "economy": {
            "goods": GOODS,
            "utility": "ces",
            "sigma": SIGMA,
            "shares": "dirichlet(1)",
            "endowments": "uniform[0.5, 1.5]",
            "initial_prices": "all 1",
            "graph": f"watts-strogatz k={K_DEGREE} p={P_REWIRE}, locality-ordered",
            "rule": f"entropic step {STEP}",
            "signal": "tracking",
            "seed": args.seed,
        },  # fmt: skip
        "timing": "each configuration runs 1 untimed warm-up round, then the timed rounds; "
        "wall_s is the median over repeats; setup_s excludes building the economy and graph; "
        f"quiet-wait {args.quiet_wait:g} s before each configuration; "
        + (
            f"a repeat is rerun (up to {args.retries} times) when other jobs used more than "
            f"{args.max_other_load:g} cores during it"
            if args.max_other_load is not None
            else "no reruns for load from other jobs"
        ),
        "cases": tally.cases,
        "ray_start_s": tally.ray_start,
        "object_store_mib": args.object_store_mib,
        "results": results,
        "scaling": tally.scaling,
    }
    all_identical = all(r.get("metrics_identical", True) and r.get("prices_identical", True)
                        for r in results)  # fmt: skip
    report["all_bit_identical"] = all_identical
    out = Path(args.out)
    text = markdown(report)
    write_report(out.with_suffix(".json"), report, out.with_suffix(".md"), text)
    print(text)
    log(f"final metrics bit-identical across all configurations: {all_identical}")
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0 if all_identical else 1


if __name__ == "__main__":
    sys.exit(main())
