"""``run.py inspect``: summary content, one agent, the replayed history, exports, errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import invoke

from tatonnet.cli import run
from tatonnet.results.inspect import sparkline


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run of the default CES scenario (200 agents, 40 rounds, in-process)."""
    out = tmp_path_factory.mktemp("inspect") / "default"
    argv = ["--scenario", "default", "--agents", "200", "--rounds", "40", "--seed", "11",
            "--workers", "0", "--out", str(out), "--quiet", "--no-reference"]  # fmt: skip
    assert run.main(argv) == 0
    return out


def _prices(run_dir):
    t = pq.read_table(run_dir / "agents").sort_by("id")
    goods = json.loads((run_dir / "summary.json").read_text())["goods"]
    return np.column_stack([t[f"price_{g}"].to_numpy() for g in goods])


def test_sparkline_known_answers():
    assert sparkline(np.arange(8.0), 8) == ("▁▂▃▄▅▆▇█", 0.0, 7.0)
    line, lo, hi = sparkline([1.0, np.nan, 3.0], 3)
    assert line == "▁ █" and (lo, hi) == (1.0, 3.0)
    line, _, _ = sparkline(np.arange(100.0), 10)  # binned: last value of each bin
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█"


def test_summary_shows_status_curve_and_outliers(run_dir, capsys):
    code, out, err = invoke(["inspect", run_dir], capsys)
    assert code == 0 and err == ""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"status:   {summary['status']} after 40 of 40 rounds" in out
    assert "excess demand |" in out and "dispersion    |" in out
    # The top outlier is the agent farthest (rms log-price) from the network mean.
    logp = np.log(_prices(run_dir))
    dev = np.sqrt(((logp - logp.mean(axis=0)) ** 2).mean(axis=1))
    lines = out.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("top 5 price outliers"))
    first = lines[k + 2].split()
    assert int(first[0]) == int(np.argmax(dev))
    assert float(first[1]) == pytest.approx(dev.max(), rel=1e-3)
    assert len([line for line in lines[k + 2 :] if line.strip()]) == 5


def test_agent_view_lists_neighbours_and_holdings(run_dir, capsys):
    code, out, _ = invoke(["inspect", run_dir, "--agent", 7], capsys)
    assert code == 0
    edges = pq.read_table(run_dir / "edges.parquet")
    s, t = edges["source"].to_numpy(), edges["target"].to_numpy()
    neigh = sorted(set(t[s == 7].tolist()) | set(s[t == 7].tolist()))
    assert f"neighbours: {len(neigh)}" in out
    listed = [
        int(line.split()[0]) for line in out.splitlines() if line.startswith("  ") and "[" in line
    ]
    assert listed == neigh[:12]
    assert "holdings:" in out and "utility:" in out
    assert "history:    not stored" in out


def test_agent_history_replay_ends_at_the_stored_prices(run_dir, capsys):
    code, out, _ = invoke(["inspect", run_dir, "--agent", 3, "--history"], capsys)
    assert code == 0
    assert "replayed 40 rounds; the replay matches the stored final prices" in out
    last = [line for line in out.splitlines() if line.startswith("  round     40")]
    assert len(last) == 1


def test_export_from_the_command_line(run_dir, tmp_path, capsys):
    code, out, _ = invoke(["inspect", run_dir, "--export", tmp_path, "--format", "gexf,parquet"],
                          capsys)  # fmt: skip
    assert code == 0
    assert (tmp_path / "default.gexf").is_file() and (tmp_path / "nodes.parquet").is_file()
    assert not (tmp_path / "default.graphml").exists()
    assert out.count("wrote ") == 4


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["{missing}"], "does not exist"),
        (["{empty}"], "is not a finished tatonnet run folder"),
        (["{run}", "--agent", "200"], "no agent 200: ids run from 0 to 199"),
        (["{run}", "--agent", "-1"], "no agent -1"),
        (["{run}", "--history"], "--history needs --agent"),
        (["{run}", "--export", "{empty}", "--format", "csv"], "--format"),
        (["{run}", "--agent", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, phrase, run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fill = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "run": run_dir}
    argv = ["inspect", *(a.format(**fill) for a in args)]
    code, out, err = invoke(argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("tatonnet inspect: error: "), err
    assert phrase in err and "Traceback" not in err + out


def test_deviation_ranks_non_finite_prices_first():
    import pyarrow as pa

    from tatonnet.results.export import RunFolder
    from tatonnet.results.inspect import deviations

    agents = pa.table({"id": [0, 1, 2], "price_a": [1.0, 1.0, 1.0],
                       "price_b": [2.0, 8.0, np.inf]})  # fmt: skip
    folder = RunFolder(None, {"goods": ["a", "b"]}, agents, pa.table({}), None)
    dev = deviations(folder)
    # log-mean of b over the finite agents is log 4: both are log 2 away in b, 0 in a.
    np.testing.assert_allclose(dev[:2], np.log(2) / np.sqrt(2))
    assert dev[2] == np.inf
