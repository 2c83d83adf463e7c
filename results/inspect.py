"""A finished run folder as terminal text: summary, one agent, an agent's replayed history.

An agent's per-round history is not stored in a run folder (it would be rounds x agents x
goods floats); ``--history`` replays the run in this process from ``run.json`` — same
seed, bit-identical with any engine — recording that agent's prices, and checks that the
replay ends at the stored final prices. It is refused above :data:`REPLAY_LIMIT`
agent-rounds.
"""

from __future__ import annotations

import numpy as np

from tatonnet.results.export import ExportError, RunFolder

#: ``--history`` replays at most this many agent-rounds (~1 minute on one core).
REPLAY_LIMIT = 100_000_000
BLOCKS = " ▁▂▃▄▅▆▇█"


# ---- text charts --------------------------------------------------------------------------
def sparkline(values, width: int = 60) -> tuple[str, float, float]:
    """``values`` (n,) binned to ``width`` columns (last value of each bin) as block characters.

    Returns ``(line, low, high)``: the range the blocks span; non-finite or non-positive
    entries of a log curve should be NaN and print as a blank.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "", np.nan, np.nan
    edges = np.linspace(0, v.size, min(width, v.size) + 1).astype(int)
    cols = v[np.maximum(edges[1:] - 1, 0)]
    finite = np.isfinite(cols)
    if not finite.any():
        return " " * cols.size, np.nan, np.nan
    lo, hi = cols[finite].min(), cols[finite].max()
    span = hi - lo if hi > lo else 1.0
    level = np.where(finite, 1 + np.round((cols - lo) / span * 7), 0).astype(int)
    return "".join(BLOCKS[k] for k in level), float(lo), float(hi)


def _log10(values) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(v), np.nan)


def _vec(values, digits: int = 6) -> str:
    return "[" + ", ".join(f"{x:.{digits}g}" for x in values) + "]"


def deviations(run: RunFolder) -> np.ndarray:
    """Per agent, root-mean-square log-price deviation from the network mean; (n_agents,).

    Agents with a non-finite or non-positive price (a diverged run) get ``inf``: they are
    the first outliers.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(run.prices())
        bad = ~np.isfinite(logp).all(axis=1)
        mean = logp[~bad].mean(axis=0) if (~bad).any() else np.zeros(logp.shape[1])
        dev = np.sqrt(((logp - mean) ** 2).mean(axis=1))
    dev[bad] = np.inf
    return dev


# ---- the two views ----------------------------------------------------------------------
def summary_text(run: RunFolder, top: int = 5, width: int = 60) -> str:
    s = run.summary
    lines = [
        f"run:      {run.path}",
        f"scenario: {s['scenario']} - {s['n_agents']} agents, {s['n_goods']} goods, "
        f"{s['graph']} network ({s.get('n_edges', '?')} edges), rule {s['rule']} "
        f"(step {s['step_size']:g}, {s['signal']}), seed {s['seed']}",
        f"status:   {s['status']} after {s['rounds']} of {s['max_rounds']} rounds - {s['reason']}",
        f"final:    excess demand {s['excess_demand']:.3e}, price dispersion "
        f"{s['price_dispersion']:.3e} (tol {s['tol']:g})",
        f"prices:   {_vec(s['prices'])}  (network mean, {s['goods'][s['numeraire']]} = 1)",
    ]
    if s.get("reference_prices"):
        ref = s["reference_prices"][s["nearest_reference"]]
        lines.append(
            f"equilibrium: {_vec(ref)}  distance {s['distance_to_reference']:.3g} "
            f"({s['reference_method']})"
        )
    else:
        lines.append(f"equilibrium: none ({s.get('reference_method', 'not computed')})")
    metrics = run.metrics
    lines.append(f"convergence: log10 per round, rounds 0..{metrics.num_rows - 1} left to right")
    curves = [("excess demand", metrics["excess_demand"].to_numpy())]
    if s["graph"] != "central":
        curves.append(("dispersion", metrics["price_dispersion"].to_numpy()))
    for name, values in curves:
        line, lo, hi = sparkline(_log10(values), width)
        lines.append(f"  {name:13s} |{line}|  {lo:+.1f} .. {hi:+.1f}")
    if s["graph"] == "central":
        lines.append("price outliers: none (central auctioneer: every agent has its prices)")
        return "\n".join(lines)
    dev = deviations(run)
    k = min(top, run.n_agents)
    order = np.argsort(-dev, kind="stable")[:k]
    prices = run.prices()
    lines.append(f"top {k} price outliers (rms log-price deviation from the network mean):")
    lines.append(f"  {'id':>8s}  {'deviation':>10s}  prices")
    ids = run.agents["id"].to_numpy()
    for i in order:
        lines.append(f"  {ids[i]:8d}  {dev[i]:10.3e}  {_vec(prices[i])}")
    return "\n".join(lines)


def agent_text(run: RunFolder, agent: int, history: bool = False, width: int = 60) -> str:
    n = run.n_agents
    if not 0 <= agent < n:
        raise ExportError(f"--agent: no agent {agent}: ids run from 0 to {n - 1}")
    from tatonnet.results.export import node_table

    row = node_table(run).slice(agent, 1).to_pylist()[0]
    goods = run.goods
    dev = deviations(run)
    rank = int((dev > dev[agent]).sum()) + 1
    lines = [
        f"agent {agent} of {n} (group {row['group']}, {row['family']}) in {run.path}",
        f"prices:     {_vec([row[f'price_{g}'] for g in goods])}",
        f"excess:     {_vec([row[f'excess_{g}'] for g in goods])}  (demand - endowment at "
        "own prices)",
    ]
    if f"holding_{goods[0]}" in row:
        lines.append(f"holdings:   {_vec([row[f'holding_{g}'] for g in goods])}  (endowment: "
                     "tâtonnement prices goods, it does not trade them)")  # fmt: skip
    lines.append(f"wealth:     {row['wealth']:.6g}")
    if "utility" in row:
        lines.append(f"utility:    {row['utility']:.6g}  (of its demand at its own prices)")
    for key in ("role", "layer"):
        if key in row:
            lines.append(f"{key}:       {row[key]}")
    lines.append(f"deviation:  {dev[agent]:.3e} rms log-price from the network mean "
                 f"(rank {rank} of {n})")  # fmt: skip
    neigh = run.neighbours(agent)
    prices = run.prices()
    if run.summary["graph"] == "central":
        lines.append("neighbours: none (central auctioneer: one price for all)")
    else:
        lines.append(f"neighbours: {neigh.size}")
        for j in neigh[:12]:
            lines.append(f"  {j:8d}  {_vec(prices[j])}")
        if neigh.size > 12:
            lines.append(f"  ... and {neigh.size - 12} more")
    if history:
        lines += history_lines(run, agent, width)
    else:
        lines.append("history:    not stored; --history replays the run to show it")
    return "\n".join(lines)


def replay_history(run: RunFolder, agent: int) -> np.ndarray:
    """The agent's prices after every round, replayed in-process; (rounds + 1, n_goods)."""
    if run.scenario is None:
        raise ExportError(f"--history: {run.path} has no run.json to replay the run from")
    rounds = int(run.summary["rounds"])
    if rounds * run.n_agents > REPLAY_LIMIT:
        raise ExportError(
            f"--history: replaying {rounds} rounds of {run.n_agents} agents is over the "
            f"{REPLAY_LIMIT:.0e} agent-round limit of this command"
        )
    from tatonnet.environment.model import MarketModel

    model = MarketModel(run.scenario, mesa_agents=False)
    out = np.empty((rounds + 1, len(run.goods)))
    out[0] = model.agent_prices(agent)
    for r in range(1, rounds + 1):
        model.step()
        out[r] = model.agent_prices(agent)
    return out


def history_lines(run: RunFolder, agent: int, width: int = 60) -> list[str]:
    path = replay_history(run, agent)
    final = run.prices()[agent]
    gap = float(np.max(np.abs(path[-1] - final)))
    verdict = "matches" if gap == 0.0 else f"differs by {gap:.3g} from"
    lines = [f"history:    replayed {path.shape[0] - 1} rounds; the replay {verdict} the stored "
             "final prices"]  # fmt: skip
    for j, g in enumerate(run.goods):
        line, lo, hi = sparkline(path[:, j], width)
        lines.append(f"  price_{g:8s} |{line}|  {lo:.4g} .. {hi:.4g}")
    rows = np.unique(np.linspace(0, path.shape[0] - 1, 6).astype(int))
    for r in rows:
        lines.append(f"  round {r:6d}  {_vec(path[r])}")
    return lines
