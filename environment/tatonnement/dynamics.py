"""Tâtonnement dynamics: decentralized (every agent its own prices) and central (one auctioneer).

Each class validates and precomputes once, then calls the numba kernels of
:mod:`tatonnet.environment.tatonnement.kernel` on raw arrays (the QuantEcon pattern). The state is a structure
of arrays; :meth:`step` is a function of the state alone (no I/O, no randomness).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from tatonnet.agents.rules import PRICE_FLOOR, PriceRule
from tatonnet.environment.build.assemble import signal_scale
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import kernel

SIGNALS = ("tracking", "local")


#: Most numba threads an in-process round uses (None: all of numba's); ``--threads``.
MAX_THREADS: int | None = None


def use_threads(n_blocks: int) -> None:
    """Run the next kernel on at most one thread per reduction block (and MAX_THREADS).

    Waking idle threads for a single block costs far more than the block's work (measured:
    a 500-agent round took ~6 ms on 2 threads against ~0.15 ms on one). Results do not
    depend on the thread count.
    """
    cap = numba.config.NUMBA_NUM_THREADS
    if MAX_THREADS is not None:
        cap = min(cap, MAX_THREADS)
    numba.set_num_threads(max(1, min(cap, n_blocks)))


@dataclasses.dataclass(frozen=True, eq=False)
class MarketState:
    """State of a tâtonnement run after ``round`` rounds.

    Attributes
    ----------
    coords : (n_rows, g) — each agent's log-prices (log-space rules) or prices
        (price-space rules); one row under ``central``.
    tracker : (n_rows, g) — gradient-tracking estimate of average excess demand
        (unused under ``local`` and ``central``).
    excess : (n_rows, g) — excess demand of each agent at its own prices (central: the
        aggregate excess demand, one row).
    buffers : (n_rows, n_buffers, g) — the rule's optimizer state.
    round : int
    """

    coords: np.ndarray
    tracker: np.ndarray
    excess: np.ndarray
    buffers: np.ndarray
    round: int = 0


@dataclasses.dataclass(frozen=True)
class RoundMetrics:
    """Global metrics after one round, reduced from per-block partial sums.

    ``excess`` (g,) aggregate excess demand relative to supply, ``sum_i z_ij / sum_i e_ij``;
    ``mean_price`` (g,) network-mean price; ``log_min``/``log_max`` (g,) extreme agent
    log-prices.
    """

    round: int
    excess: np.ndarray
    mean_price: np.ndarray
    log_min: np.ndarray
    log_max: np.ndarray

    @property
    def excess_demand(self) -> float:
        """Largest relative excess demand over goods (inf if any is not finite)."""
        m = np.max(np.abs(self.excess))
        return float(m) if np.isfinite(m) else np.inf

    @property
    def price_dispersion(self) -> float:
        """Largest spread ``max_i log p_ij - min_i log p_ij`` over goods (0 under central)."""
        return float(np.max(self.log_max - self.log_min))

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.excess).all() and np.isfinite(self.mean_price).all())


def reduce_partials(round_: int, partials: np.ndarray, supply, n_agents: int) -> RoundMetrics:
    """Global metrics from per-block partials (n_blocks, N_PARTIALS, g) in block order."""
    total = kernel.sum_blocks(partials[:, : kernel.P_LOGMIN])
    return RoundMetrics(
        round=round_,
        excess=total[kernel.P_EXCESS] / supply,
        mean_price=total[kernel.P_PRICE] / n_agents,
        log_min=partials[:, kernel.P_LOGMIN].min(axis=0),
        log_max=partials[:, kernel.P_LOGMAX].max(axis=0),
    )


def state_partials(coords: np.ndarray, excess: np.ndarray, space: str, row_offset: int = 0):
    """Per-block partials (b, N_PARTIALS, g) of a state's rows, as the round kernel makes them.

    Used for round-0 metrics, so that every engine reports them identically.
    """
    n, g = coords.shape
    first = row_offset // kernel.BLOCK
    n_b = kernel.n_blocks(row_offset + n) - first
    out = np.empty((n_b, kernel.N_PARTIALS, g))
    prices = prices_from_coords(coords, space)
    logp = np.log(prices)
    for b in range(n_b):
        lo = max(0, (first + b) * kernel.BLOCK - row_offset)
        hi = min(n, (first + b + 1) * kernel.BLOCK - row_offset)
        out[b, kernel.P_EXCESS] = excess[lo:hi].sum(axis=0)
        out[b, kernel.P_PRICE] = prices[lo:hi].sum(axis=0)
        out[b, kernel.P_LOGMIN] = logp[lo:hi].min(axis=0)
        out[b, kernel.P_LOGMAX] = logp[lo:hi].max(axis=0)
    return out


def prices_from_coords(coords: np.ndarray, space: str) -> np.ndarray:
    return np.exp(coords) if space == "log" else coords.copy()


def coords_from_prices(prices: np.ndarray, space: str) -> np.ndarray:
    return np.log(prices) if space == "log" else prices.astype(float, copy=True)


class NetworkTatonnement:
    """Decentralized tâtonnement of ``economy`` on ``network`` under ``rule``.

    Parameters
    ----------
    economy : Economy
    network : Network (not central)
    rule : PriceRule
    signal : {"tracking", "local"}
        What each agent feeds its rule (see :mod:`tatonnet.environment.tatonnement.kernel`).
    """

    def __init__(self, economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
        if network.is_central:
            raise ValueError("NetworkTatonnement needs a graph; use CentralTatonnement")
        if signal not in SIGNALS:
            raise ValueError(f"signal: expected one of {SIGNALS}, got {signal!r}")
        if network.n_agents != economy.n_agents:
            raise ValueError(f"network has {network.n_agents} agents, economy {economy.n_agents}")
        self.economy, self.network, self.rule, self.signal = economy, network, rule, signal
        self.space = rule.space
        self._arrays = economy.kernel_arrays()
        self._params = rule.params()
        self._transform = rule.signal_transform
        self.inv_scale = self._signal_scale()
        self.supply = economy.supply
        self.n_blocks = kernel.n_blocks(economy.n_agents)
        self._all_blocks = np.arange(self.n_blocks, dtype=np.int64)

    def _signal_scale(self) -> np.ndarray:
        """1 / (neighbourhood supply scale) per agent and good; (n, g).

        ``tracking``: the neighbourhood's mean endowment; ``local``: its total endowment.
        Where a neighbourhood owns none of a good, the network-wide value stands in
        (computed once, as one consensus would).
        """
        e, net = self.economy.endowments, self.network
        n = net.n_agents
        mean = self.economy.supply / n  # = e.mean(axis=0); shard-built: its block order
        # the closed neighbourhood's sums, each sequential in column order from 0.0 (the
        # order scipy's CSR product takes): the bits every shard count reproduces
        return signal_scale(net.indptr, net.indices, e, self.signal == "tracking", mean)

    def init_state(self, prices: np.ndarray) -> MarketState:
        """State at round 0 from initial prices (g,) for all, or (n, g) per agent."""
        n, g = self.economy.n_agents, self.economy.n_goods
        prices = np.broadcast_to(np.asarray(prices, dtype=float), (n, g))
        prices = prices / prices[:, [self.economy.numeraire]]
        coords = coords_from_prices(prices, self.space)
        excess = np.empty((n, g))
        kernel.excess_demand_rows(coords, self.space == "log", *self._arrays, excess)
        buffers = self.rule.init_buffers(np.arange(n), g)
        return MarketState(coords, excess.copy(), excess, buffers, 0)

    def step(self, state: MarketState, spare: MarketState | None = None):
        """One synchronous round; returns ``(new_state, metrics)``.

        ``spare``, if given, is a state whose arrays may be overwritten (ping-pong buffers,
        e.g. the state of two rounds ago); the rule's buffers are updated in place.
        """
        n, g = state.coords.shape
        if spare is None:
            spare = MarketState(np.empty((n, g)), np.empty((n, g)), np.empty((n, g)), None)
        partials = np.empty((self.n_blocks, kernel.N_PARTIALS, g))
        net = self.network
        params = self.rule.round_params(state.round) if self.rule.scheduled else self._params
        use_threads(self.n_blocks)
        kernel.network_round(
            net.indptr, net.indices, net.mixing,
            state.coords, state.tracker, state.excess,
            spare.coords, spare.tracker, spare.excess,
            *self._arrays, self.inv_scale, 0,
            self.space == "log", self.signal == "tracking", self.economy.numeraire,
            self.rule.kernel, params, *self._transform, state.buffers, self._all_blocks,
            partials,
        )  # fmt: skip
        new = MarketState(spare.coords, spare.tracker, spare.excess, state.buffers, state.round + 1)
        return new, self.metrics_from_partials(new.round, partials)

    def metrics_from_partials(self, round_: int, partials: np.ndarray) -> RoundMetrics:
        return reduce_partials(round_, partials, self.supply, self.economy.n_agents)

    def prices(self, state: MarketState) -> np.ndarray:
        """Each agent's prices, numeraire = 1; (n, g)."""
        return prices_from_coords(state.coords, self.space)


class CentralTatonnement:
    """The classic baseline: one Walrasian auctioneer, one price vector for everybody.

    The auctioneer sees the aggregate excess demand ``Z(p) = sum_i z_i(p)`` and feeds
    ``Z / supply`` to the rule. State arrays have one row.
    """

    def __init__(self, economy: Economy, rule: PriceRule):
        self.economy, self.rule, self.space = economy, rule, rule.space
        self.network = Network.central(economy.n_agents)
        self.signal = "central"
        self._arrays = economy.kernel_arrays()
        self._params = rule.params()
        self.supply = economy.supply
        self.n_blocks = kernel.n_blocks(economy.n_agents)

    def _aggregate(self, prices: np.ndarray) -> np.ndarray:
        blocks = np.empty((self.n_blocks, prices.size))
        use_threads(self.n_blocks)
        kernel.excess_demand_blocks(prices, *self._arrays, 0, blocks)
        return kernel.sum_blocks(blocks)

    def init_state(self, prices: np.ndarray) -> MarketState:
        prices = np.asarray(prices, dtype=float).reshape(-1)
        prices = prices / prices[self.economy.numeraire]
        coords = coords_from_prices(prices, self.space)[None, :]
        excess = self._aggregate(prices)[None, :]
        buffers = self.rule.init_buffers(np.arange(1), prices.size)
        return MarketState(coords, excess.copy(), excess, buffers, 0)

    def step(self, state: MarketState, spare: MarketState | None = None):
        signal = state.excess[0] / self.supply
        coords = auctioneer_step(self.rule, state.coords[0], signal, state.buffers[0],
                                 self.economy.numeraire, state.round)  # fmt: skip
        return self.post(state, coords, prices_from_coords(coords, self.space))

    def post(self, state: MarketState, coords: np.ndarray, prices: np.ndarray):
        """The auctioneer posts ``prices`` (coordinates ``coords``, both (g,)): aggregate
        excess demand there; returns ``(new_state, metrics)`` one round after ``state``."""
        excess = self._aggregate(prices)
        new = MarketState(coords[None, :], excess[None, :], excess[None, :], state.buffers,
                          state.round + 1)  # fmt: skip
        logp = np.log(prices)
        return new, RoundMetrics(new.round, excess / self.supply, prices, logp, logp)

    def prices(self, state: MarketState) -> np.ndarray:
        return prices_from_coords(state.coords, self.space)


def auctioneer_step(rule: PriceRule, coords, signal, buffers, numeraire: int,
                    round_: int) -> np.ndarray:  # fmt: skip
    """The central auctioneer's update of one price vector in round ``round_`` (the global
    round, 0 for the first step): new coordinates (g,).

    The signal (g,) is transformed as the rule asks (clip / normalize), the step scaled by
    its schedule; ``buffers`` (n_buffers, g) is updated in place; the numeraire is pinned
    and, in price space, prices are floored at ``PRICE_FLOOR``.
    """
    coords = np.array(coords, dtype=float)
    signal = rule.prepare_signal(signal, numeraire)
    rule.kernel(coords, signal, buffers, rule.round_params(round_))
    if rule.space == "log":
        coords[numeraire] = 0.0
    else:
        coords[numeraire] = 1.0
        coords = np.where(coords < PRICE_FLOOR, PRICE_FLOOR, coords)
    return coords


def messages_per_round(rule: PriceRule, network: Network, n_goods: int) -> dict:
    """What one round sends: message count and float64 values, for the study's totals.

    On a graph every agent messages each neighbour ``rule.exchanges_per_round`` times with
    ``rule.message_floats(g)`` values. Under ``central`` each agent sends the auctioneer its
    g-vector excess demand and receives g prices, once per exchange.

    A rule whose exchanges differ in size defines ``round_floats(g, central)``: the float64
    values per round per agent (central: sent and received) or per directed edge (graph).
    """
    exchanges = rule.exchanges_per_round
    round_floats = getattr(rule, "round_floats", None)
    if network.is_central:
        messages = 2 * network.n_agents * exchanges
        floats = messages * n_goods
        if round_floats is not None:
            floats = network.n_agents * round_floats(n_goods, True)
    else:
        directed = 2 * int(network.n_edges)  # CSR entries minus self-loops
        messages = directed * exchanges
        floats = messages * rule.message_floats(n_goods)
        if round_floats is not None:
            floats = directed * round_floats(n_goods, False)
    return {"exchanges": exchanges, "messages": messages, "floats": floats}
