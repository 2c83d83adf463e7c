#!/usr/bin/env python
"""Flat vs layered (merchant) market on scarf, ces-substitutes and cobb-douglas.

Prints one row per (scenario, graph, market, rule): the status (tatonnet.environment.tatonnement.status), the
round it stopped, final excess demand (layered: max of net order and inventory gap), the
distance of the agents' mean price to the nearest reference equilibrium, and for the
layered market the range of merchant fill ratios I/T seen over the run (non-numeraire
goods, and the numeraire's money stock separately).

    .venv/bin/python benchmarks/layered_vs_flat.py [--agents 1000] [--rounds 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tatonnet.agents.rules import make_rule
from tatonnet.agents.utility import Family
from tatonnet.environment import equilibrium
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.network import Network
from tatonnet.environment.scenario import build_economy, build_network_for, load_scenario
from tatonnet.environment.tatonnement import status
from tatonnet.environment.trade.layered import make_layered_dynamics

STEPS = {"entropic": 0.05, "multiplicative": 0.1}


def references(economy, seed):
    if (economy.family == Family.COBB_DOUGLAS).all():
        return [equilibrium.cobb_douglas_equilibrium(economy)]
    return equilibrium.find_equilibria(economy, seed=seed)


def run(dyn, prices, rounds, tol, numeraire):
    state = dyn.init_state(prices)
    ed, disp, logp, lo, hi = [], [], [], np.inf, -np.inf
    verdict = None
    for _ in range(rounds):
        state, m = dyn.step(state)
        ed.append(m.excess_demand)
        disp.append(m.price_dispersion)
        logp.append(np.log(m.mean_price))
        fmin = getattr(m, "fill_min", None)
        if fmin is not None:
            keep = np.arange(fmin.size) != numeraire
            lo, hi = min(lo, fmin[keep].min()), max(hi, m.fill_max[keep].max())
        verdict = status.stop_verdict(m, tol)
        if verdict is not None:
            break
    if verdict is None:
        verdict = status.classify(ed, disp, np.array(logp), numeraire)
    return verdict, state.round, m, (lo, hi), state


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--scenarios", default="scarf,ces-substitutes,cobb-douglas")
    ap.add_argument("--graphs", default="central,small-world")
    ap.add_argument("--signal", default="tracking", help="merchants' signal: tracking | local")
    ap.add_argument("--inventory-gain", type=float, default=0.1)
    ap.add_argument("--flow-gain", type=float, default=1.0)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--markets", default="flat,layered")
    args = ap.parse_args(argv)
    print(
        f"layered: signal={args.signal} inventory_gain={args.inventory_gain} "
        f"flow_gain={args.flow_gain} layers={args.layers}; flat: signal=tracking"
    )
    print(
        "scenario | graph | market | rule | status | rounds | excess | dist | fill range (non-num) | numeraire fill | s"
    )
    for name in args.scenarios.split(","):
        sc = load_scenario(name)
        for graph in args.graphs.split(","):
            s = sc.with_overrides(agents=args.agents, graph=graph)
            economy, _ = build_economy(s)
            network = (
                Network.central(economy.n_agents) if graph == "central" else build_network_for(s)
            )
            refs = references(economy, s.seed)
            p0 = np.asarray(s.dynamics.initial_prices or np.ones(economy.n_goods))
            tol = s.dynamics.tol
            for market in args.markets.split(","):
                for rule_name, step in STEPS.items():
                    rule = make_rule(rule_name, step_size=step)
                    if market == "flat":
                        dyn = make_dynamics(economy, network, rule, "tracking")
                    else:
                        dyn = make_layered_dynamics(
                            economy,
                            network,
                            rule,
                            signal=args.signal,
                            inventory_gain=args.inventory_gain,
                            flow_gain=args.flow_gain,
                            layers=args.layers,
                        )
                    t0 = time.perf_counter()
                    v, r, m, (lo, hi), st = run(dyn, p0, args.rounds, tol, economy.numeraire)
                    dt = time.perf_counter() - t0
                    near = equilibrium.nearest(m.mean_price, refs)
                    dist = f"{near[1]:.2e}" if near else "no ref"
                    fill = f"[{lo:.3f}, {hi:.3f}]" if market == "layered" else "-"
                    num = "-"
                    if market == "layered":
                        f0 = st.inventory[:, economy.numeraire] / dyn.target[:, economy.numeraire]
                        num = f"[{f0.min():.3f}, {f0.max():.3f}]"
                    print(
                        f"{name} | {graph} | {market} | {rule_name} {step} | {v.status} | {r} | "
                        f"{m.excess_demand:.2e} | {dist} | {fill} | {num} | {dt:.1f}"
                    )
                    print(f"    {v.reason}")


if __name__ == "__main__":
    main()
