"""Drawing a market's network for the dashboard: which nodes, where, in which colour.

Pure functions of a :class:`tatonnet.environment.model.MarketModel` and a matplotlib ``Figure`` (no
Solara here), so that they can be tested and timed without a browser.

Above ``max_drawn`` agents (default :data:`MAX_DRAWN` = 2,000) the dashboard draws a
*sample*: the breadth-first neighbourhood of agent 0 (its neighbours, their neighbours, ...)
cut at ``max_drawn`` agents, with the edges among them. A connected ball shows how prices
spread along the network better than scattered random agents, whose induced subgraph on
a sparse graph has almost no edges. The network-mean prices are always over all agents.

The drawn nodes are laid out once per network (:func:`force_layout`: a force-directed
layout started from the spectral one) and the positions are reused for every step, and by
every browser session showing the same network (:func:`sample_network` keeps the last few).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import networkx as nx
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

#: Draw every agent up to this many; above, a breadth-first sample of this size.
MAX_DRAWN = 2_000
#: Colour scale is at least +-this log-price deviation (agreeing prices look neutral).
MIN_COLOUR_SPAN = 1e-6
#: Rounds of force refinement of the layout (cooling linearly to 0).
LAYOUT_ITERATIONS = 60
#: Laid-out samples kept for reuse (one per network / max_drawn / seed).
LAYOUTS_KEPT = 8


class DashboardError(ValueError):
    """Bad dashboard options (one-line message)."""


@dataclasses.dataclass(frozen=True)
class NetworkSample:
    """The drawn part of a network.

    Attributes
    ----------
    nodes : (m,) int64 — agent ids drawn (m <= max_drawn)
    edges : (k, 2) int64 — edges among them, as positions into ``nodes``
    positions : (m, 2) float64 — layout coordinates
    n_agents : int — agents in the whole economy
    how : str — "all agents" or how the sample was chosen
    """

    nodes: np.ndarray
    edges: np.ndarray
    positions: np.ndarray
    n_agents: int
    how: str
    cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        m = self.nodes.size
        if m == self.n_agents:
            return f"all {m:,} agents drawn"
        return f"{m:,} of {self.n_agents:,} agents drawn ({self.how})"


def bfs_sample(indptr: np.ndarray, indices: np.ndarray, start: int, size: int) -> np.ndarray:
    """The first ``size`` agents in breadth-first order from ``start`` on a CSR graph; sorted."""
    seen = np.zeros(indptr.size - 1, dtype=bool)
    seen[start] = True
    order, frontier = [start], [start]
    while frontier and len(order) < size:
        nxt = []
        for i in frontier:
            for j in indices[indptr[i] : indptr[i + 1]].tolist():
                if not seen[j]:
                    seen[j] = True
                    order.append(j)
                    nxt.append(j)
                    if len(order) == size:
                        return np.sort(np.array(order, dtype=np.int64))
        frontier = nxt
    return np.sort(np.array(order, dtype=np.int64))


def force_layout(
    edges: np.ndarray, start: np.ndarray, iterations: int = LAYOUT_ITERATIONS
) -> np.ndarray:
    """Fruchterman-Reingold force-directed layout from ``start``; (m, 2) in about [0, 1]^2.

    Parameters
    ----------
    edges : (k, 2) int — edges as positions into the nodes
    start : (m, 2) float — starting positions (rescaled to the unit square first)
    iterations : int — rounds of force updates; the step limit cools linearly to 0

    Notes
    -----
    With ``k = 1/sqrt(m)`` (the ideal edge length), every round moves node ``i`` by its
    displacement ``D_i = sum_j k^2 (x_i - x_j)/|x_i - x_j|^2 - sum_{j~i} |x_i - x_j| (x_i - x_j)/k``,
    capped at length ``t`` (0.1 falling to 0). Repulsion is counted only between nodes
    closer than ``2k`` (Fruchterman and Reingold's grid variant; pairs from a k-d tree),
    so a round costs about O(m + k) instead of O(m^2): ~0.02 s at 2,000 nodes.
    """
    from scipy.spatial import cKDTree

    m = start.shape[0]
    span = np.ptp(start, axis=0)
    pos = (start - start.min(axis=0)) / np.where(span > 0, span, 1.0)
    if m < 2:
        return pos
    k = 1.0 / np.sqrt(m)
    u, v = edges[:, 0], edges[:, 1]

    def total(index, force):  # sum of the force rows per node: (m, 2)
        return np.column_stack(
            [np.bincount(index, force[:, 0], m), np.bincount(index, force[:, 1], m)]
        )

    for it in range(iterations):
        limit = 0.1 * (1.0 - it / iterations)
        pairs = cKDTree(pos).query_pairs(2 * k, output_type="ndarray")
        a, b = pairs[:, 0], pairs[:, 1]
        d = pos[a] - pos[b]
        push = d * (k * k / np.maximum(np.einsum("ij,ij->i", d, d), 1e-12))[:, None]
        move = total(a, push) - total(b, push)
        d = pos[u] - pos[v]
        pull = d * (np.sqrt(np.einsum("ij,ij->i", d, d)) / k)[:, None]
        move += total(v, pull) - total(u, pull)
        length = np.sqrt(np.maximum(np.einsum("ij,ij->i", move, move), 1e-24))
        pos += move * (np.minimum(length, limit) / length)[:, None]
    return pos


_layouts: dict[tuple, NetworkSample] = {}
_layouts_lock = threading.Lock()


def sample_network(network, max_drawn: int = MAX_DRAWN, seed: int = 0) -> NetworkSample:
    """Choose the drawn agents of ``network`` and lay them out (once: the result is reused).

    Layout: :func:`force_layout` started from the spectral layout (which keeps the global
    shape: a ring stays a ring, a grid a grid) plus a seeded jitter of 1e-3 that separates
    nodes the spectral layout puts on one point. The last :data:`LAYOUTS_KEPT` samples are
    kept, keyed by the network's edges, ``max_drawn`` and ``seed``, so a second browser
    session or a *Reset* to the same network does not lay it out again.

    Parameters
    ----------
    network : tatonnet.environment.network.Network
    max_drawn : int — at most this many agents are drawn (>= 1)
    seed : int — seed of the layout (same seed, same picture)
    """
    if max_drawn < 1:
        raise DashboardError(f"max_drawn: expected a positive number of nodes, got {max_drawn}")
    n = network.n_agents
    if network.is_central:
        nodes = np.arange(min(n, max_drawn), dtype=np.int64)
        angle = 2 * np.pi * np.arange(nodes.size) / max(nodes.size, 1)
        pos = np.column_stack([np.cos(angle), np.sin(angle)])
        how = "central auctioneer: one price, no network"
        return NetworkSample(nodes, np.empty((0, 2), np.int64), pos, n, how)
    digest = hashlib.blake2b(np.ascontiguousarray(network.indptr).tobytes(), digest_size=16)
    digest.update(np.ascontiguousarray(network.indices).tobytes())
    key = (n, digest.hexdigest(), int(max_drawn), int(seed))
    with _layouts_lock:
        if key in _layouts:
            return _layouts[key]
    if n <= max_drawn:
        nodes, how = np.arange(n, dtype=np.int64), "all agents"
    else:
        nodes = bfs_sample(network.indptr, network.indices, 0, max_drawn)
        how = "breadth-first neighbourhood of agent 0"
    where = np.full(n, -1, dtype=np.int64)
    where[nodes] = np.arange(nodes.size)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(network.indptr))
    cols = network.indices.astype(np.int64)
    keep = (rows < cols) & (where[rows] >= 0) & (where[cols] >= 0)
    edges = np.column_stack([where[rows[keep]], where[cols[keep]]])
    G = nx.Graph()
    G.add_nodes_from(range(nodes.size))
    G.add_edges_from(edges.tolist())
    spectral = nx.spectral_layout(G)
    start = np.array([spectral[k] for k in range(nodes.size)], dtype=float)
    start += np.random.default_rng(seed).normal(0.0, 1e-3, start.shape)
    sample = NetworkSample(nodes, edges, force_layout(edges, start), n, how)
    with _layouts_lock:
        _layouts[key] = sample
        while len(_layouts) > LAYOUTS_KEPT:
            del _layouts[next(iter(_layouts))]
    return sample


def price_deviation(prices: np.ndarray, numeraire: int) -> np.ndarray:
    """Signed log-price deviation of each agent from the network mean; (n,).

    ``d_i = mean over goods j != numeraire of (log p_ij - mean_k log p_kj)`` for ``prices``
    (n, g): positive where an agent's prices are above the network's.
    """
    logp = np.log(prices)
    dev = logp - logp.mean(axis=0)
    others = [j for j in range(prices.shape[1]) if j != numeraire]
    return dev[:, others].mean(axis=1)


def roles_of(model) -> np.ndarray | None:
    """Per-agent role or layer labels (n,) when the model has them (trade), else None."""
    for name in ("role", "roles", "layer"):
        value = getattr(model, name, None)
        if value is not None and not callable(value):
            arr = np.asarray(value)
            if arr.shape == (model.economy.n_agents,):
                return arr
    return None


def draw_network(fig: Figure, model, sample: NetworkSample, colour_by: str = "price") -> None:
    """Draw the sampled network of ``model`` into ``fig``.

    Nodes are coloured by :func:`price_deviation` (diverging map, symmetric about 0), or by
    role when ``colour_by == "role"`` and the model has roles; sized by wealth ``p_i . e_i``
    at the agent's own prices. Edges are one ``LineCollection``.
    """
    ax = fig.subplots()
    pos = sample.positions
    lo, hi = pos.min(axis=0) - 0.05, pos.max(axis=0) + 0.05
    extent = (lo[0], hi[0], lo[1], hi[1])
    if sample.edges.size:
        ax.imshow(edge_layer(sample, extent), extent=extent, origin="upper", zorder=1,
                  interpolation="nearest", aspect="auto")  # fmt: skip
    prices = np.asarray(model.prices())
    drawn = prices[sample.nodes]
    wealth = np.einsum("ij,ij->i", drawn, model.economy.endowments[sample.nodes])
    top = wealth.max() if wealth.size and wealth.max() > 0 else 1.0
    base = 120.0 / np.sqrt(max(sample.nodes.size, 1) / 100.0 + 1.0)
    sizes = 6.0 + base * wealth / top
    roles = roles_of(model) if colour_by == "role" else None
    if roles is not None:
        labels, codes = np.unique(roles[sample.nodes], return_inverse=True)
        sc = ax.scatter(pos[:, 0], pos[:, 1], s=sizes, c=codes, cmap="tab10", vmin=0, vmax=9,
                        edgecolors="none", zorder=2)  # fmt: skip
        handles = [
            ax.scatter([], [], color=sc.cmap(sc.norm(k)), label=str(lab))
            for k, lab in enumerate(labels)
        ]
        ax.legend(handles=handles, title="role", loc="upper right", fontsize="small")
    else:
        dev = price_deviation(prices, model.economy.numeraire)[sample.nodes]
        finite = np.isfinite(dev)
        span = float(np.abs(dev[finite]).max()) if finite.any() else 0.0
        span = max(span, MIN_COLOUR_SPAN)
        sc = ax.scatter(pos[:, 0], pos[:, 1], s=sizes, c=dev, cmap="coolwarm", vmin=-span,
                        vmax=span, edgecolors="none", zorder=2)  # fmt: skip
        fig.colorbar(sc, ax=ax, shrink=0.8, label="log-price deviation from network mean")
    ax.set_title(f"round {model.round}\n{sample.describe()}; size = wealth", fontsize="small")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_axis_off()


def edge_layer(sample: NetworkSample, extent, pixels: int = 640) -> np.ndarray:
    """The edges drawn once into an RGBA image (pixels, pixels, 4), cached on ``sample``.

    Edges do not move between rounds; drawing ~10,000 line segments on every step was the
    slowest part of a render, so they become one picture shown with ``imshow``.
    """
    if "edges" not in sample.cache:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        pos = sample.positions
        segs = np.stack([pos[sample.edges[:, 0]], pos[sample.edges[:, 1]]], axis=1)
        fig = Figure(figsize=(pixels / 100, pixels / 100), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.add_collection(LineCollection(segs, colors="0.85", linewidths=0.3))
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_axis_off()
        fig.patch.set_alpha(0.0)
        canvas.draw()
        sample.cache["edges"] = np.asarray(canvas.buffer_rgba()).copy()
    return sample.cache["edges"]


def draw_metrics(fig: Figure, metrics, goods) -> None:
    """Excess demand and price dispersion per round (log scale) and network-mean prices.

    ``metrics`` is the model's DataCollector frame (one row per round, round 0 first).
    """
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.13, right=0.97, top=0.93, bottom=0.1, hspace=0.12)
    rounds = np.arange(len(metrics))
    for name in ("excess_demand", "price_dispersion"):
        values = metrics[name].to_numpy(dtype=float)
        ax1.plot(rounds, np.where(values > 0, values, np.nan), label=name.replace("_", " "))
    ax1.set_yscale("log")
    ax1.legend(loc="upper right", fontsize="small")
    ax1.set_title("per round", fontsize="medium")
    for good in goods:
        ax2.plot(rounds, metrics[f"price_{good}"].to_numpy(dtype=float), label=good)
    ax2.set(xlabel="round", ylabel="network-mean price")
    ax2.legend(loc="upper right", fontsize="small", ncols=2)


def step_seconds(agents: int, max_drawn: int, steps: int = 7) -> tuple[float, str]:
    """Median seconds of one dashboard step: round + network and metrics pictures as PNG.

    The default scenario with ``agents`` agents (seed 7), what the two picture components
    render; the first step (loading compiled kernels) is not counted. Returns the median
    and :meth:`NetworkSample.describe`.
    """
    import io
    import statistics
    import time

    from tatonnet.environment.model import MarketModel

    model = MarketModel("default", agents=agents, mesa_agents=False, seed=7)
    sample = sample_network(model.network, max_drawn, 7)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        model.step()
        for draw in ("network", "metrics"):
            fig = Figure(figsize=(6.4, 5.2), dpi=80)
            if draw == "network":
                draw_network(fig, model, sample)
            else:
                frame = model.datacollector.get_model_vars_dataframe()
                draw_metrics(fig, frame, model.economy.goods)
            fig.savefig(io.BytesIO(), format="png", pil_kwargs={"compress_level": 1})
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), sample.describe()
