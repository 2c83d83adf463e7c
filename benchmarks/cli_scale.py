"""Scaling of whole ``tatonnet`` runs: shard-built economies, in-process against Ray.

Every configuration is one ``tatonnet`` subprocess of the default scenario with ``--builder
shards --no-reference`` (so set-up is the shards drawing their own agents and graph rows),
watched by :class:`common.MemorySampler` (PSS summed over the command and every process it
started, Ray's included). Its ``summary.json`` gives set-up seconds (scenario to first
round) and round seconds; the rate is agents x rounds / round seconds (every round, the
first included, so that engines that run rounds in batches count the same); the first
configuration's prices are the reference every other one must equal bit for bit (the
record says whether it does).

Modes (each writes ``<out>.json`` and ``<out>.md`` after every configuration, so a run cut
short by a time limit still leaves what it measured):

* ``--strong``: ``--n`` agents (default 10^7); ``inproc-Ct`` (all C cores), ``inproc-1t``,
  ``ray-Kx1`` for each K in ``--workers`` and ``ray-1xC`` (the one-worker runs join a
  loopback Ray head started for them, :func:`loopback_head`). Strong efficiency
  ``E_K = rate(ray-Kx1) / (K * rate(inproc-1t))``; ``vs inproc`` = rate / rate(inproc-Ct).
* ``--weak``: ``K * --per-worker`` agents (default 2.5x10^6) for each K: ``inproc-Ct`` and
  ``ray-Kx1`` at that size; ``inproc-1t`` at ``--per-worker``. Weak efficiency
  ``E_K = rate(ray-Kx1 at K N0) / (K * rate(inproc-1t at N0))``.
* ``--largest N1,N2,...``: ``inproc-Ct`` at each size in turn, 3 rounds, until one fails
  or would not fit (estimated from the last size's peak PSS per agent and
  ``MemAvailable``): the largest economy this machine runs.

``--budget-s`` stops starting new configurations once that many seconds have passed
(they are recorded as skipped): a fixed-length slot on a lent machine ends with results.

    .venv/bin/python benchmarks/cli_scale.py --strong --n 300000 --workers 1,2 --rounds 5
    bash benchmarks/device_scale.sh cli OUTDIR      # the 16-core device machine

Configurations run once each (``--repeats`` for medians, interleaved A B A B).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, git_info, load_average, machine_info, write_report
from shard_build import run_cli


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def base_args(n: int, rounds: int) -> list[str]:
    return ["--agents", str(n), "--rounds", str(rounds), "--builder", "shards",
            "--no-reference"]  # fmt: skip


def engine_args(name: str, cores: int, head: str | None = None) -> list[str]:
    """``inproc-Ct`` / ``inproc-1t`` / ``ray-KxT`` as command-line options (``ray-1xT``:
    ``--address`` of the loopback head, since ``--workers 1`` alone is an in-process shard)."""
    if name.startswith("inproc-"):
        threads = cores if name == "inproc-Ct" else 1
        return ["--workers", "0", "--threads", str(threads)]
    workers, threads = name.removeprefix("ray-").split("x")
    threads = str(cores) if threads == "C" else threads
    where = ["--address", head] if workers == "1" else []
    return ["--workers", workers, "--threads", threads, *where]


@contextlib.contextmanager
def loopback_head(cpus: int):
    """A one-node Ray on 127.0.0.1 for the one-worker runs (``--address``); token auth is
    off for it (loopback only, as the CI's test cluster), and it is stopped by its process
    group. Its raylet and worker are not children of the command: their memory is not in
    that run's PSS."""
    tmp = Path(tempfile.mkdtemp(prefix="tatonnet-cli-scale-ray-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    cmd = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; "
           "sys.argv[0] = 'ray'; main()", "start", "--head", "--node-ip-address=127.0.0.1",
           f"--port={port}", f"--num-cpus={cpus}", f"--temp-dir={tmp}", "--block",
           "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    log_file = (tmp / "head.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"the loopback Ray head did not start (log: {tmp}/head.log)")
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the commands join it without a token
        yield f"127.0.0.1:{port}"
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log_file.close()
        shutil.rmtree(tmp, ignore_errors=True)


class Plan:
    """Runs configurations in order under a time budget, writing results after each."""

    def __init__(self, args, report: dict, workdir: Path):
        self.args, self.report, self.workdir = args, report, workdir
        self.t0 = time.perf_counter()
        self.cores = usable_cores()
        self.head: str | None = None  # a loopback Ray for the ray-1xT runs

    def over_budget(self) -> bool:
        return self.args.budget_s is not None and time.perf_counter() - self.t0 > self.args.budget_s

    def run(self, section: str, key: str, n: int, name: str, rounds: int) -> dict | None:
        rows = self.report.setdefault(section, {})
        if self.over_budget():
            rows[key] = {"n": n, "config": name, "skipped": "time budget"}
            return None
        args = [*base_args(n, rounds), *engine_args(name, self.cores, self.head)]
        runs = []
        for r in range(self.args.repeats):
            log(f"{section} {key}: {n:,} agents, repeat {r + 1}/{self.args.repeats} "
                f"(load {load_average()})")  # fmt: skip
            try:
                runs.append(run_cli(args, self.workdir))
            except RuntimeError as exc:
                rows[key] = {"n": n, "config": name, "args": args, "failed": str(exc)[-400:]}
                self.save()
                return None
        # every round over the round seconds (the first included: a batched engine runs a
        # first batch with it, and the summary's rate then has few or no timed rounds left)
        rate = statistics.median(x["n_agents"] * x["rounds"] / x["round_s"] for x in runs)
        rows[key] = {
            "n": n, "config": name, "args": args, "rounds": rounds,
            "setup_s": statistics.median(x["setup_s"] for x in runs),
            "round_s": statistics.median(x["round_s"] for x in runs),
            "command_wall_s": statistics.median(x["command_wall_s"] for x in runs),
            "agent_rounds_per_s": rate,
            "summary_agent_rounds_per_s": [x["agent_rounds_per_s"] for x in runs],
            "peak_pss_sum_bytes": max(x["peak_pss_sum_bytes"] for x in runs),
            "bytes_per_agent": max(x["peak_pss_sum_bytes"] for x in runs) / n,
            "engine": runs[0]["engine"], "status": runs[0]["status"],
            "prices": runs[0]["prices"],
            "peak_rss_by_process": runs[0]["peak_rss_by_process"],
            "runs": runs,
        }  # fmt: skip
        self.save()
        return rows[key]

    def save(self) -> None:
        self.report["elapsed_s"] = time.perf_counter() - self.t0
        self.report["load_average_end"] = load_average()
        write_report(f"{self.args.out}.json", self.report, f"{self.args.out}.md",
                     markdown(self.report))  # fmt: skip


def same_prices(rows: dict) -> None:
    """Mark each row with whether its prices equal the first row's of the same size."""
    first: dict[int, list] = {}
    for row in rows.values():
        if "prices" in row:
            ref = first.setdefault(row["n"], row["prices"])
            row["same_prices"] = row["prices"] == ref


def strong(plan: Plan, ks: list[int]) -> None:
    n, rounds = plan.args.n, plan.args.rounds
    for name in ("inproc-Ct", "inproc-1t", *(f"ray-{k}x1" for k in ks if k > 1)):
        plan.run("strong", name, n, name, rounds)
    ones = [f"ray-1x{t}" for t in ("1" if 1 in ks else None, "C") if t]
    if not plan.over_budget():
        with loopback_head(plan.cores) as plan.head:
            for name in ones:
                plan.run("strong", name, n, name, rounds)
        plan.head = None
    rows = plan.report["strong"]
    serial = rows.get("inproc-1t", {}).get("agent_rounds_per_s")
    full = rows.get("inproc-Ct", {}).get("agent_rounds_per_s")
    for name, row in rows.items():
        rate = row.get("agent_rounds_per_s")
        if rate is None:
            continue
        k = int(name.removeprefix("ray-").split("x")[0]) if name.endswith("x1") else None
        row["vs_inproc"] = rate / full if full else None
        row["efficiency"] = rate / (k * serial) if k and serial else None
    same_prices(rows)
    plan.save()


def weak(plan: Plan, ks: list[int]) -> None:
    n0, rounds = plan.args.per_worker, plan.args.rounds
    plan.run("weak", "inproc-1t@1", n0, "inproc-1t", rounds)
    for k in ks:
        plan.run("weak", f"inproc-Ct@{k}", k * n0, "inproc-Ct", rounds)
        if k > 1:
            plan.run("weak", f"ray-{k}x1@{k}", k * n0, f"ray-{k}x1", rounds)
        elif not plan.over_budget():
            with loopback_head(plan.cores) as plan.head:
                plan.run("weak", "ray-1x1@1", n0, "ray-1x1", rounds)
            plan.head = None
    rows = plan.report["weak"]
    serial = rows.get("inproc-1t@1", {}).get("agent_rounds_per_s")
    for key, row in rows.items():
        k = int(key.split("@")[1])
        rate = row.get("agent_rounds_per_s")
        if rate is not None and key.startswith("ray-") and serial:
            row["efficiency"] = rate / (k * serial)
            full = rows.get(f"inproc-Ct@{k}", {}).get("agent_rounds_per_s")
            row["vs_inproc"] = rate / full if full else None
    same_prices(rows)
    plan.save()


def largest(plan: Plan, sizes: list[int]) -> None:
    per_agent = None
    for n in sizes:
        if per_agent is not None and per_agent * n > 0.9 * mem_available_bytes():
            plan.report.setdefault("largest", {})[str(n)] = {
                "n": n, "skipped": f"estimated {per_agent * n / 2**30:.1f} GiB > 90% of "
                f"MemAvailable {mem_available_bytes() / 2**30:.1f} GiB"}  # fmt: skip
            plan.save()
            break
        row = plan.run("largest", str(n), n, "inproc-Ct", 3)
        if row is None:
            break
        per_agent = row["bytes_per_agent"]


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict) -> str:
    lines = [f"# tatonnet runs at scale ({report['date']})", "",
             f"`{report['command']}`", "",
             f"Machine: {report['machine'].get('cpu_model')}, "
             f"{report['machine'].get('usable_cores')} usable cores, "
             f"{report['machine'].get('memory_total_gib')} GiB.", ""]  # fmt: skip
    head = ("| config | agents | set-up s | rounds s | M agent-rounds/s | vs inproc | "
            "efficiency | peak PSS GiB | B/agent | same prices |")  # fmt: skip
    for section in ("strong", "weak", "largest"):
        rows = report.get(section)
        if not rows:
            continue
        lines += [f"## {section}", "", head, "|" + "---|" * 10]
        for key, row in rows.items():
            if "agent_rounds_per_s" not in row:
                why = row.get("skipped") or row.get("failed", "")
                lines.append(f"| {key} | {row['n']:,} | {why} |" + " |" * 7)
                continue
            lines.append(
                f"| {key} | {row['n']:,} | {row['setup_s']:.1f} | {row['round_s']:.2f} | "
                f"{row['agent_rounds_per_s'] / 1e6:.2f} | {fmt(row.get('vs_inproc'), '.2f')} | "
                f"{fmt(row.get('efficiency'), '.2f')} | "
                f"{row['peak_pss_sum_bytes'] / 2**30:.2f} | {row['bytes_per_agent']:.0f} | "
                f"{row.get('same_prices', '-')} |"
            )
        lines.append("")
    return "\n".join(lines)


def ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strong", action="store_true")
    ap.add_argument("--weak", action="store_true")
    ap.add_argument("--largest", type=ints, default=None, metavar="N1,N2,...")
    ap.add_argument("--n", type=lambda s: int(float(s)), default=10_000_000)
    ap.add_argument("--per-worker", type=lambda s: int(float(s)), default=2_500_000)
    ap.add_argument("--workers", type=ints, default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--out", default=str(RESULTS / "cli_scale"))
    args = ap.parse_args(argv)
    if not (args.strong or args.weak or args.largest):
        ap.error("give --strong, --weak and/or --largest")
    report = {
        "benchmark": "cli_scale",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "git": git_info(),
        "load_average_start": load_average(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="tatonnet-cli-scale-"))
    plan = Plan(args, report, workdir)
    try:
        if args.strong:
            strong(plan, args.workers)
        if args.weak:
            weak(plan, args.workers)
        if args.largest:
            largest(plan, args.largest)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        plan.save()
    print(markdown(report))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
