"""Shard-built economies: set-up time and peak memory of whole runs, by command line.

Every configuration is one ``tatonnet`` subprocess (``--quiet``, ``--out`` a fresh folder),
repeats interleaved (A B A B ...), medians reported; its ``summary.json`` gives the set-up
seconds (scenario to first round) and round seconds, and a sampler reads the proportional
set size (PSS, ``/proc/<pid>/smaps_rollup``: shared pages split between their users, so
the sum over processes counts Ray's object store once) of the command and every process
it started (Ray's workers, raylet, GCS, ...) every 0.2 s: the peak of the sum over all
processes, and each process's own peak RSS (``VmHWM``, read at the last sample).

Part 1, set-up (``--setup-agents``, default 10^6; 2 rounds, ``--no-reference``): the
default scenario with ``--builder driver`` (networkx, one process) and ``--builder
shards`` (in-process engine).

Part 2, end to end (``--large-agents``, default 10^7; ``--large-rounds`` 20, output
written): ``--builder shards`` in-process and on two Ray workers of 1 thread (a local Ray;
the driver then holds no agent rows); with the reference equilibrium solve (its seconds reported
separately) unless ``--no-reference``.

    .venv/bin/python benchmarks/shard_build.py            # ~25 min on the 2-core machine
    .venv/bin/python benchmarks/shard_build.py --quick    # 10^5 / 3x10^5 agents, ~2 min
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    RESULTS,
    git_info,
    load_average,
    machine_info,
    run_tatonnet,
    write_report,
)

PYTHON = sys.executable


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_cli(args: list[str], workdir: Path) -> dict:
    """One ``tatonnet`` run; its summary, wall time and memory."""
    out = workdir / f"run-{time.time_ns()}"
    summary, wall, sampler = run_tatonnet(args, out)
    shutil.rmtree(out)
    top = sorted(sampler.peak_rss_kib.items(), key=lambda kv: -kv[1])
    return {
        "command_wall_s": wall,
        "setup_s": summary["setup_seconds"],
        "round_s": summary["round_seconds"],
        "reference_s": summary.get("reference_seconds"),
        "agent_rounds_per_s": summary["agent_rounds_per_second"],
        "rounds": summary["rounds"],
        "n_agents": summary["n_agents"],
        "engine": summary["engine"],
        "peak_pss_sum_bytes": sampler.peak_pss_kib * 1024,
        "peak_rss_by_process": [
            {"name": sampler.names.get(pid, "?"), "bytes": kib * 1024} for pid, kib in top[:8]
        ],
        "prices": summary["prices"],
        "status": summary["status"],
    }


def measure(configs: dict[str, list[str]], repeats: int, workdir: Path) -> dict:
    runs = {name: [] for name in configs}
    for r in range(repeats):
        for name, args in configs.items():
            log(f"  repeat {r + 1}/{repeats}: {name} (load {load_average()})")
            runs[name].append(run_cli(args, workdir))
    out = {}
    for name, rs in runs.items():

        def med(key, rs=rs):
            return statistics.median(x[key] for x in rs if x[key] is not None)

        out[name] = {
            "args": configs[name],
            "median": {k: med(k) for k in ("command_wall_s", "setup_s", "round_s",
                                             "agent_rounds_per_s", "peak_pss_sum_bytes")},
            "runs": rs,
        }  # fmt: skip
        if all(x["reference_s"] is not None for x in rs):
            out[name]["median"]["reference_s"] = med("reference_s")
    first = next(iter(runs.values()))[0]["prices"]
    same = {name: all(x["prices"] == first for x in rs) for name, rs in runs.items()}
    return {"configs": out, "same_prices_as_first": same}


def table(part: dict, n: int) -> str:
    lines = [f"{'config':>16} {'set-up s':>9} {'rounds s':>9} {'ref s':>7} {'wall s':>8} "
             f"{'peak PSS':>10} {'B/agent':>8}"]  # fmt: skip
    for name, c in part["configs"].items():
        m = c["median"]
        ref = m.get("reference_s")
        lines.append(
            f"{name:>16} {m['setup_s']:9.2f} {m['round_s']:9.2f} "
            f"{'-' if ref is None else f'{ref:.1f}':>7} {m['command_wall_s']:8.1f} "
            f"{m['peak_pss_sum_bytes'] / 2**30:8.2f} G {m['peak_pss_sum_bytes'] / n:8.0f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup-agents", type=int, default=1_000_000)
    ap.add_argument("--large-agents", type=int, default=10_000_000)
    ap.add_argument("--large-rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-repeats", type=int, default=1)
    ap.add_argument("--no-reference", action="store_true", help="part 2 without the solve")
    ap.add_argument("--quick", action="store_true", help="10^5 / 3x10^5 agents, 1 repeat")
    ap.add_argument(
        "--parts",
        default="setup,large",
        help="which parts to run (a part not run keeps its figures in --out)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "shard_build.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.setup_agents, args.large_agents, args.repeats = 100_000, 300_000, 1
    n1, n2 = args.setup_agents, args.large_agents
    t_start = time.perf_counter()
    report = {
        "benchmark": "shard_build",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git_info(),
        "command": " ".join([Path(PYTHON).name, *sys.argv]),
    }
    parts = set(args.parts.split(","))
    if args.out.exists():  # parts not run this time keep their earlier figures
        old = json.loads(args.out.read_text())
        report.update({k: old[k] for k in ("setup", "large") if k in old and k not in parts})
    stamp = {"date": report["date"], "git": report["git"]}
    workdir = Path(tempfile.mkdtemp(prefix="tatonnet-shard-build-"))
    try:
        if "setup" in parts:
            run_setup(args, n1, workdir, report, stamp)
        if "large" in parts:
            run_large(args, n2, workdir, report, stamp)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["wall_s"] = time.perf_counter() - t_start
    report["load_average_end"] = load_average()
    write_report(args.out, report)
    log(f"wrote {args.out} ({report['wall_s']:.0f} s)")
    return 0


def run_setup(args, n1: int, workdir: Path, report: dict, stamp: dict) -> None:
    log(f"part 1: set-up at {n1:,} agents")
    base = ["--agents", str(n1), "--rounds", "2", "--no-reference", "--workers", "0"]
    setup = measure({"driver": [*base, "--builder", "driver"],
                     "shards": [*base, "--builder", "shards"]},
                    args.repeats, workdir)  # fmt: skip
    setup["n_agents"] = n1
    setup["note"] = "driver and shards draw different economies from one seed (by design)"
    report["setup"] = {**setup, **stamp}
    print(f"set-up, {n1:,} agents (medians of {args.repeats}):\n{table(setup, n1)}\n")


def run_large(args, n2: int, workdir: Path, report: dict, stamp: dict) -> None:
    log(f"part 2: end to end at {n2:,} agents")
    base = ["--agents", str(n2), "--rounds", str(args.large_rounds), "--builder", "shards"]
    if args.no_reference:
        base.append("--no-reference")
    large = measure({
        "in-process": [*base, "--workers", "0"],
        "ray-2x1": [*base, "--workers", "2", "--threads", "1"],
    }, args.large_repeats, workdir)  # fmt: skip
    large["n_agents"] = n2
    report["large"] = {**large, **stamp}
    print(f"end to end, {n2:,} agents, {args.large_rounds} rounds (medians of "
          f"{args.large_repeats}):\n{table(large, n2)}")  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
