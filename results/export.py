"""Exports of a finished run folder for the tools researchers use: GraphML, GEXF, Parquet.

>>> from tatonnet.results.export import open_run, export_run
>>> run = open_run("runs/cd")                      # doctest: +SKIP
>>> export_run(run, "exports/cd", ["graphml", "gexf", "parquet"])   # doctest: +SKIP

From the command line: ``python run.py inspect RUN_DIR --export DIR [--format graphml,gexf]``.

What is exported for a tâtonnement run, per agent (node): ``id``, ``group`` (the group's
name; its index is ``group_index``), ``family`` (as scenario files spell it:
``cobb-douglas``), ``price_<good>`` (final prices), ``excess_<good>`` (final excess demand
at own prices), ``wealth`` (``p_i . e_i``), ``endowment_<good>``, ``holding_<good>`` (the
agent's holdings: its endowment, since tâtonnement prices goods without trading them; a
run folder with ``holding_<good>`` columns, from a trading run, is exported as it is),
``utility`` (utility of the agent's demand at its own final prices, as
:attr:`tatonnet.agents.trader.Trader.utility`; a ``utility`` column in the run folder wins),
and ``role`` / ``layer`` when the run has them. Per edge: its two agent ids and ``weight``,
the Metropolis mixing weight. Parquet: the node table (``nodes.parquet``),
``edges.parquet`` (``source``, ``target``, ``weight``) and the per-round
``metrics.parquet``. Trade and study folders: :mod:`tatonnet.results.trade_folder`,
:mod:`tatonnet.results.study_folder`; any folder: :mod:`tatonnet.results.folders`.

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
import pydantic
from pydantic import BaseModel, ConfigDict

from tatonnet.environment.errors import first_line

FORMATS = ("graphml", "gexf", "parquet")


class ExportError(ValueError):
    """The folder is not a finished run, or an export cannot be written (one-line message)."""


class SummaryFile(BaseModel):
    """The keys of ``summary.json`` that ``inspect`` reads, with their types (others pass)."""

    model_config = ConfigDict(extra="allow")

    scenario: str
    n_agents: int
    n_goods: int
    goods: list[str]
    numeraire: int
    graph: str
    rule: str
    step_size: float
    signal: str
    seed: int
    status: str
    reason: str
    rounds: int
    max_rounds: int
    tol: float
    excess_demand: float
    price_dispersion: float
    prices: list[float]
    reference_prices: list[list[float]] | None = None
    nearest_reference: int | None = None
    distance_to_reference: float | None = None
    reference_method: str = "not computed"


def _check_summary(path: Path, data) -> dict:
    """``summary.json``'s dict if it has what ``inspect`` reads, else ExportError."""
    where = f"{str(path)!r}: summary.json"
    if not isinstance(data, dict):
        raise ExportError(f"{where}: expected a JSON object, got {type(data).__name__}")
    try:
        s = SummaryFile.model_validate(data)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ExportError(f"{where}: {loc}: {err['msg']}") from None
    g = len(s.goods)
    if s.n_goods != g or len(s.prices) != g or not 0 <= s.numeraire < max(g, 1):
        raise ExportError(
            f"{where}: inconsistent: n_goods {s.n_goods}, {g} goods, {len(s.prices)} prices, "
            f"numeraire {s.numeraire}"
        )
    refs = s.reference_prices or []
    if refs and (
        s.nearest_reference is None
        or not 0 <= s.nearest_reference < len(refs)
        or s.distance_to_reference is None
        or any(len(r) != g for r in refs)
    ):
        raise ExportError(f"{where}: inconsistent reference_prices / nearest_reference")
    return data


def _check_tables(path: Path, summary: dict, agents: pa.Table, metrics: pa.Table) -> None:
    """The agent and metric tables have the columns ``inspect`` reads."""
    goods = summary["goods"]
    need = ["id", "group", "family", "wealth", *(f"{k}_{g}" for k in ("price", "excess")
                                                 for g in goods)]  # fmt: skip
    if agents.num_rows == 0:
        raise ExportError(f"{str(path)!r}: agents/ holds no agents")
    missing = [c for c in need if c not in agents.column_names]
    if missing:
        raise ExportError(f"{str(path)!r}: agents/ has no column {missing[0]!r}")
    if not pa.types.is_integer(agents["id"].type):
        raise ExportError(f"{str(path)!r}: agents/ column 'id' is not integer")
    for c in need[3:]:
        if not (pa.types.is_integer(agents[c].type) or pa.types.is_floating(agents[c].type)):
            raise ExportError(f"{str(path)!r}: agents/ column {c!r} is not numeric")
    missing = [c for c in ("excess_demand", "price_dispersion") if c not in metrics.column_names]
    if missing:
        raise ExportError(f"{str(path)!r}: metrics.parquet has no column {missing[0]!r}")


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

        From ``edges.parquet`` (or ``edges/``, the parts the shards wrote when they built
        the economy); for run folders written before it existed, rebuilt from the scenario
        in ``run.json``.
        """
        if self._edges is None:
            path = self.path / "edges.parquet"
            if not path.is_file() and (self.path / "edges").is_dir():
                path = self.path / "edges"
            if path.exists():
                t = pq.read_table(path)
                self._edges = np.column_stack(
                    [t["source"].to_numpy(), t["target"].to_numpy()]
                ).astype(np.int64)
            elif self.scenario is not None:
                from tatonnet.environment.scenario import build_network_for
                from tatonnet.results.output import edge_table

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
        summary = _check_summary(path, json.loads((path / "summary.json").read_text()))
        agents = pq.read_table(path / "agents")
        metrics = pq.read_table(path / "metrics.parquet")
    except (OSError, ValueError, RecursionError, pa.ArrowException) as exc:
        first = first_line(exc)
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"{str(path)!r}: unreadable run folder: {first}") from None
    _check_tables(path, summary, agents, metrics)
    try:
        order = np.argsort(agents["id"].to_numpy(), kind="stable")
    except (pa.ArrowException, ValueError) as exc:
        raise ExportError(f"{str(path)!r}: agents/ column 'id': {exc}") from None
    agents = agents.take(pa.array(order))
    scenario = None
    if (path / "run.json").exists():
        scenario = _read_run_json(path / "run.json")
        if scenario.n_agents != agents.num_rows or list(scenario.good_names) != summary["goods"]:
            raise ExportError(
                f"{str(path)!r}: run.json's scenario ({scenario.n_agents} agents, goods "
                f"{list(scenario.good_names)}) does not match agents/ ({agents.num_rows} rows) "
                f"and summary.json (goods {summary['goods']})"
            )
    return RunFolder(path, summary, agents, metrics, scenario)


def _read_run_json(path: Path):
    """The scenario recorded in ``run.json``; ExportError when it is not one."""
    from tatonnet.environment.scenario import SCENARIO_ERRORS, Scenario

    where = f"{str(path.parent)!r}: run.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        first = first_line(exc)
        raise ExportError(f"{where}: unreadable: {first}") from None
    if not isinstance(config, dict) or not isinstance(config.get("scenario"), dict):
        raise ExportError(f"{where}: expected a JSON object with a 'scenario' object")
    try:
        return Scenario.model_validate(config["scenario"])
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ExportError(f"{where}: scenario: {loc + ': ' if loc else ''}{msg}") from None
    except (*SCENARIO_ERRORS, RecursionError) as exc:
        raise ExportError(f"{where}: scenario: {exc}") from None


def group_labels(scenario, index) -> list | None:
    """The group name of every agent, from its group index (n,) and the run's scenario (its
    ``agents`` tables, in order; an unnamed table is named by its index, ``"0"``); None
    without a scenario."""
    if scenario is None:
        return None
    names = [g.name or str(k) for k, g in enumerate(scenario.agents)]
    index = np.asarray(index, dtype=np.int64)
    if index.size and not (0 <= index.min() and index.max() < len(names)):
        raise ExportError(f"group index out of range: the scenario has {len(names)} groups")
    return [names[k] for k in index.tolist()]


def with_names(table: pa.Table, scenario) -> pa.Table:
    """``table`` with ``group`` as the group's name (its index kept as ``group_index``) and
    ``family`` in the one spelling of :data:`tatonnet.agents.utility.FAMILY_NAMES`
    (folders written before it said ``cobb_douglas``)."""
    names = table.column_names
    if "group" in names and pa.types.is_integer(table["group"].type):
        labels = group_labels(scenario, table["group"].to_numpy())
        if labels is not None:
            k = names.index("group")
            index = table["group"]
            table = table.set_column(k, "group", pa.array(labels, pa.string()))
            table = table.add_column(k + 1, "group_index", index)
    if "family" in table.column_names:
        k = table.column_names.index("family")
        family = [None if f is None else str(f).replace("_", "-") for f in
                  table["family"].to_pylist()]  # fmt: skip
        table = table.set_column(k, "family", pa.array(family, pa.string()))
    return table


def node_table(run: RunFolder) -> pa.Table:
    """Per-agent node attributes (see the module docstring); one row per agent, by id."""
    table = with_names(run.agents, run.scenario)
    goods = run.goods
    names = set(table.column_names)
    economy = run.economy()
    if economy is not None:
        if not any(f"endowment_{g}" in names for g in goods):
            for j, g in enumerate(goods):
                table = table.append_column(f"endowment_{g}", pa.array(economy.endowments[:, j]))
        if not any(f"holding_{g}" in names for g in goods):
            for j, g in enumerate(goods):
                table = table.append_column(f"holding_{g}", pa.array(economy.endowments[:, j]))
    if "utility" not in names and economy is not None:
        from tatonnet.agents.utility import demand, utility

        prices = run.prices()
        x = demand(prices, economy.endowments, economy.shares, economy.family, economy.sigma)
        u = utility(x, economy.shares, economy.family, economy.sigma)
        table = table.append_column("utility", pa.array(u))
    return table


def network_of(edges: np.ndarray, n_agents: int, kind: str):
    """The :class:`~tatonnet.environment.network.Network` of stored edges ``(m, 2)`` (its
    Metropolis mixing weights follow from the degrees); ``central`` has none."""
    from tatonnet.environment.network import Network, from_edges

    if kind == "central":
        return Network.central(n_agents)
    return from_edges(np.asarray(edges, dtype=np.int64).reshape(-1, 2), n_agents, kind)


def to_networkx(run: RunFolder) -> nx.Graph:
    """The run's network: every node's attributes (:func:`node_table`) and every edge's
    Metropolis mixing ``weight``; graph attributes ``kind``, ``scenario``, ``status``."""
    table = node_table(run)
    ids = table["id"].to_numpy()
    if not np.array_equal(ids, np.arange(run.n_agents)):
        raise ExportError(f"{str(run.path)!r}: agent ids are not 0..{run.n_agents - 1}")
    network = network_of(run.edges(), run.n_agents, run.summary["graph"])
    G = network.to_networkx(nodes={c: table[c] for c in table.column_names if c != "id"})
    G.graph.update(scenario=run.summary["scenario"], status=run.summary["status"])
    return G


def write_graphs(G: nx.Graph, out: Path, name: str, formats) -> list[Path]:
    """Write ``G`` as ``out/<name>.graphml`` and/or ``.gexf`` (those in ``formats``)."""
    written = []
    if "graphml" in formats:
        nx.write_graphml(G, out / f"{name}.graphml")
        written.append(out / f"{name}.graphml")
    if "gexf" in formats:
        nx.write_gexf(G, out / f"{name}.gexf")
        written.append(out / f"{name}.gexf")
    return written


def export_dir(out, formats, allowed=FORMATS) -> Path:
    """Check ``formats`` against ``allowed`` and create the export folder ``out``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"--format: expected some of {', '.join(FORMATS)}, got {formats}")
    refused = [f for f in formats if f not in allowed]
    if refused:
        raise ExportError(
            f"--format {refused[0]}: this folder has no network to export; use "
            f"--format {','.join(allowed)}"
        )
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"--export: cannot create {str(out)!r}: {exc.strerror}") from None
    return out


def export_run(run: RunFolder, out, formats=FORMATS) -> list[Path]:
    """Write ``formats`` (subset of :data:`FORMATS`) of ``run`` into folder ``out``."""
    out = export_dir(out, formats)
    name = run.path.resolve().name
    written = []
    if "graphml" in formats or "gexf" in formats:
        written += write_graphs(to_networkx(run), out, name, formats)
    if "parquet" in formats:
        pq.write_table(node_table(run), out / "nodes.parquet")
        e = run.edges()
        network = network_of(e, run.n_agents, run.summary["graph"])
        source, target, weight = network.edge_list()
        pq.write_table(pa.table({"source": source, "target": target, "weight": weight}),
                       out / "edges.parquet")  # fmt: skip
        pq.write_table(run.metrics, out / "metrics.parquet")
        written += [out / "nodes.parquet", out / "edges.parquet", out / "metrics.parquet"]
    return written
