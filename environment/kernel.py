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

Reductions are taken over fixed blocks of ``BLOCK`` consecutive global agent ids and
summed in block order, so metrics are bit-identical whatever the thread or worker count.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba import types as nt

from agents.rules import PRICE_FLOOR
from agents.rules.base import KERNEL_TYPE
from agents.utility import demand_row

#: Agents per reduction block (global ids ``[b * BLOCK, (b + 1) * BLOCK)``).
BLOCK = 2048

#: Rows of the per-block partials array.
P_EXCESS, P_PRICE, P_LOGMIN, P_LOGMAX = range(4)
N_PARTIALS = 4


def n_blocks(n_agents: int) -> int:
    return -(-n_agents // BLOCK)


_F1, _F2, _F3 = nt.float64[::1], nt.float64[:, ::1], nt.float64[:, :, ::1]
NETWORK_ROUND_SIGNATURE = nt.void(
    nt.int64[::1], nt.int32[::1], _F1,
    _F2, _F2, _F2, _F2, _F2, _F2,
    _F2, _F2, nt.int8[::1], _F1, _F2,
    nt.int64, nt.boolean, nt.boolean, nt.int64,
    KERNEL_TYPE, _F1, _F3, _F3,
)  # fmt: skip


@numba.njit(NETWORK_ROUND_SIGNATURE, parallel=True, cache=True)
def network_round(
    indptr, indices, mixing,  # CSR rows of the agents this call updates
    u, y, z,  # (n_src, g) current state; rows 0..n_rows-1 are the updated agents themselves
    u_out, y_out, z_out,  # (n_rows, g) next state of the rows updated
    e, a, family, sigma,  # (n_rows, g), (n_rows, g), (n_rows,), (n_rows,)
    inv_scale,  # (n_rows, g) 1 / local supply scale of the signal
    row_offset,  # global id of row 0 (aligns the reduction blocks to global ids)
    log_space, tracking, numeraire,
    rule, params, buffers,  # the rule's kernel, hyperparameters, (n_rows, nb, g) state
    partials,  # (n_blocks_rows, N_PARTIALS, g) out
):  # fmt: skip
    n_rows, g = u_out.shape
    nb = partials.shape[0]
    first_block = row_offset // BLOCK
    for b in prange(nb):
        lo = max(0, (first_block + b) * BLOCK - row_offset)
        hi = min(n_rows, (first_block + b + 1) * BLOCK - row_offset)
        signal = np.empty(g)
        ymix = np.empty(g)
        p = np.empty(g)
        logp = np.empty(g)
        d = np.empty(g)
        part = partials[b]
        for j in range(g):
            part[0, j] = 0.0
            part[1, j] = 0.0
            part[2, j] = np.inf
            part[3, j] = -np.inf
        for r in range(lo, hi):
            ur = u_out[r]
            for j in range(g):
                ur[j] = 0.0
                ymix[j] = 0.0
            for k in range(indptr[r], indptr[r + 1]):
                s = indices[k]
                w = mixing[k]
                for j in range(g):
                    ur[j] += w * u[s, j]
                    if tracking:
                        ymix[j] += w * y[s, j]
                    else:
                        ymix[j] += z[s, j]
            for j in range(g):
                signal[j] = (y[r, j] if tracking else ymix[j]) * inv_scale[r, j]
            rule(ur, signal, buffers[r], params)
            if log_space:
                ur[numeraire] = 0.0
                for j in range(g):
                    logp[j] = ur[j]
                    p[j] = np.exp(ur[j])
            else:
                ur[numeraire] = 1.0
                for j in range(g):
                    if ur[j] < PRICE_FLOOR:  # NaN passes through, to be reported
                        ur[j] = PRICE_FLOOR
                    p[j] = ur[j]
                    logp[j] = np.log(ur[j])
            demand_row(p, logp, e[r], a[r], family[r], sigma[r], d)
            for j in range(g):
                zn = d[j] - e[r, j]
                if tracking:
                    y_out[r, j] = ymix[j] + zn - z[r, j]
                z_out[r, j] = zn
                part[0, j] += zn
                part[1, j] += p[j]
                if logp[j] < part[2, j]:
                    part[2, j] = logp[j]
                if logp[j] > part[3, j]:
                    part[3, j] = logp[j]


@numba.njit(parallel=True, cache=True)
def excess_demand_blocks(p, e, a, family, sigma, row_offset, out):
    """Per-block sums of excess demand of agents ``e.shape[0]`` rows at one price ``p``.

    ``out`` : (n_blocks, g), written.
    """
    n, g = e.shape
    logp = np.log(p)
    first_block = row_offset // BLOCK
    for b in prange(out.shape[0]):
        lo = max(0, (first_block + b) * BLOCK - row_offset)
        hi = min(n, (first_block + b + 1) * BLOCK - row_offset)
        d = np.empty(g)
        acc = out[b]
        for j in range(g):
            acc[j] = 0.0
        for r in range(lo, hi):
            demand_row(p, logp, e[r], a[r], family[r], sigma[r], d)
            for j in range(g):
                acc[j] += d[j] - e[r, j]


@numba.njit(parallel=True, cache=True)
def excess_demand_rows(u, log_space, e, a, family, sigma, out):
    """Excess demand of every row at its own coordinates ``u`` (n, g); written to ``out``."""
    n, g = e.shape
    for b in prange(-(-n // BLOCK)):
        p = np.empty(g)
        logp = np.empty(g)
        d = np.empty(g)
        for r in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
            for j in range(g):
                if log_space:
                    logp[j] = u[r, j]
                    p[j] = np.exp(u[r, j])
                else:
                    p[j] = u[r, j]
                    logp[j] = np.log(u[r, j])
            demand_row(p, logp, e[r], a[r], family[r], sigma[r], d)
            for j in range(g):
                out[r, j] = d[j] - e[r, j]


def sum_blocks(blocks: np.ndarray) -> np.ndarray:
    """Sum per-block partials in block order (a fixed order: deterministic)."""
    total = blocks[0].copy()
    for b in range(1, blocks.shape[0]):
        total += blocks[b]
    return total
