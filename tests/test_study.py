"""``python run.py study``: grid validation, measured verdicts, messages, figures, workers.

Known answers used: Scarf's economy under additive tâtonnement from p = (1, 2, 3) does not
converge (NOTES.md: it spirals out), CES gross substitutes (σ = 4) under the entropic rule
converge to the root-found equilibrium; a ring of N agents sends 2N messages per round, a
central auctioneer exchanges 2N messages (N excess demands in, N price vectors out).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tatonnet.cli import study as study_cli
from tatonnet.studies import cache
from tatonnet.studies import grid as study

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name = "tiny"

[[sweep]]
name = "central"
scenarios = ["scarf", "ces-substitutes"]
rules = ["additive", "entropic"]
step_sizes = [0.1]
graph = "central"
agents = 60
rounds = 600

[[sweep]]
name = "cd"
scenarios = ["cobb-douglas"]
rules = ["entropic"]
step_sizes = [0.5]
graph = "central"
agents = 40
rounds = 300
tol = 1e-9

[[sweep]]
name = "ring"
scenarios = ["ces-substitutes"]
rules = ["entropic"]
step_sizes = [0.05]
graph = "ring"
agents = 60
markets = ["flat", "layered"]
rounds = 50

[[sweep]]
name = "tuned"
scenarios = ["scarf", "ces-substitutes"]
rules = ["additive"]
graph = "central"
agents = 60
rounds = 400
[sweep.tune]
trials = 4
batch = 2
"""


def _main(argv, capsys):
    rc = study_cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(folder: Path) -> list[dict]:
    with (folder / "verdicts.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny grid, run once in-process: (result folder, rows)."""
    base = tmp_path_factory.mktemp("study")
    grid = base / "tiny.toml"
    grid.write_text(TINY)
    out = base / "out"
    assert study_cli.main(["--grid", str(grid), "--workers", "0", "--out", str(out), "--quiet"]) == 0
    return out, _rows(out)


def _row(rows, scenario, rule, graph="central", market="flat", sweep=None):
    (row,) = [
        r
        for r in rows
        if (r["scenario"], r["rule"], r["graph"], r["market"]) == (scenario, rule, graph, market)
        and (r["sweep"] == sweep if sweep else r["sweep"] != "tuned")
    ]
    return row


# ---- invalid grids: one line, exit 2, no folder -------------------------------------------
BAD = [
    ("unknown-scenario", ('"scarf", "ces-substitutes"', '"scarf", "atlantis"'), ["atlantis"]),
    ("unknown-rule", ('rules = ["additive", "entropic"]', 'rules = ["additive", "telepathy"]'),
     ["unknown rule", "telepathy"]),
    ("negative-step", ("step_sizes = [0.1]", "step_sizes = [-0.1]"), ["step_sizes", "greater than 0"]),
    ("nan-step", ("step_sizes = [0.1]", "step_sizes = [nan]"), ["step_sizes", "finite"]),
    ("rule-rejects-step", ('rules = ["entropic"]\nstep_sizes = [0.05]',
                           'rules = ["multiplicative"]\nstep_sizes = [1.5]'),
     ["multiplicative", "step_size must be < 1"]),
    ("unknown-key", ('name = "central"', 'name = "central"\ncolour = "blue"'), ["colour"]),
    ("unknown-graph", ('graph = "ring"', 'graph = "hypercube"'), ["hypercube"]),
    ("bad-market", ('markets = ["flat", "layered"]', 'markets = ["bazaar"]'), ["markets"]),
    ("zero-rounds", ("rounds = 300", "rounds = 0"), ["rounds"]),
    ("empty-rules", ('rules = ["additive", "entropic"]', "rules = []"), ["rules"]),
    ("steps-for-absent-rule", ("step_sizes = [0.05]", "step_sizes = { additive = [0.1] }"),
     ["step_sizes", "additive"]),
    ("toml-syntax", ('name = "tiny"', 'name = "tiny'), ["invalid TOML"]),
    ("tune-with-steps", ("[sweep.tune]\ntrials = 4", "step_sizes = [0.1]\n[sweep.tune]\ntrials = 4"),
     ["tune", "leave out step_sizes"]),
    ("tune-no-trials", ("trials = 4", "trials = 0"), ["trials", "greater than or equal to 1"]),
    ("tune-unknown-key", ("trials = 4", "trials = 4\nsampler = 'grid'"), ["sampler"]),
]  # fmt: skip


def _bad_grid(tmp_path, old_new):
    old, new = old_new
    assert old in TINY, old
    grid = tmp_path / "bad.toml"
    grid.write_text(TINY.replace(old, new))
    return grid


@pytest.mark.parametrize("case, old_new, phrases", BAD, ids=[b[0] for b in BAD])
def test_invalid_grid_is_one_line_exit_2_and_no_folder(case, old_new, phrases, tmp_path, capsys):
    grid = _bad_grid(tmp_path, old_new)
    out = tmp_path / "out"
    rc, stdout, err = _main(["--grid", str(grid), "--workers", "0", "--out", str(out)], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_missing_grid_file_and_existing_out(tmp_path, capsys):
    rc, _, err = _main(["--grid", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "o")],
                       capsys)  # fmt: skip
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope.toml" in err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("not a study")
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    rc, _, err = _main(["--grid", str(grid), "--workers", "0", "--out", str(tmp_path / "o")],
                       capsys)  # fmt: skip
    assert rc == 2 and "already exists" in err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["mine.txt"]


def test_cli_dispatch_bad_grid_exit_2_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "study", "--grid", str(tmp_path / "x.toml")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "x.toml" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()


def test_default_grid_is_the_full_question():
    """The built-in xor grid asks every rule about Scarf, centrally and on a network."""
    s = study.load_study("xor")
    rules = {
        "additive", "multiplicative", "entropic", "momentum", "nesterov", "adam", "optimistic",
        "async-goods", "async-blocks", "extragradient", "newton", "proportional-response",
    }  # fmt: skip
    central = [sw for sw in s.sweep if sw.graph == "central"]
    network = [sw for sw in s.sweep if sw.graph != "central"]
    assert rules <= {r for sw in central if "scarf" in sw.scenarios for r in sw.rules}
    assert rules <= {r for sw in network if "scarf" in sw.scenarios for r in sw.rules}
    assert {"flat", "layered"} <= {m for sw in network for m in sw.markets}
    scenarios = {x for sw in central for x in sw.scenarios}
    assert {"scarf", "scarf-variant", "ces-substitutes", "ces-complements", "cobb-douglas",
            "fisher-linear", "fisher-ces", "fisher-leontief"} <= scenarios  # fmt: skip
    assert {"scarf", "ces-substitutes"} <= {x for sw in network for x in sw.scenarios}


def test_quick_grid_resolves_with_todays_registries():
    cells = study.expand(study.load_study("quick"))
    assert {(c.scenario, c.rule) for c in cells} >= {("scarf", "additive"),
                                                      ("ces-substitutes", "entropic")}  # fmt: skip


# ---- measured verdicts ---------------------------------------------------------------------
def test_scarf_additive_does_not_converge(tiny):
    _, rows = tiny
    row = _row(rows, "scarf", "additive")
    assert row["status"] in ("diverged", "cycling", "max_rounds"), row
    assert row["rounds_to_tol"] == ""
    assert float(row["excess_demand"]) > 1e-2
    # the unique equilibrium (1, 1, 1) is found, and the run is far from it
    assert row["equilibria"] == "1" and float(row["distance"]) > 0.1


def test_ces_substitutes_entropic_converges_to_the_equilibrium(tiny):
    _, rows = tiny
    row = _row(rows, "ces-substitutes", "entropic")
    assert row["status"] == "converged", row
    assert row["rounds_to_tol"] == row["rounds"] and 0 < int(row["rounds"]) < 600
    assert float(row["excess_demand"]) <= 1e-8
    assert float(row["distance"]) < 1e-6


def test_cobb_douglas_reaches_its_closed_form(tiny):
    _, rows = tiny
    row = _row(rows, "cobb-douglas", "entropic")
    assert row["status"] == "converged" and row["equilibrium_method"].startswith("closed form")
    assert float(row["distance"]) < 1e-7


def test_messages_are_rounds_times_per_round(tiny):
    _, rows = tiny
    ran = [r for r in rows if r["status"] != "skipped"]
    assert ran
    for r in ran:
        assert int(r["messages"]) == int(r["rounds"]) * int(r["messages_per_round"])
        assert int(r["exchanges_per_round"]) == 1  # today's rules exchange once a round
    # known answers: a central auctioneer swaps 2N messages, a ring of N agents sends 2N
    assert int(_row(rows, "scarf", "additive")["messages_per_round"]) == 2 * 60
    ring = _row(rows, "ces-substitutes", "entropic", graph="ring")
    assert int(ring["messages_per_round"]) == 2 * 60
    assert int(ring["floats"]) == int(ring["messages"]) * 2 * 3  # prices + signal, 3 goods


def test_layered_market_is_recorded_when_absent(tiny):
    _, rows = tiny
    row = _row(rows, "ces-substitutes", "entropic", graph="ring", market="layered")
    try:
        import tatonnet.environment.trade.layered  # noqa: F401
    except ImportError:
        assert row["status"] == "skipped" and row["reason"].startswith("not available")
        assert row["rounds"] == "0" and row["messages"] == "0"
    else:
        assert row["status"] != "skipped", row


def test_proportional_response_needs_a_fisher_market():
    from tatonnet.environment.scenario import load_scenario

    reason = study._incompatible("proportional-response", load_scenario("scarf"))
    assert reason is not None and "Fisher" in reason
    assert study._incompatible("additive", load_scenario("scarf")) is None


def test_markdown_has_summary_and_one_row_per_cell(tiny):
    out, rows = tiny
    md = (out / "verdicts.md").read_text()
    assert "## Summary" in md
    assert "| scarf | additive | " + _row(rows, "scarf", "additive")["status"] + " 1/1" in md
    cell_lines = [x for x in md.split("## Cells")[1].splitlines() if x.startswith("|")][2:]
    assert len(cell_lines) == len(rows)
    assert "Ran with `--workers 0`" in md


def test_trajectories_are_downsampled_and_start_at_round_0(tiny):
    out, rows = tiny
    table = pq.read_table(out / "cells.parquet").to_pandas()
    for r in rows:
        t = table[table["cell"] == int(r["cell"])]
        if r["status"] == "skipped":
            assert t.empty
            continue
        assert t["round"].iloc[0] == 0 and t["round"].iloc[-1] == int(r["rounds"])
        assert len(t) <= study.KEEP_POINTS + 1
        assert all(len(p) == int(r["goods"]) for p in t["prices"])
    scarf = table[table["cell"] == int(_row(rows, "scarf", "additive")["cell"])]
    assert list(scarf["prices"].iloc[0]) == pytest.approx([1.0, 2.0, 3.0])  # its start


def test_figures_exist_as_png_pdf_and_svg(tiny):
    out, _ = tiny
    for name in ("simplex-scarf", "simplex-ces-substitutes", "convergence-scarf",
                 "convergence-ces-substitutes", "convergence-cobb-douglas",
                 "verdicts-central", "verdicts-network"):  # fmt: skip
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000], name
    assert not (out / "simplex-cobb-douglas.png").exists()  # 4 goods: no simplex


def test_downsample_keeps_ends():
    idx = study._downsample(10_000, keep=50)
    assert idx[0] == 0 and idx[-1] == 9_999 and len(idx) <= 50
    assert list(study._downsample(7, keep=50)) == list(range(7))


def test_interrupt_keeps_the_finished_cells_and_no_table(tmp_path, capsys, monkeypatch):
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    calls = []

    def interrupted(cell):
        calls.append(cell.id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cell)

    real = study.run_cell
    monkeypatch.setattr(study, "run_cell", interrupted)
    out = tmp_path / "out"
    rc, _, err = _main(["--grid", str(grid), "--workers", "0", "--out", str(out), "--quiet"],
                       capsys)  # fmt: skip
    assert rc == 130 and "1 finished cell(s) kept" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.toml", "out"]
    assert sorted(p.name for p in out.iterdir()) == [".tatonnet-output.json", "cells"]
    assert len(list((out / "cells").iterdir())) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_give_the_identical_table(tiny, tmp_path, capsys):
    out0, _ = tiny
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY)
    out2 = tmp_path / "ray"
    rc, _, err = _main(["--grid", str(grid), "--workers", "2", "--out", str(out2), "--quiet"],
                       capsys)  # fmt: skip
    assert rc == 0, err
    assert (out2 / "verdicts.csv").read_text() == (out0 / "verdicts.csv").read_text()


def test_same_seed_same_table(tiny, tmp_path):
    out0, rows = tiny
    grid = tmp_path / "tiny.toml"
    grid.write_text(TINY)
    again = [cache.run_any_cell(c)["row"] for c in study.expand(study.load_study(grid))]
    assert [r["status"] for r in again] == [r["status"] for r in rows]
    assert [str(r["rounds"]) for r in again] == [r["rounds"] for r in rows]
    for a, r in zip(again, rows, strict=True):
        if not math.isnan(a["excess_demand"]):
            assert f"{a['excess_demand']:.6g}" == r["excess_demand"]


def test_help_lists_the_outputs(capsys):
    with pytest.raises(SystemExit) as exc:
        study_cli.main(["--help"])
    assert exc.value.code == 0
    assert "verdicts.csv" in capsys.readouterr().out


def test_textwrap_grid_with_per_rule_steps(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(textwrap.dedent("""\
        name = "per-rule"
        [[sweep]]
        scenarios = ["scarf"]
        rules = ["additive", "entropic"]
        step_sizes = { additive = [0.1, 0.2] }
        """))  # fmt: skip
    cells = study.expand(study.load_study(grid))
    steps = sorted((c.rule, c.step_size or 0.0) for c in cells)
    # entropic has no entry: it runs once, at its own default step size
    assert steps == [("additive", 0.1), ("additive", 0.2), ("entropic", 0.0)]


def test_a_failing_cell_is_an_error_row_and_exit_1(tmp_path, capsys, monkeypatch):
    grid = tmp_path / "g.toml"
    grid.write_text(TINY)
    real = study.run_cell

    def broken(cell):
        if cell.scenario == "cobb-douglas":
            raise FloatingPointError("kernel blew up")
        return real(cell)

    monkeypatch.setattr(study, "run_cell", broken)
    out = tmp_path / "out"
    rc, _, err = _main(["--grid", str(grid), "--workers", "0", "--out", str(out), "--quiet"],
                       capsys)  # fmt: skip
    assert rc == 1 and "1 cell(s) failed" in err and "kernel blew up" in err
    (row,) = [r for r in _rows(out) if r["scenario"] == "cobb-douglas"]
    assert row["status"] == "error" and row["reason"] == "FloatingPointError: kernel blew up"
    assert {r["status"] for r in _rows(out) if r["scenario"] == "scarf"} != {"error"}


def test_figures_survive_infinite_excess_demand(tmp_path):
    """A diverged cell's trajectory ends in inf / nan: the log-scale convergence plot must
    still be drawn (regression: matplotlib raised OverflowError on inf)."""
    from tatonnet.studies.figures import plot_figures

    rounds = np.arange(0, 50)
    excess = np.geomspace(0.1, 1e200, 50)
    excess[-3:] = [np.inf, np.nan, np.inf]
    prices = np.column_stack([np.ones(50), np.geomspace(1, 1e100, 50), np.ones(50)])
    prices[-1] = np.inf
    row = {
        "scenario": "scarf", "mode": "central", "market": "flat", "seed": 0, "rule": "additive",
        "step_size": 0.1, "status": "diverged", "goods": 3, "_goods": ["a", "b", "c"],
        "_references": [[1.0, 1.0, 1.0]],
    }  # fmt: skip
    traj = {"round": rounds, "excess_demand": excess, "price_dispersion": np.zeros(50),
            "prices": prices}  # fmt: skip
    paths = plot_figures([{"row": row, "trajectory": traj}], tmp_path)
    assert {p.name for p in paths} == {f"{kind}-scarf.{fmt}" for kind in ("convergence", "simplex")
                                       for fmt in ("png", "pdf", "svg")}  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in paths)


def test_headline_tables_count_what_ran():
    """Converged / run per rule and scenario, skipped cells left out, other statuses named."""
    from tatonnet.studies.report import headline_tables

    def row(rule, scenario, status, mode="central", market="flat", step=0.1, rounds=10):
        return {"rule": rule, "scenario": scenario, "status": status, "mode": mode,
                "market": market, "step_size": step, "rounds": rounds}  # fmt: skip

    rows = [
        row("entropic", "scarf", "diverged", rounds=600),
        row("entropic", "scarf", "cycling", step=0.05, rounds=4000),
        row("newton", "scarf", "converged", rounds=3),
        row("newton", "scarf", "skipped", mode="network", market="layered"),
        row("entropic", "cobb-douglas", "converged"),
        row("entropic", "cobb-douglas", "converged", step=0.05),
    ]
    text = headline_tables(rows)
    assert "| entropic | 0/2 · div 1, cyc 1 | 2/2 |" in text
    assert "| newton | 1/1 | – |" in text
    assert "| entropic | η=0.1: div 600; η=0.05: cyc 4000 | – | – |" in text
    assert "| newton | η=0.1: converged 3 | – | – |" in text


# ---- tuned sweeps --------------------------------------------------------------------------
def test_tuned_cells_state_their_search_and_their_verdict(tiny):
    out, rows = tiny
    tuned = [r for r in rows if r["sweep"] == "tuned"]
    assert len(tuned) == 2
    for r in tuned:
        assert r["trials"] == "4" and int(r["converged_trials"]) <= 4
        assert r["searched"].startswith("step_size 0.0001..10 log")
        assert r["status"] == r["best_status"]
        converged = int(r["converged_trials"]) > 0
        assert (r["verdict"] in ("converges", "unconfirmed")) == converged
        assert (r["status"] == "converged") == converged
        if converged:  # the row is the best setting's run: its step size converged
            lo, hi = float(r["converged_step_min"]), float(r["converged_step_max"])
            assert lo <= float(r["step_size"]) <= hi
    scarf = _row(rows, "scarf", "additive", sweep="tuned")
    assert scarf["verdict"] == "fails" and scarf["converged_trials"] == "0"
    headline = (out / "headline.md").read_text()
    assert "tuned verdicts** (4 trials per cell, 400 rounds a trial)" in headline
    (line,) = [x for x in headline.splitlines() if x.startswith("| additive |") and "searched" not in x
               and "fails" in x]  # fmt: skip
    assert "fails 0/4" in line and line.rstrip(" |").endswith("space {price, log}")


def test_a_tuned_cell_is_the_tuner_s_verdict():
    """The study's tuned cell is tune_cell's verdict on the same cell, and its row is the run
    at the best trial's hyperparameters."""
    from tatonnet.studies import tune

    (cell,) = [c for c in study.expand(study.load_study("quick"))
               if (c.scenario, c.rule) == ("ces-substitutes", "additive")]  # fmt: skip
    settings = dict(cell.tune)
    verdict = tune.tune_cell(cell, trials=settings["trials"], batch=settings["batch"])
    row = cache.run_any_cell(cell)["row"]
    assert row["verdict"] == verdict.verdict == "converges"
    assert row["step_size"] == dict(verdict.hyperparameters)["step_size"]
    assert row["rounds_to_tol"] == verdict.rounds_to_tol
    assert row["converged_trials"] == verdict.converged_trials
