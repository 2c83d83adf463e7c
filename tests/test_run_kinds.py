"""Every run kind is a first-class run: tâtonnement, ``--trade`` and ``study`` folders all have
``run.json`` (what ran, seed, versions), seeds and versions in their summaries, and
``tatonnet inspect`` / ``inspect --export`` work on them; GraphML and GEXF exports round-trip
through networkx with node and edge attributes; a utility family has one spelling.
"""

from __future__ import annotations

import json
import math
import sys
from importlib import metadata

import networkx as nx
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from helpers import invoke

from tatonnet.agents.utility import FAMILY_NAMES, Family, family_labels
from tatonnet.cli import run
from tatonnet.environment.network import build_network
from tatonnet.environment.scenario import load_scenario
from tatonnet.results.output import read_marker

VERSIONED = ("tatonnet", "numpy", "mesa", "ray")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One folder of each kind: a small tâtonnement run, a trade run, the quick study."""
    root = tmp_path_factory.mktemp("kinds")
    argv = {
        "run": ["--scenario", "cobb-douglas", "--agents", "120", "--rounds", "30", "--seed",
                "5", "--workers", "0", "--no-reference"],
        "trade": ["--scenario", "trade-line", "--trade", "--rounds", "60"],
        "study": ["study", "--quick", "--workers", "0"],
    }  # fmt: skip
    for kind, args in argv.items():
        assert run.main([*args, "--quiet", "--out", str(root / kind)]) == 0, kind
    return {kind: root / kind for kind in argv}


def _json(path):
    return json.loads(path.read_text())


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return a == b or math.isclose(a, b, rel_tol=1e-15) or (math.isnan(a) and math.isnan(b))
    return a == b


# ---- run.json, seeds and versions ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["run", "trade", "study"])
def test_every_folder_has_run_json_with_seed_and_versions(folders, kind):
    folder = folders[kind]
    marker = read_marker(folder)
    assert marker is not None and marker["kind"] == kind
    config = _json(folder / "run.json")
    summary = _json(folder / "summary.json")
    assert config["kind"] == kind and config["run_id"] == marker["id"] == summary["run_id"]
    for record in (config, summary):
        assert set(VERSIONED) <= set(record["versions"])
        assert record["versions"]["tatonnet"] == metadata.version("tatonnet")
        assert record["versions"]["numpy"] == np.__version__
    if kind == "study":
        assert config["study"]["name"] == summary["study"] == "quick"
        assert config["seeds"] == summary["seeds"] == [0]
        verdicts = pacsv.read_csv(folder / "verdicts.csv")
        assert config["cells"] == summary["cells"] == verdicts.num_rows
        status = verdicts["status"].to_pylist()
        assert summary["status_counts"] == {s: status.count(s) for s in set(status)}
    else:
        scenario = load_scenario("trade-line" if kind == "trade" else "cobb-douglas")
        seed = 5 if kind == "run" else scenario.seed
        assert config["seed"] == config["scenario"]["seed"] == summary["seed"] == seed


def test_trade_summary_says_what_ran(folders):
    summary = _json(folders["trade"] / "summary.json")
    agents = pq.read_table(folders["trade"] / "trade_agents.parquet")
    assert summary["status"] in ("converged", "max_rounds") and summary["max_rounds"] == 60
    assert summary["graph"] == "file" and summary["n_edges"] == 19
    roles = agents["role"].to_pylist()
    assert summary["roles"] == {r: roles.count(r) for r in summary["roles"]}
    assert sum(summary["roles"].values()) == summary["agents"] == 20
    # every executed trade is on one edge and counted at both of its agents
    edges = pq.read_table(folders["trade"] / "edges.parquet")
    assert edges.num_rows == 19 and sum(edges["trades"].to_pylist()) == summary["trades"]
    assert sum(agents["trades"].to_pylist()) == 2 * summary["trades"]


@pytest.mark.parametrize("quiet", [False, True])
def test_trade_progress_bar_is_on_stderr_unless_quiet(quiet, tmp_path, monkeypatch):
    import tqdm

    bars = []
    real = tqdm.tqdm

    def recording(*args, **kwargs):
        bars.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm, "tqdm", recording)
    argv = ["--scenario", "trade-line", "--trade", "--rounds", "3", "--out", tmp_path / "t"]
    assert run.main([str(a) for a in argv] + (["--quiet"] if quiet else [])) == 0
    (bar,) = bars
    assert bar["disable"] is quiet and bar["delay"] == 2.0 and bar["total"] == 3
    assert bar["file"] is sys.stderr


# ---- inspect ------------------------------------------------------------------------------
def test_inspect_a_tatonnement_run(folders, capsys):
    code, out, err = invoke(["inspect", folders["run"]], capsys)
    assert code == 0 and err == ""
    assert "status:   " in out and "excess demand |" in out and "seed 5" in out


def test_inspect_a_trade_folder(folders, capsys):
    folder = folders["trade"]
    code, out, err = invoke(["inspect", folder], capsys)
    assert code == 0 and err == ""
    s = _json(folder / "summary.json")
    agents = pq.read_table(folder / "trade_agents.parquet")
    lines = {line.split(":")[0]: line for line in out.splitlines() if ":" in line}
    assert f"after {s['rounds']} of 60 rounds" in lines["status"]
    assert f"{s['trades']} executed, {s['rejected']} rejected" in lines["trades"]
    for role, count in s["roles"].items():
        if count:
            assert f"{role} {count}" in lines["roles"]
    layer = agents["layer"].to_numpy()
    assert f"outside: {(layer < 0).sum()}" in lines["layers"]
    assert f"0: {(layer == 0).sum()} " in lines["layers"]
    assert "hops" in lines and "grain " in lines["hops"]
    c = s["concentration"]
    assert f"edge Gini {c['edge_gini']:.2f}" in lines["concentration"]
    # the busiest agent by value traded heads the table
    rows = out.splitlines()
    k = next(i for i, line in enumerate(rows) if line.startswith("top 5 agents by value"))
    assert int(rows[k + 2].split()[0]) == int(np.argmax(agents["gross"].to_numpy()))
    code, out, _ = invoke(["inspect", folder, "--agent", 5], capsys)
    assert code == 0 and "agent 5 of 20 (group traders, cobb-douglas)" in out


def test_inspect_a_study_folder(folders, capsys):
    folder = folders["study"]
    code, out, err = invoke(["inspect", folder], capsys)
    assert code == 0 and err == ""
    status = pacsv.read_csv(folder / "verdicts.csv")["status"].to_pylist()
    assert "4 cells: 2 scenarios x 2 rules, seeds [0]" in out
    line = next(line for line in out.splitlines() if line.startswith("status:"))
    for s in set(status):
        assert f"{s} {status.count(s)}" in line
    assert f"headline: {folder / 'headline.md'}" in out


@pytest.mark.parametrize(
    "kind, args, phrase",
    [
        ("study", ["--agent", "0"], "a study folder has no agents"),
        ("study", ["--export", "{tmp}", "--format", "graphml"], "no network to export"),
        ("trade", ["--agent", "20"], "no agent 20: ids run from 0 to 19"),
        ("trade", ["--agent", "1", "--history"], "no per-round history"),
    ],
)
def test_what_a_kind_cannot_show_is_one_line(folders, kind, args, phrase, tmp_path, capsys):
    argv = ["inspect", folders[kind], *(a.format(tmp=tmp_path / "x") for a in args)]
    code, out, err = invoke(argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and phrase in err, err
    assert not (tmp_path / "x").exists()


# ---- exports ------------------------------------------------------------------------------
def _read(path, fmt) -> nx.Graph:
    return nx.read_graphml(path, node_type=int) if fmt == "graphml" else nx.read_gexf(
        path, node_type=int)  # fmt: skip


def _compare(G: nx.Graph, nodes, edges, edge_columns) -> None:
    """Node and edge attributes of a read-back graph against the exported Parquet tables."""
    rows = {r["id"]: r for r in nodes.to_pylist()}
    assert set(G.nodes) == set(rows)
    for i, data in G.nodes(data=True):
        got = {k: v for k, v in data.items() if k != "label"}  # GEXF adds a label
        want = {k: v for k, v in rows[i].items() if k != "id"}
        assert set(got) == set(want), i
        for key, value in want.items():
            assert _same(got[key], value), (i, key, got[key], value)
    e = edges.to_pylist()
    assert G.number_of_edges() == len(e)
    for r in e:
        data = G.edges[r["source"], r["target"]]
        for key in edge_columns:
            assert _same(data[key], r[key]), (r, key, data[key])


@pytest.fixture(scope="module")
def exported(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    for kind, folder in folders.items():
        assert run.main(["inspect", str(folder), "--export", str(root / kind)]) == 0
    return root


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_tatonnement_export_round_trips_with_mixing_weights(folders, exported, fmt):
    out = exported / "run"
    G = _read(out / f"run.{fmt}", fmt)
    nodes, edges = pq.read_table(out / "nodes.parquet"), pq.read_table(out / "edges.parquet")
    _compare(G, nodes, edges, ["weight"])
    agents = pq.read_table(folders["run"] / "agents").sort_by("id")
    assert nodes["price_good1"].to_pylist() == agents["price_good1"].to_pylist()
    assert load_scenario("cobb-douglas").agents[0].name == ""  # unnamed: named by its index
    assert set(nodes["group"].to_pylist()) == {"0"}
    assert nodes["group_index"].to_pylist() == agents["group"].to_pylist()
    for g in ("holding", "endowment"):
        assert f"{g}_good0" in nodes.column_names
    # weight: the Metropolis mixing weight 1 / (1 + max(d_i, d_j))
    degree = dict(G.degree)
    for a, b, w in G.edges(data="weight"):
        assert w == pytest.approx(1.0 / (1.0 + max(degree[a], degree[b])), rel=1e-15)


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_trade_export_round_trips_with_volumes(folders, exported, fmt):
    out = exported / "trade"
    G = _read(out / f"trade.{fmt}", fmt)
    nodes, edges = pq.read_table(out / "nodes.parquet"), pq.read_table(out / "edges.parquet")
    _compare(G, nodes, edges, ["trades", "volume", "units_money", "units_grain"])
    assert edges.equals(pq.read_table(folders["trade"] / "edges.parquet"))
    want = {"group", "family", "role", "layer", "trades", "gross", "wealth", "holding_grain",
            "endowment_grain"}  # fmt: skip
    assert want <= set(G.nodes[5])
    assert G.nodes[0]["group"] == "producer" and G.nodes[0]["role"] == "producer"
    agents = pq.read_table(folders["trade"] / "trade_agents.parquet")
    assert nodes["gross"].to_pylist() == agents["gross"].to_pylist()
    trades = _json(folders["trade"] / "summary.json")["trades"]
    assert sum(d for *_, d in G.edges(data="trades")) == trades


def test_study_export_is_its_tables(folders, exported):
    out = exported / "study"
    assert sorted(p.name for p in out.iterdir()) == ["cells.parquet", "verdicts.parquet"]
    verdicts = pq.read_table(out / "verdicts.parquet")
    assert verdicts.equals(pacsv.read_csv(folders["study"] / "verdicts.csv"))


def test_network_to_networkx_carries_weights_and_node_attributes():
    net = build_network("small-world", 40, 3, k=4, p=0.2)
    G = net.to_networkx(nodes={"wealth": np.arange(40.0)})
    assert G.graph["kind"] == "small-world" and G.nodes[7]["wealth"] == 7.0
    for i in range(40):
        row = slice(net.indptr[i], net.indptr[i + 1])
        for j, w in zip(net.indices[row].tolist(), net.mixing[row].tolist(), strict=True):
            if j != i:
                assert G.edges[i, j]["weight"] == w


# ---- one spelling of each utility family ---------------------------------------------------
def test_family_labels_are_the_scenario_spelling():
    assert [Family(c).label for c in Family] == list(FAMILY_NAMES)
    assert all(Family.from_name(Family(c).label) == c for c in Family)
    assert family_labels(np.array([1, 3, 0, 2])) == ["cobb-douglas", "ces", "linear", "leontief"]


def test_every_writer_of_family_spells_it_the_same(folders, exported):
    names = set(FAMILY_NAMES)
    tables = {
        "agents/": pq.read_table(folders["run"] / "agents"),
        "trade_agents": pq.read_table(folders["trade"] / "trade_agents.parquet"),
        "run nodes": pq.read_table(exported / "run" / "nodes.parquet"),
        "trade nodes": pq.read_table(exported / "trade" / "nodes.parquet"),
    }
    for where, table in tables.items():
        assert set(table["family"].to_pylist()) <= names, where
    assert "cobb-douglas" in tables["agents/"]["family"].to_pylist()
    for path in [*exported.glob("*/*.graphml"), *exported.glob("*/*.gexf")]:
        assert "cobb_douglas" not in path.read_text(), path
