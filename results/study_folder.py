"""A ``tatonnet study`` folder: claimed and updated in place, read, summarized, exported.

**Claimed** (:func:`claim_study`). A study folder is written in place, not renamed into
place: its cells are kept in ``cells/`` (:mod:`tatonnet.results.cell_store`) the moment
each finishes, so a stopped study leaves every finished cell usable, and a later run into
the same folder reuses them and rewrites the tables. Only a folder that carries a
``study`` marker (``.tatonnet-output.json``), a new one, or an existing empty one is
used; any other non-empty folder is refused with one line, and another kind of tatonnet
folder only with ``--force`` (then replaced). The OS lock on ``.<name>.lock`` beside it
(the one every run folder uses: :mod:`tatonnet.results.output`) is held the whole time,
so a second study into the same folder is refused at once. The tables and figures are
written into a hidden ``.publish-<id>.partial/`` inside the folder and then renamed
over the old ones, ``summary.json`` last; ``summary.json`` lists them (``files``), and a
later run replaces or removes only the files listed there (a folder from before that
list: the study's own file names), never a file of yours.

**Read.** A study has no network of its own (each cell builds one and keeps only its
verdict and a downsampled trajectory), so its exports are tables: ``verdicts.parquet``
(``verdicts.csv`` with typed columns) and ``cells.parquet`` (the trajectories, as
written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tatonnet.environment.errors import first_line
from tatonnet.results.cell_store import CellStore
from tatonnet.results.export import ExportError, export_dir
from tatonnet.results.output import (
    MARKER,
    OutputError,
    _check_leftover_work,
    _remove_empty,
    _write_marker,
    check_location,
    lock_with_parents,
    read_marker,
    release_lock,
    work_dir_for,
)

#: The cell cache of a study folder (one file per finished cell).
CELLS = "cells"
#: The files every finished study writes (the figures are named per scenario).
TABLES = ("verdicts.csv", "verdicts.md", "headline.md", "cells.parquet", "timing.csv",
          "run.json", "summary.json")  # fmt: skip
_FIGURE = re.compile(r"(convergence|simplex|verdicts)-[^/]+\.(png|pdf|svg)")
_STAGING = re.compile(r"\.publish-[0-9a-f]{32}\.partial")


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



# ---- claiming a study folder ---------------------------------------------------------------
def owned_files(out: Path) -> set[str]:
    """The files of ``out`` that a study wrote: ``summary.json``'s ``files``, or for a
    folder written before that list, those named as a study names its tables and figures."""
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    files = summary.get("files") if isinstance(summary, dict) else None
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return {f for f in files if _plain_name(f)}
    try:
        names = {p.name for p in out.iterdir()}
    except OSError:
        return set()
    return {n for n in names if n in TABLES or _FIGURE.fullmatch(n)}


def _plain_name(name: str) -> bool:
    return bool(name) and name == Path(name).name and not name.startswith(".") and name not in (
        CELLS, MARKER)  # fmt: skip


@dataclasses.dataclass
class StudyClaim:
    """This process's hold on a study folder (made by :func:`claim_study`).

    Attributes
    ----------
    out : Path — the study folder (exists, marked ``study``)
    run_id : str — the marker's id (the folder's, kept across updates)
    created : bool — this process created ``out`` (else it existed: updated, or adopted empty)
    updating : bool — ``out`` was already a study folder
    owned : set[str] — the files an earlier run wrote there (replaced or removed on publish)
    """

    out: Path
    run_id: str
    created: bool
    updating: bool
    owned: set
    _lock: object = dataclasses.field(repr=False, default=None)
    _lock_created: bool = False
    made_parents: tuple = ()
    _discarded: bool = dataclasses.field(repr=False, default=False)

    def __enter__(self) -> StudyClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def store(self) -> CellStore:
        return CellStore(self.out / CELLS)

    def staging(self) -> Path:
        """A fresh hidden folder inside ``out`` to write the tables and figures into."""
        folder = self.out / f".publish-{uuid.uuid4().hex}.partial"
        folder.mkdir()
        return folder

    def publish(self, staging: Path) -> list[str]:
        """Rename every file of ``staging`` into ``out`` (``summary.json`` last), then remove
        the files an earlier run wrote that this one did not; the names published."""
        names = sorted(p.name for p in staging.iterdir())
        for name in sorted(names, key=lambda n: n == "summary.json"):
            os.replace(staging / name, self.out / name)
        staging.rmdir()
        for name in sorted(self.owned - set(names)):
            path = self.out / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(path.lstat().st_mode):
                    path.unlink()
        self.owned = set(names)
        return names

    def discard_if_empty(self) -> bool:
        """After a stop: if no cell was stored, take back what this run added (the folder it
        created, or its marker in a folder it adopted). Whether it did."""
        store = self.store
        store.remove_temporaries()
        if self.updating or store.keys():
            return False
        with contextlib.suppress(OSError):
            (self.out / CELLS).rmdir()
        with contextlib.suppress(OSError):
            left = {p.name for p in self.out.iterdir()}
            if left <= {MARKER}:
                (self.out / MARKER).unlink()
                if self.created:
                    self.out.rmdir()
                    self._discarded = True  # its new parents go once the lock file has
                return True
        return False

    def release(self) -> None:
        """Unlock the name and remove the (empty) lock file."""
        lock, self._lock = self._lock, None
        release_lock(lock, self.out, lambda: self._lock_created or read_marker(self.out) is not None)
        if self._discarded:
            _remove_empty(self.made_parents)


def claim_study(out: Path, force: bool = False, outputs=()) -> StudyClaim:
    """Validate ``out``, lock it and make it (or keep it as) a marked study folder.

    ``outputs``: the file names this run will write; one that exists in ``out`` but was
    not written by a study is refused. ``force`` replaces a tatonnet folder of another kind
    (a study folder is updated either way). Raises OutputError (one line) before changing
    anything.
    """
    out = Path(out)
    check_location(out)
    lock, lock_created, made = lock_with_parents(out)
    created = marked = False
    try:
        name = repr(str(out))
        work = work_dir_for(out)  # a study no longer works there, but never beside a stranger
        if os.path.lexists(work) and read_marker(work) is None:
            _check_leftover_work(out, work, force)
        marker = read_marker(out) if os.path.lexists(out) else None
        if marker is not None and marker["kind"] != "study":
            if not force:
                raise OutputError(
                    f"--out: {name} is a tatonnet {marker['kind']} folder, not a study folder "
                    f"(--force replaces it); choose another --out"
                )
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "run")
            shutil.rmtree(old, ignore_errors=True)
            marker = None
        if not os.path.lexists(out):
            out.mkdir()
            created = True
        elif marker is None and any(out.iterdir()):
            raise OutputError(
                f"--out: {name} already exists and was not written by tatonnet (not a "
                f"tatonnet study folder: no {MARKER}); choose another --out"
            )
        updating = marker is not None
        owned = owned_files(out) if updating else set()
        for file in outputs:
            if os.path.lexists(out / file) and file not in owned:
                raise OutputError(
                    f"--out: {str(out / file)!r} was not written by tatonnet study; move it "
                    f"away or choose another --out"
                )
        cells = out / CELLS
        if os.path.lexists(cells) and (cells.is_symlink() or not cells.is_dir()):
            raise OutputError(f"--out: {str(cells)!r} is in the way (not a folder of cells)")
        if marker is None:
            run_id = uuid.uuid4().hex
            _write_marker(out, run_id, "study")
            marked = True
        else:
            run_id = marker["id"]
        cells.mkdir(exist_ok=True)
        for stale in out.iterdir():  # a killed run's unpublished tables
            if _STAGING.fullmatch(stale.name) and stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
        CellStore(cells).remove_temporaries()
    except BaseException:
        if marked:
            with contextlib.suppress(OSError):
                (out / CELLS).rmdir()
            with contextlib.suppress(OSError):
                (out / MARKER).unlink()
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        StudyClaim(out, "", False, False, set(), lock, lock_created).release()
        _remove_empty(made)
        raise
    return StudyClaim(out, run_id, created, updating, owned, lock, lock_created, tuple(made))


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
