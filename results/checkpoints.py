"""Checkpoint folders of a run: ``<dir>/round-<R>/``, complete once ``COMPLETE`` is in it.

The engines write their shards' files (:func:`write_shard`) and their own into a round's
folder, then call :func:`complete`, which marks it and removes the older ones;
:func:`latest` is the folder a recovery or ``--resume`` starts from, and the command line
and the output checks ask it whether a stopped run can be resumed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np


def folder_for(checkpoint_dir: Path, round_: int) -> Path:
    """The (created) folder of the checkpoint after round ``round_``."""
    folder = Path(checkpoint_dir) / f"round-{round_:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def complete(folder: Path) -> Path:
    """Mark ``folder`` complete and remove every other checkpoint beside it."""
    (folder / "COMPLETE").touch()
    for old in folder.parent.glob("round-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest(checkpoint_dir: Path | None) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    done = sorted(p for p in Path(checkpoint_dir).glob("round-*")
                  if p.name[6:].isdigit() and (p / "COMPLETE").is_file())  # fmt: skip
    return done[-1] if done else None


def round_of(folder: Path) -> int:
    """The round a checkpoint folder was taken after."""
    return int(Path(folder).name[6:])


def write_shard(folder: str | Path, shard_id: int, arrays: dict) -> str:
    """Write one shard's arrays to ``folder/shard-<k>.npz`` atomically; returns the path."""
    path = Path(folder) / f"shard-{shard_id}.npz"
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return str(path)


def read_shard(folder: str | Path, shard_id: int) -> dict[str, np.ndarray]:
    """The arrays :func:`write_shard` wrote for shard ``shard_id``."""
    with np.load(Path(folder) / f"shard-{shard_id}.npz") as data:
        return {name: data[name] for name in data.files}
