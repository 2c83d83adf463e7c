"""Calibration: recovery of known CES parameters, gradient fit against black-box baselines.

python benchmarks/calibration_recovery.py      # prints the table of docs/11-calibration.md

Mode demand: 20 agents (Dirichlet(3) shares over 3 goods, sigma uniform on 0.3..4,
log-normal endowments, seed 1), 8 markets each (log-normal prices, spread 0.5), bundles
with log-noise 0, 1% and 5%. Mode path: one CES group (shares 0.5, 0.3, 0.2; sigma 2.5) of
12 agents behind a 30-round central entropic path (step 0.3), price log-noise 0 and 1%.
The baselines (random search, Optuna TPE; seed 0) get exactly the evaluations the
gradient fit used (per unit in mode demand; runs of the dynamics in mode path).
"""

from __future__ import annotations

import time

import numpy as np

from tatonnet.agents.rules import make_rule
from tatonnet.agents.utility import Family
from tatonnet.environment.calibration.baseline import baseline_demand
from tatonnet.environment.calibration.demand_fit import fit_demand
from tatonnet.environment.calibration.observations import from_table
from tatonnet.environment.calibration.path_fit import (
    PathSetup,
    baseline_path,
    fit_path,
    simulate_path,
)
from tatonnet.environment.calibration.synthetic import demand_table
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def demand_rows(noise: float):
    rng = np.random.default_rng(1)
    n, g = 20, 3
    shares, sigma = rng.dirichlet(np.full(g, 3.0), n), rng.uniform(0.3, 4.0, n)
    e = rng.lognormal(0.0, 0.3, (n, g))
    obs = from_table(demand_table(shares, sigma, e, 8, noise=noise, seed=2))
    fit, t = timed(fit_demand, obs)
    yield fit, t
    for method in ("random", "optuna"):
        yield timed(baseline_demand, obs, fit.evaluations, method, 0)
    yield None, (shares, sigma)


def path_rows(noise: float):
    n, g = 12, 3
    e = np.random.default_rng(0).lognormal(0, 0.4, (n, g))
    economy = Economy(e, np.ones((n, g)), np.full(n, Family.CES, dtype=np.int8), np.ones(n))
    setup = PathSetup(economy, np.zeros(n, dtype=np.int64), ("all",), Network.central(n),
                      make_rule("entropic", step_size=0.3), "tracking", np.ones(g))  # fmt: skip
    shares, sigma = np.array([[0.5, 0.3, 0.2]]), np.array([2.5])
    path = simulate_path(setup, shares, sigma, 30)
    rng = np.random.default_rng(3)
    noisy = path * np.exp(noise * rng.standard_normal(path.shape))
    noisy[:, 0], noisy[0] = 1.0, path[0]
    fit, t = timed(fit_path, setup, noisy)
    yield fit, t
    for method in ("random", "optuna"):
        yield timed(baseline_path, setup, noisy, fit.total_evaluations, method, 0)
    yield None, (shares, sigma)


def main() -> None:
    print(
        "| data | method | max share error | max sigma error (relative) | objective "
        "| evaluations | seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    cases = [(f"demand, noise {x:g}", demand_rows(x)) for x in (0.0, 0.01, 0.05)]
    cases += [(f"path, noise {x:g}", path_rows(x)) for x in (0.0, 0.01)]
    for label, rows in cases:
        rows = list(rows)
        truth = rows[-1][1]
        for est, seconds in rows[:-1]:
            err = est.errors(*truth)
            print(
                f"| {label} | {est.method.split()[0]} | {err['share']:.1e} | "
                f"{err['sigma']:.1e} | {est.total_objective:.2e} | "
                f"{est.total_evaluations} | {seconds:.2f} |"
            )


if __name__ == "__main__":
    main()
