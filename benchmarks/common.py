"""What the benchmarks share: the small-world graph, timing, the machine and software they
ran on, and writing their results.

The benchmarks run as scripts (``python benchmarks/x.py``, from the repository root or from
this folder); Python puts the script's folder first on ``sys.path``, so they import this
module as ``common``.

The graph: :func:`watts_strogatz_edges` is a vectorized Watts-Strogatz generator
(networkx needs minutes and several GiB at 10^6 agents): a ring lattice where every node
links to its k/2 successors, then every lattice edge independently, with probability p, has
its far end replaced by a uniform node, redrawn while it is the node itself or duplicates
an edge (so no multi-edges and exactly n·k/2 edges), and the whole graph redrawn (next
attempt) if it is disconnected — the same distribution as
``networkx.connected_watts_strogatz_graph``, not the same draws. Attempt ``a`` draws from
``SeedSequence(seed, spawn_key=(*stream, a))``: ``ray_scale.py`` uses ``stream=(1,)`` (its
economy draws from ``(0,)``), ``engine_vs_mesa.py`` ``stream=()``, so the two give
different graphs for one seed; each keeps its own, the graph its committed figures were
measured on (``tests/test_benchmarks_common.py`` pins both).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

ROOT = Path(__file__).resolve().parents[1]  # the checkout (the tatonnet package)
RESULTS = ROOT / "benchmarks" / "results"


# ---- the graph ----------------------------------------------------------------------------
def is_connected(edges: np.ndarray, n: int) -> bool:
    """Whether the undirected graph on ``n`` nodes with ``edges: (m, 2)`` is connected."""
    adjacency = scipy.sparse.coo_array(
        (np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    ).tocsr()
    n_components, _ = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    return n_components == 1


def watts_strogatz_edges(
    n: int, k: int, p: float, seed: int, tries: int = 100, stream: tuple[int, ...] = ()
) -> np.ndarray:
    """``(n*k/2, 2)`` int64 edges of a connected Watts-Strogatz graph (see the module doc).

    Row ``i*k/2 + j`` is node ``i``'s edge to its ``j+1``-th successor, or where it was
    rewired to. ``stream`` is the spawn-key prefix of the random draws.
    """
    if not (2 <= k < n and k % 2 == 0):
        raise ValueError(f"k must be even with 2 <= k < n, got k={k}, n={n}")
    half = k // 2
    for attempt in range(tries):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*stream, attempt)))
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
            sorted_key = key[order]
            duplicate = np.zeros(u.size, dtype=bool)
            duplicate[order[1:]] = sorted_key[1:] == sorted_key[:-1]
            todo = np.flatnonzero(duplicate | (u == v))
        edges = np.stack([u, v], axis=1)
        if is_connected(edges, n):
            return edges
    raise RuntimeError(f"no connected Watts-Strogatz graph in {tries} tries")


def ordered_small_world(n: int, k: int, p: float, seed: int, generator: str = "numpy",
                        stream: tuple[int, ...] = ()):  # fmt: skip
    """The small world relabelled by locality, as ``tatonnet.environment.scenario.build_network_for``
    does; returns ``(network, info)`` with what it cost.

    ``generator``: ``"numpy"`` (:func:`watts_strogatz_edges` on ``stream``) or ``"networkx"``
    (``networkx.connected_watts_strogatz_graph``, seeded with ``seed``).
    """
    from tatonnet.environment.network import from_edges
    from tatonnet.environment.ordering import locality_order, reorder

    t0 = time.perf_counter()
    if generator == "networkx":
        import networkx as nx

        G = nx.connected_watts_strogatz_graph(n, k, p, tries=100, seed=seed)
        edges = np.array(G.edges, dtype=np.int64).reshape(-1, 2)
        del G
    elif generator == "numpy":
        edges = watts_strogatz_edges(n, k, p, seed, stream=stream)
    else:
        raise ValueError(f"generator must be 'numpy' or 'networkx', got {generator!r}")
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


# ---- timing -------------------------------------------------------------------------------
def calibrate(run: Callable[[int], float], seconds: float) -> int:
    """Rounds for one repetition of about ``seconds``, given ``run(rounds) -> seconds``
    (after a warm-up of 2 rounds)."""
    run(2)
    rounds, elapsed = 1, run(1)
    while elapsed < 0.2 * seconds:
        rounds *= 4
        elapsed = run(rounds)
    return max(1, int(np.ceil(rounds * seconds / elapsed)))


def summary(values: Iterable[float]) -> dict:
    """Median, min, max and every value of the repetitions."""
    values = [float(v) for v in values]
    return {"median": float(np.median(values)), "min": min(values), "max": max(values),
            "all": values}  # fmt: skip


# ---- the machine and the software ---------------------------------------------------------
def cpuinfo() -> dict[str, str]:
    """The first value of every key of ``/proc/cpuinfo`` (the first CPU's); {} elsewhere."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_model(detail: bool = False) -> str:
    """The CPU's model name; with ``detail``, its family, model and cache size too."""
    info = cpuinfo()
    model = info.get("model name", platform.processor() or "")
    if detail and "cpu family" in info:
        model += f" (family {info['cpu family']} model {info['model']}, {info.get('cache size', '?')} cache)"
    return model


def memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """``__version__`` of each package, None where it does not import."""
    versions = {}
    for name in names:
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing or broken package is recorded, not fatal
            versions[name] = None
    return versions


def numba_threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return str(numba.config.THREADING_LAYER)


VERSIONED = ("numpy", "numba", "scipy", "ray", "networkx", "pymetis")


def machine_info(packages: Iterable[str] = VERSIONED) -> dict:
    """CPU, cores, memory, numba threads, Python, platform and package versions."""
    mem = memory_total_bytes()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_total_bytes": mem,
        "memory_total_gib": None if mem is None else round(mem / 2**30, 1),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "versions": package_versions(packages),
    }


def git_info(root: Path = ROOT) -> dict:
    """The checkout's commit and ``git status --porcelain`` (None where git is missing)."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except Exception:  # noqa: BLE001
            return None

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain")}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- results ------------------------------------------------------------------------------
def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def write_report(json_path: Path | str, report: dict, md_path: Path | str | None = None,
                 text: str | None = None) -> None:  # fmt: skip
    """Write ``report`` as indented JSON (numpy values converted) and, if given, ``text``."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=json_default) + "\n",
                         encoding="utf-8")  # fmt: skip
    if md_path is not None:
        Path(md_path).write_text(text, encoding="utf-8")


# ---- memory of a process tree ----------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (Ray daemonizes none of its processes here)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def _kib(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    """Samples PSS of a process tree until :meth:`stop`."""

    def __init__(self, root: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.peak_pss_kib = 0
        self.peak_rss_kib: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            for pid in process_tree(self.root):
                pss = _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
                hwm = _kib(f"/proc/{pid}/status", "VmHWM:")
                if pss is None:
                    continue
                total += pss
                if hwm is not None:
                    self.peak_rss_kib[pid] = max(self.peak_rss_kib.get(pid, 0), hwm)
                if pid not in self.names:
                    try:
                        self.names[pid] = (
                            Path(f"/proc/{pid}/cmdline")
                            .read_bytes()
                            .split(b"\0")[0]
                            .decode(errors="replace")
                            .rsplit("/", 1)[-1][:40]
                        )
                    except OSError:
                        self.names[pid] = "?"
            self.peak_pss_kib = max(self.peak_pss_kib, total)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_tatonnet(args: list[str], out: Path) -> tuple[dict, float, MemorySampler]:
    """``python -m tatonnet ARGS --quiet --out OUT`` watched by a :class:`MemorySampler`;
    returns its ``summary.json``, wall seconds and the sampler (raises if it failed)."""
    import sys

    cmd = [sys.executable, "-m", "tatonnet", *map(str, args), "--quiet", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    sampler = MemorySampler(proc.pid)
    sampler.start()
    _, stderr = proc.communicate()
    sampler.stop()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {stderr.strip()[-400:]}")
    return json.loads((Path(out) / "summary.json").read_text()), wall, sampler
