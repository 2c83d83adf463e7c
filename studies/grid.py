"""``tatonnet study``: a grid of scenarios x rules x step sizes x seeds x markets, judged.

The grid is a TOML *study file* (built-in: ``studies/specs/xor.toml``, the default,
and ``quick.toml`` for ``--quick``), validated with pydantic. It is a list of ``[[sweep]]``
tables; each sweep is the product of its lists::

    name = "xor"
    [[sweep]]
    scenarios = ["scarf", "ces-substitutes"]
    rules = ["additive", "entropic"]
    step_sizes = [0.05, 0.2]          # or per rule: { additive = [0.1], entropic = [0.05] }
    seeds = [0]
    graph = "central"                 # a network kind, "central", or "scenario" (its own)
    agents = 300                      # optional: rescale the scenario
    markets = ["flat"]                # "flat", "layered", "layered-books" (merchant layer)
    rounds = 2000
    tol = 1e-8

Without ``step_sizes`` (or for a rule a per-rule table leaves out) a cell runs at the
scenario's own step size when the scenario names that rule, else at the rule's default.

A sweep with a ``[sweep.tune]`` table (:class:`Tune`: ``trials``, ``batch``, ``seed``,
``prune``, ``reduction_factor``, ``report_every``) has no ``step_sizes``: each of its cells
is tuned (:func:`tatonnet.studies.tune.run_tuned_cell`: the rule's step size and main
hyperparameters searched, the ``hyperparameters`` table pinned) and its row is the best
setting's run with the tuned verdict beside it.

Every *cell* (one scenario, graph, market, rule, step size, seed) runs the dynamics
directly (no per-run folder) for at most ``rounds`` rounds, stops when
:func:`tatonnet.environment.tatonnement.status.check_stop` says converged or diverged, and is otherwise
classified from its trajectory. Cells are deterministic, so the table is identical
whatever the number of Ray workers. Combinations that cannot run (proportional response on
an exchange economy, a market whose module is absent) are kept as rows with status
``skipped`` and the reason.

Outputs (in ``--out``; each finished cell is first stored in its cell cache ``cells/``,
:mod:`tatonnet.studies.cache`, and the tables are assembled from the stored cells):
``verdicts.csv`` and ``verdicts.md`` (one row
per cell and a summary pivot), ``cells.parquet`` (downsampled trajectories: ``cell``,
``round``, ``excess_demand``, ``price_dispersion``, ``prices`` list), the figures
(:mod:`tatonnet.studies.figures`, PNG, PDF and SVG) and ``timing.csv`` (wall seconds per
cell; machine-dependent, so not in ``verdicts.csv``, which is identical on every run).
A cell that raises is a row with status ``error`` and its reason, and the command exits 1.

Messages sent: ``messages_per_round(rule, network, g)`` (which counts a rule's exchanges
per round) times the rounds run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tatonnet.environment import sizing
from tatonnet.environment.scenario import check_name, find_toml, read_toml
from tatonnet.studies import search_space

STUDIES_DIR = Path(__file__).parent / "specs"
MARKETS = ("flat", "layered", "layered-books")
#: Trajectory points kept per cell in ``cells.parquet`` and the figures.
KEEP_POINTS = 400

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Rounds = Annotated[int, Field(gt=0, le=10_000_000)]
#: Most cells one study expands to (each is a row, a trajectory and a task).
MAX_CELLS = 1_000_000


class StudyError(ValueError):
    """The study file or the study's options are invalid (one-line message)."""


# ---- the study file ---------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tune(_Strict):
    """A sweep's tuner (:func:`tatonnet.studies.tune.tune_cell`): each cell searches its
    rule's step size and main hyperparameters instead of running fixed step sizes. The
    fields are :func:`~tatonnet.studies.tune.tune_cell`'s options of the same names."""

    trials: int = Field(24, ge=1, le=10_000)
    batch: int = Field(8, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=sizing.MAX_SEED)
    prune: bool = True
    reduction_factor: int = Field(3, ge=2, le=100)
    report_every: int | None = Field(None, ge=1)


class Sweep(_Strict):
    """One block of the grid: the product of its lists."""

    name: str = ""
    scenarios: list[str] = Field(min_length=1)
    rules: list[str] = Field(min_length=1)
    step_sizes: list[PositiveFloat] | dict[str, list[PositiveFloat]] | None = None
    hyperparameters: dict[str, dict[str, FiniteFloat | str]] = Field(default_factory=dict)
    seeds: list[Annotated[int, Field(ge=0, le=sizing.MAX_SEED)]] = Field(
        default_factory=lambda: [0], min_length=1
    )
    graph: str = "central"
    agents: int | None = Field(None, gt=0, le=sizing.MAX_AGENTS)
    markets: list[Literal["flat", "layered", "layered-books"]] = Field(
        default_factory=lambda: ["flat"]
    )
    signal: Literal["tracking", "local"] = "tracking"
    rounds: Rounds = 2000
    tol: PositiveFloat = 1e-8
    tune: Tune | None = None

    @model_validator(mode="after")
    def _lists(self):
        if self.tune is not None and self.step_sizes is not None:
            raise ValueError(
                "tune: a tuned sweep searches the step size; leave out step_sizes (pin other "
                "hyperparameters under [sweep.hyperparameters])"
            )
        if isinstance(self.step_sizes, list) and not self.step_sizes:
            raise ValueError("step_sizes: empty list")
        if isinstance(self.step_sizes, dict):
            for rule, steps in self.step_sizes.items():
                if rule not in self.rules:
                    raise ValueError(f"step_sizes: {rule!r} is not in this sweep's rules")
                if not steps:
                    raise ValueError(f"step_sizes.{rule}: empty list")
        for rule in self.hyperparameters:
            if rule not in self.rules:
                raise ValueError(f"hyperparameters: {rule!r} is not in this sweep's rules")
        if not self.markets:
            raise ValueError("markets: empty list")
        return self

    def steps_for(self, rule: str) -> list[float | None]:
        if self.step_sizes is None:
            return [None]
        if isinstance(self.step_sizes, dict):
            return list(self.step_sizes.get(rule, [None]))
        return list(self.step_sizes)


class Study(_Strict):
    name: str
    description: str = ""
    sweep: list[Sweep] = Field(min_length=1)
    source: str = ""

    @model_validator(mode="after")
    def _name(self):
        check_name(self.name)  # it names the default folder runs/study-<name>
        return self


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid (plain data: it travels to Ray workers)."""

    id: int
    sweep: str
    scenario: str
    graph: str
    agents: int | None
    market: str
    rule: str
    step_size: float | None
    hyperparameters: tuple
    seed: int
    rounds: int
    tol: float
    signal: str
    #: the sweep's tuner settings, ``((name, value), ...)`` sorted; empty: not tuned
    tune: tuple = ()

    @property
    def mode(self) -> str:
        return "central" if self.graph == "central" else "network"


def load_study(path_or_name: str | Path) -> Study:
    """Parse and validate a study file (a path, or a built-in name); raises StudyError."""
    found = find_toml(path_or_name, STUDIES_DIR)
    if found is None:
        raise StudyError(f"--grid {str(path_or_name)!r}: no such file")
    path, source = found
    data = read_toml(path, f"study {source}", StudyError)
    data.setdefault("name", path.stem)
    try:
        return Study.model_validate({**data, "source": source})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"] if not _is_union_tag(p)
        ).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        raise StudyError(f"study {source}: {loc + ': ' if loc else ''}{msg}{shown}") from None


def _is_union_tag(part) -> bool:
    return isinstance(part, str) and part.startswith(("list[", "dict[", "function-"))


def expand(study: Study) -> list[Cell]:
    """All cells of the study, names resolved against the registries; raises StudyError.

    Every scenario name, rule name, graph kind and (rule, step size, hyperparameters)
    combination is checked here, before anything runs or any folder is created.
    """
    from tatonnet.agents.rules import RULES, RuleError, make_rule
    from tatonnet.environment.network import GENERATORS
    from tatonnet.environment.scenario import SCENARIO_ERRORS, load_scenario

    cells: list[Cell] = []
    for k, sw in enumerate(study.sweep):
        where = f"study {study.source}: sweep[{k}]{f' ({sw.name})' if sw.name else ''}"
        tune = () if sw.tune is None else tuple(sorted(sw.tune.model_dump().items()))
        if sw.graph != "scenario" and sw.graph not in GENERATORS:
            raise StudyError(
                f"{where}: graph {sw.graph!r} unknown; expected 'scenario' or one of "
                f"{list(GENERATORS)}"
            )
        for name in sw.rules:
            if name not in RULES:
                raise StudyError(f"{where}: unknown rule {name!r}; known: {sorted(RULES)}")
            if sw.tune is not None and name not in search_space.SEARCH_SPACES:
                raise StudyError(f"{where}: tune: rule {name!r} has no search space")
        for name in sw.scenarios:
            try:
                scenario = load_scenario(name).with_overrides(
                    agents=sw.agents, graph=None if sw.graph == "scenario" else sw.graph
                )
                check_cell_size(scenario, sw.rounds)
            except SCENARIO_ERRORS as exc:
                raise StudyError(f"{where}: {exc}") from None
        n_cells = len(sw.scenarios) * len(sw.markets) * len(sw.seeds) * sum(
            len(sw.steps_for(rule)) for rule in sw.rules
        )
        if len(cells) + n_cells > MAX_CELLS:
            raise StudyError(f"{where}: the grid has over {MAX_CELLS} cells")
        for scenario in sw.scenarios:
            for market in sw.markets:
                for rule in sw.rules:
                    hyper = dict(sw.hyperparameters.get(rule, {}))
                    for step in sw.steps_for(rule):
                        try:
                            make_rule(
                                rule, **split_hyperparameters(hyper)[0],
                                **({} if step is None else {"step_size": step}),
                            )  # fmt: skip
                        except (RuleError, TypeError) as exc:
                            raise StudyError(f"{where}: {exc}") from None
                        for seed in sw.seeds:
                            cells.append(
                                Cell(
                                    len(cells), sw.name or f"sweep{k}", scenario, sw.graph,
                                    sw.agents, market, rule, step, tuple(sorted(hyper.items())),
                                    seed, sw.rounds, sw.tol, sw.signal, tune,
                                )
                            )  # fmt: skip
    if not cells:
        raise StudyError(f"study {study.source}: the grid is empty")
    return cells


def check_cell_size(scenario, rounds: int, available: int | None = None) -> None:
    """Raise SizeError if one cell of ``scenario`` run for ``rounds`` rounds does not fit
    this machine's memory: the economy and graph (as a run) plus the cell's trajectory
    arrays (``rounds`` x (3 g + 2) float64)."""
    g = scenario.n_goods
    needed = scenario.memory_estimate(rounds=0) + rounds * (3 * g + 2) * 8
    sizing.check_memory(
        needed,
        f"a cell of scenario {scenario.source or scenario.name} ({scenario.n_agents} agents, "
        f"{g} goods, {scenario.network.kind} network, {rounds} rounds)",
        available,
    )


# ---- verdicts, equilibria and markets of a cell -----------------------------------------
def _safe_equilibria(economy, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """The reference equilibria ``run.py`` reports
    (:func:`tatonnet.environment.equilibrium.reference_equilibria`), with a solver failure recorded
    instead of ending the study."""
    from tatonnet.environment import equilibrium

    try:
        return equilibrium.reference_equilibria(economy, seed=seed)
    except Exception as exc:  # noqa: BLE001  (recorded in the table, column equilibrium_method)
        return [], f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def judge(history: dict, stop, tol: float, numeraire: int, references=(), space="log") -> dict:
    """Verdict columns of one run (:func:`tatonnet.environment.tatonnement.status.classify_run`).

    ``history`` holds per-round arrays from round 1: ``excess_demand`` (T,),
    ``price_dispersion`` (T,), ``mean_price`` (T, g), ``log_min`` / ``log_max`` (T, g)
    (extreme agent log-prices); ``stop`` is the verdict that ended the run early
    (converged / diverged) or None. Columns: ``status``, ``reason``, ``rounds_to_tol``,
    ``reached`` (index of the reference equilibrium a converged run reached), ``period``
    (cycling), ``evidence`` (one line: period and amplitude trend, the price heading to
    0 / infinity and the smallest price, or the remaining dispersion).
    """
    from tatonnet.environment.tatonnement import status

    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(history["mean_price"])
    with np.errstate(all="ignore"):  # diverged paths overflow; the verdict says so
        verdict = status.classify_run(
            history["excess_demand"], history["price_dispersion"], logp,
            numeraire=numeraire, tol=tol, references=references,
            log_min=history.get("log_min"), log_max=history.get("log_max"), space=space,
            stop=stop,
        )  # fmt: skip
    ev = verdict.evidence
    rounds_to_tol = ev.get("rounds_to_tol") if verdict.status == "converged" else None
    return {
        "status": verdict.status,
        "reason": verdict.reason,
        "rounds_to_tol": rounds_to_tol,
        "reached": ev.get("equilibrium") if verdict.status == "converged" else None,
        "period": ev.get("period") if verdict.status == "cycling" else None,
        "evidence": _evidence_line(verdict),
    }


def _evidence_line(verdict) -> str:
    """The evidence behind a non-converged verdict, in one short line."""
    ev = verdict.evidence
    if verdict.status == "cycling":
        parts = [f"period {ev.get('period')}"]
        if ev.get("amplitude") is not None:
            parts.append(f"amplitude {ev['amplitude']:.3g} ({ev.get('amplitude_trend', '?')})")
        return ", ".join(parts)
    if verdict.status == "diverged":
        parts = []
        heads = ev.get("heads_to") or {}
        if heads:
            parts.append(", ".join(f"p{k} -> {v}" for k, v in heads.items()))
        if ev.get("min_price") is not None:
            parts.append(f"min price {ev['min_price']:.3g}")
        if ev.get("first_floor_round") is not None:
            parts.append(f"bound hit at round {ev['first_floor_round']}")
        return "; ".join(parts)
    if verdict.status == "stalled":
        return f"dispersion {ev.get('dispersion_last', float('nan')):.3g}"
    if verdict.status == "numerical_error":
        return f"numerical: {ev.get('cause', 'non-finite arithmetic')}"
    return ""


#: The layered market's design behind each layered market name
#: (:data:`tatonnet.environment.trade.layered.DESIGNS`).
LAYERED_DESIGNS = {"layered": "kernel", "layered-books": "books"}

#: Prefix of a market hyperparameter in a cell's or a trial's hyperparameters.
MARKET_PREFIX = search_space.MARKET_PREFIX


def split_hyperparameters(hyper: dict) -> tuple[dict, dict]:
    """``(rule hyperparameters, market parameters)``: the ``market.``-prefixed keys of
    ``hyper`` split off, without their prefix (``{"step_size": 0.1, "market.flow_gain":
    0.5}`` -> ``({"step_size": 0.1}, {"flow_gain": 0.5})``)."""
    rule, market = {}, {}
    for key, value in hyper.items():
        if key.startswith(MARKET_PREFIX):
            market[key[len(MARKET_PREFIX) :]] = value
        else:
            rule[key] = value
    return rule, market


def make_market(market: str, economy, network, rule, signal: str, market_params=None):
    """The dynamics of one cell: the flat market (``make_dynamics``) or a layered one.

    ``market_params``: the market's parameters (names without the ``market.`` prefix,
    :func:`split_hyperparameters`); a layered market takes those of
    :data:`tatonnet.environment.trade.layered.DEFAULTS` but ``signal`` (the cell's), and
    ``layered-books`` also ``merchant_rule``. Returns ``(dynamics, None)`` or ``(None,
    reason)`` when the combination cannot run; raises StudyError for market parameters the
    market does not take (any, for ``flat``).
    """
    from tatonnet.environment.engines import make_dynamics

    params = dict(market_params or {})
    if market in LAYERED_DESIGNS:
        try:
            from tatonnet.environment.trade.layered import DEFAULTS, make_layered_dynamics
        except ModuleNotFoundError as exc:
            if exc.name != "tatonnet.environment.trade.layered":
                raise
            return None, "not available: tatonnet.environment.trade.layered is not installed"
        known = set(DEFAULTS) - {"signal"}
        if market == "layered-books":
            known.add("merchant_rule")
        unknown = sorted(set(params) - known)
        if unknown:
            raise StudyError(
                f"market {market!r}: unknown market parameter {MARKET_PREFIX + unknown[0]!r}; "
                f"expected one of {sorted(MARKET_PREFIX + k for k in known)}"
            )
        design = LAYERED_DESIGNS[market]
        factory = functools.partial(make_layered_dynamics, design=design, **params)
    elif params:
        raise StudyError(
            f"market {market!r} takes no market parameters, got "
            f"{MARKET_PREFIX + sorted(params)[0]!r}"
        )
    else:
        factory = functools.partial(make_dynamics, signal=signal)
    try:
        return factory(economy, network, rule), None
    except ValueError as exc:  # the project's user errors (RuleError, EconomyError...)
        return None, f"not applicable: {str(exc).splitlines()[0]}"


def _incompatible(rule_name: str, scenario) -> str | None:
    """Why a rule cannot run on a scenario (known before building anything), or None."""
    fisher = getattr(scenario, "fisher", None) is not None
    if rule_name == "proportional-response" and not fisher:
        return "not applicable: proportional response needs a Fisher market"
    return None


# ---- one cell -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _economy(scenario_name: str, agents: int | None, graph: str, seed: int):
    """Scenario, economy and network of a cell (cached: cells share them)."""
    from tatonnet.environment.scenario import build_market, load_scenario

    sc = load_scenario(scenario_name).with_overrides(
        agents=agents, graph=None if graph == "scenario" else graph, seed=seed
    )
    economy, _, network, _ = build_market(sc)
    return sc, economy, network


@functools.lru_cache(maxsize=16)
def _equilibria(scenario_name: str, agents: int | None, seed: int):
    """Equilibria of a cell's economy (which does not depend on the graph)."""
    _, economy, _ = _economy(scenario_name, agents, "central", seed)
    return _safe_equilibria(economy, seed)


def _downsample(T: int, keep: int = KEEP_POINTS) -> np.ndarray:
    """Indices 0..T-1 to keep: evenly spaced, always the first and the last."""
    if T <= keep:
        return np.arange(T)
    return np.unique(np.linspace(0, T - 1, keep).round().astype(np.int64))


def cell_hyperparameters(cell: Cell, scenario) -> tuple[dict, dict]:
    """``(rule hyperparameters, market parameters)`` a cell is made with
    (:func:`split_hyperparameters` of the sweep's): the rule's with its step size, else the
    scenario's own step size when the scenario names this rule (else the rule's default)."""
    hyper, market = split_hyperparameters(dict(cell.hyperparameters))
    if cell.step_size is not None:
        hyper["step_size"] = cell.step_size
    elif scenario.dynamics.rule == cell.rule and scenario.dynamics.step_size is not None:
        hyper.setdefault("step_size", scenario.dynamics.step_size)
    return hyper, market


def run_cell(cell: Cell) -> dict:
    """Run one cell; returns ``{"row": verdict row, "trajectory": downsampled arrays}``."""
    from tatonnet.agents.rules import make_rule
    from tatonnet.environment import equilibrium
    from tatonnet.environment.scenario import initial_prices
    from tatonnet.environment.tatonnement import status
    from tatonnet.environment.tatonnement.dynamics import messages_per_round

    t0 = time.perf_counter()
    sc, economy, network = _economy(cell.scenario, cell.agents, cell.graph, cell.seed)
    references, method = _equilibria(cell.scenario, cell.agents, cell.seed)
    rule_hyper, market_hyper = cell_hyperparameters(cell, sc)
    rule = make_rule(cell.rule, **rule_hyper)
    row = {
        "cell": cell.id,
        "sweep": cell.sweep,
        "scenario": cell.scenario,
        "mode": cell.mode,
        "graph": network.kind,
        "agents": economy.n_agents,
        "goods": economy.n_goods,
        "market": cell.market,
        "rule": cell.rule,
        "step_size": rule.step_size,
        "hyperparameters": " ".join(
            f"{k}={v:g}" if isinstance(v, int | float) else f"{k}={v}"  # space = "price"
            for k, v in dict(cell.hyperparameters).items()
        ),
        "_hyper": dict(cell.hyperparameters),
        "seed": cell.seed,
        "max_rounds": cell.rounds,
        "tol": cell.tol,
        "_goods": list(economy.goods),
    }
    reason = _incompatible(cell.rule, sc)
    dyn = None
    if reason is None:
        dyn, reason = make_market(cell.market, economy, network, rule, cell.signal, market_hyper)
    if dyn is None:
        row.update(status="skipped", reason=reason, rounds=0)
        return {"row": _finish_row(row, None, references, method, None), "trajectory": None}

    state = dyn.init_state(initial_prices(sc))
    p0 = np.asarray(dyn.prices(state), dtype=float).mean(axis=0)
    g = economy.n_goods
    excess = np.empty(cell.rounds)
    disp = np.empty(cell.rounds)
    prices = np.empty((cell.rounds, g))
    log_min = np.empty((cell.rounds, g))
    log_max = np.empty((cell.rounds, g))
    stop, T = None, 0
    with np.errstate(all="ignore"):
        while T < cell.rounds:
            state, m = dyn.step(state)
            excess[T], disp[T], prices[T] = m.excess_demand, m.price_dispersion, m.mean_price
            log_min[T], log_max[T] = m.log_min, m.log_max
            T += 1
            stop = status.stop_verdict(m, cell.tol)
            if stop is not None:
                break
    history = {
        "excess_demand": excess[:T], "price_dispersion": disp[:T], "mean_price": prices[:T],
        "log_min": log_min[:T], "log_max": log_max[:T],
    }  # fmt: skip
    row.update(judge(history, stop, cell.tol, economy.numeraire, references, rule.space))
    row["rounds"] = T
    per_round = getattr(dyn, "messages_per_round", None)
    msgs = per_round() if callable(per_round) else messages_per_round(rule, network, g)
    row["exchanges_per_round"] = msgs["exchanges"]
    row["messages_per_round"] = msgs["messages"]
    row["messages"] = msgs["messages"] * T
    row["floats"] = msgs["floats"] * T
    final = prices[T - 1] if T else p0
    row["excess_demand"] = float(excess[T - 1]) if T else math.nan
    row["price_dispersion"] = float(disp[T - 1]) if T else math.nan
    row["prices"] = " ".join(f"{p:.6g}" for p in final)
    keep = _downsample(T)
    trajectory = {
        "round": np.concatenate([[0], keep + 1]),
        "excess_demand": np.concatenate([[np.nan], excess[keep]]),
        "price_dispersion": np.concatenate([[np.nan], disp[keep]]),
        "prices": np.vstack([p0[None, :], prices[keep]]),
    }
    row = _finish_row(row, final, references, method, equilibrium)
    row["seconds"] = time.perf_counter() - t0
    return {"row": row, "trajectory": trajectory}


def _finish_row(row, final, references, method, equilibrium_module) -> dict:
    row.setdefault("rounds_to_tol", None)
    for key in ("reached", "period"):
        row.setdefault(key, None)
    row.setdefault("evidence", "")
    row.setdefault("hyperparameters", "")
    for key in ("exchanges_per_round", "messages_per_round", "messages", "floats"):
        row.setdefault(key, 0)
    for key in ("excess_demand", "price_dispersion"):
        row.setdefault(key, math.nan)
    row.setdefault("prices", "")
    row["equilibria"] = len(references)
    row["_references"] = [np.asarray(p).tolist() for p in references]
    row["equilibrium_method"] = method
    if final is not None and references and np.isfinite(final).all():
        d = [equilibrium_module.distance(final, r) for r in references]
        row["distances"] = " ".join(f"{x:.3g}" for x in d)
        row["nearest"] = int(np.argmin(d))
        row["distance"] = float(min(d))
    else:
        row["distances"], row["nearest"], row["distance"] = "", None, math.nan
    return row


# ---- running the grid -------------------------------------------------------------------
def run_cell_safely(cell: Cell) -> dict:
    """:func:`run_cell`; a cell that raises becomes a row with status ``error`` and the reason.

    One failing combination (a rule that breaks on one economy) must not discard hours of
    other cells; ``main`` reports error rows on stderr and exits 1.
    """
    try:
        return run_cell(cell)
    except Exception as exc:  # noqa: BLE001
        return error_result(cell, exc)


def error_result(cell: Cell, exc: Exception) -> dict:
    """The result of a cell that raised ``exc``: a row with status ``error`` and the reason."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    row = {
        "cell": cell.id, "sweep": cell.sweep, "scenario": cell.scenario, "mode": cell.mode,
        "graph": cell.graph, "agents": cell.agents, "goods": None, "market": cell.market,
        "rule": cell.rule, "step_size": cell.step_size, "seed": cell.seed,
        "max_rounds": cell.rounds, "tol": cell.tol, "status": "error", "rounds": 0,
        "reason": f"{type(exc).__name__}: {first}",
    }  # fmt: skip
    return {"row": _finish_row(row, None, [], "not computed", None), "trajectory": None}


def run_cells(
    cells: list[Cell], workers: int, address: str | None, progress: bool, sink=None,
    done: int = 0, run=None,
) -> list[dict] | None:
    """Run every cell, in this process (``workers == 0``) or as Ray tasks.

    Each result (``{"row", "trajectory"}``, :func:`run_cell_safely`) goes to
    ``sink(cell, result)`` in this process the moment its cell finishes (in the order they
    finish), and is not kept; without a sink the results are returned in the order of
    ``cells``. ``done`` cells are already finished elsewhere (reused from a study folder's
    cache): the progress bar counts them, out of ``done + len(cells)``. ``run`` runs one
    cell (default :func:`run_cell_safely`; a study passes one that also tunes,
    :func:`tatonnet.studies.cache.run_any_cell`).
    """
    run = run or run_cell_safely
    from tqdm import tqdm

    bar = tqdm(
        total=done + len(cells), initial=done, delay=2.0, file=sys.stderr, unit="cell",
        disable=not progress, desc="study", dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
    )  # fmt: skip
    results: list[dict | None] | None = [None] * len(cells) if sink is None else None

    def finished(index: int, result: dict) -> None:
        if sink is None:
            results[index] = result
        else:
            sink(cells[index], result)
        bar.update(1)

    with bar:
        if workers == 0:
            for index, cell in enumerate(cells):
                finished(index, run(cell))
            return results
        import ray

        from tatonnet.distributed import cluster

        cluster.connect(workers, address)
        # heavy cells first, so that the last ones to finish are short
        order = sorted(range(len(cells)), key=lambda i: -(cells[i].rounds * (cells[i].agents or 1000)))
        remote = ray.remote(num_cpus=1, max_retries=2)(run)
        env = {"env_vars": {"NUMBA_NUM_THREADS": "1"}} if not address else None
        pending = {}
        for index in order:
            cell = cells[index]
            ref = remote.options(runtime_env=env).remote(cell) if env else remote.remote(cell)
            pending[ref] = index
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    finished(pending.pop(ref), ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return results
