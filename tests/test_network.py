"""The agent network: generators, CSR structure, Metropolis mixing weights, files, errors."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tatonnet.environment.network import (
    GENERATORS,
    Network,
    NetworkError,
    build_network,
    from_edges,
    from_graph,
)

GRAPH_KINDS = [k for k in GENERATORS if k not in ("file", "central")]

# parameters small enough for the smallest n drawn below
PARAMS = {"small-world": {"k": 4, "p": 0.2}, "scale-free": {"m": 2}, "random-geometric": {"k": 8}}


def dense_mixing(net: Network) -> np.ndarray:
    return sp.csr_matrix((net.mixing, net.indices, net.indptr),
                         shape=(net.n_agents, net.n_agents)).toarray()  # fmt: skip


def edge_set(G: nx.Graph) -> set[tuple[int, int]]:
    return {(min(u, v), max(u, v)) for u, v in G.edges if u != v}


def check_network(net: Network, n: int) -> None:
    """Structural invariants every built network satisfies."""
    assert net.n_agents == n and not net.is_central
    indptr, indices = net.indptr, net.indices
    assert indptr.shape == (n + 1,) and indptr[0] == 0 and indptr[-1] == indices.size
    assert net.mixing.shape == indices.shape
    assert ((indices >= 0) & (indices < n)).all()
    for i in range(n):
        row = indices[indptr[i] : indptr[i + 1]]
        assert (np.diff(row) > 0).all(), f"row {i} not sorted/unique"
        assert i in row, f"row {i} lacks its self loop"
    G = net.to_networkx()
    assert G.number_of_nodes() == n
    assert nx.is_connected(G)
    assert net.n_edges == G.number_of_edges()
    np.testing.assert_array_equal(net.degrees, [G.degree(i) for i in range(n)])

    W = dense_mixing(net)
    np.testing.assert_array_equal(W, W.T)  # symmetric, exactly
    assert (W >= 0).all()
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    # Metropolis weights computed independently from the networkx degrees
    deg = np.array([G.degree(i) for i in range(n)])
    for u, v in G.edges:
        assert W[u, v] == pytest.approx(1.0 / (1.0 + max(deg[u], deg[v])), rel=1e-15)
    # no weight outside the closed neighbourhood
    A = nx.to_numpy_array(G, nodelist=range(n)) + np.eye(n)
    assert (W[A == 0] == 0).all()


@pytest.mark.parametrize("kind", GRAPH_KINDS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(12, 60), seed=st.integers(0, 2**31 - 1))
def test_generator_builds_connected_network(kind, n, seed):
    params = PARAMS.get(kind, {})
    try:
        net = build_network(kind, n, seed, **params)
    except NetworkError as exc:
        # a random geometric graph can come out disconnected: that must be a clean error
        assert kind == "random-geometric", exc
        assert "disconnected" in str(exc) and "\n" not in str(exc)
        return
    assert net.kind == kind
    check_network(net, n)


@pytest.mark.parametrize("kind", GRAPH_KINDS)
def test_generator_default_parameters_fixed_seed(kind):
    """Default parameters, fixed seed: builds, connected, reproducible.

    (seed 2: at n = 200 the default random-geometric k = 10 is disconnected for seeds
    0, 1, 3, 4, 5 -- a clean NetworkError, see the property test above.)"""
    n, seed = 200, 2
    net = build_network(kind, n, seed)
    check_network(net, n)
    again = build_network(kind, n, seed)
    for name in ("indptr", "indices", "mixing"):
        np.testing.assert_array_equal(getattr(net, name), getattr(again, name))


@pytest.mark.parametrize(
    ("kind", "n", "params", "n_edges", "degrees"),
    [
        ("complete", 7, {}, 21, {6}),
        ("ring", 9, {}, 9, {2}),
        ("ring", 2, {}, 1, {1}),
        ("grid", 9, {}, 12, {2, 3, 4}),  # 3x3 lattice
        ("grid", 12, {}, 17, {2, 3, 4}),  # 4 columns x 3 rows
        ("small-world", 40, {"k": 6, "p": 0.0}, 120, {6}),  # p = 0: the ring lattice
        ("small-world", 40, {"k": 6, "p": 0.3}, 120, None),  # rewiring keeps n k / 2 edges
        ("scale-free", 30, {"m": 3}, 3 * 27, None),  # networkx BA: m (n - m) edges
    ],
)
def test_generator_known_shape(kind, n, params, n_edges, degrees):
    net = build_network(kind, n, 0, **params)
    check_network(net, n)
    assert net.n_edges == n_edges
    if degrees is not None:
        assert set(net.degrees.tolist()) == degrees


def test_grid_is_the_near_square_lattice():
    """n = 10 → 4 columns, rows filled row-wise: 0-1-2-3 / 4-5-6-7 / 8-9."""
    G = build_network("grid", 10, 0).to_networkx()
    expected = {(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7), (8, 9),
                (0, 4), (1, 5), (2, 6), (3, 7), (4, 8), (5, 9)}  # fmt: skip
    assert edge_set(G) == expected


def test_central_is_not_a_graph():
    net = build_network("central", 50, 0)
    assert net.is_central and net.n_agents == 50 and net.n_edges == 0
    assert net.indptr is None and net.mixing is None
    G = net.to_networkx()
    assert G.number_of_nodes() == 50 and G.number_of_edges() == 0


# ---------------------------------------------------------------------------------------
# from_graph / to_networkx
# ---------------------------------------------------------------------------------------


@st.composite
def connected_graphs(draw):
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 2**31 - 1))
    p = draw(st.floats(0.05, 1.0))
    G = nx.gnp_random_graph(n, p, seed=seed)
    # connect the components with a chain of extra edges
    comps = [min(c) for c in nx.connected_components(G)]
    G.add_edges_from(zip(comps, comps[1:], strict=False))
    return G


@settings(max_examples=40, deadline=None)
@given(connected_graphs())
def test_to_networkx_round_trip(G):
    net = from_graph(G)
    check_network(net, G.number_of_nodes())
    H = net.to_networkx()
    assert sorted(H.nodes) == sorted(G.nodes)
    assert edge_set(H) == edge_set(G)
    # and back again: the identical CSR arrays
    again = from_graph(H)
    for name in ("indptr", "indices", "mixing"):
        np.testing.assert_array_equal(getattr(again, name), getattr(net, name))


def test_from_graph_relabels_in_node_order_and_ignores_self_loops():
    G = nx.Graph()
    G.add_nodes_from(["c", "a", "b"])  # order: c=0, a=1, b=2
    G.add_edges_from([("a", "b"), ("b", "c"), ("a", "a")])
    net = from_graph(G, kind="custom")
    assert net.kind == "custom"
    assert edge_set(net.to_networkx()) == {(1, 2), (0, 2)}
    np.testing.assert_array_equal(net.degrees, [1, 1, 2])
    np.testing.assert_array_equal(net.neighbors(2), [0, 1])


def test_from_graph_accepts_directed_graph():
    D = nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)])
    net = from_graph(D)
    assert edge_set(net.to_networkx()) == {(0, 1), (1, 2), (0, 2)}


def test_from_edges_ignores_duplicates():
    net = from_edges(np.array([[0, 1], [1, 0], [0, 1], [1, 2]]), 3, "custom")
    check_network(net, 3)
    assert net.n_edges == 2


def test_disconnected_graph_raises_one_line_error():
    G = nx.Graph([(0, 1), (2, 3), (3, 4)])
    with pytest.raises(NetworkError, match=r"disconnected \(2 components\)") as info:
        from_graph(G)
    assert "\n" not in str(info.value)


def test_isolated_node_is_disconnected():
    G = nx.path_graph(4)
    G.add_node(99)
    with pytest.raises(NetworkError, match="disconnected"):
        from_graph(G)


def test_empty_graph_raises():
    with pytest.raises(NetworkError, match="no nodes"):
        from_graph(nx.Graph())


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def _file_order_edges(lines, delimiter=None):
    """Edges with nodes numbered in order of first appearance in the file (independent of
    networkx), which is how the network labels a file's nodes."""
    index: dict[str, int] = {}
    edges = set()
    for line in lines:
        u, v = (t.strip() for t in line.split(delimiter)[:2])
        for t in (u, v):
            index.setdefault(t, len(index))
        edges.add((min(index[u], index[v]), max(index[u], index[v])))
    return index, edges


FILE_GRAPH = nx.connected_watts_strogatz_graph(30, 4, 0.3, seed=7)
FILE_LINES = [f"n{u} n{v}" for u, v in FILE_GRAPH.edges]


@pytest.mark.parametrize("suffix", [".txt", ".edges", ".csv"])
def test_file_edge_list(tmp_path, suffix):
    delim = "," if suffix == ".csv" else None
    lines = [ln.replace(" ", ",") for ln in FILE_LINES] if delim else FILE_LINES
    path = tmp_path / f"graph{suffix}"
    path.write_text("\n".join(lines) + "\n")
    net = build_network("file", 0, 0, path=str(path))
    index, edges = _file_order_edges(lines, delim)
    assert net.kind == "file"
    check_network(net, len(index))
    assert net.n_agents == FILE_GRAPH.number_of_nodes()
    assert edge_set(net.to_networkx()) == edges


def test_file_graphml(tmp_path):
    G = nx.relabel_nodes(FILE_GRAPH, {i: f"agent{i}" for i in FILE_GRAPH})
    path = tmp_path / "graph.graphml"
    nx.write_graphml(G, path)
    net = build_network("file", 0, 0, path=path)
    # GraphML keeps the node order of the written graph
    order = {node: i for i, node in enumerate(G.nodes)}
    check_network(net, G.number_of_nodes())
    assert edge_set(net.to_networkx()) == {
        (min(order[u], order[v]), max(order[u], order[v])) for u, v in G.edges
    }


def test_file_csv_suffix_case_insensitive(tmp_path):
    path = tmp_path / "graph.CSV"
    path.write_text("a,b\nb,c\nc,a\n")
    net = build_network("file", 0, 0, path=path)
    assert net.n_agents == 3 and net.n_edges == 3


def test_file_disconnected_raises(tmp_path):
    path = tmp_path / "two.txt"
    path.write_text("a b\nc d\n")
    with pytest.raises(NetworkError, match="disconnected"):
        build_network("file", 0, 0, path=path)


def test_file_errors_are_one_line(tmp_path):
    with pytest.raises(NetworkError, match="needs a path"):
        build_network("file", 10, 0)
    with pytest.raises(NetworkError, match="no such file"):
        build_network("file", 10, 0, path=tmp_path / "missing.txt")
    bad = tmp_path / "bad.graphml"
    bad.write_text("<graphml><not closed\n")
    with pytest.raises(NetworkError, match="cannot read") as info:
        build_network("file", 10, 0, path=bad)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# Bad parameters
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "n", "params", "match"),
    [
        ("hypercube", 10, {}, "unknown"),
        ("ring", 1, {}, "at least 2"),
        ("complete", 0, {}, "at least 2"),
        ("small-world", 20, {"k": 20}, "network.k"),  # k == n
        ("small-world", 20, {"k": 30}, "network.k"),  # k > n
        ("small-world", 20, {"k": 0}, "network.k"),
        ("small-world", 20, {"k": 4, "p": 1.5}, "network.p"),
        ("small-world", 20, {"k": 4, "p": -0.1}, "network.p"),
        ("small-world", 20, {"k": 4, "p": float("nan")}, "network.p"),
        ("scale-free", 20, {"m": 0}, "network.m"),
        ("scale-free", 20, {"m": 20}, "network.m"),
        ("random-geometric", 20, {"k": 0}, "network.k"),
        ("random-geometric", 20, {"k": 25}, "network.k"),
    ],
)
def test_bad_parameters_raise(kind, n, params, match):
    with pytest.raises(NetworkError, match=match) as info:
        build_network(kind, n, 0, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("k", [3, 5])
def test_small_world_odd_k_raises(k):
    with pytest.raises(NetworkError, match="network.k"):
        build_network("small-world", 20, 0, k=k, p=0.1)
