"""What ran: the software versions and the ``run.json`` that every kind of result folder has.

Every folder tatonnet writes (a tâtonnement ``run``, a ``trade`` run, a ``study``) holds a
``run.json``: ``kind``, what ran (``scenario`` or ``study``: the resolved configuration),
``options`` (how it ran), ``seed`` (``seeds`` for a study: every seed of its grid),
``versions`` and ``run_id`` (the marker's id). A tâtonnement run's ``run.json`` is also what
``--resume`` reads (:func:`tatonnet.distributed.runner.load_run_config`).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

#: The packages whose versions a result records (None: not installed).
PACKAGES = ("tatonnet", "mesa", "numpy", "numba", "ray")


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """``{package: version}`` for :data:`PACKAGES`."""
    return {p: version(p) for p in PACKAGES}


def write_run_json(work: Path, kind: str, config: dict, run_id: str | None = None) -> dict:
    """Write ``work/run.json``: ``{"kind": kind, **config, "versions": ..., "run_id": ...}``.

    ``config`` holds what ran and how (``scenario`` or ``study``, ``options``, ``seed`` or
    ``seeds``); plain JSON values. Returns what was written.
    """
    record = {"kind": kind, **config, "versions": versions()}
    if run_id is not None:
        record["run_id"] = run_id
    (Path(work) / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
