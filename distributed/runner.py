"""Running a scenario to its verdict: engines, the round loop, checkpoints, resume.

Engines by ``workers``: ``0`` — the fused kernel in this process (``MarketModel`` without an
engine; every Mesa agent a view onto the arrays); ``1`` — one in-process shard
(checkpoints and ``--resume`` work), or one Ray worker when a cluster is named (``address``)
or ``ray=True``; ``K >= 2`` — K Ray actors on a local Ray or a cluster, each running the
fused kernel on ``threads`` numba threads and reserving as many CPUs. A rule with its own
dynamics (extragradient, Newton, proportional response) runs its round
(:mod:`tatonnet.environment.tatonnement.rows`) on the same engines
(:mod:`tatonnet.distributed.composite_shard`), on a graph; under ``central`` in this
process only. All give bit-identical results for the same seed, whatever the worker and
thread counts.

``workers="auto"`` (the command line's default) is decided by :func:`resolve_options`:

* a rule with its own dynamics (extragradient, Newton, proportional response) under
  ``central`` runs in this process; on a graph it is chosen like any other rule;
* a cluster address (``address`` or ``RAY_ADDRESS``): one worker per node of the cluster,
  each with the node's CPUs (the smallest node's, so every worker fits);
* otherwise this process: on one machine the in-process kernel is the fastest engine.
  (Ray workers on the same machine share its memory, so size alone never picks Ray; an
  economy too large for this machine is refused by the memory guard. With ``builder =
  "shards"`` and Ray workers the driver holds no agent rows: the shards draw their own,
  see :mod:`tatonnet.environment.build.shard_rows`.)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from tatonnet.distributed import cluster
from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.partition import shard_ranges
from tatonnet.environment import equilibrium
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import Scenario
from tatonnet.environment.sizing import available_memory
from tatonnet.environment.tatonnement import dynamics
from tatonnet.environment.tatonnement.dynamics import RoundMetrics, messages_per_round
from tatonnet.environment.tatonnement.kernel import n_blocks
from tatonnet.environment.tatonnement.status import Verdict
from tatonnet.results.provenance import versions, write_run_json

#: Rounds per driver synchronisation under ``--sync-every auto`` with two or more Ray
#: workers (measured: 2 x 1 workers at 10^6 agents went from 0.81-0.89x of the in-process
#: rate at 1 to 1.04x at 10; see docs/07-performance.md).
AUTO_SYNC_EVERY = 10


class RunConfigError(ValueError):
    """The run's options do not fit together (one-line message)."""


class DriverStopped(RuntimeError):
    """Raised by the ``stop_after_round`` test hook to simulate a driver that died."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run (not what): engine, cluster, checkpoints, test hooks.

    ``workers``: ``"auto"`` or K (see the module docstring); ``threads``: numba threads
    per worker (None: the CPUs given to the run split over the Ray workers, all cores
    in this process); ``ray``: run ``workers`` as Ray actors (None: when K >= 2, or K = 1
    with an address); ``reason``: why this engine (set by :func:`resolve_options`).
    """

    workers: int | str = "auto"
    threads: int | None = None
    ray: bool | None = None
    reason: str = ""
    address: str | None = None
    sync_every: int | str = "auto"
    exchange: str = "driver"
    checkpoint_every: int = 0
    reference: bool = True
    progress: bool = True
    kill_worker_at_round: int | None = None  # test hook: SIGKILL worker 0 after this round
    stop_after_round: int | None = None  # test hook: raise DriverStopped after this round

    @property
    def batch_rounds(self) -> int:
        """Rounds the driver submits before it takes the partials (``sync_every``).

        ``"auto"``: :data:`AUTO_SYNC_EVERY` for two or more Ray workers, where it saves the
        driver's round trip each round (about 0.2x of a 10^6-agent round on two workers,
        docs/07-performance.md), at the price of one snapshot of each shard's own state;
        1 otherwise (one shard runs its rounds in a batch anyway).
        """
        if self.sync_every != "auto":
            return int(self.sync_every)
        multi = self.workers != "auto" and self.workers >= 2 and self.use_ray
        return AUTO_SYNC_EVERY if multi else 1

    @property
    def use_ray(self) -> bool:
        if self.ray is not None or self.workers == "auto":
            return bool(self.ray)
        return self.workers >= 2 or (self.workers == 1 and bool(self.address))

    def check(self, scenario: Scenario) -> None:
        """Refuse combinations that cannot run, before anything is started."""
        if self.workers == "auto":
            return resolve_options(self, scenario, connect=False).check(scenario)
        if self.threads is not None and self.threads < 1:
            raise RunConfigError(f"--threads {self.threads}: expected 1 or more")
        if self.sync_every != "auto" and not (
            isinstance(self.sync_every, int) and self.sync_every >= 1
        ):
            raise RunConfigError(f"--sync-every {self.sync_every}: expected auto or 1 or more")
        if self.exchange not in ("driver", "peer"):
            raise RunConfigError(f"--exchange {self.exchange!r}: expected driver or peer")
        if self.ray and self.workers < 1:
            raise RunConfigError("Ray needs --workers 1 or more")
        if scenario.growth is not None and (self.workers >= 1 or self.use_ray):
            raise RunConfigError(
                f"[growth]: a growing market runs in this process (the fused kernel rebuilt "
                f"at every join and leave); use --workers 0, not {self.workers}"
            )
        if self.checkpoint_every and self.workers == 0:
            raise RunConfigError("--checkpoint-every needs --workers 1 or more (sharded engine)")
        if self.kill_worker_at_round is not None and not self.use_ray:
            raise RunConfigError("--kill-worker-at-round needs Ray workers (--workers 2 or more)")
        if self.workers >= 1:
            _check_composite(self, scenario)
        if self.address and self.workers < 1:
            d = scenario.dynamics
            how = (
                f"rule {d.rule!r} under central runs its own dynamics in this process"
                if d.make_rule().engine is not None and scenario.network.kind == "central"
                else f"--workers {self.workers} runs in this process"
            )
            raise RunConfigError(
                f"--address {self.address}: {how}, so no Ray cluster would be joined; use "
                "--workers 1 or more (on a graph), or leave out --address"
            )
        if self.workers >= 1:
            try:
                shard_ranges(scenario.n_agents, max(1, self.workers))
            except ValueError as exc:
                raise RunConfigError(str(exc)) from None
        # the driver builds the whole economy and graph in this process, unless Ray shards
        # build their own rows; on a cluster those live on its nodes, not on this machine
        on_cluster = self.address or os.environ.get("RAY_ADDRESS")
        if not (scenario.builder == "shards" and self.use_ray and on_cluster):
            scenario.check_memory()


def _check_composite(options: RunOptions, scenario: Scenario) -> None:
    """Refuse what a rule with its own dynamics (extragradient, Newton, proportional
    response) cannot do on the sharded engine: its central version runs in this process
    only, its messages go through the driver, and the driver builds its round."""
    rule, engine = scenario.dynamics.rule, scenario.dynamics.make_rule().engine
    if engine is None:
        return
    if scenario.network.kind == "central":
        raise RunConfigError(
            f"rule {rule!r} under central runs its own dynamics ({engine!r}) in this process "
            f"only: use --workers 0 (or leave --workers out), not {options.workers}"
        )
    if options.exchange == "peer" and options.use_ray and options.workers >= 2:
        raise RunConfigError(
            f"--exchange peer runs the fused kernel; rule {rule!r} ({engine!r} dynamics) "
            "exchanges its messages through the driver: use --exchange driver"
        )
    if scenario.builder == "shards":
        raise RunConfigError(
            f'builder "shards": rule {rule!r} runs its own dynamics ({engine!r}), whose '
            'round the driver builds from the economy; use builder = "driver"'
        )


@dataclasses.dataclass
class RunResult:
    """What a finished run produced (see :func:`tatonnet.results.output.write_results`)."""

    model: MarketModel
    verdict: Verdict
    summary: dict
    references: list[np.ndarray]


def reference_equilibria(model: MarketModel) -> tuple[list[np.ndarray], str]:
    """Equilibria of the centralized economy and how they were found."""
    return equilibrium.reference_equilibria(model.economy, seed=model.config.seed)


def resolve_options(options: RunOptions, scenario: Scenario, connect: bool = True,
                    cpus: int | None = None) -> RunOptions:  # fmt: skip
    """``options`` with ``workers`` a number, ``ray`` and ``threads`` decided, and ``reason``
    saying why (see the module docstring).

    ``connect``: join the cluster when one is named and the choice needs its nodes (with
    False, an address under ``auto`` resolves to one worker). ``cpus``: this machine's, by
    default measured.
    """
    cpus = available_cpus() if cpus is None else cpus
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    blocks = n_blocks(scenario.n_agents)
    own_engine = scenario.dynamics.make_rule().engine
    n = f"{scenario.n_agents:,} agents"
    workers, threads, ray, reason = options.workers, options.threads, options.ray, options.reason
    if workers == "auto":
        if own_engine is not None and scenario.network.kind == "central":
            workers, ray = 0, False
            reason = (f"--workers auto: rule {scenario.dynamics.rule} under central runs its "
                      "own dynamics")  # fmt: skip
        elif address:
            nodes = [1]
            if connect:
                cluster.connect(1, address)
                nodes = cluster.node_cpus() or [1]
            workers, ray = min(len(nodes), blocks), True
            threads = threads or min(nodes)
            reason = (f"--workers auto: one worker per node of the cluster ({len(nodes)} "
                      f"node(s)), {n}")  # fmt: skip
        else:
            workers, ray = 0, False
            reason = f"--workers auto: one machine, {n}"
    resolved = dataclasses.replace(options, workers=int(workers), ray=ray, threads=threads)
    if resolved.use_ray and resolved.threads is None:
        if address and connect:
            cluster.connect(1, address)
            nodes = cluster.node_cpus() or [1]
            total = sum(nodes)
            threads = max(1, min(max(nodes), total // max(1, resolved.workers)))
        else:
            threads = max(1, cpus // max(1, resolved.workers))
        resolved = dataclasses.replace(resolved, threads=threads)
    if not reason:
        reason = f"--workers {resolved.workers}"
        if resolved.use_ray:
            reason += f" --threads {resolved.threads}"
            if resolved.workers == 1 and not address:
                reason += ", Ray"
        elif resolved.threads is not None:
            reason += f" --threads {resolved.threads}"
    return dataclasses.replace(resolved, reason=reason, sync_every=resolved.batch_rounds)


def object_store_bytes(scenario: Scenario) -> int:
    """A local Ray's object store for this economy: four rounds of boundary rows as if every
    agent's row crossed to another shard (``4 n g`` float64, at least
    :data:`~tatonnet.distributed.cluster.OBJECT_STORE_BYTES`, at most a quarter of the
    memory available). Rounds in flight keep about two rounds of messages; at 10^7 agents
    a 512 MiB store spilled them to disk. Pages are only used as objects are written."""
    need = 4 * scenario.n_agents * scenario.n_goods * 8
    cap = (available_memory() or 4 * cluster.OBJECT_STORE_BYTES) // 4
    return int(max(cluster.OBJECT_STORE_BYTES, min(need, cap)))


def engine_factory(options: RunOptions, work: Path | None):
    """The ``engine`` argument of MarketModel for these options (None: in-process kernel)."""
    if options.workers == 0:
        return None
    return functools.partial(
        ShardEngine,
        n_shards=options.workers,
        use_ray=options.use_ray,
        checkpoint_dir=(work / "checkpoints") if work is not None else None,
        kill_worker_at_round=options.kill_worker_at_round,
        threads=options.threads,
        exchange=options.exchange,
        sync_every=options.batch_rounds,
    )


# ---- run state kept in the work folder --------------------------------------------------
def save_run_config(
    work: Path, scenario: Scenario, options: RunOptions, run_id: str | None = None
) -> None:
    """``work/run.json`` (:func:`tatonnet.results.provenance.write_run_json`, kind ``run``)."""
    config = {"scenario": scenario.model_dump(), "options": dataclasses.asdict(options),
              "seed": scenario.seed}  # fmt: skip
    write_run_json(work, "run", config, run_id)


def load_run_config(work: Path) -> tuple[Scenario, RunOptions]:
    """The scenario and options saved in ``work/run.json`` (one-line error if damaged)."""
    path = work / "run.json"
    try:
        config = json.loads(path.read_text())
        options = dict(config["options"], kill_worker_at_round=None, stop_after_round=None)
        return Scenario.model_validate(config["scenario"]), RunOptions(**options)
    except Exception as exc:  # truncated, edited, or from another version
        raise RunConfigError(
            f"--resume: {str(path)!r} is damaged ({_one_line(exc)}); nothing was changed"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _save_history(model: MarketModel, folder: Path) -> None:
    df = model.datacollector.get_model_vars_dataframe()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), folder / "metrics.parquet")
    m = model.metrics
    last = {k: np.asarray(v).tolist() for k, v in dataclasses.asdict(m).items()}
    (folder / "metrics_last.json").write_text(json.dumps(last))


def _load_history(model: MarketModel, folder: Path) -> None:
    df = pq.read_table(folder / "metrics.parquet").to_pandas()
    model.datacollector.model_vars = {c: df[c].tolist() for c in df.columns}
    last = json.loads((folder / "metrics_last.json").read_text())
    model.metrics = RoundMetrics(
        last["round"], *(np.array(last[k]) for k in ("excess", "mean_price", "log_min", "log_max"))
    )


# ---- the run ----------------------------------------------------------------------------
def run_scenario(
    scenario: Scenario,
    options: RunOptions = RunOptions(workers=0),
    work: Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Run ``scenario`` until it converges, diverges or runs out of rounds.

    ``work`` is the run's work folder (checkpoints go to ``work/checkpoints``); with
    ``resume`` the run continues from the last complete checkpoint there.
    """
    t_start = time.perf_counter()
    if (
        options.workers == "auto"
        or not options.reason
        or (options.use_ray and options.threads is None)
    ):
        options = resolve_options(options, scenario)
    options.check(scenario)
    if options.checkpoint_every and work is None:
        raise RunConfigError("checkpoints need a work folder")
    where = "in-process"
    if options.use_ray:
        where = cluster.connect(options.workers, options.address, threads=options.threads,
                                object_store_bytes=object_store_bytes(scenario))  # fmt: skip
    elif options.workers == 1:
        where = "in-process shard"
    saved_cap = dynamics.MAX_THREADS
    if not options.use_ray:
        dynamics.MAX_THREADS = options.threads
    try:
        return _run(scenario, options, work, resume, t_start, where)
    finally:
        dynamics.MAX_THREADS = saved_cap


def _run(scenario, options, work, resume, t_start, where) -> RunResult:
    model = MarketModel(scenario, engine=engine_factory(options, work))
    engine = model.engine
    resumed_from = None
    folder = engine.latest_checkpoint() if resume and engine is not None else None
    if resume and folder is None:
        # Stopped before its first checkpoint: run.json defines the whole run, and the same
        # seed gives the same result, so it restarts from round 0.
        resumed_from = 0
    elif resume:
        try:
            resumed_from = engine.restore(folder)
            _load_history(model, folder)
        except Exception as exc:  # a truncated or damaged checkpoint
            raise RunConfigError(
                f"--resume: the checkpoint {str(folder)!r} is damaged ({_one_line(exc)}); "
                "nothing was changed"
            ) from None
    d = scenario.dynamics
    if engine is not None:
        engine.on_checkpoint = functools.partial(_save_history, model)
        engine.plan(d.tol, d.rounds, options.checkpoint_every, options.stop_after_round)
    bar = tqdm(
        total=d.rounds, initial=model.round, delay=2.0, file=sys.stderr, unit="round",
        disable=not options.progress, desc=scenario.name, dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
    )  # fmt: skip
    first = model.round
    ahead = 0  # rounds a batched engine ran with the first one (untimed with it)
    t_first = t_loop = time.perf_counter()  # set-up ends: the first round starts
    with bar:
        while model.running and model.round < d.rounds:
            model.step()
            r = model.round
            if r == first + 1:  # the first round may include loading compiled kernels
                t_loop = time.perf_counter()
                ahead = 0 if engine is None else engine.pending_rounds
            if options.checkpoint_every and r % options.checkpoint_every == 0 and model.running:
                engine.checkpoint()
            bar.update(1)
            if r % 100 == 1:
                m = model.metrics
                bar.set_postfix(
                    excess=f"{m.excess_demand:.2e}", disp=f"{m.price_dispersion:.2e}", refresh=False
                )
            if options.stop_after_round is not None and r >= options.stop_after_round:
                raise DriverStopped(f"driver stopped after round {r} (test hook)")
    t_end = time.perf_counter()
    if engine is not None and engine.pending_rounds:  # pragma: no cover - a model change
        raise RuntimeError(
            f"the run stopped at round {model.round} but its Ray worker ran "
            f"{engine.pending_rounds} more: ShardEngine.plan and the model disagree on stopping"
        )
    rounds = model.round
    n = model.economy.n_agents  # at the end (a growing market's final population)
    t_reference = time.perf_counter()
    references, method = reference_equilibria(model) if options.reference else ([], "not computed")
    verdict = model.classify(references)
    space = model.dynamics.rule.space
    m = model.metrics
    near = equilibrium.nearest(m.mean_price, references)
    timed_rounds = rounds - first - 1 - ahead
    loop_seconds = t_end - t_loop
    part = engine.partition if engine is not None else None
    traffic = messages_per_round(model.dynamics.rule, model.network, model.economy.n_goods)
    if model.dynamics.rule.engine is not None:
        where = f"{where} ({model.dynamics.rule.engine} dynamics)"
    threads = None if engine is None else engine.worker_threads
    summary = {
        "scenario": scenario.name,
        "scenario_source": scenario.source,
        "n_agents": n,
        "n_goods": model.economy.n_goods,
        "goods": list(model.economy.goods),
        "numeraire": model.economy.numeraire,
        "graph": model.network.kind,
        "n_edges": model.network.n_edges,
        "rule": model.dynamics.rule.name,
        "step_size": model.dynamics.rule.step_size,
        "hyperparameters": dataclasses.asdict(model.dynamics.rule),
        "signal": model.dynamics.signal,
        "seed": scenario.seed,
        "workers": options.workers,
        "threads": options.threads,
        "worker_threads": threads,
        "exchange": None if engine is None or not engine.use_ray else engine.exchange,
        "sync_every": None if engine is None or not engine.use_ray else engine.sync_every,
        "engine": where,
        "engine_reason": options.reason,
        "edge_cut": None if part is None else part.edge_cut,
        "partition_seconds": None if part is None else part.seconds,
        "boundary_bytes_per_round": None if engine is None else engine.bytes_per_round,
        "worker_recoveries": 0 if engine is None else engine.recoveries,
        "resumed_from_round": resumed_from,
        "rounds": rounds,
        "max_rounds": d.rounds,
        "tol": d.tol,
        "status": verdict.status,
        "reason": verdict.reason,
        "evidence": verdict.evidence,
        "excess_demand": m.excess_demand,
        "excess_demand_per_good": m.excess.tolist(),
        "price_dispersion": m.price_dispersion,
        "prices": m.mean_price.tolist(),
        "reference_prices": [p.tolist() for p in references] if options.reference else None,
        "reference_method": method,
        "reference_stability": [
            equilibrium.stability(model.economy, p, space).as_dict() for p in references
        ],
        "reference_seconds": None,  # set below, after the stability analysis
        "nearest_reference": None if near is None else near[0],
        "distance_to_reference": None if near is None else near[1],
        "exchanges_per_round": traffic["exchanges"],
        "messages_per_round": traffic["messages"],
        "floats_per_round": traffic["floats"],
        "floats_per_message": traffic["floats"] / max(traffic["messages"], 1),  # mean
        "wall_seconds": t_end - t_start,
        "setup_seconds": t_first - t_start,
        "round_seconds": t_end - t_first,
        "driver_round_seconds": None if engine is None else dict(engine.seconds),
        "agent_rounds_per_second": (n * timed_rounds / loop_seconds) if timed_rounds > 0 else None,
        "timed_rounds": max(timed_rounds, 0),
        "versions": versions(),
    }
    if model.growth is not None:
        summary["growth"] = model.growth.summary()
    summary["reference_seconds"] = time.perf_counter() - t_reference
    return RunResult(model, verdict, summary, references)
