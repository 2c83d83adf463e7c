"""The command line (``run.py``): invalid input is refused cleanly, a run writes its folder.

Contract checked for every invalid input (scenario file or argument): exit status 2,
exactly one line on stderr that names the problem, no traceback, and no result folder
(neither ``--out`` nor a leftover ``.partial`` folder beside it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tatonnet.agents.rules import RULES
from tatonnet.cli import run
from tatonnet.environment.scenario import builtin_names

ROOT = Path(__file__).resolve().parents[1]

# A small valid scenario; each bad case below breaks exactly one thing in it.
GOOD = """\
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
rounds = 50
"""


def _replace(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


# (case id, scenario text or a callable(tmp_path) -> text, key phrases the error must name)
BAD_SCENARIOS = [
    ("toml-syntax", _replace('name = "tiny"', 'name = "tiny'), ["invalid TOML"]),
    (
        "unknown-top-level-key",
        "colour = 'blue'\n" + GOOD,
        ["colour: Extra inputs are not permitted"],
    ),
    (
        "negative-endowment",
        _replace(
            'endowment = { distribution = "uniform", low = 0.5, high = 1.5 }',
            "endowment = [1.0, -0.5, 1.0]",
        ),
        ["agents.0.endowment", "greater than or equal to 0"],
    ),
    (
        "nan-in-shares",
        _replace(
            'shares = { distribution = "dirichlet", alpha = 1.0 }', "shares = [1.0, nan, 1.0]"
        ),
        ["agents.0.shares", "finite"],
    ),
    ("ces-without-sigma", _replace("sigma = 2.0\n", ""), ["agents.0", "needs sigma"]),
    (
        "sigma-for-leontief",
        _replace('utility = "ces"', 'utility = "leontief"'),
        ["agents.0", "sigma is only for 'ces'"],
    ),
    (
        "wrong-number-of-values",
        _replace('shares = { distribution = "dirichlet", alpha = 1.0 }', "shares = [1.0, 2.0]"),
        ["agents[0].shares", "expected 3 values", "got 2"],
    ),
    ("unknown-network-kind", _replace('kind = "ring"', 'kind = "hypercube"'), ["network.kind"]),
    (
        "disconnected-edge-list",
        lambda tmp: _edge_file(
            tmp, "two.txt", [(i, i + 1) for i in range(14)] + [(i, i + 1) for i in range(15, 29)]
        ),  # fmt: skip
        ["disconnected", "2 components"],
    ),
    (
        "network-file-missing",
        _replace('kind = "ring"', 'kind = "file"\npath = "no_such_graph.txt"'),
        ["network.path", "no such file"],
    ),
    (
        "edge-list-wrong-size",
        lambda tmp: _edge_file(tmp, "small.txt", [(i, i + 1) for i in range(9)]),
        ["10 nodes", "30 agents"],
    ),
    ("unknown-rule", _replace('rule = "entropic"', 'rule = "sgd"'), ["unknown rule", "'sgd'"]),
    (
        "multiplicative-step-size-1",
        _replace('rule = "entropic"\nstep_size = 0.05', 'rule = "multiplicative"\nstep_size = 1.0'),
        ["multiplicative", "step_size must be < 1"],
    ),
    (
        "unknown-hyperparameter",
        _replace("rounds = 50", "rounds = 50\nhyperparameters = { momentum = 0.9 }"),
        ["no hyperparameter", "momentum"],
    ),
    ("count-zero", _replace("count = 30", "count = 0"), ["agents.0.count", "greater than 0"]),
    ("one-good", _replace("goods = 3", "goods = 1"), ["goods", "at least 2 goods"]),
    (
        "uniform-low-ge-high",
        _replace("low = 0.5, high = 1.5", "low = 1.5, high = 1.5"),
        ["agents.0.endowment", "low < high"],
    ),
    (
        "dirichlet-alpha-zero",
        _replace("alpha = 1.0", "alpha = 0.0"),
        ["agents.0.shares.alpha", "greater than 0"],
    ),
    (
        "unknown-distribution",
        _replace('distribution = "uniform"', 'distribution = "gauss"'),
        ["agents.0.endowment.distribution", "'gauss'"],
    ),
    (
        "initial-prices-length",
        _replace("rounds = 50", "rounds = 50\ninitial_prices = [1.0, 2.0]"),
        ["dynamics.initial_prices", "expected 3 values"],
    ),
    ("numeraire-out-of-range", _replace("goods = 3", "goods = 3\nnumeraire = 3"), ["numeraire"]),
    ("rounds-zero", _replace("rounds = 50", "rounds = 0"), ["dynamics.rounds"]),
    (
        "nobody-owns-a-good",
        _replace(
            'endowment = { distribution = "uniform", low = 0.5, high = 1.5 }',
            "endowment = [1.0, 0.0, 1.0]",
        ),
        ["nobody owns good 1"],
    ),
    ("no-agents", GOOD.split("[[agents]]")[0] + '[network]\nkind = "ring"\n', ["agents"]),
    (
        "small-world-k-too-large",
        _replace('kind = "ring"', 'kind = "small-world"\nk = 40'),
        ["network.k"],
    ),
]


def _edge_file(tmp: Path, name: str, edges: list[tuple[int, int]]) -> str:
    (tmp / name).write_text("".join(f"{a} {b}\n" for a, b in edges))
    return _replace('kind = "ring"', f'kind = "file"\npath = "{name}"')


# (case id, extra arguments, key phrases); the scenario is the valid tiny one
BAD_ARGUMENTS = [
    ("agents-0", ["--agents", "0"], ["--agents", "positive integer", "'0'"]),
    ("agents-abc", ["--agents", "abc"], ["--agents", "'abc'"]),
    ("step-size-nan", ["--step-size", "nan"], ["--step-size", "finite", "'nan'"]),
    ("step-size-negative", ["--step-size", "-1"], ["--step-size", "'-1'"]),
    ("rounds-0", ["--rounds", "0"], ["--rounds", "'0'"]),
    ("tol-0", ["--tol", "0"], ["--tol", "'0'"]),
    ("graph-nope", ["--graph", "nope"], ["--graph", "'nope'"]),
    ("rule-nope", ["--rule", "nope"], ["--rule", "'nope'"]),
    ("seed-negative", ["--seed", "-3"], ["--seed", "'-3'"]),
    ("signal-nope", ["--signal", "gossip"], ["--signal", "'gossip'"]),
    ("workers-4", ["--workers", "4"], ["--workers 4", "blocks"]),
    ("unknown-option", ["--colour", "blue"], ["unrecognized arguments", "--colour"]),
    (
        "agents-fewer-than-groups",
        ["--scenario", "scarf", "--agents", "2"],
        ["--agents", "at least 3"],
    ),
    (
        "goods-with-explicit-scarf",
        ["--scenario", "scarf", "--goods", "3"],
        ["--goods", "scarf", "explicitly"],
    ),
    (
        "multiplicative-step-override",
        ["--rule", "multiplicative", "--step-size", "1.5"],
        ["step_size must be < 1"],
    ),
    ("small-world-on-3-agents", ["--agents", "3", "--graph", "small-world"], ["network.k"]),
]


def invoke(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``run.main(argv)`` in-process; returns (exit status, stdout, stderr).

    Runs in this process (``--workers 0``) unless the case names ``--workers``.
    """
    argv = argv if "--workers" in argv else ["--workers", "0", *argv]
    try:
        code = run.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits through parser.exit
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, out: str, err: str, phrases: list[str], out_dir: Path) -> None:
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("tatonnet: error: "), line
    assert "Traceback" not in err and "Traceback" not in out
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    assert not out_dir.exists(), f"{out_dir} was created"
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.endswith((".partial", ".old"))]
    assert not leftovers, leftovers


@pytest.fixture
def good_scenario(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(GOOD)
    return path


def test_the_base_scenario_of_the_bad_cases_is_valid(good_scenario, tmp_path, capsys):
    """Guard: each bad case differs from a scenario that runs, so its error is its own."""
    out = tmp_path / "out"
    code, stdout, err = invoke(
        ["--scenario", good_scenario, "--out", out, "--quiet", "--no-reference"], capsys
    )
    assert code == 0, err
    assert (out / "summary.json").is_file()
    assert "results:" in stdout


@pytest.mark.parametrize(
    ("text", "phrases"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_SCENARIOS],
)
def test_malformed_scenario_is_refused(text, phrases, tmp_path, capsys):
    if callable(text):
        text = text(tmp_path)
    scenario = tmp_path / "bad.toml"
    scenario.write_text(text)
    out = tmp_path / "out"
    code, stdout, err = invoke(["--scenario", scenario, "--out", out, "--quiet"], capsys)
    assert_refused(code, stdout, err, phrases, out)


def test_there_are_at_least_twelve_distinct_malformed_scenarios():
    texts = {case[1] for case in BAD_SCENARIOS if isinstance(case[1], str)}
    assert len(texts) + sum(callable(case[1]) for case in BAD_SCENARIOS) >= 12
    assert GOOD not in texts


@pytest.mark.parametrize(
    ("args", "phrases"),
    [case[1:] for case in BAD_ARGUMENTS],
    ids=[case[0] for case in BAD_ARGUMENTS],
)
def test_bad_argument_is_refused(args, phrases, good_scenario, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--scenario", good_scenario, "--out", out, "--quiet", "--no-reference", *args]
    code, stdout, err = invoke(argv, capsys)
    assert_refused(code, stdout, err, phrases, out)


def test_unknown_scenario_name_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = invoke(["--scenario", "no-such", "--out", out, "--quiet"], capsys)
    assert_refused(code, stdout, err, ["'no-such'", "no such file", *builtin_names()], out)


def test_existing_out_without_force_is_refused_and_left_alone(good_scenario, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, stdout, err = invoke(["--scenario", good_scenario, "--out", out, "--quiet"], capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".partial", ".old"))]


def test_out_that_is_a_file_is_refused_even_with_force(good_scenario, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a folder")
    argv = ["--scenario", good_scenario, "--out", out, "--force", "--quiet", "--no-reference"]
    code, _, err = invoke(argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and "not a folder" in err, err
    assert out.read_text() == "not a folder"


# ---- a successful run and its result folder ------------------------------------------------

SUMMARY_KEYS = {
    "scenario", "n_agents", "n_goods", "graph", "rule", "step_size", "seed", "workers",
    "rounds", "status", "excess_demand", "price_dispersion", "prices", "reference_prices",
    "distance_to_reference", "wall_seconds", "agent_rounds_per_second",
}  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One in-process run of ces-substitutes (300 agents) with its reference equilibrium."""
    out = tmp_path_factory.mktemp("run") / "result"
    argv = ["--scenario", "ces-substitutes", "--agents", "300", "--seed", "5",
            "--out", str(out), "--quiet", "--workers", "0"]  # fmt: skip
    code = run.main(argv)
    return code, out


def test_successful_run_exits_zero_and_writes_the_summary(finished_run):
    code, out = finished_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".tatonnet-output.json", "agents", "convergence.png", "convergence.svg", "edges.parquet",
        "metrics.parquet", "run.json", "summary.json",
    ]  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    missing = SUMMARY_KEYS - summary.keys()
    assert not missing, missing
    assert summary["scenario"] == "ces-substitutes"
    assert summary["n_agents"] == 300
    assert summary["n_goods"] == 3
    assert summary["graph"] == "scale-free"
    assert summary["rule"] == "multiplicative"
    assert summary["step_size"] == pytest.approx(0.03)
    assert summary["seed"] == 5
    assert summary["workers"] == 0
    assert summary["status"] == "converged"
    assert 0 < summary["rounds"] <= 4000
    assert summary["excess_demand"] <= 1e-8 and summary["price_dispersion"] <= 1e-8
    assert len(summary["prices"]) == 3 and summary["prices"][0] == pytest.approx(1.0)
    assert len(summary["reference_prices"]) >= 1
    assert summary["distance_to_reference"] < 1e-6
    assert summary["wall_seconds"] > 0 and summary["agent_rounds_per_second"] > 0


def test_metrics_and_agents_tables_read_back(finished_run):
    _, out = finished_run
    summary = json.loads((out / "summary.json").read_text())
    goods = summary["goods"]
    metrics = pq.read_table(out / "metrics.parquet")
    assert metrics.num_rows == summary["rounds"] + 1
    expected = {"round", "excess_demand", "price_dispersion"}
    expected |= {f"price_{g}" for g in goods} | {f"excess_{g}" for g in goods}
    assert expected <= set(metrics.column_names)
    assert metrics.column("round").to_pylist() == list(range(summary["rounds"] + 1))
    final = metrics.slice(summary["rounds"], 1).to_pylist()[0]
    assert final["excess_demand"] == pytest.approx(summary["excess_demand"], rel=1e-12)
    assert [final[f"price_{g}"] for g in goods] == pytest.approx(summary["prices"], rel=1e-12)

    agents = pq.read_table(out / "agents")
    assert agents.num_rows == summary["n_agents"]
    expected = {"id", "group", "family", "wealth"}
    expected |= {f"price_{g}" for g in goods} | {f"excess_{g}" for g in goods}
    assert expected <= set(agents.column_names)
    assert agents.column("id").to_pylist() == list(range(summary["n_agents"]))
    assert set(agents.column("family").to_pylist()) == {"ces"}
    prices = np.column_stack([agents.column(f"price_{g}").to_numpy() for g in goods])
    assert prices.mean(axis=0) == pytest.approx(summary["prices"], rel=1e-12)


def test_convergence_plot_is_a_png(finished_run):
    _, out = finished_run
    data = (out / "convergence.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_force_replaces_an_existing_folder(good_scenario, tmp_path, capsys):
    """--force replaces a folder an earlier run wrote (marked; user folders: test_output_safety)."""
    out = tmp_path / "out"
    argv = ["--scenario", good_scenario, "--out", out, "--force", "--quiet", "--no-reference"]
    assert invoke(argv, capsys)[0] == 0
    (out / "stale.txt").write_text("from an earlier run")
    (out / "summary.json").write_text('{"scenario": "stale"}')
    code, _, err = invoke(argv, capsys)
    assert code == 0, err
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "summary.json").read_text())["scenario"] == "tiny"
    assert (out / "metrics.parquet").is_file() and (out / "agents" / "part-0000.parquet").is_file()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith((".partial", ".old"))]
    assert not leftovers, leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.toml"]


def _boom(*args, **kwargs):
    raise RuntimeError("disk full while plotting")


def test_failure_while_writing_leaves_no_folder(good_scenario, tmp_path, capsys, monkeypatch):
    """The folder appears only complete: a crash in the last file leaves nothing behind."""
    import tatonnet.results.output

    monkeypatch.setattr(tatonnet.results.output, "plot_convergence", _boom)
    out = tmp_path / "out"
    argv = [
        "--scenario",
        good_scenario,
        "--out",
        out,
        "--quiet",
        "--no-reference",
        "--workers",
        "0",
    ]
    with pytest.raises(RuntimeError, match="disk full"):
        run.main([str(a) for a in argv])
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_failure_while_forcing_keeps_the_old_folder(good_scenario, tmp_path, capsys, monkeypatch):
    import tatonnet.results.output

    out = tmp_path / "out"
    with tatonnet.results.output.claim_new(out, "run") as claim:  # a folder a run wrote
        (claim.work / "summary.json").write_text('{"scenario": "old"}')
        claim.publish()
    monkeypatch.setattr(tatonnet.results.output, "plot_convergence", _boom)
    argv = ["--scenario", good_scenario, "--out", out, "--force", "--quiet", "--no-reference",
            "--workers", "0"]  # fmt: skip
    with pytest.raises(RuntimeError, match="disk full"):
        run.main([str(a) for a in argv])
    assert sorted(p.name for p in out.iterdir()) == [".tatonnet-output.json", "summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"scenario": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.toml"]


# ---- true subprocesses: what a shell sees --------------------------------------------------


def _python_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_help_lists_every_scenario_and_rule(tmp_path):
    proc = _python_run("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in builtin_names():
        assert name in proc.stdout
    assert set(builtin_names()) >= {"default", "scarf", "cobb-douglas", "ces-substitutes"}
    for rule in RULES:
        assert rule in proc.stdout
    assert set(RULES) >= {"additive", "entropic", "multiplicative"}


def test_shell_sees_exit_2_and_one_line_for_a_bad_scenario(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(textwrap.dedent(GOOD).replace('kind = "ring"', 'kind = "ring"\nbogus = 1'))
    out = tmp_path / "out"
    proc = _python_run("--scenario", str(bad), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "network.bogus" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_shell_sees_exit_2_and_one_line_for_a_bad_argument(tmp_path):
    proc = _python_run("--agents", "abc", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "--agents" in proc.stderr and "'abc'" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_leaves_ends_the_command_quietly():
    """``tatonnet ... | head``: a closed pipe ends the command with 141 (128 + SIGPIPE) and
    no traceback."""
    code = (
        "from tatonnet.cli import run\n"
        "def main():\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "run.main = main\n"
        "run.entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr
