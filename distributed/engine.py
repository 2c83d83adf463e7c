"""The sharded engine: K shards in one process or as Ray actors, checkpoints and recovery.

``ShardEngine`` drives :class:`tatonnet.distributed.shard.Shard` objects round by round:

* **In-process** (``use_ray=False``): plain objects, messages passed as arrays.
* **Ray** (``use_ray=True``): each shard becomes an actor when it is created
  (``ray.remote(num_cpus=T)(Shard)``, ``T = threads``: a worker is a node-sized shard that
  runs the fused kernel on T numba threads; where the node's ``NUMBA_NUM_THREADS`` is below
  T the actor is restarted with it set through its ``runtime_env``); its static data is ``ray.put`` once. A round submits every shard's
  ``ray_round`` with the object refs of the messages addressed to it (so boundary rows
  travel shard → object store → shard) and ends with **one** batched ``ray.get`` of the
  per-block partial sums, from which the driver reduces the global metrics. The driver
  never gathers agent state during a run.
* **One Ray worker** has no boundary: once the driver has said how the run stops
  (:meth:`ShardEngine.plan`) it runs many rounds per remote call
  (:meth:`tatonnet.distributed.shard.Shard.run_rounds`), ending a batch at the run's stop
  rule, its last round, checkpoints and test hooks; :meth:`ShardEngine.step` then hands out
  one round's metrics per call, the same rounds and bits as one call a round.
* **Batches of rounds** (``sync_every`` R > 1, ``--sync-every``): the driver submits R
  rounds before it takes their partials, so its round trip is paid once per batch. The
  shards first keep a snapshot of their state; if a round inside the batch stops the run,
  they return to it and run exactly to the stop round again (the replayed partials are
  checked equal, bit for bit), so the result is the round-by-round result.
* **Shard-to-shard exchange** (``exchange="peer"``, ``--exchange peer``): the round is a
  Ray Compiled Graph (:meth:`ShardEngine._compile_graph`): each shard writes its boundary
  rows straight into channels read by the shards that need them (shared memory on one
  node), runs its interior blocks, then its boundary blocks; the driver writes one flag a
  round and reads the partials. Compiled when the rounds start and torn down before
  anything else (its actors poll their channels, about a core each, while it exists).
  Measured against the default in ``docs/07-performance.md``.

* **Composite rules** (extragradient, Newton, proportional response: ``rule.engine`` set):
  the driver builds the rule's in-process dynamics once and hands its round
  (:class:`~tatonnet.environment.tatonnement.rows.RowRound`) to every shard, which is then a
  :class:`tatonnet.distributed.composite_shard.CompositeShard`. A round is one call per
  shard and message exchange (two for extragradient), chained through the messages'
  object refs; only the last returns partials. Checkpoints, recovery, one-worker batches
  and ``--sync-every`` work as for the fused kernel (the round's extra state — Jacobian
  trackers, bids — is in the shard's state); ``--exchange peer`` and central runs are the
  fused kernel's only.

**Checkpoints and recovery.** When the driver asks (``--checkpoint-every R``) each shard
writes its own rows to ``<checkpoint_dir>/round-<R>/shard-<k>.npz``; the driver adds ``engine.json`` (and
whatever its ``on_checkpoint`` callback saves) and marks the folder ``COMPLETE``. If a worker
dies, the next ``ray.get`` raises; the engine then kills every shard, starts fresh ones,
restores them from the last complete checkpoint (or the initial state) and replays the
lost rounds. The computation is deterministic, so the result is bit-identical to a
fault-free run.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from tatonnet.agents.rules import PriceRule
from tatonnet.distributed import cluster
from tatonnet.distributed.composite_shard import CompositeShard
from tatonnet.distributed.partition import Partition, partition, shard_ranges
from tatonnet.distributed.shard import Shard, ShardSpec, build_specs
from tatonnet.environment.build.agents import initial_price_rows
from tatonnet.environment.build.shard_rows import check_reports, reduce_supply
from tatonnet.environment.economy import Economy
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    RoundMetrics,
    auctioneer_step,
    coords_from_prices,
    prices_from_coords,
    reduce_partials,
)
from tatonnet.environment.tatonnement.status import stop_verdict
from tatonnet.results import checkpoints


class WorkerLost(RuntimeError):
    """Workers died more often than the engine may recover (one-line message)."""


class ShardEngine:
    """Run ``economy`` on ``network`` under ``rule`` in ``n_shards`` shards.

    Parameters
    ----------
    initial_prices : (g,) or (n, g)
    n_shards : int — number of shards (= Ray workers when ``use_ray``)
    checkpoint_dir : path — where :meth:`checkpoint` writes (the driver decides when)
    kill_worker_at_round : int or None — test hook: SIGKILL worker 0 after that round, once
    max_recoveries : int — worker losses tolerated before :class:`WorkerLost`
    threads : int or None — numba threads per shard (None: all cores in-process, 1 on Ray);
        a Ray worker reserves ``threads`` CPUs
    """

    #: Target seconds of one batched remote call of a one-worker Ray run (the progress bar
    #: and Ctrl-C are served between calls).
    BATCH_SECONDS = 0.5
    #: Most rounds in one batched call.
    MAX_BATCH = 1024
    #: Seconds the driver waits for one round of a compiled graph before it gives up (a
    #: dead worker is seen at once: its channels close).
    GRAPH_TIMEOUT = 3600.0

    def __init__(
        self,
        economy: Economy,
        network: Network,
        rule: PriceRule,
        signal_kind: str,
        initial_prices: np.ndarray,
        group: np.ndarray,
        n_shards: int,
        *,
        use_ray: bool,
        checkpoint_dir: str | Path | None = None,
        kill_worker_at_round: int | None = None,
        max_recoveries: int = 3,
        threads: int | None = None,
        scenario=None,
        exchange: str = "driver",
        sync_every: int = 1,
    ):
        if exchange not in ("peer", "driver"):
            raise ValueError(f"exchange {exchange!r}: expected 'peer' or 'driver'")
        if int(sync_every) < 1:
            raise ValueError(f"--sync-every {sync_every}: expected 1 or more")
        self.exchange, self.sync_every = exchange, int(sync_every)
        if economy is None:  # a shard-built economy (``builder = "shards"``)
            self._init_from_scenario(
                scenario, rule, signal_kind, n_shards, use_ray=use_ray,
                checkpoint_dir=checkpoint_dir, kill_worker_at_round=kill_worker_at_round,
                max_recoveries=max_recoveries, threads=threads,
            )  # fmt: skip
            return
        self.economy, self.network, self.rule = economy, network, rule
        self.central = network.is_central
        self.signal = "central" if self.central else signal_kind
        self.space = rule.space
        self.use_ray = use_ray
        self.n_agents, self.n_goods = economy.n_agents, economy.n_goods
        self.supply = economy.supply
        self.numeraire = economy.numeraire
        self.scenario = None
        self._common(checkpoint_dir, kill_worker_at_round, max_recoveries, threads)
        self._initial_prices = np.asarray(initial_prices, dtype=float)

        program = None  # a composite rule's round (extragradient, Newton, ...)
        if self.central:
            if rule.engine is not None:
                raise ValueError(
                    f"rule {rule.name!r} under central runs its own dynamics ({rule.engine!r}) "
                    "in this process only"
                )
            network_for_cut = None
            inv_scale = np.ones_like(economy.endowments)
        else:
            network_for_cut = network
            dynamics = make_dynamics(economy, network, rule, signal_kind)
            inv_scale = dynamics.inv_scale
            program = getattr(dynamics, "row_round", None)
            if rule.engine is not None and program is None:
                raise ValueError(f"rule {rule.name!r}: its {rule.engine!r} dynamics has no "
                                 "sharded round")  # fmt: skip
            if program is not None and exchange == "peer" and use_ray and n_shards > 1:
                raise ValueError(f"--exchange peer runs the fused kernel; rule {rule.name!r} "
                                 "exchanges through the driver (--exchange driver)")  # fmt: skip
            if program is not None:
                self._shard_cls, self._exchanges = CompositeShard, len(program.exchanges)
        self.partition: Partition = partition(network_for_cut or _empty(economy.n_agents), n_shards)
        self.specs: list[ShardSpec] = build_specs(
            economy, network_for_cut or _empty(economy.n_agents), self.partition.ranges, rule,
            inv_scale, self.signal == "tracking", group, program,
        )  # fmt: skip
        self.bytes_per_round = 8 * sum(
            rows.size * spec.message_floats_per_row
            for spec in self.specs
            for rows in spec.send.values()
        )
        self._routes = [(sorted(spec.recv), sorted(spec.send)) for spec in self.specs]
        self._start_shards()
        if self.central:
            self._central_setup()

    @classmethod
    def from_scenario(
        cls, scenario, rule: PriceRule, signal_kind: str, n_shards: int, **options
    ) -> ShardEngine:
        """The engine of a ``builder = "shards"`` scenario: every shard draws its own agents
        and graph rows (:mod:`tatonnet.environment.build.shard_rows`); the driver holds no
        agent data — only the supply, the partition and each round's partial sums.
        ``options``: the keywords of :class:`ShardEngine` (``use_ray`` among them)."""
        return cls(None, None, rule, signal_kind, None, None, n_shards, scenario=scenario,
                   **options)  # fmt: skip

    def _init_from_scenario(self, scenario, rule, signal_kind, n_shards, *, use_ray,
                            checkpoint_dir, kill_worker_at_round, max_recoveries,
                            threads) -> None:  # fmt: skip
        if scenario is None or scenario.builder != "shards":
            raise ValueError("ShardEngine: pass an economy, or a builder='shards' scenario")
        if rule.engine is not None:
            raise ValueError(
                f'builder "shards": rule {rule.name!r} runs its own dynamics ({rule.engine!r}), '
                'whose round the driver builds from the economy; use builder = "driver"'
            )
        self.economy, self.network, self.rule = None, None, rule
        self.scenario = scenario
        self.central = scenario.network.kind == "central"
        self.signal = "central" if self.central else signal_kind
        self.space = rule.space
        self.use_ray = use_ray
        self.n_agents, self.n_goods = scenario.n_agents, scenario.n_goods
        self.numeraire = scenario.numeraire
        self._common(checkpoint_dir, kill_worker_at_round, max_recoveries, threads)
        self._initial_prices = initial_price_rows(scenario, 0, 0) if self.central else None
        self.specs = None
        self._ranges = shard_ranges(self.n_agents, n_shards)
        self._start_shards()
        if self.central:
            self._central_setup()

    def _common(self, checkpoint_dir, kill_worker_at_round, max_recoveries, threads) -> None:
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.kill_worker_at_round = kill_worker_at_round
        self.max_recoveries = max_recoveries
        self.recoveries = 0
        self.threads = (threads or 1) if self.use_ray else threads
        self.seconds = {
            "submit": 0.0,
            "wait": 0.0,
            "reduce": 0.0,
            "compile": 0.0,
        }  # driver side, rounds only
        self._plan = None  # (tol, last_round, checkpoint_every, stop_after) once planned
        self._pending: collections.deque = collections.deque()
        self._batch = 1
        self.on_checkpoint = None  # callback(folder: Path) for the driver's own state
        self.round = 0
        #: the shards' class and message exchanges per round (a composite rule: its round's)
        self._shard_cls, self._exchanges = Shard, 1

    def _central_setup(self) -> None:
        p = np.asarray(self._initial_prices, dtype=float)
        coords = coords_from_prices(p / p[self.numeraire], self.space)
        self._central_coords = coords.reshape(-1)
        self._central_buffers = self.rule.init_buffers(np.arange(1), self.n_goods)[0]
        self._central_excess = self._aggregate(prices_from_coords(self._central_coords, self.space))

    # ---- shards ----------------------------------------------------------------------------
    def _build_shards(self, remote_cls) -> None:
        """Create shards that build their own rows, moving boundary data between them."""
        ranges, sc, K = self._ranges, self.scenario, len(self._ranges)
        t0 = time.perf_counter()
        self.shards = [remote_cls() for _ in range(K)]
        data = sc.model_dump()
        decided = [
            self._call(s, "build_decide", data, ranges, k, self.signal, self.rule, num_returns=K)
            for k, s in enumerate(self.shards)
        ]
        if K == 1:
            decided = [[d] for d in decided]
        rows = [
            self._call(s, "build_rows", *[decided[src][k] for src in range(K)], num_returns=1 + K)
            for k, s in enumerate(self.shards)
        ]
        reports = self._get([r[0] for r in rows])
        del decided  # the edge parts are assembled: let the object store free them
        supply = reduce_supply(reports)
        try:
            check_reports(sc, reports, supply)
        except ValueError:
            self.shutdown()
            raise
        self.supply = supply
        self._get([
            self._call(s, "build_finish", supply, *[rows[src][1 + k] for src in range(K)])
            for k, s in enumerate(self.shards)
        ])  # fmt: skip
        self._routes = [(sorted(r["ghost_labels"]), sorted(r["send_rows"])) for r in reports]
        cut = sum(r["cut_entries"] for r in reports)
        nnz = sum(r["nnz"] for r in reports)
        self.partition = Partition(
            tuple(ranges), cut // 2, (nnz - self.n_agents) // 2, time.perf_counter() - t0
        )
        self.bytes_per_round = (
            8 * 2 * self.n_goods * sum(sum(r["send_rows"].values()) for r in reports)
        )

    def _initial_rows(self, spec: ShardSpec) -> np.ndarray:
        p = self._initial_prices
        return p[spec.start : spec.stop] if p.ndim == 2 else p

    def _start_shards(self) -> None:
        if self.use_ray:
            import ray

            if self.specs is not None and not hasattr(self, "_spec_refs"):
                self._spec_refs = [ray.put(spec) for spec in self.specs]
            t = self.threads
            for env in (None, {"env_vars": {"NUMBA_NUM_THREADS": str(t)}}):
                # numba's pool is sized by NUMBA_NUM_THREADS (default: the node's cores); a
                # runtime_env costs seconds per actor, so it is set only where too small
                opts = {"runtime_env": env} if env else {}
                remote = ray.remote(num_cpus=t, max_restarts=0, **opts)(self._shard_cls)
                self._create_shards(remote.remote)
                self.pids = ray.get([s.pid.remote() for s in self.shards])
                self.worker_threads = ray.get([s.threads.remote() for s in self.shards])
                if min(self.worker_threads) >= t or env:
                    break
                for shard in self.shards:
                    ray.kill(shard, no_restart=True)
            if min(self.worker_threads) < t:  # pragma: no cover - the env var is set above
                raise RuntimeError(
                    f"Ray workers run {self.worker_threads} numba threads, {t} asked for"
                )
        else:
            self._create_shards(self._shard_cls)
            self.pids = [os.getpid()] * len(self.shards)
            self.worker_threads = [self.shards[0].threads()] * len(self.shards)
        self._pending.clear()
        self._graph = None  # compiled at the first round (:meth:`_exchange`)
        self._messages = {} if self.peer else self._collect_outgoing()

    @property
    def peer(self) -> bool:
        """Whether boundary rows go shard to shard: Ray, two or more shards of a network,
        each with neighbouring shards, and ``exchange="peer"``."""
        return (
            self.use_ray and not self.central and len(self.shards) > 1
            and self.exchange == "peer"
            and all(sources and dests for sources, dests in self._routes)
        )  # fmt: skip

    def _compile_graph(self):
        """The round as a Ray Compiled Graph: each shard sends its boundary rows straight
        to the shards that read them (shared-memory channels on a node), runs its interior
        blocks, then its boundary blocks once the rows have arrived; the driver writes one
        flag (keep a snapshot) and reads the per-block partials."""
        from ray.dag import InputNode, MultiOutputNode

        shards, routes = self.shards, self._routes
        with InputNode() as snapshot:
            begin = [s.graph_begin.bind(snapshot) for s in shards]
            sent = []
            for s, b, (_, dests) in zip(shards, begin, routes, strict=True):
                out = s.graph_send.options(num_returns=len(dests)).bind(b)
                sent.append(dict(zip(dests, out if len(dests) > 1 else [out], strict=True)))
            interior = [s.graph_interior.bind(b) for s, b in zip(shards, begin, strict=True)]
            partials = [
                s.graph_boundary.bind(token, *[sent[src][k] for src in sources])
                for k, (s, token, (sources, _)) in enumerate(zip(shards, interior, routes,
                                                                  strict=True))
            ]  # fmt: skip
            dag = MultiOutputNode(partials)
        return dag.experimental_compile(
            _submit_timeout=self.GRAPH_TIMEOUT, _max_inflight_executions=self.sync_every
        )

    def _create_shards(self, make) -> None:
        """``self.shards`` from ``make(spec, initial_prices, threads)``: from the specs the
        driver cut (``ray.put`` once), or empty shards that build their own rows."""
        if self.specs is None:  # shard-built: the shards draw their own rows
            self._build_shards(lambda: make(None, None, self.threads))
            return
        specs = self._spec_refs if self.use_ray else self.specs
        self.shards = [
            make(ref, self._initial_rows(spec), self.threads)
            for ref, spec in zip(specs, self.specs, strict=True)
        ]

    def _collect_outgoing(self) -> dict:
        messages = {}
        for k, (shard, (_, dests)) in enumerate(zip(self.shards, self._routes, strict=True)):
            out = self._call(shard, "outgoing")
            out = self._get(out) if self.use_ray else out
            for d in dests:
                messages[(k, d)] = out[d]
        return messages

    def _call(self, shard, method: str, *args, num_returns: int = 1):
        if self.use_ray:
            fn = getattr(shard, method)
            if num_returns != 1:
                fn = fn.options(num_returns=num_returns)
            return fn.remote(*args)
        return getattr(shard, method)(*args)

    def _get(self, refs):
        if not self.use_ray:
            return refs
        import ray

        return ray.get(refs)

    def initial_metrics(self) -> RoundMetrics:
        """Metrics of the current state, reduced from the shards' partials (no agent data)."""
        if self.central:
            prices = prices_from_coords(self._central_coords, self.space)
            logp = np.log(prices)
            return RoundMetrics(self.round, self._central_excess / self.supply, prices, logp, logp)
        partials = self._get([self._call(s, "partials") for s in self.shards])
        return reduce_partials(self.round, np.concatenate(partials), self.supply, self.n_agents)

    # ---- the round -------------------------------------------------------------------------
    def plan(
        self,
        tol: float,
        last_round: int,
        checkpoint_every: int = 0,
        stop_after: int | None = None,
    ) -> None:
        """Say how the run stops, so a one-worker Ray run may batch rounds.

        ``tol``: the run stops after the first round whose metrics give a verdict
        (:func:`tatonnet.environment.tatonnement.status.check_stop`); ``last_round``: the round
        budget; batches also end at multiples of ``checkpoint_every`` and at ``stop_after``.
        """
        self._plan = (float(tol), int(last_round), int(checkpoint_every), stop_after)

    @property
    def batched(self) -> bool:
        """Whether rounds run in batches: planned Ray runs of one worker (no neighbours),
        of ``sync_every`` > 1, or through the compiled graph."""
        return (
            self.use_ray and self._plan is not None and not self.central
            and (len(self.shards) == 1 or self.peer or self.sync_every > 1)
        )  # fmt: skip

    @property
    def pending_rounds(self) -> int:
        """Rounds the shard has run that :meth:`step` has not handed out yet."""
        return len(self._pending)

    def _batch_end(self) -> int:
        """The last round the next batch may run to."""
        _, last, every, stop_after = self._plan
        batch = self.sync_every if len(self.shards) > 1 else self._batch
        end = min(last, self.round + batch)
        if every:
            end = min(end, (self.round // every + 1) * every)
        for hook in (stop_after, self.kill_worker_at_round):
            if hook is not None and hook > self.round:
                end = min(end, hook)
        return max(end, self.round + 1)

    def _fill_batch(self) -> None:
        import ray

        if len(self.shards) > 1:
            self._pending.extend(self._exchange(self._batch_end() - self.round, self._plan[0]))
            return
        tol = self._plan[0]
        n = self._batch_end() - self.round
        t0 = time.perf_counter()
        ref = self.shards[0].run_rounds.remote(n, self.supply, self.n_agents, tol)
        t1 = time.perf_counter()
        partials = ray.get(ref)
        t2 = time.perf_counter()
        for r, p in enumerate(partials, start=self.round + 1):
            self._pending.append(reduce_partials(r, p, self.supply, self.n_agents))
        t3 = time.perf_counter()
        self.seconds["submit"] += t1 - t0
        self.seconds["wait"] += t2 - t1
        self.seconds["reduce"] += t3 - t2
        per_round = (t3 - t0) / len(partials)
        if len(partials) == n:  # a full batch: aim the next one at BATCH_SECONDS
            self._batch = int(min(self.MAX_BATCH, max(1, self.BATCH_SECONDS / per_round)))

    def step(self) -> RoundMetrics:
        """One round on every shard; returns the global metrics of the new state."""
        from_round = self.round
        while True:
            try:
                if self.batched:
                    if not self._pending:
                        self._fill_batch()
                    metrics = self._pending.popleft()
                elif self.central:
                    metrics = self._central_round()
                elif self.peer:
                    (metrics,) = self._exchange(1)
                else:
                    metrics = self._network_round()
                break
            except Exception as exc:  # a dead Ray worker surfaces here
                if not (cluster.is_worker_loss(exc) or self._graph_broken(exc)):
                    raise
                self._recover(from_round)
        self.round += 1
        if self.kill_worker_at_round is not None and self.round == self.kill_worker_at_round:
            self.kill_worker_at_round = None
            self.kill_worker(0)
        return metrics

    def _network_round(self) -> RoundMetrics:
        t0 = time.perf_counter()
        partial_refs = self._submit_round()
        t1 = time.perf_counter()
        partials = self._get(partial_refs)  # the one batched get of the round
        t2 = time.perf_counter()
        metrics = reduce_partials(
            self.round + 1, np.concatenate(partials), self.supply, self.n_agents
        )
        self.seconds["submit"] += t1 - t0
        self.seconds["wait"] += t2 - t1
        self.seconds["reduce"] += time.perf_counter() - t2
        return metrics

    def _submit_round(self) -> list:
        """Submit one driver-orchestrated round (messages as object refs from each shard's
        last call to the next), one call per shard and message exchange (two for
        extragradient); returns every shard's partials of the round (refs on Ray)."""
        for _ in range(self._exchanges):
            partial_refs = self._submit_exchange()
        return partial_refs

    def _submit_exchange(self) -> list:
        """Every shard's next call: the messages of the last call in, its phase, its
        messages out; returns every shard's partials (None before a round's last phase)."""
        new, partial_refs = {}, []
        for k, (shard, (sources, dests)) in enumerate(zip(self.shards, self._routes, strict=True)):
            incoming = [self._messages[(s, k)] for s in sources]
            if self.use_ray:
                result = self._call(shard, "ray_round", *incoming, num_returns=1 + len(dests))
                result = [result] if not dests else result
            else:
                partials, out = shard.round_trip(dict(zip(sources, incoming, strict=True)))
                result = [partials] + [out[d] for d in dests]
            partial_refs.append(result[0])
            for d, message in zip(dests, result[1:], strict=True):
                new[(k, d)] = message
        self._messages = new
        return partial_refs

    def _exchange(self, n_rounds: int, tol: float | None = None) -> list[RoundMetrics]:
        """``n_rounds`` rounds submitted before the driver takes their per-block partials
        (``--sync-every``): through the compiled graph (``exchange="peer"``) or as chained
        actor calls.

        With ``tol`` and more than one round the shards first keep their state; if a round
        inside the batch stops the run (:func:`stop_verdict`, the driver's rule), they go
        back and run exactly to it again — the replayed partials must equal the first ones,
        bit for bit.
        """
        t0 = time.perf_counter()
        if self.peer and self._graph is None:
            self._graph = self._compile_graph()
            self.seconds["compile"] += time.perf_counter() - t0
            t0 = time.perf_counter()
        snapshot = tol is not None and n_rounds > 1
        if snapshot and not self.peer:
            self._get([s.keep_snapshot.remote() for s in self.shards])
        parts = self._run_rounds(n_rounds, snapshot)
        t1 = time.perf_counter()
        metrics = [
            reduce_partials(self.round + 1 + i, np.concatenate(p), self.supply, self.n_agents)
            for i, p in enumerate(parts)
        ]
        if snapshot:
            stop = next(
                (i for i, m in enumerate(metrics) if stop_verdict(m, tol) is not None), None
            )
            if stop is not None and stop < n_rounds - 1:
                self._get([s.rollback.remote() for s in self.shards])
                if not self.peer:  # the rows the snapshot's round sent, sent again from it
                    self._messages = self._collect_outgoing()
                again = self._run_rounds(stop + 1, False)
                for a, p in zip(again, parts, strict=False):  # the first stop + 1 rounds
                    if not all(np.array_equal(x, y, equal_nan=True)
                               for x, y in zip(a, p, strict=True)):  # fmt: skip
                        raise RuntimeError(
                            "rounds replayed to the stop differ from the first run (the "
                            "engine is not deterministic); run stopped"
                        )
                metrics = metrics[: stop + 1]
        t2 = time.perf_counter()
        self.seconds["wait"] += t1 - t0
        self.seconds["reduce"] += t2 - t1
        return metrics

    def _run_rounds(self, n_rounds: int, snapshot: bool) -> list[list[np.ndarray]]:
        """``n_rounds`` rounds, at most ``sync_every`` in flight: [round][shard] partials.
        ``snapshot`` (compiled graph): the first round keeps the state."""
        import ray

        if self.peer:

            def submit(i):
                return self._graph.execute(snapshot and i == 0)

            def take(ref):  # copies: a graph's outputs are views of its channel buffers,
                # which stay locked (no further round) while a view is held
                return [np.array(p) for p in ray.get(ref, timeout=self.GRAPH_TIMEOUT)]
        else:

            def submit(i):
                return self._submit_round()

            def take(refs):
                return ray.get(refs)

        window, refs, out = self.sync_every, collections.deque(), []
        for i in range(n_rounds):
            if len(refs) == window:
                out.append(take(refs.popleft()))
            refs.append(submit(i))
        out.extend(take(r) for r in refs)
        return out

    def _graph_broken(self, exc: BaseException) -> bool:
        """A compiled graph's channel closed: one of its actors died (channels close with
        their process), unless every shard still answers."""
        import ray
        import ray.exceptions

        if self._graph is None or not isinstance(exc, ray.exceptions.RayChannelError):
            return False
        alive = 0
        for shard in self.shards:
            try:
                ray.get(shard.pid.remote(), timeout=10)
                alive += 1
            except Exception:  # noqa: BLE001 - dead or unreachable: a worker loss
                pass
        return alive < len(self.shards)

    def shard_timings(self) -> list[dict[str, float]]:
        """Each shard's seconds in ``receive``, the kernel and ``outgoing`` so far."""
        return self._get([self._call(s, "timings") for s in self.shards])

    def aggregate(self, prices: np.ndarray) -> np.ndarray:
        """Aggregate excess demand at one price vector (g,), summed on the shards in block
        order (the equilibrium solver's evaluations)."""
        self._settled("aggregate")
        return self._aggregate(prices)

    def gather(self, method: str) -> list:
        """``method`` called on every shard, results in shard order."""
        self._settled(method)
        return self._get([self._call(s, method) for s in self.shards])

    def gather_rows(self) -> list[dict]:
        """Every shard's agent rows (views gathering a small economy)."""
        return self.gather("own_rows")

    def write_edges(self, folder: Path) -> list[str]:
        """Every shard writes its rows' edges (Parquet parts), in parallel."""
        folder.mkdir(parents=True, exist_ok=True)
        return self._get([self._call(s, "write_edges", str(folder)) for s in self.shards])

    def views(self):
        """``(economy, network)`` views for a shard-built engine (:mod:`.views`)."""
        from tatonnet.distributed.views import EconomyView, NetworkView

        return EconomyView(self, self.scenario), NetworkView(self, self.scenario)

    def _aggregate(self, prices: np.ndarray) -> np.ndarray:
        blocks = self._get([self._call(s, "excess_blocks", prices) for s in self.shards])
        return kernel.sum_blocks(np.concatenate(blocks))

    def _central_round(self) -> RoundMetrics:
        coords = auctioneer_step(
            self.rule, self._central_coords, self._central_excess / self.supply,
            self._central_buffers, self.numeraire, self.round,
        )  # fmt: skip
        prices = prices_from_coords(coords, self.space)
        excess = self._aggregate(prices)
        self._central_coords, self._central_excess = coords, excess
        logp = np.log(prices)
        return RoundMetrics(self.round + 1, excess / self.supply, prices, logp, logp)

    # ---- faults, checkpoints ----------------------------------------------------------------
    def kill_worker(self, k: int) -> None:
        """SIGKILL the process of shard ``k`` (tests and the hidden CLI hook)."""
        if not self.use_ray:
            raise RuntimeError("kill_worker needs Ray workers")
        os.kill(self.pids[k], signal.SIGKILL)

    def _recover(self, to_round: int) -> None:
        self.recoveries += 1
        if self.recoveries > self.max_recoveries:
            raise WorkerLost(
                f"a Ray worker died {self.recoveries} times; giving up at round {to_round}"
            )
        import ray

        for shard in self.shards:
            ray.kill(shard, no_restart=True)
        self._teardown_graph()
        self._start_shards()
        if self.central:  # the auctioneer's state lives in the driver; shards are stateless
            return
        folder = self.latest_checkpoint()
        self.round = self._restore_from(folder) if folder else 0
        while self.round < to_round:  # replay: deterministic, so identical to what was lost
            n = min(to_round - self.round, self.MAX_BATCH)
            self._exchange(n)
            self.round += n

    def _settled(self, what: str, keep_graph: bool = False) -> None:
        """Before anything but a round: no rounds pending, and (unless ``keep_graph``) the
        compiled graph torn down — its actors poll their channels while it exists, which
        would take CPU from the reference solve and the outputs."""
        if not keep_graph:
            self._teardown_graph()
        if self._pending:
            raise RuntimeError(
                f"{what}: the shard ran {len(self._pending)} round(s) past round {self.round} "
                "(the run stopped for a reason ShardEngine.plan was not told)"
            )

    def checkpoint(self) -> Path:
        """Write every shard's state and the driver's, then mark the folder complete."""
        self._settled("checkpoint", keep_graph=True)
        folder = checkpoints.folder_for(self.checkpoint_dir, self.round)
        self._get([self._call(s, "checkpoint", str(folder)) for s in self.shards])
        state = {"round": self.round, "n_shards": len(self.shards)}
        if self.central:
            state.update(
                coords=self._central_coords.tolist(),
                excess=self._central_excess.tolist(),
                buffers=self._central_buffers.tolist(),
            )
        (folder / "engine.json").write_text(json.dumps(state))
        if self.on_checkpoint is not None:
            self.on_checkpoint(folder)
        return checkpoints.complete(folder)

    def latest_checkpoint(self) -> Path | None:
        return checkpoints.latest(self.checkpoint_dir)

    def _restore_from(self, folder: Path) -> int:
        state = json.loads((folder / "engine.json").read_text())
        if state["n_shards"] != len(self.shards):
            raise ValueError(
                f"checkpoint {folder} has {state['n_shards']} shards; this run has {len(self.shards)}"
            )
        rounds = set(self._get([self._call(s, "restore", str(folder)) for s in self.shards]))
        if rounds != {state["round"]}:
            raise ValueError(f"checkpoint {folder} is inconsistent (rounds {sorted(rounds)})")
        if self.central:
            self._central_coords = np.array(state["coords"])
            self._central_excess = np.array(state["excess"])
            self._central_buffers = np.array(state["buffers"])
        if not self.peer:  # peers send their rows themselves, at the next round
            self._messages = self._collect_outgoing()
        return state["round"]

    def restore(self, folder: Path) -> int:
        """Continue from a checkpoint folder (``--resume``); returns its round."""
        self.round = self._restore_from(Path(folder))
        return self.round

    # ---- results and inspection -------------------------------------------------------------
    def write_agents(self, folder: Path) -> list[str]:
        """Every shard writes its agents' final state (Parquet parts), in parallel."""
        self._settled("write_agents")
        folder.mkdir(parents=True, exist_ok=True)
        if self.central:
            prices = prices_from_coords(self._central_coords, self.space)
            return self._get(
                [self._call(s, "write_agents", str(folder), prices) for s in self.shards]
            )
        return self._get([self._call(s, "write_agents", str(folder)) for s in self.shards])

    def agent_prices(self, i: int) -> np.ndarray:
        self._settled("agent_prices")
        if self.central:
            return prices_from_coords(self._central_coords, self.space)
        k = int(self.partition.owner(np.array([i]))[0])
        return self._get(self._call(self.shards[k], "row_prices", i - self.partition.ranges[k][0]))

    def prices(self) -> np.ndarray:
        """Every agent's prices (n, g): gathers all shards — for inspection after a run."""
        self._settled("prices")
        if self.central:
            return np.broadcast_to(prices_from_coords(self._central_coords, self.space),
                                   (self.n_agents, self.n_goods))  # fmt: skip
        return np.concatenate(self._get([self._call(s, "prices") for s in self.shards]))

    def _teardown_graph(self) -> None:
        graph, self._graph = getattr(self, "_graph", None), None
        if graph is not None:
            try:
                graph.teardown()
            except Exception:  # noqa: BLE001 - a graph whose actor died is torn down anyway
                pass

    def shutdown(self) -> None:
        self._teardown_graph()
        if self.use_ray:
            import ray

            for shard in self.shards:
                ray.kill(shard, no_restart=True)
        self.shards = []


def _empty(n_agents: int) -> Network:
    """A network with no edges (central runs: shards only split the agents)."""
    indptr = np.arange(n_agents + 1, dtype=np.int64)
    indices = np.arange(n_agents, dtype=np.int32)
    return Network("central", n_agents, indptr, indices, np.ones(n_agents))
