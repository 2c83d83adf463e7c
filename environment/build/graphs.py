"""Graph rows that each shard draws itself: partition-invariant network generators.

A shard owns a contiguous range ``start..stop-1`` of the global agent ids (block-aligned in
practice, see :data:`tatonnet.environment.tatonnement.kernel.BLOCK`) and calls
:func:`decided_edges` for it: the undirected edges that its rows *decide*. Every random
number is keyed by the seed, a stream (:mod:`tatonnet.environment.build.streams`) and global
ids (a block of source rows, a rank, a tree node, a cell), never by the range, so the union
of the edges over **any** partition of ``0..n-1`` into contiguous ranges is the same graph
(block alignment only bounds the work that two ranges repeat). No process holds the whole
graph and no step is O(n): work and memory are proportional to the range's rows and edges
(plus, for ``random-geometric``, the points of the cells next to the range's cells). Ids are
in a locality order that needs no global pass (ring order, row-major, Z-order of cells).

An edge is decided by one row (the rule is given below for each kind). The few edges that
two rows may both produce are noted (``small-world``, ``scale-free``); the caller
deduplicates. No generator returns self-loops. Results are bit-identical across processes
of one platform (the same compiled code runs on the same inputs).

Generators
----------
ring
    ``i ~ i + 1 (mod n)``, decided by ``i`` (for ``n = 2`` one edge, ``0 ~ 1``); equals
    ``networkx.cycle_graph(n)``.
grid
    A copy of :func:`tatonnet.environment.network._near_square_grid` without networkx:
    ``cols = ceil(sqrt(n))``, ids row-major, ``i ~ i + 1`` when ``(i + 1) mod cols != 0``
    and ``i + 1 < n``, ``i ~ i + cols`` when ``i + cols < n``; decided by ``i``.
small-world (``k`` even, default 10; ``p``, default 0.1)
    Watts–Strogatz on the ring lattice, ``h = k / 2``: row ``i`` has the slots
    ``(i, i + j mod n)``, ``j = 1..h``. Slot ``j = 1`` is kept; every slot ``j >= 2`` is
    rewired with probability ``p`` to ``(i, w)``, ``w`` uniform on ``0..n-1``, redrawn while
    ``w = i``, or ``w`` lies in the lattice window of ``i`` (``(w - i) mod n <= h`` or
    ``(i - w) mod n <= h``), or ``i`` already chose ``w``; a slot keeps its lattice edge when
    no such ``w`` is left (possible only for ``n < 3h``). The ring ``i ~ i + 1`` always
    stays, so the graph is connected by construction
    (``networkx.connected_watts_strogatz_graph`` instead redraws the whole graph until it
    is connected, which changes the distribution slightly). Draws per block ``b`` of source
    rows (ids ``bB..min(n, (b + 1)B) - 1``, ``B = BLOCK``), from
    ``g = block_generator(seed, GRAPH, b)``: first ``U = g.random(rows * (h - 1))``, slot
    ``(i, j)`` rewired iff ``U[(i - bB)(h - 1) + j - 2] < p``; then the targets
    ``w = min(n - 1, floor(n * g.random()))``, consumed in the order of the slots, one per
    rewired slot plus one per redraw. Decided by ``i``; row ``i`` gives exactly ``h``
    edges. Duplicates: ``i -> w`` and ``w -> i`` both rewired (about ``(p (h - 1))^2 / 2``
    pairs per graph). With ``p = 0`` it is ``networkx.watts_strogatz_graph(n, k, 0)``.
random-geometric (``k``, expected mean degree, default 10)
    ``n`` points in the unit square (no torus), ``i ~ j`` iff
    ``(x_i - x_j)^2 + (y_i - y_j)^2 <= r^2``, ``r = sqrt(k / (pi n))`` (the radius of
    :func:`tatonnet.environment.network.build_network`; the mean degree is
    ``(n - 1)(pi r^2 - 8 r^3 / 3 + r^4 / 2)``, ``k`` less the boundary loss). Placement
    without a global pass: a ``2^L x 2^L`` grid of cells of side ``2^-L >= r``, ``L`` the
    largest such, cells numbered along the Z-order (Morton) curve, ``c = sum_t
    cx_t 4^t + cy_t 2 * 4^t`` (``cx_t``, ``cy_t`` the bits of the column and row). The
    counts per cell are multinomial(n, equal probabilities), by binomial splitting down the
    perfect binary tree over the ``4^L`` cells in curve order (node ``v`` has children
    ``2v``, ``2v + 1``; the root ``v = 1`` holds ``n`` points; leaf ``4^L + c`` is cell
    ``c``): the left child of a node with ``N`` points gets ``Binomial(N, 1/2)`` — the
    popcount of ``N`` random bits for ``N <= 256``, Hörmann's BTRS transformed rejection
    (exact) above — drawn from the numbers of ``v``. Ids are given cell by cell in curve
    order, so a range of ids is a run of consecutive cells, found by descending the tree
    with prefix counts (O(L) per boundary, pruning empty nodes). Point ``j`` of cell ``c``
    lies at ``((cx + a_j) 2^-L, (cy + b_j) 2^-L)``, ``a_j = bits(c, 2j) >> (11 + L)``
    times ``2^(L - 53)`` and ``b_j`` likewise from ``bits(c, 2j + 1)`` (``53 - L`` bits, so
    a point never rounds onto the next cell); any process can regenerate any cell. An edge
    is decided by its lower id; a range regenerates the cells around its cells (with side
    ``>= r`` the 8 neighbours suffice). The graph may be disconnected: it is not checked
    here. :func:`points` gives the coordinates, :func:`geometric_cells` the cells.
scale-free (``m``, default 5, mean degree about ``2m``; ``gamma``, default 3)
    The ring ``i ~ i + 1 (mod n)`` (so connected by construction) plus a Chung–Lu graph on
    ranks ``r = pi(i)``, ``pi = Permutation(n, seed, GRAPH)`` (hubs spread over the ids;
    there is no locality, hubs link everywhere). Weights
    ``w_r = W0 (1 + r / r0)^(-alpha)``, ``alpha = 1 / (gamma - 1)``, ``r = 0..n-1``, with
    ``S = sum_r w_r = n d``, ``d = 2m - 2`` (the Chung–Lu mean degree; ``m = 1`` is the bare
    ring): ``r0 = 1`` unless that makes ``W0 > sqrt(S)``; then ``r0`` is the one with
    ``W0 = sqrt(S)`` (a structural cutoff), so ``w_r w_s / S <= 1`` always and the cap in
    ``P(r ~ s) = min(1, w_r w_s / S)`` never binds. Edges are independent for ranks
    ``r < s``; the expected degree of rank ``r`` is ``w_r (1 - w_r / S) + 2``, and
    ``P(degree > x) ~ x^(1 - gamma)`` between the mean and ``W0``. The normalising sums are
    exact for the first 4096 ranks and Euler–Maclaurin (to the first-derivative term)
    beyond. Row ``i`` decides its ring edge and the edges to the ranks ``s > r``, returned
    as ``(i, pi^-1(s))``, drawn by Miller–Hagberg skipping with thinning: from
    ``s = r + 1``, ``p = p_{r,s}``, repeat ``s += floor(log(u) / log(1 - p))`` (no skip when
    ``p = 1``), stop at ``s >= n``, keep ``s`` iff ``u' p < q = p_{r,s}``, ``p = q``,
    ``s += 1``; ``u, u'`` the successive numbers of ``r``. Work O(edges + rows).
    Duplicates: a Chung–Lu edge on a ring pair (about ``d`` per graph).

Counter-based numbers
---------------------
``bits(a, b) = splitmix64(splitmix64(K ^ splitmix64(a)) ^ b)`` is draw ``b`` of the key
``a`` (a tree node, a cell, a rank), ``K`` from
``SeedSequence(seed, spawn_key=(stream, tag)).generate_state(1, uint64)``: the tree of
``random-geometric`` ``(POINTS, 0xCE11)``, its coordinates ``(POINTS, 0xC00D)``, the
Chung–Lu draws ``(GRAPH, 0x5CA1E)``. A uniform in (0, 1) is
``((bits >> 11) + 0.5) 2^-53``. ``small-world`` uses one Philox generator per block instead
(:func:`~tatonnet.environment.build.streams.block_generator`).
"""

from __future__ import annotations

import functools
import math
import numbers

import numba
import numpy as np

from tatonnet.environment.build.streams import (
    BLOCK,
    GRAPH,
    POINTS,
    Permutation,
    block_generator,
    blocks_of,
    splitmix64,
)
from tatonnet.environment.network import NetworkError

SHARD_GENERATORS = ("ring", "grid", "small-world", "random-geometric", "scale-free")

__all__ = ["SHARD_GENERATORS", "check_params", "decided_edges", "geometric_cells", "points"]

# spawn-key tails of the hash keys (after the stream number); never change, it changes graphs
_TREE, _COORDS, _CHUNG_LU = 0xCE11, 0xC00D, 0x5CA1E
_HEAD = 4096  # ranks summed exactly in the Chung-Lu normalisation


# ---------------------------------------------------------------- parameters


def _real(value):
    """``value`` as a float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _show(value) -> str:
    """``value`` for a message (numpy scalars as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _integer(value):
    """``value`` as an int if it is an integral real number (10 or 10.0), else None."""
    x = _real(value)
    return int(x) if x is not None and math.isfinite(x) and x == int(x) else None


def _resolve(kind: str, n_agents: int, params: dict) -> dict:
    """The validated, typed parameters of ``kind`` (defaults filled in)."""
    if kind not in SHARD_GENERATORS:
        raise NetworkError(
            f"network.kind: unknown {kind!r} for shard-built networks; expected one of "
            f"{list(SHARD_GENERATORS)}"
        )
    n = _integer(n_agents)
    if n is None or n < 2:
        raise NetworkError(
            f"network: a {kind} network needs at least 2 agents, got {_show(n_agents)}"
        )
    if kind == "small-world":
        raw_k, raw_p = params.get("k", 10), params.get("p", 0.1)
        k, p = _integer(raw_k), _real(raw_p)
        if k is None or not (2 <= k < n and k % 2 == 0):
            raise NetworkError(
                f"network.k: expected an even integer 2 <= k < n_agents, got {_show(raw_k)}"
            )
        if p is None or not 0 <= p <= 1:
            raise NetworkError(f"network.p: expected a probability in [0, 1], got {_show(raw_p)}")
        return {"k": k, "p": p}
    if kind == "scale-free":
        raw_m, raw_g = params.get("m", 5), params.get("gamma", 3)
        m, gamma = _integer(raw_m), _real(raw_g)
        if m is None or not (1 <= m and 2 * m < n):
            raise NetworkError(
                f"network.m: expected an integer 1 <= m < n_agents / 2 (mean degree 2m), got {_show(raw_m)}"
            )
        if gamma is None or not (2 < gamma < math.inf):
            raise NetworkError(
                f"network.gamma: expected a power-law exponent gamma > 2, got {_show(raw_g)}"
            )
        return {"m": m, "gamma": gamma}
    if kind == "random-geometric":
        raw_k = params.get("k", 10)
        k = _real(raw_k)
        if k is None or not 0 < k < n:
            raise NetworkError(f"network.k: expected 0 < k < n_agents, got {_show(raw_k)}")
        return {"k": k}
    return {}


def check_params(kind: str, n_agents: int, params: dict) -> None:
    """Raise :class:`~tatonnet.environment.network.NetworkError` (one line) for a bad kind,
    agent count or parameter of a shard-built network.

    ``params`` as for :func:`tatonnet.environment.network.build_network` (``k``, ``p``,
    ``m``, and ``gamma`` for ``scale-free``); integral floats (``k = 10.0``) are accepted
    where an integer is needed; keys another kind uses are ignored, as there.
    """
    _resolve(kind, n_agents, params)


def _check_range(n: int, start: int, stop: int) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= n:
        raise ValueError(f"graph rows: expected 0 <= start <= stop <= {n}, got {start}..{stop}")
    return start, stop


def decided_edges(kind: str, n_agents: int, seed: int, params: dict, start: int, stop: int):
    """The undirected edges ``(u, v)`` that rows ``start..stop-1`` decide.

    Returns two int64 arrays of equal length, ``u != v``, ids in ``0..n_agents-1`` (see the
    module docstring for the definitions and which row decides an edge). The union over any
    partition of ``0..n_agents-1`` into contiguous ranges is the same graph; an edge
    normally comes from exactly one range, rare duplicates are noted per kind. Work and
    memory are proportional to the range's edges (for ``random-geometric`` plus the
    neighbouring cells).
    """
    par = _resolve(kind, n_agents, params)
    n = int(n_agents)
    start, stop = _check_range(n, start, stop)
    if kind == "ring":
        return _ring(n, start, stop)
    if kind == "grid":
        return _grid(n, start, stop)
    if kind == "small-world":
        return _small_world(n, int(seed), par["k"], par["p"], start, stop)
    if kind == "random-geometric":
        return _geometric(n, int(seed), par["k"], start, stop)
    return _scale_free(n, int(seed), par["m"], par["gamma"], start, stop)


def _key(seed: int, *spawn: int) -> np.uint64:
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(int(s) for s in spawn))
    return ss.generate_state(1, np.uint64)[0]


@numba.njit(cache=True)
def _row_key(key, a):
    """The key of the draws of ``a`` (a tree node, a cell, a rank)."""
    return splitmix64(key ^ splitmix64(np.uint64(a)))


@numba.njit(cache=True)
def _bits(row_key, b):
    """64 random bits: draw ``b`` of ``row_key`` (``splitmix64(row_key ^ b)``)."""
    return splitmix64(row_key ^ np.uint64(b))


@numba.njit(cache=True)
def _open_uniform(row_key, b):
    """A uniform in (0, 1): draw ``b`` of ``row_key``."""
    return (float(_bits(row_key, b) >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


# ---------------------------------------------------------------- ring, grid


def _ring(n: int, start: int, stop: int):
    u = np.arange(start, min(stop, n - 1 if n == 2 else n), dtype=np.int64)
    v = u + 1
    v[v == n] = 0
    return u, v


def _grid(n: int, start: int, stop: int):
    cols = math.ceil(math.sqrt(n))  # as network._near_square_grid
    i = np.arange(start, stop, dtype=np.int64)
    across = i[((i + 1) % cols != 0) & (i + 1 < n)]
    down = i[i + cols < n]
    return np.concatenate([across, down]), np.concatenate([across + 1, down + cols])


# ---------------------------------------------------------------- small world


@numba.njit(cache=True)
def _small_world_block(n, h, p, first, lo, hi, decisions, targets, out_u, out_v, at):
    """Rows ``first..hi-1`` of one block; rows ``lo..hi-1`` written from ``out[at]`` on.

    Returns the number of target draws used, or -1 when ``targets`` ran out.
    """
    chosen = np.empty(h, np.int64)
    outside = n - 2 * h - 1  # ids outside the lattice window of a row
    used = 0
    for i in range(first, hi):
        emit = i >= lo
        if emit:
            out_u[at] = i
            out_v[at] = (i + 1) % n
            at += 1
        n_chosen = 0
        row = (i - first) * (h - 1)
        for j in range(2, h + 1):
            w = (i + j) % n
            if decisions[row + j - 2] < p and outside - n_chosen > 0:
                while True:
                    if used >= targets.shape[0]:
                        return -1
                    w = min(np.int64(targets[used] * n), n - 1)
                    used += 1
                    off = (w - i) % n
                    if off <= h or off >= n - h:
                        continue
                    again = False
                    for c in range(n_chosen):
                        if chosen[c] == w:
                            again = True
                    if not again:
                        break
                chosen[n_chosen] = w
                n_chosen += 1
            if emit:
                out_u[at] = i
                out_v[at] = w
                at += 1
    return used


def _small_world(n: int, seed: int, k: int, p: float, start: int, stop: int):
    h = k // 2
    out_u = np.empty((stop - start) * h, np.int64)
    out_v = np.empty_like(out_u)
    if h == 1 or p == 0:  # no slot can be rewired: the ring lattice
        i = np.arange(start, stop, dtype=np.int64)
        out_u.reshape(-1, h)[:] = i[:, None]
        out_v.reshape(-1, h)[:] = (i[:, None] + np.arange(1, h + 1)) % n
        return out_u, out_v
    at = 0
    for b, lo, hi in blocks_of(start, stop):
        first = b * BLOCK
        g = block_generator(seed, GRAPH, b)
        decisions = g.random((min(n, first + BLOCK) - first) * (h - 1))
        wanted = int(np.count_nonzero(decisions[: (hi - first) * (h - 1)] < p))
        targets = g.random(wanted + wanted // 4 + 32)
        while _small_world_block(n, h, p, first, lo, hi, decisions, targets, out_u, out_v, at) < 0:
            targets = np.concatenate([targets, g.random(targets.size)])  # the same stream, on
        at += (hi - lo) * h
    return out_u, out_v


# ---------------------------------------------------------------- random geometric


def _geometric_layout(n: int, k: float) -> tuple[float, int]:
    """``(r, L)``: the radius and the largest ``L`` with cell side ``2^-L >= r``."""
    r = math.sqrt(k / (math.pi * n))
    L = 0
    while L < 30 and r * 2.0 ** (L + 1) <= 1.0:
        L += 1
    return r, L


@numba.njit(cache=True)
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True)
def _binomial_half(N, key, node):
    """``Binomial(N, 1/2)`` keyed by ``(key, node)``: popcount, or BTRS for ``N > 256``."""
    rk = _row_key(key, node)
    if N <= 256:
        total = 0
        word = 0
        left = N
        while left > 0:
            x = _bits(rk, word)
            if left < 64:
                x &= (np.uint64(1) << np.uint64(left)) - np.uint64(1)
            total += _popcount(x)
            left -= 64
            word += 1
        return total
    # Hormann (1993) BTRS, p = q = 1/2 (so log(p/q) = 0)
    spq = math.sqrt(N * 0.25)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.005
    c = N * 0.5 + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    mode = (N + 1) // 2
    h = math.lgamma(mode + 1.0) + math.lgamma(N - mode + 1.0)
    draw = 0
    while True:
        u = _open_uniform(rk, draw) - 0.5
        v = _open_uniform(rk, draw + 1)
        draw += 2
        us = 0.5 - abs(u)
        kk = math.floor((2.0 * a / us + b) * u + c)
        if kk < 0 or kk > N:
            continue
        if us >= 0.07 and v <= v_r:
            return np.int64(kk)
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= h - math.lgamma(kk + 1.0) - math.lgamma(N - kk + 1.0):
            return np.int64(kk)


@numba.njit(cache=True)
def _push(stack, top, node, level, first, count, lo, hi):
    """Row ``top`` of a tree-descent stack: node, level, first id, count, targets lo, hi."""
    stack[top, 0] = node
    stack[top, 1] = level
    stack[top, 2] = first
    stack[top, 3] = count
    stack[top, 4] = lo
    stack[top, 5] = hi
    return top + 1


@numba.njit(cache=True)
def _owned_cells(n, depth, key, start, stop):
    """Cells (Morton order) holding ids ``start..stop-1``: ``(cell, first id, count)``."""
    cap = min(stop - start, np.int64(1) << depth) + 1
    cells = np.empty(cap, np.int64)
    first = np.empty(cap, np.int64)
    count = np.empty(cap, np.int64)
    stack = np.empty((2 * depth + 4, 6), np.int64)  # depth-first: one right sibling a level
    top = _push(stack, 0, 1, 0, 0, n, 0, 0)
    out = 0
    while top > 0:
        top -= 1
        node, level, f, c = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        if c == 0 or f >= stop or f + c <= start:
            continue
        if level == depth:
            cells[out] = node - (np.int64(1) << depth)
            first[out] = f
            count[out] = c
            out += 1
            continue
        left = _binomial_half(c, key, node)
        top = _push(stack, top, 2 * node + 1, level + 1, f + left, c - left, 0, 0)
        top = _push(stack, top, 2 * node, level + 1, f, left, 0, 0)
    return cells[:out], first[:out], count[:out]


@numba.njit(cache=True)
def _lower_bound(sorted_values, x, lo, hi):
    """The first index in ``lo..hi`` with ``sorted_values[index] >= x``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True)
def _cells_of(n, depth, key, targets):
    """``(first id, count)`` of the sorted distinct cells ``targets``."""
    first = np.zeros(targets.shape[0], np.int64)
    count = np.zeros(targets.shape[0], np.int64)
    stack = np.empty((2 * depth + 4, 6), np.int64)
    top = _push(stack, 0, 1, 0, 0, n, 0, targets.shape[0])
    while top > 0:
        top -= 1
        node, level, f, c = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
        lo, hi = stack[top, 4], stack[top, 5]
        if lo >= hi:
            continue
        if c == 0 or level == depth:
            first[lo:hi] = f
            count[lo:hi] = c
            continue
        left = _binomial_half(c, key, node)
        right_first_cell = (2 * (node - (np.int64(1) << level)) + 1) << (depth - level - 1)
        mid = _lower_bound(targets, right_first_cell, lo, hi)
        top = _push(stack, top, 2 * node + 1, level + 1, f + left, c - left, mid, hi)
        top = _push(stack, top, 2 * node, level + 1, f, left, lo, mid)
    return first, count


@numba.njit(cache=True)
def _morton(cx, cy, L):
    c = np.int64(0)
    for t in range(L):
        c |= ((cx >> t) & 1) << (2 * t)
        c |= ((cy >> t) & 1) << (2 * t + 1)
    return c


@numba.njit(cache=True)
def _demorton(c, L):
    cx = np.int64(0)
    cy = np.int64(0)
    for t in range(L):
        cx |= ((c >> (2 * t)) & 1) << t
        cy |= ((c >> (2 * t + 1)) & 1) << t
    return cx, cy


@numba.njit(cache=True)
def _outside_neighbours(cells, L):
    """Sorted distinct cells next to ``cells`` (sorted) and outside ``cells[0]..cells[-1]``."""
    side = np.int64(1) << L
    out = np.empty(8 * cells.shape[0], np.int64)
    m = 0
    lo, hi = cells[0], cells[-1]
    for a in range(cells.shape[0]):
        cx, cy = _demorton(cells[a], L)
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                x, y = cx + dx, cy + dy
                if 0 <= x < side and 0 <= y < side:
                    c = _morton(x, y, L)
                    if c < lo or c > hi:
                        out[m] = c
                        m += 1
    return np.unique(out[:m])


@numba.njit(cache=True)
def _cell_points(cells, count, L, key):
    """Coordinates of every point of ``cells``, cell after cell; (sum count,) x and y."""
    total = 0
    for a in range(cells.shape[0]):
        total += count[a]
    xs = np.empty(total)
    ys = np.empty(total)
    shift = np.uint64(11 + L)  # 53 - L random bits: cx + a_j is exact in a double
    scale = 1.0 / float(np.int64(1) << (53 - L))
    side = 1.0 / float(np.int64(1) << L)
    at = 0
    for a in range(cells.shape[0]):
        cx, cy = _demorton(cells[a], L)
        rk = _row_key(key, cells[a])
        for j in range(count[a]):
            fx = float(_bits(rk, 2 * j) >> shift) * scale
            fy = float(_bits(rk, 2 * j + 1) >> shift) * scale
            xs[at] = (cx + fx) * side
            ys[at] = (cy + fy) * side
            at += 1
    return xs, ys


@numba.njit(cache=True)
def _geometric_pairs(cells, first, count, xs, ys, L, r2, start, stop, out_u, out_v):
    """Pairs within ``sqrt(r2)`` whose lower id is in ``start..stop-1``, written to ``out``.

    Returns their number, or -1 when ``out`` may be too short (the caller retries).
    """
    side = np.int64(1) << L
    offset = np.empty(cells.shape[0], np.int64)
    acc = 0
    for a in range(cells.shape[0]):
        offset[a] = acc
        acc += count[a]
    m = 0
    for a in range(cells.shape[0]):
        f, c = first[a], count[a]
        j_lo, j_hi = max(0, start - f), min(c, stop - f)
        if j_lo >= j_hi:
            continue
        cx, cy = _demorton(cells[a], L)
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                x, y = cx + dx, cy + dy
                if not (0 <= x < side and 0 <= y < side):
                    continue
                mc = _morton(x, y, L)
                if mc < cells[a]:  # lower cell, lower ids: the other row decides
                    continue
                b = a
                if mc != cells[a]:
                    b = _lower_bound(cells, mc, a + 1, cells.shape[0])
                    if b == cells.shape[0] or cells[b] != mc:
                        continue
                if m + (j_hi - j_lo) * count[b] > out_u.shape[0]:
                    return -1
                ob, fb, cb = offset[b], first[b], count[b]
                for j in range(j_lo, j_hi):
                    pu = offset[a] + j
                    x_u, y_u = xs[pu], ys[pu]
                    for jj in range(j + 1 if b == a else 0, cb):
                        ex = x_u - xs[ob + jj]
                        ey = y_u - ys[ob + jj]
                        if ex * ex + ey * ey <= r2:
                            out_u[m] = f + j
                            out_v[m] = fb + jj
                            m += 1
    return m


def geometric_cells(n_agents: int, seed: int, params: dict, start: int, stop: int):
    """The cells holding ids ``start..stop-1`` of a random-geometric network.

    Returns ``(cell, first, count, L)``: Morton numbers (increasing), the first id and the
    number of points of each (non-empty) cell, and the grid level (``2^L`` cells a side).
    """
    par = _resolve("random-geometric", n_agents, params)
    n = int(n_agents)
    start, stop = _check_range(n, start, stop)
    _, L = _geometric_layout(n, par["k"])
    cells, first, count = _owned_cells(n, 2 * L, _key(seed, POINTS, _TREE), start, stop)
    return cells, first, count, L


def points(n_agents: int, seed: int, params: dict, start: int, stop: int) -> np.ndarray:
    """Coordinates of the random-geometric points of ids ``start..stop-1``; (m, 2) float64."""
    cells, first, count, L = geometric_cells(n_agents, seed, params, start, stop)
    if cells.size == 0:
        return np.empty((0, 2))
    xs, ys = _cell_points(cells, count, L, _key(seed, POINTS, _COORDS))
    cut = slice(start - int(first[0]), start - int(first[0]) + (stop - start))
    return np.stack([xs[cut], ys[cut]], axis=1)


def _geometric(n: int, seed: int, k: float, start: int, stop: int):
    r, L = _geometric_layout(n, k)
    tree = _key(seed, POINTS, _TREE)
    cells, first, count = _owned_cells(n, 2 * L, tree, start, stop)
    if cells.size == 0:
        empty = np.empty(0, np.int64)
        return empty, empty.copy()
    near = _outside_neighbours(cells, L)
    near_first, near_count = _cells_of(n, 2 * L, tree, near)
    keep = near_count > 0
    near, near_first, near_count = near[keep], near_first[keep], near_count[keep]
    below = near < cells[0]
    cells = np.concatenate([near[below], cells, near[~below]])
    first = np.concatenate([near_first[below], first, near_first[~below]])
    count = np.concatenate([near_count[below], count, near_count[~below]])
    xs, ys = _cell_points(cells, count, L, _key(seed, POINTS, _COORDS))
    expected = (stop - start) * k / 2
    cap = int(expected + 6 * math.sqrt(expected)) + 1024
    while True:
        out_u, out_v = np.empty(cap, np.int64), np.empty(cap, np.int64)
        m = _geometric_pairs(cells, first, count, xs, ys, L, r * r, start, stop, out_u, out_v)
        if m >= 0:
            if m < 0.9 * cap:  # trim (a copy) only when much is left over
                return out_u[:m].copy(), out_v[:m].copy()
            return out_u[:m], out_v[:m]
        cap *= 2


# ---------------------------------------------------------------- scale free


def _tail_sum(n: int, r0: float, alpha: float) -> float:
    """``sum_{r=0}^{n-1} (1 + r / r0)^(-alpha)``: exact head, Euler–Maclaurin tail."""
    head = min(n, _HEAD)
    total = float(np.sum((1.0 + np.arange(head) / r0) ** -alpha))
    if n > head:
        a, b = float(head), float(n - 1)

        def g(x):
            return (1.0 + x / r0) ** -alpha

        def dg(x):
            return -alpha / r0 * (1.0 + x / r0) ** (-alpha - 1.0)

        def G(x):
            return r0 * (1.0 + x / r0) ** (1.0 - alpha) / (1.0 - alpha)

        total += G(b) - G(a) + (g(a) + g(b)) / 2 + (dg(b) - dg(a)) / 12
    return total


@functools.lru_cache(maxsize=64)
def chung_lu_weights(n: int, m: int, gamma: float) -> tuple[float, float, float, float]:
    """``(W0, r0, alpha, S)`` of the scale-free weights ``w_r = W0 (1 + r / r0)^(-alpha)``."""
    alpha = 1.0 / (gamma - 1.0)
    S = float(n) * (2 * m - 2)
    cap = math.sqrt(S)
    r0 = 1.0
    if _tail_sum(n, r0, alpha) < cap:  # W0 = S / F(r0) > sqrt(S): raise r0 until equal
        lo, hi = 0.0, math.log(1e18)
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _tail_sum(n, math.exp(mid), alpha) < cap else (lo, mid)
        r0 = math.exp(hi)
    return S / _tail_sum(n, r0, alpha), r0, alpha, S


@numba.njit(cache=True)
def _decay(x, alpha):
    """``x^(-alpha)``; ``1 / sqrt(x)`` for ``gamma = 3`` (three times faster than pow)."""
    return 1.0 / math.sqrt(x) if alpha == 0.5 else x**-alpha


@numba.njit(cache=True)
def _chung_lu(start, ranks, n, W0, r0, alpha, S, key, out_i, out_s):
    """Edges ``(start + t, rank s)`` to ranks ``s > r = ranks[t]``, into ``out``.

    Returns their number, or -1 when ``out`` is too short (the caller retries).
    """
    m = 0
    for t in range(ranks.shape[0]):
        r = ranks[t]
        wr = W0 * _decay(1.0 + r / r0, alpha) / S
        s = r + 1
        if s >= n:
            continue
        p = wr * W0 * _decay(1.0 + s / r0, alpha)
        rk = _row_key(key, r)
        draw = 0
        while s < n:
            if p < 1.0:
                u = _open_uniform(rk, draw)
                draw += 1
                skip = math.floor(math.log(u) / math.log1p(-p))
                if skip >= n - s:
                    break
                s += np.int64(skip)
            q = min(1.0, wr * W0 * _decay(1.0 + s / r0, alpha))
            u = _open_uniform(rk, draw)
            draw += 1
            if u * p < q:
                if m == out_i.shape[0]:
                    return -1
                out_i[m] = start + t
                out_s[m] = s
                m += 1
            p = q
            s += 1
    return m


@numba.njit(cache=True)
def _expected_decided(ranks, W0, r0, alpha, S):
    """About the expected number of Chung–Lu edges the ranks decide (to size the output):
    ``sum_r w_r (S - W(r)) / S``, ``W(r) = sum_{s <= r} w_s`` by the midpoint rule."""
    total = 0.0
    base = (1.0 - 0.5 / r0) ** (1.0 - alpha)
    for t in range(ranks.shape[0]):
        r = ranks[t]
        below = W0 * r0 * ((1.0 + (r + 0.5) / r0) ** (1.0 - alpha) - base) / (1.0 - alpha)
        total += W0 * _decay(1.0 + r / r0, alpha) * min(1.0, max(0.0, 1.0 - below / S))
    return total


@numba.njit(cache=True)
def _ring_into(n, start, count, out_u, out_v):
    for t in range(count):
        out_u[t] = start + t
        out_v[t] = (start + t + 1) % n


def _scale_free(n: int, seed: int, m: int, gamma: float, start: int, stop: int):
    if m == 1 or start == stop:
        return _ring(n, start, stop)
    W0, r0, alpha, S = chung_lu_weights(n, m, gamma)
    perm = Permutation(n, seed, GRAPH)
    ranks = perm(np.arange(start, stop, dtype=np.int64))
    expected = _expected_decided(ranks, W0, r0, alpha, S)
    cap = int(expected + 6 * math.sqrt(expected)) + 1024
    ring = min(stop, n - 1 if n == 2 else n) - start  # rows with a ring edge
    key = _key(seed, GRAPH, _CHUNG_LU)
    while True:  # one output buffer: ring edges, then the Chung-Lu ones (no copies)
        out_u, out_v = np.empty(ring + cap, np.int64), np.empty(ring + cap, np.int64)
        got = _chung_lu(start, ranks, n, W0, r0, alpha, S, key, out_u[ring:], out_v[ring:])
        if got >= 0:
            break
        cap *= 2
    del ranks
    _ring_into(n, start, ring, out_u, out_v)
    chunk = 1 << 20  # ranks to ids in chunks: a small temporary
    for lo in range(ring, ring + got, chunk):
        hi = min(ring + got, lo + chunk)
        out_v[lo:hi] = perm.inverse(out_v[lo:hi])
    return out_u[: ring + got], out_v[: ring + got]
