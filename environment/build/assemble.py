"""A shard's rows of the network from the edges decided anywhere, without the whole graph.

Building a shard-built economy takes three steps per shard ``k`` (ids ``start..stop-1``);
between steps, shards exchange only what concerns their boundary:

1. **decide** — :func:`route_edges`: the edges this shard's rows decide
   (:func:`tatonnet.environment.build.graphs.decided_edges`), grouped by every shard that
   owns an endpoint (each edge goes to both owners).
2. **rows** — :func:`own_csr`: the shard's closed-neighbourhood CSR rows from the edges it
   received (global column ids, sorted, deduplicated, itself included), then
   for each neighbouring shard, the own rows it reads (edges are symmetric, so a shard
   knows who reads it without being told), and the local components (:func:`local_components`) for the distributed connectivity check
   (:func:`merge_components`).
3. **weights** — with the degrees and endowments of its ghosts (sent by their owners, in
   id order), :func:`metropolis_weights` and :func:`signal_scale`.

Every per-row result is taken in the order the single-process build takes it (columns in
id order, sums sequential from 0.0), so the rows are bit-identical to
:func:`tatonnet.environment.network.from_edges` and to
:class:`tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`'s signal scale on
the whole graph.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components

from tatonnet.environment.network import sorted_unique


def owner_of(ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Shard owning each id, given the shards' first ids ``starts`` (sorted)."""
    return np.searchsorted(starts, ids, side="right") - 1


def route_edges(us: np.ndarray, vs: np.ndarray, starts: np.ndarray) -> dict[int, tuple]:
    """Edges ``(u, v)`` grouped by each shard owning ``u`` or ``v``: {shard: (us, vs)}."""
    if starts.size == 1:
        return {0: (us, vs)}
    ou, ov = owner_of(us, starts), owner_of(vs, starts)
    seen = np.bincount(ou, minlength=starts.size) + np.bincount(ov, minlength=starts.size)
    out = {}
    for d in np.flatnonzero(seen).tolist():
        mask = (ou == d) | (ov == d)
        out[int(d)] = (us[mask], vs[mask])
    return out


@numba.njit(cache=True)
def _count_rows(start, stop, us, vs, fill):
    for e in range(us.shape[0]):
        u, v = us[e], vs[e]
        if u == v:
            continue
        if start <= u < stop:
            fill[u - start] += 1
        if start <= v < stop:
            fill[v - start] += 1


@numba.njit(cache=True)
def _fill_rows(start, stop, us, vs, indptr, fill, cols):
    for e in range(us.shape[0]):
        u, v = us[e], vs[e]
        if u == v:
            continue
        if start <= u < stop:
            r = u - start
            cols[indptr[r] + fill[r]] = v
            fill[r] += 1
        if start <= v < stop:
            r = v - start
            cols[indptr[r] + fill[r]] = u
            fill[r] += 1


@numba.njit(cache=True)
def _sort_dedupe(indptr, cols, out_indptr):
    """Sort each row's columns and drop repeats, compacting ``cols`` in place."""
    o = indptr.shape[0] - 1
    w = 0
    out_indptr[0] = 0
    for r in range(o):
        lo, hi = indptr[r], indptr[r + 1]
        if hi - lo > 64:
            cols[lo:hi] = np.sort(cols[lo:hi])
        else:  # insertion sort in place: rows are short, no allocation
            for a in range(lo + 1, hi):
                c = cols[a]
                b = a - 1
                while b >= lo and cols[b] > c:
                    cols[b + 1] = cols[b]
                    b -= 1
                cols[b + 1] = c
        last = -1
        for a in range(lo, hi):
            c = cols[a]
            if c != last:
                cols[w] = c
                w += 1
                last = c
        out_indptr[r + 1] = w
    return w


def own_csr(start: int, stop: int, edge_parts) -> tuple[np.ndarray, np.ndarray]:
    """Closed-neighbourhood CSR rows of ids ``start..stop-1`` from edge parts ``(us, vs)``.

    Returns ``indptr`` (o+1,) int64 and ``cols`` (nnz,) int64 global ids, each row sorted,
    without repeats, including the row itself. Edges with no endpoint in the range are
    ignored; repeated and reversed edges count once.
    """
    parts = [(np.ascontiguousarray(u, dtype=np.int64), np.ascontiguousarray(v, dtype=np.int64))
             for u, v in edge_parts]  # fmt: skip
    o = stop - start
    fill = np.ones(o, dtype=np.int64)  # the row itself
    for us, vs in parts:
        _count_rows(start, stop, us, vs, fill)
    indptr = np.zeros(o + 1, dtype=np.int64)
    np.cumsum(fill, out=indptr[1:])
    cols = np.empty(indptr[-1], dtype=np.int64)
    cols[indptr[:-1]] = np.arange(start, stop)
    fill[:] = 1
    for us, vs in parts:
        _fill_rows(start, stop, us, vs, indptr, fill, cols)
    out_indptr = np.empty(o + 1, dtype=np.int64)
    nnz = _sort_dedupe(indptr, cols, out_indptr)
    return out_indptr, cols[:nnz]  # a view: the repeats cut off are few


def ghost_ids(start: int, stop: int, cols: np.ndarray) -> np.ndarray:
    """Sorted global ids of the out-of-range neighbours (the shard's ghosts)."""
    return sorted_unique(cols[(cols < start) | (cols >= stop)])


@numba.njit(cache=True, parallel=True)
def _local_columns(start, stop, cols, ghosts, out):
    o = stop - start
    for e in numba.prange(cols.shape[0]):
        c = cols[e]
        if start <= c < stop:
            out[e] = c - start
        else:
            out[e] = o + np.searchsorted(ghosts, c)


def local_columns(start: int, stop: int, cols: np.ndarray, ghosts: np.ndarray) -> np.ndarray:
    """Columns as local rows: own ids ``id - start``, ghosts ``o + position``; int32."""
    out = np.empty(cols.shape[0], dtype=np.int32)
    _local_columns(start, stop, cols, ghosts, out)
    return out


@numba.njit(cache=True, parallel=True)
def _metropolis(indptr, local, degree, out):
    o = indptr.shape[0] - 1
    for r in numba.prange(o):  # rows are independent: the same bits on any thread count
        s = 0.0
        diag = -1
        for e in range(indptr[r], indptr[r + 1]):
            c = local[e]
            if c == r:
                diag = e
                out[e] = 0.0
            else:
                out[e] = 1.0 / (1.0 + max(degree[r], degree[c]))
            s += out[e]
        out[diag] = 1.0 - s


def metropolis_weights(indptr, local, degree) -> np.ndarray:
    """``W_ij = 1 / (1 + max(d_i, d_j))``, ``W_ii = 1 - sum_j W_ij`` (the sum in column
    order, as :func:`tatonnet.environment.network.from_edges` takes it); ``degree`` (o+h,)
    of own rows then ghosts, neighbours excluding oneself."""
    out = np.empty(local.shape[0])
    _metropolis(indptr, local, np.ascontiguousarray(degree, dtype=np.int64), out)
    return out


@numba.njit(cache=True, parallel=True)
def _neighbourhood_sums(indptr, local, x, out):
    o = indptr.shape[0] - 1
    g = x.shape[1]
    for r in numba.prange(o):
        for j in range(g):
            out[r, j] = 0.0
        for e in range(indptr[r], indptr[r + 1]):
            c = local[e]
            for j in range(g):
                out[r, j] += x[c, j]


def signal_scale(indptr, local, endowments, tracking: bool, mean_endowment) -> np.ndarray:
    """1 / the neighbourhood's supply scale per own row and good (o, g), as
    ``NetworkTatonnement`` computes it: the closed neighbourhood's total endowment
    (``local``) or mean (``tracking``); where it owns none of a good, the economy-wide
    value stands in. ``endowments`` (o+h, g): own rows, then ghosts."""
    o = indptr.shape[0] - 1
    local_sum = np.empty((o, endowments.shape[1]))
    _neighbourhood_sums(indptr, local, np.ascontiguousarray(endowments), local_sum)
    size = np.diff(indptr)[:, None]
    if tracking:
        local_sum /= size
        fallback = np.broadcast_to(mean_endowment, local_sum.shape)
    else:
        fallback = np.broadcast_to(mean_endowment, local_sum.shape) * size
    return 1.0 / np.where(local_sum > 0, local_sum, fallback)


def local_components(indptr, local, n_rows: int) -> tuple[int, np.ndarray]:
    """Connected components of own rows and ghosts under the own rows' edges:
    ``(count, label per local row)``."""
    o = indptr.shape[0] - 1
    graph = scipy.sparse.csr_array(
        (np.ones(local.shape[0], dtype=np.int8), local, indptr), shape=(o, n_rows)
    )
    square = scipy.sparse.vstack(
        [graph, scipy.sparse.csr_array((n_rows - o, n_rows), dtype=np.int8)]
    )
    return connected_components(square, directed=False)


def merge_components(counts: list[int], links) -> int:
    """Number of global components from each shard's local ones.

    ``counts[k]``: shard k's local component count; ``links``: ``(k, labels_k, d,
    labels_d)`` — the same agents seen as ghosts by shard k and as own rows by shard d.
    """
    offsets = np.concatenate([[0], np.cumsum(counts)])
    a, b = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    for k, labels_k, d, labels_d in links:
        a.append(offsets[k] + np.asarray(labels_k, dtype=np.int64))
        b.append(offsets[d] + np.asarray(labels_d, dtype=np.int64))
    a, b = np.concatenate(a), np.concatenate(b)
    total = int(offsets[-1])
    graph = scipy.sparse.coo_array((np.ones(a.size, dtype=np.int8), (a, b)), shape=(total, total))
    return connected_components(graph, directed=False)[0]
