"""The result folder: owned, locked, and written atomically (a failed run leaves no half-written folder).

A run works in ``.<name>.partial`` beside ``DIR`` (its checkpoints live there, so that
``--resume`` can continue a run whose driver stopped) and renames it to ``DIR`` only when
everything is written.

**Ownership.** The first file written into a new work folder is the marker
``.tatonnet-output.json`` (the run's ``id``, its ``kind``: run, study, trade or calibrate, when and by
which process); it stays in the published folder. ``--force`` replaces only a folder that
carries a marker, ``--resume`` continues only a work folder with a marker and ``run.json``,
and a run deletes only folders it can prove are tatonnet's: a folder of the user's files, a
file or a symbolic link is refused with one line before any work.

**The lock.** While it works, a run holds an OS file lock (``flock``, through the
``filelock`` package) on ``.<name>.lock`` beside ``DIR``: a second run to the same ``DIR``
(with or without ``--force``, or ``--resume``) fails at once. Every decision about ``DIR``
and its work folder is taken while holding it. The run removes the (empty) lock file it
made; a killed run leaves an unlocked one, which the next run takes over (and removes once
it has published its folder). A leftover work folder is refused with what to do: ``--resume
DIR`` if it has a checkpoint, else ``--force`` to start over.

Layout of ``DIR``:

* ``summary.json`` — the run's parameters, verdict, final metrics and speed
* ``metrics.parquet`` — per round: ``round``, ``excess_demand``, ``price_dispersion``,
  ``price_<good>`` (network-mean price), ``excess_<good>`` (relative to supply)
* ``agents/part-<k>.parquet`` — a Parquet dataset (``pyarrow.parquet.read_table(DIR /
  "agents")``), one part per shard, written by the shards in parallel: per agent ``id``,
  ``group``, ``family`` (``cobb-douglas``: as scenario files spell it), ``price_<good>``
  (final prices), ``excess_<good>`` (final excess demand at own prices), ``wealth``
* ``edges.parquet`` — the network, one row per undirected edge: ``source`` < ``target``
  (agent ids, int64); no rows under ``central``
* ``convergence.png`` — excess demand and dispersion per round, and mean prices;
  ``convergence.svg`` — the same figure as vector graphics
* ``run.json`` — what ran and what ``--resume`` needs (kind, scenario, options, seed,
  versions, run id: :mod:`tatonnet.results.provenance`)
* ``.tatonnet-output.json`` — the marker (see above)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tatonnet.agents.utility import family_labels
from tatonnet.results import checkpoints

#: The marker file of a folder a tatonnet run created (JSON, see :func:`read_marker`).
MARKER = ".tatonnet-output.json"
_MARKER_TAG = "tatonnet output folder"
KINDS = ("run", "study", "trade", "calibrate")
#: Folders of the repository (when the package is the repository) that hold code, not runs.
_CODE_FOLDERS = {".git", ".venv", "build", "tests", "tatonnet.egg-info"}


class OutputError(ValueError):
    """The output folder cannot be used (one-line message)."""


# ---- names and places -------------------------------------------------------------------
def safe_name(name: str) -> str:
    """``name`` as one harmless path component: no separators, no leading dots."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).lstrip(".")
    return cleaned[:100] or "run"


def default_out_dir(scenario_name: str, root: Path = Path("runs")) -> Path:
    """``root/<scenario>-<UTC time>`` (``-2``, ``-3`` ... if taken); never outside ``root``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = root / f"{safe_name(scenario_name)}-{stamp}"
    out, k = base, 1
    while os.path.lexists(out) or os.path.lexists(work_dir_for(out)):
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    _assert_inside(out, root)
    return out


def _assert_inside(path: Path, root: Path) -> None:
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:  # defense in depth
        raise OutputError(f"--out: the default folder {str(path)!r} would leave {str(root)!r}")


def work_dir_for(out: Path) -> Path:
    """The hidden folder a run to ``out`` works in until it is complete."""
    out = Path(out)
    return out.parent / f".{out.name}.partial"


def lock_path_for(out: Path) -> Path:
    """The lock file of the name ``out`` (beside it, held while a run uses ``out``)."""
    out = Path(out)
    return out.parent / f".{out.name}.lock"


def _package_root() -> Path:
    import tatonnet

    return Path(tatonnet.__file__).resolve().parent


def _is_code_folder(real: Path) -> bool:
    """Whether ``real`` is the installed package or inside its code (not its ``runs/``)."""
    root = _package_root()
    if real == root:
        return True
    if not real.is_relative_to(root):
        return False
    if not (root / "pyproject.toml").is_file():  # an installed copy: all of it is code
        return True
    top = root / real.relative_to(root).parts[0]
    return top.name in _CODE_FOLDERS or (top / "__init__.py").is_file()


def check_location(out: Path, option: str = "--out") -> None:
    """Refuse an output location that no run may use (before any work).

    Refused: a symbolic link, an existing file, the current folder or one of its
    ancestors, a folder inside the installed package's code, a parent that is not a
    writable folder.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):
        out = Path(os.path.abspath(out))
    name = repr(str(out))
    if out.is_symlink():
        raise OutputError(f"{option}: {name} is a symbolic link; give the folder it points to")
    if os.path.lexists(out) and not out.is_dir():
        raise OutputError(f"{option}: {name} exists and is not a folder")
    real = Path(os.path.realpath(out))
    if real.parent == real or Path.cwd().resolve().is_relative_to(real):
        raise OutputError(
            f"{option}: {name} is the current folder or one of its parents; give a new folder"
        )
    if _is_code_folder(real):
        raise OutputError(
            f"{option}: {name} is inside the installed tatonnet package "
            f"({_package_root()}); write results elsewhere (e.g. runs/)"
        )
    parent = real.parent
    while not os.path.lexists(parent):  # missing parents are created: check the first existing one
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{option}: {str(parent)!r} is not a folder, so {name} cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{option}: cannot write in {str(parent)!r} (permission denied), so {name} cannot be made"
        )


# ---- the marker -------------------------------------------------------------------------
def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder`` if it is a real folder that a tatonnet run created, else None."""
    folder = Path(folder)
    try:
        if folder.is_symlink() or not folder.is_dir():
            return None
        path = folder / MARKER
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(marker, dict) and marker.get("tatonnet") == _MARKER_TAG
        and marker.get("kind") in KINDS and isinstance(marker.get("id"), str)
    )  # fmt: skip
    return marker if ok else None


def _write_marker(folder: Path, run_id: str, kind: str) -> None:
    marker = {
        "tatonnet": _MARKER_TAG, "id": run_id, "kind": kind,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(), "host": socket.gethostname(),
    }  # fmt: skip
    fd = os.open(folder / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(marker, indent=2) + "\n")


def _remove_tree(folder: Path) -> None:
    """Delete a folder this program made: never follows a symbolic link out of it."""
    if folder.is_symlink() or not folder.is_dir():
        raise OutputError(f"refusing to delete {str(folder)!r}: not a folder tatonnet made")
    shutil.rmtree(folder)  # symlink-safe (fd-based) on Linux: links inside are unlinked


def _latest_checkpoint_round(work: Path) -> int | None:
    folder = checkpoints.latest(work / "checkpoints")
    return None if folder is None else checkpoints.round_of(folder)


# ---- a run's claim on its output folder ---------------------------------------------------
@dataclasses.dataclass
class OutputClaim:
    """One run's hold on ``out``: the lock on its name and its work folder.

    Made by :func:`claim_new` or :func:`claim_resume`; :meth:`publish` renames the complete
    work folder to ``out``, :meth:`discard` deletes a work folder this process created,
    :meth:`release` lets the name go (always call it: ``with`` does).
    """

    out: Path
    work: Path
    kind: str
    force: bool
    run_id: str
    created: bool  # this process created ``work`` (so it may delete it on failure)
    _lock: object = dataclasses.field(repr=False, default=None)
    _lock_created: bool = False  # this process created the lock file (else: a killed run's)
    made_parents: tuple = ()  # folders above ``out`` this process created, deepest first
    _discarded: bool = dataclasses.field(default=False, repr=False)

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def publish(self) -> Path:
        """Rename the complete work folder to ``out`` (replacing a tatonnet folder under force)."""
        out, work = self.out, self.work
        shutil.rmtree(work / "checkpoints", ignore_errors=True)
        if os.path.lexists(out):
            _check_replaceable(out, self.force)  # again: it may have appeared meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "run")
            os.replace(work, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, out)
        self.created = False
        self._lock_created = True  # the name is a finished run's now: a stale lock file goes too
        return out

    def discard(self) -> None:
        """Delete the work folder if this process created it (and it is still the same one)."""
        marker = read_marker(self.work) if self.created else None
        if marker is not None and marker["id"] == self.run_id:
            shutil.rmtree(self.work, ignore_errors=True)
            self._discarded = True  # release() then removes the folders made above out
        self.created = False

    def release(self) -> None:
        """Let the name go: remove the (empty) lock file if this run made it, then unlock."""
        lock, self._lock = self._lock, None
        release_lock(lock, self.out, lambda: self._lock_created)
        if self._discarded:
            _remove_empty(self.made_parents)


def _acquire(out: Path, option: str):
    """Lock the name ``out`` at once (no waiting) or refuse with one line.

    Returns ``(lock, created)``: ``created`` when there was no lock file before (a killed
    run leaves an empty, unlocked one, which is taken over).
    """
    import filelock

    path = lock_path_for(out)
    existed = os.path.lexists(path)
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        # a lock file beside neither a work folder nor a result of tatonnet's is not ours
        theirs = read_marker(work_dir_for(out)) is None and read_marker(out) is None
        if not stat.S_ISREG(st.st_mode) or st.st_size != 0 or theirs:
            raise OutputError(
                f"{option}: {str(path)!r} is in the way (tatonnet's lock file for "
                f"{str(out)!r} would go there); move it away"
            )
    lock = filelock.FileLock(path, timeout=0, fallback_to_soft=False, thread_local=False)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise OutputError(
            f"{option}: another tatonnet run is writing to {str(out)!r} right now (it holds "
            f"{str(path)!r}); wait for it to finish or choose another --out"
        ) from None
    except OSError as exc:
        raise OutputError(f"{option}: cannot lock {str(path)!r} ({exc.strerror or exc})") from None
    return lock, not existed


def _check_replaceable(out: Path, force: bool) -> None:
    """``out`` exists: may this run replace it? (only a tatonnet folder, and only with force)."""
    name = repr(str(out))
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"--out: {name} exists and is not a folder")
    if read_marker(out) is None:
        raise OutputError(
            f"--out: {name} already exists and was not written by tatonnet (--force replaces "
            f"only tatonnet's result folders); choose another --out"
        )
    if not force:
        raise OutputError(f"--out: {name} already exists (use --force to replace it)")


def _check_leftover_work(out: Path, work: Path, force: bool) -> None:
    """``work`` exists: refuse, or (under force, if it is tatonnet's) delete it."""
    marker = read_marker(work)
    if marker is None:
        raise OutputError(
            f"--out: {str(work)!r} is in the way and was not made by tatonnet; move it away "
            f"or choose another --out"
        )
    if force:
        _remove_tree(work)
        return
    at = _latest_checkpoint_round(work)
    if marker["kind"] in RESUMABLE and (work / "run.json").is_file():
        where = f"checkpoint at round {at}" if at is not None else "no checkpoint: it restarts"
        raise OutputError(
            f"--out: a stopped run to {str(out)!r} left {str(work)!r} ({where}); continue it "
            f"with --resume {out}, or pass --force to start over"
        )
    raise OutputError(
        f"--out: a stopped run to {str(out)!r} left {str(work)!r} (no checkpoint to "
        f"resume from); pass --force to start over"
    )


def lock_with_parents(out: Path):
    """Make the missing folders above ``out`` and take ``out``'s lock: ``(lock,
    lock_created, made)``, ``made`` the folders made, deepest first, for the caller to
    remove again (:func:`_remove_empty`) if it fails; on a refused lock they are gone."""
    made = []
    for parent in out.parents:
        if os.path.lexists(parent):
            break
        made.append(parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock, lock_created = _acquire(out, "--out")
    except BaseException:
        _remove_empty(made)
        raise
    return lock, lock_created, made


def release_lock(lock, out: Path, ours) -> None:
    """Unlock ``out``'s lock (None: nothing held), first removing its lock file if
    ``ours()`` says this program made it and it is still an empty plain file."""
    if lock is None:
        return
    path = lock_path_for(out)
    with contextlib.suppress(OSError):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_size == 0 and ours():
            path.unlink()  # while locked: a waiter on the old inode sees it unlinked
    lock.release()


def claim_new(out: Path, kind: str = "run", force: bool = False) -> OutputClaim:
    """Validate ``out``, lock it and create the marked work folder of a new run."""
    out = Path(out)
    check_location(out)
    lock, lock_created, made = lock_with_parents(out)
    try:
        if os.path.lexists(out):
            _check_replaceable(out, force)
        work = work_dir_for(out)
        if os.path.lexists(work):
            _check_leftover_work(out, work, force)
        work.mkdir()
        run_id = uuid.uuid4().hex
        try:
            _write_marker(work, run_id, kind)  # first: the folder is provably ours from now on
        except BaseException:
            with contextlib.suppress(OSError):
                (work / MARKER).unlink(missing_ok=True)
                work.rmdir()  # still empty but for the marker: nothing else to lose
            raise
    except BaseException:
        _release_quietly(lock, out, lock_created)
        _remove_empty(made)
        raise
    return OutputClaim(out, work, kind, force, run_id, True, lock, lock_created, tuple(made))


def _remove_empty(folders) -> None:
    """Remove the folders (deepest first) this process created, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


#: Kinds of work folder that ``--resume`` continues (tatonnement runs, trade runs).
RESUMABLE = ("run", "trade")


def claim_resume(out: Path, force: bool = False) -> OutputClaim:
    """Validate ``out``, lock it, and check that its work folder is a stopped run's."""
    out = Path(out)
    check_location(out, "--resume")
    lock, lock_created = _acquire(out, "--resume")
    try:
        work = work_dir_for(out)
        if not os.path.lexists(work):
            raise OutputError(
                f"--resume: {str(out)!r} has no stopped run to continue (no {str(work)!r})"
            )
        marker = read_marker(work)
        if marker is None or marker["kind"] not in RESUMABLE:
            raise OutputError(
                f"--resume: {str(work)!r} is not the work folder of a tatonnet run (no "
                f"{MARKER}); nothing was changed"
            )
        config = work / "run.json"
        if config.is_symlink() or not config.is_file():
            raise OutputError(
                f"--resume: {str(work)!r} has no run.json (the run stopped before it "
                f"started); pass --out {out} --force to start over"
            )
        if os.path.lexists(out):
            _check_replaceable(out, force)
    except BaseException:
        _release_quietly(lock, out, lock_created)
        raise
    return OutputClaim(out, work, marker["kind"], force, marker["id"], False, lock, lock_created)


def _release_quietly(lock, out: Path, lock_created: bool) -> None:
    OutputClaim(out, out, "run", False, "", False, lock, lock_created).release()


# ---- the older interface ------------------------------------------------------------------
def check_out_dir(out: Path, force: bool) -> None:
    """Fail early (before any work) if ``out`` cannot become the result folder."""
    check_location(out)
    if os.path.lexists(out):
        _check_replaceable(Path(out), force)


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False, kind: str = "run"):
    """Yield a fresh, marked work folder for ``out`` (locked); rename it to ``out`` on success."""
    with claim_new(out, kind, force) as claim:
        try:
            yield claim.work
        except BaseException:
            claim.discard()
            raise
        claim.publish()


def write_results(result, work: Path, out: Path | None = None) -> None:
    """Write a finished :class:`tatonnet.distributed.runner.RunResult` into ``work``."""
    marker = read_marker(work)
    summary = dict(result.summary, out=str(out) if out else None)
    summary["run_id"] = marker["id"] if marker else None
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    metrics = result.model.datacollector.get_model_vars_dataframe()
    metrics.insert(0, "round", np.arange(len(metrics)))
    pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), work / "metrics.parquet")
    model = result.model
    if model.engine is not None:
        model.engine.write_agents(work / "agents")
    else:
        (work / "agents").mkdir(exist_ok=True)
        pq.write_table(agent_table(model), work / "agents" / "part-0000.parquet")
    if model.engine is not None and model.config.builder == "shards":
        model.engine.write_edges(work / "edges")  # the shards hold the rows: parts
    else:
        pq.write_table(edge_table(model.network), work / "edges.parquet")
    plot_convergence(metrics, result, work / "convergence.png")


def write_run(result, out: Path, force: bool = False) -> Path:
    """Write a finished run to ``out`` atomically (a fresh work folder, then rename)."""
    with atomic_dir(out, force) as work:
        write_results(result, work, out)
    return out


def agent_table(model) -> pa.Table:
    """Final per-agent state of an in-process model (see :func:`agent_columns`)."""
    economy = model.economy
    prices = np.ascontiguousarray(model.prices())
    excess = model.state.excess if not model.network.is_central else (
        economy.excess_demand(prices[0])
    )  # fmt: skip
    return agent_columns(
        np.arange(economy.n_agents), model.group, economy.family, economy.goods,
        prices, excess, economy.endowments,
    )  # fmt: skip


def edge_table(network) -> pa.Table:
    """The network's undirected edges: ``source`` < ``target``, int64; (n_edges,) each."""
    if network.is_central:
        empty = np.empty(0, dtype=np.int64)
        return pa.table({"source": empty, "target": empty})
    rows = np.repeat(np.arange(network.n_agents, dtype=np.int64), np.diff(network.indptr))
    cols = network.indices.astype(np.int64)
    keep = rows < cols
    return pa.table({"source": rows[keep], "target": cols[keep]})


def agent_columns(ids, group, family, goods, prices, excess, endowments) -> pa.Table:
    """The ``agents`` table: id, group, family, price_<good>, excess_<good>, wealth."""
    columns = {
        "id": ids,
        "group": group,
        "family": family_labels(family),  # "cobb-douglas", as scenario files spell it
    }
    for j, good in enumerate(goods):
        columns[f"price_{good}"] = prices[:, j]
    for j, good in enumerate(goods):
        columns[f"excess_{good}"] = excess[:, j]
    columns["wealth"] = np.einsum("ij,ij->i", prices, endowments)
    return pa.table(columns)


def plot_convergence(metrics, result, path: Path) -> None:
    """``path`` (PNG) and its vector copy beside it (``.svg``): the convergence figure.

    Left: excess demand and price dispersion per round (log scale) against the tolerance;
    right: network-mean prices per round, dashed at the nearest equilibrium. Each legend
    sits to the right of its panel, off the data.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.summary
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    rounds = metrics["round"].to_numpy()
    positive = lambda x: np.where(x > 0, x, np.nan)  # noqa: E731  (log axes)
    ax1.semilogy(rounds, positive(metrics["excess_demand"]), label="excess demand")
    if s["graph"] != "central":
        ax1.semilogy(rounds, positive(metrics["price_dispersion"]), label="price dispersion")
    ax1.axhline(s["tol"], color="grey", ls=":", label=f"tolerance {s['tol']:g}")
    ax1.set(xlabel="round", ylabel="max over goods (log scale)",
            title=f"{s['scenario']}: {s['status']} ({s['rule']})")  # fmt: skip
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    for j, good in enumerate(s["goods"]):
        (line,) = ax2.plot(rounds, metrics[f"price_{good}"], label=good)
        if s["reference_prices"]:
            ref = s["reference_prices"][s["nearest_reference"]][j]
            ax2.axhline(ref, color=line.get_color(), ls="--", lw=0.8)
    ax2.set(xlabel="round", ylabel="network-mean price",
            title="prices (dashed: equilibrium)" if s["reference_prices"] else "prices")  # fmt: skip
    ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False,
               title="good")  # fmt: skip
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})  # same bytes every run
    plt.close(fig)


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
