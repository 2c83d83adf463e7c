"""A tuner per study cell: search a rule's hyperparameters with Optuna, deterministically.

A fixed grid of two or three step sizes cannot say that a rule *fails* on an economy; a
search can say that no trial of a stated budget, over a stated range, converged.
:func:`tune_cell` takes one :class:`tatonnet.studies.grid.Cell` (scenario, rule, graph,
market, agents, seed, rounds, tol, signal), searches the rule's step size on a wide log
range and its other main hyperparameters (:mod:`tatonnet.studies.search_space`) for a
fixed number of trials, and returns a :class:`TunedVerdict`.

Objective (minimized), per trial:

- a converged run (the stopping rule of :func:`~tatonnet.environment.tatonnement.status.stop_verdict`
  and the classifier of :func:`~tatonnet.studies.grid.judge` both say so):
  ``log10(tol) - (1 - rounds_to_tol / rounds)``, below every non-converged value, and
  lower the sooner it converged;
- a diverged run, a numerical error or a rule that cannot be built: :data:`WORST` (12);
- any other run (``max_rounds``, cycling, stalled): ``log10`` of the smallest relative
  excess-demand norm (``RoundMetrics.excess_demand``) it reached, floored at ``log10(tol)``.

Pruning: every ``report_every`` rounds a trial reports ``log10`` of its best excess demand
so far (:data:`WORST` once diverged); Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner`
(asynchronous successive halving: rungs at ``min_resource * reduction_factor**r`` rounds)
stops a trial that is not in the best ``1 / reduction_factor`` of the trials that reached
its rung. A pruned trial counts as not converged.

Determinism (same ``seed``, same trials and the same verdict at any worker count): trials
are asked in batches of ``batch`` (independent of ``workers``) from a seeded
:class:`~optuna.samplers.TPESampler`. Every trial of a batch is evaluated against a frozen
snapshot of the study as it stood before the batch (the trials told so far, copied into a
fresh in-memory study with the same pruner), so its pruning decisions do not depend on
which batch-mate finished first. The worker returns the values it reported, the pruner's
rung records and its final state; the driver replays ``report`` and ``tell`` in trial-number
order. Workers: 0 runs the batch in this process; ``workers > 0`` runs each trial as a Ray
task (:func:`tatonnet.distributed.cluster.connect`, as :func:`tatonnet.studies.grid.run_cells`).

Honesty: a trial that hits the round budget while still improving is ``max_rounds``
(:func:`~tatonnet.studies.grid.judge`), never converged. A converged best trial is re-run on
a second seed of the economy (``cell.seed + 1``) when the economy or its graph depends on the
seed; the verdict reports the re-check's status, and a best trial whose re-check does not
converge is ``"unconfirmed"``, not ``"converges"``.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable, Sequence

import numpy as np

from tatonnet.studies import search_space
from tatonnet.studies.grid import Cell, StudyError

#: Objective of a diverged trial (a price left [1e-8, 1e8]), a numerical error, or a rule
#: that cannot be built: worse than any excess demand a run can report.
WORST = 12.0

#: Trial statuses that are a failure to converge because the run went wrong.
BROKEN = ("diverged", "numerical_error", "invalid")


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """What one trial measured (plain data: it travels back from a Ray worker).

    Attributes
    ----------
    number : the trial's number in the study (0, 1, ...)
    params : ((name, value), ...) the hyperparameters tried, sorted by name
    status : the run's verdict (``converged``, ``max_rounds``, ``cycling``, ``diverged``,
        ``numerical_error``, ``stalled``...), ``pruned``, or ``invalid`` (the rule or the
        market refused these hyperparameters)
    rounds : rounds run
    rounds_to_tol : round the run reached ``tol`` (converged only), else None
    best_excess : smallest relative excess-demand norm reached (inf if none)
    value : the objective (see the module docstring); for a pruned trial its last report
    reports : ((round, value), ...) the intermediate values reported
    rungs : ((key, value), ...) the pruner's rung records (``completed_rung_<r>``)
    reason : the classifier's one-line reason, or why the trial is invalid
    """

    number: int
    params: tuple
    status: str
    rounds: int
    rounds_to_tol: int | None
    best_excess: float
    value: float
    reports: tuple
    rungs: tuple
    reason: str = ""

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclasses.dataclass(frozen=True)
class TunedVerdict:
    """The tuned verdict of one cell: one row of a tuned study table.

    Attributes
    ----------
    scenario, rule, mode, market, agents, seed, rounds, tol, signal : the cell
    verdict : ``"converges"`` (the best trial converged, and so did its re-check where there
        is one), ``"unconfirmed"`` (the best trial converged, its re-check on a second seed
        did not), ``"fails"`` (no trial converged) or ``"skipped"`` (the rule cannot run here)
    status : the best trial's status
    hyperparameters : ((name, value), ...) of the best trial (the cell's pinned ones included)
    rounds_to_tol : the best trial's rounds to tolerance (converged only)
    best_value : the best trial's objective (None when skipped)
    trials : trials run (the budget)
    converged_trials : how many of them converged
    pruned_trials : how many the pruner stopped early
    converged_step_min, converged_step_max : the range of step sizes that converged (None
        when none did)
    searched : ((name, range), ...) the range searched per hyperparameter
        (:meth:`~tatonnet.studies.search_space.Dimension.describe`)
    recheck_seed : the economy seed of the re-check (None: none was run, see ``recheck``)
    recheck_status : the re-check's status, or ``"not needed"`` (the economy does not depend
        on the seed), or ``"not run"`` (the best trial did not converge)
    reason : one line saying what the verdict rests on
    """

    scenario: str
    rule: str
    mode: str
    market: str
    agents: int | None
    seed: int
    rounds: int
    tol: float
    signal: str
    verdict: str
    status: str
    hyperparameters: tuple
    rounds_to_tol: int | None
    best_value: float | None
    trials: int
    converged_trials: int
    pruned_trials: int
    converged_step_min: float | None
    converged_step_max: float | None
    searched: tuple
    recheck_seed: int | None
    recheck_status: str
    reason: str


@dataclasses.dataclass(frozen=True)
class PrunerSettings:
    """Successive halving: rungs at ``min_resource * reduction_factor**r`` rounds.

    ``enabled=False`` runs every trial to its end (no pruning).
    """

    report_every: int
    min_resource: int
    reduction_factor: int = 3
    enabled: bool = True

    def make(self):
        import optuna

        if not self.enabled:
            return optuna.pruners.NopPruner()
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=self.min_resource, reduction_factor=self.reduction_factor
        )


# ---- one trial: the dynamics in chunks, reporting between chunks -------------------------
def _rule_and_market(cell: Cell, hyper: dict):
    """``(scenario, economy, network, references, rule, dynamics, reason)`` of a cell run with
    hyperparameters ``hyper``; ``dynamics`` is None (with the reason) when it cannot run."""
    from tatonnet.agents.rules import RuleError, make_rule
    from tatonnet.studies.grid import (
        _economy,
        _equilibria,
        _incompatible,
        make_market,
        split_hyperparameters,
    )

    sc, economy, network = _economy(cell.scenario, cell.agents, cell.graph, cell.seed)
    references, _ = _equilibria(cell.scenario, cell.agents, cell.seed)
    reason = _incompatible(cell.rule, sc)
    if reason is not None:
        return sc, economy, network, references, None, None, reason
    rule_hyper, market_hyper = split_hyperparameters(hyper)
    try:
        rule = make_rule(cell.rule, **rule_hyper)
    except (RuleError, TypeError) as exc:
        return sc, economy, network, references, None, None, f"invalid: {exc}"
    dyn, reason = make_market(cell.market, economy, network, rule, cell.signal, market_hyper)
    return sc, economy, network, references, rule, dyn, reason


def run_trial(cell: Cell, hyper: dict, report: Callable[[int, float], bool] | None = None,
              report_every: int = 0, number: int = 0) -> TrialResult:  # fmt: skip
    """Run the dynamics of ``cell`` with the rule's hyperparameters ``hyper`` and judge it.

    Parameters
    ----------
    cell : the cell (its ``step_size`` is ignored; ``hyper`` gives the step size)
    hyper : the rule's hyperparameters, ``step_size`` included
    report : ``report(round, value) -> prune?``, called every ``report_every`` rounds with
        ``log10`` of the best excess demand so far; True stops the run (``pruned``)
    report_every : rounds between reports (0: no reports)
    number : the trial number recorded in the result

    Returns
    -------
    TrialResult
        ``rungs`` empty (the caller adds the pruner's records).
    """
    from tatonnet.environment.scenario import initial_prices
    from tatonnet.environment.tatonnement import status
    from tatonnet.studies.grid import judge

    params = tuple(sorted(hyper.items()))
    sc, economy, _, references, rule, dyn, reason = _rule_and_market(cell, hyper)
    if dyn is None:
        kind = "invalid" if reason.startswith("invalid") else "skipped"
        return TrialResult(number, params, kind, 0, None, math.inf, WORST, (), (), reason)
    state = dyn.init_state(initial_prices(sc))
    g, R = economy.n_goods, cell.rounds
    excess, disp = np.empty(R), np.empty(R)
    prices, log_min, log_max = np.empty((R, g)), np.empty((R, g)), np.empty((R, g))
    floor = math.log10(cell.tol)
    stop, T, best, reports, pruned = None, 0, math.inf, [], False
    with np.errstate(all="ignore"):
        while T < R:
            state, m = dyn.step(state)
            excess[T], disp[T], prices[T] = m.excess_demand, m.price_dispersion, m.mean_price
            log_min[T], log_max[T] = m.log_min, m.log_max
            T += 1
            if math.isfinite(m.excess_demand):
                best = min(best, m.excess_demand)
            stop = status.stop_verdict(m, cell.tol)
            if stop is not None:
                break
            if report is not None and report_every and T % report_every == 0 and T < R:
                value = max(math.log10(best), floor) if best > 0 else floor
                reports.append((T, value))
                if report(T, value):
                    pruned = True
                    break
    history = {
        "excess_demand": excess[:T], "price_dispersion": disp[:T], "mean_price": prices[:T],
        "log_min": log_min[:T], "log_max": log_max[:T],
    }  # fmt: skip
    if pruned:
        return TrialResult(
            number, params, "pruned", T, None, best, reports[-1][1], tuple(reports), (),
            f"pruned at round {T}",
        )  # fmt: skip
    verdict = judge(history, stop, cell.tol, economy.numeraire, references, rule.space)
    return TrialResult(
        number, params, verdict["status"], T, verdict["rounds_to_tol"], best,
        objective(verdict["status"], verdict["rounds_to_tol"], best, cell), tuple(reports),
        (), verdict["reason"],
    )  # fmt: skip


def objective(status: str, rounds_to_tol: int | None, best_excess: float, cell: Cell) -> float:
    """The value a trial minimizes (see the module docstring)."""
    floor = math.log10(cell.tol)
    if status == "converged":
        return floor - (1.0 - (rounds_to_tol or cell.rounds) / cell.rounds)
    if status in BROKEN or not best_excess < math.inf:
        return WORST
    return min(max(math.log10(best_excess), floor), WORST) if best_excess > 0 else floor


# ---- a trial against a frozen snapshot of the study --------------------------------------
def _distributions(dims) -> dict:
    return {d.name: d.distribution() for d in dims}


def evaluate_trial(cell: Cell, pinned: tuple, params: dict, number: int, snapshot: list,
                   dims: tuple, pruning: PrunerSettings) -> TrialResult:  # fmt: skip
    """Run trial ``number`` with ``params`` (plus the cell's ``pinned`` hyperparameters),
    pruning against ``snapshot`` (the trials told before its batch), in a private study.

    The same call gives the same result in any process: it reads nothing but its arguments.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frozen = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruning.make(),
    )  # fmt: skip
    frozen.add_trials(snapshot)
    frozen.enqueue_trial(params)
    trial = frozen.ask(_distributions(dims))

    def report(step: int, value: float) -> bool:
        trial.report(value, step)
        return trial.should_prune()

    hyper = {**dict(pinned), **trial.params}
    result = run_trial(cell, hyper, report if pruning.enabled else None, pruning.report_every,
                       number)  # fmt: skip
    if result.status == "skipped":  # the cell runs (the probe said so); these values do not
        result = dataclasses.replace(result, status="invalid")
    attrs = frozen._storage.get_trial(trial._trial_id).system_attrs
    rungs = tuple(sorted((k, v) for k, v in attrs.items() if k.startswith("completed_rung_")))
    return dataclasses.replace(result, rungs=rungs)


def _evaluate_job(job: tuple) -> TrialResult:
    return evaluate_trial(*job)


def _map_in_process(jobs):
    return [_evaluate_job(job) for job in jobs]


def _ray_map(workers: int, address: str | None):
    """A ``map(jobs) -> results`` that runs each job as a Ray task (results in job order)."""
    import ray

    from tatonnet.distributed import cluster

    cluster.connect(workers, address)
    remote = ray.remote(num_cpus=1, max_retries=2)(_evaluate_job)
    env = {"env_vars": {"NUMBA_NUM_THREADS": "1"}} if not address else None

    def map_jobs(jobs):
        refs = [remote.options(runtime_env=env).remote(j) if env else remote.remote(j)
                for j in jobs]  # fmt: skip
        try:
            return ray.get(refs)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise

    return map_jobs


# ---- the tuner ---------------------------------------------------------------------------
def tune_cell(
    cell: Cell,
    trials: int = 48,
    batch: int = 8,
    seed: int = 0,
    workers: int = 0,
    address: str | None = None,
    report_every: int | None = None,
    prune: bool = True,
    reduction_factor: int = 3,
    pool=None,
) -> TunedVerdict:
    """Tune the rule of one cell and give its honest verdict.

    Parameters
    ----------
    cell : the cell: scenario, rule, graph (mode), market, agents, seed, rounds, tol,
        signal. Its ``step_size`` is ignored (the step size is searched); its
        ``hyperparameters`` are pinned (not searched).
    trials : the trial budget (>= 1)
    batch : trials asked per batch (>= 1); the result depends on it, never on ``workers``
    seed : the sampler's seed (the economy's seed is ``cell.seed``)
    workers : 0: evaluate in this process; > 0: as Ray tasks on that many workers
    address : a Ray cluster to join (``workers > 0``)
    report_every : rounds between a trial's intermediate reports (default ``rounds // 20``,
        at least 1); successive halving's first rung is at ``2 * report_every`` rounds
    prune : stop hopeless trials early (successive halving); False runs every trial out
    reduction_factor : successive halving's η (>= 2): the best 1/η of a rung go on
    pool : an executor (``concurrent.futures``) whose ``map`` evaluates each batch instead
        of Ray or this process (tests; a caller's own pool)

    Returns
    -------
    TunedVerdict

    Raises
    ------
    StudyError
        A bad budget, batch or rule name (one line).

    Examples
    --------
    >>> from tatonnet.studies.grid import Cell
    >>> cell = Cell(0, "tuned", "cobb-douglas", "central", 20, "flat", "entropic", None, (),
    ...             0, 300, 1e-6, "tracking")
    >>> tune_cell(cell, trials=8, batch=4).verdict  # doctest: +SKIP
    'converges'
    """
    results, dims, reason = search_cell(
        cell, trials, batch, seed, workers, address, report_every, prune, reduction_factor, pool
    )
    if reason is not None:
        return _skipped_verdict(cell, dims, reason)
    return _verdict(cell, dims, results)


def search_cell(
    cell: Cell,
    trials: int = 48,
    batch: int = 8,
    seed: int = 0,
    workers: int = 0,
    address: str | None = None,
    report_every: int | None = None,
    prune: bool = True,
    reduction_factor: int = 3,
    pool=None,
) -> tuple[list[TrialResult], tuple, str | None]:
    """The search behind :func:`tune_cell` (same parameters).

    Returns
    -------
    results : list of TrialResult, in trial-number order (empty when skipped)
    dims : tuple of Dimension, the searched space
    skipped : why the cell cannot run (no trial was run), else None
    """
    import optuna

    _check_options(cell, trials, batch, workers, report_every, reduction_factor)
    pinned = tuple(sorted(dict(cell.hyperparameters).items()))
    dims = search_space.space_for(cell.rule, fixed=[k for k, _ in pinned]) + market_dimensions(cell)
    every = report_every or max(1, cell.rounds // 20)
    pruning = PrunerSettings(every, 2 * every, reduction_factor, prune)

    probe = run_trial(dataclasses.replace(cell, rounds=1), {**dict(pinned), "step_size": 1e-3})
    if probe.status == "skipped":
        return [], dims, probe.reason

    if pool is not None:
        map_jobs = lambda jobs: list(pool.map(_evaluate_job, jobs))  # noqa: E731
    elif workers > 0:
        map_jobs = _ray_map(workers, address)
    else:
        map_jobs = _map_in_process

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(), direction="minimize",
            sampler=optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=max(1, min(10, trials // 2))
            ),
        )  # fmt: skip
        distributions = _distributions(dims)
        results: list[TrialResult] = []
        while len(results) < trials:
            asked = [study.ask(distributions) for _ in range(min(batch, trials - len(results)))]
            told = study.get_trials(deepcopy=True, states=_told_states())
            jobs = [(cell, pinned, t.params, t.number, told, dims, pruning) for t in asked]
            for trial, result in zip(asked, map_jobs(jobs), strict=True):
                _replay(study, trial, result)
                results.append(result)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return results, dims, None


def market_dimensions(cell: Cell) -> tuple:
    """The market hyperparameters searched for a cell, less the cell's pinned ones
    (``market.``-prefixed,
    :func:`~tatonnet.studies.search_space.market_space_for`): none for the flat market;
    the merchants' gains (and, on a network, their rebalancing) for a layered one. The
    books design's ``market.merchant_rule`` is not searched: the cell's rule names the
    merchants' rule (a study compares rules, so the rule is the cell's, not a trial's)."""
    pinned = (k for k, _ in cell.hyperparameters)
    return search_space.market_space_for(
        cell.market, fixed=(*pinned, search_space.MARKET_PREFIX + "merchant_rule"),
        central=cell.mode == "central",
    )  # fmt: skip


def _told_states():
    """The states of trials already told (their values are final)."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def _replay(study, trial, result: TrialResult) -> None:
    """Tell the main study what the worker measured: its reports, rung records, end state."""
    from optuna.trial import TrialState

    for step, value in result.reports:
        trial.report(value, step)
    for key, value in result.rungs:
        study._storage.set_trial_system_attr(trial._trial_id, key, value)
    trial.set_user_attr("status", result.status)
    if result.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, result.value)


def _check_options(cell, trials, batch, workers, report_every, reduction_factor) -> None:
    def whole(name, value, low):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise StudyError(f"tune: {name} must be a whole number >= {low}, got {value!r}")

    whole("trials", trials, 1)
    whole("batch", batch, 1)
    whole("workers", workers, 0)
    whole("reduction_factor", reduction_factor, 2)
    if report_every is not None:
        whole("report_every", report_every, 1)
    if cell.rule not in search_space.SEARCH_SPACES:
        raise StudyError(
            f"tune: rule {cell.rule!r} has no search space; known: {sorted(search_space.SEARCH_SPACES)}"
        )


# ---- the verdict -------------------------------------------------------------------------
def _cell_columns(cell: Cell) -> dict:
    return dict(
        scenario=cell.scenario, rule=cell.rule, mode=cell.mode, market=cell.market,
        agents=cell.agents, seed=cell.seed, rounds=cell.rounds, tol=cell.tol, signal=cell.signal,
    )  # fmt: skip


def _searched(dims) -> tuple:
    return tuple((d.name, d.describe()) for d in dims)


def _skipped_verdict(cell, dims, reason) -> TunedVerdict:
    return TunedVerdict(
        **_cell_columns(cell), verdict="skipped", status="skipped", hyperparameters=(),
        rounds_to_tol=None, best_value=None, trials=0, converged_trials=0, pruned_trials=0,
        converged_step_min=None, converged_step_max=None, searched=_searched(dims),
        recheck_seed=None, recheck_status="not run", reason=reason,
    )  # fmt: skip


def best_trial(results: Sequence[TrialResult]) -> TrialResult:
    """The trial of lowest objective (a pruned one only if every trial was pruned); ties go
    to the lower trial number."""
    finished = [r for r in results if r.status != "pruned"] or list(results)
    return min(finished, key=lambda r: (r.value, r.number))


def economy_depends_on_seed(cell: Cell) -> bool:
    """Whether the cell's economy differs at ``seed + 1``: centrally, whether the set of
    agents (endowments, shares, utility family and elasticity; their order aside: a seed may
    only shuffle them) differs; on a network, whether the agents in order or the graph do."""
    from tatonnet.studies.grid import _economy

    _, e0, n0 = _economy(cell.scenario, cell.agents, cell.graph, cell.seed)
    _, e1, n1 = _economy(cell.scenario, cell.agents, cell.graph, cell.seed + 1)
    r0, r1 = _agent_rows(e0), _agent_rows(e1)
    if cell.mode == "network":
        return not np.array_equal(r0, r1) or pickle.dumps(n0) != pickle.dumps(n1)
    return not np.array_equal(_sorted_rows(r0), _sorted_rows(r1))


def _agent_rows(economy) -> np.ndarray:
    """(n_agents, 2 g + 2): each agent's endowments, shares, family and elasticity."""
    return np.column_stack([
        economy.endowments, economy.shares, economy.family.astype(float), economy.sigma
    ])  # fmt: skip


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def _verdict(cell, dims, results: list[TrialResult]) -> TunedVerdict:
    best = best_trial(results)
    converged = [r for r in results if r.converged]
    steps = [dict(r.params)["step_size"] for r in converged]
    pruned = sum(r.status == "pruned" for r in results)
    searched = _searched(dims)
    ranges = ", ".join(f"{n} {s}" for n, s in searched)
    recheck_seed, recheck_status = None, "not run"
    if best.converged:
        if economy_depends_on_seed(cell):
            recheck_seed = cell.seed + 1
            again = run_trial(dataclasses.replace(cell, seed=recheck_seed), dict(best.params))
            recheck_status = again.status
        else:
            recheck_status = "not needed"
    if not best.converged:
        verdict = "fails"
        reason = (
            f"no trial converged: 0 of {len(results)} trials ({pruned} pruned) over {ranges}; "
            f"best {best.status}"
        )
    elif recheck_status in ("converged", "not needed"):
        verdict = "converges"
        reason = (
            f"{len(converged)} of {len(results)} trials converged, step_size "
            f"{min(steps):.3g}..{max(steps):.3g}"
            + (f"; re-check on seed {recheck_seed} converged" if recheck_seed is not None else "")
        )
    else:
        verdict = "unconfirmed"
        reason = (
            f"the best trial converged on seed {cell.seed} but its re-check on seed "
            f"{recheck_seed} is {recheck_status}"
        )
    return TunedVerdict(
        **_cell_columns(cell), verdict=verdict, status=best.status, hyperparameters=best.params,
        rounds_to_tol=best.rounds_to_tol, best_value=best.value, trials=len(results),
        converged_trials=len(converged), pruned_trials=pruned,
        converged_step_min=min(steps) if steps else None,
        converged_step_max=max(steps) if steps else None, searched=searched,
        recheck_seed=recheck_seed, recheck_status=recheck_status, reason=reason,
    )  # fmt: skip


# ---- a tuned study cell ------------------------------------------------------------------
#: Columns a tuned cell adds to its study row (:func:`run_tuned_cell`).
TUNED_COLUMNS = (
    "verdict", "trials", "converged_trials", "pruned_trials", "converged_step_min",
    "converged_step_max", "searched", "best_status", "recheck_seed", "recheck_status",
    "tuned_reason",
)  # fmt: skip


def tuned_columns(verdict: TunedVerdict) -> dict:
    """The study-row columns of a tuned verdict (:data:`TUNED_COLUMNS`)."""
    return {
        "verdict": verdict.verdict, "trials": verdict.trials,
        "converged_trials": verdict.converged_trials, "pruned_trials": verdict.pruned_trials,
        "converged_step_min": verdict.converged_step_min,
        "converged_step_max": verdict.converged_step_max,
        "searched": "; ".join(f"{n} {r}" for n, r in verdict.searched),
        "best_status": verdict.status, "recheck_seed": verdict.recheck_seed,
        "recheck_status": verdict.recheck_status, "tuned_reason": verdict.reason,
    }  # fmt: skip


def run_tuned_cell(cell: Cell) -> dict:
    """Tune one study cell (its sweep's ``tune`` settings, in this process), then run it at
    the best trial's hyperparameters for its row and trajectory.

    Returns ``{"row", "trajectory"}`` as :func:`tatonnet.studies.grid.run_cell`, the row
    with the tuned columns (:func:`tuned_columns`) added: ``status`` is the best setting's
    run status, ``verdict`` the cell's tuned verdict (``converges``, ``unconfirmed``,
    ``fails``, ``skipped``), and ``step_size`` / ``hyperparameters`` the best setting.
    """
    import time

    from tatonnet.studies.grid import run_cell

    t0 = time.perf_counter()
    verdict = tune_cell(cell, **dict(cell.tune))  # Tune's fields are tune_cell's options
    if verdict.verdict == "skipped":
        result = run_cell(cell)
    else:
        best = dict(verdict.hyperparameters)
        step = best.pop("step_size")
        result = run_cell(dataclasses.replace(
            cell, step_size=step, hyperparameters=tuple(sorted(best.items()))
        ))  # fmt: skip
        # the same run twice gives the same bits (a best trial stopped early by the pruner
        # ran on here, so its status is the rerun's)
        if verdict.status != "pruned" and result["row"]["status"] != verdict.status:
            raise RuntimeError(
                f"the best trial ({verdict.status}) ran again as {result['row']['status']}"
            )
    row = result["row"]
    row.update(tuned_columns(verdict))
    row["seconds"] = time.perf_counter() - t0
    return result


def run_tuned_cell_safely(cell: Cell) -> dict:
    """:func:`run_tuned_cell`; a cell that raises is a row with status ``error``."""
    from tatonnet.studies.grid import error_result

    try:
        return run_tuned_cell(cell)
    except Exception as exc:  # noqa: BLE001
        result = error_result(cell, exc)
        result["row"].update(verdict="error", tuned_reason=result["row"]["reason"])
        return result
