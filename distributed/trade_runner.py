"""Running a scenario's bilateral trade: which engine, Ray, checkpoints, resume.

Engines by ``workers`` (as for tatonnement, :mod:`tatonnet.distributed.runner`): ``0`` —
:func:`tatonnet.environment.trade.bilateral.run_trade` in this process; ``1`` — one
in-process shard of :class:`~tatonnet.distributed.trade_shard.ShardedTrade` (checkpoints
and ``--resume`` work); ``K >= 2``, or 1 with a cluster address — K Ray actors, one CPU
each (a trade shard is single-threaded). ``"auto"``: this process on one machine, one
worker per CPU of the cluster when one is named (``address`` or ``RAY_ADDRESS``). All give
bit-identical results (state, per-edge accounts, per-round metrics) for the same seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tatonnet.distributed import cluster
from tatonnet.distributed.trade_shard import ShardedTrade
from tatonnet.environment.scenario import Scenario, build_market
from tatonnet.environment.trade import bilateral as tr
from tatonnet.environment.trade import flows
from tatonnet.environment.trade.metrics import n_blocks, trade_ranges


@dataclasses.dataclass(frozen=True)
class TradeOptions:
    """How a trade run runs (not what): engine, cluster, checkpoints, test hooks.

    ``rounds`` and ``tol`` override the scenario's ``[trade]`` table (None: keep it).
    """

    workers: int | str = "auto"
    address: str | None = None
    checkpoint_every: int = 0
    rounds: int | None = None
    tol: float | None = None
    progress: bool = True
    reason: str = ""
    kill_worker_at_round: int | None = None  # test hook: SIGKILL worker 0 after this round

    @property
    def use_ray(self) -> bool:
        if self.workers == "auto":
            return False
        return self.workers >= 2 or (self.workers == 1 and bool(self.address))

    def check(self, scenario: Scenario) -> None:
        """Refuse combinations that cannot run, before anything is started."""
        if self.workers == "auto":
            return
        if self.checkpoint_every and self.workers == 0:
            raise tr.TradeError("--checkpoint-every needs --workers 1 or more (sharded engine)")
        if self.kill_worker_at_round is not None and not self.use_ray:
            raise tr.TradeError("--kill-worker-at-round needs Ray workers (--workers 2 or more)")
        if self.address and self.workers < 1:
            raise tr.TradeError(
                f"--address {self.address}: --workers 0 runs in this process, so no Ray "
                "cluster would be joined; use --workers 1 or more, or leave out --address"
            )
        if self.workers >= 1:
            trade_ranges(scenario.n_agents, self.workers)


def resolve(options: TradeOptions, scenario: Scenario) -> TradeOptions:
    """``options`` with ``workers`` a number and ``reason`` saying why (joins the cluster
    when ``auto`` meets an address, to count its CPUs)."""
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    n = f"{scenario.n_agents:,} agents"
    if options.workers != "auto":
        reason = options.reason or f"--workers {options.workers}"
        return dataclasses.replace(options, reason=reason)
    if address:
        cluster.connect(1, address)
        cpus = sum(cluster.node_cpus()) or 1
        workers = max(1, min(cpus, n_blocks(scenario.n_agents)))
        reason = f"--workers auto: one trade shard per CPU of the cluster ({cpus:g}), {n}"
        return dataclasses.replace(options, workers=workers, address=address, reason=reason)
    return dataclasses.replace(options, workers=0, reason=f"--workers auto: one machine, {n}")


def engine_line(options: TradeOptions) -> str:
    """Which engine runs and why, before the run starts."""
    if options.use_ray:
        where = f"{options.workers} Ray trade worker(s)"
    elif options.workers == 1:
        where = "in-process trade shard"
    else:
        where = "in-process"
    return f"{where} ({options.reason})"


def save_config(work: Path, scenario: Scenario, options: TradeOptions, run_id: str) -> None:
    """``work/run.json`` of kind ``trade`` (what ``--resume`` reads back)."""
    from tatonnet.results.provenance import write_run_json

    write_run_json(work, "trade", {
        "scenario": scenario.model_dump(), "seed": scenario.seed,
        "options": dataclasses.asdict(options),
    }, run_id)  # fmt: skip


def load_config(work: Path) -> tuple[Scenario, TradeOptions]:
    """The scenario and options of a trade run's ``run.json`` (one-line error if damaged)."""
    path = work / "run.json"
    try:
        config = json.loads(path.read_text())
        options = dict(config["options"], kill_worker_at_round=None)
        return Scenario.model_validate(config["scenario"]), TradeOptions(**options)
    except Exception as exc:
        raise tr.TradeError(
            f"--resume: {str(path)!r} is damaged ({type(exc).__name__}); nothing was changed"
        ) from None


def run(
    scenario: Scenario, options: TradeOptions, work: Path | None = None, resume: bool = False
) -> tuple[flows.TradeOutcome, dict]:
    """Build the market and trade until the Pareto test or the last round.

    Returns the outcome and what ran (engine, workers, recoveries, set-up and round seconds,
    the round a resumed run continued from) for the summary. ``work``: the run's work
    folder (checkpoints in ``work/checkpoints``); ``resume``: continue from its last one.
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    if options.workers == "auto":
        options = resolve(options, scenario)
    options.check(scenario)
    where = "in-process" if options.workers == 0 else "in-process shard"
    if options.use_ray:
        where = cluster.connect(options.workers, options.address)
    economy, group, network, _ = build_market(scenario)
    config, default_rounds, default_tol = flows.trade_config_for(scenario, group)
    rounds, tol = options.rounds or default_rounds, options.tol or default_tol
    every = max(1, economy.n_agents // 50) if tol else 1
    engine, resumed_from = None, None
    if options.workers >= 1:
        engine = ShardedTrade(
            economy, network, config, options.workers, use_ray=options.use_ray,
            checkpoint_every=options.checkpoint_every, keep_log=False,
            checkpoint_dir=None if work is None else work / "checkpoints",
            kill_worker_at_round=options.kill_worker_at_round,
        )  # fmt: skip
        if resume:
            folder = engine.latest_checkpoint()
            resumed_from = 0 if folder is None else _restore(engine, folder)
    bar = tqdm(
        total=rounds, initial=0 if engine is None else engine.round, delay=2.0, file=sys.stderr,
        unit="round", disable=not options.progress, desc=scenario.name, dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
    )  # fmt: skip
    t_first = time.perf_counter()
    try:
        with bar:
            tick = lambda *_: bar.update(1)  # noqa: E731
            if engine is None:
                result = tr.run_trade(economy, network, config, rounds, tol, every=every,
                                      on_round=tick, keep_log=False)  # fmt: skip
            else:
                result = engine.run(rounds, tol, every=every, on_round=tick)
    finally:
        if engine is not None:
            engine.close()
    t_end = time.perf_counter()
    prices, how = flows.reference_prices(economy)
    outcome = flows.TradeOutcome(scenario, economy, group, network, result, prices, how,
                                 config, rounds, tol)  # fmt: skip
    ran = {
        "engine": where,
        "engine_reason": options.reason,
        "workers": options.workers,
        "worker_recoveries": 0 if engine is None else len(engine.recoveries),
        "resumed_from_round": resumed_from,
        "setup_seconds": t_first - t_start,
        "round_seconds": t_end - t_first,
    }
    return outcome, ran


def _restore(engine: ShardedTrade, folder: Path) -> int:
    try:
        return engine.restore(folder)
    except Exception as exc:  # a truncated or damaged checkpoint
        raise tr.TradeError(
            f"--resume: the checkpoint {str(folder)!r} is damaged ({type(exc).__name__}); "
            "nothing was changed"
        ) from None
