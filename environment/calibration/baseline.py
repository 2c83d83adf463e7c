"""Black-box baselines on the same budget: random search or Optuna's TPE.

Each searches the same coordinates (:mod:`.parameters`) in the box
``log share ratio in [-ETA_BOX, ETA_BOX]``, ``sigma in SIGMA_BOX``, minimizes the same
objective as the gradient fit, starts from the same point (its first evaluation) and is
given a budget of objective evaluations (the gradient fit's, by default: residual plus
Jacobian evaluations). It reports point estimates only (no standard errors).
Randomness: ``SeedSequence(seed, spawn_key=(unit,))`` per unit.
"""

from __future__ import annotations

import numpy as np

from tatonnet.environment.calibration.demand_fit import summarize, unit_problems
from tatonnet.environment.calibration.estimates import Estimates
from tatonnet.environment.calibration.observations import Observations

METHODS = ("random", "optuna")
ETA_BOX = 4.0
SIGMA_BOX = (0.05, 20.0)


def box(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The search box of ``k`` coordinates (the last is log sigma)."""
    lo, hi = np.full(k, -ETA_BOX), np.full(k, ETA_BOX)
    lo[-1], hi[-1] = np.log(SIGMA_BOX)
    return lo, hi


def search(objective, start: np.ndarray, budget: int, method: str, seed) -> np.ndarray:
    """The best of ``budget`` evaluations of ``objective`` (the first at ``start``).

    ``seed``: an int or a sequence of ints (the SeedSequence entropy and spawn key).
    """
    if method not in METHODS:
        raise ValueError(f"baseline: expected one of {METHODS}, got {method!r}")
    budget = max(1, int(budget))
    lo, hi = box(start.size)
    start = np.clip(start, lo, hi)
    entropy, key = (seed, ()) if np.isscalar(seed) else (seed[0], tuple(seed[1:]))
    ss = np.random.SeedSequence(entropy, spawn_key=key)
    if method == "random":
        rng = np.random.default_rng(ss)
        best_q, best = start, objective(start)
        for _ in range(budget - 1):
            q = rng.uniform(lo, hi)
            value = objective(q)
            if value < best:  # NaN never wins
                best_q, best = q, value
        return best_q
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=int(ss.generate_state(1)[0]))
    study = optuna.create_study(sampler=sampler)
    names = [f"q{i}" for i in range(start.size)]
    study.enqueue_trial(dict(zip(names, start.tolist(), strict=True)))

    def trial_value(trial):
        q = np.array([trial.suggest_float(n, lo[i], hi[i]) for i, n in enumerate(names)])
        value = objective(q)
        return value if np.isfinite(value) else 1e300

    study.optimize(trial_value, n_trials=budget)
    return np.array([study.best_params[n] for n in names])


def baseline_demand(obs: Observations, budgets, method: str = "random", seed: int = 0,
                    regularize: float = 0.0) -> Estimates:  # fmt: skip
    """Mode ``demand`` by black-box search: unit ``u`` gets ``budgets[u]`` evaluations."""
    problems = unit_problems(obs, regularize)
    budgets = np.broadcast_to(np.asarray(budgets, dtype=np.int64), (obs.n_units,))
    coords = [search(p.objective, p.start(), int(b), method, (seed, u))
              for u, (p, b) in enumerate(zip(problems, budgets, strict=True))]  # fmt: skip
    return summarize(obs, problems, coords, f"{method} (demand)", with_errors=False)
