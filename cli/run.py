#!/usr/bin/env python
"""``tatonnet``: run a market scenario and write its results (also ``python -m tatonnet``, ``python run.py``).

tatonnet                          # the built-in 'default' scenario
tatonnet --scenario scarf --graph central --rounds 500
tatonnet --scenario my_economy.toml --out runs/mine

Subcommands (each has its own --help): tatonnet study | inspect RUN_DIR | dashboard |
calibrate DATA
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

from tatonnet.cli.parsing import (
    EXIT_USAGE,
    OneLineParser,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_or_auto,
)


def workers_arg(text: str) -> int | str:
    """``--workers``: ``auto`` or an integer >= 0."""
    return "auto" if text == "auto" else non_negative_int(text)


#: ``tatonnet NAME ...`` hands the remaining arguments to ``MODULE.main(argv)``.
SUBCOMMANDS = {
    "study": "tatonnet.cli.study",
    "inspect": "tatonnet.cli.inspect",
    "dashboard": "tatonnet.cli.dashboard",
    "calibrate": "tatonnet.cli.calibrate",
}


def build_parser() -> argparse.ArgumentParser:
    from tatonnet.agents.rules import RULES
    from tatonnet.environment.network import GENERATORS
    from tatonnet.environment.scenario import builtin_names

    rules = "\n".join(f"  {name:15s} {cls.describe()}" for name, cls in sorted(RULES.items()))
    parser = OneLineParser(
        prog="tatonnet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate Walrasian price discovery (tatonnement) in an exchange economy whose\n"
            "agents sit on a network and adjust their own prices from what their neighbours\n"
            "tell them. Prints a summary and writes a result folder (summary.json,\n"
            "metrics.parquet, agents/ (Parquet parts), convergence.png, run.json)."
        ),
        epilog=(
            f"built-in scenarios: {', '.join(builtin_names())}\n"
            f"price-update rules:\n{rules}\n\n"
            "subcommands: tatonnet study (grid of scenarios x rules, verdict table),\n"
            "tatonnet inspect RUN_DIR, tatonnet dashboard, tatonnet calibrate DATA (utility\n"
            "parameters from data); each has --help.\n\n"
            "Options given here override the scenario file. Exit status: 0 when the run\n"
            "finished (whatever its verdict: converged, cycling, diverged, stalled,\n"
            "max_rounds or numerical_error), 2 for invalid input, 1 when workers were\n"
            "lost beyond recovery (continue with --resume), 130 when interrupted (Ctrl-C),\n"
            "143 when terminated (SIGTERM)."
        ),
    )
    parser.add_argument(
        "--scenario", default="default", metavar="NAME|FILE",
        help="built-in scenario name or path to a TOML scenario file (default: default)",
    )  # fmt: skip
    parser.add_argument(
        "--agents",
        type=positive_int,
        metavar="N",
        help="number of agents (agent groups keep their proportions)",
    )
    parser.add_argument("--goods", type=positive_int, metavar="G", help="number of goods")
    parser.add_argument(
        "--graph",
        choices=GENERATORS,
        metavar="KIND",
        help=f"network: {', '.join(GENERATORS)} (central = one auctioneer)",
    )
    parser.add_argument(
        "--builder",
        choices=("driver", "shards"),
        help="who draws the economy: 'driver' (this process, networkx graphs; the "
        "scenario default) or 'shards' (each shard draws its own agents and graph rows "
        "from counter-based random numbers: no process holds the whole economy)",
    )
    parser.add_argument(
        "--rule", choices=sorted(RULES), metavar="RULE", help="price-update rule (see below)"
    )
    parser.add_argument(
        "--step-size",
        type=positive_float,
        metavar="ETA",
        help="step size of the price-update rule",
    )
    parser.add_argument(
        "--signal",
        choices=("tracking", "local"),
        help="what agents react to: 'tracking' (gradient-tracking estimate of "
        "the network's excess demand; reaches the equilibrium) or 'local' "
        "(their neighbourhood's excess demand only; prices may stay dispersed)",
    )
    parser.add_argument("--rounds", type=positive_int, metavar="R", help="maximum rounds")
    parser.add_argument(
        "--tol",
        type=positive_float,
        help="convergence tolerance on excess demand and price dispersion",
    )
    parser.add_argument("--seed", type=non_negative_int, help="random seed of the scenario")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="result folder (default: runs/<scenario>-<UTC time>)",
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--workers",
        type=workers_arg,
        metavar="K|auto",
        help="auto (default): this process on one machine, one Ray worker per node with "
        "--address or $RAY_ADDRESS; 0: this process; 1: one in-process shard (Ray with "
        "--address); "
        "K >= 2: K Ray workers (a local Ray started for the run, or --address)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="T",
        help="numba threads per worker (a Ray worker reserves T CPUs; default: the CPUs "
        "given to the run split over the workers, or the node's CPUs); with --workers 0, "
        "at most T threads in this process",
    )
    parser.add_argument(
        "--sync-every",
        type=positive_int_or_auto,
        metavar="R|auto",
        default="auto",
        help="Ray workers run R rounds before the driver takes their partial sums (the "
        "stop is still decided from every round; a batch that stops early is run again "
        "to its stop round from a snapshot); auto (default): 10 with two or more Ray "
        "workers, else 1",
    )
    parser.add_argument(
        "--exchange",
        choices=("driver", "peer"),
        default="driver",
        help="how Ray workers pass boundary rows: driver (default: actor calls chained by "
        "object refs) or peer (a Ray Compiled Graph, shard to shard; its actors poll their "
        "channels, about a core each: see docs/07-performance.md)",
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join an existing Ray cluster (default: $RAY_ADDRESS, else a "
        "local Ray); see docs/06-cluster.md for the auth token",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=0,
        metavar="R",
        help="checkpoint every R rounds: a lost worker is recovered from the "
        "last checkpoint, and --resume can continue a stopped run",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the interrupted run whose --out was DIR",
    )
    parser.add_argument("--kill-worker-at-round", type=positive_int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip solving for the centralized equilibrium",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--trade",
        action="store_true",
        help="trade goods along the edges instead of tatonnement (--workers and --address "
        "as for tatonnement: Ray trade shards, one CPU each); writes "
        "summary.json, run.json, trade_metrics.parquet, trade_agents.parquet, edges.parquet, "
        "layers.png, and flows.graphml up to 20,000 agents",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGINT/SIGTERM stop it cleanly (:mod:`tatonnet.cli.signals`)."""
    from tatonnet.cli import signals

    return signals.guarded("tatonnet", _main, argv)


def entry() -> None:
    """``tatonnet``, ``python -m tatonnet`` and ``python run.py``: :func:`main`, then exit
    with its status (see :func:`tatonnet.cli.signals.finish`)."""
    from tatonnet.cli import signals

    try:
        code = main()
    except BrokenPipeError:  # `tatonnet ... | head`: the reader left; what was written stays
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 128 + signal.SIGPIPE
    signals.finish(code)


def _main(argv: list[str] | None = None) -> int:
    from tatonnet.cli import signals

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)

    from tatonnet.distributed import cluster
    from tatonnet.distributed.engine import WorkerLost
    from tatonnet.distributed.runner import (
        RunConfigError,
        RunOptions,
        load_run_config,
        resolve_options,
        run_scenario,
        save_run_config,
    )
    from tatonnet.environment.scenario import SCENARIO_ERRORS, load_scenario
    from tatonnet.results.output import (
        OutputError,
        claim_new,
        claim_resume,
        default_out_dir,
        write_results,
    )
    from tatonnet.results.summary import format_summary

    user_errors = (*SCENARIO_ERRORS, OutputError, RunConfigError, cluster.ClusterError)
    claim, work, out, fresh = None, None, None, True  # claim: the lock on out, its work folder
    if args.trade or (args.resume and _resumes_trade(args.resume)):  # bilateral trade
        return _trade_main(args, parser.prog, user_errors)
    try:
        if args.resume:
            claim = claim_resume(args.resume, args.force)  # only a marked run's work folder
            out, work = claim.out, claim.work
            scenario, options = load_run_config(work)
            options = dataclasses.replace(options, progress=not args.quiet)
            fresh = False
        else:
            scenario = load_scenario(args.scenario).with_overrides(
                agents=args.agents, goods=args.goods, graph=args.graph, seed=args.seed,
                builder=args.builder, rule=args.rule, step_size=args.step_size, signal=args.signal,
                rounds=args.rounds, tol=args.tol,
            )  # fmt: skip
            options = RunOptions(
                workers="auto" if args.workers is None else args.workers,
                threads=args.threads, address=args.address,
                sync_every=args.sync_every, exchange=args.exchange,
                checkpoint_every=args.checkpoint_every, reference=args.reference,
                progress=not args.quiet, kill_worker_at_round=args.kill_worker_at_round,
            )  # fmt: skip
            options.check(scenario)  # before joining a cluster: refusals need no network
            options = resolve_options(options, scenario)  # may join --address's cluster
            options.check(scenario)
            out = args.out or default_out_dir(scenario.name)
            claim = claim_new(out, "run", args.force)  # validated and locked before any work
            work = claim.work
            save_run_config(work, scenario, options, run_id=claim.run_id)
        print(f"engine:   {_engine_line(options)}", flush=True)  # the first line: what runs
        result = run_scenario(scenario, options, work=work, resume=not fresh)
        write_results(result, work, out)
        signals.defer()  # publishing: a signal from here on is reported once it is done
        claim.publish()
    except user_errors as exc:
        _discard(claim, fresh)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except WorkerLost as exc:
        print(f"{parser.prog}: error: {exc}; continue with --resume {out}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # SIGINT or SIGTERM (signals.Terminated)
        return _interrupted(parser.prog, claim, work, out, fresh)
    except BaseException:
        _discard(claim, fresh and not _has_checkpoint(work))
        raise
    finally:
        cluster.shutdown()
        if claim is not None:
            claim.release()
    print(format_summary(result.summary))
    print(f"results:  {out}")
    return 0


def _trade_main(args, prog: str, user_errors) -> int:
    """``--trade`` (or ``--resume`` of a trade run): :mod:`tatonnet.distributed.trade_runner`."""
    from tatonnet.cli import signals
    from tatonnet.distributed import cluster, trade_runner
    from tatonnet.environment.scenario import load_scenario
    from tatonnet.environment.trade import flows
    from tatonnet.environment.trade.bilateral import TradeError
    from tatonnet.results.output import claim_new, claim_resume, default_out_dir
    from tatonnet.results.provenance import versions

    claim, work, out, fresh = None, None, None, True
    try:
        if args.resume:
            claim = claim_resume(args.resume, args.force)
            out, work = claim.out, claim.work
            scenario, options = trade_runner.load_config(work)
            options = dataclasses.replace(options, progress=not args.quiet)
            fresh = False
        else:
            scenario = load_scenario(args.scenario).with_overrides(
                agents=args.agents, goods=args.goods, graph=args.graph, seed=args.seed,
                builder=args.builder,
            )  # fmt: skip
            options = trade_runner.TradeOptions(
                workers="auto" if args.workers is None else args.workers, address=args.address,
                checkpoint_every=args.checkpoint_every, rounds=args.rounds, tol=args.tol,
                progress=not args.quiet, kill_worker_at_round=args.kill_worker_at_round,
            )  # fmt: skip
            options.check(scenario)  # before joining a cluster: refusals need no network
            scenario.check_memory(trade=True)  # before any allocation or folder
            options = trade_runner.resolve(options, scenario)  # may join --address's cluster
            options.check(scenario)
            out = args.out or default_out_dir(scenario.name)
            claim = claim_new(out, "trade", args.force)  # validated and locked before any work
            work = claim.work
            trade_runner.save_config(work, scenario, options, claim.run_id)
        print(f"engine:   {trade_runner.engine_line(options)}", flush=True)
        outcome, ran = trade_runner.run(scenario, options, work=work, resume=not fresh)
        provenance = {**ran, "versions": versions(), "run_id": claim.run_id, "out": str(out)}
        summary = flows.write_trade_results(work, outcome, provenance)
        signals.defer()  # publishing: a signal from here on is reported once it is done
        claim.publish()
    except (*user_errors, TradeError) as exc:
        _discard(claim, fresh)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # SIGINT or SIGTERM (signals.Terminated)
        return _interrupted(prog, claim, work, out, fresh)
    except BaseException:
        _discard(claim, fresh and not _has_checkpoint(work))
        raise
    finally:
        cluster.shutdown()
        if claim is not None:
            claim.release()
    print(flows.format_trade_summary(summary))
    print(f"results:  {out}")
    return 0


def _engine_line(options) -> str:
    """Which engine runs and why, before the run starts."""
    if options.use_ray:
        where = f"{options.workers} Ray worker(s) x {options.threads} thread(s)"
    elif options.workers == 1:
        where = "in-process shard"
    else:
        where = "in-process"
    return f"{where} ({options.reason})"


def _interrupted(prog: str, claim, work, out, fresh: bool) -> int:
    """A run stopped by SIGINT or SIGTERM: keep a work folder that can be resumed, else
    remove it; one line, the signal's exit status."""
    from tatonnet.cli import signals

    if _has_checkpoint(work):
        print(f"{prog}: {signals.stopped()}; continue with --resume {out}", file=sys.stderr)
    else:
        _discard(claim, fresh)
        print(f"{prog}: {signals.stopped()}; no result folder written", file=sys.stderr)
    return signals.exit_code()


def _resumes_trade(out) -> bool:
    """``--resume DIR`` names a stopped trade run (``--trade`` need not be repeated)."""
    from tatonnet.results.output import read_marker, work_dir_for

    try:
        marker = read_marker(work_dir_for(Path(out)))
    except Exception:  # unreadable: claim_resume reports it
        return False
    return marker is not None and marker["kind"] == "trade"


def _has_checkpoint(work) -> bool:
    from tatonnet.results import checkpoints

    return work is not None and checkpoints.latest(work / "checkpoints") is not None


def _discard(claim, fresh: bool) -> None:
    """Remove the work folder of a run that failed before it could be resumed (only if
    this process created it: see :meth:`tatonnet.results.output.OutputClaim.discard`)."""
    if claim is not None and fresh:
        claim.discard()


if __name__ == "__main__":
    sys.exit(main())
