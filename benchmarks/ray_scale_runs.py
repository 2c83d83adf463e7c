"""One configuration of ``ray_scale.py``, measured: its timed rounds, the memory and CPU it
used (read from ``/proc``, Linux only), and the summary of its repeats.

* ``run_inprocess`` — :class:`NetworkTatonnement`, ping-pong spare state, on all numba
  threads or on ``threads``;
* ``run_ray`` — :class:`ShardEngine` on K Ray actors; each worker's ``VmHWM`` is read just
  before the actors are killed, RSS / PSS sampled every 0.25 s during the run;
* ``run_shards_inprocess`` — ``ShardEngine(use_ray=False)``, K one-thread shards run one
  after another in this process, each shard's ``receive`` / ``step`` / ``outgoing`` timed;
* ``summarize`` — one result row from the repeats (medians), compared bit for bit with the
  reference run.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import statistics
import threading
import time
from contextlib import contextmanager
from unittest import mock

import numba
import numpy as np

from tatonnet.distributed.engine import ShardEngine
from tatonnet.environment.tatonnement import dynamics
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement, RoundMetrics


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


# ---- one configuration --------------------------------------------------------------------
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
