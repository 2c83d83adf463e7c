"""``tatonnet inspect RUN_DIR``: a finished result folder in the terminal, one agent, or exports.

tatonnet inspect runs/cd                     # status, convergence curve, price outliers
tatonnet inspect runs/cd --agent 17          # one agent: prices, holdings, neighbours
tatonnet inspect runs/cd --agent 17 --history   # ... and its prices per round (replay)
tatonnet inspect runs/cd --export out/ --format graphml,gexf,parquet
tatonnet inspect runs/trade-cp               # a --trade folder: roles, layers, hops, ...
tatonnet inspect runs/study-quick            # a study folder: cells per status, tables

Every kind of folder (tâtonnement run, trade run, study; the marker records which) is
opened, drawn and exported by :mod:`tatonnet.results.folders`.
"""

from __future__ import annotations

import argparse
import sys

from tatonnet.cli.parsing import EXIT_USAGE, OneLineParser
from tatonnet.results.export import FORMATS, ExportError
from tatonnet.results.folders import agent_text, export_folder, open_folder, summary_text


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="tatonnet inspect",
        description="Summarize a finished result folder (a run: status, convergence curve, "
        "price outliers; a --trade run: roles, layers, hops, concentration; a study: cells "
        "per status), one agent (--agent), or export it (--export).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a result folder written by tatonnet, tatonnet --trade or tatonnet study")  # fmt: skip
    p.add_argument("--agent", type=int, metavar="ID", help="show one agent")
    p.add_argument("--history", action="store_true",
                   help="with --agent: replay the run to show the agent's prices per round")  # fmt: skip
    p.add_argument("--top", type=int, default=5, metavar="K", help="price outliers shown (5)")
    p.add_argument("--width", type=int, default=60, help="columns of the text curves (60)")
    p.add_argument("--export", metavar="DIR", help="write exports of the run into DIR")
    p.add_argument("--format",
                   help=f"with --export: comma-separated, of {', '.join(FORMATS)} (default: all; "
                   "a study: parquet)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.top < 0 or args.width < 5:
            raise ExportError("--top must be >= 0 and --width >= 5")
        if args.history and args.agent is None:
            raise ExportError("--history needs --agent ID")
        run = open_folder(args.run_dir)
        if args.export:
            formats = None if args.format is None else [
                f.strip() for f in args.format.split(",") if f.strip()
            ]  # fmt: skip
            for path in export_folder(run, args.export, formats):
                print(f"wrote {path}")
            return 0
        if args.agent is not None:
            print(agent_text(run, args.agent, args.history, args.width))
        else:
            print(summary_text(run, args.top, args.width))
    except ExportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
