"""Graph rows from a Parquet edge list: each shard reads its own slice of the file.

``network.kind = "file"`` under ``builder = "shards"`` takes ``network.path``, a
``.parquet`` file with the integer columns ``source`` and ``target``, one undirected edge
a row (other columns are ignored). The file's ids **are** the agent ids: every id lies in
``0..n_agents-1`` (the scenario's agent count) and every agent has an edge. There is no
global reordering pass (``network.order`` is not used): the file's id order is the
locality order, and shards own contiguous id ranges, so a file whose neighbours have near
ids (a space-filling curve, reverse Cuthill–McKee, ...) gives shards small boundaries.

Slices
------
The file's rows ``0..R-1`` are split evenly: slice ``k`` of ``K`` holds the rows
``floor(k R / K)..floor((k + 1) R / K) - 1``, and shard ``k`` of a ``K``-shard build reads
only that slice (:func:`row_slice`): the row groups it overlaps
(``ParquetFile.read_row_groups``, the two edge columns), cut to the slice. A row group is
the smallest part Parquet reads, so a shard reads at most one row group beyond each end of
its slice: files whose row groups hold at most about ``R / K`` rows (pyarrow's
``row_group_size``) are read with little waste.

Edge contract
-------------
The decided edges of a slice (:func:`decided_edges`) are its rows with self-loops dropped,
each edge as ``(min, max)``, repeats within the slice removed, sorted. The assembly
(:func:`tatonnet.environment.build.assemble.route_edges` sends an edge to the owners of
both ends; :func:`~tatonnet.environment.build.assemble.own_csr` counts repeated and
reversed edges once) needs neither direction nor uniqueness across slices: an edge the
file lists in two slices, in either direction, is one edge, so every ``K`` builds the
same rows bit for bit.

Checks (one-line :class:`~tatonnet.environment.network.NetworkError`): when the scenario
is loaded (:func:`check_edge_file`: the suffix, that the file exists and is Parquet, the
two integer columns, enough rows for a connected graph); per slice, while it is read
(missing values, ids outside ``0..n_agents-1``, an unreadable row group); once the rows are
built, an agent with no edge and a disconnected graph
(:func:`tatonnet.environment.build.shard_rows.check_reports`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tatonnet.environment.errors import first_line
from tatonnet.environment.network import (
    EDGE_COLUMNS,
    NetworkError,
    no_nulls,
    open_edge_parquet,
    sorted_unique,
)

__all__ = ["check_edge_file", "decided_edges", "row_slice"]

SUFFIX = ".parquet"


def check_edge_file(path, n_agents: int) -> None:
    """Raise :class:`NetworkError` (one line) unless ``path`` can be a shard-read edge list
    of ``n_agents`` agents (what the file's footer tells: suffix, columns, row count)."""
    if not path:
        raise NetworkError("network.path: a 'file' network needs a path")
    shown = repr(str(path))
    if Path(path).suffix.lower() != SUFFIX:
        raise NetworkError(
            f'builder "shards": network.path {shown} is not a Parquet edge list ({SUFFIX}, '
            f"integer columns {' and '.join(EDGE_COLUMNS)}); other graph files are read by "
            'the driver (builder = "driver")'
        )
    if not Path(path).is_file():
        raise NetworkError(f"network.path: no such file {shown}")
    n = int(n_agents)
    if n < 2:
        raise NetworkError(f"network: a file network needs at least 2 agents, got {n}")
    rows = open_edge_parquet(path, integer_ids=True).metadata.num_rows
    if rows < n - 1:
        raise NetworkError(
            f"network.path: {shown} has {rows} rows (edges); a connected graph of {n} agents "
            f"needs at least {n - 1}"
        )


def row_slice(n_rows: int, k: int, n_slices: int) -> tuple[int, int]:
    """Rows ``lo..hi-1`` of slice ``k`` of ``n_slices``: ``lo = floor(k R / K)``."""
    return k * n_rows // n_slices, (k + 1) * n_rows // n_slices


def _read_rows(file, lo: int, hi: int):
    """Rows ``lo..hi-1`` of the edge columns: the row groups they overlap, cut to them."""
    meta = file.metadata
    sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    ends = np.cumsum(sizes)
    first = int(np.searchsorted(ends, lo, side="right"))  # the group holding row lo
    last = int(np.searchsorted(ends, hi - 1, side="right"))  # the group holding row hi-1
    table = file.read_row_groups(
        list(range(first, last + 1)), columns=list(EDGE_COLUMNS), use_threads=False
    )
    return table.slice(lo - int(ends[first] - sizes[first]), hi - lo)


def _ids(column, n: int, name: str, path) -> np.ndarray:
    """An integer id column as int64, every id checked to lie in ``0..n-1``."""
    import pyarrow.compute as pc

    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < 0 or high >= n):
        bad = low if low < 0 else high
        raise NetworkError(
            f"network.path: {str(path)!r} column {name!r} holds id {bad}, outside "
            f"0..{n - 1} (the file's ids are the agent ids of the scenario's {n} agents)"
        )
    return column.to_numpy().astype(np.int64, copy=False)


def decided_edges(path, n_agents: int, k: int, n_slices: int) -> tuple[np.ndarray, np.ndarray]:
    """The undirected edges slice ``k`` of ``n_slices`` of the file decides: ``(us, vs)``.

    Two int64 arrays of equal length, ``us < vs``, sorted by ``(u, v)``, without repeats
    (within the slice; see the module docstring). Reads only the slice's row groups; raises
    :class:`NetworkError` (one line) for missing values, ids outside ``0..n_agents-1`` or
    an unreadable file.
    """
    n = int(n_agents)
    file = open_edge_parquet(path, integer_ids=True)
    lo, hi = row_slice(file.metadata.num_rows, int(k), int(n_slices))
    if lo == hi:
        none = np.empty(0, dtype=np.int64)
        return none, none.copy()
    try:
        table = _read_rows(file, lo, hi)
    except Exception as exc:  # a damaged row group: pyarrow raises OSError, ArrowInvalid, ...
        raise NetworkError(f"network.path: cannot read {str(path)!r}: {first_line(exc)}") from None
    no_nulls(table, path)
    a, b = (_ids(table.column(name), n, name, path) for name in EDGE_COLUMNS)
    del table
    keep = a != b
    a, b = a[keep], b[keep]
    key = sorted_unique(np.minimum(a, b) * n + np.maximum(a, b))  # n^2 < 2^63 (MAX_AGENTS)
    us, vs = np.divmod(key, n)
    return us, vs
