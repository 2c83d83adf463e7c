"""A market grown from 50 agents against the same market started at its final size.

For each size N and seed, the built-in ``cobb-douglas`` scenario (4 goods, unique
closed-form equilibrium) rescaled to N agents is run three ways, in this process, to
``tol`` (excess demand and price dispersion):

* ``grown``: ``[growth] start = 50``, then ``ceil((N - 50) / 20)`` agents join every 20
  rounds by preferential attachment with 3 links (everybody is in by round 400), and 1%
  of the start... no: no leaves (the pure growth case; see ``--churn``);
* ``at-once``: the scenario as it is (N agents from round 0, small world k = 10);
* ``at-once, grown graph``: N agents from round 0 on the grown run's final graph, so the
  graph is the same and only the history differs.

Printed and written (``benchmarks/results/growth.json`` and ``.md``): medians over the
seeds of the rounds to tolerance (the grown run's also counted from its last join), and
the final prices' distance to the closed-form equilibrium (max |log p - log p*|) and
between grown and at-once.

Run: ``python benchmarks/growth.py [--sizes 1000 10000] [--seeds 3] [--tol 1e-8]``.
"""

from __future__ import annotations

import argparse
import math
import time

import common
import numpy as np

from tatonnet.environment.equilibrium import reference_equilibria
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import Scenario, load_scenario
from tatonnet.environment.tatonnement import status
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement

START, EVERY, LINKS = 50, 20, 3


def grown_scenario(base: Scenario, churn: bool) -> Scenario:
    add = math.ceil((base.n_agents - START) / EVERY)
    schedule = [{"every": EVERY, "add": add}]
    if churn:  # 2% of an event's joins leave, every other event
        schedule.append({"every": 2 * EVERY, "remove": max(1, add // 50)})
    data = base.model_dump()
    data["growth"] = {"start": START, "attach": "preferential", "links": LINKS,
                      "schedule": schedule}  # fmt: skip
    return Scenario.model_validate(data)


def run_model(scenario: Scenario) -> tuple[MarketModel, float]:
    t = time.perf_counter()
    model = MarketModel(scenario, agent_data_every=0)
    model.run_model()
    return model, time.perf_counter() - t


def run_on_graph(model: MarketModel, tol: float, rounds: int) -> tuple[int, np.ndarray, str]:
    """The grown model's final economy and graph, all agents from round 0."""
    dyn = NetworkTatonnement(model.economy, model.network, model.dynamics.rule)
    state = dyn.init_state(np.ones(model.economy.n_goods))
    spare, verdict = None, None
    while state.round < rounds:
        new, metrics = dyn.step(state, spare)
        spare, state = state, new
        verdict = status.stop_verdict(metrics, tol)
        if verdict is not None:
            break
    mean = dyn.prices(state).mean(axis=0)
    return state.round, mean, verdict.status if verdict else "max_rounds"


def log_distance(a, b) -> float:
    return float(np.max(np.abs(np.log(np.asarray(a)) - np.log(np.asarray(b)))))


def measure(n: int, seed: int, tol: float, rounds: int, churn: bool) -> dict:
    base = load_scenario("cobb-douglas").with_overrides(agents=n, seed=seed, tol=tol,
                                                        rounds=rounds)  # fmt: skip
    grown, t_grown = run_model(grown_scenario(base, churn))
    at_once, t_once = run_model(base)
    same_graph_rounds, same_graph_prices, same_graph_status = run_on_graph(grown, tol, rounds)
    (star, *_), _ = reference_equilibria(at_once.economy, seed=seed)
    last = grown.growth.log[-1]["round"]
    p_grown, p_once = grown.metrics.mean_price, at_once.metrics.mean_price
    return {
        "n_agents": n, "seed": seed,
        "grown": {"rounds": grown.round, "rounds_after_last_join": grown.round - last,
                  "last_join_round": last, "status": _status(grown),
                  "edges": grown.network.n_edges, "seconds": t_grown,
                  "distance_to_equilibrium": log_distance(p_grown, star)},
        "at_once": {"rounds": at_once.round, "status": _status(at_once),
                    "edges": at_once.network.n_edges, "seconds": t_once,
                    "distance_to_equilibrium": log_distance(p_once, star)},
        "at_once_grown_graph": {"rounds": same_graph_rounds, "status": same_graph_status,
                                "distance_to_equilibrium": log_distance(same_graph_prices, star)},
        "grown_vs_at_once": log_distance(p_grown, p_once),
    }  # fmt: skip


def _status(model: MarketModel) -> str:
    return model.verdict.status if model.verdict is not None else "max_rounds"


def table(rows: list[dict], tol: float) -> str:
    out = [
        "| agents | seeds | grown: rounds (after last join) | at once: rounds | at once on the "
        "grown graph: rounds | distance to p* grown / at once | grown vs at once |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sorted({r["n_agents"] for r in rows}):
        rs = [r for r in rows if r["n_agents"] == n]

        def med(f, rs=rs):
            return float(np.median([f(r) for r in rs]))

        ok = all(r[k]["status"] == "converged" for r in rs
                 for k in ("grown", "at_once", "at_once_grown_graph"))  # fmt: skip
        out.append(
            f"| {n:,} | {len(rs)} | {med(lambda r: r['grown']['rounds']):.0f} "
            f"({med(lambda r: r['grown']['rounds_after_last_join']):.0f}) "
            f"| {med(lambda r: r['at_once']['rounds']):.0f} "
            f"| {med(lambda r: r['at_once_grown_graph']['rounds']):.0f} "
            f"| {med(lambda r: r['grown']['distance_to_equilibrium']):.1e} / "
            f"{med(lambda r: r['at_once']['distance_to_equilibrium']):.1e} "
            f"| {med(lambda r: r['grown_vs_at_once']):.1e} |"
            + ("" if ok else " (not all converged)")
        )
    out.append("")
    out.append(f"Medians over the seeds; tol = {tol:g}; distances are max |log p - log q| over "
               "goods of the network-mean prices.")  # fmt: skip
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-8)
    ap.add_argument("--rounds", type=int, default=6000)
    ap.add_argument(
        "--churn", action="store_true", help="2%% of an event's joins leave every other event"
    )
    ap.add_argument("--name", default="growth", help="results/<name>.json and .md")
    args = ap.parse_args(argv)
    rows = []
    for n in args.sizes:
        for seed in range(args.seeds):
            row = measure(n, seed, args.tol, args.rounds, args.churn)
            rows.append(row)
            print(f"n={n} seed={seed}: grown {row['grown']['rounds']} "
                  f"({row['grown']['rounds_after_last_join']} after the last join), at once "
                  f"{row['at_once']['rounds']}, at once on the grown graph "
                  f"{row['at_once_grown_graph']['rounds']}; grown vs at once "
                  f"{row['grown_vs_at_once']:.1e}", flush=True)  # fmt: skip
    text = table(rows, args.tol)
    print(text)
    command = "python benchmarks/growth.py " + " ".join(
        ["--sizes", *map(str, args.sizes), "--seeds", str(args.seeds), "--tol", str(args.tol)]
        + (["--churn"] if args.churn else [])
    )
    report = {"command": command, "start": START, "every": EVERY, "links": LINKS,
              "churn": args.churn, "tol": args.tol, "rows": rows,
              "machine": common.machine_info(), "git": common.git_info()}  # fmt: skip
    md = f"# Growth: grown vs at-once\n\n`{command}`\n\n{text}"
    common.write_report(common.RESULTS / f"{args.name}.json", report,
                        common.RESULTS / f"{args.name}.md", md)  # fmt: skip


if __name__ == "__main__":
    main()
