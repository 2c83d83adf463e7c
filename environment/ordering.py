"""A worker-count-independent locality ordering of the agents (see distributed.partition).

Candidates: the generator's own order, a METIS recursive bisection (``pymetis``) into
``2^L`` hierarchically numbered parts, and reverse Cuthill–McKee (scipy). The one with the
smallest edge cut summed over contiguous splits into 2, 4, 8 and 16 parts wins.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from environment import kernel
from environment.network import Network, from_edges

CUT_PROBE = (2, 4, 8, 16)


def edge_list(network: Network) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(network.n_agents), np.diff(network.indptr))
    keep = rows < network.indices
    return rows[keep], network.indices[keep].astype(np.int64)


def _probe_cut(rank: np.ndarray, src: np.ndarray, dst: np.ndarray, n: int) -> int:
    total = 0
    for k in CUT_PROBE:
        part = rank * k // n
        total += int((part[src] != part[dst]).sum())
    return total


def _metis_order(network: Network, seed: int) -> np.ndarray | None:
    try:
        import pymetis
    except ImportError:  # pragma: no cover - pymetis is a dependency; fall back anyway
        return None
    n = network.n_agents
    rows = np.repeat(np.arange(n), np.diff(network.indptr))
    keep = network.indices != rows
    adjncy = network.indices[keep].astype(np.int32)
    xadj = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows[keep], minlength=n), out=xadj[1:])
    n_parts = 2 ** int(np.ceil(np.log2(max(2, min(64, n // kernel.BLOCK)))))
    if n_parts >= n:
        return None
    options = pymetis.Options(seed=seed % (2**31 - 1))
    _, parts = pymetis.part_graph(
        n_parts, pymetis.CSRAdjacency(xadj, adjncy), recursive=True, options=options
    )
    return np.argsort(np.asarray(parts), kind="stable")


def locality_order(network: Network, seed: int = 0) -> tuple[np.ndarray, str]:
    """A permutation ``order`` (new id ``i`` is old agent ``order[i]``) and its method name."""
    n = network.n_agents
    if network.is_central or n < 2:
        return np.arange(n), "identity"
    src, dst = edge_list(network)
    candidates = {"generator": np.arange(n)}
    metis = _metis_order(network, seed)
    if metis is not None:
        candidates["metis"] = metis
    adjacency = scipy.sparse.csr_array(
        (np.ones(network.indices.size), network.indices, network.indptr), shape=(n, n)
    )
    candidates["rcm"] = np.asarray(
        scipy.sparse.csgraph.reverse_cuthill_mckee(adjacency, symmetric_mode=True)
    )
    best, best_cut = "generator", None
    for name, order in candidates.items():
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        cut = _probe_cut(rank, src, dst, n)
        if best_cut is None or cut < best_cut:
            best, best_cut = name, cut
    return candidates[best], best


def reorder(network: Network, order: np.ndarray) -> Network:
    """The same graph with agent ``order[i]`` renamed ``i`` (CSR rows re-sorted by new id)."""
    if network.is_central:
        return network
    n = network.n_agents
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    src, dst = edge_list(network)
    edges = np.stack([rank[src], rank[dst]], axis=1)
    return from_edges(edges, n, network.kind)
