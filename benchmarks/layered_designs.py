#!/usr/bin/env python
"""The layered market's two designs on scarf, scarf-variant, ces-substitutes, cobb-douglas.

One study cell (:func:`tatonnet.studies.grid.run_cell`) per (scenario, mode, column): the
``kernel`` design (market ``layered``: the multiplicative rule on the book signal) at three
inventory gains, and the ``books`` design (market ``layered-books``) with each merchant
rule at two steps (broyden is the cell rule ``newton``), and broyden with a larger
inventory gain. Modes: ``central`` (one merchant) and the scenario's own network, both at
``--agents`` agents (about sqrt(n)/2 merchants on the network). Each cell prints its
status and, converged, the *market days* it took (extragradient trades two days a round).
Writes ``benchmarks/results/layered_designs.{json,md}``.

    .venv/bin/python benchmarks/layered_designs.py [--agents 2000] [--rounds 3000]
"""

from __future__ import annotations

import argparse
import time

from common import RESULTS, git_info, machine_info, write_report

from tatonnet.studies.grid import Cell, run_cell

SCENARIOS = ("scarf", "scarf-variant", "ces-substitutes", "cobb-douglas")

#: (label, market, rule, step, market hyperparameters, market days per round)
COLUMNS = [
    ("kernel ig=0.01", "layered", "multiplicative", 0.05, {"market.inventory_gain": 0.01}, 1),
    ("kernel ig=0.1", "layered", "multiplicative", 0.05, {}, 1),
    ("kernel ig=1", "layered", "multiplicative", 0.05, {"market.inventory_gain": 1.0}, 1),
    ("optimistic 0.05", "layered-books", "optimistic", 0.05, {}, 1),
    ("optimistic 0.2", "layered-books", "optimistic", 0.2, {}, 1),
    ("extragradient 0.1", "layered-books", "extragradient", 0.1, {}, 2),
    ("extragradient 0.5", "layered-books", "extragradient", 0.5, {}, 2),
    ("broyden 0.5", "layered-books", "newton", 0.5, {}, 1),
    ("broyden 1", "layered-books", "newton", 1.0, {}, 1),
    ("broyden 0.5 ig=1", "layered-books", "newton", 0.5, {"market.inventory_gain": 1.0}, 1),
]

SHORT = {"converged": "", "diverged": "div", "cycling": "cyc", "max_rounds": "max",
         "stalled": "stall", "numerical_error": "nan", "skipped": "skip"}  # fmt: skip


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--tol", type=float, default=1e-8)
    args = ap.parse_args(argv)
    rows, t0 = [], time.perf_counter()
    for scenario in SCENARIOS:
        for graph in ("central", "scenario"):
            for label, market, rule, step, hyper, per_round in COLUMNS:
                cell = Cell(0, "designs", scenario, graph, args.agents, market, rule, step,
                            tuple(sorted(hyper.items())), 0, args.rounds, args.tol,
                            "tracking")  # fmt: skip
                row = run_cell(cell)["row"]
                days = row["rounds"] * per_round
                rows.append({
                    "scenario": scenario, "mode": row["mode"], "graph": row["graph"],
                    "column": label, "status": row["status"], "rounds": row["rounds"],
                    "days": days, "excess_demand": row["excess_demand"],
                    "price_dispersion": row["price_dispersion"], "evidence": row["evidence"],
                    "reason": row.get("reason", ""),
                })  # fmt: skip
                print(f"{scenario:16s} {row['graph']:12s} {label:18s} {row['status']:15s}"
                      f" days={days:5d} excess={row['excess_demand']:.2g}", flush=True)  # fmt: skip
    labels = [c[0] for c in COLUMNS]
    lines = [
        f"Layered market, two designs: market days to excess demand and inventory gap < "
        f"{args.tol:g} ({args.agents} agents, at most {args.rounds} rounds; 'div' diverged, "
        "'cyc' cycling, 'max' round budget spent, 'nan' numerical error).",
        "",
        "| scenario | mode | " + " | ".join(labels) + " |",
        "| --- | --- |" + " --- |" * len(labels),
    ]
    for scenario in SCENARIOS:
        for mode in ("central", "network"):
            cells = [r for r in rows if r["scenario"] == scenario and r["mode"] == mode]
            graph = cells[0]["graph"]
            shown = [SHORT.get(r["status"], r["status"]) or str(r["days"]) for r in cells]
            lines.append(f"| {scenario} | {mode if mode == 'central' else graph} | "
                         + " | ".join(shown) + " |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    report = {"agents": args.agents, "rounds": args.rounds, "tol": args.tol, "rows": rows,
              "seconds": time.perf_counter() - t0, "machine": machine_info(),
              "git": git_info()}  # fmt: skip
    write_report(RESULTS / "layered_designs.json", report, RESULTS / "layered_designs.md", text)


if __name__ == "__main__":
    main()
