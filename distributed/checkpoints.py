"""Checkpoint folders of a run: ``<dir>/round-<R>/``, complete once ``COMPLETE`` is in it.

The engines write their shards' files and their own into a round's folder, then call
:func:`complete`, which marks it and removes the older ones; :func:`latest` is the folder
a recovery or ``--resume`` starts from.
"""

from __future__ import annotations

import shutil
from pathlib import Path


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
    done = sorted(p for p in Path(checkpoint_dir).glob("round-*") if (p / "COMPLETE").exists())
    return done[-1] if done else None
