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

The graph generator: the default ``--generator numpy`` is a vectorized Watts-Strogatz
written here (networkx needs minutes and several GiB at 10^6): a ring lattice where every
node links to its k/2 successors, then every lattice edge independently, with probability
p, has its far end replaced by a uniform node, redrawn while it is the node itself or
duplicates an edge (so no multi-edges and exactly n·k/2 edges), and the whole graph
redrawn (next seed) if it is disconnected — the same distribution as
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
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

ROOT = Path(__file__).resolve().parents[1]  # the checkout (the tatonnet package)

from tatonnet.agents.rules import make_rule  # noqa: E402
from tatonnet.agents.utility import Family  # noqa: E402
from tatonnet.distributed import cluster  # noqa: E402
from tatonnet.distributed.engine import ShardEngine  # noqa: E402
from tatonnet.environment.economy import Economy  # noqa: E402
from tatonnet.environment.network import Network, from_edges  # noqa: E402
from tatonnet.environment.ordering import locality_order, reorder  # noqa: E402
from tatonnet.environment.tatonnement import dynamics  # noqa: E402
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement, RoundMetrics  # noqa: E402

GOODS, SIGMA, K_DEGREE, P_REWIRE, STEP = 5, 2.0, 10, 0.1, 0.05
MIB = 2**20
OBJECT_STORE_MIB = cluster.OBJECT_STORE_BYTES // MIB


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- /proc memory ---------------------------------------------------------------------------
def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS / VmHWM (bytes) of a process; {} if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value, _ = line.split()
                    out[key[:-1]] = int(value) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def proc_pss(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return None


def reset_hwm() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, comm) of every descendant of ``pid`` (Ray's raylet, gcs_server, workers...)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parent[int(entry)] = (ppid, comm)
    out, frontier = [], {pid}
    while frontier:
        nxt = {p for p, (pp, _) in parent.items() if pp in frontier}
        out += [(p, parent[p][1]) for p in sorted(nxt)]
        frontier = nxt
    return out


def _tree_ticks(pid: int) -> int:
    """utime + stime (clock ticks) of ``pid`` and its live descendants."""
    total = 0
    for p in [pid] + [d for d, _ in descendants(pid)]:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


class LoadMeter:
    """CPU used during an interval: by this process tree and by everything else on the machine.

    ``other_cores`` (busy ticks of the machine minus ours, per second of wall time) shows
    whether another job shared the cores: on a quiet machine it is ~0.
    """

    HZ = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq

    def start(self):
        self.t, self.busy, self.own = time.perf_counter(), self._busy(), _tree_ticks(os.getpid())
        return self

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t
        busy = self._busy() - self.busy
        own = _tree_ticks(os.getpid()) - self.own
        return {
            "own_cores": own / self.HZ / wall,
            "other_cores": max(0.0, (busy - own) / self.HZ / wall),
        }


def wait_quiet(limit_s: float, threshold: float = 0.15, window_s: float = 2.0) -> float:
    """Wait (at most ``limit_s``) until other jobs use under ``threshold`` cores over a
    ``window_s`` window; returns the seconds waited. For shared machines."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        meter = LoadMeter().start()
        time.sleep(window_s)
        if meter.stop()["other_cores"] < threshold:
            break
    return time.perf_counter() - t0


class MemSampler:
    """Samples RSS (and, every 4th time, PSS) of some processes on a background thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.25):
        self.pids, self.interval = pids, interval
        self.rss = {name: 0 for name in pids}
        self.pss = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, with_pss: bool) -> None:
        for name, pid in self.pids.items():
            rss = proc_status(pid).get("VmRSS", 0)
            self.rss[name] = max(self.rss[name], rss)
            if with_pss:
                self.pss[name] = max(self.pss[name], proc_pss(pid) or 0)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            self._sample(i % 4 == 0)
            i += 1

    def __enter__(self):
        self._sample(True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample(True)


# ---- the economy and the graph -------------------------------------------------------------
def make_economy(n: int, seed: int) -> Economy:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    shares = rng.dirichlet(np.ones(GOODS), n)
    endowments = rng.uniform(0.5, 1.5, (n, GOODS))
    family = np.full(n, int(Family.CES), dtype=np.int8)
    sigma = np.full(n, SIGMA)
    return Economy(endowments, shares, family, sigma, 0)


def _connected(edges: np.ndarray, n: int) -> bool:
    adj = scipy.sparse.coo_array(
        (np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    ).tocsr()
    n_comp, _ = scipy.sparse.csgraph.connected_components(adj, directed=False)
    return n_comp == 1


def watts_strogatz_edges(n: int, k: int, p: float, seed: int, tries: int = 100) -> np.ndarray:
    """(n*k/2, 2) int64 edges of a connected Watts-Strogatz graph (vectorized; see module doc)."""
    if not (2 <= k < n and k % 2 == 0):
        raise ValueError(f"k must be even with 2 <= k < n, got k={k}, n={n}")
    half = k // 2
    for attempt in range(tries):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, attempt)))
        u = np.repeat(np.arange(n, dtype=np.int64), half)
        v = (u + np.tile(np.arange(1, half + 1, dtype=np.int64), n)) % n
        rewired = rng.random(u.size) < p
        todo = np.flatnonzero(rewired)
        while todo.size:
            v[todo] = rng.integers(0, n, todo.size)
            key = np.minimum(u, v) * n + np.maximum(u, v)
            # sort by key, lattice (not rewired) edges first: a later equal key is a
            # duplicate and always a rewired edge (lattice edges are distinct for k < n)
            order = np.lexsort((rewired, key))
            sk = key[order]
            dup = np.zeros(u.size, dtype=bool)
            dup[order[1:]] = sk[1:] == sk[:-1]
            todo = np.flatnonzero(dup | (u == v))
        edges = np.stack([u, v], axis=1)
        if _connected(edges, n):
            return edges
    raise RuntimeError(f"no connected Watts-Strogatz graph in {tries} tries")


def make_network(n: int, seed: int, generator: str) -> tuple[Network, dict]:
    """The small world, locality-ordered like ``tatonnet.environment.scenario.build_network_for``."""
    t0 = time.perf_counter()
    if generator == "networkx":
        import networkx as nx

        G = nx.connected_watts_strogatz_graph(n, K_DEGREE, P_REWIRE, tries=100, seed=seed)
        edges = np.array(G.edges, dtype=np.int64).reshape(-1, 2)
        del G
    else:
        edges = watts_strogatz_edges(n, K_DEGREE, P_REWIRE, seed)
    network = from_edges(edges, n, "small-world")
    del edges
    t1 = time.perf_counter()
    order, method = locality_order(network, seed)
    network = reorder(network, order)
    t2 = time.perf_counter()
    info = {
        "generator": generator,
        "graph_seconds": t1 - t0,
        "ordering_seconds": t2 - t1,
        "ordering": method,
        "n_edges": network.n_edges,
    }
    return network, info


# ---- results --------------------------------------------------------------------------------
FIELDS = ("excess", "mean_price", "log_min", "log_max")


def same_metrics(a: RoundMetrics, b: RoundMetrics) -> bool:
    return a.round == b.round and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def max_diff(a: RoundMetrics, b: RoundMetrics) -> float:
    return max(float(np.max(np.abs(getattr(a, f) - getattr(b, f)))) for f in FIELDS)


@dataclasses.dataclass
class Run:
    """One repeat of one configuration."""

    setup_s: float
    first_round_s: float
    wall_s: float
    round_s: list[float]
    metrics: RoundMetrics
    prices: np.ndarray | None
    driver_hwm: int
    driver_rss_sampled: int
    workers: list[dict] = dataclasses.field(default_factory=list)
    partition_s: float | None = None
    edge_cut: int | None = None
    bytes_per_round: int | None = None
    ray_system: list[dict] = dataclasses.field(default_factory=list)
    breakdown: dict | None = None
    load: dict | None = None
    code_ok: bool = True
    attempts: int = 1
    prices_identical: bool | None = None
    store: dict | None = None


@contextmanager
def numba_threads(threads: int | None):
    """Run the in-process engine on ``threads`` numba threads (None: as it chooses)."""
    if threads is None:
        yield
        return
    with mock.patch.object(
        dynamics, "use_threads", lambda n_blocks: numba.set_num_threads(threads)
    ):
        yield


def run_inprocess(economy, network, rule, p0, rounds: int, threads: int | None) -> Run:
    gc.collect()
    reset_hwm()
    with MemSampler({"driver": os.getpid()}) as sampler, numba_threads(threads):
        t0 = time.perf_counter()
        dyn = NetworkTatonnement(economy, network, rule, "tracking")
        initial = dyn.init_state(p0)
        t1 = time.perf_counter()
        state, metrics = dyn.step(initial)  # warm-up round (allocates the second state)
        spare = initial  # ping-pong: the state of two rounds ago is overwritten
        del initial
        meter = LoadMeter().start()
        t2 = time.perf_counter()
        times = []
        for _ in range(rounds):
            r0 = time.perf_counter()
            new, metrics = dyn.step(state, spare)
            spare, state = state, new
            times.append(time.perf_counter() - r0)
        t3 = time.perf_counter()
        load = meter.stop()
        prices = dyn.prices(state)
    hwm = proc_status().get("VmHWM", 0)
    del dyn, state, spare, new
    run = Run(t1 - t0, t2 - t1, t3 - t2, times, metrics, prices, hwm, sampler.rss["driver"])
    run.load = load
    return run


def run_ray(economy, network, rule, p0, rounds: int, k: int, group) -> Run:
    gc.collect()
    reset_hwm()
    driver = os.getpid()
    t0 = time.perf_counter()
    engine = ShardEngine(economy, network, rule, "tracking", p0, group, k, use_ray=True)
    t1 = time.perf_counter()
    pids = {"driver": driver} | {f"worker{i}": pid for i, pid in enumerate(engine.pids)}
    try:
        with MemSampler(pids) as sampler:
            engine.step()  # warm-up round
            meter = LoadMeter().start()
            t2 = time.perf_counter()
            times = []
            for _ in range(rounds):
                r0 = time.perf_counter()
                metrics = engine.step()
                times.append(time.perf_counter() - r0)
            t3 = time.perf_counter()
            load = meter.stop()
        store = object_store_stats()
        prices = engine.prices()
        workers = []
        for i, pid in enumerate(engine.pids):
            st = proc_status(pid)
            workers.append({
                "pid": pid,
                "hwm": st.get("VmHWM"),
                "rss_end": st.get("VmRSS"),
                "rss_sampled": sampler.rss[f"worker{i}"],
                "pss_sampled": sampler.pss[f"worker{i}"],
            })  # fmt: skip
        system = [
            {"pid": pid, "name": name, **{k_: v for k_, v in proc_status(pid).items()}}
            for pid, name in descendants(driver)
            if pid not in engine.pids and name in ("raylet", "gcs_server")
        ]
        hwm = proc_status().get("VmHWM", 0)
        return Run(
            t1 - t0, t2 - t1, t3 - t2, times, metrics, prices, hwm, sampler.rss["driver"],
            workers, engine.partition.seconds, engine.partition.edge_cut,
            engine.bytes_per_round, system, load=load, store=store,
        )  # fmt: skip
    finally:
        engine.shutdown()
        del engine
        gc.collect()


def object_store_stats() -> dict:
    """Plasma usage and bytes spilled so far in this Ray session (Ray's private API)."""
    import re

    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(stats_only=True)
    except Exception as exc:  # noqa: BLE001 - a private API; never fail the benchmark on it
        return {"error": f"{type(exc).__name__}: {exc}"}
    used = re.search(r"Plasma memory usage (\d+) MiB", text)
    spilled = re.search(r"Spilled (\d+) MiB", text)
    return {
        "plasma_mib": int(used.group(1)) if used else None,
        "spilled_mib": int(spilled.group(1)) if spilled else 0,
        "text": text.strip(),
    }


def _timed(fn, bucket: list):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        bucket.append(time.perf_counter() - t)
        return out

    return wrapper


def run_shards_inprocess(economy, network, rule, p0, rounds: int, k: int, group) -> Run:
    """K one-thread shards in this process, each shard's receive / step / outgoing timed."""
    gc.collect()
    reset_hwm()
    t0 = time.perf_counter()
    engine = ShardEngine(economy, network, rule, "tracking", p0, group, k, use_ray=False, threads=1)
    t1 = time.perf_counter()
    parts = [{"receive": [], "step": [], "outgoing": []} for _ in range(k)]
    for shard, bucket in zip(engine.shards, parts, strict=True):
        for name in bucket:  # instance attributes shadow the methods round_trip calls
            setattr(shard, name, _timed(getattr(shard, name), bucket[name]))
    engine.step()
    t2 = time.perf_counter()
    for bucket in parts:
        for v in bucket.values():
            v.clear()
    times = []
    meter = LoadMeter().start()
    for _ in range(rounds):
        r0 = time.perf_counter()
        metrics = engine.step()
        times.append(time.perf_counter() - r0)
    t3 = time.perf_counter()
    load = meter.stop()
    prices = engine.prices()
    breakdown = {
        "per_shard_median_s": [
            {name: statistics.median(v) for name, v in bucket.items()} for bucket in parts
        ],
        "own_rows": [spec.n_own for spec in engine.specs],
        "ghost_rows": [int(spec.ghost_ids.size) for spec in engine.specs],
    }
    per_shard = [sum(d.values()) for d in breakdown["per_shard_median_s"]]
    breakdown["slowest_shard_s"] = max(per_shard)
    breakdown["sum_shards_s"] = sum(per_shard)
    hwm = proc_status().get("VmHWM", 0)
    run = Run(
        t1 - t0, t2 - t1, t3 - t2, times, metrics, prices, hwm, 0, [],
        engine.partition.seconds, engine.partition.edge_cut, engine.bytes_per_round,
        breakdown=breakdown,
        load=load,
    )  # fmt: skip
    engine.shutdown()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return run


# ---- aggregation ----------------------------------------------------------------------------
def summarize(name: str, kind: str, n: int, k: int | None, threads, runs: list[Run],
              reference: Run | None, rounds: int) -> dict:  # fmt: skip
    wall = statistics.median(r.wall_s for r in runs)
    rows = {
        "config": name,
        "kind": kind,
        "n_agents": n,
        "workers": k,
        "numba_threads": threads,
        "rounds_timed": rounds,
        "repeats": len(runs),
        "wall_s": wall,
        "wall_s_all": [r.wall_s for r in runs],
        "rounds_per_s": rounds / wall,
        "agent_rounds_per_s": n * rounds / wall,
        "round_s_median": statistics.median(t for r in runs for t in r.round_s),
        "round_s_max": max(t for r in runs for t in r.round_s),
        "setup_s": statistics.median(r.setup_s for r in runs),
        "first_round_s": statistics.median(r.first_round_s for r in runs),
        "partition_s": runs[0].partition_s,
        "edge_cut": runs[0].edge_cut,
        "bytes_per_round": runs[0].bytes_per_round,
        "driver_hwm": max(r.driver_hwm for r in runs),
        "driver_rss_sampled": max(r.driver_rss_sampled for r in runs),
        "workers_mem": [
            {
                key: max((r.workers[i][key] or 0) for r in runs)
                for key in ("hwm", "rss_end", "rss_sampled", "pss_sampled")
            }
            for i in range(len(runs[0].workers))
        ],
        "ray_system": runs[-1].ray_system,
        "object_store": [r.store for r in runs],
        "breakdown": merge_breakdowns([r.breakdown for r in runs]),
        "code_consistent": all(r.code_ok for r in runs),
        "attempts": [r.attempts for r in runs],
        "own_cores": [r.load and r.load["own_cores"] for r in runs],
        "other_cores": [r.load and r.load["other_cores"] for r in runs],
        "final_excess_demand": runs[-1].metrics.excess_demand,
        "final_price_dispersion": runs[-1].metrics.price_dispersion,
        "final_round": runs[-1].metrics.round,
    }
    if reference is not None:
        rows["metrics_identical"] = all(same_metrics(r.metrics, reference.metrics) for r in runs)
        rows["prices_identical"] = all(
            r.prices_identical
            if r.prices_identical is not None
            else (r.prices is not None and np.array_equal(r.prices, reference.prices))
            for r in runs
        )
        rows["metrics_max_abs_diff"] = max(max_diff(r.metrics, reference.metrics) for r in runs)
    return rows


def merge_breakdowns(items: list[dict | None]) -> dict | None:
    """Median over repeats of the per-shard medians."""
    if not items or items[0] is None:
        return None
    out = dict(items[0])
    out["per_shard_median_s"] = [
        {part: statistics.median(b["per_shard_median_s"][i][part] for b in items) for part in d}
        for i, d in enumerate(items[0]["per_shard_median_s"])
    ]
    per_shard = [sum(d.values()) for d in out["per_shard_median_s"]]
    out["slowest_shard_s"] = max(per_shard)
    out["sum_shards_s"] = sum(per_shard)
    return out


def mib(x) -> str:
    return "–" if not x else f"{x / MIB:,.0f}"


def describe(row: dict) -> str:
    ident = row.get("metrics_identical")
    ident = (
        "not compared" if ident is None else ("yes" if ident and row["prices_identical"] else "NO")
    )
    workers = "/".join(mib(w["hwm"]) for w in row["workers_mem"]) or "–"
    return (
        f"{row['config']:>10}  N={row['n_agents']:>9,}  wall {row['wall_s']:8.3f} s  "
        f"{row['rounds_per_s']:7.2f} rounds/s  {row['agent_rounds_per_s'] / 1e6:8.2f} M agent-rounds/s  "
        f"setup {row['setup_s']:6.2f} s  driver HWM {mib(row['driver_hwm'])} MiB  "
        f"workers HWM {workers} MiB  bit-identical: {ident}"
    )


# ---- machine / provenance ---------------------------------------------------------------------
def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "numba", "scipy", "ray", "networkx", "pymetis"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_total_bytes": mem,
        "memory_total_gib": None if mem is None else round(mem / 2**30, 1),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": versions,
    }


def git_info() -> dict:
    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain")}


def kernel_hash() -> str:
    return hashlib.sha256((ROOT / "environment" / "tatonnement" / "kernel.py").read_bytes()).hexdigest()[:16]


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

DRIVER_MODULES = ("tatonnet.agents.rules", "tatonnet.environment.tatonnement.kernel", "tatonnet.environment.tatonnement.dynamics", "tatonnet.distributed.shard")


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


def main(argv=None) -> int:
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
        help=f"local Ray object store (default {OBJECT_STORE_MIB}, as run.py uses; the static "
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

    command = shlex.join([sys.executable.replace(str(ROOT) + "/", ""), *sys.argv])
    started = dt.datetime.now(dt.UTC)
    kh = kernel_hash()
    global GUARD
    guard = GUARD = CodeGuard()
    machine = machine_info()
    log(f"{machine['cpu_model']}, {machine['usable_cores']} cores, "
        f"{machine['memory_total_gib']} GiB; numba threads {machine['numba_threads']}")  # fmt: skip

    results: list[dict] = []
    cases: dict[str, dict] = {}
    ray_start: dict[str, float] = {}
    scaling_rows: dict[str, list[dict]] = {}

    if not scaling:
        case = Case(args.n, args.seed, args.generator)
        cases[str(case.n)] = case.info
        bench_case(case, args, ks, serial=True, breakdown=not args.no_breakdown,
                   results=results, ray_start=ray_start)  # fmt: skip
        del case
    if args.strong:
        case = Case(args.n, args.seed, args.generator)
        cases[str(case.n)] = case.info
        start = len(results)
        bench_case(case, args, ks, serial=True, breakdown=False, results=results,
                   ray_start=ray_start)  # fmt: skip
        for r in results[start:]:
            r["mode"] = "strong"
        scaling_rows["strong"] = strong_table(results[start:])
        del case
    if args.weak:
        n0 = int(args.per_worker)
        start = len(results)
        base = Case(n0, args.seed, args.generator)
        cases[str(n0)] = base.info
        runs = []
        for _ in range(args.repeats):
            if args.quiet_wait > 0:
                wait_quiet(args.quiet_wait)
            runs.append(base.inprocess(args.rounds, threads=1))
        results.append(summarize("inproc-1t", "inproc-1t", n0, None, 1, runs, None, args.rounds))
        log(describe(results[-1]))
        del base, runs
        for k in ks:
            case = Case(n0 * k, args.seed, args.generator)
            cases[str(case.n)] = case.info
            bench_case(case, args, [k], serial=False, breakdown=False, results=results,
                       ray_start=ray_start)  # fmt: skip
            del case
            gc.collect()
        for r in results[start:]:
            r["mode"] = "weak"
        scaling_rows["weak"] = weak_table(results[start:], n0)

    finished = dt.datetime.now(dt.UTC)
    kh_end = kernel_hash()
    if kh_end != kh:
        log("WARNING: environment/tatonnement/kernel.py changed during the run; results may mix versions")
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
        "cases": cases,
        "ray_start_s": ray_start,
        "object_store_mib": args.object_store_mib,
        "results": results,
        "scaling": scaling_rows,
    }
    all_identical = all(r.get("metrics_identical", True) and r.get("prices_identical", True)
                        for r in results)  # fmt: skip
    report["all_bit_identical"] = all_identical
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    log(f"final metrics bit-identical across all configurations: {all_identical}")
    log(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0 if all_identical else 1


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def strong_table(rows: list[dict]) -> list[dict]:
    serial = next(r for r in rows if r["config"] == "inproc-1t")
    allc = next(r for r in rows if r["config"] == "inproc")
    out = []
    for r in rows:
        k = r["workers"] or (1 if r["config"] == "inproc-1t" else r["numba_threads"])
        rate = r["agent_rounds_per_s"]
        out.append({
            "config": r["config"], "n_agents": r["n_agents"], "cores": k,
            "agent_rounds_per_s": rate,
            "speedup_vs_inproc_1t": rate / serial["agent_rounds_per_s"],
            "efficiency": rate / (k * serial["agent_rounds_per_s"]),
            "vs_inproc_all_cores": rate / allc["agent_rounds_per_s"],
        })  # fmt: skip
    return out


def weak_table(rows: list[dict], n0: int) -> list[dict]:
    serial = next(r for r in rows if r["config"] == "inproc-1t" and r["n_agents"] == n0)
    out = []
    for r in rows:
        if r["kind"] != "ray":
            continue
        k = r["workers"]
        inproc = next(
            (x for x in rows if x["config"] == "inproc" and x["n_agents"] == r["n_agents"]), None
        )
        rate = r["agent_rounds_per_s"]
        out.append({
            "config": r["config"], "n_agents": r["n_agents"], "cores": k,
            "agent_rounds_per_s": rate,
            "efficiency": rate / (k * serial["agent_rounds_per_s"]),
            "inproc_all_cores_agent_rounds_per_s": inproc and inproc["agent_rounds_per_s"],
            "vs_inproc_all_cores": inproc and rate / inproc["agent_rounds_per_s"],
        })  # fmt: skip
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Ray-sharded engine vs in-process engine",
        "",
        f"- date (UTC): {report['date_utc']}  (run took {report['duration_s']:.0f} s)",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu_model']}, {m['usable_cores']} usable cores "
        f"({m['logical_cores']} logical), {m['memory_total_gib']} GiB; numba threads "
        f"{m['numba_threads']}; ray {m['versions']['ray']}, numba {m['versions']['numba']}, "
        f"numpy {m['versions']['numpy']}",
        f"- code: {report['code']['label'] or report['code']['root']}; git "
        f"{report['git']['commit'] or 'n/a (not a git checkout)'}"
        + (" (working tree modified)" if report["git"]["dirty"] else "")
        + f"; source fingerprint {report['code']['source_fingerprint']}, "
        + (
            "unchanged during the run, Ray workers import the same files as the driver"
            if report["code"]["consistent"]
            and (report["code"]["module_files"] or {}).get("same", True)
            else f"**CHANGED during the run** ({', '.join(report['code']['changed_during'])}): "
            "driver and workers may have run different code"
        ),
        f"- economy: {report['economy']['goods']} goods, CES sigma={report['economy']['sigma']}, "
        f"Dirichlet shares, uniform[0.5,1.5] endowments; {report['economy']['graph']}; "
        f"{report['economy']['rule']}, gradient tracking",
        f"- timing: {report['timing']}",
        f"- all final metrics and prices bit-identical to the in-process engine: "
        f"**{'yes' if report['all_bit_identical'] else 'NO'}**",
        "",
        "Graph construction (not part of any configuration's setup):",
        "",
        "| N | edges | generator | graph s | ordering | ordering s |",
        "| ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for n, c in report["cases"].items():
        lines.append(
            f"| {int(n):,} | {c['n_edges']:,} | {c['generator']} | {c['graph_seconds']:.1f} | "
            f"{c['ordering']} | {c['ordering_seconds']:.1f} |"
        )
    if report["ray_start_s"]:
        lines += ["", "Ray start (`cluster.connect(K)`): " + ", ".join(
            f"K={k}: {s:.1f} s" for k, s in report["ray_start_s"].items())]  # fmt: skip
    lines += [
        "",
        "| config | mode | N | rounds | wall s (median) | rounds/s | agent-rounds/s | "
        "median round ms | setup s | partition s | first round s | edge cut | "
        "boundary MiB/round | driver peak RSS MiB | worker peak RSS MiB (each) | "
        "worker peak PSS MiB (each, sampled) | bit-identical | CPU used by us / by others "
        "(cores, per repeat) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        ident = r.get("metrics_identical")
        ident = "not compared" if ident is None else (
            "yes" if ident and r["prices_identical"] else f"NO (max diff {r['metrics_max_abs_diff']:.3g})")  # fmt: skip
        walls = ", ".join(f"{w:.2f}" for w in r["wall_s_all"])
        load = ", ".join(
            ("?" if o is None else f"{o:.2f} / {x:.2f}") + (f" (try {a})" if a > 1 else "")
            for o, x, a in zip(r["own_cores"], r["other_cores"], r["attempts"], strict=True)
        )
        lines.append(
            f"| {r['config']} | {r.get('mode', 'default')} | {r['n_agents']:,} | "
            f"{r['rounds_timed']} | {r['wall_s']:.2f} ({walls}) | {r['rounds_per_s']:.2f} | "
            f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {1e3 * r['round_s_median']:.1f} | "
            f"{r['setup_s']:.2f} | "
            f"{'–' if r['partition_s'] is None else f'{r["partition_s"]:.2f}'} | "
            f"{r['first_round_s']:.2f} | "
            f"{'–' if r['edge_cut'] is None else f'{r["edge_cut"]:,}'} | "
            f"{'–' if r['bytes_per_round'] is None else f'{r["bytes_per_round"] / MIB:.2f}'} | "
            f"{mib(r['driver_hwm']) if r['kind'] != 'shards' else '–'} | "
            f"{' / '.join(mib(w['hwm']) for w in r['workers_mem']) or '–'} | "
            f"{' / '.join(mib(w['pss_sampled']) for w in r['workers_mem']) or '–'} | {ident} | "
            f"{load} |"
        )
    lines += [
        "",
        "`inproc`: NetworkTatonnement on all numba threads; `inproc-1t`: one thread; "
        "`ray-K`: ShardEngine on K Ray actors (one numba thread each); `shards-K`: "
        "ShardEngine(use_ray=False), K one-thread shards run one after another in the "
        "driver (a diagnostic: its wall time is the sum over shards). Driver peak RSS is "
        "VmHWM after resetting it before each configuration (so it includes the graph "
        "and economy the driver holds); worker peak RSS is each actor's VmHWM; PSS counts "
        "object-store pages shared between processes once. CPU used by others: busy "
        "time of the whole machine (/proc/stat) minus this process tree's, during the "
        "timed rounds; well above 0 means another job shared the cores and the timing "
        "is not clean.",
    ]
    ray_rows = [r for r in report["results"] if r["kind"] == "ray" and r["ray_system"]]
    if ray_rows:
        lines += [
            "",
            "Ray system processes at the end of each Ray configuration (RSS / peak) and the "
            f"object store ({report.get('object_store_mib', OBJECT_STORE_MIB)} MiB, "
            "`--object-store-mib`):",
            "",
        ]
        for r in ray_rows:
            procs = ", ".join(
                f"{p['name']} {mib(p.get('VmRSS'))} / {mib(p.get('VmHWM'))} MiB"
                for p in r["ray_system"]
            )
            stores = r.get("object_store") or []
            last = stores[-1] if stores else None
            if last and "error" not in last:
                procs += (
                    f"; object store after the timed rounds: {last['plasma_mib']} MiB in use, "
                    f"{last['spilled_mib']} MiB spilled to disk so far"
                )
            lines.append(f"- {r['config']} (N={r['n_agents']:,}): {procs}")
    shards = [r for r in report["results"] if r["kind"] == "shards"]
    if shards:
        lines += [
            "",
            "Where a round's time goes (medians per round, then the median over repeats; shard "
            "times from `shards-K`; Ray overhead = Ray round - slowest shard's "
            "receive+step+outgoing):",
            "",
            "| K | Ray round ms | slowest shard ms | per shard: receive / step / outgoing ms | "
            "own / ghost rows | Ray overhead ms | in-process 1-thread round ms |",
            "| ---: | ---: | ---: | --- | --- | ---: | ---: |",
        ]
        serial = next((r for r in report["results"] if r["config"] == "inproc-1t"), None)
        for s in shards:
            ray = next((r for r in report["results"]
                        if r["kind"] == "ray" and r["workers"] == s["workers"]
                        and r["n_agents"] == s["n_agents"]), None)  # fmt: skip
            b = s["breakdown"]
            per = "; ".join(
                f"{1e3 * d['receive']:.1f} / {1e3 * d['step']:.1f} / {1e3 * d['outgoing']:.1f}"
                for d in b["per_shard_median_s"]
            )
            rows = "; ".join(
                f"{o:,} / {g:,}" for o, g in zip(b["own_rows"], b["ghost_rows"], strict=True)
            )
            ray_ms = None if ray is None else 1e3 * ray["round_s_median"]
            lines.append(
                f"| {s['workers']} | {'–' if ray_ms is None else f'{ray_ms:.1f}'} | "
                f"{1e3 * b['slowest_shard_s']:.1f} | {per} | {rows} | "
                f"{'–' if ray_ms is None else f'{ray_ms - 1e3 * b["slowest_shard_s"]:.1f}'} | "
                f"{'–' if serial is None else f'{1e3 * serial["round_s_median"]:.1f}'} |"
            )
    for mode, rows in report["scaling"].items():
        lines += ["", f"{mode.capitalize()} scaling (efficiency = rate / (cores x rate of "
                  "inproc-1t" + (" at N = per-worker size" if mode == "weak" else "") + ")):", ""]  # fmt: skip
        if mode == "strong":
            lines += [
                "| config | N | cores | agent-rounds/s | speedup vs inproc-1t | efficiency | "
                "vs inproc (all cores) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in rows:
                lines.append(
                    f"| {r['config']} | {r['n_agents']:,} | {r['cores']} | "
                    f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {r['speedup_vs_inproc_1t']:.2f} | "
                    f"{r['efficiency']:.0%} | {r['vs_inproc_all_cores']:.2f} |"
                )
        else:
            lines += [
                "| config | N | workers | agent-rounds/s | efficiency | inproc (all cores) "
                "agent-rounds/s at same N | ray / inproc |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in rows:
                inp = r["inproc_all_cores_agent_rounds_per_s"]
                lines.append(
                    f"| {r['config']} | {r['n_agents']:,} | {r['cores']} | "
                    f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {r['efficiency']:.0%} | "
                    f"{'–' if inp is None else f'{inp / 1e6:.2f} M'} | "
                    f"{'–' if inp is None else f'{r["vs_inproc_all_cores"]:.2f}'} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
