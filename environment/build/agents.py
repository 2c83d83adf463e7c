"""Agents' rows of an economy that shards draw themselves, keyed by global ids.

A shard owns the contiguous global ids ``start..stop-1`` (``start`` a multiple of
:data:`BLOCK`, ``stop`` a multiple of it or ``n``) and draws only its own rows; every
number is a function of the scenario's seed and of global ids (:mod:`.streams`), so any
block-aligned partition of ``0..n-1`` gives bit-identical arrays and no process ever holds
the whole economy. (:func:`agent_rows` accepts any range ``0 <= start <= stop <= n``: the
rows are the same; only :func:`block_supply` needs block-aligned ranges to add up.)

Definitions (``n`` agents, ``g`` goods, groups ``k = 0..K-1`` of ``scenario.agents`` with
counts ``c_k``, cumulative counts ``C_k = c_0 + ... + c_{k-1}``, ``C_0 = 0``, ``C_K = n``):

* **Group of agent i.** Groups are laid out in scenario order on the ranges
  ``[C_k, C_{k+1})``. With ``placement = "ordered"``, agent ``i`` belongs to the group
  ``k`` with ``C_k <= i < C_{k+1}``. With ``placement = "shuffled"``, to the group whose
  range contains ``pi(i)``, where ``pi = Permutation(n, seed, PLACEMENT)`` is a keyed
  bijection of ``0..n-1`` evaluated at ``i`` alone: group counts are exact (``c_k``) and
  groups mix across the network, with no permutation array. (One group: ``pi`` is never
  evaluated, every agent is in group 0.)
* **Shares and endowments.** Block ``b`` holds ids ``[b * BLOCK, min(n, (b + 1) * BLOCK))``.
  Let ``i_1 < ... < i_m`` be the ids of group ``k`` in block ``b`` (the whole block, not
  just the range). Their share rows are
  ``group.shares.sample(block_generator(seed, SHARES, b, k), m, g)``, row ``j`` to agent
  ``i_j`` (or the constant vector ``group.shares`` on every row when it is a list);
  endowments likewise with ``group.endowment`` and stream ``ENDOWMENT``. A range cuts
  the rows of the blocks it meets from these whole-block draws, so it never needs to know
  other blocks.
* **family** ``= FAMILY_NAMES[group.utility]`` (int8); **sigma** ``= group.sigma`` for a
  CES group, ``FAMILY_SIGMA[family]`` for a limit family (inf, 1, 0); **group** ``= k``
  (int32).
* **Initial prices** (:func:`initial_price_rows`): ``base = dynamics.initial_prices`` (or
  ones); with ``initial_spread = s > 0`` and a non-central network, row ``i`` of block
  ``b`` is ``base * exp(N[i - b * BLOCK])`` with ``N = block_generator(seed, PRICES,
  b).normal(0, s, (rows of block b, g))``; else the one vector ``base`` (g,).
* **Supply** (:func:`block_supply`): per block, the column sums of its endowment rows
  added in id order; the caller adds the blocks in block order, so the total supply is
  bit-identical for every partition.

The distributions are those of :func:`tatonnet.environment.scenario.build_economy`, but
the draws are not: for the same seed this builder makes a *different* economy (another
sample of the same law) from the driver's one-process ``build_economy``.

Cost (2-core development machine, after warm-up): 10^6 agents, 5 goods, one group of
dirichlet shares and uniform endowments, the whole range in ~0.2-0.3 s (the Philox draws
and ~40 µs per block generator dominate); memory is the output arrays plus one group
index per id of the range.

This module must not import :mod:`tatonnet.environment.scenario` (which imports it): the
scenario is taken duck-typed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tatonnet.agents.utility import FAMILY_NAMES, FAMILY_SIGMA, Family
from tatonnet.environment.build.streams import (
    BLOCK,
    ENDOWMENT,
    PLACEMENT,
    PRICES,
    SHARES,
    Permutation,
    block_generator,
    blocks_of,
)
from tatonnet.environment.economy import EconomyError, block_sums

__all__ = [
    "AgentRows",
    "agent_rows",
    "block_supply",
    "check_buildable",
    "group_of",
    "initial_price_rows",
]

_FAMILY_CODES = [int(f) for f in Family]


@dataclasses.dataclass(frozen=True, eq=False)
class AgentRows:
    """Rows ``start..stop-1`` of a shard-built economy (row ``r`` = global agent ``start + r``).

    Attributes
    ----------
    start, stop : int — the global ids ``start..stop-1`` these rows hold
    endowments, shares : (o, g) float64, ``o = stop - start``
    family : (o,) int8 — :class:`tatonnet.agents.utility.Family` codes
    sigma : (o,) float64
    group : (o,) int32 — each row's index in ``scenario.agents``
    """

    start: int
    stop: int
    endowments: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    group: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    def validate(self) -> None:
        """The per-row checks of :class:`tatonnet.environment.economy.Economy`, with its
        one-line wording and *global* agent ids; raises EconomyError.

        The checks over all agents (nobody owns good ``j``, the numeraire, good names) are
        the caller's, once the block supplies are reduced.
        """
        e, a, o = self.endowments, self.shares, self.stop - self.start
        if e.ndim != 2 or e.shape != a.shape or e.shape[0] != o:
            raise EconomyError(
                f"endowments {e.shape} and shares {a.shape} must be (n, g) alike, with one "
                f"row per agent {self.start}..{self.stop - 1} ({o})"
            )
        if self.family.shape != (o,) or self.sigma.shape != (o,):
            raise EconomyError(
                f"family {self.family.shape} and sigma {self.sigma.shape} must have one entry "
                f"per agent ({o})"
            )
        if not np.isin(self.family, _FAMILY_CODES).all():
            raise EconomyError(f"family: unknown utility family codes; expected {_FAMILY_CODES}")
        if e.shape[1] < 2:
            raise EconomyError(f"an exchange economy needs at least 2 goods, got {e.shape[1]}")
        for name, arr in (("endowments", e), ("shares", a), ("sigma", self.sigma)):
            if np.isnan(arr).any():
                raise EconomyError(f"{name}: NaN values")
        if not np.isfinite(e).all() or (e < 0).any():
            raise EconomyError("endowments: expected finite non-negative quantities")
        owned = e.sum(axis=1)
        if (owned <= 0).any():
            raise EconomyError(
                f"endowments: agent {self.start + int(np.argmin(owned))} owns nothing"
            )
        if not np.isfinite(a).all() or (a < 0).any():
            raise EconomyError("shares: expected finite non-negative weights")
        wanted = a.sum(axis=1)
        if (wanted <= 0).any():
            raise EconomyError(f"shares: agent {self.start + int(np.argmin(wanted))} wants nothing")
        ces = self.family == Family.CES
        if (self.sigma[ces] <= 0).any() or not np.isfinite(self.sigma[ces]).all():
            raise EconomyError("sigma: a CES elasticity must be positive and finite")


def check_buildable(scenario) -> None:
    """Raise ValueError (one line) if the shard builder cannot draw this scenario."""
    if getattr(scenario, "fisher", None) is not None:
        raise ValueError(
            'builder "shards" draws agent groups; a [fisher] market is built by the driver '
            '(builder = "driver")'
        )
    if not scenario.agents:
        raise ValueError('builder "shards": the scenario has no agent groups')


def _check_range(scenario, start: int, stop: int) -> tuple[int, int, int]:
    check_buildable(scenario)
    n = int(scenario.n_agents)
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= n:
        raise ValueError(f"agent rows {start}..{stop}: expected 0 <= start <= stop <= {n}")
    return n, start, stop


def _bounds(scenario) -> np.ndarray:
    """``[C_1, ..., C_K]``: the cumulative group counts (int64)."""
    return np.cumsum([int(group.count) for group in scenario.agents], dtype=np.int64)


def group_of(scenario, ids) -> np.ndarray:
    """The group index (int32) of each global id in ``ids`` (see the module docstring)."""
    check_buildable(scenario)
    n = int(scenario.n_agents)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"agent ids must lie in [0, {n})")
    if len(scenario.agents) == 1:  # one group: nothing to place
        return np.zeros(ids.shape[0], dtype=np.int32)
    if scenario.network.placement == "shuffled":
        ids = Permutation(n, scenario.seed, PLACEMENT)(ids)
    return np.searchsorted(_bounds(scenario), ids, side="right").astype(np.int32)


def _fill(out, value, stream, seed, b, k, m, g, local, sel, shift):
    """Write group ``k``'s rows of block ``b`` that lie in the range into ``out``.

    ``local`` are the block-local positions of the group's ``m`` rows (ascending), ``sel``
    the slice of them inside the range, ``shift`` the range's first id minus the block's
    (block-local position ``r`` is row ``r - shift`` of ``out``).
    """
    rows = local[sel]
    if rows[-1] - rows[0] == rows.size - 1:  # consecutive ids (one group, ordered placement)
        rows = slice(int(rows[0]) - shift, int(rows[-1]) + 1 - shift)
    else:
        rows = rows - shift
    if hasattr(value, "sample"):  # a Draw
        out[rows] = value.sample(block_generator(seed, stream, b, k), m, g)[sel]
    else:  # a constant vector, one per good
        out[rows] = np.asarray(value, dtype=np.float64)


def agent_rows(scenario, start: int, stop: int) -> AgentRows:
    """Draw the rows of global ids ``start..stop-1`` (see the module docstring).

    Raises ValueError if the scenario is not buildable by shards (:func:`check_buildable`)
    or the range is not inside ``0..n``.
    """
    n, start, stop = _check_range(scenario, start, stop)
    g, seed, groups = int(scenario.n_goods), int(scenario.seed), scenario.agents
    o = stop - start
    endowments = np.empty((o, g))
    shares = np.empty((o, g))
    group = np.empty(o, dtype=np.int32)
    if o:
        # the groups of every id of the blocks the range meets (whole blocks: the draws are)
        first = (start // BLOCK) * BLOCK
        last = min(n, -(-stop // BLOCK) * BLOCK)
        span = group_of(scenario, np.arange(first, last))
        group[:] = span[start - first : stop - first]
        for b, lo, hi in blocks_of(start, stop):
            b0 = b * BLOCK
            gid = span[b0 - first : min(n, b0 + BLOCK) - first]
            if len(groups) == 1:
                order, counts = np.arange(gid.size), np.array([gid.size])
            else:
                order = np.argsort(gid, kind="stable")
                counts = np.bincount(gid, minlength=len(groups))
            offset = 0
            for k, m in enumerate(counts.tolist()):
                if not m:
                    continue
                local = order[offset : offset + m]  # ascending: a stable sort of the block
                offset += m
                sel = slice(*np.searchsorted(local, (lo - b0, hi - b0)).tolist())
                if sel.start == sel.stop:
                    continue
                spec = groups[k]
                _fill(endowments, spec.endowment, ENDOWMENT, seed, b, k, m, g, local, sel,
                      start - b0)  # fmt: skip
                _fill(shares, spec.shares, SHARES, seed, b, k, m, g, local, sel, start - b0)
    codes = np.array([FAMILY_NAMES[spec.utility] for spec in groups], dtype=np.int8)
    sigmas = np.array(
        [
            float(spec.sigma) if code == Family.CES else float(FAMILY_SIGMA[Family(code)])
            for spec, code in zip(groups, codes.tolist(), strict=True)
        ]
    )
    return AgentRows(start, stop, endowments, shares, codes[group], sigmas[group], group)


def initial_price_rows(scenario, start: int, stop: int) -> np.ndarray:
    """Initial prices of agents ``start..stop-1``: the vector ``base`` (g,) when there is
    no spread or the network is central, else (o, g) rows ``base * exp(normal(0, spread))``
    drawn per block (see the module docstring)."""
    n, start, stop = _check_range(scenario, start, stop)
    g = int(scenario.n_goods)
    dynamics = scenario.dynamics
    base = np.asarray(dynamics.initial_prices or np.ones(g), dtype=np.float64)
    spread = float(dynamics.initial_spread)
    if spread == 0 or scenario.network.kind == "central":
        return base
    out = np.empty((stop - start, g))
    for b, lo, hi in blocks_of(start, stop):
        b0 = b * BLOCK
        rows = min(n, b0 + BLOCK) - b0
        noise = block_generator(scenario.seed, PRICES, b).normal(0.0, spread, (rows, g))
        out[lo - start : hi - start] = base * np.exp(noise[lo - b0 : hi - b0])
    return out


def block_supply(rows: AgentRows) -> np.ndarray:
    """(blocks met, g): per reduction block, the column sums of the range's endowment rows,
    each block added row by row in id order (block ``b`` of the result is global block
    ``rows.start // BLOCK + b``).

    Add the blocks of all shards one after another in block order for a total supply that
    is bit-identical for every block-aligned partition; a range that starts or stops inside
    a block holds only part of that block's sum.
    """
    e = np.ascontiguousarray(rows.endowments, dtype=np.float64)
    if rows.stop <= rows.start:
        return np.zeros((0, e.shape[1]))
    return block_sums(e, rows.start)
