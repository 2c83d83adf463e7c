#!/usr/bin/env python
"""tatonnet command line: run a market scenario and write its results.

python run.py                          # the built-in 'default' scenario
python run.py --scenario scarf --graph central --rounds 500
python run.py --scenario my_economy.toml --out runs/mine
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from agents.rules import RULES
    from environment.network import GENERATORS
    from environment.scenario import builtin_names

    rules = "\n".join(f"  {name:15s} {cls.describe()}" for name, cls in sorted(RULES.items()))
    parser = _Parser(
        prog="run.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Simulate Walrasian price discovery (tatonnement) in an exchange economy whose\n"
            "agents sit on a network and adjust their own prices from what their neighbours\n"
            "tell them. Prints a summary and writes a result folder (summary.json,\n"
            "metrics.parquet, agents.parquet, convergence.png)."
        ),
        epilog=(
            f"built-in scenarios: {', '.join(builtin_names())}\n"
            f"price-update rules:\n{rules}\n\n"
            "Options given here override the scenario file. Exit status: 0 when the run\n"
            "finished (whatever its verdict: converged, cycling, diverged, stalled or\n"
            "max_rounds), 2 for invalid input."
        ),
    )
    parser.add_argument(
        "--scenario", default="default", metavar="NAME|FILE",
        help="built-in scenario name or path to a TOML scenario file (default: default)",
    )  # fmt: skip
    parser.add_argument(
        "--agents",
        type=_positive_int,
        metavar="N",
        help="number of agents (agent groups keep their proportions)",
    )
    parser.add_argument("--goods", type=_positive_int, metavar="G", help="number of goods")
    parser.add_argument(
        "--graph",
        choices=GENERATORS,
        metavar="KIND",
        help=f"network: {', '.join(GENERATORS)} (central = one auctioneer)",
    )
    parser.add_argument(
        "--rule", choices=sorted(RULES), metavar="RULE", help="price-update rule (see below)"
    )
    parser.add_argument(
        "--step-size",
        type=_positive_float,
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
    parser.add_argument("--rounds", type=_positive_int, metavar="R", help="maximum rounds")
    parser.add_argument(
        "--tol",
        type=_positive_float,
        help="convergence tolerance on excess demand and price dispersion",
    )
    parser.add_argument("--seed", type=_non_negative_int, help="random seed of the scenario")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="result folder (default: runs/<scenario>-<UTC time>)",
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--workers",
        type=_non_negative_int,
        default=0,
        metavar="K",
        help="Ray workers (0 or 1: in-process; more needs the Ray engine)",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip solving for the centralized equilibrium",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from agents.rules import RuleError
    from distributed.output import OutputError, check_out_dir, default_out_dir, write_run
    from distributed.runner import format_summary, run_scenario
    from environment.economy import EconomyError
    from environment.network import NetworkError
    from environment.scenario import ScenarioError, load_scenario

    user_errors = (ScenarioError, RuleError, NetworkError, EconomyError, OutputError)
    try:
        if args.workers > 1:
            raise OutputError(
                f"--workers {args.workers}: multi-worker runs need the Ray engine, which "
                "this version does not have yet; use --workers 0"
            )
        scenario = load_scenario(args.scenario).with_overrides(
            agents=args.agents, goods=args.goods, graph=args.graph, seed=args.seed,
            rule=args.rule, step_size=args.step_size, signal=args.signal,
            rounds=args.rounds, tol=args.tol,
        )  # fmt: skip
        out = args.out or default_out_dir(scenario.name)
        check_out_dir(out, args.force)
        result = run_scenario(
            scenario, workers=args.workers, reference=args.reference, progress=not args.quiet
        )
        write_run(result, out, force=args.force)
    except user_errors as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; no result folder written", file=sys.stderr)
        return 130
    print(format_summary(result.summary))
    print(f"results:  {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
