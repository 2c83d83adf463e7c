"""A shard: the agents of one contiguous id range, their ghosts, and the fused round on them.

A :class:`Shard` is a plain class — tested without Ray, run in-process for one worker, and
wrapped with ``ray.remote`` by :mod:`tatonnet.distributed.engine` only when it is created. Its static
data is a :class:`ShardSpec` (built once by :func:`build_specs`, ``ray.put`` once).

Memory layout: the source arrays ``coords``, ``tracker``, ``excess`` have
``n_own + n_ghost`` rows — the shard's own agents first (global ids ``start..stop-1``),
then the ghost copies of the out-of-shard neighbours they read, sorted by global id. The
local CSR keeps every row's neighbours in *global-id order*, so each agent's sums are taken
in the same order as in the single-process kernel, and reduction blocks are aligned to
global ids: results are bit-identical for any number of shards.

A round (driver-orchestrated, :meth:`Shard.round`):

1. ``receive`` — write the neighbours' messages (their agents' new ``coords`` and
   ``tracker``, or ``excess`` under the ``local`` signal) into the ghost rows;
2. ``step`` — the fused kernel on the own rows (:func:`tatonnet.environment.tatonnement.kernel.network_round`);
3. ``outgoing`` — for each neighbouring shard, exactly the rows it keeps ghosts of.

A shard with no neighbours (the only shard of a run) can also run many rounds in one call
(:meth:`Shard.run_rounds`): it returns every round's partials and stops after the first
round whose metrics stop the run, so the driver sees the same rounds as one call a round.

In a Ray Compiled Graph (shard-to-shard exchange) a round is four tasks:
:meth:`Shard.graph_begin`, :meth:`Shard.graph_send` (boundary rows into the channels),
:meth:`Shard.graph_interior` (the blocks that read no ghost row, while the rows travel) and
:meth:`Shard.graph_boundary` (ghost rows written, the other blocks). Partials are per block,
so the order of the blocks does not change a bit. :meth:`Shard.keep_snapshot` /
:meth:`Shard.rollback` return to the start of a batch that stopped early.

Threads: a shard runs the kernel on ``threads`` numba threads (a Ray worker reserves as
many CPUs); results do not depend on the count.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path

import numba
import numpy as np

from tatonnet.agents.rules import PriceRule
from tatonnet.environment.build.shard_rows import ShardBuilder, ShardRows
from tatonnet.environment.economy import Economy, cobb_douglas_blocks
from tatonnet.environment.network import Network, sorted_unique
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    coords_from_prices,
    prices_from_coords,
    reduce_partials,
    state_partials,
)
from tatonnet.environment.tatonnement.rows import RowRound
from tatonnet.environment.tatonnement.status import stop_verdict
from tatonnet.results import checkpoints


@dataclasses.dataclass(frozen=True, eq=False)
class ShardSpec:
    """Static data of one shard (shapes: ``o`` own agents, ``h`` ghosts, ``g`` goods).

    indptr (o+1,), indices (nnz,) local source rows, mixing (nnz,) — own CSR rows;
    ghost_ids (h,) global ids of the ghost rows; recv {src shard: (m,) ghost positions, in
    the order the sender sends}; send {dst shard: (m,) own local rows to send};
    endowments, shares (o, g), family, sigma (o,), inv_scale (o, g), group (o,);
    program: the composite rule's round
    (:class:`~tatonnet.environment.tatonnement.rows.RowRound`, run by
    :class:`~tatonnet.distributed.composite_shard.CompositeShard`), None for the fused kernel.
    """

    shard_id: int
    start: int
    stop: int
    indptr: np.ndarray
    indices: np.ndarray
    mixing: np.ndarray
    ghost_ids: np.ndarray
    recv: dict[int, np.ndarray]
    send: dict[int, np.ndarray]
    endowments: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    inv_scale: np.ndarray
    group: np.ndarray
    rule: PriceRule
    tracking: bool
    numeraire: int
    goods: tuple[str, ...]
    program: RowRound | None = None

    @property
    def n_own(self) -> int:
        return self.stop - self.start

    @property
    def message_floats_per_row(self) -> int:
        """float64 values a boundary row sends per round (every exchange)."""
        if self.program is None:
            return 2 * self.endowments.shape[1]
        return sum(self.program.message_floats(p) for p in range(len(self.program.exchanges)))


def build_specs(
    economy: Economy,
    network: Network,
    ranges,
    rule: PriceRule,
    inv_scale: np.ndarray,
    tracking: bool,
    group: np.ndarray,
    program: RowRound | None = None,
) -> list[ShardSpec]:
    """Cut the global arrays into one :class:`ShardSpec` per id range (``program``: a
    composite rule's round, for every shard)."""
    starts = np.array([r[0] for r in ranges])
    ghosts_of, specs = [], []
    for start, stop in ranges:
        lo, hi = network.indptr[start], network.indptr[stop]
        cols = network.indices[lo:hi].astype(np.int64)
        outside = (cols < start) | (cols >= stop)
        ghosts_of.append(sorted_unique(cols[outside]))
    for k, (start, stop) in enumerate(ranges):
        lo, hi = network.indptr[start], network.indptr[stop]
        cols = network.indices[lo:hi].astype(np.int64)
        ghosts = ghosts_of[k]
        n_own = stop - start
        local = np.where(
            (cols >= start) & (cols < stop),
            cols - start,
            n_own + np.searchsorted(ghosts, cols),
        )
        owners = np.searchsorted(starts, ghosts, side="right") - 1
        recv = {int(s): np.flatnonzero(owners == s) for s in sorted_unique(owners)}
        send = {}
        for d, other in enumerate(ghosts_of):
            if d != k:
                mine = other[(other >= start) & (other < stop)]
                if mine.size:
                    send[d] = mine - start
        specs.append(
            ShardSpec(
                shard_id=k, start=start, stop=stop,
                indptr=network.indptr[start : stop + 1] - lo,
                indices=local.astype(np.int32),
                mixing=network.mixing[lo:hi].copy(),
                ghost_ids=ghosts, recv=recv, send=send,
                endowments=np.ascontiguousarray(economy.endowments[start:stop]),
                shares=np.ascontiguousarray(economy.shares[start:stop]),
                family=np.ascontiguousarray(economy.family[start:stop]),
                sigma=np.ascontiguousarray(economy.sigma[start:stop]),
                inv_scale=np.ascontiguousarray(inv_scale[start:stop]),
                group=np.ascontiguousarray(group[start:stop]),
                rule=rule, tracking=tracking, numeraire=economy.numeraire,
                goods=tuple(economy.goods), program=program,
            )
        )  # fmt: skip
    return specs


def spec_from_rows(k: int, rows: ShardRows, rule: PriceRule, tracking: bool, numeraire: int,
                   goods) -> ShardSpec:  # fmt: skip
    """The :class:`ShardSpec` of a shard that built its own rows."""
    a = rows.agents
    return ShardSpec(
        shard_id=k, start=rows.start, stop=rows.stop,
        indptr=rows.indptr, indices=rows.indices, mixing=rows.mixing,
        ghost_ids=rows.ghost_ids, recv=rows.recv, send=rows.send,
        endowments=a.endowments, shares=a.shares, family=a.family, sigma=a.sigma,
        inv_scale=rows.inv_scale, group=a.group, rule=rule, tracking=tracking,
        numeraire=numeraire, goods=tuple(goods),
    )  # fmt: skip


def _own_threads(method):
    """Run ``method`` on the shard's numba thread count: the count is per calling thread,
    and an actor that takes concurrent calls (shard-to-shard exchange) runs each call on a
    thread of its pool."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self._n_threads is not None and numba.get_num_threads() != self._n_threads:
            numba.set_num_threads(self._n_threads)
        return method(self, *args, **kwargs)

    return wrapper


def _boundary_blocks(spec: ShardSpec) -> np.ndarray:
    """The shard's reduction blocks (0-based) with a row that reads a ghost row."""
    first = spec.start // kernel.BLOCK
    offset = spec.start - first * kernel.BLOCK  # row 0's place in its block
    n_blocks = kernel.n_blocks(spec.stop) - first
    marks = _mark_boundary(spec.indptr, spec.indices, spec.n_own, offset, kernel.BLOCK, n_blocks)
    return np.flatnonzero(marks).astype(np.int64)


@numba.njit(cache=True)
def _mark_boundary(indptr, indices, n_own, offset, block, n_blocks):
    marks = np.zeros(n_blocks, dtype=np.bool_)
    for r in range(n_own):
        for k in range(indptr[r], indptr[r + 1]):
            if indices[k] >= n_own:
                marks[(r + offset) // block] = True
                break
    return marks


class Shard:
    """The agents ``spec.start..spec.stop-1`` and their ghosts; see the module docstring."""

    def __init__(
        self,
        spec: ShardSpec | None = None,
        initial_prices: np.ndarray | None = None,
        threads: int | None = None,
    ):
        """``spec`` None: the shard builds its own rows (:meth:`build_decide`, ...)."""
        self._n_threads = None
        if threads is not None:
            self._n_threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
            numba.set_num_threads(self._n_threads)
        self.spec = None
        self._snapshot = None
        self._snapshot_arrays: dict[str, np.ndarray] | None = None  # reused by keep_snapshot
        if spec is not None:
            self._setup(spec, initial_prices)

    def _adopt(self, spec: ShardSpec) -> ShardSpec:
        """Take ``spec`` as this shard's static data (set-up shared by every kind of shard):
        writable arrays, the ghost slices each neighbour writes, the timers."""
        self._snapshot = self._snapshot_arrays = None
        # arrays that arrive through Ray's object store are read-only views; the compiled
        # kernel's signature takes writable arrays, so own a copy of those
        spec = dataclasses.replace(
            spec,
            **{
                f.name: np.array(getattr(spec, f.name))
                for f in dataclasses.fields(spec)
                if isinstance(getattr(spec, f.name), np.ndarray)
                and not getattr(spec, f.name).flags.writeable
            },
        )
        self.spec = s = spec
        self._log = s.rule.space == "log"
        self._arrays = (s.endowments, s.shares, s.family, s.sigma)
        self.n_blocks = kernel.n_blocks(s.stop) - s.start // kernel.BLOCK
        self.round = 0
        # ghost rows of one sender are one contiguous run (ghosts are sorted by global id,
        # shards are contiguous id ranges): receive copies slices, not fancy-indexed rows
        self._recv_slices = {}
        for src, positions in s.recv.items():
            lo, hi = int(positions[0]), int(positions[-1]) + 1
            if hi - lo != positions.size:  # pragma: no cover - guaranteed by build_specs
                raise ValueError(f"shard {s.shard_id}: ghosts of shard {src} are not contiguous")
            self._recv_slices[src] = slice(s.n_own + lo, s.n_own + hi)
        self.seconds = {"receive": 0.0, "kernel": 0.0, "outgoing": 0.0}
        return s

    def _setup(self, spec: ShardSpec, initial_prices: np.ndarray) -> None:
        s = self._adopt(spec)
        g = s.endowments.shape[1]
        rows = s.n_own + s.ghost_ids.size
        self._src = [np.zeros((rows, g)) for _ in range(3)]  # coords, tracker, excess
        self._dst = [np.zeros((rows, g)) for _ in range(3)]
        self.buffers = s.rule.init_buffers(np.arange(s.start, s.start + s.n_own), g)
        self._params = s.rule.params()
        self._transform = s.rule.signal_transform
        prices = np.broadcast_to(np.asarray(initial_prices, dtype=float), (s.n_own, g))
        prices = prices / prices[:, [s.numeraire]]
        coords, tracker, excess = (a[: s.n_own] for a in self._src)
        coords[:] = coords_from_prices(prices, s.rule.space)
        kernel.excess_demand_rows(coords, self._log, *self._arrays, excess)
        tracker[:] = excess
        self._all_blocks = np.arange(self.n_blocks, dtype=np.int64)
        self._boundary = _boundary_blocks(s)
        self._interior = np.setdiff1d(self._all_blocks, self._boundary)
        # two buffers per destination, used in turn: an in-process neighbour reads this
        # round's message during the next round, while this shard writes the other one
        self._out = {d: [np.empty((rows.size, 2 * g)) for _ in range(2)]
                     for d, rows in s.send.items()}  # fmt: skip
        self._out_turn = 0

    # ---- building its own rows (scenario builder "shards") --------------------------------
    @_own_threads
    def build_decide(self, scenario: dict, ranges, k: int, signal: str, rule: PriceRule):
        """Step 1 of :mod:`tatonnet.environment.build.shard_rows`: the edges this shard's
        rows decide, one ``(us, vs)`` pair per shard in shard order."""
        from tatonnet.environment.scenario import Scenario

        sc = Scenario.model_validate(scenario)
        self._builder = ShardBuilder(sc, ranges, k, signal)
        self._build_rule = rule
        decided = self._builder.decide()
        out = tuple(decided[d] for d in range(len(ranges)))
        return out[0] if len(out) == 1 else out

    @_own_threads
    def build_rows(self, *edge_parts):
        """Step 2: own rows; returns the small report, then the ghost data of each shard
        (in shard order; ``None`` for shards that read nothing of this one)."""
        report = self._builder.rows(edge_parts)
        ghost = report.pop("ghost_data")
        return (report, *(ghost.get(d) for d in range(len(self._builder.ranges))))

    @_own_threads
    def build_finish(self, supply: np.ndarray, *ghost_parts) -> int:
        """Step 3: weights and signal scale from the ghosts' data (one part per shard, in
        shard order; ``None`` where that shard sends nothing); the shard is then ready."""
        b = self._builder
        data = {s: ghost_parts[s] for s in b.recv}
        rows = b.finish(np.asarray(supply), data)
        sc = b.scenario
        spec = spec_from_rows(b.k, rows, self._build_rule, b.signal == "tracking" and
                              sc.network.kind != "central", sc.numeraire, sc.good_names)  # fmt: skip
        del self._builder, self._build_rule
        self._setup(spec, rows.prices)
        return self.spec.n_own

    # ---- messages ------------------------------------------------------------------------
    def outgoing(self) -> dict[int, np.ndarray]:
        """Messages for the neighbouring shards: (m, 2g) rows ``[coords | tracker or excess]``.

        The arrays are this shard's own buffers, overwritten two calls later.
        """
        t0 = time.perf_counter()
        coords, tracker, excess = self._src
        second = tracker if self.spec.tracking else excess
        turn, self._out_turn = self._out_turn, 1 - self._out_turn
        out = {}
        for d, rows in self.spec.send.items():
            message = self._out[d][turn]
            _gather_rows(coords, second, rows, message)
            out[d] = message
        self.seconds["outgoing"] += time.perf_counter() - t0
        return out

    def receive(self, messages: dict[int, np.ndarray]) -> None:
        """Write neighbours' messages into the ghost rows."""
        t0 = time.perf_counter()
        coords, tracker, excess = self._src
        second = tracker if self.spec.tracking else excess
        g = coords.shape[1]
        for src, rows in self._recv_slices.items():
            message = messages[src]
            coords[rows] = message[:, :g]
            second[rows] = message[:, g:]
        self.seconds["receive"] += time.perf_counter() - t0

    # ---- the round -----------------------------------------------------------------------
    @_own_threads
    def step(self) -> np.ndarray:
        """One round on the own rows; returns the per-block partials (b, N_PARTIALS, g)."""
        partials = np.empty((self.n_blocks, kernel.N_PARTIALS, self.spec.endowments.shape[1]))
        self._kernel(self._all_blocks, partials)
        self._end_round()
        return partials

    def _kernel(self, blocks: np.ndarray, partials: np.ndarray) -> None:
        """The fused kernel on the own rows of ``blocks`` (this round's ``partials`` rows)."""
        t0 = time.perf_counter()
        s, o = self.spec, self.spec.n_own
        src, dst = self._src, self._dst
        # the schedule's step for this round, from the global round count (restored with a
        # checkpoint): the same bits on every shard
        params = s.rule.round_params(self.round) if s.rule.scheduled else self._params
        kernel.network_round(
            s.indptr, s.indices, s.mixing,
            src[0], src[1], src[2],
            dst[0][:o], dst[1][:o], dst[2][:o],
            *self._arrays, s.inv_scale, s.start,
            self._log, s.tracking, s.numeraire,
            s.rule.kernel, params, *self._transform, self.buffers, blocks, partials,
        )  # fmt: skip
        self.seconds["kernel"] += time.perf_counter() - t0

    def _end_round(self) -> None:
        self._src, self._dst = self._dst, self._src
        self.round += 1

    @_own_threads
    def run_rounds(self, n_rounds: int, supply: np.ndarray, n_agents: int, tol: float | None):
        """Up to ``n_rounds`` rounds of a shard without neighbours; (r, b, N_PARTIALS, g).

        With ``tol``, stops after the first round whose metrics (reduced exactly as the
        driver reduces them) stop the run (:func:`check_stop`): the shard never runs
        past the round the driver stops at.
        """
        if self.spec.recv or self.spec.send:
            raise RuntimeError("run_rounds: a shard with neighbours exchanges every round")
        out = []
        for _ in range(n_rounds):
            partials = self.step()
            out.append(partials)
            if tol is not None:
                m = reduce_partials(self.round, partials, supply, n_agents)
                if stop_verdict(m, tol) is not None:
                    break
        return np.stack(out)

    def round_trip(self, messages: dict[int, np.ndarray]):
        """``receive`` + ``step`` + ``outgoing``: returns ``(partials, outgoing)``."""
        self.receive(messages)
        partials = self.step()
        return partials, self.outgoing()

    @_own_threads
    def ray_round(self, *messages):
        """Ray entry point: messages from ``sorted(spec.recv)`` in order; returns
        ``partials`` then one message per ``sorted(spec.send)`` destination."""
        partials, out = self.round_trip(dict(zip(sorted(self.spec.recv), messages, strict=True)))
        result = [partials] + [out[d] for d in sorted(self.spec.send)]
        return result[0] if len(result) == 1 else tuple(result)

    # ---- shard-to-shard exchange (a Ray Compiled Graph, :mod:`.engine`) -------------------
    def graph_begin(self, snapshot: bool) -> int:
        """First task of a round; with ``snapshot``, keep the state for :meth:`rollback`."""
        if snapshot:
            self.keep_snapshot()
        return self.round

    def graph_send(self, _round: int):
        """This round's boundary rows, one message per ``sorted(spec.send)`` destination (the
        graph's channel copies each at once, so this shard's buffers can be reused)."""
        out = self.outgoing()
        messages = tuple(out[d] for d in sorted(self.spec.send))
        return messages[0] if len(messages) == 1 else messages

    @_own_threads
    def graph_interior(self, _round: int) -> int:
        """The kernel on the blocks that read no ghost row (while the messages travel)."""
        self._round_partials = np.empty(
            (self.n_blocks, kernel.N_PARTIALS, self.spec.endowments.shape[1])
        )
        self._kernel(self._interior, self._round_partials)
        return 0

    @_own_threads
    def graph_boundary(self, _token: int, *messages) -> np.ndarray:
        """The neighbours' rows (from ``sorted(spec.recv)``) into the ghost rows, then the
        kernel on the other blocks; returns the round's partials (b, N_PARTIALS, g)."""
        self.receive(dict(zip(sorted(self.spec.recv), messages, strict=True)))
        self._kernel(self._boundary, self._round_partials)
        self._end_round()
        return self._round_partials

    def keep_snapshot(self) -> None:
        """Keep the current state (a batch of rounds may have to be run again to its stop).

        The copy goes into arrays kept from the first snapshot on, so a run holds one copy
        of its own rows' state (120 B per agent with 5 goods), never two at once."""
        state = self._snapshot_arrays
        if state is None:
            state = self._snapshot_arrays = self.state()
        else:
            o = self.spec.n_own
            for array, name in zip(self._src, ("coords", "tracker", "excess"), strict=True):
                np.copyto(state[name], array[:o])
            np.copyto(state["buffers"], self.buffers)
        self._snapshot = (self.round, state)

    def rollback(self) -> int:
        """Back to the state kept by the last ``graph_begin(snapshot=True)``; its round."""
        if self._snapshot is None:
            raise RuntimeError("rollback: no snapshot was kept")
        round_, state = self._snapshot
        self._snapshot = None
        self._load_state(state)
        self.round = round_
        return round_

    @_own_threads
    def partials(self) -> np.ndarray:
        """Per-block partials of the current own state (for round-0 metrics)."""
        o = self.spec.n_own
        return state_partials(
            self._coords()[:o], self._excess()[:o], self.spec.rule.space, self.spec.start
        )

    def _coords(self) -> np.ndarray:
        """The coordinates (own rows first, then ghosts)."""
        return self._src[0]

    def _excess(self) -> np.ndarray:
        """The excess demand at own coordinates (own rows first)."""
        return self._src[2]

    # ---- central auctioneer --------------------------------------------------------------
    @_own_threads
    def excess_blocks(self, prices: np.ndarray) -> np.ndarray:
        """Per-block sums of the own agents' excess demand at one price vector."""
        out = np.empty((self.n_blocks, prices.size))
        kernel.excess_demand_blocks(prices, *self._arrays, self.spec.start, out)
        return out

    # ---- inspection, checkpoints, results ------------------------------------------------
    def prices(self) -> np.ndarray:
        """Own agents' prices (o, g)."""
        return prices_from_coords(self._coords()[: self.spec.n_own], self.spec.rule.space)

    def state(self) -> dict[str, np.ndarray]:
        o = self.spec.n_own
        return {
            "coords": self._src[0][:o].copy(),
            "tracker": self._src[1][:o].copy(),
            "excess": self._src[2][:o].copy(),
            "buffers": self.buffers.copy(),
        }

    def checkpoint(self, folder: str) -> str:
        """Write own state to ``folder/shard-<k>.npz`` (atomically); returns the path."""
        return checkpoints.write_shard(folder, self.spec.shard_id,
                                       {"round": self.round, **self.state()})  # fmt: skip

    def restore(self, folder: str) -> int:
        """Load own state from a checkpoint folder; ghosts arrive with the next messages."""
        data = checkpoints.read_shard(folder, self.spec.shard_id)
        self._load_state(data)
        self.round = int(data["round"])
        return self.round

    def _load_state(self, data) -> None:
        o = self.spec.n_own
        for array, name in zip(self._src, ("coords", "tracker", "excess"), strict=True):
            array[:o] = data[name]
        self.buffers[:] = data["buffers"]

    def row_prices(self, local: int) -> np.ndarray:
        """Prices of own agent ``local`` (g,)."""
        return prices_from_coords(self._coords()[local], self.spec.rule.space)

    #: Rows per piece of a written table (a row group): the writers' memory is bounded by
    #: a piece, not the shard (at 10^7 agents a whole-shard table peaked at 1.8 GiB a worker).
    WRITE_ROWS = 1 << 18

    @_own_threads
    def write_agents(self, folder: str, central_prices: np.ndarray | None = None) -> str:
        """Write the own agents' final state as ``folder/part-<k>.parquet``, in pieces of
        :attr:`WRITE_ROWS` rows.

        ``central_prices`` (g,): the auctioneer's prices, for central runs.
        """
        from tatonnet.results.output import agent_columns

        s, o = self.spec, self.spec.n_own
        path = Path(folder) / f"part-{s.shard_id:04d}.parquet"

        def piece(lo: int, hi: int):
            e = s.endowments[lo:hi]
            if central_prices is None:
                prices = prices_from_coords(self._coords()[lo:hi], s.rule.space)
                excess = self._excess()[lo:hi]
            else:
                prices = np.ascontiguousarray(np.broadcast_to(central_prices, e.shape))
                excess = np.empty_like(prices)
                coords = coords_from_prices(prices, s.rule.space)
                kernel.excess_demand_rows(coords, self._log, e, s.shares[lo:hi],
                                          s.family[lo:hi], s.sigma[lo:hi], excess)  # fmt: skip
            ids = np.arange(s.start + lo, s.start + hi)
            return agent_columns(ids, s.group[lo:hi], s.family[lo:hi], s.goods, prices,
                                 excess, e)  # fmt: skip

        _write_pieces(path, piece, o, self.WRITE_ROWS)
        return str(path)

    def own_rows(self) -> dict[str, np.ndarray]:
        """Own agents' endowments, shares, family, sigma, group (for views that gather)."""
        s = self.spec
        return {"endowments": s.endowments, "shares": s.shares, "family": s.family,
                "sigma": s.sigma, "group": s.group}  # fmt: skip

    def global_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Own CSR rows with global column ids: ``(indptr, columns, mixing)``."""
        s = self.spec
        return s.indptr, self._global_columns(0, s.indices.size), s.mixing

    def _global_columns(self, a: int, b: int) -> np.ndarray:
        """Global ids (int64) of the CSR entries ``a..b-1`` (own rows, then ghosts)."""
        s = self.spec
        local = s.indices[a:b].astype(np.int64)
        cols = local + s.start
        ghost = local >= s.n_own
        cols[ghost] = s.ghost_ids[local[ghost] - s.n_own]
        return cols

    def cobb_douglas_blocks(self) -> np.ndarray:
        """Per-block ``sum alpha_i e_i^T`` of the own agents (b, g, g)."""
        s = self.spec
        return cobb_douglas_blocks(s.shares, s.endowments, s.start)

    def write_edges(self, folder: str) -> str:
        """Write the own rows' edges to higher ids as ``folder/part-<k>.parquet``
        (``source`` < ``target``, int64): every edge once over all shards; in pieces of
        :attr:`WRITE_ROWS` rows."""
        import pyarrow as pa

        s = self.spec
        path = Path(folder) / f"part-{s.shard_id:04d}.parquet"

        def piece(lo: int, hi: int):
            cols = self._global_columns(int(s.indptr[lo]), int(s.indptr[hi]))
            rows = np.repeat(np.arange(s.start + lo, s.start + hi, dtype=np.int64),
                             np.diff(s.indptr[lo : hi + 1]))  # fmt: skip
            keep = rows < cols
            return pa.table({"source": rows[keep], "target": cols[keep]})

        _write_pieces(path, piece, s.n_own, self.WRITE_ROWS)
        return str(path)

    def pid(self) -> int:
        return os.getpid()

    @_own_threads
    def threads(self) -> int:
        """Numba threads this shard's kernel runs on."""
        return numba.get_num_threads()

    def timings(self) -> dict[str, float]:
        """Seconds spent so far in ``receive``, the kernel and ``outgoing``."""
        return dict(self.seconds)


def _write_pieces(path: Path, piece, n_rows: int, rows_per_piece: int) -> None:
    """One Parquet file from ``piece(lo, hi)`` tables over ``0..n_rows`` (at least one)."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for lo in range(0, max(n_rows, 1), rows_per_piece):
            table = piece(lo, min(lo + rows_per_piece, n_rows))
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


@numba.njit(cache=True)
def _gather_rows(coords, second, rows, out):
    """``out[i] = [coords[rows[i]] | second[rows[i]]]``; out (m, 2g)."""
    g = coords.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(g):
            out[i, j] = coords[r, j]
            out[i, g + j] = second[r, j]
