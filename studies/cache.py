"""A study's cell cache: the key of a cell, and running a grid through the cache.

**The key** of a cell (:func:`cell_key`) is the SHA-256 (first 32 hex digits) of the
canonical JSON of :func:`cell_config`, everything that determines the cell's result:

* ``format``: :data:`tatonnet.results.cell_store.CELL_FORMAT`, and ``tatonnet``: the
  package version (a new release never reuses an older one's cells);
* the :class:`~tatonnet.studies.grid.Cell` fields ``scenario`` (the name or path as the
  study file gives it), ``graph``, ``agents``, ``market``, ``rule``, ``step_size``,
  ``hyperparameters``, ``seed``, ``rounds``, ``tol``, ``signal``, and for a tuned cell
  ``tune`` (the tuner's trials, batch, seed, pruning; :class:`~tatonnet.studies.grid.Tune`);
* ``scenario_content``: the scenario as the cell runs it, resolved (the file's content
  after the cell's agents / graph / seed overrides, every default filled in; its
  ``source`` left out), so an edited scenario file changes the key; with
  ``network_sha256``, the SHA-256 of the edge file a ``network.path`` names;
* ``rule_resolved``: the rule's name and every hyperparameter it is made with (its
  defaults included, after the scenario's own step size was applied);
* ``keep_points``: the trajectory points kept per cell
  (:data:`tatonnet.studies.grid.KEEP_POINTS`).

Not in the key: the cell's ``id`` (its place in the grid) and its ``sweep`` name; the row
of a reused cell takes both from the current study. Code edited without a new version
number is not in the key either: after changing the dynamics in a checkout, pass
``--force`` (every cell runs again).

**Running through the cache** (:func:`run_study_cells`): a cell whose key has a complete
file in the store is reused, unless its stored status is ``error`` (which runs again);
the others run (:func:`tatonnet.studies.grid.run_cells`) and each is written to the store
the moment it finishes; the verdict rows are then read back from the store
(:func:`stored_rows`), so a table is the same whether its cells were reused or run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from tatonnet.results.cell_store import CELL_FORMAT, CellStore
from tatonnet.studies import grid
from tatonnet.studies.grid import Cell, StudyError

#: Statuses of stored cells that are run again rather than reused.
NOT_REUSED = ("error",)


def _version() -> str | None:
    from tatonnet.results.provenance import version

    return version("tatonnet")


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise StudyError(f"network file {path!r}: cannot read: {exc.strerror or exc}") from None
    return digest.hexdigest()


class _Scenarios:
    """Resolved scenario content per (scenario, agents, graph, seed), loaded once each."""

    def __init__(self):
        self._loaded: dict = {}
        self._resolved: dict = {}

    def content(self, cell: Cell) -> tuple[dict, object]:
        from tatonnet.environment.scenario import SCENARIO_ERRORS, load_scenario

        at = (cell.scenario, cell.agents, cell.graph, cell.seed)
        if at not in self._resolved:
            try:
                if cell.scenario not in self._loaded:
                    self._loaded[cell.scenario] = load_scenario(cell.scenario)
                sc = self._loaded[cell.scenario].with_overrides(
                    agents=cell.agents, graph=None if cell.graph == "scenario" else cell.graph,
                    seed=cell.seed,
                )  # fmt: skip
            except SCENARIO_ERRORS as exc:
                raise StudyError(str(exc)) from None
            content = sc.model_dump(mode="json", exclude={"source"})
            if sc.network.path is not None:
                content["network_sha256"] = _file_sha256(sc.network.path)
            self._resolved[at] = (content, sc)
        return self._resolved[at]


def cell_config(cell: Cell, scenarios: _Scenarios | None = None) -> dict:
    """What a cell's key hashes (see the module docstring): plain JSON values."""
    from tatonnet.agents.rules import make_rule

    content, sc = (scenarios or _Scenarios()).content(cell)
    fields = dataclasses.asdict(cell)
    for label in ("id", "sweep"):
        del fields[label]
    if not cell.tune:  # an untuned cell's key is what it was before tuning existed
        del fields["tune"]
    else:
        fields["tune"] = [list(kv) for kv in cell.tune]
    fields["hyperparameters"] = [list(kv) for kv in cell.hyperparameters]
    rule = make_rule(cell.rule, **grid.cell_hyperparameters(cell, sc)[0])
    return {
        "format": CELL_FORMAT,
        "tatonnet": _version(),
        **fields,
        "scenario_content": content,
        "rule_resolved": {"name": rule.name, **dataclasses.asdict(rule)},
        "keep_points": grid.KEEP_POINTS,
    }


def key_of(config: dict) -> str:
    """The key of a :func:`cell_config`: SHA-256 of its canonical JSON, 32 hex digits."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cell_key(cell: Cell) -> str:
    """The key of one cell (loads its scenario; for a whole grid use :func:`cell_configs`)."""
    return key_of(cell_config(cell))


def cell_configs(cells: list[Cell]) -> list[tuple[str, dict]]:
    """``(key, config)`` of every cell, in order (each scenario loaded once); StudyError
    when a scenario or an edge file cannot be read."""
    scenarios = _Scenarios()
    out = []
    for cell in cells:
        config = cell_config(cell, scenarios)
        out.append((key_of(config), config))
    return out


@dataclasses.dataclass
class CachePlan:
    """Which cells of a study are reused and which run.

    Attributes
    ----------
    keys : list[str] — the key of each cell, in cell order
    to_run : list[Cell] — one cell per key that has no reusable file (first in grid order)
    reused : int — cells whose result comes from the store (duplicates of a run cell count)
    unused : int — stored keys that this study does not use (kept on disk)
    """

    keys: list[str]
    configs: dict[str, dict]
    to_run: list[Cell]
    reused: int
    unused: int


def plan(cells: list[Cell], configs: list[tuple[str, dict]], store: CellStore,
         reuse: bool = True) -> CachePlan:  # fmt: skip
    """Split the cells into reused and to run (``reuse=False``: every key runs again)."""
    keys = [key for key, _ in configs]
    stored = store.keys()
    to_run, seen = [], set()
    for cell, key in zip(cells, keys, strict=True):
        if key in seen:
            continue
        seen.add(key)
        row = store.row(key) if reuse and key in stored else None
        if row is None or row.get("status") in NOT_REUSED:
            to_run.append(cell)
    return CachePlan(keys, dict(configs), to_run, len(cells) - len(to_run),
                     len(stored - set(keys)))  # fmt: skip


def run_study_cells(cells: list[Cell], plan_: CachePlan, store: CellStore, workers: int,
                    address: str | None, progress: bool) -> None:  # fmt: skip
    """Run the plan's cells, each written to the store as it finishes."""
    key_by_id = dict(zip((c.id for c in cells), plan_.keys, strict=True))

    def sink(cell: Cell, result: dict) -> None:
        key = key_by_id[cell.id]
        store.put(key, result["row"], result["trajectory"], plan_.configs[key])

    grid.run_cells(plan_.to_run, workers, address, progress, sink=sink, done=plan_.reused,
                   run=run_any_cell)  # fmt: skip


def run_any_cell(cell: Cell) -> dict:
    """One cell of a study: tuned (:func:`tatonnet.studies.tune.run_tuned_cell_safely`) when
    its sweep has a ``tune`` table, else at its step size (:func:`grid.run_cell_safely`)."""
    if cell.tune:
        from tatonnet.studies import tune

        return tune.run_tuned_cell_safely(cell)
    return grid.run_cell_safely(cell)


def stored_rows(cells: list[Cell], keys: list[str], store: CellStore) -> list[dict]:
    """The verdict row of every cell, read back from the store, in cell order: ``cell`` and
    ``sweep`` from the current study, ``_key`` its key. StudyError if one is missing."""
    rows = []
    for cell, key in zip(cells, keys, strict=True):
        row = store.row(key)
        if row is None:
            raise StudyError(f"cell {cell.id}: its result {str(store.path(key))!r} is unreadable")
        row.update(cell=cell.id, sweep=cell.sweep, _key=key)
        rows.append(row)
    return rows


def stored_count(store: CellStore, keys: list[str]) -> int:
    """How many of ``keys`` have a file in the store."""
    return len(set(keys) & store.keys())

