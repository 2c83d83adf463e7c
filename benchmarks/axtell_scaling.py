"""Axtell (2005), "The complexity of exchange": interactions to reach Pareto optimality.

Random bilateral barter (:mod:`tatonnet.environment.trade.bilateral`) on a complete graph of ``N``
Cobb–Douglas agents with ``g`` goods (shares ~ Dirichlet(1), endowments ~ U(0.5, 1.5)).
Each round a seeded random matching pairs agents; every meeting is one *interaction*.
**Stopping test** (Pareto optimality of an interior Cobb–Douglas allocation): all agents'
MRS agree, here ``max_k (max_i log MRS_ik - min_i log MRS_ik) < eps`` (eps = 0.05),
checked after every round. We count the interactions (meetings, executed or not) until
then and fit, by least squares on logs over every run,

    log I = c + a log N + b log g     (joint fit), and log I = c_g + a_g log N per g,

reporting standard errors (the seeds give the scatter), and the same joint fit on the
executed trades alone (Axtell's own code counts an interaction only when an exchange
happens).

**Two protocols** for the goods a meeting trades (``--pair``; ``[trade] pair`` in a
scenario): ``largest-gap`` (the ordered pair of goods with the largest log-MRS gap) and
``random`` (Axtell's: one pair of goods drawn uniformly per meeting, no trade if the two
MRS of that pair agree; :func:`tatonnet.environment.trade.bilateral.drawn_goods`). Both
are reported side by side with :data:`PAPER`, the result Axtell states.

Run: ``python benchmarks/axtell_scaling.py [--quick] [--pair largest-gap|random|both]``;
writes ``benchmarks/results/axtell_scaling.{json,md}`` (one protocol alone:
``axtell_scaling_<pair>.{json,md}``). About 4 minutes here (2 shared cores), most of it
``random``.
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
PAIRS = ("largest-gap", "random")
#: Axtell's result, the comparison column (the exponents of I ~ N^a g^b).
PAPER = {
    "source": "Axtell (2005), 'The complexity of exchange', Economic Journal 115(504): "
    "F193-F210, doi:10.1111/j.1468-0297.2005.01001.x",
    "statement": "the number of interactions bilateral exchange needs to reach a "
    "Pareto-optimal allocation grows linearly in the number of agents and at most "
    "quadratically in the number of goods",
    "exponent_n": 1.0,
    "exponent_g_at_most": 2.0,
}


def one_run(n: int, g: int, seed: int, pair: str = "largest-gap", max_rounds: int = 100_000):
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n, g)))
    economy = Economy(
        rng.uniform(0.5, 1.5, (n, g)), rng.dirichlet(np.ones(g), n),
        np.full(n, 1, np.int8), np.ones(n),
    )  # fmt: skip
    network = build_network("complete", n, seed)
    t0 = time.perf_counter()
    config = tr.TradeConfig(seed=seed, pair=pair)
    run = tr.run_trade(economy, network, config, max_rounds, tol=EPS)
    return {
        "n": n, "g": g, "seed": seed, "pair": pair, "converged": run.converged,
        "rounds": run.rounds, "interactions": int(run.metrics["pairs"].sum()),
        "trades": int(run.metrics["trades"].sum()),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def fit(rows: list[dict], columns: list[str], y: str = "interactions") -> dict:
    """Least squares of log ``y`` on [1, log columns...]; estimates and std errors."""
    target = np.log([r[y] for r in rows])
    X = np.column_stack([np.ones(len(rows))] + [np.log([r[c] for r in rows]) for c in columns])
    beta, *_ = np.linalg.lstsq(X, target, rcond=None)
    resid = target - X @ beta
    dof = max(1, len(rows) - X.shape[1])
    cov = (resid @ resid / dof) * np.linalg.inv(X.T @ X)
    se = np.sqrt(np.diag(cov))
    return {
        name: {"estimate": float(b), "stderr": float(s)}
        for name, b, s in zip(["const", *columns], beta, se, strict=True)
    }


def study(pair: str, sizes: list[int], goods: list[int], seeds: range) -> dict:
    """Every (g, N, seed) run under one protocol, and the fits over the converged runs."""
    t0 = time.perf_counter()
    rows = [one_run(n, g, s, pair) for g in goods for n in sizes for s in seeds]
    ok = [r for r in rows if r["converged"]]
    return {
        "not_converged": len(rows) - len(ok), "runs": rows,
        "joint_fit": fit(ok, ["n", "g"]),
        "joint_fit_trades": fit(ok, ["n", "g"], "trades"),
        "per_goods_fit": {str(g): fit([r for r in ok if r["g"] == g], ["n"]) for g in goods},
        "per_size_fit": {str(n): fit([r for r in ok if r["n"] == n], ["g"]) for n in sizes},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def _est(f: dict, name: str) -> str:
    return f"{f[name]['estimate']:.2f} ± {f[name]['stderr']:.2f}"


def _row(label: str, paper: str, cells: list[str]) -> str:
    return f"| {label} | {paper} | " + " | ".join(cells) + " |"


def report(result: dict, command: str) -> str:
    """The markdown page: the protocols side by side with the paper's result."""
    runs = result["protocols"]
    pairs = list(runs)
    sizes, goods = result["sizes"], result["goods"]
    total = len(sizes) * len(goods) * result["seeds"]
    cols = " | ".join(f"`{p}`" for p in pairs)
    rule = "|---" * (len(pairs) + 1) + "|"
    timing = ", ".join(f"`{p}` {runs[p]['seconds']:.0f} s" for p in pairs)
    lines = [
        "# Axtell-style scaling: interactions to Pareto optimality (complete graph)",
        "",
        f"Stopping test: log-MRS spread < {result['eps']}; {result['seeds']} seeds per cell; "
        f"N = {', '.join(map(str, sizes))}; g = {', '.join(map(str, goods))}. "
        f"Command: `{command}` ({result['seconds']:.0f} s: {timing}).",
        "",
        f"Paper ({PAPER['source']}): {PAPER['statement']}, i.e. N^1 and at most g^2.",
        "Interactions = meetings (matched pairs, traded or not); trades = executed ones.",
        "",
        f"| joint fit I ~ N^a g^b | paper | {cols} |",
        "|---" + rule,
        _row("a (exponent in N), interactions", "1", [_est(runs[p]["joint_fit"], "n")
                                                      for p in pairs]),
        _row("b (exponent in g), interactions", "<= 2", [_est(runs[p]["joint_fit"], "g")
                                                         for p in pairs]),
        _row("a, trades", "", [_est(runs[p]["joint_fit_trades"], "n") for p in pairs]),
        _row("b, trades", "", [_est(runs[p]["joint_fit_trades"], "g") for p in pairs]),
        _row("runs that met the test", "", [f"{total - runs[p]['not_converged']} of {total}"
                                            for p in pairs]),
        "",
        "Exponent in N per number of goods:",
        "",
        f"| goods g | {cols} |",
        rule,
    ]  # fmt: skip
    for g in map(str, goods):
        cells = [_est(runs[p]["per_goods_fit"][g], "n") for p in pairs]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += ["", "Exponent in g per number of agents:", "", f"| agents N | {cols} |", rule]
    for n in map(str, sizes):
        cells = [_est(runs[p]["per_size_fit"][n], "g") for p in pairs]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for p in pairs:
        lines += ["", f"Median interactions (rounds), `{p}`:", "",
                  "| N \\ g | " + " | ".join(map(str, goods)) + " |",
                  "|---" * (len(goods) + 1) + "|"]  # fmt: skip
        for n in sizes:
            cells = []
            for g in goods:
                cell = [r for r in runs[p]["runs"] if r["n"] == n and r["g"] == g]
                cells.append(f"{np.median([r['interactions'] for r in cell]):.0f} "
                             f"({np.median([r['rounds'] for r in cell]):.0f})")  # fmt: skip
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (a smoke run)")
    parser.add_argument("--pair", choices=[*PAIRS, "both"], default="both",
                        help="the goods a meeting trades (default: both protocols)")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [20, 40] if args.quick else [25, 50, 100, 200, 400]
    goods = [2, 3] if args.quick else [2, 3, 5, 8]
    seeds = range(2 if args.quick else 5)
    pairs = PAIRS if args.pair == "both" else (args.pair,)
    t0 = time.perf_counter()
    protocols = {p: study(p, sizes, goods, seeds) for p in pairs}
    result = {
        "eps": EPS, "sizes": sizes, "goods": goods, "seeds": len(seeds), "paper": PAPER,
        "protocols": protocols, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    suffix = ("_quick" if args.quick else "") + ("" if args.pair == "both" else f"_{args.pair}")
    command = "python benchmarks/axtell_scaling.py" + (" --quick" if args.quick else "")
    command += "" if args.pair == "both" else f" --pair {args.pair}"
    text = report(result, command)
    name = f"axtell_scaling{suffix}"
    write_report(RESULTS / f"{name}.json", result, RESULTS / f"{name}.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
