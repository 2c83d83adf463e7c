"""Output folders are owned: a run deletes or replaces only what a tatonnet run made.

Contract checked for every hostile case (``run``, ``study``, ``--trade``; ``--force`` and
``--resume``): exit status 2, exactly one line on stderr, no traceback, and the whole
temporary folder — the user's files byte for byte, symbolic links and their targets, no
leftover ``.partial``/``.lock``/``.old`` — exactly as it was. A folder a run wrote (it carries
the marker ``.tatonnet-output.json``) is replaced by ``--force``; a second run to an
``--out`` in use fails at once while the first completes untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
from helpers import invoke

from tatonnet.cli import run
from tatonnet.distributed.runner import DriverStopped, RunOptions, run_scenario, save_run_config
from tatonnet.environment.scenario import load_scenario
from tatonnet.results import output
from tatonnet.results.output import MARKER, claim_new, default_out_dir, read_marker

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--agents", "60", "--rounds", "40", "--quiet"]
#: The three commands that write a result folder; each takes ``--out DIR`` after these.
COMMANDS = {
    "run": ["--workers", "0", *SMALL, "--no-reference"],
    "study": ["study", "--quick", "--workers", "0", "--quiet"],
    "trade": ["--trade", *SMALL],
}


# ---- helpers ------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: its type and content (files: sha256; links: target)."""
    tree = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                tree[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                tree[rel] = ("dir",)
            else:
                tree[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return tree


def assert_refused(code, out, err, phrases=()) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def user_folder(path: Path, layout: str, outside: Path) -> Path:
    """A folder of the user's own files: flat, nested, or with links pointing outside."""
    path.mkdir()
    (path / "notes.txt").write_text("my notes\n")
    (path / "data.bin").write_bytes(bytes(range(256)) * 4)
    if layout in ("nested", "links"):
        (path / "sub" / "deeper").mkdir(parents=True)
        (path / "sub" / "deeper" / "thesis.tex").write_text("\\section{x}\n")
        (path / "sub" / "summary.json").write_text('{"mine": true}')
    if layout == "links":
        outside.mkdir(exist_ok=True)
        (outside / "precious.txt").write_text("outside, must survive\n")
        (outside / "dir").mkdir(exist_ok=True)
        (outside / "dir" / "keep.txt").write_text("keep\n")
        (path / "to-file").symlink_to(outside / "precious.txt")
        (path / "to-dir").symlink_to(outside / "dir", target_is_directory=True)
        (path / "sub" / "dangling").symlink_to(outside / "nowhere")
    return path


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """``tmp_path/cwd`` as the current folder (so that ``--out .`` means something)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# ---- --force never replaces what tatonnet did not write -----------------------------------
FORCE_CASES = {
    # name: (make the --out target in tmp_path, phrases of the one-line error)
    "flat-user-folder": (lambda t: user_folder(t / "mydata", "flat", t / "outside"),
                         ["not written by tatonnet"]),
    "nested-user-folder": (lambda t: user_folder(t / "mydata", "nested", t / "outside"),
                           ["not written by tatonnet"]),
    "user-folder-with-links": (lambda t: user_folder(t / "mydata", "links", t / "outside"),
                               ["not written by tatonnet"]),
    "a-file": (lambda t: (t / "file.txt").write_text("a file") and t / "file.txt",
               ["not a folder"]),
    "symlink-to-user-folder": (
        lambda t: (t / "link").symlink_to(user_folder(t / "mydata", "flat", t / "o"))
        or t / "link",
        ["symbolic link"],
    ),
    "symlink-to-marked-run": (
        lambda t: (t / "link").symlink_to(_marked(t / "old-run")) or t / "link",
        ["symbolic link"],
    ),
    "current-folder": (lambda t: Path("."), ["current folder"]),
    "parent-of-current-folder": (lambda t: Path(".."), ["current folder or one of its parents"]),
    "user-folder-as-work-folder": (
        lambda t: user_folder(t / ".fresh.partial", "links", t / "outside").parent / "fresh",
        ["/.fresh.partial'", "not made by tatonnet"],
    ),
    "user-file-as-lock-file": (
        lambda t: (t / ".fresh.lock").write_text("mine") and t / "fresh",
        ["/.fresh.lock'", "in the way"],
    ),
    "empty-user-file-as-lock-file": (
        lambda t: (t / ".fresh.lock").touch() or t / "fresh",
        ["/.fresh.lock'", "in the way"],
    ),
    "inside-the-package": (lambda t: ROOT / "results" / "never-here", ["installed tatonnet"]),
}  # fmt: skip


def _marked(path: Path, kind: str = "run") -> Path:
    """A folder as a finished run leaves it (marker and a summary)."""
    with claim_new(path, kind) as claim:
        (claim.work / "summary.json").write_text('{"scenario": "old"}')
        claim.publish()
    return path


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", FORCE_CASES)
def test_force_leaves_what_tatonnet_did_not_write(case, command, here, capsys):
    tmp = here.parent
    make, phrases = FORCE_CASES[case]
    target = make(tmp)
    before = snapshot(tmp)
    package_before = sorted(p.name for p in (ROOT / "results").iterdir())
    code, out, err = invoke([*COMMANDS[command], "--out", target, "--force"], capsys)
    assert_refused(code, out, err, phrases)
    assert snapshot(tmp) == before
    assert sorted(p.name for p in (ROOT / "results").iterdir()) == package_before


def test_user_folder_without_force_names_the_folder(here, capsys):
    mine = user_folder(here.parent / "mydata", "links", here.parent / "outside")
    before = snapshot(here.parent)
    line = assert_refused(*invoke([*COMMANDS["run"], "--out", mine], capsys), [str(mine)])
    assert "not written by tatonnet" in line
    assert snapshot(here.parent) == before


def test_marked_folder_in_use_is_not_replaced(here, capsys):
    """The lock of a running run (held here) protects even its own marked folder."""
    marked = _marked(here.parent / "busy")
    lock = filelock.FileLock(output.lock_path_for(marked), timeout=0, thread_local=False)
    with lock:
        before = snapshot(here.parent)
        for command in COMMANDS:
            line = assert_refused(
                *invoke([*COMMANDS[command], "--out", marked, "--force"], capsys),
                ["another tatonnet run is writing to", str(marked)],
            )
            assert "wait for it to finish" in line
        line = assert_refused(*invoke(["--resume", marked, "--quiet"], capsys))
        assert "another tatonnet run" in line
        assert snapshot(here.parent) == before


def test_read_only_parent_is_refused_before_the_trade_runs(here, capsys, monkeypatch):
    """Checked with os.access (these tests may run as root, who may write anywhere)."""
    from tatonnet.distributed import trade_runner

    locked = here.parent / "read-only"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw)
    )
    ran = []
    monkeypatch.setattr(trade_runner, "run", lambda *a, **k: ran.append(a))
    before = snapshot(here.parent)
    for command in COMMANDS:
        code, out, err = invoke([*COMMANDS[command], "--out", locked / "res"], capsys)
        assert_refused(code, out, err, ["cannot write in", str(locked), "permission denied"])
    assert not ran, "the trade ran before its output folder was checked"
    assert snapshot(here.parent) == before


# ---- --resume only touches a work folder that is provably a run's -------------------------
def _stopped_run(tmp: Path, name: str = "out") -> Path:
    """A run whose driver stopped after round 25 (checkpoints every 10): its ``--out``."""
    scenario = load_scenario("default").with_overrides(agents=60, rounds=40)
    options = RunOptions(workers=1, checkpoint_every=10, progress=False, reference=False)
    out = tmp / name
    with claim_new(out, "run") as claim:
        save_run_config(claim.work, scenario, options, run_id=claim.run_id)
    with pytest.raises(DriverStopped):
        run_scenario(scenario, dataclasses.replace(options, stop_after_round=25), claim.work)
    return out


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


RESUME_CASES = {
    "user-folder-as-work-folder": (
        lambda t: user_folder(t / ".x.partial", "nested", t / "o").parent / "x",
        ["/.x.partial'", "not the work folder of a tatonnet run"],
    ),
    "user-folder-with-links-and-run-json": (
        lambda t: (user_folder(t / ".x.partial", "links", t / "outside") / "run.json")
        .write_text("{}") and t / "x",
        ["not the work folder of a tatonnet run"],
    ),
    "symlinked-work-folder": (
        lambda t: (t / ".x.partial").symlink_to(_stopped_run(t, "real").parent / ".real.partial")
        or t / "x",
        ["not the work folder of a tatonnet run"],
    ),
    "symlinked-out": (
        lambda t: (t / "x").symlink_to(_stopped_run(t, "real")) or t / "x",
        ["symbolic link"],
    ),
    "marker-without-run-json": (
        lambda t: (_stopped_run(t).parent / ".out.partial" / "run.json").unlink() or t / "out",
        ["no run.json", "--force"],
    ),
    "no-work-folder": (lambda t: user_folder(t / "x", "flat", t / "o"), ["no stopped run"]),
    "truncated-shard-checkpoint": (
        lambda t: [_truncate(p) for p in (t / ".out.partial").glob("checkpoints/*/shard-*.npz")]
        and t / "out",
        ["checkpoint", "is damaged"],
    ),
    "truncated-engine-json": (
        lambda t: [_truncate(p) for p in (t / ".out.partial").glob("checkpoints/*/engine.json")]
        and t / "out",
        ["checkpoint", "is damaged"],
    ),
    "truncated-history": (
        lambda t: [_truncate(p) for p in (t / ".out.partial").glob("checkpoints/*/metrics.parquet")]
        and t / "out",
        ["checkpoint", "is damaged"],
    ),
    "truncated-run-json": (
        lambda t: _truncate(t / ".out.partial" / "run.json") or t / "out",
        ["run.json", "is damaged"],
    ),
    "run-json-of-another-shape": (
        lambda t: (t / ".out.partial" / "run.json").write_text('{"scenario": 3}') and t / "out",
        ["run.json", "is damaged"],
    ),
    "published-user-folder-in-the-way": (
        lambda t: user_folder(t / "out", "flat", t / "o") and t / "out",
        ["not written by tatonnet"],
    ),
}  # fmt: skip

NEEDS_STOPPED_RUN = {"truncated-shard-checkpoint", "truncated-engine-json", "truncated-history",
                     "truncated-run-json", "run-json-of-another-shape",
                     "published-user-folder-in-the-way"}  # fmt: skip


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_touches_only_a_run_work_folder(case, force, here, capsys):
    tmp = here.parent
    if case in NEEDS_STOPPED_RUN:
        _stopped_run(tmp)
    make, phrases = RESUME_CASES[case]
    target = make(tmp)
    before = snapshot(tmp)
    argv = ["--resume", target, "--quiet", *(["--force"] if force else [])]
    assert_refused(*invoke(argv, capsys), phrases)
    assert snapshot(tmp) == before


def test_trade_and_study_resume_touch_no_user_folder(here, capsys):
    user_folder(here.parent / ".x.partial", "links", here.parent / "outside")
    before = snapshot(here.parent)
    x = here.parent / "x"
    assert_refused(*invoke([*COMMANDS["trade"], "--resume", x], capsys),
                   ["not the work folder of a tatonnet run"])  # fmt: skip
    assert_refused(*invoke([*COMMANDS["study"], "--resume", x], capsys), ["--resume"])
    assert snapshot(here.parent) == before


def test_leftover_of_a_killed_run_says_what_to_do(here, capsys):
    tmp = here.parent
    out = _stopped_run(tmp)  # marked, unlocked, with a checkpoint at round 20
    output.lock_path_for(out).touch()  # and the unlocked lock file a SIGKILL leaves
    before = snapshot(tmp)
    line = assert_refused(*invoke([*COMMANDS["run"], "--out", out], capsys))
    assert "checkpoint at round 20" in line and f"--resume {out}" in line and "--force" in line
    assert snapshot(tmp) == before
    with claim_new(tmp / "early", "run") as claim:  # killed before its first checkpoint
        pass
    before = snapshot(tmp)
    line = assert_refused(*invoke([*COMMANDS["run"], "--out", tmp / "early"], capsys))
    assert "no checkpoint" in line and "--force" in line and "--resume" not in line
    assert snapshot(tmp) == before
    assert invoke([*COMMANDS["run"], "--out", tmp / "early", "--force"], capsys)[0] == 0
    assert read_marker(tmp / "early")["id"] != claim.run_id
    assert invoke(["--resume", out, "--quiet"], capsys)[0] == 0  # the stopped run finishes
    assert json.loads((out / "summary.json").read_text())["resumed_from_round"] == 20
    assert sorted(p.name for p in tmp.iterdir()) == ["cwd", "early", "out"]


def test_run_killed_before_its_first_checkpoint_resumes_from_round_0(here, capsys):
    """A SIGKILL after run.json but before the first checkpoint leaves a resumable folder:
    the next run says so, and ``--resume`` gives the uninterrupted run's result."""
    tmp = here.parent
    scenario = load_scenario("default").with_overrides(agents=60, rounds=40)
    options = RunOptions(workers=1, checkpoint_every=100, progress=False, reference=False)
    out = tmp / "early"
    with claim_new(out, "run") as claim:
        save_run_config(claim.work, scenario, options, run_id=claim.run_id)
    before = snapshot(tmp)
    line = assert_refused(*invoke([*COMMANDS["run"], "--out", out], capsys))
    assert "no checkpoint: it restarts" in line and f"--resume {out}" in line
    assert snapshot(tmp) == before
    assert invoke(["--resume", out, "--quiet"], capsys)[0] == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["resumed_from_round"] == 0
    argv = ["--agents", "60", "--rounds", "40", "--workers", "1", "--checkpoint-every", "100",
            "--no-reference", "--quiet", "--out", tmp / "whole"]  # fmt: skip
    assert invoke(argv, capsys)[0] == 0
    whole = json.loads((tmp / "whole" / "summary.json").read_text())
    assert resumed["prices"] == whole["prices"] and resumed["rounds"] == whole["rounds"]
    assert resumed["excess_demand"] == whole["excess_demand"]


def test_force_does_not_follow_links_out_of_a_tatonnet_folder(here, capsys):
    """Deleting a leftover work folder or replacing a finished one unlinks links inside."""
    tmp = here.parent
    outside = tmp / "outside"
    for name in ("old", "left"):
        claim = claim_new(tmp / name, "run")
        user_folder(claim.work / "mine", "links", outside)  # links to outside/ inside ours
        if name == "old":
            claim.publish()
        claim.release()
    before = snapshot(outside)
    for name in ("old", "left"):
        assert invoke([*COMMANDS["run"], "--out", tmp / name, "--force"], capsys)[0] == 0
        assert not (tmp / name / "mine").exists()
    assert snapshot(outside) == before and (outside / "precious.txt").is_file()
    assert sorted(p.name for p in tmp.iterdir()) == ["cwd", "left", "old", "outside"]


# ---- what a run does own --------------------------------------------------------------------
@pytest.mark.parametrize("command", ["run", "trade"])
def test_force_replaces_a_finished_run_folder(command, here, capsys):
    out = here.parent / "res"
    argv = [*COMMANDS[command], "--out", out]
    assert invoke(argv, capsys)[0] == 0
    first = read_marker(out)
    assert first["kind"] == command
    (out / "stale.txt").write_text("from the first run")
    code, _, err = invoke([*argv, "--force"], capsys)
    assert code == 0, err
    second = read_marker(out)
    assert second["id"] != first["id"] and not (out / "stale.txt").exists()
    assert json.loads((out / "summary.json").read_text())["scenario"] == "default"
    assert sorted(p.name for p in here.parent.iterdir()) == ["cwd", "res"]  # no lock, no .old


def test_run_folder_is_consistent(here, capsys):
    out = here.parent / "res"
    assert invoke([*COMMANDS["run"], "--out", out], capsys)[0] == 0
    run_id = read_marker(out)["id"]
    assert json.loads((out / "summary.json").read_text())["run_id"] == run_id
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/../../b", "..", ".hidden", ""])
def test_default_folder_never_leaves_runs(name, tmp_path):
    root = tmp_path / "runs"
    out = default_out_dir(name, root)
    assert out.parent == root and not out.name.startswith(".") and "/" not in out.name


# ---- two runs to one --out --------------------------------------------------------------------
def test_second_run_to_the_same_out_fails_at_once(tmp_path, capsys):
    out = tmp_path / "shared"
    first = subprocess.Popen(
        [sys.executable, "run.py", "--workers", "0", "--agents", "60", "--rounds", "15000",
         "--tol", "1e-300", "--no-reference", "--quiet", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        work = output.work_dir_for(out)
        deadline = time.monotonic() + 90
        # the first run has claimed the folder and written its run.json (after the marker)
        started = lambda: read_marker(work) is not None and (work / "run.json").exists()  # noqa: E731
        while not started() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started(), first.communicate()
        before = snapshot(tmp_path)
        for extra in (["--force"], []):
            t0 = time.monotonic()
            code, stdout, err = invoke([*COMMANDS["run"], "--out", out, *extra], capsys)
            assert time.monotonic() - t0 < 5
            assert_refused(code, stdout, err, ["another tatonnet run is writing to", str(out)])
        assert_refused(*invoke(["--resume", out, "--quiet"], capsys), ["another tatonnet run"])
        assert first.poll() is None, "the first run ended before the second was tried"
        assert snapshot(tmp_path) == before  # the second touched nothing
        stdout, stderr = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr
    run_id = read_marker(out)["id"]
    assert json.loads((out / "summary.json").read_text())["run_id"] == run_id
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id
    assert json.loads((out / "summary.json").read_text())["rounds"] == 15000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert (out / MARKER).is_file()


def test_failed_run_removes_the_folders_it_made_above_out(here, capsys, monkeypatch):
    """--out a/b/c: a run that fails after claiming its folder leaves no a/b/ behind, and
    never removes a folder that was there before (or one that is not empty)."""
    tmp = here.parent
    (tmp / "a").mkdir()
    (tmp / "a" / "mine.txt").write_text("keep")
    before = snapshot(tmp)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure inside the run")

    import tatonnet.distributed.runner as runner

    monkeypatch.setattr(runner, "run_scenario", boom)  # cli.run imports it when it runs
    with pytest.raises(RuntimeError, match="simulated failure"):
        run.main([*COMMANDS["run"], "--out", str(tmp / "a" / "b" / "c" / "out")])
    assert snapshot(tmp) == before  # a/ and its file kept; b/ and c/ gone
    with claim_new(tmp / "x" / "y" / "out", "run") as claim:
        claim.discard()
    assert not (tmp / "x").exists()
    with claim_new(tmp / "p" / "out", "run") as claim:
        (tmp / "p" / "other.txt").write_text("appeared meanwhile")
        claim.discard()
    assert (tmp / "p" / "other.txt").read_text() == "appeared meanwhile"
