"""Partitioning the agent graph: a worker-count-independent ordering, cut into contiguous shards.

Results must be bit-identical whatever the number of workers, so agents' global ids (and
with them the order in which every sum is taken) cannot depend on it. tatonnet therefore
partitions in two steps:

1. :func:`tatonnet.environment.ordering.locality_order` — once per network, independent of the worker count: a
   permutation of the agents that keeps neighbours close in id: the generator's own order
   or reverse Cuthill–McKee (scipy), whichever cuts fewer edges over contiguous splits
   into 2, 4, 8 and 16 parts (METIS was tried and dropped: not reproducible, see
   :mod:`tatonnet.environment.ordering`).
   :func:`tatonnet.environment.ordering.reorder` relabels the network accordingly.
2. :func:`shard_ranges` — per run: ``K`` contiguous ranges of global ids, cut at
   reduction-block boundaries (:data:`tatonnet.environment.tatonnement.kernel.BLOCK`), so that every block's
   partial sums are computed inside one shard in global-id order.

For a Watts–Strogatz graph the generator's ring order is already optimal (its cut is the
rewired edges that cross); RCM wins on spatial graphs and on files in random node order.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from tatonnet.environment.network import Network
from tatonnet.environment.ordering import edge_list
from tatonnet.environment.tatonnement import kernel


@dataclasses.dataclass(frozen=True)
class Partition:
    """``K`` contiguous shards of a network (after :func:`reorder`).

    ``ranges[k] = (start, stop)``: shard ``k`` owns global ids ``start..stop-1``.
    ``edge_cut``: undirected edges whose ends lie in different shards.
    """

    ranges: tuple[tuple[int, int], ...]
    edge_cut: int
    n_edges: int
    seconds: float

    @property
    def n_shards(self) -> int:
        return len(self.ranges)

    def owner(self, ids: np.ndarray) -> np.ndarray:
        starts = np.array([r[0] for r in self.ranges])
        return np.searchsorted(starts, ids, side="right") - 1


def shard_ranges(n_agents: int, n_shards: int) -> tuple[tuple[int, int], ...]:
    """``n_shards`` contiguous id ranges cut at multiples of ``kernel.BLOCK``, balanced.

    Raises ValueError if there are fewer reduction blocks than shards.
    """
    n_blocks = kernel.n_blocks(n_agents)
    if n_shards > n_blocks:
        raise ValueError(
            f"--workers {n_shards}: {n_agents} agents make only {n_blocks} blocks of "
            f"{kernel.BLOCK}; use at most {n_blocks} workers"
        )
    cuts = [(k * n_blocks) // n_shards * kernel.BLOCK for k in range(n_shards + 1)]
    cuts[-1] = n_agents
    return tuple((cuts[k], min(cuts[k + 1], n_agents)) for k in range(n_shards))


def partition(network: Network, n_shards: int) -> Partition:
    """Cut an (already :func:`reorder`-ed) network into ``n_shards`` contiguous shards."""
    t0 = time.perf_counter()
    ranges = shard_ranges(network.n_agents, n_shards)
    starts = np.array([r[0] for r in ranges])
    src, dst = edge_list(network)
    owner = lambda ids: np.searchsorted(starts, ids, side="right") - 1  # noqa: E731
    cut = int((owner(src) != owner(dst)).sum())
    return Partition(ranges, cut, int(src.size), time.perf_counter() - t0)
