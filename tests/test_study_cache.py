"""The study folder's cell cache: reuse, resume after a stop, update in place, refusals.

Every test runs a few cells of a small grid in this process (no Ray). The property that
matters is equivalence: the verdict table is byte-identical whether its cells were reused,
resumed or run in one go.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from tatonnet.cli import study as study_cli
from tatonnet.results.cell_store import CellStore
from tatonnet.results.study_folder import claim_study
from tatonnet.studies import cache
from tatonnet.studies import grid as study

SMALL = """\
name = "small"

[[sweep]]
name = "central"
scenarios = ["scarf", "ces-substitutes"]
rules = ["additive", "entropic"]
step_sizes = [0.1]
seeds = [0]
graph = "central"
agents = 30
rounds = 200
"""

SCENARIO = """\
name = "cd-small"
seed = 3
goods = 3

[[agents]]
count = 20
utility = "cobb-douglas"
shares = { distribution = "dirichlet", alpha = 2.0 }
endowment = { distribution = "uniform", low = 0.2, high = 2.0 }

[network]
kind = "central"

[dynamics]
rule = "entropic"
step_size = 0.05
"""


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    """The figures take most of a re-run's time and are not what these tests check (the
    module's first run, ``fresh``, draws them); a re-run here draws none."""
    from tatonnet.studies import figures

    monkeypatch.setattr(figures, "plot_figures", lambda results, out: [])
    monkeypatch.setattr(figures, "plot_verdict_map", lambda rows, out, mode: [])


def _main(argv, capsys):
    rc = study_cli.main([*argv, "--workers", "0", "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def _grid(tmp_path: Path, text: str = SMALL, name: str = "small.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """The small grid run once into a new folder: (grid file, folder, verdicts.csv text)."""
    base = tmp_path_factory.mktemp("cache")
    grid = _grid(base)
    out = base / "fresh"
    assert study_cli.main(["--grid", str(grid), "--out", str(out), "--workers", "0", "--quiet"]) == 0
    return grid, out, (out / "verdicts.csv").read_text()


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to, symlinks=True)
    return to


def test_rerun_reuses_every_cell_and_gives_the_identical_table(fresh, tmp_path, capsys):
    grid, out0, table = fresh
    out = _copy(out0, tmp_path / "again")
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert len(before) == 4
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "4 cells - 4 reused from the cache, 0 to run" in stdout
    assert (out / "verdicts.csv").read_text() == table
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["cells_reused"], summary["cells_run"]) == (4, 0)
    assert "verdicts.csv" in summary["files"] and "cells.parquet" in summary["files"]
    assert not [p for p in out.iterdir() if p.name.startswith(".publish-")]


def test_a_stored_row_equals_the_row_run_in_memory(fresh):
    grid, out, _ = fresh
    cells = study.expand(study.load_study(grid))
    store = CellStore(out / "cells")
    (key, _), cell = cache.cell_configs(cells[:1])[0], cells[0]
    row = study.run_cell(cell)["row"]
    stored = store.row(key)
    for column in ("status", "rounds", "excess_demand", "prices", "distances", "reason"):
        assert stored.get(column) == row.get(column), column


def test_interrupted_study_resumes_to_the_same_table(fresh, tmp_path, capsys, monkeypatch):
    grid, _, table = fresh
    out = tmp_path / "stopped"
    real, calls = study.run_cell, []

    def stop_at_third(cell):
        calls.append(cell.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(cell)

    monkeypatch.setattr(study, "run_cell", stop_at_third)
    rc, _, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 130 and "2 finished cell(s) kept" in err and len(err.strip().splitlines()) == 1
    assert len(CellStore(out / "cells").keys()) == 2
    assert not (out / "verdicts.csv").exists()  # no table until the study is complete
    assert not [p for p in (out / "cells").iterdir() if not p.name.endswith(".parquet")]

    monkeypatch.setattr(study, "run_cell", real)
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "2 reused from the cache, 2 to run" in stdout
    assert (out / "verdicts.csv").read_text() == table


def test_interrupt_before_any_cell_leaves_no_folder(tmp_path, capsys, monkeypatch):
    grid = _grid(tmp_path)

    def stop(cell):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_cell", stop)
    rc, _, err = _main(["--grid", str(grid), "--out", str(tmp_path / "a" / "out")], capsys)
    assert rc == 130 and "no result folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.toml"]


def test_the_key_covers_the_scenario_content_not_the_cell_id(tmp_path):
    scenario = tmp_path / "cd.toml"
    scenario.write_text(SCENARIO)
    cell = study.Cell(0, "s", str(scenario), "central", None, "flat", "entropic", 0.1, (), 0,
                      50, 1e-8, "tracking")  # fmt: skip
    key = cache.cell_key(cell)
    assert cache.cell_key(dataclasses.replace(cell, id=17, sweep="other")) == key
    assert cache.cell_key(dataclasses.replace(cell, seed=1)) != key
    assert cache.cell_key(dataclasses.replace(cell, rounds=51)) != key
    assert cache.cell_key(dataclasses.replace(cell, hyperparameters=(("warmup", 5),))) != key
    scenario.write_text(SCENARIO.replace("alpha = 2.0", "alpha = 3.0"))
    edited = cache.cell_key(cell)
    assert edited != key
    scenario.write_text(SCENARIO)  # same content again: same key
    assert cache.cell_key(cell) == key
    config = cache.cell_config(cell)
    assert "id" not in config and config["rule_resolved"]["step_size"] == 0.1


def test_a_grown_study_runs_only_its_new_cells(fresh, tmp_path, capsys):
    grid, out0, table = fresh
    out = _copy(out0, tmp_path / "grown")
    grown = _grid(tmp_path, SMALL.replace('rules = ["additive", "entropic"]',
                                          'rules = ["additive", "entropic", "multiplicative"]'),
                  "grown.toml")  # fmt: skip
    rc, stdout, err = _main(["--grid", str(grown), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "6 cells - 4 reused from the cache, 2 to run" in stdout
    rows = (out / "verdicts.csv").read_text().splitlines()
    assert len(rows) == 7 and sum(",multiplicative," in r for r in rows) == 2

    # back to the original study: the table is the original one, two stored cells unused
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "4 reused from the cache, 0 to run; 2 stored cell(s) not in this study" in stdout
    assert (out / "verdicts.csv").read_text() == table
    assert len(CellStore(out / "cells").keys()) == 6


def test_a_half_written_or_foreign_cell_file_is_not_reused(fresh, tmp_path, capsys):
    grid, out0, table = fresh
    out = _copy(out0, tmp_path / "damaged")
    store = CellStore(out / "cells")
    first, second = sorted(store.keys())[:2]
    data = store.path(first).read_bytes()
    store.path(first).write_bytes(data[: len(data) // 2])  # cut short
    store.path(second).write_bytes(store.path(sorted(store.keys())[2]).read_bytes())  # another key's
    (out / "cells" / f".{first}.{'0' * 32}.tmp").write_bytes(b"partial")  # a killed writer's
    assert store.row(first) is None and store.row(second) is None
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "2 reused from the cache, 2 to run" in stdout
    assert (out / "verdicts.csv").read_text() == table
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(
        p.name for p in (out0 / "cells").iterdir()
    )


def test_force_runs_every_cell_again(fresh, tmp_path, capsys):
    grid, out0, table = fresh
    out = _copy(out0, tmp_path / "forced")
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out), "--force"], capsys)
    assert rc == 0, err
    assert "0 reused from the cache, 4 to run" in stdout
    assert (out / "verdicts.csv").read_text() == table


def test_a_folder_that_is_not_a_study_is_refused(tmp_path, capsys):
    grid = _grid(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    rc, _, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "not a tatonnet study" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_file_of_yours_in_a_study_folder_is_never_replaced(fresh, tmp_path, capsys):
    grid, out0, _ = fresh
    out = _copy(out0, tmp_path / "mixed")
    (out / "notes.txt").write_text("mine")
    summary = json.loads((out / "summary.json").read_text())
    summary["files"].remove("timing.csv")  # as if timing.csv were the user's
    (out / "summary.json").write_text(json.dumps(summary))
    rc, _, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 2 and "timing.csv" in err and "not written by tatonnet" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_a_second_study_into_a_locked_folder_is_refused(fresh, tmp_path, capsys):
    grid, out0, table = fresh
    out = _copy(out0, tmp_path / "busy")
    with claim_study(out):
        rc, _, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert (out / "verdicts.csv").read_text() == table


TUNED = """\
name = "tuned-small"

[[sweep]]
name = "tuned"
scenarios = ["scarf", "ces-substitutes", "cobb-douglas"]
rules = ["additive"]
graph = "central"
agents = 30
rounds = 300
[sweep.tune]
trials = 4
batch = 2
"""


def test_an_interrupted_tuned_study_resumes_to_the_same_table(tmp_path, capsys, monkeypatch):
    """A tuned study stopped after its first cell resumes from it (the tuner does not run
    that cell again) to the table a study run in one go writes."""
    from tatonnet.studies import tune

    grid = _grid(tmp_path, TUNED, "tuned.toml")
    rc, _, err = _main(["--grid", str(grid), "--out", str(tmp_path / "whole")], capsys)
    assert rc == 0, err
    table = (tmp_path / "whole" / "verdicts.csv").read_text()

    out = tmp_path / "stopped"
    real, tuned = tune.tune_cell, []

    def stop_at_second(cell, **options):
        tuned.append(cell.scenario)
        if len(tuned) == 2:
            raise KeyboardInterrupt
        return real(cell, **options)

    monkeypatch.setattr(tune, "tune_cell", stop_at_second)
    rc, _, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 130 and "1 finished cell(s) kept" in err
    tuned.clear()
    monkeypatch.setattr(tune, "tune_cell", lambda cell, **o: tuned.append(cell.scenario) or real(cell, **o))
    rc, stdout, err = _main(["--grid", str(grid), "--out", str(out)], capsys)
    assert rc == 0, err
    assert "1 reused from the cache, 2 to run" in stdout
    assert tuned == ["ces-substitutes", "cobb-douglas"]
    assert (out / "verdicts.csv").read_text() == table
    assert "verdict" in table.splitlines()[0]
