"""Per-round trade metrics from per-block partial sums, the same in one process and in shards.

A round's metrics (:data:`NAMES`) are reductions over the meetings and the agents. To get
the same bits whatever the number of shards, every reduction is taken first over fixed
blocks of consecutive global agent ids (:func:`block_size`, a function of the number of
agents only), and the blocks' partials are then combined in block order
(:func:`combine`). A shard owns whole blocks (:func:`trade_ranges`), computes its blocks'
partials (:func:`round_partials`) and sends them, a few numbers per block, to the driver;
the in-process engine computes the same partials over all blocks. A meeting ``(u, v)``,
``u < v``, belongs to ``u``'s block (the shard of ``u`` proposes it).

Means and standard deviations combine blocks by the exact parallel formula (Chan et al.):
with block counts ``n_b``, sums ``s_b`` and centred sums of squares ``M_b``,
``mean = sum s_b / N`` and ``M = sum (M_b + n_b (s_b / n_b - mean)^2)``; the standard
deviation is ``sqrt(M / N)`` (population, as ``np.std``).

Metrics per round: ``pairs`` (meetings), ``trades``, ``rejected``, ``volume`` (units
moved, all goods), ``pareto_gap`` (largest spread of log MRS across agents; NaN when not
checked this round), ``mrs_std`` (mean over non-numeraire goods of the std of log MRS
across agents; NaN when not checked), ``price_std`` (mean over goods of the std of the log
prices, in numeraire, of this round's executed trades of that good against the numeraire,
over goods with two or more such trades; NaN if none), ``intermediary_share`` (share of
the agents that have traded whose cumulative throughput ``1 - |in - out| / (in + out)``,
unit-weighted, is at least 0.5).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from tatonnet.environment.trade.codes import EXECUTED, REJECTED, TradeError

NAMES = ("pairs", "trades", "rejected", "volume", "pareto_gap", "mrs_std", "price_std",
         "intermediary_share")  # fmt: skip

#: Largest reduction block (agents); smaller economies use ``n // 64`` (at least 1).
MAX_BLOCK = 2048


def block_size(n_agents: int) -> int:
    """Agents per reduction block: ``clip(n // 64, 1, 2048)`` — set by ``n`` alone."""
    return max(1, min(MAX_BLOCK, n_agents // 64))


def n_blocks(n_agents: int) -> int:
    return -(-n_agents // block_size(n_agents))


def trade_ranges(n_agents: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous id ranges of whole blocks, as balanced as blocks allow."""
    nb, b = n_blocks(n_agents), block_size(n_agents)
    if not 1 <= n_shards <= nb:
        raise TradeError(
            f"workers: {n_agents:,} agents make {nb} reduction block(s) of {b}, so 1..{nb} "
            f"trade shards can run, not {n_shards}"
        )
    cuts = [min(n_agents, ((k * nb) // n_shards) * b) for k in range(n_shards + 1)]
    return [(cuts[k], cuts[k + 1]) for k in range(n_shards)]


@dataclasses.dataclass(frozen=True, eq=False)
class Partials:
    """One round's partials of the blocks ``first .. first + nb - 1`` (``g`` goods).

    counts : (nb, 5) int64 — pairs, trades, rejected, agents that have traded,
        intermediaries among them; volume : (nb,) float64;
    price : (nb, g, 3) float64 — count, sum, centred sum of squares of the log prices;
    mrs : (nb, g, 5) float64 — max, min, count, sum, centred sum of squares of the log MRS
        (NaN-filled when not checked).
    """

    first: int
    counts: np.ndarray
    volume: np.ndarray
    price: np.ndarray
    mrs: np.ndarray
    checked: bool


@numba.njit(cache=True)
def _pair_partials(u, result, numeraire, block, first, counts, volume, price):
    for i in range(u.size):
        b = u[i] // block - first
        counts[b, 0] += 1
        status = result[i, 0]
        if status == REJECTED:
            counts[b, 2] += 1
        if status != EXECUTED:
            continue
        counts[b, 1] += 1
        volume[b] += result[i, 3] + result[i, 4]
        k, l = int(result[i, 1]), int(result[i, 2])
        if l == numeraire or k == numeraire:
            good, value = (k, result[i, 7]) if l == numeraire else (l, -result[i, 7])
            price[b, good, 0] += 1.0
            price[b, good, 1] += value
    for i in range(u.size):  # centred squares, about each block's mean
        if result[i, 0] != EXECUTED:
            continue
        b = u[i] // block - first
        k, l = int(result[i, 1]), int(result[i, 2])
        if l == numeraire or k == numeraire:
            good, value = (k, result[i, 7]) if l == numeraire else (l, -result[i, 7])
            d = value - price[b, good, 1] / price[b, good, 0]
            price[b, good, 2] += d * d


@numba.njit(cache=True)
def _agent_partials(start, inflow, outflow, block, first, counts):
    g = inflow.shape[1]
    for i in range(inflow.shape[0]):
        gross, net = 0.0, 0.0
        for j in range(g):
            gross += inflow[i, j] + outflow[i, j]
            net += abs(inflow[i, j] - outflow[i, j])
        if gross > 0:
            b = (start + i) // block - first
            counts[b, 3] += 1
            if 1.0 - net / gross >= 0.5:
                counts[b, 4] += 1


@numba.njit(cache=True)
def _mrs_partials(start, r, block, first, mrs):
    g = r.shape[1]
    for b in range(mrs.shape[0]):
        for j in range(g):
            mrs[b, j, 0] = -np.inf
            mrs[b, j, 1] = np.inf
            mrs[b, j, 2] = 0.0
            mrs[b, j, 3] = 0.0
            mrs[b, j, 4] = 0.0
    for i in range(r.shape[0]):
        b = (start + i) // block - first
        for j in range(g):
            v = r[i, j]
            mrs[b, j, 0] = max(mrs[b, j, 0], v)
            mrs[b, j, 1] = min(mrs[b, j, 1], v)
            mrs[b, j, 2] += 1.0
            mrs[b, j, 3] += v
    for i in range(r.shape[0]):
        b = (start + i) // block - first
        for j in range(g):
            d = r[i, j] - mrs[b, j, 3] / mrs[b, j, 2]
            mrs[b, j, 4] += d * d


def round_partials(
    n_agents: int, start: int, pair_u: np.ndarray, result: np.ndarray, inflow: np.ndarray,
    outflow: np.ndarray, numeraire: int, mrs_rows: np.ndarray | None,
) -> Partials:  # fmt: skip
    """Partials of the agents ``start .. start + len(inflow) - 1`` (whole blocks, or up to
    ``n``).

    pair_u : (m,) int64 global id of each meeting's ``u`` (all inside the range);
    result : (m, 8) the meetings' final results (``bilateral.trade_pairs`` columns);
    inflow, outflow : (o, g) the range's cumulative flows after the round;
    mrs_rows : (o, g) the range's log MRS in units of the numeraire after the round
    (``bilateral.log_mrs_rows``, the economy's own utilities), or None: not checked.
    """
    block = block_size(n_agents)
    first = start // block
    nb = -(-(start + inflow.shape[0]) // block) - first
    g = inflow.shape[1]
    counts = np.zeros((nb, 5), dtype=np.int64)
    volume = np.zeros(nb)
    price = np.zeros((nb, g, 3))
    _pair_partials(np.ascontiguousarray(pair_u, dtype=np.int64), result, numeraire, block,
                   first, counts, volume, price)  # fmt: skip
    _agent_partials(start, inflow, outflow, block, first, counts)
    mrs = np.full((nb, g, 5), np.nan)
    if mrs_rows is not None:
        _mrs_partials(start, mrs_rows, block, first, mrs)
    return Partials(first, counts, volume, price, mrs, mrs_rows is not None)


def _std(stats: np.ndarray) -> np.ndarray:
    """Per good standard deviation from per-block (count, sum, M2) stacked (nb, g, 3)."""
    n_b, s_b, m_b = stats[..., 0], stats[..., 1], stats[..., 2]
    n = n_b.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s_b.sum(axis=0) / n
        mean_b = np.where(n_b > 0, s_b / np.where(n_b > 0, n_b, 1.0), 0.0)
        m2 = (m_b + np.where(n_b > 0, n_b * (mean_b - mean) ** 2, 0.0)).sum(axis=0)
        return np.sqrt(m2 / n)


def combine(parts: list[Partials], numeraire: int) -> dict[str, float]:
    """The round's metrics (:data:`NAMES`) from every block's partials, in block order."""
    parts = sorted(parts, key=lambda p: p.first)
    counts = np.concatenate([p.counts for p in parts])
    price = np.concatenate([p.price for p in parts])
    total = counts.sum(axis=0)
    out = {
        "pairs": int(total[0]),
        "trades": int(total[1]),
        "rejected": int(total[2]),
        "volume": float(np.sum(np.concatenate([p.volume for p in parts]))),
    }
    many = price[..., 0].sum(axis=0) > 1
    out["price_std"] = float(_std(price)[many].mean()) if many.any() else np.nan
    out["intermediary_share"] = float(total[4] / total[3]) if total[3] else 0.0
    if parts[0].checked:
        mrs = np.concatenate([p.mrs for p in parts])
        gap = mrs[:, :, 0].max(axis=0) - mrs[:, :, 1].min(axis=0)
        free = np.arange(mrs.shape[1]) != numeraire
        out["pareto_gap"] = float(gap.max())
        out["mrs_std"] = float(_std(mrs[:, :, 2:])[free].mean())
    else:
        out["pareto_gap"] = out["mrs_std"] = np.nan
    return {k: out[k] for k in NAMES}
