"""The round: fused numba kernels of decentralized and central tâtonnement.

Notation inside the kernels (public names in brackets): ``u`` the agents' coordinates
[log-prices or prices, by the rule's space], ``y`` the gradient trackers, ``z`` excess
demand [``excess_demand``], ``e`` endowments, ``a`` utility weights [``shares``].

Decentralized round (synchronous, one message exchange; agent ``i``, neighbourhood
``N[i]`` including ``i``, Metropolis weights ``W``)::

    u_i'  = sum_{j in N[i]} W_ij u_j  + rule(signal_i)        # mix, then the rule's step
    z_i'  = d_i(p(u_i')) - e_i                                # demand at own new prices
    y_i'  = sum_{j in N[i]} W_ij y_j  + z_i' - z_i            # gradient tracking

with ``signal_i = y_i / mean_{j in N[i]} e_j`` under ``tracking`` (DIGing/EXTRA-style
gradient tracking: ``y`` estimates the network-average excess demand, and since ``W`` is
doubly stochastic ``sum_i y_i = sum_i z_i`` exactly), or ``signal_i = sum_{N[i]} z_j /
sum_{N[i]} e_j`` under ``local`` (each agent sees only its neighbourhood's market; prices
generally stay dispersed). Messages per round: each agent sends ``u_i`` and ``y_i`` (or
``z_i``) to each neighbour, 2·g floats.

The rule's options reach the round as arguments: its ``params`` are this round's
(``rule.round_params(t)``: the step scaled by the schedule, computed by the caller from
the global round), and ``transform, bound`` (``rule.signal_transform``) clip or normalize
``signal_i`` before the rule's kernel (:func:`tatonnet.agents.rules.transforms.transform_signal`;
``NONE``, the default, is one branch a row). ``log_space`` is the rule's geometry.

Reductions are taken over fixed blocks of ``BLOCK`` consecutive global agent ids and
summed in block order, so metrics are bit-identical whatever the thread or worker count.

Implementation (measured on the 2-core development machine, 10^5 agents, 5 goods, small
world k = 10: ~270 ns -> ~170 ns per agent-round on one core):

- A block is processed in tiles of ``TILE`` rows, phase by phase: mix the tile (sums over
  neighbours held in registers: the column loop is unrolled by code generation for up to
  ``MIX_WIDTH`` goods per pass, see :func:`_mix_source`), the rule's step row by row, then
  prices ``exp(u)`` and CES powers ``exp(-sigma log p)`` for the whole tile in one
  vectorizable loop (:func:`_exp_into`), demand (:func:`tatonnet.agents.utility.demand_rows`), and
  excess demand, trackers and partials.
- No array view is made per row: a view costs two atomic reference-count updates on an
  array that every thread shares. The rule receives block-local copies of its row.
- The neighbours' rows of a row ``PREFETCH_AHEAD`` rows ahead, and the next tile's own
  rows, are prefetched (random neighbours of a small world miss the caches).
- FMA contraction is allowed (``fastmath={"contract"}``, nothing else). Every result is
  a function of the row's inputs alone (the same code for every row, whatever the tile,
  block, thread or shard), so runs stay bit-identical across thread and worker counts;
  they agree with the numpy round and the per-agent reference path to ~1e-14.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import prange
from numba import types as nt
from numba.core import cgutils
from numba.extending import intrinsic

from tatonnet.agents.rules import PRICE_FLOOR
from tatonnet.agents.rules.base import KERNEL_TYPE
from tatonnet.agents.rules.transforms import NONE, transform_signal
from tatonnet.agents.utility import Family, demand_rows

#: Agents per reduction block (global ids ``[b * BLOCK, (b + 1) * BLOCK)``).
BLOCK = 2048

#: Rows per tile inside a block (tiles start at block starts: the same rows whatever the
#: thread or shard count).
TILE = 128

#: Goods mixed per pass over a row's neighbours (1..MIX_WIDTH unrolled variants).
MIX_WIDTH = 8

#: Rows ahead whose neighbours' rows are prefetched while mixing.
PREFETCH_AHEAD = 16

#: Rows of the per-block partials array.
P_EXCESS, P_PRICE, P_LOGMIN, P_LOGMAX = range(4)
N_PARTIALS = 4

_CES = int(Family.CES)


def n_blocks(n_agents: int) -> int:
    return -(-n_agents // BLOCK)


_F1, _F2, _F3 = nt.float64[::1], nt.float64[:, ::1], nt.float64[:, :, ::1]
NETWORK_ROUND_SIGNATURE = nt.void(
    nt.int64[::1], nt.int32[::1], _F1,
    _F2, _F2, _F2, _F2, _F2, _F2,
    _F2, _F2, nt.int8[::1], _F1, _F2,
    nt.int64, nt.boolean, nt.boolean, nt.int64,
    KERNEL_TYPE, _F1, nt.int64, nt.float64, _F3, nt.int64[::1], _F3,
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Low-level helpers: cache prefetch, a vectorizable exp
# ---------------------------------------------------------------------------------------


def _prefetch_codegen(write):
    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # (address, write, locality 3 = keep in all cache levels, data cache)
        builder.call(fn, [ptr, ir.Constant(i32, write), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return codegen


@intrinsic
def _prefetch(typingctx, arr, index):
    """Hint the cache to load ``arr[index]`` (1-D array; no bounds check: a hint never faults)."""
    return nt.void(arr, index), _prefetch_codegen(0)


@intrinsic
def _prefetch_write(typingctx, arr, index):
    """Hint the cache to load ``arr[index]`` for writing."""
    return nt.void(arr, index), _prefetch_codegen(1)


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_SAFE = 708.0  # |x| beyond this (or NaN) goes to np.exp: overflow, subnormals


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _exp_into(x, out, bits):
    """``out[i] = exp(x[i])`` (1-D, same length; ``out`` may be ``x``), within 1 ulp of libm.

    ``exp(x) = 2^k exp(r)``, ``k = round(x / ln 2)``, ``r = x - k ln 2`` (Cody-Waite, two
    parts), ``exp(r)`` by its Taylor polynomial of degree 13 (|r| <= ln2/2: truncation
    < 1e-17). Branch-free arithmetic, so LLVM vectorizes it (libm's exp is a scalar call);
    ``2^k`` is built in ``bits`` (int64 scratch) from its exponent field. Inputs out of
    ``[-708, 708]`` and NaN are recomputed with ``np.exp``.
    """
    n = x.shape[0]
    bad = False
    for i in range(n):
        xi = x[i]
        kf = np.floor(xi * _LOG2E + 0.5)
        r = (xi - kf * _LN2_HI) - kf * _LN2_LO
        q = 1.0 / 6227020800.0
        q = q * r + 1.0 / 479001600.0
        q = q * r + 1.0 / 39916800.0
        q = q * r + 1.0 / 3628800.0
        q = q * r + 1.0 / 362880.0
        q = q * r + 1.0 / 40320.0
        q = q * r + 1.0 / 5040.0
        q = q * r + 1.0 / 720.0
        q = q * r + 1.0 / 120.0
        q = q * r + 1.0 / 24.0
        q = q * r + 1.0 / 6.0
        q = q * r + 0.5
        q = q * r + 1.0
        q = q * r + 1.0
        out[i] = q
        bits[i] = (np.int64(kf) + 1023) << 52
        bad |= not (abs(xi) <= _EXP_SAFE)
    scale = bits.view(np.float64)
    for i in range(n):
        out[i] *= scale[i]
    if bad:
        for i in range(n):
            if not (abs(x[i]) <= _EXP_SAFE):
                out[i] = np.exp(x[i])


# ---------------------------------------------------------------------------------------
# Mixing: sums over neighbours, unrolled over goods
# ---------------------------------------------------------------------------------------


def _mix_source(width: int) -> str:
    """Source of ``_mix_rows_<width>``: columns ``j0 .. j0+width-1`` of a tile's mixing.

    For rows ``r`` in ``[t0, t1)``: ``umix[r-t0, j] = sum_k W_rk u[s_k, j]`` and ``vmix[r-t0,
    j] = sum_k c_k v[s_k, j]`` (``c = W`` if ``weighted``, else 1: the tracker, or the plain
    sum of excess demand), summed in CSR order. One scalar accumulator per column keeps the
    sums in registers; numba does not vectorize across the columns of a row (its SLP
    vectorizer is off) and cannot keep a runtime-length array in registers, so the unrolled
    variants are generated. Indices are unsigned: no negative-index wraparound code.
    """
    cols = range(width)
    lines = [
        f"def _mix_rows_{width}(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted,",
        "                 umix, vmix):",
        "    gu = np.uint64(g)",
        "    ju = np.uint64(j0)",
        "    last = indptr.shape[0] - 2",
        "    for r in range(t0, t1):",
        "        ra = min(r + PREFETCH_AHEAD, last)",
        "        for k in range(np.uint64(indptr[ra]), np.uint64(indptr[ra + 1])):",
        "            o = np.uint64(np.uint32(indices[k])) * gu",
        "            _prefetch(uf, o)",
        "            _prefetch(uf, o + gu - np.uint64(1))",
        "            _prefetch(vf, o)",
        "            _prefetch(vf, o + gu - np.uint64(1))",
    ]
    lines += [f"        u{j} = 0.0\n        v{j} = 0.0" for j in cols]
    lines += [
        "        for k in range(np.uint64(indptr[r]), np.uint64(indptr[r + 1])):",
        "            w = mixing[k]",
        "            c = w if weighted else 1.0",
        "            o = np.uint64(np.uint32(indices[k])) * gu + ju",
    ]
    lines += [
        f"            u{j} += w * uf[o + np.uint64({j})]\n"
        f"            v{j} += c * vf[o + np.uint64({j})]"
        for j in cols
    ]
    lines += [
        f"        umix[r - t0, j0 + {j}] = u{j}\n        vmix[r - t0, j0 + {j}] = v{j}"
        for j in cols
    ]
    return "\n".join(lines)


for _width in range(1, MIX_WIDTH + 1):
    exec(_mix_source(_width), globals())  # defines _mix_rows_<width>
    globals()[f"_mix_rows_{_width}"] = numba.njit(inline="always", error_model="numpy")(
        globals()[f"_mix_rows_{_width}"]
    )


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _mix_tile(uf, vf, indices, mixing, indptr, t0, t1, weighted, umix, vmix):
    """Mix rows ``t0..t1`` into ``umix``, ``vmix`` (TILE, g): passes of <= MIX_WIDTH goods.

    ``uf``, ``vf``: the flat (n_src * g,) coordinates and tracker (or excess demand).
    """
    g = umix.shape[1]
    j0 = 0
    while j0 < g:
        w = min(g - j0, MIX_WIDTH)
        if w == 8:
            _mix_rows_8(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 7:
            _mix_rows_7(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 6:
            _mix_rows_6(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 5:
            _mix_rows_5(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 4:
            _mix_rows_4(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 3:
            _mix_rows_3(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        elif w == 2:
            _mix_rows_2(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        else:
            _mix_rows_1(uf, vf, indices, mixing, indptr, t0, t1, g, j0, weighted, umix, vmix)  # noqa: F821
        j0 += w


# ---------------------------------------------------------------------------------------
# Demand of a tile
# ---------------------------------------------------------------------------------------


@numba.njit(inline="always", error_model="numpy")
def _tile_demand(pt, lt, qt, bits, e, a, family, sigma, t0, t1, dt):
    """Demand of rows ``t0..t1`` at the tile's prices ``pt`` and log-prices ``lt``.

    Writes the CES powers ``qt = exp(-sigma lt)`` (zero exponent on other rows) and the
    demand ``dt``; all tile arrays (TILE, g), rows ``0..t1-t0`` used.
    """
    n = t1 - t0
    g = pt.shape[1]
    for r in range(t0, t1):
        s = -sigma[r] if family[r] == _CES else 0.0
        for j in range(g):
            qt[r - t0, j] = s * lt[r - t0, j]
    qf = qt.reshape(-1)[: n * g]
    _exp_into(qf, qf, bits[: n * g])
    demand_rows(pt[:n], qt[:n], e[t0:t1], a[t0:t1], family[t0:t1], dt[:n])


# ---------------------------------------------------------------------------------------
# The decentralized round
# ---------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _round_block(lo, hi, indptr, indices, mixing, u, y, z, u_out, y_out, z_out, e, a, family,
                 sigma, inv_scale, log_space, tracking, numeraire, rule, params, transform,
                 bound, buffers, part):  # fmt: skip
    """Rows ``lo..hi`` (one reduction block) of :func:`network_round`; ``part`` (N_PARTIALS, g)."""
    g = u_out.shape[1]
    n_buf = buffers.shape[1]
    uf = u.reshape(-1)
    vf = y.reshape(-1) if tracking else z.reshape(-1)
    yf, zf, sf = y.reshape(-1), z.reshape(-1), inv_scale.reshape(-1)
    ef, af = e.reshape(-1), a.reshape(-1)
    uof, yof, zof = u_out.reshape(-1), y_out.reshape(-1), z_out.reshape(-1)
    # block-local scratch: the rule gets these, never views of shared arrays
    coords = np.empty(g)
    signal = np.empty(g)
    buf = np.empty((n_buf, g))
    umix = np.empty((TILE, g))
    vmix = np.empty((TILE, g))
    pt = np.empty((TILE, g))  # prices
    lt = np.empty((TILE, g))  # log-prices
    qt = np.empty((TILE, g))  # CES powers
    dt = np.empty((TILE, g))  # demand, then excess demand
    bits = np.empty(TILE * g, dtype=np.int64)
    for j in range(g):
        part[P_EXCESS, j] = 0.0
        part[P_PRICE, j] = 0.0
        part[P_LOGMIN, j] = np.inf
        part[P_LOGMAX, j] = -np.inf
    for t0 in range(lo, hi, TILE):
        t1 = min(t0 + TILE, hi)
        n = t1 - t0
        # the next tile's own rows, while this one is computed
        t2 = min(t1 + TILE, hi)
        for q in range(t1 * g, t2 * g, 8):
            _prefetch(yf, q)
            _prefetch(zf, q)
            _prefetch(sf, q)
            _prefetch(ef, q)
            _prefetch(af, q)
            _prefetch_write(uof, q)
            _prefetch_write(yof, q)
            _prefetch_write(zof, q)
        _mix_tile(uf, vf, indices, mixing, indptr, t0, t1, tracking, umix, vmix)
        # the rule's step, row by row
        for r in range(t0, t1):
            i = r - t0
            for j in range(g):
                coords[j] = umix[i, j]
            if tracking:
                for j in range(g):
                    signal[j] = y[r, j] * inv_scale[r, j]
            else:
                for j in range(g):
                    signal[j] = vmix[i, j] * inv_scale[r, j]
            if transform != NONE:
                transform_signal(signal, numeraire, transform, bound)
            for m in range(n_buf):
                for j in range(g):
                    buf[m, j] = buffers[r, m, j]
            rule(coords, signal, buf, params)
            for m in range(n_buf):
                for j in range(g):
                    buffers[r, m, j] = buf[m, j]
            if log_space:
                coords[numeraire] = 0.0
                for j in range(g):
                    u_out[r, j] = coords[j]
                    lt[i, j] = coords[j]
            else:
                coords[numeraire] = 1.0
                for j in range(g):
                    if coords[j] < PRICE_FLOOR:  # NaN passes through, to be reported
                        coords[j] = PRICE_FLOOR
                    u_out[r, j] = coords[j]
                    pt[i, j] = coords[j]
        # prices or log-prices of the whole tile, then its demand
        if log_space:
            _exp_into(lt.reshape(-1)[: n * g], pt.reshape(-1)[: n * g], bits[: n * g])
        else:
            for i in range(n):
                for j in range(g):
                    lt[i, j] = np.log(pt[i, j])
        _tile_demand(pt, lt, qt, bits, e, a, family, sigma, t0, t1, dt)
        # excess demand, trackers, partials
        for r in range(t0, t1):
            i = r - t0
            for j in range(g):
                zn = dt[i, j] - e[r, j]
                dt[i, j] = zn
                z_out[r, j] = zn
            if tracking:
                for j in range(g):
                    y_out[r, j] = vmix[i, j] + dt[i, j] - z[r, j]
            for j in range(g):
                part[P_EXCESS, j] += dt[i, j]
                part[P_PRICE, j] += pt[i, j]
                lp = lt[i, j]
                if lp < part[P_LOGMIN, j]:
                    part[P_LOGMIN, j] = lp
                if lp > part[P_LOGMAX, j]:
                    part[P_LOGMAX, j] = lp


@numba.njit(NETWORK_ROUND_SIGNATURE, parallel=True, cache=True, nogil=True, error_model="numpy")
def network_round(
    indptr, indices, mixing,  # CSR rows of the agents this call updates
    u, y, z,  # (n_src, g) current state; rows 0..n_rows-1 are the updated agents themselves
    u_out, y_out, z_out,  # (n_rows, g) next state of the rows updated
    e, a, family, sigma,  # (n_rows, g), (n_rows, g), (n_rows,), (n_rows,)
    inv_scale,  # (n_rows, g) 1 / local supply scale of the signal
    row_offset,  # global id of row 0 (aligns the reduction blocks to global ids)
    log_space, tracking, numeraire,
    rule, params,  # the rule's kernel and this round's hyperparameters (rule.round_params)
    transform, bound,  # the rule's signal transform (rule.signal_transform; NONE: none)
    buffers,  # (n_rows, nb, g) the rule's state
    blocks,  # (m,) which blocks to update: indices into ``partials`` (all: arange(nb))
    partials,  # (n_blocks_rows, N_PARTIALS, g) out; only the rows of ``blocks`` written
):  # fmt: skip
    n_rows = u_out.shape[0]
    first_block = row_offset // BLOCK
    for i in prange(blocks.shape[0]):
        b = blocks[i]
        lo = max(0, (first_block + b) * BLOCK - row_offset)
        hi = min(n_rows, (first_block + b + 1) * BLOCK - row_offset)
        _round_block(lo, hi, indptr, indices, mixing, u, y, z, u_out, y_out, z_out, e, a,
                     family, sigma, inv_scale, log_space, tracking, numeraire, rule, params,
                     transform, bound, buffers, partials[b])  # fmt: skip


# ---------------------------------------------------------------------------------------
# Excess demand at given prices (initial states, the central auctioneer)
# ---------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _excess_block(lo, hi, p_all, coords, log_space, e, a, family, sigma, acc, out):
    """Excess demand of rows ``lo..hi``.

    If ``coords`` has rows: at each row's own coordinates ``coords[r]`` (log-prices if
    ``log_space``), written to ``out[r]``. Otherwise at the prices ``p_all`` (g,) for all,
    summed in row order into ``acc`` (g,).
    """
    g = e.shape[1]
    own = coords.shape[0] > 0
    logp_all = np.log(p_all)
    pt = np.empty((TILE, g))
    lt = np.empty((TILE, g))
    qt = np.empty((TILE, g))
    dt = np.empty((TILE, g))
    bits = np.empty(TILE * g, dtype=np.int64)
    for j in range(acc.shape[0]):
        acc[j] = 0.0
    for t0 in range(lo, hi, TILE):
        t1 = min(t0 + TILE, hi)
        n = t1 - t0
        for i in range(n):
            for j in range(g):
                if not own:
                    pt[i, j] = p_all[j]
                    lt[i, j] = logp_all[j]
                elif log_space:
                    lt[i, j] = coords[t0 + i, j]
                else:
                    pt[i, j] = coords[t0 + i, j]
                    lt[i, j] = np.log(coords[t0 + i, j])
        if own and log_space:
            _exp_into(lt.reshape(-1)[: n * g], pt.reshape(-1)[: n * g], bits[: n * g])
        _tile_demand(pt, lt, qt, bits, e, a, family, sigma, t0, t1, dt)
        for r in range(t0, t1):
            for j in range(g):
                zn = dt[r - t0, j] - e[r, j]
                if own:
                    out[r, j] = zn
                else:
                    acc[j] += zn


@numba.njit(parallel=True, cache=True, error_model="numpy")
def excess_demand_blocks(p, e, a, family, sigma, row_offset, out):
    """Per-block sums of excess demand of agents ``e.shape[0]`` rows at one price ``p``.

    ``out`` : (n_blocks, g), written.
    """
    n, g = e.shape
    first_block = row_offset // BLOCK
    p = np.ascontiguousarray(p)
    no_rows = np.empty((0, g))
    for b in prange(out.shape[0]):
        lo = max(0, (first_block + b) * BLOCK - row_offset)
        hi = min(n, (first_block + b + 1) * BLOCK - row_offset)
        _excess_block(lo, hi, p, no_rows, False, e, a, family, sigma, out[b], no_rows)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def excess_demand_rows(u, log_space, e, a, family, sigma, out):
    """Excess demand of every row at its own coordinates ``u`` (n, g); written to ``out``."""
    n, g = e.shape
    no_prices = np.empty(0)
    for b in prange(-(-n // BLOCK)):
        _excess_block(b * BLOCK, min(n, (b + 1) * BLOCK), no_prices, u, log_space, e, a,
                      family, sigma, no_prices, out)  # fmt: skip


def sum_blocks(blocks: np.ndarray) -> np.ndarray:
    """Sum per-block partials in block order (a fixed order: deterministic)."""
    total = blocks[0].copy()
    for b in range(1, blocks.shape[0]):
        total += blocks[b]
    return total
