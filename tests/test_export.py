"""Exports of a run folder round-trip: networkx reads GraphML/GEXF back, pyarrow the Parquet."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tatonnet.cli import run
from tatonnet.environment.scenario import build_network_for
from tatonnet.results.export import ExportError, export_run, node_table, open_run, to_networkx


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished cobb-douglas run (250 agents, 60 rounds, in-process) written by run.py."""
    out = tmp_path_factory.mktemp("export") / "cd"
    argv = ["--scenario", "cobb-douglas", "--agents", "250", "--rounds", "60", "--seed", "3",
            "--workers", "0", "--out", str(out), "--quiet", "--no-reference"]  # fmt: skip
    assert run.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    export_run(open_run(run_dir), out)
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-15, abs_tol=0.0) or (
            math.isnan(float(a)) and math.isnan(float(b))
        )
    return a == b


def test_run_folder_stores_the_network_edges(run_dir):
    r = open_run(run_dir)
    rebuilt = build_network_for(r.scenario)
    e = r.edges()
    assert e.shape == (rebuilt.n_edges, 2) and (e[:, 0] < e[:, 1]).all()
    for i in (0, 17, 249):
        assert r.neighbours(i).tolist() == sorted(rebuilt.neighbors(i).tolist())


def test_node_attributes_are_consistent(run_dir):
    """Holdings rebuilt from the scenario reproduce the stored wealth p_i . e_i exactly."""
    r = open_run(run_dir)
    t = node_table(r)
    goods = r.goods
    p = r.prices()
    holdings = np.column_stack([t[f"holding_{g}"].to_numpy() for g in goods])
    np.testing.assert_allclose(np.einsum("ij,ij->i", p, holdings), t["wealth"].to_numpy(),
                               rtol=1e-12)  # fmt: skip
    u = t["utility"].to_numpy()
    assert np.isfinite(u).all() and (u > 0).all()
    assert t["id"].to_pylist() == list(range(250))


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_graph_formats_round_trip(run_dir, exported, fmt):
    G = to_networkx(open_run(run_dir))
    path = exported / f"cd.{fmt}"
    H = (
        nx.read_graphml(path, node_type=int)
        if fmt == "graphml"
        else nx.read_gexf(path, node_type=int)
    )
    assert set(H.nodes) == set(G.nodes) == set(range(250))
    assert {frozenset(e) for e in H.edges} == {frozenset(e) for e in G.edges}
    assert H.number_of_edges() == G.number_of_edges() > 250
    expected_keys = {"group", "family", "wealth", "utility", "price_good0", "holding_good3"}
    for node in (0, 42, 249):
        got = {k: v for k, v in H.nodes[node].items() if k != "label"}  # gexf adds a label
        assert expected_keys <= set(got)
        assert set(got) == set(G.nodes[node])
        for key, value in G.nodes[node].items():
            assert _same(got[key], value), (fmt, node, key, got[key], value)


def test_parquet_exports_read_back(run_dir, exported):
    r = open_run(run_dir)
    nodes = pq.read_table(exported / "nodes.parquet")
    edges = pq.read_table(exported / "edges.parquet")
    metrics = pq.read_table(exported / "metrics.parquet")
    assert nodes.num_rows == 250 and "utility" in nodes.column_names
    assert nodes.equals(node_table(r))
    assert edges.num_rows == r.edges().shape[0]
    assert metrics.num_rows == r.summary["rounds"] + 1
    assert metrics["round"].to_pylist() == list(range(r.summary["rounds"] + 1))


def test_not_a_run_folder_is_refused(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        open_run(tmp_path / "nope")
    with pytest.raises(ExportError, match="not a finished tatonnet run folder"):
        open_run(tmp_path)


def test_unknown_format_is_refused(run_dir, tmp_path):
    with pytest.raises(ExportError, match="--format"):
        export_run(open_run(run_dir), tmp_path, ["csv"])
