"""Axtell (2005), "The complexity of exchange": interactions to reach Pareto optimality.

Random bilateral barter (:mod:`tatonnet.environment.trade.bilateral`) on a complete graph of ``N``
Cobb–Douglas agents with ``g`` goods (shares ~ Dirichlet(1), endowments ~ U(0.5, 1.5)).
Each round a seeded random matching pairs agents; every meeting is one *interaction*.
**Stopping test** (Pareto optimality of an interior Cobb–Douglas allocation): all agents'
MRS agree, here ``max_k (max_i log MRS_ik - min_i log MRS_ik) < eps`` (eps = 0.05),
checked after every round. We count the interactions (meetings, executed or not) until
then and fit, by least squares on logs over every run,

    log I = c + a log N + b log g     (joint fit), and log I = c_g + a_g log N per g,

reporting standard errors (the seeds give the scatter). Axtell's analysis puts the
interactions at about linear in N for his bilateral exchange process and polynomial in g.

Run: ``python benchmarks/axtell_scaling.py [--quick]``; writes
``benchmarks/results/axtell_scaling.{json,md}``. About 1-2 minutes here (2 shared cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import RESULTS, write_report

from tatonnet.environment.economy import Economy
from tatonnet.environment.network import build_network
from tatonnet.environment.trade import bilateral as tr

EPS = 0.05


def one_run(n: int, g: int, seed: int, max_rounds: int = 100_000) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n, g)))
    economy = Economy(
        rng.uniform(0.5, 1.5, (n, g)), rng.dirichlet(np.ones(g), n),
        np.full(n, 1, np.int8), np.ones(n),
    )  # fmt: skip
    network = build_network("complete", n, seed)
    t0 = time.perf_counter()
    run = tr.run_trade(economy, network, tr.TradeConfig(seed=seed), max_rounds, tol=EPS)
    return {
        "n": n, "g": g, "seed": seed, "converged": run.converged, "rounds": run.rounds,
        "interactions": int(run.metrics["pairs"].sum()),
        "trades": int(run.metrics["trades"].sum()),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def fit(rows: list[dict], columns: list[str]) -> dict:
    """Least squares of log interactions on [1, log columns...]; estimates and std errors."""
    y = np.log([r["interactions"] for r in rows])
    X = np.column_stack([np.ones(len(rows))] + [np.log([r[c] for r in rows]) for c in columns])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    dof = max(1, len(rows) - X.shape[1])
    cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
    se = np.sqrt(np.diag(cov))
    return {
        name: {"estimate": float(b), "stderr": float(s)}
        for name, b, s in zip(["const", *columns], beta, se, strict=True)
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (a smoke run)")
    args = parser.parse_args(argv)
    sizes = [20, 40] if args.quick else [25, 50, 100, 200, 400]
    goods = [2, 3] if args.quick else [2, 3, 5, 8]
    seeds = range(2 if args.quick else 5)
    t0 = time.perf_counter()
    rows = [one_run(n, g, s) for g in goods for n in sizes for s in seeds]
    bad = [r for r in rows if not r["converged"]]
    ok = [r for r in rows if r["converged"]]
    result = {
        "eps": EPS, "sizes": sizes, "goods": goods, "seeds": len(seeds),
        "not_converged": len(bad), "runs": rows,
        "joint_fit": fit(ok, ["n", "g"]),
        "per_goods_fit": {str(g): fit([r for r in ok if r["g"] == g], ["n"]) for g in goods},
        "per_size_fit": {str(n): fit([r for r in ok if r["n"] == n], ["g"]) for n in sizes},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    name = "axtell_scaling_quick" if args.quick else "axtell_scaling"
    j = result["joint_fit"]
    lines = [
        "# Axtell-style scaling: interactions to Pareto optimality (complete graph)",
        "",
        f"Stopping test: log-MRS spread < {EPS}; {len(seeds)} seeds per cell; "
        f"{len(bad)} of {len(rows)} runs did not meet it. Command: "
        f"`python benchmarks/axtell_scaling.py{' --quick' if args.quick else ''}` "
        f"({result['seconds']:.0f} s).",
        "",
        f"Joint fit: interactions ~ N^{j['n']['estimate']:.2f} (±{j['n']['stderr']:.2f}) "
        f"x g^{j['g']['estimate']:.2f} (±{j['g']['stderr']:.2f})",
        "",
        "| goods g | exponent in N | ± |",
        "|---|---|---|",
    ]
    for g, f in result["per_goods_fit"].items():
        lines.append(f"| {g} | {f['n']['estimate']:.2f} | {f['n']['stderr']:.2f} |")
    lines += ["", "| agents N | exponent in g | ± |", "|---|---|---|"]
    for n, f in result["per_size_fit"].items():
        lines.append(f"| {n} | {f['g']['estimate']:.2f} | {f['g']['stderr']:.2f} |")
    lines += ["", "Median interactions (rounds):", "", "| N \\ g | " + " | ".join(map(str, goods)) + " |",
              "|---" * (len(goods) + 1) + "|"]  # fmt: skip
    for n in sizes:
        cells = []
        for g in goods:
            cell = [r for r in rows if r["n"] == n and r["g"] == g]
            cells.append(f"{np.median([r['interactions'] for r in cell]):.0f} "
                         f"({np.median([r['rounds'] for r in cell]):.0f})")  # fmt: skip
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    write_report(RESULTS / f"{name}.json", result, RESULTS / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
