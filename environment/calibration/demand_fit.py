"""Mode ``demand``: fit each unit's CES shares and sigma to its observed bundles.

Units are independent (a unit's bundles depend on its own parameters only), so each is a
small least-squares problem (:class:`~.demand_problem.UnitProblem`), solved by
``scipy.optimize.least_squares`` (trust region reflective) from the Cobb–Douglas fit
(mean budget shares, ``sigma = 1``) with the analytic Jacobian. Standard errors and
identification: :mod:`.identification`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from tatonnet.environment.calibration.demand_problem import UnitProblem
from tatonnet.environment.calibration.estimates import Estimates
from tatonnet.environment.calibration.identification import identify, natural_errors
from tatonnet.environment.calibration.observations import Observations

#: Box of the coordinates (log share ratios, log sigma): keeps a runaway fit finite.
ETA_BOUND = 30.0
LOG_SIGMA_BOUNDS = (np.log(1e-3), np.log(1e3))


def unit_problems(obs: Observations, regularize: float = 0.0) -> list[UnitProblem]:
    """One :class:`UnitProblem` per unit of ``obs``."""
    if not (np.isfinite(regularize) and regularize >= 0):
        raise ValueError(f"regularize: expected a finite number >= 0, got {regularize}")
    return [
        UnitProblem(obs.prices[rows], obs.endowments[rows], obs.quantities[rows], regularize)
        for rows in (obs.rows(u) for u in range(obs.n_units))
    ]


def bounds(problem: UnitProblem) -> tuple[np.ndarray, np.ndarray]:
    k = problem.layout.n_params
    lo, hi = np.full(k, -ETA_BOUND), np.full(k, ETA_BOUND)
    lo[-1], hi[-1] = LOG_SIGMA_BOUNDS
    return lo, hi


def fit_demand(obs: Observations, regularize: float = 0.0, max_evaluations: int | None = None,
               tol: float = 1e-12) -> Estimates:  # fmt: skip
    """Least-squares fit of every unit's shares and sigma; see the module docstring.

    ``max_evaluations`` caps each unit's residual evaluations (scipy's ``max_nfev``).
    """
    problems = unit_problems(obs, regularize)
    return summarize(obs, problems, [_solve(p, max_evaluations, tol) for p in problems],
                     "least-squares (demand)")  # fmt: skip


def _solve(problem: UnitProblem, max_evaluations, tol: float) -> np.ndarray:
    lo, hi = bounds(problem)
    q0 = np.clip(problem.start(), lo + 1e-9, hi - 1e-9)
    res = least_squares(problem.residuals, q0, jac=problem.jacobian, bounds=(lo, hi),
                        method="trf", x_scale="jac", xtol=tol, ftol=tol, gtol=tol,
                        max_nfev=max_evaluations)  # fmt: skip
    return res.x


def summarize(obs: Observations, problems: list[UnitProblem], coords: list[np.ndarray],
              method: str, with_errors: bool = True) -> Estimates:  # fmt: skip
    """Estimates (natural units) of every unit at ``coords``; standard errors and
    identification from the analytic Jacobian there if ``with_errors`` (not counted as
    evaluations)."""
    n, g = obs.n_units, obs.n_goods
    shares, sigma = np.zeros((n, g)), np.zeros(n)
    share_se, sigma_se = np.full((n, g), np.nan), np.full(n, np.nan)
    share_ok, sigma_ok = np.zeros((n, g), dtype=bool), np.zeros(n, dtype=bool)
    objective, evaluations, condition = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n)
    notes = []
    for u, (problem, q) in enumerate(zip(problems, coords, strict=True)):
        evaluations[u] = problem.n_evaluations
        shares[u], sigma[u] = problem.layout.natural(q)
        objective[u] = 0.5 * float(np.sum(problem.residuals(q) ** 2))
        never = [obs.goods[j] for j in np.flatnonzero(~problem.layout.bought)]
        why = [f"never bought: {', '.join(never)} (share 0 is only a bound)"] if never else []
        if with_errors:
            ident = identify(problem.data_jacobian(q), problem.data_residuals(q),
                             problem.n_effective, problem.penalty_jacobian())  # fmt: skip
            share_se[u], sigma_se[u], share_ok[u], sigma_ok[u] = natural_errors(
                problem.layout, q, ident
            )
            condition[u] = ident.condition
            flat = [name for name, ok in zip(problem.layout.names(obs.goods), ident.identified,
                                             strict=True) if not ok]  # fmt: skip
            if flat:
                why.append(f"flat direction of the fit in {', '.join(flat)}")
        else:
            condition[u] = np.nan
        problem.n_evaluations = evaluations[u]  # the summary's own evaluations are not counted
        notes.append(tuple(why))
    return Estimates(method, obs.units, obs.goods, shares, sigma, share_se, sigma_se, share_ok,
                     sigma_ok, objective, evaluations, tuple(notes), condition)  # fmt: skip


def predict(obs: Observations, estimates: Estimates) -> np.ndarray:
    """The bundles (n_obs, g) that ``estimates`` predict at every observation."""
    from tatonnet.agents import utility
    from tatonnet.agents.utility import Family

    shares, sigma = estimates.shares[obs.unit], estimates.sigma[obs.unit]
    family = np.full(obs.n_obs, Family.CES, dtype=np.int8)
    return utility.demand(obs.prices, obs.endowments, shares, family, sigma)
