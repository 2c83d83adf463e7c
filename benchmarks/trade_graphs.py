"""Write the GraphML files of the trade scenarios (environment/scenarios/trade-*.graphml).

Node order is agent id order, and the scenarios' agent groups are laid out in that order
(``placement = "ordered"``, ``order = "generator"``), so the producers, traders and
consumers sit where each graph puts them:

* ``trade-line``: a path of 20 — producer 0, traders 1..18, consumer 19;
* ``trade-tree``: a balanced ternary tree of depth 4 (121 nodes, breadth-first ids) —
  producer at the root, traders inside, consumers at the 81 leaves;
* ``trade-core-periphery``: a core of 20 traders (G(20, 0.4) plus a ring), then 90
  producers and 90 consumers, each attached to one random core agent;
* ``trade-rgg``: a random geometric graph of 300 points in the unit square (radius 0.12),
  ids sorted by x: the left third produces ``grain``, the right third ``tools``.

Run: ``python benchmarks/trade_graphs.py`` (deterministic; seed 7).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "environment" / "scenarios"


def ordered(G: nx.Graph, order) -> nx.Graph:
    H = nx.Graph()
    H.add_nodes_from(range(len(order)))
    index = {v: i for i, v in enumerate(order)}
    H.add_edges_from((index[a], index[b]) for a, b in G.edges)
    return H


def main() -> None:
    rng = np.random.default_rng(7)
    graphs = {"trade-line": nx.path_graph(20), "trade-tree": nx.balanced_tree(3, 4)}
    core = nx.gnp_random_graph(20, 0.4, seed=7)
    core.add_edges_from((i, (i + 1) % 20) for i in range(20))
    for v in range(20, 200):
        core.add_edge(v, int(rng.integers(0, 20)))
    graphs["trade-core-periphery"] = core
    while True:
        G = nx.random_geometric_graph(300, 0.12, seed=int(rng.integers(1 << 30)))
        if nx.is_connected(G):
            break
    pos = nx.get_node_attributes(G, "pos")
    graphs["trade-rgg"] = ordered(G, sorted(G, key=lambda v: pos[v][0]))
    for name, G in graphs.items():
        H = ordered(G, sorted(G))
        nx.write_graphml(H, OUT / f"{name}.graphml")
        print(name, H.number_of_nodes(), H.number_of_edges())


if __name__ == "__main__":
    main()
