"""A study's cell cache: one small Parquet file per finished cell, ``cells/<key>.parquet``.

``key`` is the hash of everything that determines the cell's result
(:func:`tatonnet.studies.cache.cell_key`: 32 hex digits). The file's rows are the cell's
downsampled trajectory (``round`` int64, ``excess_demand``, ``price_dispersion`` float64,
``prices`` list of float64; no rows for a cell that did not run), and its schema metadata
``tatonnet.cell`` holds one JSON object: ``format`` (:data:`CELL_FORMAT`), ``key``,
``config`` (what the key hashes, for a reader who wants to know what the file is) and
``row`` (the cell's verdict row, as :func:`tatonnet.studies.grid.run_cell` returned it).

**Atomic.** A cell is written to a hidden ``.<key>.<random>.tmp`` beside its place and
renamed onto ``<key>.parquet`` once complete (``os.replace``), so a killed writer leaves at
most a temporary file, never a ``<key>.parquet`` with part of a cell. A file is trusted
only when its Parquet footer reads and names its own key and this format
(:meth:`CellStore.row`): a file cut short by a crash of the machine (renamed before its
data reached the disk) reads as absent, and the cell runs again. That check is why the
writer does not ``fsync``.

**Why one file per cell.** A cell is written the moment it finishes, by one writer (the
driver, which holds the study folder's lock), and must be usable if the driver is killed
the next instant; a file per cell makes that a rename, needs no append-only log to
repair, and lets a re-run ask "is this cell done?" by its name. Reading 10^4 of them back
takes seconds (the footers only, for the verdict rows); beyond ~10^5 cells a directory of
files gets slow and an append-only store would be the better choice.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

#: Version of the cell file layout; part of every key, so a new layout never reads an old file.
CELL_FORMAT = 1
#: The schema metadata entry holding the cell's JSON.
META_KEY = b"tatonnet.cell"
_KEY = re.compile(r"[0-9a-f]{32}")
_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.[0-9a-f]{32}\.tmp")
SCHEMA = pa.schema(
    [
        ("round", pa.int64()),
        ("excess_demand", pa.float64()),
        ("price_dispersion", pa.float64()),
        ("prices", pa.list_(pa.float64())),
    ]
)


def _plain(value):
    """JSON for the numpy values a verdict row may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def trajectory_table(trajectory: dict | None) -> pa.Table:
    """A cell's trajectory (``round`` (T,), ``excess_demand`` (T,), ``price_dispersion``
    (T,), ``prices`` (T, g)) as a table of :data:`SCHEMA`; no rows for None."""
    if trajectory is None:
        return SCHEMA.empty_table()
    prices = np.asarray(trajectory["prices"], dtype=float)
    return pa.table(
        {
            "round": np.asarray(trajectory["round"], dtype=np.int64),
            "excess_demand": np.asarray(trajectory["excess_demand"], dtype=float),
            "price_dispersion": np.asarray(trajectory["price_dispersion"], dtype=float),
            "prices": pa.array(list(prices), type=pa.list_(pa.float64())),
        },
        schema=SCHEMA,
    )


class CellStore:
    """The cell files of one study folder (``folder`` is ``<study>/cells``).

    Only the process holding the study folder's lock writes here
    (:func:`tatonnet.results.study_folder.claim_study`).
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a cell key: {key!r}")
        return self.folder / f"{key}.parquet"

    def keys(self) -> set[str]:
        """Keys with a file in the store (read or not: see :meth:`row`)."""
        if not self.folder.is_dir():
            return set()
        return {
            p.name[:-8]
            for p in self.folder.iterdir()
            if p.name.endswith(".parquet") and _KEY.fullmatch(p.name[:-8])
        }

    def put(self, key: str, row: dict, trajectory: dict | None, config: dict) -> Path:
        """Write one finished cell atomically (replacing an earlier file of the same key)."""
        path = self.path(key)
        meta = {"format": CELL_FORMAT, "key": key, "config": config, "row": row}
        table = trajectory_table(trajectory).replace_schema_metadata(
            {META_KEY: json.dumps(meta, default=_plain).encode()}
        )
        tmp = self.folder / f".{key}.{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def _meta(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            if not path.is_file() or path.is_symlink():
                return None
            raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
            meta = json.loads(raw) if raw is not None else None
        except (OSError, ValueError, pa.ArrowException):
            return None
        ok = (
            isinstance(meta, dict) and meta.get("format") == CELL_FORMAT
            and meta.get("key") == key and isinstance(meta.get("row"), dict)
        )  # fmt: skip
        return meta if ok else None

    def row(self, key: str) -> dict | None:
        """The verdict row stored under ``key``; None when there is no complete, readable
        file of this format for it (absent, cut short, another key's, an older layout)."""
        meta = self._meta(key)
        return None if meta is None else meta["row"]

    def trajectory(self, key: str) -> dict | None:
        """The stored trajectory as arrays (``prices`` (T, g)); None when it has no rows."""
        table = pq.read_table(self.path(key))
        if table.num_rows == 0:
            return None
        n = table.num_rows
        flat = table["prices"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return {
            "round": table["round"].to_numpy(),
            "excess_demand": table["excess_demand"].to_numpy(),
            "price_dispersion": table["price_dispersion"].to_numpy(),
            "prices": flat.reshape(n, -1),
        }

    def remove_temporaries(self) -> int:
        """Delete the temporary files killed writers left (this store's own names only)."""
        if not self.folder.is_dir():
            return 0
        removed = 0
        for p in self.folder.iterdir():
            if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed += 1
        return removed
