"""What trade built: volumes, intermediaries, hops, layers, concentration, efficiency.

Everything here reads a finished :class:`tatonnet.environment.trade.bilateral.TradeRun` (final state and the
trade log) and the economy; nothing changes the run.

Definitions (values at reference prices ``p``: the Walrasian ones when known, else ones)
---------------------------------------------------------------------------------------
* **gross volume** of agent ``i``: ``G_i = sum_k p_k (in_ik + out_ik)`` (value received plus
  value given); **net consumption**: ``N_i = sum_k p_k |x_ik - e_ik|`` (= ``|in - out|``).
* **throughput** ``T_i = 1 - N_i / G_i`` in [0, 1]: the share of its trade that an agent
  passes on (``2 min(in, out)`` per good). An active agent is an **intermediary** at
  threshold ``theta`` when ``T_i >= theta``; otherwise a **producer** (net seller of the
  non-numeraire goods, in value) or a **consumer** (net buyer of them). The share of intermediaries is reported for several
  thresholds (:data:`THRESHOLDS`).
* **hops** of a unit: edges travelled from its original owner (tracked by
  :mod:`tatonnet.environment.trade.bilateral` under well-mixed inventories); reported as the unit-weighted
  mean per good and per holder.
* **layer** of agent ``i``: for each good ``k``, the net flow graph keeps the edges with
  positive net flow of ``k``; its *sources* are the agents with outflow and no inflow of
  ``k``; ``layer_k(i)`` is the BFS distance from the sources. An agent's layer is the
  smallest ``layer_k`` over the non-numeraire goods (the numeraire, as money, flows the
  other way; sources: 0; outside every flow: -1).
* **profit** of ``i``: ``p . (x_i - e_i)`` (zero in sum when ``p`` clears the trades'
  totals) and the relative utility gain ``u(x_i) / u(e_i) - 1``.
* **concentration** of the exchange graph: Gini and Herfindahl index of the per-edge
  value volumes (over the edges that traded), Freeman degree centralization of the
  undirected trade graph (1 for a star), and the busiest agent's share of gross volume.
* **money**: for each good, ``resale share = 1 - (units that ended with net buyers) /
  (units moved)``; the good with the highest resale share is the medium of exchange
  candidate (it changes hands most often without being consumed).
* **Walrasian comparison**: utility gaps ``u(x_i) / u(x*_i) - 1`` against the Walrasian
  allocation ``x* = demand(p*)``; the Pareto gap (:func:`tatonnet.environment.trade.bilateral.pareto_gap`)
  of the final allocation: remaining gains from trade (zero at an interior optimum).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx
import numpy as np

from tatonnet.agents.utility import Family
from tatonnet.environment import equilibrium
from tatonnet.environment.economy import Economy
from tatonnet.environment.trade import bilateral as tr

THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
ROLES = ("inactive", "producer", "consumer", "intermediary")


def reference_prices(economy: Economy) -> tuple[np.ndarray | None, str]:
    """Walrasian prices (numeraire = 1) and how they were obtained, or ``(None, reason)``."""
    if (economy.family == Family.COBB_DOUGLAS).all():
        try:
            return equilibrium.cobb_douglas_equilibrium(economy), "closed form"
        except ValueError as exc:
            return None, str(exc)
    found = equilibrium.find_equilibria(economy, n_starts=4)
    if len(found) == 1:
        return found[0], "numerical"
    return None, f"{len(found)} equilibria found"


def executed(log: np.ndarray) -> np.ndarray:
    return log[log[:, 3] == tr.EXECUTED]


def directed_flows(log: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every executed trade as two directed unit flows: ``(src, dst, good, units)``, (2m,)."""
    t = executed(log)
    u, v = t[:, 1].astype(np.int64), t[:, 2].astype(np.int64)
    k, l = t[:, 4].astype(np.int64), t[:, 5].astype(np.int64)
    return (
        np.concatenate([u, v]),
        np.concatenate([v, u]),
        np.concatenate([k, l]),
        np.concatenate([t[:, 6], t[:, 7]]),
    )


def agent_table(
    economy: Economy, state: tr.TradeState, log: np.ndarray, prices: np.ndarray | None = None,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-agent measurements (n,) each: trades (executed trades it was a party to),
    gross, net, throughput, role, layer, hops, profit, utility_gain."""
    p = np.ones(economy.n_goods) if prices is None else np.asarray(prices)
    gross = (state.inflow + state.outflow) @ p
    net = np.abs(state.holdings - economy.endowments) @ p
    with np.errstate(invalid="ignore", divide="ignore"):
        through = np.where(gross > 0, 1.0 - net / np.where(gross > 0, gross, 1.0), 0.0)
    through = np.clip(through, 0.0, 1.0)
    profit = (state.holdings - economy.endowments) @ p
    role = np.zeros(economy.n_agents, dtype=np.int8)
    active = gross > 0
    goods = np.arange(economy.n_goods) != economy.numeraire
    net_goods = (state.holdings - economy.endowments)[:, goods] @ p[goods]
    role[active & (net_goods < 0)] = 1
    role[active & (net_goods >= 0)] = 2
    role[active & (through >= threshold)] = 3
    u0 = economy.utility(economy.endowments)
    u1 = economy.utility(state.holdings)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(u0 > 0, u1 / np.where(u0 > 0, u0, 1.0) - 1.0, np.inf * (u1 > u0))
    held = state.holdings.sum(axis=1)
    hops = np.where(held > 0, state.hop_mass.sum(axis=1) / np.where(held > 0, held, 1.0), 0.0)
    t = executed(log)
    trades = np.bincount(t[:, 1:3].astype(np.int64).ravel(), minlength=economy.n_agents)
    return {
        "agent": np.arange(economy.n_agents),
        "trades": trades,
        "gross": gross,
        "net": net,
        "throughput": through,
        "role": role,
        "layer": layers(log, economy.n_agents, economy.n_goods, np.flatnonzero(goods)),
        "mean_hops": hops,
        "profit": profit,
        "utility_gain": gain,
    }


def layers(log: np.ndarray, n: int, g: int, good=None) -> np.ndarray:
    """Layer of every agent (n,) int: distance from the original owners in the net flow
    graphs (see the module docstring), of one ``good``, the smallest over a list of goods,
    or over all goods (None); -1 for agents outside the flow."""
    src, dst, goods, units = directed_flows(log)
    big = np.iinfo(np.int64).max
    layer = np.full(n, big, dtype=np.int64)
    for k in range(g) if good is None else np.atleast_1d(good).tolist():
        sel = goods == k
        net: dict[tuple[int, int], float] = {}
        for s, d, q in zip(src[sel].tolist(), dst[sel].tolist(), units[sel].tolist(), strict=True):
            a, b, sign = (s, d, 1.0) if s < d else (d, s, -1.0)
            net[(a, b)] = net.get((a, b), 0.0) + sign * q
        G = nx.DiGraph()
        eps = 1e-9 * max(units[sel].max(initial=0.0), 1e-300)  # rounding, not a flow
        G.add_edges_from((a, b) if q > 0 else (b, a) for (a, b), q in net.items() if abs(q) > eps)
        sources = [v for v in G if G.in_degree(v) == 0]
        if not sources:
            continue
        for v, d in nx.multi_source_dijkstra_path_length(G, sources, weight=lambda *_: 1).items():
            layer[v] = min(layer[v], d)
    layer[layer == big] = -1
    return layer


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 equal, -> 1 concentrated)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0 or v.sum() <= 0:
        return 0.0
    i = np.arange(1, v.size + 1)
    return float((2 * (i * v).sum()) / (v.size * v.sum()) - (v.size + 1) / v.size)


def edge_volumes(log: np.ndarray, n: int, prices: np.ndarray) -> dict[tuple[int, int], float]:
    """Value traded on each undirected edge ``(u, v)``, ``u < v``."""
    t = executed(log)
    vol: dict[tuple[int, int], float] = {}
    value = prices[t[:, 4].astype(int)] * t[:, 6] + prices[t[:, 5].astype(int)] * t[:, 7]
    for u, v, x in zip(t[:, 1].astype(int).tolist(), t[:, 2].astype(int).tolist(), value.tolist(),
                       strict=True):  # fmt: skip
        vol[(u, v)] = vol.get((u, v), 0.0) + x
    return vol


def concentration(log: np.ndarray, n: int, prices: np.ndarray) -> dict[str, float]:
    vol = edge_volumes(log, n, prices)
    v = np.array(list(vol.values()))
    out = {"edges_traded": float(v.size), "edge_gini": gini(v)}
    out["edge_hhi"] = float(((v / v.sum()) ** 2).sum()) if v.size and v.sum() > 0 else 0.0
    deg = np.zeros(n)
    through = np.zeros(n)
    for (a, b), x in vol.items():
        deg[a] += 1
        deg[b] += 1
        through[a] += x
        through[b] += x
    active = int((deg > 0).sum())
    if active > 2:
        d = deg[deg > 0]
        out["degree_centralization"] = float((d.max() - d).sum() / ((active - 1) * (active - 2)))
    else:
        out["degree_centralization"] = 0.0
    out["top_agent_share"] = float(through.max() / through.sum()) if through.sum() > 0 else 0.0
    return out


def money(economy: Economy, state: tr.TradeState) -> dict:
    """Resale share per good and the medium-of-exchange candidate (None if no trade)."""
    moved = state.inflow.sum(axis=0)
    kept = np.maximum(state.holdings - economy.endowments, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(moved > 0, 1.0 - kept / np.where(moved > 0, moved, 1.0), 0.0)
    return {
        "resale_share": share,
        "money_good": int(np.argmax(share)) if moved.sum() > 0 else None,
    }


def walras_comparison(economy: Economy, state: tr.TradeState, prices: np.ndarray | None) -> dict:
    out = {"pareto_gap": tr.pareto_gap(state.holdings, economy)}
    if prices is None:
        return out
    star = economy.demand(prices)
    u_star = economy.utility(star)
    u = economy.utility(state.holdings)
    gap = u / u_star - 1.0
    out.update(
        utility_gap_mean=float(gap.mean()),
        utility_gap_median=float(np.median(gap)),
        utility_gap_min=float(gap.min()),
        utility_gap_max=float(gap.max()),
        share_worse_than_walras=float((gap < 0).mean()),
    )
    return out


def summarize(
    economy: Economy, run: tr.TradeRun, prices: np.ndarray | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """Scalar summary (dict) and the per-agent table of a trade run."""
    p = np.ones(economy.n_goods) if prices is None else prices
    table = agent_table(economy, run.state, run.log, p)
    active = table["gross"] > 0
    summary: dict = {
        "rounds": run.rounds,
        "converged": run.converged,
        "trades": int((run.log[:, 3] == tr.EXECUTED).sum()),
        "rejected": int((run.log[:, 3] == tr.REJECTED).sum()),
        "pairs": int(run.log.shape[0]),
        "active_agents": int(active.sum()),
        "intermediary_share": {
            str(t): float((table["throughput"][active] >= t).mean()) if active.any() else 0.0
            for t in THRESHOLDS
        },
    }
    held = run.state.holdings.sum(axis=0)
    summary["mean_hops_per_good"] = (run.state.hop_mass.sum(axis=0) / held).tolist()
    lay = table["layer"]
    summary["profit_by_layer"] = {
        int(k): {
            "agents": int((lay == k).sum()),
            "profit_mean": float(table["profit"][lay == k].mean()),
            "utility_gain_mean": float(table["utility_gain"][lay == k].mean()),
            "throughput_mean": float(table["throughput"][lay == k].mean()),
        }
        for k in np.unique(lay)
    }
    summary["concentration"] = concentration(run.log, economy.n_agents, p)
    m = money(economy, run.state)
    summary["resale_share"] = m["resale_share"].tolist()
    summary["money_good"] = m["money_good"]
    summary["walras"] = walras_comparison(economy, run.state, prices)
    return summary, table


def flow_graph(economy: Economy, log: np.ndarray, table: dict, prices: np.ndarray) -> nx.DiGraph:
    """The flow network: a directed edge per direction of net value flow, with ``volume``
    (value, both directions summed) and per-good ``units_<good>``; node ``role``,
    ``layer``, ``throughput``, ``gross``, ``profit``."""
    G = nx.DiGraph()
    for i in range(economy.n_agents):
        G.add_node(
            i,
            role=ROLES[int(table["role"][i])],
            layer=int(table["layer"][i]),
            throughput=float(table["throughput"][i]),
            gross=float(table["gross"][i]),
            profit=float(table["profit"][i]),
            mean_hops=float(table["mean_hops"][i]),
        )
    src, dst, good, units = directed_flows(log)
    for s, d, k, q in zip(src.tolist(), dst.tolist(), good.tolist(), units.tolist(), strict=True):
        if not G.has_edge(s, d):
            G.add_edge(s, d, volume=0.0, **{f"units_{name}": 0.0 for name in economy.goods})
        G[s][d]["volume"] += float(prices[k] * q)
        G[s][d][f"units_{economy.goods[k]}"] += q
    return G


def edge_table(network, log: np.ndarray, goods, prices: np.ndarray) -> dict[str, np.ndarray]:
    """What crossed every edge of the network, one row per undirected edge (``source`` <
    ``target``, in :meth:`~tatonnet.environment.network.Network.edge_list` order): ``trades``
    (executed trades), ``volume`` (value at ``prices``, both directions) and ``units_<good>``
    (units moved, both directions); (n_edges,) each. Edges that never traded have zeros."""
    source, target, _ = network.edge_list()
    n = network.n_agents
    keys = source * n + target  # sorted: by source, then target
    t = executed(log)
    a, b = t[:, 1].astype(np.int64), t[:, 2].astype(np.int64)
    row = np.searchsorted(keys, np.minimum(a, b) * n + np.maximum(a, b))
    if row.size and not np.array_equal(keys[np.minimum(row, keys.size - 1)],
                                       np.minimum(a, b) * n + np.maximum(a, b)):  # fmt: skip
        raise tr.TradeError("trade log: a trade along a pair that is not an edge")
    table = {"source": source, "target": target,
             "trades": np.bincount(row, minlength=keys.size).astype(np.int64)}  # fmt: skip
    value = prices[t[:, 4].astype(int)] * t[:, 6] + prices[t[:, 5].astype(int)] * t[:, 7]
    table["volume"] = np.bincount(row, weights=value, minlength=keys.size)
    for k, name in enumerate(goods):
        q = np.where(t[:, 4] == k, t[:, 6], 0.0) + np.where(t[:, 5] == k, t[:, 7], 0.0)
        table[f"units_{name}"] = np.bincount(row, weights=q, minlength=keys.size)
    return table


#: Colours of the roles in ``layers.png``.
ROLE_COLORS = {"inactive": "#cccccc", "producer": "#1b9e77", "consumer": "#d95f02",
               "intermediary": "#7570b3"}  # fmt: skip


def plot_layers(G: nx.DiGraph, path: Path, title: str = "") -> None:
    """Every agent placed by layer (x; agents outside every flow in a column of their own,
    left) and ordered within it by gross volume (y), coloured by role; edge width by volume.
    Each column is labelled with its layer and its number of agents, the legend counts every
    agent by role. Right: mean throughput per layer. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layer = nx.get_node_attributes(G, "layer")
    by_layer: dict[int, list] = {}
    for v in G:
        by_layer.setdefault(layer[v], []).append(v)
    pos = {}
    for k, nodes in by_layer.items():
        nodes.sort(key=lambda v: -G.nodes[v]["gross"])
        for j, v in enumerate(nodes):
            pos[v] = (k, (j - (len(nodes) - 1) / 2) / max(1, len(nodes)))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 1]})
    vol = np.array([d["volume"] for *_, d in G.edges(data=True)]) if G.number_of_edges() else []
    widths = 0.3 + 3 * np.asarray(vol) / (max(vol) if len(vol) else 1)
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, alpha=0.35, arrows=False)
    for role, c in ROLE_COLORS.items():
        nodes = [v for v in G if G.nodes[v]["role"] == role]
        nx.draw_networkx_nodes(G, pos, nodelist=nodes, node_color=c, node_size=18, ax=ax,
                               label=f"{role} ({len(nodes)})")  # fmt: skip
    ks = sorted(by_layer)
    names = {k: "outside\nthe flow" if k < 0 else ("layer 0\n(sources)" if k == 0 else f"layer {k}")
             for k in ks}  # fmt: skip
    count = {k: f"{len(by_layer[k])} agent" + ("" if len(by_layer[k]) == 1 else "s") for k in ks}
    labels = [f"{names[k]}\n{count[k]}" for k in ks]
    ax.set_xticks(ks, labels, fontsize=8)
    ax.tick_params(axis="x", bottom=True, labelbottom=True)  # networkx's drawing hides them
    ax.set_xlim(min(ks, default=0) - 0.5, max(ks, default=0) + 0.5)
    ax.set_xlabel("layer: hops from the original owners in the net flow graph")
    ax.set_yticks([])
    ax.legend(loc="upper right", fontsize=8, title=f"{G.number_of_nodes()} agents by role",
              title_fontsize=8)  # fmt: skip
    ax.set_title(title or "emergent flow layers")
    inside = [k for k in ks if k >= 0]
    thr = [np.mean([G.nodes[v]["throughput"] for v in by_layer[k]]) for k in inside]
    bx.bar(inside, thr, color="#7570b3")
    bx.set_xticks(inside, [f"{k}\n({len(by_layer[k])})" for k in inside], fontsize=8)
    bx.set_xlabel("layer (agents)")
    bx.set_ylabel("mean throughput (share passed on)")
    bx.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def trade_config_for(scenario, group: np.ndarray) -> tuple[tr.TradeConfig, int, float | None]:
    """``(config, rounds, tol)`` from a scenario's optional ``[trade]`` table; ``group``
    (n,) is each agent's group index (for ``merchant_groups``)."""
    from tatonnet.environment.scenario import TradeSpec

    spec = scenario.trade or TradeSpec()
    names = [g.name for g in scenario.agents]
    unknown = [m for m in spec.merchant_groups if m not in names]
    if unknown:
        raise tr.TradeError(f"trade.merchant_groups: no agent group named {unknown[0]!r}")
    codes = [names.index(m) for m in spec.merchant_groups]
    merchants = tuple(int(i) for i in np.flatnonzero(np.isin(group, codes)))
    config = tr.TradeConfig(
        seed=scenario.seed, medium=spec.medium, halvings=spec.halvings, min_gap=spec.min_gap,
        merchants=merchants,
    )  # fmt: skip
    return config, spec.rounds, spec.tol


@dataclasses.dataclass
class TradeOutcome:
    """A finished trade run of a scenario (:func:`run_trade_scenario`)."""

    scenario: object  # tatonnet.environment.scenario.Scenario
    economy: Economy
    group: np.ndarray  # (n,) each agent's group index
    network: object  # tatonnet.environment.network.Network
    run: tr.TradeRun
    prices: np.ndarray | None  # reference (Walrasian) prices, numeraire = 1, or None
    how: str  # how ``prices`` were obtained (or why there are none)
    config: tr.TradeConfig
    max_rounds: int
    tol: float | None

    def options(self) -> dict:
        """How it ran, as plain JSON (for ``run.json``)."""
        return {"rounds": self.max_rounds, "tol": self.tol,
                "config": dataclasses.asdict(self.config)}  # fmt: skip


def run_trade_scenario(scenario, rounds: int | None = None, tol: float | None = None,
                       progress: bool = False) -> TradeOutcome:  # fmt: skip
    """Build the scenario's economy and network and run trade on it (``rounds`` and
    ``tol`` override the scenario's ``[trade]`` table; ``progress``: a tqdm bar on stderr,
    shown after 2 s)."""
    import sys

    from tqdm import tqdm

    from tatonnet.environment.scenario import build_market

    economy, group, network, _ = build_market(scenario)
    config, default_rounds, default_tol = trade_config_for(scenario, group)
    rounds, tol = rounds or default_rounds, tol or default_tol
    every = max(1, economy.n_agents // 50) if tol else 1
    bar = tqdm(
        total=rounds, delay=2.0, file=sys.stderr, unit="round", disable=not progress,
        desc=scenario.name, dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
    )  # fmt: skip
    with bar:
        run = tr.run_trade(economy, network, config, rounds, tol, every=every,
                           on_round=lambda _: bar.update(1))  # fmt: skip
    prices, how = reference_prices(economy)
    return TradeOutcome(scenario, economy, group, network, run, prices, how, config, rounds, tol)


def write_trade_results(work: Path, outcome: TradeOutcome, provenance: dict | None = None) -> dict:
    """Write ``flows.graphml``, ``trade_metrics.parquet`` (per round),
    ``trade_agents.parquet`` (per agent), ``edges.parquet`` (per network edge),
    ``layers.png`` and ``summary.json`` into ``work``; ``provenance`` (versions, run id,
    ...) goes into the summary as it is. Returns the summary."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tatonnet.agents.utility import family_labels

    scenario, economy, run, prices = outcome.scenario, outcome.economy, outcome.run, outcome.prices
    p = np.ones(economy.n_goods) if prices is None else prices
    summary, table = summarize(economy, run, prices)
    roles = np.array(ROLES)[table["role"]]
    summary = {
        "scenario": scenario.name, "scenario_source": scenario.source,
        "agents": economy.n_agents, "goods": list(economy.goods),
        "numeraire": economy.numeraire, "graph": outcome.network.kind,
        "n_edges": outcome.network.n_edges, "seed": scenario.seed,
        "medium": outcome.config.medium, "max_rounds": outcome.max_rounds, "tol": outcome.tol,
        "status": "converged" if run.converged else "max_rounds",
        "reference_prices": outcome.how,
        "walras_prices": None if prices is None else prices.tolist(),
        "roles": {r: int((roles == r).sum()) for r in ROLES},
        **summary, **(provenance or {}),
    }  # fmt: skip
    G = flow_graph(economy, run.log, table, p)
    nx.write_graphml(G, work / "flows.graphml")
    metrics = {"round": np.arange(1, run.rounds + 1), **run.metrics}
    pq.write_table(pa.table(metrics), work / "trade_metrics.parquet")
    agents = {"agent": table["agent"], "group": outcome.group,
              "family": family_labels(economy.family), **table, "role": roles,
              "wealth": run.state.holdings @ p}  # fmt: skip
    for j, name in enumerate(economy.goods):
        agents[f"endowment_{name}"] = economy.endowments[:, j]
        agents[f"holding_{name}"] = run.state.holdings[:, j]
    pq.write_table(pa.table(agents), work / "trade_agents.parquet")
    edges = edge_table(outcome.network, run.log, economy.goods, p)
    pq.write_table(pa.table(edges), work / "edges.parquet")
    plot_layers(G, work / "layers.png", f"{scenario.name}: emergent flow layers")
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=_plain) + "\n")
    return summary


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def format_trade_summary(summary: dict) -> str:
    w = summary["walras"]
    share = summary["intermediary_share"]
    lines = [
        f"trade:    {summary['scenario']}, {summary['agents']} agents, {summary['rounds']} rounds"
        + (" (Pareto test met)" if summary["converged"] else ""),
        f"trades:   {summary['trades']} executed, {summary['rejected']} rejected, "
        f"{summary['pairs']} meetings",
        "intermediaries (throughput >= t): "
        + ", ".join(f"t={t}: {v:.0%}" for t, v in share.items()),
        f"hops:     mean per good {np.round(summary['mean_hops_per_good'], 2).tolist()}",
        f"money:    good {summary['money_good']} (resale shares "
        f"{np.round(summary['resale_share'], 2).tolist()})",
        f"pareto:   remaining log-MRS spread {w['pareto_gap']:.3g}",
    ]
    if "utility_gap_mean" in w:
        lines.append(
            f"walras:   utility vs Walrasian allocation: median {w['utility_gap_median']:+.1%}, "
            f"{w['share_worse_than_walras']:.0%} of agents worse off"
        )
    return "\n".join(lines)
