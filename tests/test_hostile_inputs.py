"""Hostile and malformed inputs across the command line (issue 11): refused cleanly.

The contract for a user mistake, checked for every case in :data:`CASES`: exit status 2,
exactly one line on stderr that names the problem, no traceback, no result folder (nor a
``.partial`` work folder), and nothing else under the test's folder changed (a user file
beside ``--out`` survives; the tree is snapshotted before and after). Commands run
in-process (``main(argv)``) from a working directory two levels below the snapshot root,
so a name like ``../../x`` that escaped ``runs/`` would still show in the snapshot.

A property-based test mutates a valid scenario with hostile values (hypothesis) and
checks that each result is either this refusal or a valid run.

The cases of ``tests/test_cli.py`` (BAD_SCENARIOS, BAD_ARGUMENTS) are not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tatonnet.cli import dashboard, inspect, run, study
from tatonnet.environment import sizing
from tatonnet.environment.scenario import load_scenario
from tatonnet.environment.tatonnement.status import STATUSES, check_stop

BASE = """\
name = "tiny"
seed = 1
goods = 3

[[agents]]
count = 30
utility = "ces"
sigma = 2.0
shares = { distribution = "dirichlet", alpha = 1.0 }
endowment = { distribution = "uniform", low = 0.5, high = 1.5 }

[network]
kind = "ring"

[dynamics]
rule = "entropic"
step_size = 0.05
rounds = 30
"""

STUDY = """\
name = "hostile"

[[sweep]]
scenarios = ["SCENARIO"]
rules = ["entropic"]
step_sizes = [0.05]
seeds = [0]
graph = "central"
rounds = 20
"""


def _sub(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new)


def _deep(depth: int) -> str:
    return _sub("rounds = 30", "rounds = 30\n[extra]\nx = " + "[" * depth + "]" * depth)


NAMED_GOODS = _sub("goods = 3", 'goods = ["apples", "bread", "cheese"]')

# ---- scenario files: (id, text (str | bytes), key phrases, extra argv) ----------------------
SCENARIO_CASES = [
    ("name-with-slash", _sub('name = "tiny"', 'name = "a/b"'), ["name", "not a path"], []),
    (
        "name-dotdot-default-out",
        _sub('name = "tiny"', 'name = "../../x"'),
        ["name", "not a path"],
        ["--no-out"],
    ),
    ("name-with-dotdot", _sub('name = "tiny"', 'name = "a..b"'), ["name", "'..'"], ["--no-out"]),
    ("name-leading-dot", _sub('name = "tiny"', 'name = ".hidden"'), ["name", "'.'"], []),
    ("name-empty", _sub('name = "tiny"', 'name = ""'), ["name", "empty"], []),
    ("name-control-char", _sub('name = "tiny"', 'name = "a\\u0007b"'), ["name", "control"], []),
    ("name-backslash", _sub('name = "tiny"', 'name = "a\\\\b"'), ["name", "not a path"], []),
    ("name-too-long", _sub('name = "tiny"', f'name = "{"n" * 300}"'), ["name", "longer"], []),
    ("name-not-a-string", _sub('name = "tiny"', "name = 5"), ["name", "string"], []),
    (
        "duplicate-good-names",
        _sub("goods = 3", 'goods = ["a", "a", "b"]'),
        ["duplicate", "'a'"],
        [],
    ),
    (
        "good-name-clashes-with-metric",
        _sub("goods = 3", 'goods = ["demand", "b", "c"]'),
        ["'demand'", "reserved"],
        [],
    ),
    ("good-name-empty", _sub("goods = 3", 'goods = ["", "b", "c"]'), ["goods[0]", "empty"], []),
    ("good-name-path", _sub("apples", "../apples", NAMED_GOODS), ["goods[0]"], []),
    ("goods-a-string", _sub("goods = 3", 'goods = "abc"'), ["goods"], []),
    (
        "count-10-to-the-12",
        _sub("count = 30", "count = 1000000000000"),
        ["agents.0.count", "less than or equal to"],
        [],
    ),
    (
        "goods-10-to-the-9",
        _sub("goods = 3", "goods = 1000000000"),
        ["goods", "over the limit of 10000"],
        [],
    ),
    (
        "complete-graph-too-many-edges",
        _sub('kind = "ring"', 'kind = "complete"', _sub("count = 30", "count = 100000")),
        ["complete network", "adjacency entries", "over the limit"],
        [],
    ),
    (
        "scale-free-m-huge",
        _sub('kind = "ring"', 'kind = "scale-free"\nm = 1000000000000'),
        ["network", "over the limit"],
        [],
    ),
    (
        "small-world-k-inf",
        _sub('kind = "ring"', 'kind = "small-world"\nk = inf'),
        ["network.k", "finite"],
        [],
    ),
    ("nesting-100000-deep", _deep(100_000), ["nested deeper than 16"], []),
    ("nesting-20-deep", _deep(20), ["nested deeper than 16"], []),
    (
        "initial-spread-1e6",
        _sub("rounds = 30", "rounds = 30\ninitial_spread = 1e6"),
        ["dynamics.initial_spread", "less than or equal to 3"],
        [],
    ),
    (
        "initial-price-out-of-bound",
        _sub("rounds = 30", "rounds = 30\ninitial_prices = [1.0, 1e12, 1.0]"),
        ["dynamics.initial_prices", "diverged before it starts"],
        [],
    ),
    (
        "hyperparameter-nan",
        _sub("rounds = 30", "rounds = 30\nhyperparameters = { x = nan }"),
        ["dynamics.hyperparameters.x", "finite"],
        [],
    ),
    ("seed-2-to-the-64", _sub("seed = 1", "seed = 18446744073709551616"), ["seed"], []),
    ("rounds-10-to-the-10", _sub("rounds = 30", "rounds = 10000000000"), ["dynamics.rounds"], []),
    ("tol-nan", _sub("rounds = 30", "rounds = 30\ntol = nan"), ["dynamics.tol", "finite"], []),
    ("step-size-inf", _sub("step_size = 0.05", "step_size = inf"), ["dynamics.step_size"], []),
    ("sigma-negative", _sub("sigma = 2.0", "sigma = -2.0"), ["agents.0.sigma"], []),
    (
        "agents-not-a-table",
        BASE.split("[[agents]]")[0] + 'agents = 3\n[network]\nkind = "ring"\n',
        ["agents"],
        [],
    ),
    ("not-utf8", BASE.encode() + b"\n# \xff\xfe\n", ["invalid TOML"], []),
    ("empty-file", "", ["goods", "Field required"], []),
    (
        "network-path-is-a-folder",
        _sub('kind = "ring"', 'kind = "file"\npath = "."'),
        ["network.path", "no such file"],
        [],
    ),
    (
        "network-path-is-a-device",
        _sub('kind = "ring"', 'kind = "file"\npath = "/dev/zero"'),
        ["network.path", "no such file"],
        [],
    ),
]

# ---- command-line arguments of a run on the valid BASE scenario -----------------------------
ARGUMENT_CASES = [
    ("option-agents-10-to-the-12", ["--agents", "1000000000000"], ["--agents", "over the limit"]),
    ("option-goods-10-to-the-9", ["--goods", "1000000000"], ["--goods", "over the limit"]),
    ("option-seed-10-to-the-23", ["--seed", "99999999999999999999999"], ["seed"]),
    ("option-rounds-10-to-the-10", ["--rounds", "10000000000"], ["dynamics.rounds"]),
    ("step-size-overflows-to-inf", ["--step-size", "1e400"], ["--step-size", "finite"]),
    (
        "graph-complete-100000",
        ["--agents", "100000", "--graph", "complete"],
        ["adjacency entries", "over the limit"],
    ),
    (
        "address-with-workers-0",
        ["--workers", "0", "--address", "127.0.0.1:1"],
        ["--address", "--workers 0 runs in this process"],
    ),
    (  # one Ray worker on the named cluster (a node-sized shard): unreachable here
        "address-with-workers-1",
        ["--workers", "1", "--address", "127.0.0.1:1"],
        ["cannot reach the Ray cluster at 127.0.0.1:1"],
    ),
    (  # --workers auto with an address: one worker per node of that cluster
        "address-with-default-workers-on-one-block",
        ["--address", "127.0.0.1:1"],
        ["cannot reach the Ray cluster at 127.0.0.1:1"],
    ),
    (
        "address-with-central-composite-rule",
        ["--rule", "extragradient", "--graph", "central", "--address", "127.0.0.1:1"],
        ["--address", "extragradient", "own dynamics"],
    ),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content ("dir" for folders)."""
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            snap[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            snap[rel] = "dir"
        else:
            snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """``tmp_path`` with a user file beside the output folder, cwd two levels below."""
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("the user's own file")
    monkeypatch.chdir(cwd)
    return tmp_path, cwd


def _call(main, argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits through parser.exit
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_contract(code, out, err, prog, phrases, root, before, out_dir=None):
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    if out_dir is not None:
        assert not out_dir.exists(), f"{out_dir} was created"
    after = _snapshot(root)
    assert after == before, {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in before if k in after and before[k] != after[k]),
    }


def _write(cwd: Path, name: str, text: str | bytes) -> Path:
    path = cwd / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "phrases", "extra"),
    [pytest.param(*c[1:], id=c[0]) for c in SCENARIO_CASES],
)
def test_hostile_scenario_file_is_refused(text, phrases, extra, sandbox, capsys):
    root, cwd = sandbox
    scenario = _write(cwd, "bad.toml", text)
    out = cwd / "out"
    argv = ["--workers", "0", "--scenario", scenario, "--quiet", "--no-reference"]
    argv += [] if "--no-out" in extra else ["--out", out]
    before = _snapshot(root)
    code, stdout, err = _call(run.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet", phrases, root, before, out)


@pytest.mark.parametrize(
    ("args", "phrases"),
    [pytest.param(*c[1:], id=c[0]) for c in ARGUMENT_CASES],
)
def test_hostile_argument_is_refused(args, phrases, sandbox, capsys):
    root, cwd = sandbox
    scenario = _write(cwd, "tiny.toml", BASE)
    out = cwd / "out"
    argv = ["--scenario", scenario, "--out", out, "--quiet", "--no-reference", *args]
    before = _snapshot(root)
    code, stdout, err = _call(run.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet", phrases, root, before, out)


def test_scenario_over_this_machines_memory_is_refused(sandbox, capsys, monkeypatch):
    """The estimate (here ~1 GB) against the memory available (patched to 64 MiB)."""
    monkeypatch.setattr(sizing, "available_memory", lambda: 64 * 2**20)
    root, cwd = sandbox
    scenario = _write(cwd, "tiny.toml", BASE)
    out = cwd / "out"
    argv = ["--workers", "0", "--scenario", scenario, "--agents", "1000000", "--out", out,
            "--quiet", "--no-reference"]  # fmt: skip
    before = _snapshot(root)
    code, stdout, err = _call(run.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet",
                    ["1000000 agents", "needs about", "64.0 MiB available"], root, before, out)  # fmt: skip


def test_trade_run_over_this_machines_memory_is_refused(sandbox, capsys, monkeypatch):
    """A trade run holds ~40 KiB per agent: 20,000 traders (~0.8 GB) against 64 MiB."""
    monkeypatch.setattr(sizing, "available_memory", lambda: 64 * 2**20)
    root, cwd = sandbox
    out = cwd / "out"
    argv = ["--scenario", "trade-line", "--trade", "--agents", "20000", "--out", out, "--quiet"]
    before = _snapshot(root)
    code, stdout, err = _call(run.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet",
                    ["20000 agents", "needs about", "64.0 MiB available"], root, before, out)  # fmt: skip


# ---- --resume ------------------------------------------------------------------------------
def _resume_nothing(cwd):
    return "nothing-here", ["--resume", "no stopped run"]


def _resume_a_file(cwd):
    (cwd / "afile").write_text("x")
    return "afile", ["--resume", "not a folder"]


def _resume_unmarked_work(cwd):
    work = cwd / ".r.partial"
    work.mkdir()
    (work / "run.json").write_text("{}")
    return "r", ["--resume", "not the work folder"]


def _resume_damaged_run_json(cwd):
    from tatonnet.results import output

    writer = getattr(output, "_write_marker", None)
    if writer is None:
        pytest.skip("results.output has no marker writer")
    work = cwd / ".r.partial"
    work.mkdir()
    writer(work, "abc", "run")
    (work / "run.json").write_text('{"scenario": [1, 2], "options": 3}')
    return "r", ["--resume", "run.json"]


@pytest.mark.parametrize(
    "make",
    [_resume_nothing, _resume_a_file, _resume_unmarked_work, _resume_damaged_run_json],
    ids=["nothing-to-resume", "resume-a-file", "resume-unmarked-work-folder",
         "resume-damaged-run-json"],
)  # fmt: skip
def test_hostile_resume_is_refused(make, sandbox, capsys):
    root, cwd = sandbox
    target, phrases = make(cwd)
    before = _snapshot(root)
    code, stdout, err = _call(run.main, ["--resume", target, "--quiet"], capsys)
    assert_contract(code, stdout, err, "tatonnet", phrases, root, before)


# ---- study -----------------------------------------------------------------------------------
def _study(replacements=(), scenario="tiny.toml") -> str:
    text = STUDY.replace("SCENARIO", scenario)
    for old, new in replacements:
        text = _sub(old, new, text)
    return text


STUDY_CASES = [
    (
        "study-name-dotdot",
        _study([('name = "hostile"', 'name = "../../../x"')]),
        ["name", "not a path"],
        True,
    ),
    (
        "study-name-slash",
        _study([('name = "hostile"', 'name = "a/b"')]),
        ["name", "not a path"],
        True,
    ),
    (
        "study-agents-10-to-the-12",
        _study([("rounds = 20", "rounds = 20\nagents = 1000000000000")]),
        ["sweep[0].agents", "less than or equal to"],
        False,
    ),
    (
        "study-complete-graph-too-many-edges",
        _study([('graph = "central"', 'graph = "complete"\nagents = 100000')]),
        ["sweep[0]", "adjacency entries"],
        False,
    ),
    (
        "study-seed-2-to-the-64",
        _study([("seeds = [0]", "seeds = [18446744073709551616]")]),
        ["sweep[0].seeds"],
        False,
    ),
    (
        "study-hyperparameter-inf",
        _study([("rounds = 20", "rounds = 20\nhyperparameters = { entropic = { x = inf } }")]),
        ["hyperparameters", "finite"],
        False,
    ),
    (
        "study-nesting-100000-deep",
        _study() + "\n[extra]\nx = " + "[" * 100_000 + "]" * 100_000,
        ["nested deeper than 16"],
        False,
    ),
    ("study-not-utf8", _study().encode() + b"# \xc3\x28\n", ["invalid TOML"], False),
    (
        "study-scenario-with-path-name",
        _study(scenario="bad-name.toml"),
        ["name", "not a path"],
        False,
    ),
    (
        "study-rounds-over-limit",
        _study([("rounds = 20", "rounds = 100000000")]),
        ["sweep[0].rounds"],
        False,
    ),
]


@pytest.mark.parametrize(
    ("text", "phrases", "default_out"),
    [pytest.param(*c[1:], id=c[0]) for c in STUDY_CASES],
)
def test_hostile_study_is_refused(text, phrases, default_out, sandbox, capsys):
    root, cwd = sandbox
    _write(cwd, "tiny.toml", BASE)
    _write(cwd, "bad-name.toml", _sub('name = "tiny"', 'name = "x/y"'))
    grid = _write(cwd, "grid.toml", text)
    out = cwd / "out"
    argv = ["--grid", grid, "--workers", "0", "--quiet"] + ([] if default_out else ["--out", out])
    before = _snapshot(root)
    code, stdout, err = _call(study.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet study", phrases, root, before, out)


def test_study_address_with_cells_in_process_is_refused(sandbox, capsys):
    """--address cannot apply when --workers 0 runs the cells here: refused, not ignored."""
    root, cwd = sandbox
    out = cwd / "out"
    argv = ["--quick", "--workers", "0", "--address", "127.0.0.1:1", "--out", out, "--quiet"]
    before = _snapshot(root)
    code, stdout, err = _call(study.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet study", ["--address", "--workers 0"], root,
                    before, out)  # fmt: skip


def test_study_cell_over_this_machines_memory_is_refused_before_any_folder(
    sandbox, capsys, monkeypatch
):
    """A cell too large is refused when the grid expands (exit 2), not an 'error' row."""
    monkeypatch.setattr(sizing, "available_memory", lambda: 64 * 2**20)
    root, cwd = sandbox
    _write(cwd, "tiny.toml", BASE)
    grid = _write(cwd, "grid.toml", _study([("rounds = 20", "rounds = 20\nagents = 1000000")]))
    out = cwd / "out"
    before = _snapshot(root)
    code, stdout, err = _call(study.main, ["--grid", grid, "--workers", "0", "--out", out,
                                           "--quiet"], capsys)  # fmt: skip
    assert_contract(code, stdout, err, "tatonnet study", ["a cell of scenario", "needs about"],
                    root, before, out)  # fmt: skip


# ---- inspect: damaged run folders ------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_folder(tmp_path_factory) -> Path:
    """A small finished run folder (with run.json), written once for the inspect cases."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code = run.main(["--workers", "0", "--scenario", "scarf", "--agents", "30", "--graph",
                     "ring", "--rounds", "20", "--out", str(out), "--quiet", "--no-reference"])  # fmt: skip
    assert code == 0
    return out


def _summary_edit(fn):
    def mutate(folder: Path):
        path = folder / "summary.json"
        data = json.loads(path.read_text())
        path.write_text(json.dumps(fn(data)))

    return mutate


def _truncate(name):
    def mutate(folder: Path):
        for p in [folder / name] if (folder / name).is_file() else (folder / name).iterdir():
            p.write_bytes(p.read_bytes()[:60])

    return mutate


def _empty_agents(folder: Path):
    for p in (folder / "agents").iterdir():
        p.unlink()


INSPECT_CASES = [
    ("summary-is-a-list", lambda f: (f / "summary.json").write_text("[1, 2]"), [], ["JSON object"]),
    (
        "summary-missing-key",
        _summary_edit(lambda d: {k: v for k, v in d.items() if k != "rule"}),
        [],
        ["summary.json", "rule", "Field required"],
    ),
    (
        "summary-wrong-type",
        _summary_edit(lambda d: dict(d, step_size="fast")),
        [],
        ["summary.json", "step_size"],
    ),
    (
        "summary-goods-inconsistent",
        _summary_edit(lambda d: dict(d, goods=d["goods"][:1])),
        [],
        ["inconsistent"],
    ),
    (
        "summary-numeraire-out-of-range",
        _summary_edit(lambda d: dict(d, numeraire=99)),
        [],
        ["inconsistent", "numeraire 99"],
    ),
    (
        "summary-bad-nearest-reference",
        _summary_edit(
            lambda d: dict(
                d, reference_prices=[d["prices"]], nearest_reference=7, distance_to_reference=0.0
            )
        ),
        [],
        ["nearest_reference"],
    ),  # fmt: skip
    (
        "summary-nested-100000-deep",
        lambda f: (f / "summary.json").write_text("[" * 100_000 + "]" * 100_000),
        [],
        ["unreadable"],
    ),
    ("summary-not-json", lambda f: (f / "summary.json").write_text("{oops"), [], ["unreadable"]),
    ("run-json-is-a-list", lambda f: (f / "run.json").write_text("[]"), [], ["run.json"]),
    (
        "run-json-bad-scenario",
        lambda f: (f / "run.json").write_text('{"scenario": {"name": 3}}'),
        [],
        ["run.json", "scenario"],
    ),
    (
        "run-json-other-economy",
        lambda f: (f / "run.json").write_text(
            json.dumps({"scenario": load_scenario("scarf").with_overrides(agents=40).model_dump()})
        ),
        [],
        ["does not match"],
    ),  # fmt: skip
    ("agents-folder-empty", _empty_agents, [], ["agents/ holds no agents"]),
    ("metrics-parquet-truncated", _truncate("metrics.parquet"), [], ["unreadable"]),
    ("agents-parquet-truncated", _truncate("agents"), [], ["unreadable"]),
    ("agent-id-huge", lambda f: None, ["--agent", "10" * 15], ["--agent", "no agent"]),
]


@pytest.mark.parametrize(
    ("mutate", "extra", "phrases"),
    [pytest.param(*c[1:], id=c[0]) for c in INSPECT_CASES],
)
def test_damaged_run_folder_is_refused_by_inspect(mutate, extra, phrases, finished_folder,
                                                  sandbox, capsys):  # fmt: skip
    root, cwd = sandbox
    folder = cwd / "run"
    shutil.copytree(finished_folder, folder)
    mutate(folder)
    exported = cwd / "exported"
    argv = [folder, *extra] if extra else [folder, "--export", exported]
    before = _snapshot(root)
    code, stdout, err = _call(inspect.main, argv, capsys)
    assert_contract(code, stdout, err, "tatonnet inspect", phrases, root, before, exported)


# ---- dashboard (parser and option checks only: no server is started) ------------------------
DASHBOARD_CASES = [
    ("port-70000", ["--port", "70000"], ["--port", "1-65535", "'70000'"]),
    ("port-0", ["--port", "0"], ["--port", "'0'"]),
    (
        "dashboard-agents-10-to-the-12",
        ["--agents", "1000000000000"],
        ["--agents", "over the limit"],
    ),
    ("dashboard-step-size-nan", ["--step-size", "nan"], ["step_size", "finite"]),
    ("dashboard-scenario-with-path-name", ["--scenario", "bad-name.toml"], ["name", "not a path"]),
    ("dashboard-host-with-nul", ["--host", "127.0.0.1\x00x"], ["cannot listen on", "null"]),
]


@pytest.mark.parametrize(
    ("args", "phrases"),
    [pytest.param(*c[1:], id=c[0]) for c in DASHBOARD_CASES],
)
def test_hostile_dashboard_option_is_refused(args, phrases, sandbox, capsys, monkeypatch):
    def no_server(*a, **k):
        raise AssertionError("the dashboard server must not start")

    monkeypatch.setattr(dashboard.subprocess, "call", no_server)
    root, cwd = sandbox
    _write(cwd, "bad-name.toml", _sub('name = "tiny"', 'name = "x/y"'))
    before = _snapshot(root)
    code, stdout, err = _call(dashboard.main, args, capsys)
    assert_contract(code, stdout, err, "tatonnet dashboard", phrases, root, before)


def test_there_are_at_least_45_distinct_hostile_cases():
    ids = [c[0] for table in (SCENARIO_CASES, ARGUMENT_CASES, STUDY_CASES, INSPECT_CASES,
                              DASHBOARD_CASES) for c in table]  # fmt: skip
    ids += ["memory-run", "memory-study-cell", "nothing-to-resume", "resume-a-file",
            "resume-unmarked-work-folder", "resume-damaged-run-json"]  # fmt: skip
    assert len(ids) == len(set(ids)) >= 45, len(ids)
    scenario_texts = [c[1] for c in SCENARIO_CASES]
    assert len(set(map(str, scenario_texts))) == len(scenario_texts)


# ---- numerical failure is not an economic verdict --------------------------------------------
def test_demand_overflow_is_a_numerical_error_not_diverged(sandbox, capsys):
    """CES with sigma = 10^6: shares**sigma underflow, 0/0 in the demand at prices near 1."""
    _, cwd = sandbox
    scenario = _write(cwd, "huge-sigma.toml", _sub("sigma = 2.0", "sigma = 1e6"))
    out = cwd / "out"
    code, stdout, err = _call(run.main, ["--workers", "0", "--scenario", scenario, "--out", out,
                                         "--quiet", "--no-reference"], capsys)  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "numerical_error"
    assert "not an economic verdict" in summary["reason"]
    assert summary["evidence"]["cause"] == "excess_demand_not_finite"
    assert all(math.isfinite(p) for p in summary["prices"])
    assert "numerical_error" in stdout


def test_numerical_error_in_a_study_is_a_row_and_exit_0(sandbox, capsys):
    _, cwd = sandbox
    _write(cwd, "huge-sigma.toml", _sub("sigma = 2.0", "sigma = 1e6"))
    grid = _write(cwd, "grid.toml", _study(scenario="huge-sigma.toml"))
    out = cwd / "out"
    code, _, err = _call(study.main, ["--grid", grid, "--workers", "0", "--out", out, "--quiet"],
                         capsys)  # fmt: skip
    assert code == 0, err
    text = (out / "verdicts.csv").read_text()
    assert "numerical_error" in text and "diverged" not in text


def test_check_stop_tells_numerical_failure_from_divergence():
    g0 = np.zeros(3)
    assert check_stop(math.inf, 0.0, g0, g0, 1e-8).status == "numerical_error"
    far = np.array([0.0, 25.0, 0.0])  # exp(25) > 1e8: heading to infinity
    assert check_stop(math.inf, 0.0, g0, far, 1e-8).status == "diverged"
    assert "numerical_error" in STATUSES


# ---- property-based: mutated scenarios -------------------------------------------------------
KEYS = [
    ("name", 'name = "tiny"', "name = {}"),
    ("seed", "seed = 1", "seed = {}"),
    ("goods", "goods = 3", "goods = {}"),
    ("count", "count = 30", "count = {}"),
    ("sigma", "sigma = 2.0", "sigma = {}"),
    ("alpha", "alpha = 1.0", "alpha = {}"),
    ("low", "low = 0.5", "low = {}"),
    ("kind", 'kind = "ring"', "kind = {}"),
    ("rule", 'rule = "entropic"', "rule = {}"),
    ("step", "step_size = 0.05", "step_size = {}"),
    ("rounds", "rounds = 30", "rounds = {}"),
]

toml_values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "0.0", "-0.0", "1e308", "5e-324", "1e6"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(['"../x"', '"/etc"', '".."', '""', '"small-world"', '"complete"',
                     '"additive"', '"extragradient"', "[]", "[1, 2]", "{}", "true", "[[[]]]"]),
)  # fmt: skip


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(key=st.sampled_from(KEYS), value=toml_values, extra=st.sampled_from(["", "garbage"]))
def test_mutated_scenario_is_refused_cleanly_or_runs(key, value, extra, capsys, monkeypatch):
    """Every mutation either runs (exit 0, a result folder with a known status) or is
    refused by the contract (exit 2, one line, no traceback, no folder, nothing changed)."""
    monkeypatch.setattr(sizing, "available_memory", lambda: 48 * 2**20)  # keep runs small
    _, old, template = key
    text = _sub(old, template.format(value))
    if extra:
        text = text.replace("[network]", "[network]\nbogus = 1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scenario = _write(root, "s.toml", text)
        (root / "keep.txt").write_text("mine")
        out = root / "out"
        before = _snapshot(root)
        code, stdout, err = _call(run.main, ["--workers", "0", "--scenario", scenario, "--out",
                                             out, "--quiet", "--no-reference"], capsys)  # fmt: skip
        if code == 0:
            summary = json.loads((out / "summary.json").read_text())
            assert summary["status"] in STATUSES
            assert "Traceback" not in err
            assert (root / "keep.txt").read_text() == "mine"
        else:
            assert_contract(code, stdout, err, "tatonnet", [], root, before, out)
