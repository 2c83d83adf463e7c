"""A finished ``tatonnet --trade`` folder: read, summarized as text, exported.

The folder (written by :func:`tatonnet.environment.trade.flows.write_trade_results`):
``summary.json``, ``run.json``, ``trade_agents.parquet`` (per agent), ``trade_metrics.parquet``
(per round), ``edges.parquet`` (per network edge: ``trades``, ``volume``, ``units_<good>``,
``forward_<good>``),
``layers.png`` and, for economies up to
:data:`~tatonnet.environment.trade.flows.GRAPHML_MAX_AGENTS` agents or when asked,
``flows.graphml`` (the directed flows; ``summary.json`` key ``flows_graphml`` says whether
it was written). Nothing here needs ``flows.graphml``: the exports (:func:`export`, ``tatonnet
inspect DIR --export OUT --format graphml``) are built from the two Parquet tables, at any
size; only folders written before ``edges.parquet`` existed fall back on it.

Exported per node: ``group`` (its name), ``group_index``, ``family``, ``role``, ``layer``,
``trades``, ``gross`` (value traded), ``net``, ``throughput``, ``mean_hops``, ``profit``,
``utility_gain``, ``wealth`` (holdings at the reference prices), ``endowment_<good>``,
``holding_<good>``; per edge: ``trades``, ``volume``, ``units_<good>``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tatonnet.environment.errors import first_line
from tatonnet.results.export import (
    ExportError,
    _read_run_json,
    export_dir,
    with_names,
    write_graphs,
)

#: Keys of a trade ``summary.json`` that ``inspect`` reads.
NEEDED = ("scenario", "agents", "goods", "rounds", "converged", "trades", "rejected", "pairs")


@dataclasses.dataclass
class TradeFolder:
    """A finished trade folder, read.

    Attributes
    ----------
    path : Path
    summary : dict — ``summary.json``
    agents : pyarrow.Table — ``trade_agents.parquet`` sorted by ``agent``; (n_agents rows)
    metrics : pyarrow.Table — ``trade_metrics.parquet``; (rounds rows)
    edges : pyarrow.Table — one row per network edge (``source`` < ``target``) with what
        crossed it; from ``edges.parquet``, or, in folders written before it existed, the
        edges that traded, from ``flows.graphml`` (no ``trades`` column then)
    scenario : Scenario or None — from ``run.json``
    """

    path: Path
    summary: dict
    agents: pa.Table
    metrics: pa.Table
    edges: pa.Table
    scenario: object | None

    @property
    def n_agents(self) -> int:
        return self.agents.num_rows

    @property
    def goods(self) -> list[str]:
        return list(self.summary["goods"])


def open_trade(path) -> TradeFolder:
    """Read a finished trade folder; :class:`ExportError` when it is not one."""
    path = Path(path)
    missing = [n for n in ("summary.json", "trade_agents.parquet", "trade_metrics.parquet")
               if not (path / n).is_file()]  # fmt: skip
    if missing:
        raise ExportError(f"{str(path)!r} is not a finished tatonnet trade folder (no "
                          f"{', '.join(missing)})")  # fmt: skip
    try:
        summary = json.loads((path / "summary.json").read_text())
        agents = pq.read_table(path / "trade_agents.parquet")
        metrics = pq.read_table(path / "trade_metrics.parquet")
        edges = (pq.read_table(path / "edges.parquet") if (path / "edges.parquet").is_file()
                 else _edges_from_flows(path / "flows.graphml", summary))  # fmt: skip
    except (OSError, ValueError, RecursionError, pa.ArrowException, nx.NetworkXError) as exc:
        if isinstance(exc, ExportError):
            raise
        first = first_line(exc)
        raise ExportError(f"{str(path)!r}: unreadable trade folder: {first}") from None
    where = f"{str(path)!r}: summary.json"
    if not isinstance(summary, dict):
        raise ExportError(f"{where}: expected a JSON object")
    absent = [k for k in NEEDED if k not in summary]
    if absent:
        raise ExportError(f"{where}: no {absent[0]!r}")
    if "agent" not in agents.column_names or agents.num_rows != summary["agents"]:
        raise ExportError(f"{str(path)!r}: trade_agents.parquet does not hold "
                          f"{summary['agents']} agents")  # fmt: skip
    agents = agents.sort_by("agent")
    scenario = _read_run_json(path / "run.json") if (path / "run.json").exists() else None
    return TradeFolder(path, summary, agents, metrics, edges, scenario)


def _edges_from_flows(path: Path, summary: dict) -> pa.Table:
    """The traded edges of an older folder, from its directed flow graph (summed both ways)."""
    if not path.is_file():
        raise ExportError(f"{str(path.parent)!r}: no edges.parquet and no flows.graphml")
    F = nx.read_graphml(path, node_type=int)
    cols = ["volume", *(f"units_{g}" for g in summary.get("goods", []))]
    rows: dict[tuple[int, int], dict[str, float]] = {}
    for s, d, data in F.edges(data=True):
        row = rows.setdefault((min(s, d), max(s, d)), dict.fromkeys(cols, 0.0))
        for c in cols:
            row[c] += float(data.get(c, 0.0))
    keys = sorted(rows)
    table = {"source": [a for a, _ in keys], "target": [b for _, b in keys]}
    table.update({c: [rows[k][c] for k in keys] for c in cols})
    return pa.table({k: pa.array(v, pa.int64() if k in ("source", "target") else None)
                     for k, v in table.items()})  # fmt: skip


def node_table(folder: TradeFolder) -> pa.Table:
    """Per-agent node attributes (the module docstring), ``id`` first; one row per agent."""
    names = ["id" if c == "agent" else c for c in folder.agents.column_names]
    return with_names(folder.agents.rename_columns(names), folder.scenario)


def to_networkx(folder: TradeFolder) -> nx.Graph:
    """The network the agents traded on: node attributes (:func:`node_table`) and, per
    edge, what crossed it (``trades``, ``volume``, ``units_<good>``)."""
    table = node_table(folder)
    n = folder.n_agents
    if not np.array_equal(table["id"].to_numpy(), np.arange(n)):
        raise ExportError(f"{str(folder.path)!r}: agent ids are not 0..{n - 1}")
    G = nx.Graph(kind=folder.summary.get("graph", "unknown"), scenario=folder.summary["scenario"],
                 status=_status(folder.summary))  # fmt: skip
    columns = {c: table[c].to_pylist() for c in table.column_names if c != "id"}
    G.add_nodes_from((i, {k: v[i] for k, v in columns.items()}) for i in range(n))
    e = folder.edges
    extra = {c: e[c].to_pylist() for c in e.column_names if c not in ("source", "target")}
    for k, (a, b) in enumerate(zip(e["source"].to_pylist(), e["target"].to_pylist(), strict=True)):
        G.add_edge(a, b, **{c: v[k] for c, v in extra.items()})
    return G


def export(folder: TradeFolder, out, formats) -> list[Path]:
    """Write ``formats`` of a trade folder into ``out``: the graph (GraphML, GEXF) and
    ``nodes.parquet``, ``edges.parquet``, ``metrics.parquet`` (per round)."""
    out = export_dir(out, formats)
    written = write_graphs(to_networkx(folder), out, folder.path.resolve().name, formats)
    if "parquet" in formats:
        pq.write_table(node_table(folder), out / "nodes.parquet")
        pq.write_table(folder.edges, out / "edges.parquet")
        pq.write_table(folder.metrics, out / "metrics.parquet")
        written += [out / "nodes.parquet", out / "edges.parquet", out / "metrics.parquet"]
    return written


def _status(s: dict) -> str:
    return s.get("status") or ("converged" if s["converged"] else "max_rounds")


# ---- text ---------------------------------------------------------------------------------
def summary_text(folder: TradeFolder, top: int = 5, width: int = 60) -> str:
    """Status, trades, roles and layers, hops, concentration, money, Walras, curves, the
    busiest agents."""
    from tatonnet.results.inspect import _log10, sparkline

    s = folder.summary
    t = folder.agents
    n = folder.n_agents
    rounds = f"{s['rounds']} of {s['max_rounds']}" if "max_rounds" in s else str(s["rounds"])
    status = _status(s)
    met = "Pareto test met" if s["converged"] else "Pareto test not met"
    lines = [
        f"trade run: {folder.path}",
        f"scenario: {s['scenario']} - {n} agents, goods {s['goods']}, "
        + (f"{s['graph']} network ({s['n_edges']} edges), " if "graph" in s else "")
        + (f"medium {s['medium']}, " if "medium" in s else "")
        + f"seed {s.get('seed', '?')}",
        f"status:   {status} after {rounds} rounds ({met}"
        + (f", tol {s['tol']:g})" if s.get("tol") else ")"),
        f"trades:   {s['trades']} executed, {s['rejected']} rejected, {s['pairs']} meetings; "
        f"{s.get('active_agents', '?')} agents traded",
    ]
    roles = t["role"].to_pylist()
    counts = {r: roles.count(r) for r in dict.fromkeys(("producer", "consumer", "intermediary",
                                                       "inactive", *roles))}  # fmt: skip
    lines.append("roles:    " + ", ".join(f"{r} {c}" for r, c in counts.items() if c)
                 + f" (of {n}; intermediary: passes on >= half of its trade)")  # fmt: skip
    layer = t["layer"].to_numpy()
    through = t["throughput"].to_numpy()
    parts = []
    for k in np.unique(layer):
        sel = layer == k
        name = "outside" if k < 0 else str(k)
        mean = f" ({through[sel].mean():.2f})" if k >= 0 else ""
        parts.append(f"{name}: {int(sel.sum())}{mean}")
    lines.append("layers:   " + ", ".join(parts) + "  (agents, mean throughput; 0: the sources)")
    hops = s.get("mean_hops_per_good")
    if hops is not None:
        lines.append("hops:     mean per good " + ", ".join(
            f"{g} {h:.2f}" for g, h in zip(s["goods"], hops, strict=False)))  # fmt: skip
    c = s.get("concentration")
    if c:
        lines.append(
            f"concentration: {int(c['edges_traded'])} edges traded, edge Gini "
            f"{c['edge_gini']:.2f}, HHI {c['edge_hhi']:.3f}, degree centralization "
            f"{c['degree_centralization']:.2f}, busiest agent {c['top_agent_share']:.0%} of volume"
        )
    if s.get("money_good") is not None:
        lines.append(f"money:    {s['goods'][s['money_good']]} (resale shares "
                     + ", ".join(f"{x:.2f}" for x in s["resale_share"]) + ")")  # fmt: skip
    w = s.get("walras", {})
    if "pareto_gap" in w:
        lines.append(f"pareto:   remaining log-MRS spread {w['pareto_gap']:.3g}")
    if "utility_gap_median" in w:
        lines.append(f"walras:   median utility gap {w['utility_gap_median']:+.1%} against the "
                     f"Walrasian allocation; {w['share_worse_than_walras']:.0%} of agents worse "
                     "off")  # fmt: skip
    if s.get("flows_graphml") is False:
        lines.append(f"graphml:  no flows.graphml ({n} agents); the network with every attribute: "
                     f"tatonnet inspect {folder.path} --export OUT --format graphml")  # fmt: skip
    m = folder.metrics
    lines.append(f"per round: rounds 1..{m.num_rows} left to right")
    for name, values, log in (("trades", m["trades"].to_numpy(), False),
                              ("mrs spread", m["mrs_std"].to_numpy(), True)):  # fmt: skip
        line, lo, hi = sparkline(_log10(values) if log else values.astype(float), width)
        unit = " (log10)" if log else ""
        lines.append(f"  {name:13s} |{line}|  {lo:.3g} .. {hi:.3g}{unit}")
    k = min(top, n)
    order = np.argsort(-t["gross"].to_numpy(), kind="stable")[:k]
    lines.append(f"top {k} agents by value traded:")
    lines.append(f"  {'id':>8s}  {'role':12s}  {'layer':>5s}  {'trades':>6s}  {'gross':>10s}  "
                 "throughput")  # fmt: skip
    ids, role, gross = t["agent"].to_numpy(), t["role"].to_pylist(), t["gross"].to_numpy()
    trades = t["trades"].to_numpy() if "trades" in t.column_names else np.full(n, -1)
    for i in order:
        lines.append(f"  {ids[i]:8d}  {role[i]:12s}  {layer[i]:5d}  {trades[i]:6d}  "
                     f"{gross[i]:10.4g}  {through[i]:.2f}")  # fmt: skip
    return "\n".join(lines)


def agent_text(folder: TradeFolder, agent: int) -> str:
    """One agent of a trade run: its row and the edges it traded on."""
    n = folder.n_agents
    if not 0 <= agent < n:
        raise ExportError(f"--agent: no agent {agent}: ids run from 0 to {n - 1}")
    row = node_table(folder).slice(agent, 1).to_pylist()[0]
    goods = folder.goods
    lines = [f"agent {agent} of {n} (group {row.get('group', '?')}, {row.get('family', '?')}) "
             f"in {folder.path}"]  # fmt: skip
    for key in ("role", "layer", "trades", "gross", "net", "throughput", "mean_hops", "profit",
                "utility_gain", "wealth"):  # fmt: skip
        if key in row:
            value = row[key]
            lines.append(f"{key + ':':14s}{value:.6g}" if isinstance(value, float)
                         else f"{key + ':':14s}{value}")  # fmt: skip
    for prefix in ("endowment", "holding"):
        if f"{prefix}_{goods[0]}" in row:
            lines.append(f"{prefix + ':':14s}[" + ", ".join(
                f"{row[f'{prefix}_{g}']:.6g}" for g in goods) + "]")  # fmt: skip
    e = folder.edges
    src, dst = e["source"].to_numpy(), e["target"].to_numpy()
    sel = np.flatnonzero((src == agent) | (dst == agent))
    lines.append(f"edges:        {sel.size} (by volume traded)")
    vol = e["volume"].to_numpy()
    trades = e["trades"].to_numpy() if "trades" in e.column_names else None
    for k in sel[np.argsort(-vol[sel], kind="stable")][:12]:
        other = int(dst[k] if src[k] == agent else src[k])
        count = "" if trades is None else f"{int(trades[k]):6d} trades  "
        lines.append(f"  {other:8d}  {count}volume {vol[k]:.4g}")
    return "\n".join(lines)
