"""One shard's part of a shard-built economy, in the three steps of :mod:`.assemble`.

:class:`ShardBuilder` is a plain class: the sharded engine runs one inside every shard
(in-process or in a Ray actor) and moves only boundary data between the steps;
:func:`build_in_process` runs all of them in one process (tests, and the whole economy
for the in-process engine: :func:`build_whole`). Any number of shards builds the same
rows, bit for bit (``tests/test_shard_build.py``).

Scenario ``builder = "shards"`` (see ``docs/02-scenarios.md``): agents from
:mod:`.agents`, graph rows from :mod:`.graphs` (or, for ``network.kind = "file"``, from the
shard's slice of a Parquet edge list: :mod:`.edge_file`), ids in the generator's (or the
file's) locality order (no global reordering pass).

Errors a shard finds in its slice of a file travel in its step-2 report, and
:func:`check_reports` raises the first one (in shard order) on the driver, so the message
is one line in-process and on Ray alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tatonnet.environment.build import assemble, edge_file
from tatonnet.environment.build.agents import (
    AgentRows,
    agent_rows,
    initial_price_rows,
)
from tatonnet.environment.build.graphs import decided_edges
from tatonnet.environment.economy import Economy, block_sums
from tatonnet.environment.network import Network, NetworkError, sorted_unique
from tatonnet.environment.tatonnement.kernel import sum_blocks

#: Kinds whose generator keeps the ring or lattice, so no connectivity check is needed.
CONNECTED_BY_CONSTRUCTION = ("ring", "grid", "small-world", "scale-free", "central")


@dataclasses.dataclass(frozen=True, eq=False)
class ShardRows:
    """A built shard (``o`` own agents, ``h`` ghosts, ``g`` goods).

    indptr (o+1,), indices (nnz,) int32 local rows (own ``0..o-1``, ghosts ``o..o+h-1``),
    mixing (nnz,); ghost_ids (h,) sorted global ids; recv {src shard: (m,) ghost
    positions}; send {dst shard: (m,) own local rows}; agents: :class:`AgentRows`;
    inv_scale (o, g) (None when not asked for); prices: initial prices (g,) or (o, g). Central scenarios have no
    graph: ``indptr`` etc. are a diagonal and ``inv_scale`` ones.
    """

    start: int
    stop: int
    indptr: np.ndarray
    indices: np.ndarray
    mixing: np.ndarray
    ghost_ids: np.ndarray
    recv: dict
    send: dict
    agents: AgentRows
    inv_scale: np.ndarray
    prices: np.ndarray


class ShardBuilder:
    """Builds shard ``k`` of ``ranges`` (block-aligned id ranges) of ``scenario``.

    Call :meth:`decide`, then :meth:`rows` with every edge part addressed to this shard,
    then :meth:`finish` with the global supply and the ghost data addressed to it.
    """

    def __init__(self, scenario, ranges, k: int, signal: str = "tracking"):
        self.scenario, self.k, self.signal = scenario, int(k), signal
        self.ranges = [tuple(map(int, r)) for r in ranges]
        self.starts = np.array([r[0] for r in self.ranges])
        self.start, self.stop = self.ranges[self.k]
        self.n = scenario.n_agents
        self.central = scenario.network.kind == "central"
        self.error = None  # a one-line message: what was wrong with this shard's slice
        self.agents = agent_rows(scenario, self.start, self.stop)
        self.agents.validate()

    # step 1
    def decide(self) -> dict[int, np.ndarray]:
        """Edges this shard's rows decide, for every shard (its own included): {d: (us, vs)}.

        For a ``file`` network, the edges of this shard's slice of the file (shard ``k`` of
        ``K`` reads slice ``k`` of ``K``, :mod:`.edge_file`); a problem with the slice is
        kept for the report (:meth:`rows`) and no edge is sent.
        """
        none = np.empty(0, dtype=np.int64)
        empty = {d: (none, none) for d in range(len(self.ranges))}
        if self.central:
            return empty
        sc = self.scenario
        if sc.network.kind == "file":
            try:
                us, vs = edge_file.decided_edges(sc.network.path, self.n, self.k, len(self.ranges))
            except NetworkError as exc:
                self.error = str(exc)
                return empty
        else:
            us, vs = decided_edges(
                sc.network.kind, self.n, sc.graph_seed, sc.network.params(), self.start, self.stop
            )
        return {**empty, **assemble.route_edges(us, vs, self.starts)}

    # step 2
    def rows(self, edge_parts) -> dict:
        """Own CSR rows from the edges addressed here; returns the boundary report:

        ``supply_blocks`` (b, g), ``components`` (count), ``ghost_labels`` {src: labels of
        the ghosts it owns}, ``send_labels`` {dst: labels of the rows it reads},
        ``ghost_data`` {dst: (degrees, endowments) of the rows it reads}, ``nnz``,
        ``cut_entries`` (adjacency entries to other shards), ``send_rows`` {dst: count},
        ``isolated`` (the first own id with no edge, or -1), ``error`` (what was wrong with
        this shard's slice of a file, one line, or None).
        """
        o = self.stop - self.start
        report = {"supply_blocks": block_sums(self.agents.endowments, self.start)}
        report["error"] = self.error
        if self.central:
            self.indptr = np.arange(o + 1, dtype=np.int64)
            self.cols = np.arange(self.start, self.stop, dtype=np.int64)
        else:
            self.indptr, self.cols = assemble.own_csr(self.start, self.stop, edge_parts)
        self.ghosts = assemble.ghost_ids(self.start, self.stop, self.cols)
        self.local = assemble.local_columns(self.start, self.stop, self.cols, self.ghosts)
        del self.cols
        self.send = self._send_sets()
        owners = assemble.owner_of(self.ghosts, self.starts)
        self.recv = {int(s): np.flatnonzero(owners == s) for s in _present(owners)}
        self.degree = np.diff(self.indptr) - 1
        report["isolated"] = -1
        if not self.central and o and self.degree.min() == 0:
            report["isolated"] = self.start + int(np.argmin(self.degree))
        if self.scenario.network.kind in CONNECTED_BY_CONSTRUCTION:
            count, labels = 1, np.zeros(o + self.ghosts.size, dtype=np.int32)
        else:
            count, labels = assemble.local_components(self.indptr, self.local,
                                                      o + self.ghosts.size)  # fmt: skip
        report["components"] = int(count)
        report["nnz"] = int(self.indptr[-1])
        report["cut_entries"] = int((self.local >= o).sum())  # entries pointing to ghosts
        report["send_rows"] = {d: int(rows.size) for d, rows in self.send.items()}
        report["ghost_labels"] = {s: labels[o + pos] for s, pos in self.recv.items()}
        report["send_labels"] = {d: labels[rows] for d, rows in self.send.items()}
        report["ghost_data"] = {
            d: (self.degree[rows], self.agents.endowments[rows]) for d, rows in self.send.items()
        }
        return report

    def _send_sets(self) -> dict[int, np.ndarray]:
        o = self.stop - self.start
        rows = np.repeat(np.arange(o), np.diff(self.indptr))
        ghost_cols = self.local >= o
        owners = assemble.owner_of(self.ghosts[self.local[ghost_cols] - o], self.starts)
        rows = rows[ghost_cols]
        return {d: sorted_unique(rows[owners == d]) for d in _present(owners)}

    # step 3
    def finish(self, supply: np.ndarray, ghost_data: dict, scale: bool = True) -> ShardRows:
        """Weights and signal scale from the ghosts' degrees and endowments (by source);
        ``scale=False`` leaves ``inv_scale`` None (the in-process dynamics computes it)."""
        o, g = self.stop - self.start, self.agents.endowments.shape[1]
        degree = np.empty(o + self.ghosts.size, dtype=np.int64)
        endow = np.empty((o + self.ghosts.size, g))
        degree[:o], endow[:o] = self.degree, self.agents.endowments
        for s, positions in self.recv.items():
            d_s, e_s = ghost_data[s]
            degree[o + positions], endow[o + positions] = d_s, e_s
        if self.central:
            mixing = np.ones(o)
            inv_scale = np.ones((o, g)) if scale else None
        else:
            mixing = assemble.metropolis_weights(self.indptr, self.local, degree)
            inv_scale = None
            if scale:
                inv_scale = assemble.signal_scale(
                    self.indptr, self.local, endow, self.signal == "tracking", supply / self.n
                )
        return ShardRows(
            self.start, self.stop, self.indptr, self.local, mixing, self.ghosts,
            self.recv, self.send, self.agents, inv_scale,
            initial_price_rows(self.scenario, self.start, self.stop),
        )  # fmt: skip


def _present(owners: np.ndarray) -> list[int]:
    """The distinct shard numbers in ``owners``, ascending."""
    return np.flatnonzero(np.bincount(owners)).tolist() if owners.size else []


def reduce_supply(reports) -> np.ndarray:
    """The economy's supply from every shard's per-block sums, in block order."""
    return sum_blocks(np.concatenate([r["supply_blocks"] for r in reports]))


def check_reports(scenario, reports, supply: np.ndarray) -> None:
    """Raise if a shard's slice of a file was bad, a good has no owner, an agent of a file
    network has no edge or the graph is disconnected (one-line errors)."""
    errors = [r["error"] for r in reports if r.get("error")]
    if errors:
        raise NetworkError(errors[0])
    if (supply <= 0).any():
        raise ValueError(f"endowments: nobody owns good {int(np.argmin(supply))}")
    if scenario.network.kind == "central":
        return
    lonely = [r["isolated"] for r in reports if r.get("isolated", -1) >= 0]
    if lonely and scenario.network.kind == "file":
        raise NetworkError(
            f"network: the graph is disconnected: agent {lonely[0]} has no edge in "
            f"{str(scenario.network.path)!r} (the file's ids are the agents "
            f"0..{scenario.n_agents - 1}, each with an edge)"
        )
    links = [
        (k, rep["ghost_labels"][d], d, reports[d]["send_labels"][k])
        for k, rep in enumerate(reports)
        for d in rep["ghost_labels"]
    ]
    parts = assemble.merge_components([r["components"] for r in reports], links)
    if parts > 1:
        raise NetworkError(
            f"network: the graph is disconnected ({parts} components); prices can only "
            "agree on a connected graph"
            + _connect_hint(scenario)
        )


def _connect_hint(scenario) -> str:
    net = scenario.network
    if net.kind != "random-geometric":
        return ""
    n, k = scenario.n_agents, net.k or 10
    return (
        f" (random geometric, k={k:g}, n={n}: connectivity needs about k > "
        f"{2 * np.log(n):.0f}; raise k or change the seed)"
    )


def build_in_process(scenario, ranges, signal: str = "tracking",
                     scale: bool = True) -> list[ShardRows]:  # fmt: skip
    """Every shard of ``ranges``, built in this process through the same three steps."""
    builders = [ShardBuilder(scenario, ranges, k, signal) for k in range(len(ranges))]
    decided = [b.decide() for b in builders]
    reports = [b.rows([decided[s][k] for s in range(len(ranges))])
               for k, b in enumerate(builders)]  # fmt: skip
    supply = reduce_supply(reports)
    check_reports(scenario, reports, supply)
    return [
        b.finish(supply, {s: reports[s]["ghost_data"][k] for s in b.recv}, scale)
        for k, b in enumerate(builders)
    ]


def build_whole(scenario, signal: str = "tracking"):
    """The whole shard-built economy in this process: ``(economy, group, network, prices)``.

    The same arrays as any number of shards build (one shard, no ghosts).
    """
    (rows,) = build_in_process(scenario, [(0, scenario.n_agents)], signal, scale=False)
    a = rows.agents
    economy = Economy(
        a.endowments, a.shares, a.family, a.sigma, scenario.numeraire, scenario.good_names,
        block_supply=True,
    )  # fmt: skip
    if scenario.network.kind == "central":
        network = Network.central(scenario.n_agents)
    else:
        network = Network(
            scenario.network.kind, scenario.n_agents, rows.indptr, rows.indices, rows.mixing
        )
    return economy, a.group, network, rows.prices
