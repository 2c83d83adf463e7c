"""Every kind of result folder behind one door: open it, summarize it, export it.

The kind is the one the marker ``.tatonnet-output.json`` records (``run``: tâtonnement,
``trade``, ``study``); a folder without a marker is recognised by its files. Each kind has
its module: :mod:`tatonnet.results.export` and :mod:`tatonnet.results.inspect` (runs),
:mod:`tatonnet.results.trade_folder`, :mod:`tatonnet.results.study_folder`.
"""

from __future__ import annotations

from pathlib import Path

from tatonnet.results import export, inspect, study_folder, trade_folder
from tatonnet.results.export import FORMATS, ExportError
from tatonnet.results.output import read_marker

#: What ``--export`` writes when ``--format`` is not given, by kind.
DEFAULT_FORMATS = {"run": FORMATS, "trade": FORMATS, "study": ("parquet",)}


def folder_kind(path) -> str:
    """``run``, ``trade`` or ``study``: from the marker, else from the folder's files."""
    path = Path(path)
    marker = read_marker(path)
    if marker is not None:
        return marker["kind"]
    if (path / "trade_agents.parquet").exists():
        return "trade"
    if (path / "verdicts.csv").exists():
        return "study"
    return "run"


def open_folder(path):
    """The folder read as its kind: RunFolder, TradeFolder or StudyFolder (ExportError if
    it is none of them)."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{str(path)!r} does not exist")
    if not path.is_dir():
        raise ExportError(f"{str(path)!r} is not a folder")
    kind = folder_kind(path)
    if kind == "calibrate":
        raise ExportError(
            f"{str(path)!r} is a calibration folder: read its summary.json and parameters.csv"
        )
    if kind == "trade":
        return trade_folder.open_trade(path)
    if kind == "study":
        return study_folder.open_study(path)
    return export.open_run(path)


def kind_of(folder) -> str:
    if isinstance(folder, trade_folder.TradeFolder):
        return "trade"
    if isinstance(folder, study_folder.StudyFolder):
        return "study"
    return "run"


def summary_text(folder, top: int = 5, width: int = 60) -> str:
    module = {"run": inspect, "trade": trade_folder, "study": study_folder}[kind_of(folder)]
    return module.summary_text(folder, top, width)


def agent_text(folder, agent: int, history: bool = False, width: int = 60) -> str:
    kind = kind_of(folder)
    if kind == "study":
        raise ExportError("--agent: a study folder has no agents (each cell was its own run)")
    if kind == "trade":
        if history:
            raise ExportError("--history: a trade folder keeps no per-round history of an agent")
        return trade_folder.agent_text(folder, agent)
    return inspect.agent_text(folder, agent, history, width)


def export_folder(folder, out, formats=None) -> list[Path]:
    """Write ``formats`` (default: :data:`DEFAULT_FORMATS` of the folder's kind) into ``out``."""
    kind = kind_of(folder)
    formats = DEFAULT_FORMATS[kind] if formats is None else formats
    module = {"run": export, "trade": trade_folder, "study": study_folder}[kind]
    return (export.export_run if kind == "run" else module.export)(folder, out, formats)
