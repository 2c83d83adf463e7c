"""Running a scenario to its verdict: the round loop, progress, timing and the summary.

The in-process engine is :class:`environment.model.MarketModel` (the fused numba kernel on
all cores of one process). ``workers`` is recorded; multi-worker Ray execution is the job
of the Ray engine.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from importlib import metadata

import numpy as np
from tqdm import tqdm

from agents.utility import Family
from environment import equilibrium
from environment.model import MarketModel
from environment.scenario import Scenario
from environment.status import Verdict


@dataclasses.dataclass
class RunResult:
    """What a finished run produced (see :func:`distributed.output.write_run`)."""

    model: MarketModel
    verdict: Verdict
    summary: dict
    references: list[np.ndarray]


def reference_equilibria(model: MarketModel) -> tuple[list[np.ndarray], str]:
    """Equilibria of the centralized economy and how they were found."""
    economy = model.economy
    if (economy.family == Family.COBB_DOUGLAS).all():
        try:
            return [equilibrium.cobb_douglas_equilibrium(economy)], "closed form (Cobb-Douglas)"
        except ValueError:
            pass
    found = equilibrium.find_equilibria(economy, seed=model.config.seed)
    return found, "numerical root finding from 8 starts"


def run_scenario(
    scenario: Scenario,
    *,
    workers: int = 0,
    reference: bool = True,
    progress: bool = True,
) -> RunResult:
    """Run ``scenario`` until it converges, diverges or runs out of rounds."""
    t_start = time.perf_counter()
    model = MarketModel(scenario)
    d = scenario.dynamics
    n = model.economy.n_agents

    bar = tqdm(
        total=d.rounds, delay=2.0, file=sys.stderr, unit="round", disable=not progress,
        desc=scenario.name, dynamic_ncols=True,
    )  # fmt: skip
    t_first = t_loop = time.perf_counter()
    with bar:
        for r in range(d.rounds):
            model.step()
            if r == 0:  # the first round may include loading compiled kernels
                t_loop = time.perf_counter()
            bar.update(1)
            if r % 100 == 0:
                m = model.metrics
                bar.set_postfix(excess=f"{m.excess_demand:.2e}", disp=f"{m.price_dispersion:.2e}")
            if not model.running:
                break
    t_end = time.perf_counter()
    rounds = model.state.round
    verdict = model.classify()

    references, method = reference_equilibria(model) if reference else ([], "not computed")
    m = model.metrics
    near = equilibrium.nearest(m.mean_price, references)
    timed_rounds = rounds - 1
    loop_seconds = t_end - t_loop
    summary = {
        "scenario": scenario.name,
        "scenario_source": scenario.source,
        "n_agents": n,
        "n_goods": model.economy.n_goods,
        "goods": list(model.economy.goods),
        "numeraire": model.economy.numeraire,
        "graph": model.network.kind,
        "n_edges": model.network.n_edges,
        "rule": model.dynamics.rule.name,
        "step_size": model.dynamics.rule.step_size,
        "hyperparameters": dataclasses.asdict(model.dynamics.rule),
        "signal": model.dynamics.signal,
        "seed": scenario.seed,
        "workers": workers,
        "engine": "in-process",
        "rounds": rounds,
        "max_rounds": d.rounds,
        "tol": d.tol,
        "status": verdict.status,
        "reason": verdict.reason,
        "evidence": verdict.evidence,
        "excess_demand": m.excess_demand,
        "excess_demand_per_good": m.excess.tolist(),
        "price_dispersion": m.price_dispersion,
        "prices": m.mean_price.tolist(),
        "reference_prices": [p.tolist() for p in references] if reference else None,
        "reference_method": method,
        "nearest_reference": None if near is None else near[0],
        "distance_to_reference": None if near is None else near[1],
        "messages_per_round": 0 if model.network.is_central else 2 * model.network.n_edges,
        "floats_per_message": 2 * model.economy.n_goods,
        "wall_seconds": t_end - t_start,
        "first_round_seconds": t_loop - t_first,
        "agent_rounds_per_second": (n * timed_rounds / loop_seconds) if timed_rounds else None,
        "versions": {p: _version(p) for p in ("tatonnet", "mesa", "numpy", "numba", "networkx")},
    }
    return RunResult(model, verdict, summary, references)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def format_summary(summary: dict) -> str:
    """A short human-readable summary of a run (several lines)."""
    s = summary
    fmt = lambda v: np.array2string(np.asarray(v), precision=6, separator=", ")  # noqa: E731
    lines = [
        f"tatonnet: {s['scenario']} - {s['n_agents']} agents, {s['n_goods']} goods, "
        f"{s['graph']} network, rule {s['rule']} (step {s['step_size']:g}, {s['signal']})",
        f"status:   {s['status']} after {s['rounds']} rounds - {s['reason']}",
        f"prices:   {fmt(s['prices'])}  (network mean, {s['goods'][s['numeraire']]} = 1)",
    ]
    if s["reference_prices"]:
        k = s["nearest_reference"]
        lines.append(
            f"equilibrium: {fmt(s['reference_prices'][k])}  distance {s['distance_to_reference']:.3g}"
            f" ({len(s['reference_prices'])} found, {s['reference_method']})"
        )
    elif s["reference_prices"] is not None:
        lines.append(f"equilibrium: none found ({s['reference_method']})")
    speed = s["agent_rounds_per_second"]
    lines.append(
        f"speed:    {speed:.3g} agent-rounds/s, wall {s['wall_seconds']:.2f} s"
        if speed
        else f"wall:     {s['wall_seconds']:.2f} s"
    )
    return "\n".join(lines)
