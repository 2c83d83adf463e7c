"""Size guards: hard limits on a scenario's size and the memory a run of it needs.

Two kinds of refusal, both before anything is allocated:

* **Hard limits** (:data:`MAX_AGENTS`, :data:`MAX_GOODS`, :data:`MAX_EDGES`,
  :data:`MAX_ROUNDS`, :data:`MAX_NESTING`, :data:`MAX_FILE_BYTES`): far above any
  sensible run, below what crashes (int32 CSR indices, a recursion error in the parser, a
  10^12-agent allocation). Checked when a scenario or study file is validated, so they
  hold on every machine.
* **Memory**: :func:`estimate_bytes` (a rough upper estimate of the peak resident memory
  of building and running a scenario in one process) against :func:`available_memory`
  (this machine's ``MemAvailable``, capped by the cgroup limit). :func:`check_memory`
  refuses with one line giving both. Callers with other memory (a joined Ray cluster)
  compare :func:`estimate_bytes` with their own figure.

The estimate was calibrated on this project's builds (peak RSS of ``MarketModel`` at 10^5
and 3 x 10^5 agents, 5 and 20 goods, small world k = 10: 2.3-2.7 KiB per agent, of
which ~2 KiB is networkx's dict-of-dicts graph while the generator runs); it errs ~20%
high.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Most agents in one scenario (10^8: ~250 GB of state and graph; a 10^12 request dies).
MAX_AGENTS = 100_000_000
#: Most goods (price columns) in one scenario.
MAX_GOODS = 10_000
#: Most directed adjacency entries of a network (the CSR indices are int32).
MAX_EDGES = 2**31 - 1
#: Most rounds of one run (the per-round history is kept in memory).
MAX_ROUNDS = 1_000_000_000
#: Deepest nesting of tables / arrays in a scenario or study file (a scenario needs 4).
MAX_NESTING = 16
#: Largest scenario or study file read (a scenario is a few hundred bytes).
MAX_FILE_BYTES = 16 * 2**20
#: Largest seed (seeds are stored as int64).
MAX_SEED = 2**63 - 1

#: float64 values per agent and good held at the peak: economy (endowments, shares), two
#: states (coords, tracker, excess each), the signal scale, draws and their permuted copies.
FLOATS_PER_AGENT_GOOD = 16
#: bytes per agent besides the per-good arrays (family, sigma, group, degrees, node dict).
BYTES_PER_AGENT = 300
#: Larger models create Mesa agents only on demand (``MarketModel.trader(i)``).
MESA_AGENTS_UP_TO = 200_000

#: extra bytes per agent of a bilateral-trade run (holdings, hops and flows, the per-edge
#: accounts, the measurements and tables written at the end): 10^5 Cobb-Douglas traders
#: with 4 goods, 50 rounds, peaked at 0.47 GB (4.7 KiB an agent, ~0.3 GB of it the process's
#: libraries; benchmarks/trade_scale.py), against the 4.0 KiB estimated without trade.
TRADE_BYTES_PER_AGENT = 2 * 1024

#: bytes per Mesa agent object (created up front up to MESA_AGENTS_UP_TO agents).
BYTES_PER_MESA_AGENT = 1_000
#: bytes per directed adjacency entry while the networkx generator runs (dict-of-dicts),
#: more than the CSR's 12 bytes it ends as.
BYTES_PER_EDGE = 200
#: the same two figures when the shards' builder draws the economy (``builder = "shards"``:
#: no networkx graph, no permuted copies; measured peak RSS, see docs/07-performance.md).
FLOATS_PER_AGENT_GOOD_SHARDS = 12
BYTES_PER_EDGE_SHARDS = 40
#: bytes per round and good of the per-round history (Python floats in DataCollector lists).
BYTES_PER_ROUND_GOOD = 2 * 40
#: bytes per round besides (round number, excess demand, dispersion).
BYTES_PER_ROUND = 3 * 40
#: fixed cost of the interpreter, numba, pyarrow (not counted against the scenario).
BASELINE_BYTES = 0


class SizeError(ValueError):
    """A scenario is too large for its limits or for this machine (one-line message)."""


def directed_edges(kind: str, n_agents: int, k: float | None = None, m: int | None = None,
                   path: str | None = None) -> int:  # fmt: skip
    """Directed adjacency entries (self-loops included) a network ``kind`` will have.

    Exact for complete, ring and the CSR of small-world; expected for random-geometric;
    for a ``file``, an upper bound from its size (an edge line takes at least 4 bytes), or
    for a ``.parquet`` edge list from its row count (one edge a row).
    """
    n = int(n_agents)
    if kind == "central":
        return 0
    if kind == "complete":
        return n * n
    if kind == "ring":
        return 3 * n
    if kind == "grid":
        return 5 * n
    if kind in ("small-world", "random-geometric"):
        return int(math.ceil(((10 if k is None else k) + 1) * n))
    if kind == "scale-free":
        return (2 * (5 if m is None else int(m)) + 1) * n
    if kind == "file":
        if path and str(path).lower().endswith(".parquet"):
            return 2 * _parquet_rows(path) + n  # compressed: its size bounds nothing
        try:
            size = Path(path).stat().st_size if path else 0
        except OSError:
            size = 0
        return 2 * (size // 4) + n
    return 11 * n


def _parquet_rows(path) -> int:
    """Rows of a Parquet file from its footer (0 if it cannot be read: its reader says why)."""
    import pyarrow.parquet as pq

    try:  # a regular file only: reading a FIFO or a device would block or never end
        return int(pq.read_metadata(path).num_rows) if Path(path).is_file() else 0
    except Exception:  # noqa: BLE001 - any unreadable file; reported where it is read
        return 0


def estimate_bytes(n_agents: int, n_goods: int, edges: int, n_buffers: int = 0,
                   rounds: int = 0, mesa_agents: bool = False,
                   builder: str = "driver") -> int:  # fmt: skip
    """Rough peak resident bytes of building and running one scenario in one process.

    Parameters
    ----------
    n_agents, n_goods : the economy's size
    edges : directed adjacency entries (:func:`directed_edges`)
    n_buffers : the rule's optimizer buffers per agent and good (momentum, Adam moments)
    rounds : rounds of per-round history kept in memory
    mesa_agents : whether one Mesa agent object per agent is created
    builder : "driver" or "shards" (who draws the economy; the shards need less)
    """
    n, g = int(n_agents), int(n_goods)
    shards = builder == "shards"
    floats = FLOATS_PER_AGENT_GOOD_SHARDS if shards else FLOATS_PER_AGENT_GOOD
    per_agent = (floats + int(n_buffers)) * 8 * g + BYTES_PER_AGENT
    per_agent += BYTES_PER_MESA_AGENT if mesa_agents else 0
    history = int(rounds) * (BYTES_PER_ROUND + BYTES_PER_ROUND_GOOD * g)
    per_edge = BYTES_PER_EDGE_SHARDS if shards else BYTES_PER_EDGE
    return BASELINE_BYTES + n * per_agent + int(edges) * per_edge + history


def available_memory() -> int | None:
    """Bytes this process can still allocate: ``MemAvailable`` (or free pages), capped by
    the cgroup's ``memory.max - memory.current``; None when unknown."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            avail = min(avail, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(int(avail), 0)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(needed: int, what: str, available: int | None = None) -> None:
    """Raise :class:`SizeError` when ``needed`` bytes do not fit ``available`` (default:
    :func:`available_memory`; no check when unknown)."""
    available = available_memory() if available is None else available
    if available is not None and needed > available:
        raise SizeError(
            f"{what}: needs about {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} available on this machine; use fewer agents, "
            "goods or edges"
        )
