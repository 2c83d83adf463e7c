"""A finished ``tatonnet study`` folder: read, summarized as text, exported (Parquet).

A study has no network of its own (each cell builds one and keeps only its verdict and a
downsampled trajectory), so its exports are tables: ``verdicts.parquet`` (``verdicts.csv``
with typed columns) and ``cells.parquet`` (the trajectories, as written).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tatonnet.environment.errors import first_line
from tatonnet.results.export import ExportError, export_dir


@dataclasses.dataclass
class StudyFolder:
    """A finished study folder, read.

    Attributes
    ----------
    path : Path
    verdicts : pyarrow.Table — ``verdicts.csv``, one row per cell
    summary : dict — ``summary.json`` (empty for folders written before it existed)
    run : dict — ``run.json`` (the study, options, seeds, versions; empty if absent)
    """

    path: Path
    verdicts: pa.Table
    summary: dict
    run: dict

    @property
    def n_cells(self) -> int:
        return self.verdicts.num_rows


def open_study(path) -> StudyFolder:
    """Read a finished study folder; :class:`ExportError` when it is not one."""
    path = Path(path)
    if not (path / "verdicts.csv").is_file():
        raise ExportError(f"{str(path)!r} is not a finished tatonnet study folder (no verdicts.csv)")
    try:
        verdicts = pacsv.read_csv(path / "verdicts.csv")
        summary, run = ({} if not (path / name).is_file() else json.loads((path / name).read_text())
                        for name in ("summary.json", "run.json"))  # fmt: skip
    except (OSError, ValueError, RecursionError, pa.ArrowException) as exc:
        first = first_line(exc)
        raise ExportError(f"{str(path)!r}: unreadable study folder: {first}") from None
    if not (isinstance(summary, dict) and isinstance(run, dict)):
        raise ExportError(f"{str(path)!r}: summary.json and run.json must be JSON objects")
    missing = [c for c in ("cell", "scenario", "rule", "status") if c not in verdicts.column_names]
    if missing:
        raise ExportError(f"{str(path)!r}: verdicts.csv has no column {missing[0]!r}")
    return StudyFolder(path, verdicts, summary, run)


def counts(folder: StudyFolder, by: str | None = None) -> dict:
    """Cells per status (in order of first appearance), or per ``by`` column then status."""
    status = [str(s) for s in folder.verdicts["status"].to_pylist()]
    if by is None:
        return {s: status.count(s) for s in dict.fromkeys(status)}
    out: dict = {}
    for key, s in zip(folder.verdicts[by].to_pylist(), status, strict=True):
        row = out.setdefault(str(key), {})
        row[s] = row.get(s, 0) + 1
    return out


def summary_text(folder: StudyFolder, top: int = 5, width: int = 60) -> str:
    """The grid, its cells per status (all, per rule, per scenario) and where its tables are."""
    s, v = folder.summary, folder.verdicts
    name = s.get("study") or folder.run.get("study", {}).get("name") or folder.path.name
    source = s.get("study_source") or folder.run.get("study", {}).get("source", "")
    seeds = s.get("seeds") or folder.run.get("seeds") or sorted(set(v["seed"].to_pylist()))
    scenarios = list(dict.fromkeys(v["scenario"].to_pylist()))
    rules = list(dict.fromkeys(v["rule"].to_pylist()))
    lines = [
        f"study:    {folder.path}",
        f"grid:     {name}" + (f" ({source})" if source else "") + f" - {folder.n_cells} cells: "
        f"{len(scenarios)} scenarios x {len(rules)} rules, seeds {seeds}",
        "status:   " + ", ".join(f"{k} {n}" for k, n in counts(folder).items()),
    ]
    if s.get("wall_seconds") is not None:
        lines.append(f"time:     {s['wall_seconds']:.1f} s with --workers {s.get('workers', '?')} "
                     f"({s.get('cell_seconds', 0.0):.1f} s of cell time)")  # fmt: skip
    for by, title in (("rule", "by rule:"), ("scenario", "by scenario:")):
        lines.append(title)
        for key, row in counts(folder, by).items():
            lines.append(f"  {key:24s} " + ", ".join(f"{k} {n}" for k, n in row.items()))
    headline = folder.path / s.get("headline", "headline.md")
    if headline.is_file():
        lines.append(f"headline: {headline}  (the verdict tables)")
    lines.append(f"cells:    {folder.path / 'verdicts.csv'} (every column), "
                 f"{folder.path / 'verdicts.md'}")  # fmt: skip
    return "\n".join(lines)


def export(folder: StudyFolder, out, formats) -> list[Path]:
    """``verdicts.parquet`` and ``cells.parquet`` into ``out`` (only ``parquet`` applies)."""
    out = export_dir(out, formats, allowed=("parquet",))
    pq.write_table(folder.verdicts, out / "verdicts.parquet")
    written = [out / "verdicts.parquet"]
    if (folder.path / "cells.parquet").is_file():
        try:
            cells = pq.read_table(folder.path / "cells.parquet")
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"{str(folder.path)!r}: unreadable cells.parquet: {exc}") from None
        pq.write_table(cells, out / "cells.parquet")
        written.append(out / "cells.parquet")
    return written
