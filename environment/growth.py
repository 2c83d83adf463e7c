"""Growing markets: agents join and leave a running tâtonnement on a schedule.

A scenario with a ``[growth]`` table (:class:`GrowthSpec`, documented in
``docs/12-growth.md``) starts with ``start`` of its agents and lets the rest join on the
schedule; agents may also leave (and join again later). The population is the scenario's:
its groups, endowments and utilities are drawn exactly as for a run that starts at full
size; growth draws only the order in which the agents join, who leaves and whom newcomers
link to, from ``SeedSequence(seed, spawn_key=(GROWTH, purpose))``. When the schedule is
done every agent of the scenario is present, so a grown market and the same market started
at once have the same equilibria.

The state changes are pure functions of arrays (:func:`apply_join`, :func:`apply_leave`);
:class:`GrowingMarket` keeps the population and the graph (edges between stable agent ids:
the scenario's rows) and applies each event to a
:class:`~tatonnet.environment.tatonnement.dynamics.MarketState`. Rows of the running
arrays are the present agents in the order they joined.

Invariants kept across every change (``y`` trackers, ``z`` excess demand at own prices,
``e`` endowments, rows ``i`` over the present agents)::

    sum_i y_i = sum_i z_i          (gradient tracking)
    supply    = sum_i e_i          (goods: a newcomer brings e_k, a leaver takes it out)
    p_i . z_i = 0 for every i      (Walras' law per agent: z_k is a demand at p_k)

A newcomer ``k`` with neighbours ``N_k`` starts at ``u_k = mean_{j in N_k} u_j`` (the
rule's coordinates: log-prices in log space, so the geometric mean of prices), with
``z_k = d_k(p(u_k)) - e_k``, ``y_k = z_k`` and fresh optimizer buffers: both sums grow by
``z_k``. A leaver ``k`` hands ``(y_k - z_k) / |N_k|`` to each present neighbour before its
row goes: ``sum y`` falls by ``y_k - (y_k - z_k) = z_k``, as ``sum z`` does. The Metropolis
weights are recomputed from the new degrees; they stay symmetric and doubly stochastic, so
the round keeps the invariant.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tatonnet.environment.build.streams import GROWTH
from tatonnet.environment.economy import Economy, EconomyError
from tatonnet.environment.network import NetworkError, build_network, from_edges
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import MarketState

#: How a newcomer picks its neighbours (see :class:`GrowthSpec`).
ATTACH = ("preferential", "uniform", "community")
#: Most events a schedule may hold (each rebuilds the arrays: O(n) work).
MAX_EVENTS = 10_000
#: Graph kinds the founders' network can be drawn with.
FOUNDER_KINDS = ("complete", "ring", "grid", "small-world", "scale-free", "random-geometric")

# purposes of the growth stream (spawn_key[1]); never renumber
_ORDER, _FOUNDERS, _LINKS, _LEAVERS = range(4)

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]


class GrowthError(ValueError):
    """The growth schedule cannot run on this scenario (one-line message)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GrowthStep(_Strict):
    """One recurring event: every ``every`` rounds, ``remove`` agents leave, then ``add``
    join (``attach``, ``links``: this step's attachment, default the table's)."""

    every: Positive
    add: NonNegative = 0
    remove: NonNegative = 0
    attach: Literal[ATTACH] | None = None  # type: ignore[valid-type]
    links: Positive | None = None

    @model_validator(mode="after")
    def _does_something(self):
        if self.add == 0 and self.remove == 0:
            raise ValueError("a schedule step needs add or remove (agents joining or leaving)")
        return self


@dataclasses.dataclass(frozen=True)
class Event:
    """What happens after round ``round``: ``remove`` leave, then ``add`` join."""

    round: int
    add: int
    remove: int
    attach: str
    links: int


class GrowthSpec(_Strict):
    """The ``[growth]`` table.

    ``start`` agents (>= 2, fewer than the population) are present at round 0, linked by
    the scenario's ``[network]`` generator; every step of ``schedule`` fires at rounds
    ``every, 2 every, ...`` (steps firing at the same round in table order) until the last
    of the scenario's agents has joined. Leavers go back to the end of the queue.
    """

    start: Annotated[int, Field(ge=2)]
    attach: Literal[ATTACH] = "preferential"  # type: ignore[valid-type]
    links: Positive = 3
    schedule: Annotated[list[GrowthStep], Field(min_length=1)]

    def events(self, n_agents: int, rounds: int) -> list[Event]:
        """The schedule's events until every agent is present; GrowthError (one line) if
        it never gets there within ``rounds`` rounds or :data:`MAX_EVENTS` events, or if
        a leave would leave fewer than 2 agents."""
        if self.start >= n_agents:
            raise GrowthError(
                f"growth.start: {self.start} agents start, but the scenario has {n_agents}: "
                "start must be smaller (the rest join on the schedule)"
            )
        if not any(step.add for step in self.schedule):
            raise GrowthError("growth.schedule: no step adds agents, so the market never grows")
        count, waiting, r, events = self.start, n_agents - self.start, 0, []
        while waiting:
            r = min((r // s.every + 1) * s.every for s in self.schedule)
            if r > rounds:
                raise GrowthError(
                    f"growth.schedule: {n_agents - waiting} of {n_agents} agents are present "
                    f"at dynamics.rounds = {rounds}; the schedule must bring in everybody "
                    "before the run ends (add more, more often, or raise rounds)"
                )
            for s in (s for s in self.schedule if r % s.every == 0):
                if count - s.remove < 2:
                    raise GrowthError(
                        f"growth.schedule: at round {r}, {s.remove} of {count} agents would "
                        "leave; at least 2 must stay"
                    )
                add = min(s.add, waiting + s.remove)
                events.append(Event(r, add, s.remove, s.attach or self.attach,
                                    s.links or self.links))  # fmt: skip
                count, waiting = count + add - s.remove, waiting + s.remove - add
                if len(events) > MAX_EVENTS:
                    raise GrowthError(
                        f"growth.schedule: more than {MAX_EVENTS} events before everybody "
                        "has joined (joins must outpace leaves; add more per step)"
                    )
                if not waiting:
                    break
        return events


# ---- the state changes: pure functions of arrays ------------------------------------------
def apply_join(state: MarketState, neighbours: list[np.ndarray], arrays, numeraire: int,
               log_space: bool, buffers: np.ndarray) -> MarketState:  # fmt: skip
    """``state`` with newcomers appended as rows ``n, n+1, ...``.

    Parameters
    ----------
    state : MarketState of the ``n`` present agents
    neighbours : one int array per newcomer ``t``: its neighbours' rows, all below
        ``n + t`` (earlier newcomers of the batch included)
    arrays : (endowments, shares, family, sigma) of the newcomers, (m, g), (m, g), (m,), (m,)
    numeraire : int
    log_space : bool — the rule's geometry (coordinates are log-prices)
    buffers : (m, n_buffers, g) — the newcomers' optimizer state (the rule's initial one)

    Notes
    -----
    ``u_k = mean_{j in N_k} u_j``, ``z_k = d_k(p(u_k)) - e_k``, ``y_k = z_k``: the sums of
    ``y`` and ``z`` both grow by ``sum_k z_k``, so ``sum y = sum z`` still holds.
    """
    n, g = state.coords.shape
    m = len(neighbours)
    coords = np.empty((n + m, g))
    coords[:n] = state.coords
    for t, rows in enumerate(neighbours):
        coords[n + t] = coords[np.asarray(rows)].mean(axis=0)
    coords[n:, numeraire] = 0.0 if log_space else 1.0  # pinned (already so, up to rounding)
    new_excess = np.empty((m, g))
    e, a, f, s = (np.ascontiguousarray(x) for x in arrays)
    kernel.excess_demand_rows(np.ascontiguousarray(coords[n:]), log_space, e, a, f, s, new_excess)
    excess = np.concatenate([state.excess, new_excess])
    tracker = np.concatenate([state.tracker, new_excess])
    buffers = np.concatenate([state.buffers, buffers])
    return MarketState(coords, tracker, excess, buffers, state.round)


def apply_leave(state: MarketState, leavers: list[int],
                neighbours: list[np.ndarray]) -> MarketState:  # fmt: skip
    """``state`` without the rows ``leavers`` (taken in order).

    ``neighbours[t]``: the rows of leaver ``t``'s neighbours when it leaves (the earlier
    leavers excluded). Each leaver ``k`` hands ``(y_k - z_k) / |N_k|`` to every neighbour
    first, so that ``sum y`` falls by ``z_k`` as ``sum z`` does; its excess demand, its
    endowment and its holdings go with it.
    """
    tracker = state.tracker.copy()
    for k, rows in zip(leavers, neighbours, strict=True):
        rows = np.asarray(rows)
        tracker[rows] += (tracker[k] - state.excess[k]) / rows.size
    keep = np.ones(state.coords.shape[0], dtype=bool)
    keep[list(leavers)] = False
    return MarketState(state.coords[keep], tracker[keep], state.excess[keep],
                       state.buffers[keep], state.round)  # fmt: skip


# ---- the population and its graph --------------------------------------------------------
class GrowingMarket:
    """The present agents and their graph in a growing run.

    Parameters
    ----------
    scenario : Scenario with a ``growth`` table (read: ``growth``, ``network``, ``seed``,
        ``n_agents``, ``dynamics.rounds``, ``numeraire``)
    economy : Economy of the whole population (the scenario's rows)
    group : (N,) int32 — each agent's group (``attach = "community"`` links within it)
    prices : (g,) or (N, g) — initial prices (the founders' rows are used)

    Attributes
    ----------
    present : (n,) int64 — stable ids (scenario rows) of the present agents, in row order
    edges : (m, 2) int64 — undirected edges between stable ids, ``a < b``, unique
    economy, network, group : of the present agents, in row order
    events : list of Event; ``pending`` whether some are still to come
    log : one dict per event applied (round, joined, left, n_agents)
    """

    def __init__(self, scenario, economy: Economy, group: np.ndarray, prices: np.ndarray):
        spec: GrowthSpec = scenario.growth
        self.spec, self.universe, self.universe_group = spec, economy, np.asarray(group)
        self.numeraire = economy.numeraire
        n_all = economy.n_agents
        self.events = spec.events(n_all, scenario.dynamics.rounds)
        self._next = 0
        seeds = [np.random.SeedSequence(scenario.seed, spawn_key=(GROWTH, k)) for k in range(4)]
        order = np.random.default_rng(seeds[_ORDER]).permutation(n_all)
        self._links_rng = np.random.default_rng(seeds[_LINKS])
        self._leave_rng = np.random.default_rng(seeds[_LEAVERS])
        self.present = order[: spec.start].astype(np.int64)
        self.waiting = deque(order[spec.start :].tolist())
        net = scenario.network
        if net.kind not in FOUNDER_KINDS:
            raise GrowthError(f"growth: network.kind {net.kind!r} cannot grow; use one of "
                              f"{list(FOUNDER_KINDS)}")  # fmt: skip
        seed = int(seeds[_FOUNDERS].generate_state(1)[0])
        try:
            founders = build_network(net.kind, spec.start, seed, **net.params())
        except (NetworkError, ValueError) as exc:
            raise GrowthError(
                f"growth.start = {spec.start}: the founders' network: {exc}"
            ) from None
        src, dst, _ = founders.edge_list()
        self.edges = _normalized(np.stack([self.present[src], self.present[dst]], axis=1))
        prices = np.asarray(prices, dtype=float)
        self.prices = prices[self.present] if prices.ndim == 2 else prices
        self.log: list[dict] = []
        self._rebuild()

    @property
    def pending(self) -> bool:
        """Whether events are still to come (the market is still growing)."""
        return self._next < len(self.events)

    def _rebuild(self) -> None:
        ids, u = self.present, self.universe
        try:
            self.economy = Economy(u.endowments[ids], u.shares[ids], u.family[ids], u.sigma[ids],
                                   u.numeraire, u.goods)  # fmt: skip
        except EconomyError as exc:
            raise GrowthError(f"growth: the {ids.size} agents present: {exc} (raise "
                              "growth.start)") from None  # fmt: skip
        self.group = self.universe_group[ids]
        pos = np.full(u.n_agents, -1, dtype=np.int64)
        pos[ids] = np.arange(ids.size)
        self.network = from_edges(pos[self.edges], ids.size, "grown")

    def advance(self, round_: int, state: MarketState, rule, log_space: bool):
        """Apply the events due after round ``round_`` to ``state``; the new state, or None
        if none was due. ``economy``, ``network``, ``group`` then describe its rows."""
        changed = False
        while self.pending and self.events[self._next].round <= round_:
            ev = self.events[self._next]
            self._next += 1
            state = self._leave(state, ev.remove)
            left = self._last_left
            state = self._join(state, ev, rule, log_space)
            self.log.append({"round": ev.round, "joined": self._last_joined, "left": left,
                             "n_agents": int(self.present.size)})  # fmt: skip
            changed = True
        return state if changed else None

    # ---- leaves --------------------------------------------------------------------------
    def _leave(self, state: MarketState, count: int) -> MarketState:
        """``count`` present agents, drawn uniformly, leave (one whose departure would leave
        a good unowned is skipped); their neighbours are joined in a path."""
        self._last_left = 0
        if not count:
            return state
        u = self.universe
        supply = u.endowments[self.present].sum(axis=0)
        alive = np.ones(self.present.size, dtype=bool)
        leavers, neighbours = [], []
        for row in self._leave_rng.permutation(self.present.size):
            if len(leavers) == count:
                break
            k = int(self.present[row])
            if (supply - u.endowments[k] <= 0).any():
                continue  # the last owner of a good stays
            supply = supply - u.endowments[k]
            touch = (self.edges[:, 0] == k) | (self.edges[:, 1] == k)
            nbrs = np.sort(np.setdiff1d(self.edges[touch].ravel(), [k]))
            path = np.stack([nbrs[:-1], nbrs[1:]], axis=1)
            self.edges = _normalized(np.concatenate([self.edges[~touch], path]))
            alive[row] = False
            leavers.append(int(row))
            neighbours.append(_rows_of(nbrs, self.present))
            self.waiting.append(k)
        state = apply_leave(state, leavers, neighbours)
        self.present = self.present[alive]
        self._last_left = len(leavers)
        self._rebuild()
        return state

    # ---- joins ---------------------------------------------------------------------------
    def _join(self, state: MarketState, ev: Event, rule, log_space: bool) -> MarketState:
        self._last_joined = 0
        if not (ev.add and self.waiting):
            return state
        add = min(ev.add, len(self.waiting))  # fewer when a leave was skipped
        newcomers = np.array([self.waiting.popleft() for _ in range(add)], dtype=np.int64)
        rows_of = dict(zip(self.present.tolist(), range(self.present.size), strict=True))
        picker = _Picker(self.edges, self.present, self.universe_group, self._links_rng)
        new_edges, neighbours = [], []
        for t, k in enumerate(newcomers.tolist()):
            targets = picker.pick(ev.attach, ev.links, int(self.universe_group[k]))
            picker.add(k, targets, int(self.universe_group[k]))
            rows_of[k] = self.present.size + t
            new_edges.extend((k, j) for j in targets)
            neighbours.append(np.array([rows_of[j] for j in targets], dtype=np.int64))
        u = self.universe
        arrays = (u.endowments[newcomers], u.shares[newcomers], u.family[newcomers],
                  u.sigma[newcomers])  # fmt: skip
        buffers = rule.init_buffers(newcomers, u.n_goods)
        state = apply_join(state, neighbours, arrays, self.numeraire, log_space, buffers)
        self.present = np.concatenate([self.present, newcomers])
        self.edges = _normalized(np.concatenate([self.edges, np.array(new_edges).reshape(-1, 2)]))
        self._last_joined = add
        self._rebuild()
        return state

    def summary(self) -> dict:
        """What the growth did: the table, the events applied, the final population."""
        return {"spec": self.spec.model_dump(), "events": len(self.log),
                "last_event_round": self.log[-1]["round"] if self.log else None,
                "joined": sum(e["joined"] for e in self.log),
                "left": sum(e["left"] for e in self.log)}  # fmt: skip


class _Picker:
    """Draws a newcomer's neighbours among the present agents (and earlier newcomers).

    ``preferential``: with probability proportional to degree (a uniform draw from the
    list of edge endpoints); ``uniform``: uniformly; ``community``: preferentially within
    the newcomer's group, the rest (if its group has fewer present agents than ``links``)
    preferentially from everyone. Targets are distinct; a newcomer links to everybody when
    fewer than ``links`` agents are present.
    """

    def __init__(self, edges, present, group, rng):
        self.rng, self.group = rng, group
        self.ends = edges.ravel().tolist()
        self.nodes = present.tolist()
        self.by_group: dict[int, list[int]] = {}
        self.nodes_by_group: dict[int, list[int]] = {}
        for j in self.ends:
            self.by_group.setdefault(int(group[j]), []).append(j)
        for j in self.nodes:
            self.nodes_by_group.setdefault(int(group[j]), []).append(j)

    def pick(self, attach: str, links: int, grp: int) -> list[int]:
        if attach == "community":
            members = self.nodes_by_group.get(grp, [])
            if len(members) <= links:
                chosen = list(members)
                return chosen + self._draw(self.ends, self.nodes, links - len(chosen), chosen)
            return self._draw(self.by_group[grp], members, links, [])
        pool = self.nodes if attach == "uniform" else self.ends
        return self._draw(pool, self.nodes, links, [])

    def _draw(self, pool: list[int], nodes: list[int], count: int, chosen: list[int]):
        """``count`` distinct draws from ``pool`` not in ``chosen`` (all of ``nodes`` left
        if there are not enough of them)."""
        if count <= 0:
            return []
        taken = set(chosen)
        left = [j for j in nodes if j not in taken] if len(nodes) - len(taken) <= count else None
        if left is not None:
            return left
        out = []
        for _ in range(50 * count):
            j = pool[int(self.rng.integers(len(pool)))]
            if j not in taken:
                taken.add(j)
                out.append(j)
                if len(out) == count:
                    return out
        rest = [j for j in nodes if j not in taken]  # a pool dominated by few: fill uniformly
        pick = self.rng.choice(len(rest), count - len(out), replace=False)
        return out + [rest[i] for i in sorted(pick.tolist())]

    def add(self, k: int, targets: list[int], grp: int) -> None:
        self.nodes.append(k)
        self.nodes_by_group.setdefault(grp, []).append(k)
        for j in targets:
            self.ends += [k, j]
            self.by_group.setdefault(grp, []).append(k)
            self.by_group.setdefault(int(self.group[j]), []).append(j)


def _normalized(edges: np.ndarray) -> np.ndarray:
    """Edges (m, 2) as unique rows ``a < b`` sorted (self-loops dropped)."""
    edges = np.sort(np.asarray(edges, dtype=np.int64).reshape(-1, 2), axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    return np.unique(edges, axis=0) if edges.size else edges


def _rows_of(ids: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Rows (positions in ``present``) of the stable ids ``ids``."""
    order = np.argsort(present)
    return order[np.searchsorted(present, ids, sorter=order)]
