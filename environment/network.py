"""The agent network: networkx generators and files in, one sparse (CSR) adjacency out.

Agents are the integers ``0..n-1`` (stable global ids). A :class:`Network` holds the
closed-neighbourhood CSR structure (every agent is its own neighbour) with two weight
sets: symmetric Metropolis–Hastings mixing weights (doubly stochastic, used for consensus)
and plain ones (for neighbourhood sums).

``central`` is not a graph: it is the classic single Walrasian auctioneer and is
represented by ``Network.central()`` with no adjacency.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np

from tatonnet.environment.errors import first_line

if TYPE_CHECKING:  # pyarrow is imported where a Parquet file is read
    import pyarrow.parquet as pq

GENERATORS = (
    "complete",
    "ring",
    "grid",
    "small-world",
    "scale-free",
    "random-geometric",
    "file",
    "central",
)


class NetworkError(ValueError):
    """The network specification is invalid (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Network:
    """Closed-neighbourhood adjacency of ``n_agents`` agents in CSR form.

    Attributes
    ----------
    kind : str
        Generator name (one of :data:`GENERATORS`).
    n_agents : int
    indptr : (n_agents + 1,) int64
    indices : (nnz,) int32 — neighbours of ``i`` are ``indices[indptr[i]:indptr[i+1]]``,
        sorted, and include ``i`` itself.
    mixing : (nnz,) float64 — Metropolis weights ``W_ij = 1 / (1 + max(d_i, d_j))`` for
        ``j != i`` and ``W_ii = 1 - sum_j W_ij``: symmetric and doubly stochastic.
    """

    kind: str
    n_agents: int
    indptr: np.ndarray | None
    indices: np.ndarray | None
    mixing: np.ndarray | None

    @classmethod
    def central(cls, n_agents: int) -> Network:
        return cls("central", n_agents, None, None, None)

    @property
    def is_central(self) -> bool:
        return self.indptr is None

    @property
    def degrees(self) -> np.ndarray:
        """Number of neighbours of each agent, itself excluded; (n_agents,)."""
        return np.diff(self.indptr) - 1

    @property
    def n_edges(self) -> int:
        return 0 if self.is_central else int((self.indices.size - self.n_agents) // 2)

    def neighbors(self, i: int) -> np.ndarray:
        """Neighbour ids of agent ``i``, itself excluded."""
        row = self.indices[self.indptr[i] : self.indptr[i + 1]]
        return row[row != i]

    def to_networkx(self, nodes=None, edges=None) -> nx.Graph:
        """The network as an undirected ``nx.Graph`` with its attributes.

        Graph attribute ``kind``; every edge ``(i, j)``, ``i < j``, carries ``weight``: its
        Metropolis mixing weight ``W_ij``. ``nodes`` maps attribute names to (n_agents,)
        sequences (row ``i`` is agent ``i``); ``edges`` maps names to (n_edges,) sequences in
        the order of :meth:`edge_list`. ``central`` gives the agents and no edges.
        """
        G = nx.Graph(kind=self.kind)
        columns = {k: _plain_list(v) for k, v in (nodes or {}).items()}
        G.add_nodes_from(
            (i, {k: v[i] for k, v in columns.items()}) for i in range(self.n_agents)
        )
        if not self.is_central:
            src, dst, weight = self.edge_list()
            extra = {k: _plain_list(v) for k, v in (edges or {}).items()}
            G.add_edges_from(
                (a, b, {"weight": w, **{k: v[e] for k, v in extra.items()}})
                for e, (a, b, w) in enumerate(
                    zip(src.tolist(), dst.tolist(), weight.tolist(), strict=True)
                )
            )
        return G

    def edge_list(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source, target, weight)`` of every undirected edge, source < target, by source
        then target; (n_edges,) each (int64, int64, float64 Metropolis weight)."""
        if self.is_central:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0)
        rows = np.repeat(np.arange(self.n_agents, dtype=np.int64), np.diff(self.indptr))
        keep = rows < self.indices
        return rows[keep], self.indices[keep].astype(np.int64), self.mixing[keep]


def _plain_list(values) -> list:
    """A column as a list of Python scalars (GraphML/GEXF writers need plain types)."""
    if hasattr(values, "to_pylist"):  # a pyarrow array or column
        return values.to_pylist()
    return np.asarray(values).tolist() if isinstance(values, np.ndarray) else list(values)


def from_graph(G: nx.Graph, kind: str = "custom") -> Network:
    """Convert a connected undirected graph to a :class:`Network` (nodes relabelled 0..n-1).

    Nodes keep the order in which ``G`` lists them.
    """
    n = G.number_of_nodes()
    if n == 0:
        raise NetworkError("network: the graph has no nodes")
    if G.is_directed():
        G = G.to_undirected()
    if not nx.is_connected(G):
        parts = nx.number_connected_components(G)
        raise NetworkError(
            f"network: the graph is disconnected ({parts} components); prices can only "
            "agree on a connected graph"
        )
    index = {node: i for i, node in enumerate(G.nodes)}
    edges = np.array([(index[a], index[b]) for a, b in G.edges if a != b], dtype=np.int64)
    edges = edges.reshape(-1, 2)
    return from_edges(edges, n, kind)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for integers by sort-and-compare.

    numpy 2.5's ``np.unique`` hashes integer arrays before sorting; on 10^7 int64 keys that
    took ~10 s here against ~0.15 s for a sort (measured), and the result is the same.
    """
    s = np.sort(values)
    if s.size == 0:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def from_edges(edges: np.ndarray, n_agents: int, kind: str) -> Network:
    """Build the CSR network from an (m, 2) array of undirected edges (duplicates ignored)."""
    self_loops = np.stack([np.arange(n_agents), np.arange(n_agents)], axis=1)
    both = np.concatenate([edges, edges[:, ::-1], self_loops])
    key = sorted_unique(both[:, 0] * n_agents + both[:, 1])
    rows, cols = np.divmod(key, n_agents)
    indptr = np.zeros(n_agents + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_agents), out=indptr[1:])
    degree = np.diff(indptr) - 1
    off = rows != cols
    weights = np.zeros(rows.size)
    weights[off] = 1.0 / (1.0 + np.maximum(degree[rows[off]], degree[cols[off]]))
    diag = 1.0 - np.bincount(rows, weights=weights, minlength=n_agents)
    weights[~off] = diag[rows[~off]]
    return Network(kind, n_agents, indptr, cols.astype(np.int32), weights)


def build_network(kind: str, n_agents: int, seed: int, **params) -> Network:
    """Build the network ``kind`` for ``n_agents`` agents.

    Parameters (by kind): ``small-world``: ``k`` (even mean degree, default 10), ``p``
    (rewiring probability, 0.1); ``scale-free``: ``m`` (edges per new node, 5);
    ``random-geometric``: ``k`` (expected mean degree, 10); ``grid``: a near-square
    2-D lattice of exactly ``n_agents`` nodes; ``file``: ``path`` to an edge list
    (``.txt``/``.edges``/``.csv``: two node labels a line; ``.parquet``: columns
    ``source``, ``target``, see :func:`open_edge_parquet`) or ``.graphml`` file.
    """
    if kind not in GENERATORS:
        raise NetworkError(f"network.kind: unknown {kind!r}; expected one of {list(GENERATORS)}")
    if kind == "central":
        return Network.central(n_agents)
    if kind == "file":
        G = _read_graph(params.get("path"))
        return from_graph(G, "file")
    if n_agents < 2:
        raise NetworkError(f"network: a {kind} network needs at least 2 agents, got {n_agents}")
    if kind == "complete":
        G = nx.complete_graph(n_agents)
    elif kind == "ring":
        G = nx.cycle_graph(n_agents)
    elif kind == "grid":
        G = _near_square_grid(n_agents)
    elif kind == "small-world":
        k, p = int(params.get("k", 10)), float(params.get("p", 0.1))
        if not (2 <= k < n_agents and k % 2 == 0 and k == params.get("k", 10)):
            raise NetworkError(
                f"network.k: expected an even integer 2 <= k < n_agents, got {params.get('k')}"
            )
        if not 0 <= p <= 1:
            raise NetworkError(f"network.p: expected a probability in [0, 1], got {p}")
        G = nx.connected_watts_strogatz_graph(n_agents, k, p, tries=100, seed=seed)
    elif kind == "scale-free":
        m = int(params.get("m", 5))
        if not 1 <= m < n_agents:
            raise NetworkError(f"network.m: expected 1 <= m < n_agents, got {m}")
        G = nx.barabasi_albert_graph(n_agents, m, seed=seed)
    else:  # random-geometric
        k = float(params.get("k", 10))
        if not 0 < k < n_agents:
            raise NetworkError(f"network.k: expected 0 < k < n_agents, got {k}")
        radius = math.sqrt(k / (math.pi * n_agents))
        G = nx.random_geometric_graph(n_agents, radius, seed=seed)
        if not nx.is_connected(G):
            raise NetworkError(
                f"network: this random geometric graph (k={k:g}, n={n_agents}) is disconnected; "
                f"raise k (connectivity needs about k > {2 * math.log(n_agents):.0f}) or change the seed"
            )
    return from_graph(G, kind)


def _near_square_grid(n: int) -> nx.Graph:
    """A 2-D lattice with exactly ``n`` nodes: the largest near-square grid, filled row-wise."""
    cols = math.ceil(math.sqrt(n))
    G = nx.Graph()
    G.add_nodes_from(range(n))
    for i in range(n):
        if (i + 1) % cols and i + 1 < n:
            G.add_edge(i, i + 1)
        if i + cols < n:
            G.add_edge(i, i + cols)
    return G


def _read_graph(path) -> nx.Graph:
    if not path:
        raise NetworkError("network.path: a 'file' network needs a path")
    path = Path(path)
    if not path.is_file():
        raise NetworkError(f"network.path: no such file {str(path)!r}")
    if path.suffix.lower() == ".parquet":
        return _read_parquet_graph(path)
    try:
        if path.suffix.lower() == ".graphml":
            return nx.read_graphml(path)
        return nx.read_edgelist(path, delimiter="," if path.suffix.lower() == ".csv" else None)
    except Exception as exc:  # networkx raises many types for malformed files
        first = first_line(exc)
        raise NetworkError(f"network.path: cannot read {str(path)!r}: {first}") from None


#: The columns of a Parquet edge list, one undirected edge a row.
EDGE_COLUMNS = ("source", "target")


def open_edge_parquet(path, integer_ids: bool = False) -> pq.ParquetFile:
    """Open the Parquet edge list ``path`` and check its schema (the footer only).

    The file holds one edge a row in the columns ``source`` and ``target`` (other columns
    are ignored), both integers or both strings (``integer_ids``: integers only). Returns
    the ``pyarrow.parquet.ParquetFile``; raises :class:`NetworkError` (one line).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    shown = repr(str(path))
    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... for a bad file
        raise NetworkError(f"network.path: cannot read {shown}: {first_line(exc)}") from None
    kinds = []
    for name in EDGE_COLUMNS:
        if schema.get_field_index(name) < 0:
            raise NetworkError(
                f"network.path: {shown} has no column {name!r} (a Parquet edge list has the "
                f"columns {', '.join(EDGE_COLUMNS)}; it has {', '.join(schema.names) or 'none'})"
            )
        t = schema.field(name).type
        string = pa.types.is_string(t) or pa.types.is_large_string(t)
        if not (pa.types.is_integer(t) or (string and not integer_ids)):
            wanted = "integer agent ids 0..n-1" if integer_ids else "integer or string labels"
            raise NetworkError(
                f"network.path: {shown} column {name!r} holds {t}; expected {wanted}"
            )
        kinds.append(string)
    if kinds[0] != kinds[1]:
        raise NetworkError(
            f"network.path: {shown}: columns {' and '.join(EDGE_COLUMNS)} must both be "
            "integers or both strings (labels 1 and '1' would be different nodes)"
        )
    return file


def no_nulls(table, path) -> None:
    """Raise :class:`NetworkError` if a column of the edge ``table`` has a missing value."""
    for name in EDGE_COLUMNS:
        if table.column(name).null_count:
            raise NetworkError(
                f"network.path: {str(path)!r} column {name!r} has missing values; every row "
                "must be an edge"
            )


def _read_parquet_graph(path: Path) -> nx.Graph:
    """A Parquet edge list as a graph; nodes in order of first appearance, as
    ``networkx.read_edgelist`` lists a text edge list's nodes."""
    file = open_edge_parquet(path)
    try:
        table = file.read(columns=list(EDGE_COLUMNS))
    except Exception as exc:  # a damaged column chunk
        raise NetworkError(f"network.path: cannot read {str(path)!r}: {first_line(exc)}") from None
    no_nulls(table, path)
    G = nx.Graph()
    G.add_edges_from(
        zip(table.column("source").to_pylist(), table.column("target").to_pylist(), strict=True)
    )
    return G
