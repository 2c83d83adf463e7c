"""Sharded bilateral trade with two-phase settlement across shard boundaries.

A :class:`TradeShard` owns the agents of one contiguous id range and keeps ghost rows of
the out-of-shard neighbours (their holdings, hop mass and smallest edge key, refreshed by
messages every round). It runs the same kernels as :func:`tatonnet.environment.trade.bilateral.trade_round`
on the pairs it proposes, so results are bit-identical to the single-process run.

A round, driven by :class:`ShardedTrade` (each step is one call on every shard; under Ray
one batched ``ray.get``):

1. ``publish`` — smallest edge key, holdings and hop mass of the boundary rows
   (``g`` floats x 2 + 1 key per boundary row and neighbouring shard);
2. ``receive`` — write them into the ghost rows (with explicit merchants, a second
   exchange sends the boundary merchants' valuations, ``g`` floats a row);
3. ``prepare`` — the shard owning ``u = min(u, v)`` of every matched pair computes the
   trade. Pairs inside the shard settle at once. For a pair across a boundary, ``u``'s
   side is **debited into escrow** (``u`` gives ``q`` of ``k``) and a proposal
   ``(v, k, q, l, pay, hops)`` goes to ``v``'s shard;
4. ``commit`` (the vote) — ``v``'s shard checks the proposal against ``v``'s holdings
   (``pay <= x_vl``, and ``v``'s utility gain recomputed > 0), debits ``v``'s payment
   into its own escrow and votes yes with the hop count of what ``v`` gives;
5. ``finalize`` — only once every shard has voted (the driver's commit decision): ``u``'s
   shard credits ``u`` with the payment, ``v``'s shard credits ``v`` with ``q`` of ``k``;
   an escrow that got a no vote is refunded.

Conservation holds at every step when escrow is counted as goods in flight
(:meth:`TradeShard.ledger`). If a shard fails mid-round, :class:`ShardedTrade` restores
every shard from the last checkpoint and replays; the run is deterministic, so the
result is bit-identical to a fault-free run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numba
import numpy as np

from tatonnet.distributed.cluster import is_worker_loss
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network, sorted_unique
from tatonnet.environment.trade import bilateral as tr
from tatonnet.environment.trade import metrics as tm
from tatonnet.environment.trade.accounts import EdgeFlows
from tatonnet.environment.trade.metrics import trade_ranges
from tatonnet.results import checkpoints


class ShardFailed(RuntimeError):
    """A shard failed during a round (test hook or a lost Ray actor)."""


@dataclasses.dataclass(frozen=True, eq=False)
class TradeShardSpec:
    """Static data of one shard: ``o`` own rows, ``h`` ghosts, ``g`` goods.

    indptr (o+1,), indices (nnz,) local rows (own then ghosts); ids (o+h,) global ids;
    shares (o+h, g), family, sigma (o+h,); endowments (o, g); recv {src: ghost
    positions}; send {dst: own rows}; owner_of_ghost (h,) shard of each ghost;
    n_agents: the whole economy's; edge_start: the first of the shard's edge accounts in
    :meth:`Network.edge_list` order (the edges whose smaller end is an own row).
    """

    shard_id: int
    start: int
    stop: int
    n_agents: int
    edge_start: int
    indptr: np.ndarray
    indices: np.ndarray
    ids: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    endowments: np.ndarray
    recv: dict[int, np.ndarray]
    send: dict[int, np.ndarray]
    owner_of_ghost: np.ndarray
    config: tr.TradeConfig
    numeraire: int


def build_trade_specs(
    economy: Economy, network: Network, ranges, config: tr.TradeConfig
) -> list[TradeShardSpec]:
    starts = np.array([r[0] for r in ranges])
    rows_of = np.repeat(np.arange(network.n_agents, dtype=np.int64), np.diff(network.indptr))
    upper = np.concatenate([[0], np.cumsum(rows_of < network.indices)])  # edges before a row's
    ghosts_of = []
    for start, stop in ranges:
        cols = network.indices[network.indptr[start] : network.indptr[stop]].astype(np.int64)
        ghosts_of.append(sorted_unique(cols[(cols < start) | (cols >= stop)]))
    specs = []
    for k, (start, stop) in enumerate(ranges):
        lo, hi = network.indptr[start], network.indptr[stop]
        cols = network.indices[lo:hi].astype(np.int64)
        ghosts, o = ghosts_of[k], stop - start
        inside = (cols >= start) & (cols < stop)
        local = np.where(inside, cols - start, o + np.searchsorted(ghosts, cols))
        owners = np.searchsorted(starts, ghosts, side="right") - 1
        recv = {int(s): np.flatnonzero(owners == s) for s in sorted_unique(owners)}
        send = {}
        for d, other in enumerate(ghosts_of):
            mine = other[(other >= start) & (other < stop)]
            if d != k and mine.size:
                send[d] = mine - start
        rows = np.concatenate([np.arange(start, stop), ghosts])
        specs.append(
            TradeShardSpec(
                shard_id=k, start=start, stop=stop, n_agents=network.n_agents,
                edge_start=int(upper[lo]),
                indptr=(network.indptr[start : stop + 1] - lo).astype(np.int64),
                indices=local.astype(np.int64), ids=rows.astype(np.int64),
                shares=np.ascontiguousarray(economy.shares[rows]),
                family=np.ascontiguousarray(economy.family[rows]),
                sigma=np.ascontiguousarray(economy.sigma[rows]),
                endowments=np.array(economy.endowments[start:stop], dtype=np.float64),
                recv=recv, send=send, owner_of_ghost=owners.astype(np.int64),
                config=config, numeraire=economy.numeraire,
            )
        )  # fmt: skip
    return specs


class TradeShard:
    """The agents ``spec.start..spec.stop-1`` and their ghosts; see the module docstring.

    ``keep_log``: keep every meeting's log row (the Python API's default; command-line runs
    keep only the per-edge accounts, whose slice of the edge list this shard owns).
    """

    def __init__(self, spec: TradeShardSpec, keep_log: bool = True, threads: int | None = None):
        self.spec = spec
        self.keep_log = keep_log
        self.threads = threads  # numba threads of the trade kernel (None: numba's own)
        rows, g = spec.ids.size, spec.endowments.shape[1]
        self.o = spec.stop - spec.start
        self.x = np.zeros((rows, g))
        self.hop = np.zeros((rows, g))
        self.inflow = np.zeros((rows, g))
        self.outflow = np.zeros((rows, g))
        self.keys = np.zeros(rows, dtype=np.uint64)
        self.slots = tr.edge_slots(spec.indptr, spec.indices, spec.ids)
        m = int(self.slots.max(initial=-1)) + 1
        self.edge_trades = np.zeros(m, dtype=np.int64)
        self.forward = np.zeros((m, g))
        self.backward = np.zeros((m, g))
        self.fail_at: tuple[int, str] | None = None  # test hook: (round, phase)
        self._seed_state = spec.config.seed_state()
        self.is_merchant = np.isin(spec.ids, np.asarray(spec.config.merchants, dtype=np.int64))
        family, sigma = spec.family.copy(), spec.sigma.copy()
        family[self.is_merchant], sigma[self.is_merchant] = 0, np.inf
        self._params = (spec.shares.copy(), family, sigma)
        o = self.o
        self._own_params = (spec.shares[:o], spec.family[:o], spec.sigma[:o])  # valuations
        self._own_merchants = np.flatnonzero(self.is_merchant[:o])
        self.reset()

    def reset(self) -> None:
        """Back to the endowments, before round 0 (a restart without a checkpoint)."""
        for a in (self.x, self.hop, self.inflow, self.outflow, self.forward, self.backward):
            a[:] = 0.0
        self.x[: self.o] = self.spec.endowments
        self.edge_trades[:] = 0
        self.round = 0
        self.logs: list[np.ndarray] = []
        self.escrow: dict[int, tuple] = {}  # pair position -> (a, k, q, l, pay): u's side
        self.escrow_in: list[tuple] = []  # (v, k, q, hops, l, pay): v's side, voted yes
        self._pairs = np.empty((0, 3), dtype=np.int64)
        self._result = np.empty((0, 8))

    def _maybe_fail(self, phase: str) -> None:
        if self.fail_at == (self.round, phase):
            self.fail_at = None
            raise ShardFailed(f"shard {self.spec.shard_id} failed in {phase} of round {self.round}")

    # ---- phase 0: boundary messages ---------------------------------------------------------
    def publish(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        s = self.spec
        tr.min_keys(s.indptr, s.indices, s.ids, self._seed_state, self.round, self.keys)
        return {d: (self.keys[r], self.x[r], self.hop[r]) for d, r in s.send.items()}

    def receive(self, messages: dict[int, tuple]) -> None:
        for src, pos in self.spec.recv.items():
            keys, x, hop = messages[src]
            self.keys[self.o + pos] = keys
            self.x[self.o + pos] = x
            self.hop[self.o + pos] = hop

    # ---- phase 0b (explicit merchants only): their valuations -------------------------------
    def valuations(self) -> dict[int, np.ndarray]:
        """Compute the own merchants' valuations (neighbours' holdings are fresh); returns
        the weight rows of the boundary rows for each neighbouring shard."""
        s = self.spec
        rows = self._own_merchants
        values = np.empty((rows.size, self.x.shape[1]))
        tr.merchant_valuations(self.x, s.shares, s.family, s.sigma, s.numeraire, s.indptr,
                               s.indices, rows, self.is_merchant, values)  # fmt: skip
        self._params[0][rows] = values
        return {d: self._params[0][r] for d, r in s.send.items()}

    def receive_valuations(self, messages: dict[int, np.ndarray]) -> None:
        for src, pos in self.spec.recv.items():
            ghost = self.o + pos
            keep = self.is_merchant[ghost]
            self._params[0][ghost[keep]] = messages[src][keep]

    # ---- phase 1: propose, settle local pairs, escrow boundary pairs ------------------------
    def prepare(self) -> dict[int, np.ndarray]:
        """Returns proposals per destination shard: (m, 7) rows
        ``[pair, v_local_at_dst, k, q, l, pay, hops_of_k]``."""
        s, o = self.spec, self.o
        if self.threads is not None:  # per call: numba's thread count is per thread
            numba.set_num_threads(self.threads)
        pairs = tr.mutual_pairs(s.indptr, s.indices, s.ids, self.keys, self._seed_state, self.round)
        a, b = pairs[:, 0], pairs[:, 1]
        result = np.zeros((a.size, 8))
        numeraire = s.numeraire if s.config.medium == "numeraire" else -1
        draws = tr.meeting_draws(s.config, self._seed_state, self.round, s.ids[a], s.ids[b])
        tr.trade_pairs(
            *tr.pair_inputs(self.x, self._params, a, b),
            numeraire, s.config.halvings, s.config.min_gap, result, draws,
        )  # fmt: skip
        self._pairs, self._result = pairs, result
        local = b < o
        sel = np.flatnonzero(local)
        tr.apply_trades(self.x, self.hop, self.inflow, self.outflow, a[sel], b[sel], result[sel])
        proposals: dict[int, list] = {}
        self.escrow = {}
        for i in np.flatnonzero(~local & (result[:, 0] == tr.EXECUTED)):
            k, l = int(result[i, 1]), int(result[i, 2])
            q, pay = result[i, 3], result[i, 4]
            h = tr.give_side(self.x, self.hop, self.outflow, a[i], k, q)
            self.escrow[int(i)] = (int(a[i]), k, q, l, pay)
            dst = int(s.owner_of_ghost[b[i] - o])
            v_global = int(s.ids[b[i]])
            proposals.setdefault(dst, []).append([i, v_global, k, q, l, pay, h])
        self._maybe_fail("prepare")
        return {d: np.array(rows, dtype=np.float64) for d, rows in proposals.items()}

    # ---- phase 2: the partner votes (and escrows its side) ---------------------------------
    def commit(self, proposals: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Vote on each proposal addressed here: check it against ``v``'s holdings and
        utility, debit ``v``'s payment into escrow, and vote yes with the hop count of what
        ``v`` gives; returns (m, 2) rows ``[pair, hops_of_l]`` per source shard."""
        self._maybe_fail("commit")
        s = self.spec
        acks = {}
        self.escrow_in = []
        for src in sorted(proposals):
            rows = []
            for pair, v_global, k, q, l, pay, h in proposals[src]:
                v = int(v_global) - s.start
                k, l = int(k), int(l)
                if not (0 <= v < self.o and pay <= self.x[v, l]):
                    continue  # vote no: the proposer refunds
                y = self.x[v].copy()
                y[k] += q
                y[l] -= pay
                params = (self._params[0][v], self._params[1][v], self._params[2][v])
                gain = tr.utility_row(y, *params) - tr.utility_row(self.x[v], *params)
                if not gain > 0:
                    continue
                hb = tr.give_side(self.x, self.hop, self.outflow, v, l, pay)
                self.escrow_in.append((v, k, q, h, l, pay))
                rows.append([pair, hb])
            acks[src] = np.array(rows, dtype=np.float64).reshape(-1, 2)
        return acks

    # ---- phase 3: every vote is in, commit: release both escrows --------------------------
    def finalize(self, acks: dict[int, np.ndarray], check: bool = False) -> tm.Partials:
        """Release the escrows, book the round's trades on the edge accounts and return the
        round's metric partials (``check``: with the log-MRS ones)."""
        acked = {int(p): hb for rows in acks.values() for p, hb in rows}
        for pair, (a, k, q, l, pay) in self.escrow.items():
            if pair in acked:
                tr.get_side(self.x, self.hop, self.inflow, a, l, pay, acked[pair] + 1.0)
            else:  # the partner voted no: refund the escrow
                self.x[a, k] += q
                self.outflow[a, k] -= q
                self._result[pair, 0] = tr.REJECTED
        for v, k, q, h, _, _ in self.escrow_in:
            tr.get_side(self.x, self.hop, self.inflow, v, k, q, h + 1.0)
        self.escrow, self.escrow_in = {}, []
        s, o, pairs, result = self.spec, self.o, self._pairs, self._result
        tr.book_trades(self.slots[pairs[:, 2]], result, self.edge_trades, self.forward,
                       self.backward)  # fmt: skip
        u = s.ids[pairs[:, 0]]
        if self.keep_log:
            self.logs.append(tr.log_rows(self.round, u, s.ids[pairs[:, 1]], result))
        self.round += 1
        mrs = tr.log_mrs_rows(self.x[:o], self._own_params, s.numeraire) if check else None
        return tm.round_partials(s.n_agents, s.start, u, result, self.inflow[:o],
                                 self.outflow[:o], s.numeraire, mrs)  # fmt: skip

    # ---- the same phases on Ray: one value per shard, passed shard to shard ----------------
    # Each ``*_to`` returns ``K`` values (``num_returns=K``), value ``d`` for shard ``d``
    # (None where nothing goes); each ``*_from`` takes one value from every shard. The
    # driver only wires the object references; it waits once a round, for the partials.
    @staticmethod
    def _spread(out: dict, n_shards: int):
        values = tuple(out.get(d) for d in range(n_shards))
        return values if n_shards > 1 else values[0]

    @staticmethod
    def _gather(values) -> dict:
        return {src: v for src, v in enumerate(values) if v is not None}

    def publish_to(self, n_shards: int):
        return self._spread(self.publish(), n_shards)

    def receive_from(self, *messages) -> None:
        self.receive(self._gather(messages))

    def valuations_to(self, n_shards: int, _received=None):
        return self._spread(self.valuations(), n_shards)

    def receive_valuations_from(self, *messages) -> None:
        self.receive_valuations(self._gather(messages))

    def prepare_to(self, n_shards: int, _received=None):
        return self._spread(self.prepare(), n_shards)

    def commit_from_to(self, n_shards: int, *proposals):
        return self._spread(self.commit(self._gather(proposals)), n_shards)

    def finalize_from(self, check: bool, *acks) -> tm.Partials:
        return self.finalize(self._gather(acks), check)

    # ---- inspection and checkpoints ------------------------------------------------------
    def ledger(self) -> np.ndarray:
        """Own holdings plus goods in escrow, per good (g,): conserved at every step."""
        total = self.x[: self.o].sum(axis=0)
        for _, k, q, _, _ in self.escrow.values():
            total[k] += q
        for _, _, _, _, l, pay in self.escrow_in:
            total[l] += pay
        return total

    def state(self) -> dict:
        o = self.o
        state = {
            "round": self.round,
            "x": self.x[:o].copy(),
            "hop": self.hop[:o].copy(),
            "inflow": self.inflow[:o].copy(),
            "outflow": self.outflow[:o].copy(),
            "edge_trades": self.edge_trades.copy(),
            "forward": self.forward.copy(),
            "backward": self.backward.copy(),
        }
        if self.keep_log:
            state["logs"] = [a.copy() for a in self.logs]
        return state

    def restore(self, state: dict) -> None:
        o = self.o
        self.round = int(state["round"])
        for name in ("x", "hop", "inflow", "outflow"):
            getattr(self, name)[:o] = state[name]
        for name in ("edge_trades", "forward", "backward"):
            getattr(self, name)[:] = state[name]
        if self.keep_log:
            self.logs = [a.copy() for a in state["logs"]]
        self.escrow, self.escrow_in = {}, []

    def checkpoint(self, folder: str) -> str:
        """Write own state to ``folder/shard-<k>.npz`` (atomically); returns the path."""
        state = self.state()
        if self.keep_log:
            logs = state.pop("logs")
            state["log"] = np.concatenate(logs) if logs else np.empty((0, len(tr.LOG_FIELDS)))
        return checkpoints.write_shard(folder, self.spec.shard_id, state)

    def restore_from(self, folder: str) -> int:
        """Load own state from a checkpoint folder; returns its round."""
        state = checkpoints.read_shard(folder, self.spec.shard_id)
        if self.keep_log:
            state["logs"] = [state.pop("log")]
        self.restore(state)
        return self.round

    def pid(self) -> int:
        return os.getpid()

    def set_fail(self, at) -> None:
        self.fail_at = at


class ShardedTrade:
    """Trade on ``network`` in ``n_shards`` shards with two-phase boundary settlement.

    ``use_ray=True`` makes each shard a Ray actor (``ray.remote(num_cpus=1)``, one numba
    thread); every phase
    is then one batched ``ray.get``. Checkpoints, every ``checkpoint_every`` rounds (0:
    none; a recovery then starts again from the endowments): each shard's state in driver
    memory, or, with ``checkpoint_dir``, written by the shards themselves to
    ``<checkpoint_dir>/round-<R>/shard-<k>.npz`` with the metrics so far, marked
    ``COMPLETE`` (what ``--resume`` reads). A :class:`ShardFailed` raised in a shard (in
    process or in a Ray actor) restores all shards from the last checkpoint and replays the
    lost rounds; a Ray actor that *dies* (its process killed: ``RayActorError`` /
    ``WorkerCrashedError``) has every actor killed and restarted from the same
    checkpoint. Either way the result is bit-identical to an undisturbed run; after
    ``max_recoveries`` recoveries the error propagates. ``kill_worker_at_round``: a test
    hook, SIGKILL shard 0's actor after that round (once).
    """

    def __init__(
        self,
        economy: Economy,
        network: Network,
        config: tr.TradeConfig,
        n_shards: int,
        *,
        use_ray: bool = False,
        checkpoint_every: int = 10,
        max_recoveries: int = 3,
        keep_log: bool = True,
        checkpoint_dir: Path | None = None,
        kill_worker_at_round: int | None = None,
    ):
        if network.is_central:
            raise tr.TradeError("trade: goods move along edges; the 'central' network has none")
        self.economy, self.network, self.config = economy, network, config
        self.ranges = trade_ranges(economy.n_agents, n_shards)
        self.specs = build_trade_specs(economy, network, self.ranges, config)
        self.use_ray = use_ray
        self.keep_log = keep_log
        self.checkpoint_every = checkpoint_every
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.max_recoveries = max_recoveries
        self.kill_worker_at_round = kill_worker_at_round
        self.recoveries: list[dict] = []
        self.history: list[dict[str, float]] = []  # per-round metrics, round r at r - 1
        self.every = 1  # the log-MRS metrics every `every` rounds (set by run)
        self._start()
        self.round = 0
        self._checkpoint = None  # in memory: every shard's state; None: the endowments

    def _start(self) -> None:
        if self.use_ray:
            import ray

            remote = ray.remote(num_cpus=1, max_restarts=0)(TradeShard)
            if not hasattr(self, "_spec_refs"):
                self._spec_refs = [ray.put(spec) for spec in self.specs]
            self.shards = [remote.remote(ref, self.keep_log, 1) for ref in self._spec_refs]
        else:
            self.shards = [TradeShard(spec, self.keep_log) for spec in self.specs]

    def _call(self, method: str, args=None) -> list:
        args = args or [()] * len(self.shards)
        if self.use_ray:
            import ray

            refs = [getattr(s, method).remote(*a) for s, a in zip(self.shards, args, strict=True)]
            return ray.get(refs)
        return [getattr(s, method)(*a) for s, a in zip(self.shards, args, strict=True)]

    @property
    def pids(self) -> list[int]:
        """Process id of every shard (the driver's own in process)."""
        return self._call("pid")

    def kill_worker(self, k: int) -> None:
        """SIGKILL the Ray actor process of shard ``k`` (a test hook)."""
        if not self.use_ray:
            raise tr.TradeError("kill_worker needs Ray actors (use_ray=True)")
        os.kill(self.pids[k], signal.SIGKILL)

    def close(self) -> None:
        """Stop the Ray actors (their CPUs go back to the cluster); in process, nothing."""
        if self.use_ray:
            import ray

            for shard in self.shards:
                ray.kill(shard, no_restart=True)
        self.shards = []

    def _restart_actors(self) -> None:
        self.close()
        self._start()

    def fail(self, shard: int, rnd: int, phase: str) -> None:
        """Test hook: shard ``shard`` raises in ``phase`` ('prepare' or 'commit') of ``rnd``."""
        args = [(None,)] * len(self.shards)
        args[shard] = ((rnd, phase),)
        self._call("set_fail", args)

    def _round(self, check: bool) -> list[tm.Partials]:
        if self.use_ray:
            return self._round_on_ray(check)
        K = len(self.shards)
        out = self._call("publish")
        self._call("receive", [({src: out[src][k] for src in range(K) if k in out[src]},)
                               for k in range(K)])  # fmt: skip
        if self.config.merchants:
            out = self._call("valuations")
            self._call("receive_valuations", [({src: out[src][k] for src in range(K)
                                                if k in out[src]},) for k in range(K)])  # fmt: skip
        proposals = self._call("prepare")
        acks = self._call("commit", [({src: proposals[src][k] for src in range(K)
                                       if k in proposals[src]},) for k in range(K)])  # fmt: skip
        return self._call("finalize", [({src: acks[src][k] for src in range(K)
                                         if k in acks[src]}, check) for k in range(K)])  # fmt: skip

    def _round_on_ray(self, check: bool) -> list[tm.Partials]:
        """The round as one graph of actor tasks: each message is an object passed from the
        task that made it to the task that reads it (the driver wires the references
        without reading them; actor tasks run in submission order), and the driver waits
        only for the partials."""
        import ray

        K, shards = len(self.shards), self.shards

        def fan_out(method: str, args: list[tuple]) -> list[list]:
            """``method`` on every shard (its ``args[k]``), K values each: ``out[src][dst]``."""
            refs = [getattr(s, method).options(num_returns=K).remote(K, *a)
                    for s, a in zip(shards, args, strict=True)]  # fmt: skip
            return [r if K > 1 else [r] for r in refs]

        def to(k: int, out: list[list]) -> tuple:  # what every shard sent to shard k
            return tuple(out[src][k] for src in range(K))

        out = fan_out("publish_to", [()] * K)
        done = [s.receive_from.remote(*to(k, out)) for k, s in enumerate(shards)]
        if self.config.merchants:
            out = fan_out("valuations_to", [(d,) for d in done])
            done = [s.receive_valuations_from.remote(*to(k, out)) for k, s in enumerate(shards)]
        # a shard's prepare takes its receive's (empty) result: an error there fails the round
        proposals = fan_out("prepare_to", [(d,) for d in done])
        acks = fan_out("commit_from_to", [to(k, proposals) for k in range(K)])
        return ray.get([s.finalize_from.remote(check, *to(k, acks)) for k, s in enumerate(shards)])

    def step(self) -> dict[str, float]:
        """One round (with the log-MRS metrics when its number is a multiple of
        ``self.every``); on a shard failure, restore the last checkpoint and replay.
        Returns the round's metrics."""
        target = self.round + 1
        while self.round < target:
            try:
                parts = self._round((self.round + 1) % self.every == 0)
            except Exception as exc:
                self._recover(exc)
                continue
            self.round += 1
            self.history.append(tm.combine(parts, self.economy.numeraire))
            if self.kill_worker_at_round == self.round and self.use_ray:
                self.kill_worker_at_round = None
                self.kill_worker(0)
            if self.checkpoint_every and self.round % self.checkpoint_every == 0:
                self.checkpoint()
        return self.history[-1]

    def _recover(self, exc: Exception) -> None:
        lost = self.use_ray and is_worker_loss(exc)
        if not (isinstance(exc, ShardFailed) or lost):
            raise exc
        if len(self.recoveries) >= self.max_recoveries:
            raise exc
        if lost:  # the dead actor's books are gone: restart all from the checkpoint
            ledger = None
            self._restart_actors()
        else:
            ledger = np.sum(self._call("ledger"), axis=0)  # holdings + escrow
        error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        self.recoveries.append({"round": self.round, "error": error, "ledger": ledger,
                                "worker_lost": lost})  # fmt: skip
        if self.checkpoint_dir is not None:
            folder = self.latest_checkpoint()
            if folder is not None:
                self.restore(folder)
                return
        elif self._checkpoint is not None:
            self._call("restore", [(st,) for st in self._checkpoint])
            self.round = int(self._checkpoint[0]["round"])
            del self.history[self.round :]
            return
        self._call("reset")
        self.round = 0
        self.history.clear()

    # ---- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> Path | None:
        """Keep every shard's state (in memory, or in ``checkpoint_dir``: see the class)."""
        if self.checkpoint_dir is None:
            self._checkpoint = self._call("state")
            return None
        folder = checkpoints.folder_for(self.checkpoint_dir, self.round)
        self._call("checkpoint", [(str(folder),)] * len(self.shards))
        (folder / "engine.json").write_text(json.dumps({
            "round": self.round, "n_shards": len(self.shards), "history": self.history,
        }))  # fmt: skip
        return checkpoints.complete(folder)

    def latest_checkpoint(self) -> Path | None:
        return checkpoints.latest(self.checkpoint_dir)

    def restore(self, folder: Path) -> int:
        """Continue from a checkpoint folder (``--resume``); returns its round."""
        state = json.loads((Path(folder) / "engine.json").read_text())
        if state["n_shards"] != len(self.shards):
            raise ValueError(
                f"checkpoint {folder} has {state['n_shards']} shards; this run has "
                f"{len(self.shards)}"
            )
        rounds = set(self._call("restore_from", [(str(folder),)] * len(self.shards)))
        if rounds != {state["round"]}:
            raise ValueError(f"checkpoint {folder} is inconsistent (rounds {sorted(rounds)})")
        self.round = int(state["round"])
        self.history = [dict(h) for h in state["history"]][: self.round]
        return self.round

    # ---- the run and its results ------------------------------------------------------------
    def run(self, rounds: int, tol: float | None = None, every: int = 1, on_round=None):
        """Run until round ``rounds`` (a total: a restored run continues), stopping early
        when ``pareto_gap < tol`` (checked every ``every`` rounds), as
        :func:`tatonnet.environment.trade.bilateral.run_trade`; ``on_round(round)`` after
        each round. Returns the :class:`~tatonnet.environment.trade.bilateral.TradeRun`."""
        converged = False
        self.every = every
        while self.round < rounds:
            metrics = self.step()
            if on_round is not None:
                on_round(self.round)
            if tol is not None and metrics["pareto_gap"] < tol:
                converged = True
                break
        states = self._call("state")  # once: the state, the log and the accounts
        state, log = self.gather(states)
        history = {k: np.asarray([h[k] for h in self.history], dtype=float) for k in tm.NAMES}
        for k in ("pairs", "trades", "rejected"):
            history[k] = history[k].astype(np.int64)
        return tr.TradeRun(state, self.edges(states), history, converged, self.round, log)

    def gather(self, states: list[dict] | None = None) -> tuple[tr.TradeState, np.ndarray | None]:
        """The global state and the trade log sorted by (round, u), as in-process (None
        when the log is not kept); ``states``: the shards' (:meth:`TradeShard.state`), if
        already fetched."""
        states = self._call("state") if states is None else states
        cat = lambda name: np.concatenate([s[name] for s in states])  # noqa: E731
        state = tr.TradeState(self.round, cat("x"), cat("hop"), cat("inflow"), cat("outflow"))
        if not self.keep_log:
            return state, None
        logs = [a for s in states for a in s["logs"]]
        log = np.concatenate(logs) if logs else np.empty((0, len(tr.LOG_FIELDS)))
        log = log[np.lexsort((log[:, 1], log[:, 0]))]
        return state, log

    def edges(self, states: list[dict] | None = None) -> EdgeFlows:
        """The per-edge accounts of the whole network (the shards' slices, in order)."""
        states = self._call("state") if states is None else states
        source, target, _ = self.network.edge_list()
        cat = lambda name: np.concatenate([s[name] for s in states])  # noqa: E731
        return EdgeFlows(source, target, cat("edge_trades"), cat("forward"), cat("backward"))
