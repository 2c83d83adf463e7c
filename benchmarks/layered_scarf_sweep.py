#!/usr/bin/env python
"""Scarf (from (1, 2, 3)), 300 agents, one merchant: does any gain or step of the layered
market converge? Prints status per (step, inventory_gain, flow_gain), entropic rule.

    .venv/bin/python benchmarks/layered_scarf_sweep.py
"""

import numpy as np

from tatonnet.environment.network import Network
from tatonnet.environment.scenario import build_economy, load_scenario
from tatonnet.environment.tatonnement import status
from tatonnet.environment.trade.layered import make_layered_dynamics

sc = load_scenario("scarf").with_overrides(agents=300, graph="central")
econ, _ = build_economy(sc)
net = Network.central(300)
for step in (0.01, 0.002):
    for ig in (0.0, 0.01, 0.1):
        for fg in (1.0, 0.0):
            if ig == 0 and fg == 0:
                continue
            dyn = make_layered_dynamics(
                econ, net, "entropic", step_size=step, inventory_gain=ig, flow_gain=fg
            )
            s = dyn.init_state(np.array([1.0, 2.0, 3.0]))
            ed = []
            disp = []
            lp = []
            v = None
            for _ in range(4000):
                s, m = dyn.step(s)
                ed.append(m.excess_demand)
                disp.append(0.0)
                lp.append(np.log(m.mean_price))
                v = status.check_stop(m.excess_demand, 0.0, m.log_min, m.log_max, 1e-8)
                if v:
                    break
            v = v or status.classify(ed, disp, np.array(lp), 0)
            print(step, ig, fg, v.status, s.round, v.reason[:110])
