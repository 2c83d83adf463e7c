"""What trade built: volumes, intermediaries, hops, layers, concentration, efficiency.

Everything here reads a finished :class:`tatonnet.environment.trade.bilateral.TradeRun` —
its final state, its per-edge accounts (:class:`~tatonnet.environment.trade.accounts.EdgeFlows`:
trades and units moved each way along every edge) and its per-round metrics — and the
economy; nothing changes the run, and nothing needs the trade log (one row per meeting,
far too big at scale). Every measure is a vectorized pass over agents and edges (a
10^6-agent run takes seconds); only :func:`flow_graph` builds a Python object per edge.

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
  positive net flow of ``k`` (units moved one way minus the other, summed over the run;
  a net flow below ``1e-9`` times the largest one-way flow of ``k`` on any edge is rounding
  and counts as none), each directed the way the good went; its *sources* are the agents
  with outflow and no inflow of ``k``; ``layer_k(i)`` is the BFS distance from the
  sources. An agent's layer is the smallest ``layer_k`` over the non-numeraire goods (the
  numeraire, as money, flows the other way; sources: 0; outside every flow: -1).
* **profit** of ``i``: ``p . (x_i - e_i)`` (zero in sum when ``p`` clears the trades'
  totals) and the relative utility gain ``u(x_i) / u(e_i) - 1``.
* **edge volume**: the value that crossed an edge, both ways, ``p . (forward + backward)``.
* **concentration** of the exchange graph: Gini and Herfindahl index of the edge volumes
  (over the edges that traded), Freeman degree centralization of the undirected trade
  graph (1 for a star), and the busiest agent's share of gross volume.
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
import scipy.sparse as sp
from scipy.sparse import csgraph

from tatonnet.agents.utility import Family
from tatonnet.environment import equilibrium
from tatonnet.environment.economy import Economy
from tatonnet.environment.trade import bilateral as tr
from tatonnet.environment.trade.accounts import EdgeFlows

THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
ROLES = ("inactive", "producer", "consumer", "intermediary")
#: Largest economy (agents) whose ``flows.graphml`` :func:`write_trade_results` writes
#: unless told otherwise. :func:`flow_graph` and the GraphML writer hold a Python object
#: per node and edge (measured: 20,000 agents on a small world, 9·10^4 directed edges,
#: 12 s and 0.3 GB), so at 10^6 agents it would take longer than the trading, and tens of
#: GB. Above the limit the folder still has every node and edge attribute in
#: ``trade_agents.parquet`` and ``edges.parquet``, and ``tatonnet inspect DIR --export OUT
#: --format graphml`` writes the network from them on request.
GRAPHML_MAX_AGENTS = 20_000
#: Largest economy whose ``layers.png`` (:func:`plot_layers`) also draws every agent; above
#: it the picture is the per-layer aggregates only.
DRAW_AGENTS_MAX = 2_000
#: Most bars per panel of ``layers.png``: more layers than this are grouped into equal
#: ranges, so the picture costs the same at 10^3 and 10^6 agents.
MAX_LAYER_BARS = 40


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


def agent_table(
    economy: Economy, state: tr.TradeState, edges: EdgeFlows, prices: np.ndarray | None = None,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per-agent measurements (n,) each: agent, trades (executed trades it was a party
    to), gross, net, throughput, role (index into :data:`ROLES`), layer, mean_hops,
    profit, utility_gain."""
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
        gain = np.where(u0 > 0, u1 / np.where(u0 > 0, u0, 1.0) - 1.0,
                        np.where(u1 > u0, np.inf, 0.0))  # from nothing: +inf, or no gain
    held = state.holdings.sum(axis=1)
    hops = np.where(held > 0, state.hop_mass.sum(axis=1) / np.where(held > 0, held, 1.0), 0.0)
    return {
        "agent": np.arange(economy.n_agents),
        "trades": edges.agent_trades(economy.n_agents),
        "gross": gross,
        "net": net,
        "throughput": through,
        "role": role,
        "layer": layers(edges, economy.n_agents, np.flatnonzero(goods)),
        "mean_hops": hops,
        "profit": profit,
        "utility_gain": gain,
    }


def net_flow_edges(edges: EdgeFlows, good: int) -> tuple[np.ndarray, np.ndarray]:
    """The net flow graph of ``good`` (module docstring): ``(src, dst)`` (e,) int64, one
    directed edge per network edge whose net flow of ``good`` is not rounding, pointing the
    way the good went."""
    forward, backward = edges.forward[:, good], edges.backward[:, good]
    net = forward - backward
    largest = max(float(forward.max(initial=0.0)), float(backward.max(initial=0.0)), 1e-300)
    keep = np.abs(net) > 1e-9 * largest  # rounding, not a flow
    ahead = net[keep] > 0
    s, t = edges.source[keep], edges.target[keep]
    return np.where(ahead, s, t), np.where(ahead, t, s)


def layers(edges: EdgeFlows, n: int, good=None) -> np.ndarray:
    """Layer of every agent (n,) int64: BFS distance from the original owners in the net
    flow graphs (see the module docstring), of one ``good``, the smallest over a list of
    goods, or over all goods (None); -1 for agents outside the flow.

    One multi-source BFS per good on a sparse matrix: a virtual agent ``n`` points at
    every source, and the distance from it, less one, is the layer."""
    big = np.iinfo(np.int64).max
    layer = np.full(n, big, dtype=np.int64)
    for k in range(edges.n_goods) if good is None else np.atleast_1d(good).tolist():
        src, dst = net_flow_edges(edges, int(k))
        if src.size == 0:
            continue
        has_out = np.bincount(src, minlength=n) > 0
        has_in = np.bincount(dst, minlength=n) > 0
        sources = np.flatnonzero(has_out & ~has_in)
        if sources.size == 0:
            continue
        rows = np.concatenate([np.full(sources.size, n), src])
        cols = np.concatenate([sources, dst])
        A = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n + 1, n + 1))
        dist = csgraph.dijkstra(A, directed=True, indices=n, unweighted=True)[:n]
        reached = np.isfinite(dist)
        layer[reached] = np.minimum(layer[reached], dist[reached].astype(np.int64) - 1)
    layer[layer == big] = -1
    return layer


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 equal, -> 1 concentrated)."""
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 0 or v.sum() <= 0:
        return 0.0
    i = np.arange(1, v.size + 1)
    return float((2 * (i * v).sum()) / (v.size * v.sum()) - (v.size + 1) / v.size)


def edge_volumes(edges: EdgeFlows, prices: np.ndarray) -> np.ndarray:
    """Value that crossed each edge, both ways, ``forward @ p + backward @ p``; (m,) in
    :meth:`~tatonnet.environment.network.Network.edge_list` order (0 where nothing did)."""
    p = np.asarray(prices, dtype=float)
    return edges.forward @ p + edges.backward @ p


def concentration(edges: EdgeFlows, n: int, prices: np.ndarray) -> dict[str, float]:
    """``edges_traded``, ``edge_gini``, ``edge_hhi`` (of the volumes of the edges that
    traded), ``degree_centralization`` (Freeman, of the graph of those edges) and
    ``top_agent_share`` (of the volume summed at both ends)."""
    traded = edges.trades > 0
    v = edge_volumes(edges, prices)[traded]
    a, b = edges.source[traded], edges.target[traded]
    out = {"edges_traded": float(v.size), "edge_gini": gini(v)}
    out["edge_hhi"] = float(((v / v.sum()) ** 2).sum()) if v.size and v.sum() > 0 else 0.0
    deg = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    through = np.bincount(a, weights=v, minlength=n) + np.bincount(b, weights=v, minlength=n)
    active = int((deg > 0).sum())
    if active > 2:
        d = deg[deg > 0].astype(float)
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
    """Scalar summary (dict) and the per-agent table (:func:`agent_table`) of a trade run,
    from its state, per-edge accounts and per-round metrics (``trades``: executed, summed
    over the edges; ``rejected`` and ``pairs`` (meetings): summed over the rounds)."""
    p = np.ones(economy.n_goods) if prices is None else prices
    table = agent_table(economy, run.state, run.edges, p)
    active = table["gross"] > 0
    summary: dict = {
        "rounds": run.rounds,
        "converged": run.converged,
        "trades": int(run.edges.trades.sum()),
        "rejected": int(np.sum(run.metrics["rejected"])),
        "pairs": int(np.sum(run.metrics["pairs"])),
        "active_agents": int(active.sum()),
        "intermediary_share": {
            str(t): float((table["throughput"][active] >= t).mean()) if active.any() else 0.0
            for t in THRESHOLDS
        },
    }
    held = run.state.holdings.sum(axis=0)
    summary["mean_hops_per_good"] = (run.state.hop_mass.sum(axis=0) / held).tolist()
    lay = table["layer"]
    ks, index, count = np.unique(lay, return_inverse=True, return_counts=True)
    mean = {name: np.bincount(index, weights=table[name], minlength=ks.size) / count
            for name in ("profit", "utility_gain", "throughput")}  # fmt: skip
    summary["profit_by_layer"] = {
        int(k): {
            "agents": int(count[j]),
            "profit_mean": float(mean["profit"][j]),
            "utility_gain_mean": float(mean["utility_gain"][j]),
            "throughput_mean": float(mean["throughput"][j]),
        }
        for j, k in enumerate(ks)
    }
    summary["concentration"] = concentration(run.edges, economy.n_agents, p)
    m = money(economy, run.state)
    summary["resale_share"] = m["resale_share"].tolist()
    summary["money_good"] = m["money_good"]
    summary["walras"] = walras_comparison(economy, run.state, prices)
    return summary, table


def flow_graph(economy: Economy, edges: EdgeFlows, table: dict, prices: np.ndarray) -> nx.DiGraph:
    """The flow network: a directed edge ``s -> d`` wherever ``s`` gave ``d`` anything
    (a traded edge has both directions: goods one way, payment the other), with ``volume``
    (value at ``prices`` that went ``s -> d``) and per-good ``units_<good>``; node ``role``,
    ``layer``, ``throughput``, ``gross``, ``profit``, ``mean_hops``. A Python object per
    node and edge: for small economies (:data:`GRAPHML_MAX_AGENTS`)."""
    G = nx.DiGraph()
    columns = {name: np.asarray(table[name]).tolist()
               for name in ("layer", "throughput", "gross", "profit", "mean_hops")}  # fmt: skip
    roles = np.array(ROLES)[role_codes(table["role"])].tolist()
    G.add_nodes_from(
        (i, {"role": roles[i], **{name: values[i] for name, values in columns.items()}})
        for i in range(economy.n_agents)
    )
    p = np.asarray(prices, dtype=float)
    names = [f"units_{name}" for name in economy.goods]
    for a, b, units in ((edges.source, edges.target, edges.forward),
                        (edges.target, edges.source, edges.backward)):  # fmt: skip
        sel = (units > 0).any(axis=1)
        volume = (units[sel] @ p).tolist()
        rows = units[sel].tolist()
        G.add_edges_from(
            (s, d, {"volume": x, **dict(zip(names, q, strict=True))})
            for s, d, x, q in zip(a[sel].tolist(), b[sel].tolist(), volume, rows, strict=True)
        )
    return G


def edge_table(edges: EdgeFlows, goods, prices: np.ndarray) -> dict[str, np.ndarray]:
    """What crossed every edge of the network, one row per undirected edge (``source`` <
    ``target``, in :meth:`~tatonnet.environment.network.Network.edge_list` order): ``trades``
    (executed trades), ``volume`` (value at ``prices``, both directions), ``units_<good>``
    (units moved, both directions) and ``forward_<good>`` (units moved ``source ->
    target``; the other way is ``units - forward``); (n_edges,) each. Edges that never
    traded have zeros."""
    table = {"source": edges.source, "target": edges.target,
             "trades": edges.trades.astype(np.int64), "volume": edge_volumes(edges, prices)}  # fmt: skip
    for k, name in enumerate(goods):
        table[f"units_{name}"] = edges.forward[:, k] + edges.backward[:, k]
    for k, name in enumerate(goods):
        table[f"forward_{name}"] = edges.forward[:, k].copy()
    return table


#: Colours of the roles in ``layers.png``.
ROLE_COLORS = {"inactive": "#cccccc", "producer": "#1b9e77", "consumer": "#d95f02",
               "intermediary": "#7570b3"}  # fmt: skip


def role_codes(role) -> np.ndarray:
    """Roles as indices into :data:`ROLES`, (n,) int; from indices or from role names (as
    in ``trade_agents.parquet``)."""
    role = np.asarray(role)
    if role.dtype.kind in "iu":
        return role.astype(np.int64)
    names, inverse = np.unique(role.astype(str), return_inverse=True)
    unknown = sorted(set(names.tolist()) - set(ROLES))
    if unknown:
        raise ValueError(f"role: unknown {unknown[0]!r}; expected one of {list(ROLES)}")
    return np.array([ROLES.index(r) for r in names.tolist()], dtype=np.int64)[inverse]


def layer_aggregates(table: dict, max_bars: int = MAX_LAYER_BARS) -> dict:
    """Per-layer aggregates of an agent table (:func:`agent_table`), for :func:`plot_layers`.

    Layers are grouped into equal ranges of ``width`` when there are more than
    ``max_bars - 1`` of them; bin 0 holds the agents outside every flow. Only bins that
    hold agents are returned. Keys: ``label`` (b,) str, ``width``, ``agents`` (b,),
    ``by_role`` (len(ROLES), b) agents per role, ``throughput`` and ``profit`` (b,) means,
    ``gross`` (b,) total value traded, ``passed_on`` (b,) total ``gross - net`` (value
    passed on: twice the value bought and sold again)."""
    layer = np.asarray(table["layer"], dtype=np.int64)
    top = int(layer.max(initial=-1))
    width = max(1, -(-(top + 1) // max(1, max_bars - 1)))
    bins = np.where(layer >= 0, np.maximum(layer, 0) // width + 1, 0)
    size = top // width + 2 if top >= 0 else 1
    agents = np.bincount(bins, minlength=size)
    role = role_codes(table["role"])
    by_role = np.bincount(role * size + bins, minlength=len(ROLES) * size).reshape(len(ROLES), size)
    total = {name: np.bincount(bins, weights=np.asarray(table[name], dtype=float), minlength=size)
             for name in ("throughput", "profit", "gross", "net")}  # fmt: skip
    keep = np.flatnonzero(agents > 0)
    lo = (keep - 1) * width
    hi = np.minimum(lo + width - 1, top)
    labels = ["outside" if j == 0 else str(a) if a == b else f"{a}-{b}"
              for j, a, b in zip(keep.tolist(), lo.tolist(), hi.tolist(), strict=True)]  # fmt: skip
    count = agents[keep]
    return {
        "label": labels,
        "width": width,
        "agents": count,
        "by_role": by_role[:, keep],
        "throughput": total["throughput"][keep] / count,
        "profit": total["profit"][keep] / count,
        "gross": total["gross"][keep],
        "passed_on": total["gross"][keep] - total["net"][keep],
    }


def plot_layers(table: dict, path: Path, title: str = "", edges: dict | None = None) -> None:
    """The emergent flow layers of a trade run as a PNG, drawn from the agent table
    (:func:`agent_table`, or ``trade_agents.parquet`` columns: ``layer``, ``role``,
    ``throughput``, ``profit``, ``gross``, ``net``).

    Per layer (agents outside every flow in a bar of their own, left; many layers grouped
    into ranges, :data:`MAX_LAYER_BARS`): agents by role (stacked), mean throughput, mean
    profit, and the value traded with the part passed on — the same few bars at 10^3 and
    10^6 agents. Up to :data:`DRAW_AGENTS_MAX` agents a left panel also draws every agent,
    placed by layer (x) and ordered within it by gross volume (y), coloured by role, with
    the traded edges (``edges``: :func:`edge_table`, width by volume) when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    agg = layer_aggregates(table)
    n = int(np.asarray(table["layer"]).size)
    per_agent = n <= DRAW_AGENTS_MAX
    if per_agent:
        fig = plt.figure(figsize=(17, 6.5))
        grid = fig.add_gridspec(2, 4, width_ratios=[1.6, 1.6, 1, 1])
        _draw_agents(fig.add_subplot(grid[:, :2]), table, edges)
        axes = [fig.add_subplot(grid[r, c]) for r in (0, 1) for c in (2, 3)]
    else:
        fig, grid = plt.subplots(2, 2, figsize=(12, 7.5))
        axes = list(grid.ravel())
    x = np.arange(len(agg["label"]))

    def ticks(ax) -> None:
        ax.set_xticks(x, agg["label"], fontsize=7, rotation=90 if x.size > 12 else 0)

    unit = "layer" if agg["width"] == 1 else f"layers, in ranges of {agg['width']}"
    ax = axes[0]
    bottom = np.zeros(x.size)
    for r, name in enumerate(ROLES):
        ax.bar(x, agg["by_role"][r], bottom=bottom, color=ROLE_COLORS[name],
               label=f"{name} ({int(agg['by_role'][r].sum()):,})")  # fmt: skip
        bottom = bottom + agg["by_role"][r]
    ticks(ax)
    ax.set_ylim(0, 1.45 * max(1, int(agg["agents"].max(initial=0))))  # room for the legend
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))  # 600k, not a mathtext offset
    ax.set_ylabel("agents")
    ax.set_title(f"agents per {unit}, by role", fontsize=9)
    ax.legend(fontsize=7, title=f"{n:,} agents", title_fontsize=7)
    ax = axes[1]
    ax.bar(x, agg["throughput"], color=ROLE_COLORS["intermediary"])
    ticks(ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean throughput")
    ax.set_title("share of its trade an agent passes on", fontsize=9)
    ax = axes[2]
    ax.bar(x, agg["profit"], color=np.where(agg["profit"] >= 0, "#1b9e77", "#d95f02"))
    ax.axhline(0, color="black", lw=0.6)
    ticks(ax)
    ax.set_ylabel("mean profit p·(x − e)")
    ax.set_title("profit per agent at the reference prices", fontsize=9)
    ax = axes[3]
    ax.bar(x, agg["gross"], color="#bbbbbb", label="traded (gross, both ways)")
    ax.bar(x, agg["passed_on"], color=ROLE_COLORS["intermediary"], label="passed on (gross − net)")
    ticks(ax)
    most = float(agg["gross"].max(initial=0.0))
    ax.set_ylim(0, 1.3 * most if most > 0 else 1.0)
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel("value, summed over the agents")
    ax.set_title("value traded per layer", fontsize=9)
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel(unit + " (outside: in no flow)", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title or "emergent flow layers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_agents(ax, table: dict, edges: dict | None) -> None:
    """Every agent by layer (x; -1: outside every flow) and gross rank within it (y)."""
    from matplotlib.collections import LineCollection

    layer = np.asarray(table["layer"], dtype=np.int64)
    gross = np.asarray(table["gross"], dtype=float)
    role = role_codes(table["role"])
    n = layer.size
    order = np.lexsort((-gross, layer))
    ranked = layer[order]
    first = np.searchsorted(ranked, ranked, side="left")
    size = np.searchsorted(ranked, ranked, side="right") - first
    y = np.empty(n)
    y[order] = ((size - 1) / 2 - (np.arange(n) - first)) / np.maximum(1, size)  # top: most
    if edges is not None:
        volume = np.asarray(edges["volume"], dtype=float)
        sel = volume > 0
        a, b = np.asarray(edges["source"])[sel], np.asarray(edges["target"])[sel]
        segments = np.stack([np.column_stack([layer[a], y[a]]), np.column_stack([layer[b], y[b]])],
                            axis=1)  # fmt: skip
        widths = 0.3 + 3 * volume[sel] / max(volume.max(initial=0.0), 1e-300)
        ax.add_collection(LineCollection(segments, linewidths=widths, colors="black", alpha=0.3,
                                         zorder=1))  # fmt: skip
    for r, name in enumerate(ROLES):
        sel = role == r
        ax.scatter(layer[sel], y[sel], s=14, color=ROLE_COLORS[name], zorder=2,
                   label=f"{name} ({int(sel.sum())})")  # fmt: skip
    ks, count = np.unique(layer, return_counts=True)
    names = ["outside\nthe flow" if k < 0 else "layer 0\n(sources)" if k == 0 else f"layer {k}"
             for k in ks.tolist()]  # fmt: skip
    labels = [f"{name}\n{c} agent{'' if c == 1 else 's'}"
              for name, c in zip(names, count.tolist(), strict=True)]  # fmt: skip
    ax.set_xticks(ks, labels, fontsize=7 if ks.size < 12 else 5)
    ax.set_xlim(ks.min() - 0.5, ks.max() + 0.5)
    ax.set_ylim(-0.55, 0.75)  # room for the legend
    ax.set_yticks([])
    ax.set_xlabel("layer: hops from the original owners in the net flow graph")
    ax.legend(loc="upper right", fontsize=7, title=f"{n} agents by role", title_fontsize=7)
    ax.set_title("every agent, by layer and by value traded (top: most)", fontsize=9)


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
        merchants=merchants, pair=spec.pair,
    )  # fmt: skip
    return config, spec.rounds, spec.tol


@dataclasses.dataclass
class TradeOutcome:
    """A finished trade run of a scenario (:func:`tatonnet.distributed.trade_runner.run`)."""

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


def write_trade_results(
    work: Path, outcome: TradeOutcome, provenance: dict | None = None,
    graphml: bool | None = None,
) -> dict:  # fmt: skip
    """Write ``trade_metrics.parquet`` (per round), ``trade_agents.parquet`` (per agent),
    ``edges.parquet`` (per network edge), ``layers.png``, ``summary.json`` and, when
    ``graphml`` is true — by default (None) when the economy has at most
    :data:`GRAPHML_MAX_AGENTS` agents — ``flows.graphml`` (:func:`flow_graph`) into
    ``work``; the summary's ``flows_graphml`` says whether it was written. ``provenance``
    (versions, run id, ...) goes into the summary as it is. Returns the summary."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tatonnet.agents.utility import family_labels

    scenario, economy, run, prices = outcome.scenario, outcome.economy, outcome.run, outcome.prices
    p = np.ones(economy.n_goods) if prices is None else prices
    if graphml is None:
        graphml = economy.n_agents <= GRAPHML_MAX_AGENTS
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
        "roles": dict(zip(ROLES, np.bincount(table["role"], minlength=len(ROLES)).tolist(),
                          strict=True)),
        **summary, "flows_graphml": bool(graphml), **(provenance or {}),
    }  # fmt: skip
    if graphml:
        nx.write_graphml(flow_graph(economy, run.edges, table, p), work / "flows.graphml")
    metrics = {"round": np.arange(1, run.rounds + 1), **run.metrics}
    pq.write_table(pa.table(metrics), work / "trade_metrics.parquet")
    codes, which = np.unique(economy.family, return_inverse=True)  # a name per code, not agent
    agents = {"agent": table["agent"], "group": outcome.group,
              "family": np.array(family_labels(codes))[which], **table, "role": roles,
              "wealth": run.state.holdings @ p}  # fmt: skip
    for j, name in enumerate(economy.goods):
        agents[f"endowment_{name}"] = economy.endowments[:, j]
        agents[f"holding_{name}"] = run.state.holdings[:, j]
    pq.write_table(pa.table(agents), work / "trade_agents.parquet")
    edges = edge_table(run.edges, economy.goods, p)
    pq.write_table(pa.table(edges), work / "edges.parquet")
    plot_layers(table, work / "layers.png", f"{scenario.name}: emergent flow layers", edges)
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
