"""Mode ``path``: find the group parameters whose tâtonnement price path matches an observed one.

No demand is observed, only the network-mean prices ``P_obs[r]`` (rounds ``0..R``, goods)
of a run whose structure is known: endowments, network, rule, step size, signal and
initial prices (a scenario). Every agent of group ``u`` gets CES shares ``a_u`` and
``sigma_u`` (coordinates as in :mod:`.parameters`, all goods free but the first), the
dynamics of :func:`tatonnet.environment.engines.make_dynamics` is run ``R`` rounds, and the
residuals are the log-price errors

    r_rj = log P_model[r, j] - log P_obs[r, j]    (r = 1..R, j not the numeraire),

plus the ridge rows of :mod:`.demand_problem` if regularized. The Jacobian is by finite
differences (``scipy.optimize.least_squares(jac="2-point")``): every iteration costs
``k + 1`` runs of the dynamics for ``k`` coordinates, so this mode is far slower than mode
``demand``, and it is less identified: a path that converges fast carries information
about the equilibrium (ratios of shares weighted by wealth) more than about ``sigma``, and
groups with similar endowments are exchangeable. The identification report
(:mod:`.identification`) says which directions are flat.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import least_squares

from tatonnet.agents.utility import Family
from tatonnet.environment.calibration import baseline
from tatonnet.environment.calibration.estimates import Estimates
from tatonnet.environment.calibration.identification import identify, natural_errors
from tatonnet.environment.calibration.observations import CalibrationError
from tatonnet.environment.calibration.parameters import UnitLayout
from tatonnet.environment.economy import Economy
from tatonnet.environment.engines import make_dynamics

#: Residual given to a path that is not finite (the dynamics diverged).
DIVERGED = 10.0


@dataclasses.dataclass(frozen=True, eq=False)
class PathSetup:
    """What is known about the run: ``economy`` (endowments, numeraire, goods; its
    utilities are replaced), ``group`` (n_agents,) int each agent's unit, ``units`` labels,
    ``network``, ``rule``, ``signal``, ``initial_prices`` (g,) or (n, g)."""

    economy: Economy
    group: np.ndarray
    units: tuple[str, ...]
    network: object
    rule: object
    signal: str
    initial_prices: np.ndarray

    @property
    def n_goods(self) -> int:
        return self.economy.n_goods

    def layout(self) -> UnitLayout:
        g = self.n_goods
        free = np.ones(g, dtype=bool)
        free[0] = False
        return UnitLayout(free, np.ones(g, dtype=bool), 0)


def simulate_path(setup: PathSetup, shares: np.ndarray, sigma: np.ndarray, rounds: int):
    """Network-mean prices (rounds + 1, g) of the dynamics with group parameters
    ``shares`` (n_units, g) and ``sigma`` (n_units,)."""
    e = setup.economy
    n = e.n_agents
    economy = Economy(e.endowments, np.asarray(shares, dtype=float)[setup.group],
                      np.full(n, Family.CES, dtype=np.int8),
                      np.asarray(sigma, dtype=float)[setup.group], e.numeraire, e.goods)  # fmt: skip
    dynamics = make_dynamics(economy, setup.network, setup.rule, setup.signal)
    state = dynamics.init_state(setup.initial_prices)
    path = np.empty((rounds + 1, e.n_goods))
    path[0] = dynamics.prices(state).mean(axis=0)
    with np.errstate(all="ignore"):
        for r in range(1, rounds + 1):
            state, metrics = dynamics.step(state)
            path[r] = metrics.mean_price
            if not np.isfinite(path[r]).all():
                path[r:] = np.nan
                break
    return path


class PathProblem:
    """Residuals of the observed path ``observed`` (R + 1, g) against the simulated one."""

    def __init__(self, setup: PathSetup, observed: np.ndarray, regularize: float = 0.0):
        observed = np.asarray(observed, dtype=float)
        if observed.ndim != 2 or observed.shape[1] != setup.n_goods or observed.shape[0] < 2:
            raise CalibrationError(
                f"path: expected (rounds + 1, {setup.n_goods}) prices with rounds >= 1"
            )
        self.setup, self.observed = setup, observed
        self.rounds = observed.shape[0] - 1
        self.layout = setup.layout()
        self.regularize = float(regularize)
        self.n_units = len(setup.units)
        self.k = self.layout.n_params
        self.keep = np.arange(setup.n_goods) != setup.economy.numeraire
        self.n_evaluations = 0  # runs of the dynamics

    @property
    def n_params(self) -> int:
        return self.n_units * self.k

    @property
    def n_effective(self) -> int:
        return self.rounds * int(self.keep.sum())

    def natural(self, q: np.ndarray):
        pairs = [self.layout.natural(c) for c in q.reshape(self.n_units, self.k)]
        return np.array([a for a, _ in pairs]), np.array([s for _, s in pairs])

    def data_residuals(self, q: np.ndarray) -> np.ndarray:
        self.n_evaluations += 1
        shares, sigma = self.natural(q)
        path = simulate_path(self.setup, shares, sigma, self.rounds)
        with np.errstate(all="ignore"):
            r = (np.log(path[1:]) - np.log(self.observed[1:]))[:, self.keep].ravel()
        return np.where(np.isfinite(r), r, DIVERGED)

    def residuals(self, q: np.ndarray) -> np.ndarray:
        r = self.data_residuals(q)
        return np.concatenate([r, np.sqrt(self.regularize) * q]) if self.regularize else r

    def objective(self, q: np.ndarray) -> float:
        r = self.residuals(q)
        return 0.5 * float(r @ r)


def fit_path(setup: PathSetup, observed: np.ndarray, regularize: float = 0.0,
             max_evaluations: int | None = None, tol: float = 1e-10) -> Estimates:  # fmt: skip
    """Least-squares fit of every group's shares and sigma to the observed path."""
    problem = PathProblem(setup, observed, regularize)
    q0 = np.zeros(problem.n_params)
    res = least_squares(problem.residuals, q0, jac="2-point", method="trf", x_scale=1.0,
                        xtol=tol, ftol=tol, gtol=tol, max_nfev=max_evaluations)  # fmt: skip
    jac = res.jac[: problem.n_effective]
    return _estimates(problem, res.x, "least-squares (path)", jac)


def baseline_path(setup: PathSetup, observed: np.ndarray, budget: int, method: str = "random",
                  seed: int = 0, regularize: float = 0.0) -> Estimates:  # fmt: skip
    """Mode ``path`` by black-box search with ``budget`` runs of the dynamics."""
    problem = PathProblem(setup, observed, regularize)
    q = baseline.search(problem.objective, np.zeros(problem.n_params), budget, method, (seed,))
    return _estimates(problem, q, f"{method} (path)", None)


def _estimates(problem: PathProblem, q: np.ndarray, method: str, jac) -> Estimates:
    evaluations = problem.n_evaluations
    shares, sigma = problem.natural(q)
    objective = problem.objective(q)
    n, g, k = problem.n_units, problem.setup.n_goods, problem.k
    share_se, sigma_se = np.full((n, g), np.nan), np.full(n, np.nan)
    share_ok, sigma_ok = np.zeros((n, g), dtype=bool), np.zeros(n, dtype=bool)
    notes, condition = [], np.full(n, np.nan)
    if jac is not None:
        r = problem.data_residuals(q)
        pen = np.sqrt(problem.regularize) * np.eye(problem.n_params) if problem.regularize else None
        ident = identify(np.asarray(jac), r, problem.n_effective, pen)
        names = problem.layout.names(problem.setup.economy.goods)
        for u in range(n):
            block = slice(u * k, (u + 1) * k)
            part = dataclasses.replace(ident, identified=ident.identified[block],
                                       cov=ident.cov[block, block])  # fmt: skip
            share_se[u], sigma_se[u], share_ok[u], sigma_ok[u] = natural_errors(
                problem.layout, q[block], part
            )
            condition[u] = ident.condition
            flat = [nm for nm, ok in zip(names, part.identified, strict=True) if not ok]
            notes.append((f"flat direction of the fit in {', '.join(flat)}",) if flat else ())
    else:
        notes = [()] * n
    return Estimates(method, problem.setup.units, problem.setup.economy.goods, shares, sigma,
                     share_se, sigma_se, share_ok, sigma_ok, np.array([objective]),
                     np.array([evaluations]), tuple(notes), condition)  # fmt: skip


def path_from_table(table, goods) -> np.ndarray:
    """The observed path (R + 1, g) from a long table with ``round``, ``good``, ``price``."""
    import pandas as pd

    missing = [c for c in ("round", "good", "price") if c not in table.columns]
    if missing:
        raise CalibrationError(
            f"missing column(s) {', '.join(missing)} (mode path: round, good, price)"
        )
    df = table[["round", "good", "price"]].copy()
    df["price"] = pd.to_numeric(df["price"], errors="coerce")
    df["round"] = pd.to_numeric(df["round"], errors="coerce")
    if df.isna().any().any():
        raise CalibrationError("NaN or non-numeric values in round or price")
    if (df["price"] <= 0).any():
        raise CalibrationError("price: expected positive prices")
    df["good"] = df["good"].astype(str)
    unknown = sorted(set(df["good"]) - set(goods))
    if unknown:
        raise CalibrationError(
            f"good: unknown good(s) {', '.join(unknown)}; the scenario has {', '.join(goods)}"
        )
    if df.duplicated(["round", "good"]).any():
        raise CalibrationError("a round lists a good twice")
    wide = df.pivot(index="round", columns="good", values="price").reindex(columns=list(goods))
    rounds = wide.index.to_numpy()
    if wide.isna().any().any() or not np.array_equal(rounds, np.arange(rounds.size)):
        raise CalibrationError("path: expected every good at every round 0, 1, ..., R")
    if rounds.size < 3:
        raise CalibrationError(f"too few observations: {rounds.size} rounds (at least 3)")
    return wide.to_numpy(float)
