"""What crossed every edge: the per-edge accounts a trade run keeps instead of a trade log.

A run of ``T`` rounds on ``n`` agents makes up to ``T n / 2`` meetings; keeping them all
(the trade log, 11 floats a meeting) costs far more than the state (a 10^6-agent run of 50
rounds: 2.2 GB of log against 160 MB of holdings and flows). The measurements of
:mod:`tatonnet.environment.trade.flows` need less: for every undirected edge, how many
trades it carried and how many units of each good went each way. The engines accumulate
exactly that, in :meth:`~tatonnet.environment.network.Network.edge_list` order, and a
sharded run's shards each hold a contiguous slice of it (the edges whose smaller end they
own), so gathering is a concatenation in shard order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tatonnet.environment.network import Network


@dataclasses.dataclass(frozen=True, eq=False)
class EdgeFlows:
    """Accumulated trade on every undirected edge, ``source < target``, by source then target.

    source, target : (m,) int64 — the edge (as :meth:`Network.edge_list`);
    trades : (m,) int64 — executed trades along it;
    forward : (m, g) float64 — units of each good moved ``source -> target``;
    backward : (m, g) float64 — units of each good moved ``target -> source``.
    """

    source: np.ndarray
    target: np.ndarray
    trades: np.ndarray
    forward: np.ndarray
    backward: np.ndarray

    @classmethod
    def zeros(cls, network: Network, n_goods: int) -> EdgeFlows:
        source, target, _ = network.edge_list()
        m = source.size
        return cls(source, target, np.zeros(m, dtype=np.int64), np.zeros((m, n_goods)),
                   np.zeros((m, n_goods)))  # fmt: skip

    @property
    def n_goods(self) -> int:
        return self.forward.shape[1]

    def agent_trades(self, n_agents: int) -> np.ndarray:
        """Executed trades each agent was a party to, (n_agents,) int64."""
        return np.bincount(self.source, weights=self.trades, minlength=n_agents).astype(
            np.int64
        ) + np.bincount(self.target, weights=self.trades, minlength=n_agents).astype(np.int64)

    def equal(self, other: EdgeFlows) -> bool:
        """Bit-for-bit equality of every array."""
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self)
        )

