"""Parquet edge lists (``network.kind = "file"``, ``.parquet``) under both builders.

* ``builder = "shards"``: shard ``k`` of ``K`` reads only its slice of the file's rows
  (the row groups it overlaps); 1, 2, 3 and 4 shards build, bit for bit, the shard data the
  driver cuts from the whole build, and the built graph is the file's graph (self-loops,
  repeated and reversed rows count once);
* ``builder = "driver"`` reads the same file into the graph a text edge list of the same
  rows gives (nodes in order of first appearance, then the driver's locality order);
* every refusal is one line: at load time what the footer tells (suffix, file, columns,
  types, row count), at build time what the rows tell (missing values, ids outside
  ``0..n-1``, an agent with no edge, a disconnected graph), in-process and sharded alike;
* a shard-built run on a file is the same in the in-process kernel and in shards.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_shard_build import _equal, _spec_fields

from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.partition import shard_ranges
from tatonnet.distributed.shard import build_specs, spec_from_rows
from tatonnet.environment import sizing
from tatonnet.environment.build import edge_file
from tatonnet.environment.build.shard_rows import build_in_process
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import NetworkError, build_network
from tatonnet.environment.ordering import locality_order, reorder
from tatonnet.environment.scenario import (
    ScenarioError,
    build_market,
    build_network_for,
    load_scenario,
)
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import NetworkTatonnement

N = 4 * kernel.BLOCK + 300  # enough blocks for 4 shards, not a multiple of BLOCK
GROUP_ROWS = 4000  # rows per row group: the file has several, cut by every shard count


def _graph(n: int, seed: int = 5) -> np.ndarray:
    """(m, 2) undirected edges ``u < v`` of a connected local graph with a few long links:
    the ring, links to ``i + 2..i + 4`` at random, 300 uniform chords."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    parts = [np.stack([i, (i + 1) % n], axis=1)]
    for step in (2, 3, 4):
        keep = i[rng.random(n) < 0.3]
        parts.append(np.stack([keep, (keep + step) % n], axis=1))
    parts.append(rng.integers(0, n, (300, 2)))
    e = np.concatenate(parts)
    e = e[e[:, 0] != e[:, 1]]
    return np.unique(np.sort(e, axis=1), axis=0)


def _rows(edges: np.ndarray, seed: int = 6) -> np.ndarray:
    """The file's rows: every edge once, in a random direction, plus 200 repeats (half
    reversed) and 50 self-loops, in a random order."""
    rng = np.random.default_rng(seed)
    flip = rng.random(len(edges)) < 0.5
    rows = np.where(flip[:, None], edges[:, ::-1], edges)
    again = edges[rng.choice(len(edges), 200, replace=False)]
    again[:100] = again[:100, ::-1]
    loops = np.repeat(rng.integers(0, edges.max() + 1, 50)[:, None], 2, axis=1)
    rows = np.concatenate([rows, again, loops])
    return rows[rng.permutation(len(rows))]


def _write(path, source, target, row_group_size: int | None = None):
    pq.write_table(pa.table({"source": source, "target": target}), path,
                   row_group_size=row_group_size)  # fmt: skip
    return path


def _toml(folder, graph: str, n: int, builder: str = "shards", order: str = "locality"):
    """A scenario file of ``n`` agents on the graph file ``graph`` (relative to it)."""
    path = folder / f"on-{graph.replace('.', '-')}-{builder}.toml"
    path.write_text(f"""name = "file-graph"
seed = 7
goods = 3
builder = "{builder}"

[[agents]]
count = {n}
utility = "ces"
sigma = 2.0
shares = {{ distribution = "dirichlet", alpha = 1.0 }}
endowment = {{ distribution = "uniform", low = 0.5, high = 1.5 }}

[network]
kind = "file"
path = "{graph}"
order = "{order}"

[dynamics]
rounds = 40
initial_spread = 0.1
""")
    return path


@pytest.fixture(scope="module")
def edge_list(tmp_path_factory):
    """``(folder, edges, rows)``: ``graph.parquet`` (several row groups) and ``graph.txt``
    hold the same rows."""
    folder = tmp_path_factory.mktemp("files")
    edges = _graph(N)
    rows = _rows(edges)
    _write(folder / "graph.parquet", rows[:, 0], rows[:, 1], GROUP_ROWS)
    np.savetxt(folder / "graph.txt", rows, fmt="%d")
    return folder, edges, rows


@pytest.fixture(scope="module")
def shard_scenario(edge_list):
    return load_scenario(_toml(edge_list[0], "graph.parquet", N))


def _edge_set(us, vs) -> set[tuple[int, int]]:
    return set(zip(np.minimum(us, vs).tolist(), np.maximum(us, vs).tolist(), strict=True))


# ---- the shards builder ------------------------------------------------------------------


def test_the_file_has_row_groups_that_the_slices_cut(edge_list):
    meta = pq.ParquetFile(edge_list[0] / "graph.parquet").metadata
    assert meta.num_row_groups >= 5
    ends = np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    for k in (2, 3, 4):
        cuts = [edge_file.row_slice(meta.num_rows, j, k)[0] for j in range(1, k)]
        assert not set(cuts) & set(ends.tolist())  # every cut falls inside a row group


@pytest.mark.parametrize("n_slices", [1, 2, 3, 4, 7])
def test_each_slice_reads_only_its_row_groups_and_the_slices_make_the_graph(
    edge_list, n_slices, monkeypatch
):
    folder, edges, rows = edge_list
    path = folder / "graph.parquet"
    meta = pq.ParquetFile(path).metadata
    sizes = np.array([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    ends = np.cumsum(sizes)
    read = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *args, **kwargs):
        read.append(list(row_groups))
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    union = set()
    for k in range(n_slices):
        read.clear()
        us, vs = edge_file.decided_edges(path, N, k, n_slices)
        lo, hi = edge_file.row_slice(len(rows), k, n_slices)
        overlapping = [g for g in range(len(ends)) if ends[g] > lo and ends[g] - sizes[g] < hi]
        assert read == [overlapping], (k, n_slices)
        assert (us < vs).all() and us.dtype == vs.dtype == np.int64
        key = us * N + vs
        assert (np.diff(key) > 0).all()  # sorted, no repeats within the slice
        assert _edge_set(us, vs) == _edge_set(*rows[lo:hi].T) - {(i, i) for i in range(N)}
        union |= _edge_set(us, vs)
    assert union == _edge_set(*edges.T)


def test_any_shard_count_builds_the_driver_cut_of_the_whole_build(shard_scenario):
    sc = shard_scenario
    economy, group, network, prices = build_market(sc)
    rule = sc.dynamics.make_rule()
    inv_scale = NetworkTatonnement(economy, network, rule, "tracking").inv_scale
    for k in (1, 2, 3, 4):
        ranges = shard_ranges(sc.n_agents, k)
        rows = build_in_process(sc, ranges)
        expected = build_specs(economy, network, ranges, rule, inv_scale, True, group)
        for j, (r, want) in enumerate(zip(rows, expected, strict=True)):
            got = spec_from_rows(j, r, rule, True, sc.numeraire, sc.good_names)
            assert _equal(_spec_fields(got), _spec_fields(want)), (k, j)
            assert _equal(got.recv, want.recv) and _equal(got.send, want.send), (k, j)
            assert np.array_equal(r.prices, prices[r.start : r.stop])


def test_the_shard_built_graph_is_the_files_graph(shard_scenario, edge_list):
    _, _, network, _ = build_market(shard_scenario)
    src, dst, _ = network.edge_list()
    G = nx.Graph()
    G.add_edges_from(edge_list[2].tolist())
    G.remove_edges_from(nx.selfloop_edges(G))
    assert network.kind == "file" and network.n_agents == G.number_of_nodes() == N
    assert _edge_set(src, dst) == _edge_set(*np.array(G.edges).T)
    assert network.n_edges == G.number_of_edges() == len(edge_list[1])


def test_a_shard_built_run_on_a_file_is_the_same_in_the_kernel_and_in_shards(shard_scenario):
    sc = shard_scenario.with_overrides(rounds=8)
    model = MarketModel(sc, mesa_agents=False)
    rule = sc.dynamics.make_rule()
    engine = ShardEngine.from_scenario(sc, rule, sc.dynamics.signal, 2, use_ray=False)
    history = [(model.metrics, engine.initial_metrics())]
    for _ in range(8):
        model.step()
        history.append((model.metrics, engine.step()))
    for a, b in history:
        assert _equal([a.excess, a.mean_price, a.log_min, a.log_max],
                      [b.excess, b.mean_price, b.log_min, b.log_max])  # fmt: skip
    np.testing.assert_array_equal(engine.prices(), model.prices())
    first, last = (np.abs(history[t][0].excess).max() for t in (0, -1))
    assert np.isfinite(last) and last < first  # the prices moved towards equilibrium
    assert engine.partition.n_edges == model.network.n_edges
    assert engine.partition.edge_cut > 0  # the file's chords cross the shards


# ---- the driver builder ------------------------------------------------------------------


def test_the_driver_reads_a_parquet_file_as_it_reads_the_same_text_edge_list(edge_list):
    folder, edges, rows = edge_list
    parquet = build_network("file", 0, 0, path=folder / "graph.parquet")
    text = build_network("file", 0, 0, path=folder / "graph.txt")
    for name in ("indptr", "indices", "mixing"):
        assert np.array_equal(getattr(parquet, name), getattr(text, name)), name
    first = {}  # node labels numbered in order of first appearance, as networkx lists them
    for node in rows.reshape(-1).tolist():
        first.setdefault(node, len(first))
    src, dst, _ = parquet.edge_list()
    relabelled = np.array([first[u] for u in range(N)])[edges]
    assert _edge_set(src, dst) == _edge_set(*relabelled.T)


def test_the_driver_builder_puts_a_parquet_graph_in_its_locality_order(edge_list):
    folder = edge_list[0]
    plain = build_network_for(
        load_scenario(_toml(folder, "graph.parquet", N, "driver", order="generator"))
    )
    sc = load_scenario(_toml(folder, "graph.parquet", N, "driver"))
    ordered = build_network_for(sc)
    expected = reorder(plain, locality_order(plain, sc.graph_seed)[0])
    for name in ("indptr", "indices", "mixing"):
        assert np.array_equal(getattr(ordered, name), getattr(expected, name)), name


def test_the_driver_reads_string_labels(tmp_path):
    path = _write(tmp_path / "abc.parquet", ["a", "b", "c", "a"], ["b", "c", "a", "a"])
    net = build_network("file", 0, 0, path=path)
    assert net.n_agents == 3 and net.n_edges == 3


def test_the_parquet_size_estimate_counts_rows(edge_list):
    path = str(edge_list[0] / "graph.parquet")
    rows = len(edge_list[2])
    assert sizing.directed_edges("file", N, path=path) == 2 * rows + N


# ---- one-line refusals -------------------------------------------------------------------


def _ring(n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n)
    return i, (i + 1) % n


def _one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


LOAD_ERRORS = {
    # name: (file name, writer(path) or None, message)
    "not-parquet": ("ring.txt", lambda p: p.write_text("0 1\n1 2\n2 0\n"),
                    "not a Parquet edge list"),
    "missing": ("missing.parquet", None, "no such file"),
    "unreadable": ("junk.parquet", lambda p: p.write_bytes(b"not a parquet file"),
                   "cannot read"),
    "no-target": ("cols.parquet",
                  lambda p: pq.write_table(pa.table({"source": [0, 1], "to": [1, 2]}), p),
                  "no column 'target'"),
    "strings": ("names.parquet", lambda p: _write(p, ["0", "1", "2"], ["1", "2", "0"]),
                "holds string; expected integer agent ids"),
    "floats": ("floats.parquet", lambda p: _write(p, [0.0, 1.0, 2.0], [1.0, 2.0, 0.0]),
               "holds double; expected integer agent ids"),
    "too-few": ("short.parquet", lambda p: _write(p, [0, 1], [1, 2]),
                "has 2 rows (edges); a connected graph of 12 agents needs at least 11"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LOAD_ERRORS))
def test_what_the_footer_tells_is_refused_at_load_time(case, tmp_path):
    name, writer, message = LOAD_ERRORS[case]
    if writer is not None:
        writer(tmp_path / name)
    with pytest.raises(ScenarioError) as info:
        load_scenario(_toml(tmp_path, name, 12))
    assert message in _one_line(info)


BUILD_ERRORS = {
    # name: (source, target, message) for 12 agents
    "id-too-large": (_ring(12)[0], np.r_[_ring(12)[1][:-1], 12],
                     "column 'target' holds id 12, outside 0..11"),
    "negative-id": (np.r_[_ring(12)[0], -3], np.r_[_ring(12)[1], 4],
                    "column 'source' holds id -3, outside 0..11"),
    "missing-values": (pa.array([*range(12), None]), [*range(1, 12), 0, 3],
                       "column 'source' has missing values"),
    "no-edge": (*_ring(11), "agent 11 has no edge in"),
    "disconnected": (np.r_[_ring(6)[0], 6 + _ring(6)[0]], np.r_[_ring(6)[1], 6 + _ring(6)[1]],
                     "disconnected (2 components)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BUILD_ERRORS))
def test_what_the_rows_tell_is_refused_at_build_time(case, tmp_path):
    source, target, message = BUILD_ERRORS[case]
    _write(tmp_path / "g.parquet", source, target)
    sc = load_scenario(_toml(tmp_path, "g.parquet", 12))
    with pytest.raises(ScenarioError) as info:
        build_market(sc)
    assert message in _one_line(info)


def test_a_bad_row_in_one_shards_slice_is_one_line_on_the_driver(edge_list, tmp_path):
    rows = edge_list[2].copy()
    rows[-5, 1] = N  # only the last slice sees it
    _write(tmp_path / "bad.parquet", rows[:, 0], rows[:, 1], GROUP_ROWS)
    sc = load_scenario(_toml(tmp_path, "bad.parquet", N))
    rule = sc.dynamics.make_rule()
    with pytest.raises(NetworkError) as info:
        ShardEngine.from_scenario(sc, rule, "tracking", 3, use_ray=False)
    assert f"holds id {N}, outside 0..{N - 1}" in _one_line(info)


def test_the_driver_refuses_a_parquet_file_without_the_edge_columns_in_one_line(tmp_path):
    pq.write_table(pa.table({"from": [0, 1, 2], "to": [1, 2, 0]}), tmp_path / "g.parquet")
    sc = load_scenario(_toml(tmp_path, "g.parquet", 3, "driver"))
    with pytest.raises(ScenarioError) as info:
        build_market(sc)
    assert "has no column 'source'" in _one_line(info)
    pq.write_table(pa.table({"source": [0, 1, 2], "target": ["1", "2", "0"]}),
                   tmp_path / "g.parquet")  # fmt: skip
    with pytest.raises(ScenarioError) as info:
        build_market(sc)
    assert "must both be integers or both strings" in _one_line(info)
