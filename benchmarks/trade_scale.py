"""Bilateral trade at scale: trades and agent-rounds per second, and peak memory, by engine.

Every configuration is one ``tatonnet --trade`` subprocess on the ``cobb-douglas``
scenario (small world, Cobb–Douglas traders) with ``--agents N --rounds R``, in this
process (``--workers 0``) and on two Ray trade workers (``--workers 2``, a local Ray),
repeats interleaved (A B A B ...), medians reported. ``summary.json`` gives the set-up
seconds (scenario to first round), the round seconds and the trades; a sampler reads the
proportional set size of the command and every process it started (Ray's included) every
0.2 s (:class:`common.MemorySampler`): the peak of their sum, per agent.

    .venv/bin/python benchmarks/trade_scale.py                 # 10^4, 10^5, 10^6; ~25 min
    .venv/bin/python benchmarks/trade_scale.py --agents 10000 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, git_info, load_average, machine_info, run_tatonnet, write_report

PYTHON = sys.executable
ENGINES = {"in-process": ["--workers", "0"], "ray-2": ["--workers", "2"]}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_trade(n: int, rounds: int, engine: list[str], workdir: Path) -> dict:
    out = workdir / f"run-{time.time_ns()}"
    s, wall, sampler = run_tatonnet(["--trade", "--scenario", "cobb-douglas", "--agents", n,
                                     "--rounds", rounds, *engine], out)  # fmt: skip
    shutil.rmtree(out)
    return {
        "command_wall_s": wall,
        "setup_s": s["setup_seconds"],
        "round_s": s["round_seconds"],
        "trades": s["trades"],
        "trades_per_s": s["trades"] / s["round_seconds"],
        "agent_rounds_per_s": n * s["rounds"] / s["round_seconds"],
        "peak_pss_sum_bytes": sampler.peak_pss_kib * 1024,
        "engine": s["engine"],
        "pareto_gap": s["walras"]["pareto_gap"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--out", type=Path, default=RESULTS / "trade_scale.json")
    args = parser.parse_args(argv)
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": machine_info(), "git": git_info(), "rounds": args.rounds,
              "command": " ".join(["benchmarks/trade_scale.py", *(argv or sys.argv[1:])]),
              "sizes": {}}  # fmt: skip
    lines = [f"{'agents':>9} {'engine':>11} {'set-up s':>9} {'rounds s':>9} {'trades/s':>10} "
             f"{'agent-rounds/s':>15} {'peak PSS':>9} {'B/agent':>8}"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="trade-scale-") as tmp:
        for n in args.agents:
            runs = {e: [] for e in args.engines}
            for r in range(args.repeats):
                for e in args.engines:
                    log(f"{n:,} agents, repeat {r + 1}/{args.repeats}: {e} (load {load_average()})")
                    runs[e].append(run_trade(n, args.rounds, ENGINES[e], Path(tmp)))
            size = {}
            for e, rs in runs.items():
                med = {k: statistics.median(x[k] for x in rs) for k in rs[0]
                       if isinstance(rs[0][k], float | int)}  # fmt: skip
                size[e] = {"median": med, "runs": rs}
                lines.append(
                    f"{n:>9,} {e:>11} {med['setup_s']:9.2f} {med['round_s']:9.2f} "
                    f"{med['trades_per_s']:10,.0f} {med['agent_rounds_per_s']:15,.0f} "
                    f"{med['peak_pss_sum_bytes'] / 2**30:7.2f} G "
                    f"{med['peak_pss_sum_bytes'] / n:8,.0f}"
                )
            trades = {e: {x["trades"] for x in rs} for e, rs in runs.items()}
            size["same_trades"] = len(set().union(*trades.values())) == 1
            report["sizes"][str(n)] = size
    report["table"] = "\n".join(lines)
    write_report(args.out, report)
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
