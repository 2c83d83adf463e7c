"""A shard of a composite rule: the rule's own round on one contiguous range of agents.

Extragradient, Newton and proportional response do not run in the fused kernel: their
round is a :class:`~tatonnet.environment.tatonnement.rows.RowRound` (phases, each one
message exchange then a vectorized computation on the rows it updates). The in-process
dynamics runs it on the whole network; :class:`CompositeShard` runs **the same object**
(``spec.program``, handed over by the driver) on its own rows, with the ghost copies of
out-of-shard neighbours written from their shards' messages before each phase. Every
per-row result depends on the row's inputs alone, neighbourhood sums run over each row's
CSR entries in global-id order, and the metrics come from per-block partials aligned to
global ids: the result is bit-identical to the in-process run at any shard count.

Fields (``f``): the round's named per-row arrays. A field that travels in some exchange
has ``n_own + n_ghost`` rows (own first, then ghosts, as in :mod:`.shard`); any other has
``n_own``. The state (``program.state_fields``) is what :meth:`CompositeShard.state`
returns, a checkpoint keeps and a snapshot (``--sync-every`` batches) restores; fields
that live only within a round (Extragradient's look-ahead point) are not kept.

One call of :meth:`CompositeShard.round_trip` (``ray_round`` on Ray) is one exchange:
write the ghosts of exchange ``p``, compute phase ``p``, send what exchange ``p + 1``
carries (the next round's first, after the last phase). The driver makes
``len(program.exchanges)`` such calls per round (:meth:`tatonnet.distributed.engine.
ShardEngine._submit_round`); only the last returns the round's partials (the others
``None``). A shard without neighbours runs whole rounds (:meth:`CompositeShard.step`),
many per call on one Ray worker (``run_rounds``).

The shard-to-shard exchange (``--exchange peer``, a Ray Compiled Graph) is the fused
kernel's; composite rules exchange through the driver.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from tatonnet.distributed.shard import Shard, ShardSpec, _own_threads
from tatonnet.environment.tatonnement.dynamics import use_threads
from tatonnet.environment.tatonnement.rows import Rows


class CompositeShard(Shard):
    """The agents ``spec.start..spec.stop-1`` under ``spec.program``; see the module docstring."""

    def _setup(self, spec: ShardSpec, initial_prices: np.ndarray) -> None:
        s = self._adopt(spec)
        program = s.program
        if program is None:
            raise ValueError("CompositeShard: the spec carries no composite round (program)")
        n_src = s.n_own + s.ghost_ids.size
        self._program = program
        self._rows = program.prepare(
            Rows(s.start, s.indptr, s.indices, s.mixing, n_src, s.endowments, s.shares,
                 s.family, s.sigma, s.inv_scale, s.numeraire)
        )  # fmt: skip
        self._travels = {name for names in program.exchanges for name in names}
        self._fields = {name: np.zeros((n_src, *program.shape(name))) for name in self._travels}
        g = s.endowments.shape[1]
        prices = np.broadcast_to(np.asarray(initial_prices, dtype=float), (s.n_own, g))
        prices = prices / prices[:, [s.numeraire]]
        self._store(program.init(self._rows, prices))
        self._phase = 0  # the next phase of the current round

    def _store(self, out: dict[str, np.ndarray]) -> None:
        """Own rows of the fields a phase (or a state) gives."""
        o = self.spec.n_own
        for name, value in out.items():
            if name in self._travels:
                self._fields[name][:o] = value
            else:
                self._fields[name] = value

    # ---- messages ------------------------------------------------------------------------
    def outgoing(self) -> dict[int, np.ndarray]:
        """Messages for the neighbouring shards: the rows each keeps ghosts of, with the
        fields of the next exchange side by side, (m, message_floats); fresh arrays."""
        t0 = time.perf_counter()
        names = self._program.exchanges[self._phase]
        out = {}
        for d, rows in self.spec.send.items():
            parts = [self._pack(name, rows) for name in names]
            out[d] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        self.seconds["outgoing"] += time.perf_counter() - t0
        return out

    def _pack(self, name: str, rows: np.ndarray) -> np.ndarray:
        part = self._fields[name][rows]
        cols = self._program.columns(name)
        if cols is not None:
            part = part[:, cols]
        return np.ascontiguousarray(part.reshape(rows.size, -1))

    def receive(self, messages: dict[int, np.ndarray]) -> None:
        """Write neighbours' messages (of the next exchange) into the ghost rows."""
        t0 = time.perf_counter()
        program = self._program
        names = program.exchanges[self._phase]
        for src, ghosts in self._recv_slices.items():
            message, col = messages[src], 0
            for name in names:
                width = program.width(name)
                part = message[:, col : col + width]
                col += width
                cols = program.columns(name)
                if cols is not None:
                    self._fields[name][ghosts, cols] = part
                else:
                    self._fields[name][ghosts] = part.reshape(-1, *program.shape(name))
        self.seconds["receive"] += time.perf_counter() - t0

    # ---- the round -----------------------------------------------------------------------
    def _compute(self) -> np.ndarray | None:
        """The next phase on the own rows; the round's partials after its last phase."""
        t0 = time.perf_counter()
        program = self._program
        # no more numba threads than reduction blocks: waking idle threads costs more than
        # a block's work (see dynamics.use_threads); results do not depend on the count
        if self._n_threads is None:
            use_threads(self.n_blocks)
        else:
            numba.set_num_threads(max(1, min(self._n_threads, self.n_blocks)))
        self._store(program.phase(self._phase, self._rows, self._fields, self.round))
        self._phase += 1
        partials = None
        if self._phase == len(program.exchanges):
            self._phase = 0
            self.round += 1
            partials = program.partials(self._rows, self._fields)
        self.seconds["kernel"] += time.perf_counter() - t0
        return partials

    @_own_threads
    def step(self) -> np.ndarray:
        """The rest of the round without exchanging (a shard without neighbours, or the one
        exchange of a one-exchange round already received); returns its partials."""
        if len(self._program.exchanges) > 1 and (self.spec.recv or self.spec.send):
            raise RuntimeError("step: a shard with neighbours exchanges between phases")
        partials = None
        while partials is None:
            partials = self._compute()
        return partials

    @_own_threads
    def round_trip(self, messages: dict[int, np.ndarray]):
        """One exchange: ``receive``, the phase, ``outgoing``; returns ``(partials, outgoing)``
        with ``partials`` None until the round's last phase."""
        self.receive(messages)
        partials = self._compute()
        return partials, self.outgoing()

    # ---- state -----------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        if self._phase:
            raise RuntimeError(f"state: the shard is inside a round (phase {self._phase})")
        o = self.spec.n_own
        return {name: self._fields[name][:o].copy() for name in self._program.state_fields}

    def keep_snapshot(self) -> None:
        """Keep the current state (a batch of rounds may have to be run again to its stop)."""
        self._snapshot = (self.round, self.state())

    def _load_state(self, data) -> None:
        self._store({name: np.array(data[name]) for name in self._program.state_fields})
        self._phase = 0

    @_own_threads
    def partials(self) -> np.ndarray:
        """Per-block partials of the current own state (for round-0 metrics)."""
        return self._program.partials(self._rows, self._fields)

    def _coords(self) -> np.ndarray:
        return self._fields["coords"]

    def _excess(self) -> np.ndarray:
        return self._fields["excess"]

    # ---- what a composite shard does not do ------------------------------------------------
    def _fused_only(self, *_args):
        raise RuntimeError(
            "composite rules exchange through the driver; the compiled graph (--exchange "
            "peer) runs the fused kernel"
        )

    graph_begin = graph_send = graph_interior = graph_boundary = _fused_only
