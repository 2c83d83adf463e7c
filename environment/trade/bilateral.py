"""Out-of-equilibrium bilateral trade along the edges of the agent network.

Tâtonnement only searches prices; here goods move. Each round every agent meets at most
one neighbour (a seeded random matching of the edges), and each matched pair makes at most
one bilateral trade: one good against another, at a price between their two marginal
rates of substitution, in a quantity limited by what they hold, executed only if **both**
utilities strictly rise. Whether an agent ends up as a middleman is not a label: an agent
that buys a good where it is cheap (relative to its own MRS) and sells it where it is dear
is one, and :mod:`tatonnet.environment.trade.flows` measures it.

State is a structure of arrays (:class:`TradeState`, row ``i`` = agent ``i``); a round is
a pure function (:func:`trade_round`); the per-pair economics is one numba kernel
(:func:`trade_pairs`) that the sharded engine (:mod:`tatonnet.distributed.trade_shard`) runs on
its own pairs, so in-process and sharded runs are bit-identical.

Notes
-----
**Matching.** Edge ``{u, v}`` (``u < v``) gets the key ``splitmix64(s ^ (round * 2^40 +
u * 2^20 + v))`` hashed again with ``s`` from ``np.random.SeedSequence(seed)`` (ids of
2^20 and more, which would collide in that word, chain the hash over round, ``u``, ``v``); it is
matched in round ``t`` when its key is the smallest among the edges at ``u`` *and* among
the edges at ``v`` (one Luby step: a matching, computed from stable ids only, so the shard
count never changes it). Messages per round: each agent publishes its smallest key (1
integer) and, to the partner, its holdings (``g`` floats).

**Trade of a pair** ``(u, v)``. With ``m_i`` the log marginal utilities of ``i`` at its
holdings ``x_i`` (any common factor dropped; linear ``log a``, Cobb–Douglas
``log a - log x``, CES ``(log a - log x) / sigma``, Leontief ``-log a`` on the binding goods
and ``-inf`` elsewhere), the log MRS of good ``k`` in units of ``l`` is
``r_i = m_ik - m_il``. The pair picks the ordered goods ``(k, l)`` with the largest gap
``r_v - r_u > min_gap`` such that ``u`` holds ``k`` and ``v`` holds ``l`` (``medium =
"numeraire"`` forces one of them to be the numeraire). ``u`` sells ``q`` units of ``k`` to
``v`` at the price ``pi = exp((r_u + r_v) / 2)`` units of ``l`` each (the geometric mean of
the two MRS, clipped to ``e^±50``): ``v`` pays ``min(pi q, x_vl)``. Candidate quantities
are ``q_j = q_max 2^-j``, ``j < halvings``, with ``q_max = min(x_uk, x_vl / pi)``; the
trade executed is the candidate maximizing the smaller relative utility gain among those
where both gains are positive and neither MRS crosses the price (``r_u' <= log pi <=
r_v'`` after the trade, so a pair never overshoots its contract curve and flows do not
reverse); if there is none the trade is *rejected* (counted).

**Conservation.** A trade moves ``q`` from one row to the other and ``pay`` back, so every
good is conserved to rounding; ``q <= x_uk`` and ``pay <= x_vl`` keep holdings
non-negative exactly.

**Provenance (hops).** Every unit carries the number of hops it has travelled from its
original owner. ``hop_mass[i, k]`` is the sum of hops over the units of ``k`` that ``i``
holds; a seller's inventory is taken as well mixed, so ``q`` units leave with the
seller's mean hop count and arrive with one hop more.

Hyperparameters: ``seed``, ``medium``, ``halvings`` (20), ``min_gap`` (1e-9, log MRS),
``merchant`` (unused by default; see :class:`TradeConfig`).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from tatonnet.environment.build.streams import splitmix64
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.trade.accounts import EdgeFlows
from tatonnet.environment.trade.codes import EXECUTED, NO_GAP, REJECTED, TradeError

_LOG_CLIP = 700.0
_PRICE_CLIP = 50.0


@dataclasses.dataclass(frozen=True)
class TradeConfig:
    """Hyperparameters of the trade round (see the module Notes).

    seed : int — matching seed; medium : "barter" (any pair of goods) or "numeraire" (every
    trade has the numeraire on one side); halvings : int — candidate quantities per pair;
    min_gap : float — smallest log-MRS gap worth a trade; merchants : agent ids of
    explicit merchants (see :func:`round_params`); pair : which two goods a meeting
    trades, "largest-gap" (the ordered pair with the largest log-MRS gap) or "random"
    (one pair of goods drawn uniformly per meeting, as in Axtell 2005; see
    :func:`drawn_goods`).
    """

    seed: int = 0
    medium: str = "barter"
    halvings: int = 20
    min_gap: float = 1e-9
    merchants: tuple[int, ...] = ()
    pair: str = "largest-gap"

    def __post_init__(self):
        if self.medium not in ("barter", "numeraire"):
            raise TradeError(f"trade.medium: expected 'barter' or 'numeraire', got {self.medium!r}")
        if not (isinstance(self.halvings, int) and 1 <= self.halvings <= 60):
            raise TradeError(f"trade.halvings: expected an integer in [1, 60], got {self.halvings}")
        if not (np.isfinite(self.min_gap) and self.min_gap >= 0):
            raise TradeError(f"trade.min_gap: expected a finite value >= 0, got {self.min_gap}")
        if any(not (isinstance(m, int | np.integer) and m >= 0) for m in self.merchants):
            raise TradeError("trade.merchants: expected agent ids (integers >= 0)")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise TradeError(f"trade.seed: expected an integer >= 0, got {self.seed}")
        if self.pair not in ("largest-gap", "random"):
            raise TradeError(f"trade.pair: expected 'largest-gap' or 'random', got {self.pair!r}")

    def seed_state(self) -> np.uint64:
        return np.uint64(np.random.SeedSequence(self.seed).generate_state(1, np.uint64)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class TradeState:
    """Holdings and flow accumulators after ``round`` rounds.

    holdings, hop_mass, inflow, outflow : (n_agents, n_goods) float64 — current holdings,
    sum of hops over held units, total units received and given, per good.
    """

    round: int
    holdings: np.ndarray
    hop_mass: np.ndarray
    inflow: np.ndarray
    outflow: np.ndarray

    @classmethod
    def initial(cls, endowments: np.ndarray) -> TradeState:
        x = np.array(endowments, dtype=np.float64)
        z = np.zeros_like(x)
        return cls(0, x, z.copy(), z.copy(), z.copy())

    def copy(self) -> TradeState:
        return TradeState(
            self.round,
            *(a.copy() for a in (self.holdings, self.hop_mass, self.inflow, self.outflow)),
        )


#: columns of a trade log (one row per matched pair, executed or not)
LOG_FIELDS = ("round", "u", "v", "status", "good", "paid_good", "quantity", "payment",
              "gain_u", "gain_v", "log_price")  # fmt: skip


# ---- matching --------------------------------------------------------------------------------
@numba.njit(cache=True)
def chained_hash(salted_seed, rnd, a, b):
    """``splitmix64(splitmix64(splitmix64(s ^ rnd) ^ a) ^ b)``: a counter-based uint64 of
    (seed, round, smaller id, larger id), for any ids (``s`` the seed state xor a salt)."""
    h = splitmix64(salted_seed ^ np.uint64(rnd))
    h = splitmix64(h ^ np.uint64(a))
    return splitmix64(h ^ np.uint64(b))


#: salt of the matching keys of ids of 2^20 and more (:func:`edge_key`)
_KEY_SALT = np.uint64(0x5DEECE66D)


@numba.njit(cache=True)
def edge_key(seed_state, rnd, u, v):
    """Key of the undirected edge ``{u, v}`` in round ``rnd`` (uint64; ids, not positions).

    Ids below 2^20 and rounds below 2^24 pack into one word (the original key); larger ones
    would collide there, so they chain the hash over round, smaller and larger id instead.
    """
    a, b = (u, v) if u < v else (v, u)
    if b < (1 << 20) and rnd < (1 << 24):
        x = np.uint64(rnd) * np.uint64(1 << 40) + np.uint64(a) * np.uint64(1 << 20) + np.uint64(b)
        return splitmix64(splitmix64(seed_state ^ x) ^ seed_state)
    return chained_hash(seed_state ^ _KEY_SALT, rnd, a, b)


@numba.njit(cache=True)
def min_keys(indptr, indices, ids, seed_state, rnd, out):
    """Smallest edge key at each own row ``r`` (global id ``ids[r]``); written to ``out``.

    ``indptr`` (o+1,) and ``indices`` (nnz,) are a CSR over *local* rows (own rows first,
    then ghosts), ``ids`` (rows,) int64 maps local rows to global ids.
    """
    for r in range(indptr.size - 1):
        u = ids[r]
        best = np.uint64(0xFFFFFFFFFFFFFFFF)
        for p in range(indptr[r], indptr[r + 1]):
            w = ids[indices[p]]
            if w != u:
                k = edge_key(seed_state, rnd, u, w)
                if k < best:
                    best = k
        out[r] = best


@numba.njit(cache=True)
def mutual_pairs(indptr, indices, ids, keys, seed_state, rnd):
    """Local rows ``(a, b)`` of the matched pairs with ``a`` an own row and ``ids[a] < ids[b]``,
    and the CSR position ``p`` of ``b`` in ``a``'s row.

    ``keys`` (rows,) holds every local row's smallest key (ghost rows: as received).
    Returns (m, 3) int64 ``[a, b, p]`` in increasing ``ids[a]`` order (own rows are in id
    order).
    """
    out = np.empty((indptr.size, 3), dtype=np.int64)
    m = 0
    for r in range(indptr.size - 1):
        u = ids[r]
        for p in range(indptr[r], indptr[r + 1]):
            w = indices[p]
            if ids[w] > u:
                k = edge_key(seed_state, rnd, u, ids[w])
                if k == keys[r] and k == keys[w]:
                    out[m, 0] = r
                    out[m, 1] = w
                    out[m, 2] = p
                    m += 1
                    break
    return out[:m]


@numba.njit(cache=True)
def edge_slots(indptr, indices, ids):
    """Account of every CSR position of the own rows: positions ``p`` in row ``r`` with
    ``ids[indices[p]] > ids[r]`` are numbered 0, 1, ... in CSR order (the rows' edges in
    :meth:`Network.edge_list` order, counted from the first own row); the others get -1.
    Returns (nnz,) int64."""
    out = np.full(indices.size, -1, dtype=np.int64)
    m = 0
    for r in range(indptr.size - 1):
        for p in range(indptr[r], indptr[r + 1]):
            if ids[indices[p]] > ids[r]:
                out[p] = m
                m += 1
    return out


@numba.njit(cache=True)
def book_trades(slots, result, trades, forward, backward):
    """Add the executed trades to the per-edge accounts (``slots`` (m,): each meeting's
    account; ``u`` is the edge's source): one trade, ``q`` of ``k`` forward, ``pay`` of
    ``l`` backward."""
    for i in range(slots.size):
        if result[i, 0] == EXECUTED:
            e = slots[i]
            trades[e] += 1
            forward[e, int(result[i, 1])] += result[i, 3]
            backward[e, int(result[i, 2])] += result[i, 4]


def matching(
    network: Network, seed_state: np.uint64, rnd: int, positions: bool = False
) -> np.ndarray:
    """Matched pairs of round ``rnd`` as (m, 2) global ids ``u < v``, sorted by ``u``
    (``positions``: (m, 3), the third column ``v``'s CSR position in ``u``'s row)."""
    ids = np.arange(network.n_agents, dtype=np.int64)
    indices = network.indices.astype(np.int64)
    keys = np.empty(network.n_agents, dtype=np.uint64)
    min_keys(network.indptr, indices, ids, seed_state, rnd, keys)
    pairs = mutual_pairs(network.indptr, indices, ids, keys, seed_state, rnd)
    return pairs if positions else pairs[:, :2]


# ---- the pair of goods of a meeting (pair = "random") ---------------------------------------
#: salt of the goods draws, so that they are independent of the matching's edge keys
_PAIR_SALT = np.uint64(0xA0761D6478BD642F)


@numba.njit(cache=True)
def pair_draws(seed_state, rnd, u_ids, v_ids, out):
    """One uniform in [0, 1) per meeting ``(u_ids[i], v_ids[i])`` (global ids, either order)
    of round ``rnd``, written to ``out`` (m,): a counter-based function of (seed, round, u,
    v) only, so any shard count draws the same numbers.

    With ``s = seed_state ^ salt`` and ``a < b`` the two ids: ``h = splitmix64(splitmix64(
    splitmix64(s ^ rnd) ^ a) ^ b)``, whose top 53 bits give the uniform (the salt keeps it
    independent of :func:`edge_key`, which decides who meets).
    """
    s = seed_state ^ _PAIR_SALT
    for i in range(u_ids.size):
        a, b = min(u_ids[i], v_ids[i]), max(u_ids[i], v_ids[i])
        h = chained_hash(s, rnd, a, b)
        out[i] = (h >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # 53 bits -> [0, 1)


def meeting_draws(config: TradeConfig, seed_state, rnd: int, u_ids, v_ids) -> np.ndarray:
    """The ``draws`` argument of :func:`trade_pairs` for the meetings ``(u_ids[i],
    v_ids[i])`` (global ids) of round ``rnd``: (m,) uniforms from :func:`pair_draws` when
    ``config.pair == "random"``, else an empty (0,) array (the largest-gap pair)."""
    if config.pair != "random":
        return np.empty(0)
    out = np.empty(len(u_ids))
    pair_draws(seed_state, rnd, np.ascontiguousarray(u_ids, dtype=np.int64),
               np.ascontiguousarray(v_ids, dtype=np.int64), out)  # fmt: skip
    return out


# ---- the economics of one pair ----------------------------------------------------------------
@numba.njit(cache=True)
def utility_row(x, a, family, sigma):
    """Utility of the bundle ``x`` (g,) for one agent (the scalar twin of ``utility.utility``)."""
    g = x.shape[0]
    if family == 0:  # linear
        s = 0.0
        for j in range(g):
            s += a[j] * x[j]
        return s
    if family == 2:  # Leontief
        best = np.inf
        for j in range(g):
            if a[j] > 0:
                t = x[j] / a[j]
                if t < best:
                    best = t
        return best
    if family == 1 or sigma == 1.0:  # Cobb-Douglas
        total = 0.0
        for j in range(g):
            total += a[j]
        s = 0.0
        for j in range(g):
            if a[j] > 0:
                if x[j] <= 0:
                    return 0.0
                s += (a[j] / total) * np.log(x[j])
        return np.exp(s)
    r = (sigma - 1.0) / sigma  # CES
    s = 0.0
    for j in range(g):
        if a[j] > 0:
            s += a[j] ** (1.0 / sigma) * x[j] ** r
    if s == np.inf:
        return 0.0
    return s ** (1.0 / r)


@numba.njit(cache=True)
def log_marginal_row(x, a, family, sigma, out):
    """Log marginal utilities of one agent at ``x`` (g,), up to a common additive constant.

    Clipped to ``[-700, 700]`` (so zero holdings and unwanted goods stay finite).
    """
    g = x.shape[0]
    if family == 2:  # Leontief: the binding goods
        best = np.inf
        for j in range(g):
            if a[j] > 0 and x[j] / a[j] < best:
                best = x[j] / a[j]
        for j in range(g):
            bind = a[j] > 0 and x[j] / a[j] <= best * (1.0 + 1e-12)
            out[j] = -np.log(a[j]) if bind else -_LOG_CLIP
    else:
        inv = 1.0
        if family == 3 and sigma != 1.0:
            inv = 1.0 / sigma
        for j in range(g):
            if a[j] <= 0:
                out[j] = -_LOG_CLIP
            elif family == 0:
                out[j] = np.log(a[j])
            elif x[j] <= 0:
                out[j] = _LOG_CLIP
            else:
                out[j] = inv * (np.log(a[j]) - np.log(x[j]))
    for j in range(g):
        out[j] = min(_LOG_CLIP, max(-_LOG_CLIP, out[j]))


@numba.njit(cache=True)
def drawn_goods(mu, mv, xu, xv, numeraire, min_gap, draw):
    """The goods ``(k, l)`` of one meeting under ``pair = "random"`` (``u`` gives ``k``, ``v``
    gives ``l``), or ``(-1, -1)``: no trade. ``mu``, ``mv`` (g,) log marginal utilities,
    ``xu``, ``xv`` (g,) holdings, ``draw`` in [0, 1).

    As in Axtell (2005) — his model, and his code (``sdmccabe/bilateral-exchange``,
    ``main.cpp``: two distinct commodities drawn, then "if MRS ratio >= exp(eps), do
    exchange") — the pair is drawn **before** looking at the MRS: one unordered pair
    ``{a, b}`` uniformly among all ``g (g - 1) / 2`` (``medium = "numeraire"``: among the
    ``g - 1`` pairs with the numeraire), and the meeting trades only if the agents' MRS of
    that pair differ by more than ``min_gap``. The direction is the one with the positive
    gap (``u`` sells the good it values less, relative to ``v``); a meeting whose drawn
    pair has no gap, or where ``u`` holds no ``k`` or ``v`` no ``l``, makes no trade
    (status NO_GAP). Drawing only among the profitable pairs would instead condition every
    meeting on a gain and count fewer idle meetings than Axtell's process does.
    """
    g = mu.shape[0]
    n = g - 1 if numeraire >= 0 else g * (g - 1) // 2
    if n < 1:
        return -1, -1
    t = min(int(draw * n), n - 1)
    if numeraire >= 0:
        a = numeraire
        b = t if t < numeraire else t + 1
    else:  # the t-th pair (a, b), a < b, in lexicographic order
        a = 0
        while t >= g - 1 - a:
            t -= g - 1 - a
            a += 1
        b = a + 1 + t
    k, l = a, b
    if (mv[a] - mv[b]) - (mu[a] - mu[b]) < 0:
        k, l = b, a
    if xu[k] <= 0 or xv[l] <= 0 or not (mv[k] - mv[l]) - (mu[k] - mu[l]) > min_gap:
        return -1, -1
    return k, l


@numba.njit(parallel=True, cache=True)
def trade_pairs(xu, xv, au, av, fu, fv, su, sv, numeraire, halvings, min_gap, result, draws):
    """The trade of each matched pair ``(u, v)``; inputs are per-pair rows (see module Notes).

    Parameters
    ----------
    xu, xv : (m, g) holdings of ``u`` and ``v``; au, av : (m, g) utility weights;
    fu, fv : (m,) family codes; su, sv : (m,) elasticities;
    numeraire : int — ``-1`` for barter, else the good that must be on one side;
    result : (m, 8) float64, written: ``status, k, l, q, pay, gain_u, gain_v, log_price``
        where ``u`` gives ``q`` of good ``k`` and ``v`` gives ``pay`` of good ``l``
        (``q`` may be read with ``k``/``l`` swapped: ``k`` is always what ``u`` gives);
    draws : (m,) float64 uniforms in [0, 1) from :func:`meeting_draws`, one per pair: the
        goods are drawn (:func:`drawn_goods`, ``pair = "random"``); or an empty (0,)
        array: the ordered pair with the largest gap (``pair = "largest-gap"``). Price,
        quantity and acceptance are the same under both.

    Pairs run in parallel on numba's threads; a pair's result depends on its own rows
    only, so the bits do not depend on the thread count.
    """
    for p in numba.prange(xu.shape[0]):
        _trade_pair(p, xu, xv, au, av, fu, fv, su, sv, numeraire, halvings, min_gap, result,
                    draws)  # fmt: skip


@numba.njit(cache=True)
def _trade_pair(p, xu, xv, au, av, fu, fv, su, sv, numeraire, halvings, min_gap, result, draws):
    """Pair ``p`` of :func:`trade_pairs`."""
    g = xu.shape[1]
    mu = np.empty(g)
    mv = np.empty(g)
    yu = np.empty(g)
    yv = np.empty(g)
    nu = np.empty(g)
    nv = np.empty(g)
    log_marginal_row(xu[p], au[p], fu[p], su[p], mu)
    log_marginal_row(xv[p], av[p], fv[p], sv[p], mv)
    best, bk, bl = min_gap, -1, -1
    if draws.size > 0:
        bk, bl = drawn_goods(mu, mv, xu[p], xv[p], numeraire, min_gap, draws[p])
    else:
        for k in range(g):
            if xu[p, k] <= 0:
                continue
            for l in range(g):
                if l == k or xv[p, l] <= 0:
                    continue
                if numeraire >= 0 and k != numeraire and l != numeraire:
                    continue
                gap = (mv[k] - mv[l]) - (mu[k] - mu[l])
                if gap > best:
                    best, bk, bl = gap, k, l
    for c in range(8):
        result[p, c] = 0.0
    if bk < 0:
        result[p, 0] = NO_GAP
        return
    k, l = bk, bl
    lp = 0.5 * ((mu[k] - mu[l]) + (mv[k] - mv[l]))
    lp = min(_PRICE_CLIP, max(-_PRICE_CLIP, lp))
    price = np.exp(lp)
    uu = utility_row(xu[p], au[p], fu[p], su[p])
    uv = utility_row(xv[p], av[p], fv[p], sv[p])
    q = min(xu[p, k], xv[p, l] / price)
    best_score, bq, bpay, bgu, bgv = 0.0, 0.0, 0.0, 0.0, 0.0
    for _ in range(halvings):
        pay = min(price * q, xv[p, l])
        for j in range(g):
            yu[j] = xu[p, j]
            yv[j] = xv[p, j]
        yu[k] = xu[p, k] - q
        yu[l] = xu[p, l] + pay
        yv[k] = xv[p, k] + q
        yv[l] = xv[p, l] - pay
        gu = utility_row(yu, au[p], fu[p], su[p]) - uu
        gv = utility_row(yv, av[p], fv[p], sv[p]) - uv
        log_marginal_row(yu, au[p], fu[p], su[p], nu)
        log_marginal_row(yv, av[p], fv[p], sv[p], nv)
        kept = nu[k] - nu[l] <= lp <= nv[k] - nv[l]  # no MRS crosses the price
        if gu > 0 and gv > 0 and kept:
            score = min(gu / max(uu, 1e-300), gv / max(uv, 1e-300))
            if score > best_score:
                best_score, bq, bpay, bgu, bgv = score, q, pay, gu, gv
        q = 0.5 * q
    result[p, 1] = k
    result[p, 2] = l
    result[p, 7] = lp
    if best_score > 0:
        result[p, 0] = EXECUTED
        result[p, 3] = bq
        result[p, 4] = bpay
        result[p, 5] = bgu
        result[p, 6] = bgv
    else:
        result[p, 0] = REJECTED


@numba.njit(cache=True)
def give_side(x, hop, outflow, row, good, q):
    """Row ``row`` gives ``q`` of ``good``; returns the mean hop count of the units given."""
    held = x[row, good]
    h_out = hop[row, good] / held if held > 0 else 0.0
    x[row, good] = held - q
    hop[row, good] = max(0.0, hop[row, good] - h_out * q) if x[row, good] > 0 else 0.0
    outflow[row, good] += q
    return h_out


@numba.njit(cache=True)
def get_side(x, hop, inflow, row, good, q, hops_in):
    """Row ``row`` receives ``q`` of ``good``, units arriving with mean hop count ``hops_in``."""
    x[row, good] += q
    hop[row, good] += hops_in * q
    inflow[row, good] += q


@numba.njit(cache=True)
def apply_trades(x, hop, inflow, outflow, a_rows, b_rows, result):
    """Settle executed trades in place: row ``a_rows[i]`` gives ``q`` of ``k``, row
    ``b_rows[i]`` gives ``pay`` of ``l``. Pairs are disjoint, so the order does not matter."""
    for i in range(a_rows.size):
        if result[i, 0] != EXECUTED:
            continue
        k, l = int(result[i, 1]), int(result[i, 2])
        q, pay = result[i, 3], result[i, 4]
        a, b = a_rows[i], b_rows[i]
        ha = give_side(x, hop, outflow, a, k, q)
        hb = give_side(x, hop, outflow, b, l, pay)
        get_side(x, hop, inflow, a, l, pay, hb + 1.0)
        get_side(x, hop, inflow, b, k, q, ha + 1.0)


def pair_inputs(x, params, a_rows, b_rows):
    """Per-pair arrays for :func:`trade_pairs` from row-indexed ``x`` and
    ``params = (shares, family, sigma)``."""
    shares, family, sigma = params
    return (
        np.ascontiguousarray(x[a_rows]), np.ascontiguousarray(x[b_rows]),
        np.ascontiguousarray(shares[a_rows]), np.ascontiguousarray(shares[b_rows]),
        np.ascontiguousarray(family[a_rows]), np.ascontiguousarray(family[b_rows]),
        np.ascontiguousarray(sigma[a_rows]), np.ascontiguousarray(sigma[b_rows]),
    )  # fmt: skip


def log_rows(rnd: int, u: np.ndarray, v: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Trade-log rows (m, len(LOG_FIELDS)) float64 for one round."""
    m = u.size
    out = np.empty((m, len(LOG_FIELDS)))
    out[:, 0] = rnd
    out[:, 1] = u
    out[:, 2] = v
    out[:, 3:] = result
    return out


def edge_flows_from_log(network: Network, log: np.ndarray, n_goods: int) -> EdgeFlows:
    """The accounts of a trade log (rows as ``bilateral.LOG_FIELDS``); for tests and for
    logs kept by the Python API. Sums in log order, as the engines do."""
    flows = EdgeFlows.zeros(network, n_goods)
    n = network.n_agents
    keys = flows.source * n + flows.target
    t = log[log[:, 3] == EXECUTED]
    u, v = t[:, 1].astype(np.int64), t[:, 2].astype(np.int64)
    row = np.searchsorted(keys, np.minimum(u, v) * n + np.maximum(u, v))
    if row.size and not np.array_equal(keys[np.minimum(row, keys.size - 1)],
                                       np.minimum(u, v) * n + np.maximum(u, v)):  # fmt: skip
        raise TradeError("trade log: a trade along a pair that is not an edge")
    forward_dir = u < v  # the log's u gives `good` to v
    for i in range(t.shape[0]):
        e, k, l = row[i], int(t[i, 4]), int(t[i, 5])
        flows.trades[e] += 1
        give, get = (flows.forward, flows.backward) if forward_dir[i] else (flows.backward, flows.forward)
        give[e, k] += t[i, 6]
        get[e, l] += t[i, 7]
    return flows


@numba.njit(cache=True)
def merchant_valuations(x, a, family, sigma, numeraire, indptr, indices, rows, is_merchant, out):
    """Valuations of merchant rows ``rows`` (m,) from their neighbours' MRS; ``out`` (m, g).

    ``out[r, k] = exp(median_{j in N(i), j not a merchant} log MRS_jk)`` in units of the
    numeraire (``out[r, numeraire] = 1``); no non-merchant neighbour: all ones.
    ``indptr``/``indices``: CSR over local rows (neighbours' ``x``, ``a``... are rows too).
    """
    g = x.shape[1]
    row = np.empty(g)
    for t in range(rows.size):
        r = rows[t]
        lo, hi = indptr[r], indptr[r + 1]
        vals = np.empty((hi - lo, g))
        m = 0
        for p in range(lo, hi):
            w = indices[p]
            if w == r or is_merchant[w]:
                continue
            log_marginal_row(x[w], a[w], family[w], sigma[w], row)
            for j in range(g):
                vals[m, j] = row[j] - row[numeraire]
            m += 1
        for j in range(g):
            out[t, j] = np.exp(np.median(vals[:m, j])) if m > 0 else 1.0
        out[t, numeraire] = 1.0


def round_params(x, economy: Economy, network: Network, config: TradeConfig):
    """``(shares, family, sigma)`` used this round: the economy's own, except that explicit
    merchants (``config.merchants``) are linear agents whose weights are their current
    valuations (:func:`merchant_valuations`): a merchant has no consumption utility for
    what it trades, accepts a trade when the value of its inventory at these valuations
    rises (buy below, sell above the neighbourhood's median MRS), and profits in numeraire.
    """
    if not config.merchants:
        return economy.shares, economy.family, economy.sigma
    rows = np.asarray(config.merchants, dtype=np.int64)
    if rows.max() >= economy.n_agents:
        raise TradeError(f"trade.merchants: agent id {rows.max()} >= {economy.n_agents} agents")
    is_merchant = np.zeros(economy.n_agents, dtype=np.bool_)
    is_merchant[rows] = True
    family = economy.family.copy()
    sigma = economy.sigma.copy()
    family[rows], sigma[rows] = 0, np.inf
    shares = economy.shares.copy()
    values = np.empty((rows.size, economy.n_goods))
    merchant_valuations(x, economy.shares, economy.family, economy.sigma, economy.numeraire,
                        network.indptr, network.indices.astype(np.int64), rows, is_merchant,
                        values)  # fmt: skip
    shares[rows] = values
    return shares, family, sigma


def trade_round(
    state: TradeState, economy: Economy, network: Network, config: TradeConfig,
    accounts: tuple[np.ndarray, EdgeFlows] | None = None,
) -> tuple[TradeState, np.ndarray]:  # fmt: skip
    """One round of matching and bilateral trade; returns the new state and the round's log.

    The log is (m, len(LOG_FIELDS)): one row per matched pair, in increasing ``u``.
    ``accounts = (slots, edges)``: the round's trades are also added to ``edges`` (in
    place; ``slots`` from :func:`edge_slots` on the whole network).
    """
    pairs = matching(network, config.seed_state(), state.round, positions=True)
    u, v = pairs[:, 0], pairs[:, 1]
    result = np.zeros((u.size, 8))
    numeraire = economy.numeraire if config.medium == "numeraire" else -1
    draws = meeting_draws(config, config.seed_state(), state.round, u, v)
    trade_pairs(
        *pair_inputs(state.holdings, round_params(state.holdings, economy, network, config), u, v),
        numeraire, config.halvings, config.min_gap, result, draws,
    )  # fmt: skip
    new = state.copy()
    apply_trades(new.holdings, new.hop_mass, new.inflow, new.outflow, u, v, result)
    if accounts is not None:
        slots, edges = accounts
        book_trades(slots[pairs[:, 2]], result, edges.trades, edges.forward, edges.backward)
    new = dataclasses.replace(new, round=state.round + 1)
    return new, log_rows(state.round, u, v, result)


@numba.njit(cache=True)
def _log_mrs(x, a, family, sigma, numeraire, out):
    row = np.empty(x.shape[1])
    for i in range(x.shape[0]):
        log_marginal_row(x[i], a[i], family[i], sigma[i], row)
        for j in range(x.shape[1]):
            out[i, j] = row[j] - row[numeraire]


def log_mrs(holdings: np.ndarray, economy: Economy) -> np.ndarray:
    """Log MRS of every good in units of the numeraire; (n, g) (numeraire column 0)."""
    return log_mrs_rows(holdings, (economy.shares, economy.family, economy.sigma),
                        economy.numeraire)  # fmt: skip


def log_mrs_rows(x: np.ndarray, params: tuple, numeraire: int) -> np.ndarray:
    """Log MRS of rows ``x`` (o, g) with ``params = (shares, family, sigma)`` of those rows."""
    out = np.empty(x.shape)
    _log_mrs(x, *params, numeraire, out)
    return out


def pareto_gap(holdings: np.ndarray, economy: Economy) -> float:
    """Largest spread of log MRS across agents, ``max_k (max_i r_ik - min_i r_ik)``.

    Zero at an interior Pareto optimum of smooth utilities (all MRS agree); the stopping
    test of the Axtell study. (Corner allocations and Leontief kinks make it an upper bound.)
    """
    r = log_mrs(holdings, economy)
    return float((r.max(axis=0) - r.min(axis=0)).max())


@dataclasses.dataclass
class TradeRun:
    """A finished trade run: final state, the per-edge accounts
    (:class:`~tatonnet.environment.trade.accounts.EdgeFlows`), per-round metrics, and the
    full log (rows, LOG_FIELDS) when it was kept (``keep_log``; else None)."""

    state: TradeState
    edges: EdgeFlows
    metrics: dict[str, np.ndarray]
    converged: bool
    rounds: int
    log: np.ndarray | None = None


def run_trade(
    economy: Economy,
    network: Network,
    config: TradeConfig,
    rounds: int,
    tol: float | None = None,
    state: TradeState | None = None,
    every: int = 1,
    on_round=None,
    keep_log: bool = True,
) -> TradeRun:
    """Run up to ``rounds`` rounds; stop early when ``pareto_gap < tol`` (checked every
    ``every`` rounds). Nothing else stops it: a run that has not met ``tol`` says
    ``converged = False``. ``on_round(state)``, if given, is called after every round (a
    progress bar; it must not change the state). ``keep_log``: keep the full trade log
    (one row per meeting; the per-edge accounts are kept either way).

    Metrics per round: see :mod:`tatonnet.environment.trade.metrics` (reduced from
    per-block partials, so the sharded engine gives the same bits).
    """
    from tatonnet.environment.trade import metrics as tm

    if network.is_central:
        raise TradeError("trade: goods move along edges; the 'central' network has none")
    if rounds < 1:
        raise TradeError(f"trade: rounds must be >= 1, got {rounds}")
    state = state or TradeState.initial(economy.endowments)
    ids = np.arange(economy.n_agents, dtype=np.int64)
    edges = EdgeFlows.zeros(network, economy.n_goods)
    slots = edge_slots(network.indptr, network.indices.astype(np.int64), ids)
    params = (economy.shares, economy.family, economy.sigma)
    logs, history = [], []
    converged = False
    for _ in range(rounds):
        state, log = trade_round(state, economy, network, config, (slots, edges))
        if keep_log:
            logs.append(log)
        check = state.round % every == 0
        mrs = log_mrs_rows(state.holdings, params, economy.numeraire) if check else None
        part = tm.round_partials(
            economy.n_agents, 0, log[:, 1].astype(np.int64), np.ascontiguousarray(log[:, 3:]),
            state.inflow, state.outflow, economy.numeraire, mrs,
        )  # fmt: skip
        history.append(tm.combine([part], economy.numeraire))
        if on_round is not None:
            on_round(state)
        if tol is not None and check and history[-1]["pareto_gap"] < tol:
            converged = True
            break
    log = (np.concatenate(logs) if logs else np.empty((0, len(LOG_FIELDS)))) if keep_log else None
    metrics = {k: np.asarray([h[k] for h in history]) for k in tm.NAMES}
    return TradeRun(state, edges, metrics, converged, state.round, log)
