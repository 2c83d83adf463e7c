"""Exports of a finished run folder for the tools researchers use: GraphML, GEXF, Parquet.

>>> from tatonnet.results.export import open_run, export_run
>>> run = open_run("runs/cd")                      # doctest: +SKIP
>>> export_run(run, "exports/cd", ["graphml", "gexf", "parquet"])   # doctest: +SKIP

From the command line: ``python run.py inspect RUN_DIR --export DIR [--format graphml,gexf]``.

What is exported, per agent (node): ``id``, ``group``, ``family``, ``price_<good>`` (final
prices), ``excess_<good>`` (final excess demand at own prices), ``wealth`` (``p_i . e_i``),
``holding_<good>`` (the agent's holdings: its endowment, since tâtonnement prices goods
without trading them; a run folder with ``holding_<good>`` columns, from a trading run,
is exported as it is), ``utility`` (utility of the agent's demand at its own final prices,
as :attr:`tatonnet.agents.trader.Trader.utility`; a ``utility`` column in the run folder wins), and
``role`` / ``layer`` when the run has them. Per edge: its two agent ids. Parquet: the node
table (``nodes.parquet``), ``edges.parquet`` and the per-round ``metrics.parquet``.

GraphML and GEXF go through networkx (pure Python): fine up to ~10^5 agents (seconds);
at 10^6 agents expect minutes and gigabytes: use the Parquet files there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("graphml", "gexf", "parquet")


class ExportError(ValueError):
    """The folder is not a finished run, or an export cannot be written (one-line message)."""


@dataclasses.dataclass
class RunFolder:
    """A finished run folder, read.

    Attributes
    ----------
    path : Path
    summary : dict — ``summary.json``
    agents : pyarrow.Table — the per-agent table sorted by ``id``; (n_agents rows)
    metrics : pyarrow.Table — per-round metrics; (rounds + 1 rows)
    scenario : Scenario or None — from ``run.json`` (written by ``run.py`` runs)
    """

    path: Path
    summary: dict
    agents: pa.Table
    metrics: pa.Table
    scenario: object | None
    _edges: np.ndarray | None = None
    _economy: object | None = None

    @property
    def n_agents(self) -> int:
        return self.agents.num_rows

    @property
    def goods(self) -> list[str]:
        return list(self.summary["goods"])

    def prices(self) -> np.ndarray:
        """Final prices of every agent; (n_agents, n_goods)."""
        return np.column_stack([self.agents[f"price_{g}"].to_numpy() for g in self.goods])

    def economy(self):
        """The run's economy rebuilt from its scenario (same seed, same draws), or None."""
        if self._economy is None and self.scenario is not None:
            from tatonnet.environment.scenario import build_economy

            self._economy, _ = build_economy(self.scenario)
        return self._economy

    def edges(self) -> np.ndarray:
        """Undirected edges ``(source, target)``, source < target; (n_edges, 2) int64.

        From ``edges.parquet``; for run folders written before it existed, rebuilt from the
        scenario in ``run.json``.
        """
        if self._edges is None:
            path = self.path / "edges.parquet"
            if path.is_file():
                t = pq.read_table(path)
                self._edges = np.column_stack(
                    [t["source"].to_numpy(), t["target"].to_numpy()]
                ).astype(np.int64)
            elif self.scenario is not None:
                from tatonnet.results.output import edge_table
                from tatonnet.environment.scenario import build_network_for

                t = edge_table(build_network_for(self.scenario))
                self._edges = np.column_stack([t["source"].to_numpy(), t["target"].to_numpy()])
            else:
                raise ExportError(f"{self.path}: no edges.parquet and no run.json to rebuild it")
            self._edges = self._edges.reshape(-1, 2)
        return self._edges

    def neighbours(self, i: int) -> np.ndarray:
        """Sorted neighbour ids of agent ``i``."""
        e = self.edges()
        return np.sort(np.concatenate([e[e[:, 0] == i, 1], e[e[:, 1] == i, 0]]))


def open_run(path) -> RunFolder:
    """Read a finished run folder; :class:`ExportError` when it is not one."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise ExportError(f"{str(path)!r} is not a folder")
    missing = [n for n in ("summary.json", "metrics.parquet", "agents") if not (path / n).exists()]
    if missing:
        raise ExportError(
            f"{str(path)!r} is not a finished tatonnet run folder (no {', '.join(missing)})"
        )
    try:
        summary = json.loads((path / "summary.json").read_text())
        agents = pq.read_table(path / "agents")
        metrics = pq.read_table(path / "metrics.parquet")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ExportError(f"{str(path)!r}: unreadable run folder: {exc}") from None
    order = np.argsort(agents["id"].to_numpy(), kind="stable")
    agents = agents.take(pa.array(order))
    scenario = None
    if (path / "run.json").is_file():
        from tatonnet.environment.scenario import Scenario

        scenario = Scenario.model_validate(json.loads((path / "run.json").read_text())["scenario"])
    return RunFolder(path, summary, agents, metrics, scenario)


def node_table(run: RunFolder) -> pa.Table:
    """Per-agent node attributes (see the module docstring); one row per agent, by id."""
    table = run.agents
    goods = run.goods
    names = set(table.column_names)
    economy = run.economy()
    if not any(f"holding_{g}" in names for g in goods) and economy is not None:
        for j, g in enumerate(goods):
            table = table.append_column(f"holding_{g}", pa.array(economy.endowments[:, j]))
    if "utility" not in names and economy is not None:
        from tatonnet.agents.utility import demand, utility

        prices = run.prices()
        x = demand(prices, economy.endowments, economy.shares, economy.family, economy.sigma)
        u = utility(x, economy.shares, economy.family, economy.sigma)
        table = table.append_column("utility", pa.array(u))
    return table


def to_networkx(run: RunFolder) -> nx.Graph:
    """The run's network with every node's attributes (:func:`node_table`)."""
    table = node_table(run)
    G = nx.Graph(scenario=run.summary["scenario"], status=run.summary["status"])
    rows = table.to_pylist()
    G.add_nodes_from((int(r["id"]), {k: v for k, v in r.items() if k != "id"}) for r in rows)
    G.add_edges_from(run.edges().tolist())
    return G


def export_run(run: RunFolder, out, formats=FORMATS) -> list[Path]:
    """Write ``formats`` (subset of :data:`FORMATS`) of ``run`` into folder ``out``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format: expected some of {', '.join(FORMATS)}, got {formats}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--export: cannot create {str(out)!r}: {exc.strerror}") from None
    name = run.path.resolve().name
    written = []
    if "graphml" in formats or "gexf" in formats:
        G = to_networkx(run)
        if "graphml" in formats:
            nx.write_graphml(G, out / f"{name}.graphml")
            written.append(out / f"{name}.graphml")
        if "gexf" in formats:
            nx.write_gexf(G, out / f"{name}.gexf")
            written.append(out / f"{name}.gexf")
    if "parquet" in formats:
        pq.write_table(node_table(run), out / "nodes.parquet")
        e = run.edges()
        pq.write_table(pa.table({"source": e[:, 0], "target": e[:, 1]}), out / "edges.parquet")
        pq.write_table(run.metrics, out / "metrics.parquet")
        written += [out / "nodes.parquet", out / "edges.parquet", out / "metrics.parquet"]
    return written
