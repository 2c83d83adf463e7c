"""A tiered market at 10^5-10^6 traders: do the layers emerge from local trade at scale?

The network (a Parquet edge list written here; agent ``i`` is node ``i``) has four tiers:
grain **producers** (endowed with grain, wanting money) each tied to one **local
trader**; local traders each tied to one of a few **hubs**, and hubs tied to each other
(a ring with chords); **consumers** (endowed with money, wanting grain) each tied to one
local trader. Nobody is told a role: producers and consumers never meet, so every unit of
grain that is consumed passes through local traders and hubs, if trade finds the way. The
roles, layers, throughput and profit by layer are measured by ``tatonnet --trade`` from
the per-edge accounts, and its ``layers.png`` (per-layer aggregates at this size) is the
figure. Runs in this process and on two Ray trade workers; time and peak memory of every
process (:class:`common.MemorySampler`).

    .venv/bin/python benchmarks/trade_layers_scale.py                    # 10^5, ~5 min
    .venv/bin/python benchmarks/trade_layers_scale.py --agents 1000000 --engines in-process
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import RESULTS, ROOT, git_info, load_average, machine_info, run_tatonnet, write_report

PYTHON = sys.executable
ENGINES = {"in-process": ["--workers", "0"], "ray-2": ["--workers", "2"]}
#: share of the agents in each tier (hubs: a fixed count)
TIERS = {"producers": 0.45, "local": 0.09, "consumers": 0.45}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tier_counts(n: int, hubs: int) -> dict[str, int]:
    producers = int(n * TIERS["producers"])
    local = int(n * TIERS["local"])
    return {"hubs": hubs, "local": local, "producers": producers,
            "consumers": n - hubs - local - producers}  # fmt: skip


def write_market(folder: Path, n: int, hubs: int, seed: int, rounds: int) -> Path:
    """The edge list and the scenario of an ``n``-agent tiered market; returns the TOML."""
    c = tier_counts(n, hubs)
    rng = np.random.default_rng(seed)
    h0, l0 = 0, c["hubs"]
    p0 = l0 + c["local"]
    q0 = p0 + c["producers"]
    hub = np.arange(hubs)
    chords = rng.integers(0, hubs, (hubs, 3))
    hub_edges = [np.c_[hub, (hub + 1) % hubs], np.c_[np.repeat(hub, 3), chords.ravel()]]
    local = l0 + np.arange(c["local"])
    local_edges = np.c_[local, h0 + rng.integers(0, hubs, local.size)]
    prod = p0 + np.arange(c["producers"])
    cons = q0 + np.arange(c["consumers"])
    periphery = [np.c_[prod, l0 + rng.integers(0, c["local"], prod.size)],
                 np.c_[cons, l0 + rng.integers(0, c["local"], cons.size)]]  # fmt: skip
    edges = np.concatenate([*hub_edges, local_edges, *periphery])
    edges = edges[edges[:, 0] != edges[:, 1]]
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    pq.write_table(pa.table({"source": edges[:, 0], "target": edges[:, 1]}),
                   folder / "tiers.parquet")  # fmt: skip
    toml = f"""name = "trade-tiers"
description = "Tiered market ({n} agents): producers and consumers tied to local traders, local traders to hubs"
seed = {seed}
goods = ["money", "grain"]
numeraire = 0

[[agents]]
name = "hubs"
count = {c["hubs"]}
utility = "cobb-douglas"
shares = [0.5, 0.5]
endowment = [1.0, 0.0]

[[agents]]
name = "local"
count = {c["local"]}
utility = "cobb-douglas"
shares = [0.5, 0.5]
endowment = [1.0, 0.0]

[[agents]]
name = "producers"
count = {c["producers"]}
utility = "cobb-douglas"
shares = [0.9, 0.1]
endowment = [0.01, 5.0]

[[agents]]
name = "consumers"
count = {c["consumers"]}
utility = "linear"
shares = {{ distribution = "uniform", low = 0.1, high = 1.0 }}
endowment = [5.0, 0.0]

[network]
kind = "file"
path = "tiers.parquet"
placement = "ordered"
order = "generator"

[trade]
rounds = {rounds}
medium = "numeraire"
"""
    path = folder / "trade-tiers.toml"
    path.write_text(toml)
    return path


def run_trade(scenario: Path, engine: list[str], out: Path) -> dict:
    s, wall, sampler = run_tatonnet(["--trade", "--scenario", scenario, *engine], out)
    return {"command_wall_s": wall, "setup_s": s["setup_seconds"],
            "round_s": s["round_seconds"], "peak_pss_sum_bytes": sampler.peak_pss_kib * 1024,
            "engine": s["engine"], "rounds": s["rounds"], "trades": s["trades"],
            "roles": s["roles"], "profit_by_layer": s["profit_by_layer"],
            "mean_hops_per_good": s["mean_hops_per_good"],
            "intermediary_share": s["intermediary_share"]}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--hubs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "trade-tiers-layers.png")
    parser.add_argument("--out", type=Path, default=RESULTS / "trade_layers_scale.json")
    args = parser.parse_args(argv)
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": machine_info(), "git": git_info(), "agents": args.agents,
              "tiers": tier_counts(args.agents, args.hubs), "rounds": args.rounds,
              "command": " ".join(["benchmarks/trade_layers_scale.py", *(argv or sys.argv[1:])]),
              "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="trade-tiers-") as tmp:
        scenario = write_market(Path(tmp), args.agents, args.hubs, args.seed, args.rounds)
        for e in args.engines:
            log(f"{args.agents:,} agents: {e} (load {load_average()})")
            out = Path(tmp) / e
            report["runs"][e] = run_trade(scenario, ENGINES[e], out)
            if e == args.engines[0]:
                shutil.copy(out / "layers.png", args.figure)
        first = next(iter(report["runs"].values()))
        report["same_results"] = all(
            r["profit_by_layer"] == first["profit_by_layer"] and r["roles"] == first["roles"]
            for r in report["runs"].values()
        )
    write_report(args.out, report)
    for e, r in report["runs"].items():
        log(f"{e}: set-up {r['setup_s']:.1f} s, {r['rounds']} rounds {r['round_s']:.1f} s, "
            f"peak PSS {r['peak_pss_sum_bytes'] / 2**30:.2f} GiB, roles {r['roles']}")  # fmt: skip
    print(json.dumps({k: first[k] for k in ("roles", "profit_by_layer")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
