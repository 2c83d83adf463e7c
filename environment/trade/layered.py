"""The layered market: merchants with inventories between owners and final consumers.

The founding essay's second remedy for a market that "can't learn XOR" is to add a layer.
Here the layer is a set of *merchants* (warehouses) standing between the agents of an
:class:`~tatonnet.environment.economy.Economy`, in the spirit of the ongoing markets of Cole &
Fleischer [1]_ and Cheung, Cole & Rastogi [2]_: prices are no longer set by an
auctioneer reading an excess-demand oracle, but by merchants reading their own stock.

Model
-----
The exchange economy is *ongoing*: every round ("market day") each agent arrives with its
endowment ``e_i`` (g,), trades with its merchant, and consumes what it ends the day with.

* **Merchants.** ``M`` merchants, each dealing in every good; merchant ``m`` holds an
  inventory ``I_m`` (g,), a target (warehouse) level ``T_m = target * s_m``, where ``s_m``
  (g,) is the total endowment of its clients (one day of its clients' supply; where its
  clients own none of good j, the economy's mean per merchant ``S_j / M`` stands in), and
  a money balance ``c_m`` (numeraire units, starts at 0). One merchant holding all goods is
  the same as one merchant per good: good j's price only reads good j's inventory.
* **Trade.** Agent ``i`` faces the posted prices ``p_m`` of its merchant ``m = m(i)``,
  sells its whole endowment and buys its Marshallian demand ``x_i(p_m)`` (budget: the
  value of its endowment at those prices, so ``p_m . (x_i - e_i) = 0``: every agent's
  budget balances every round). The merchant absorbs the net order
  ``Z_m = sum_{i in m} (x_i - e_i)``: ``I_m <- I_m - Z_m`` and ``c_m <- c_m + p_m . Z_m``
  (zero up to rounding). Stock may go negative: a negative inventory is a backlog the
  merchant owes (no rationing); the minimum fill ``min I / T`` is reported.
* **Rebalancing** (network only). Neighbouring merchants ``a, b`` (Metropolis weight
  ``w_ab`` in the merchant graph) ship ``q_ab = rebalance * w_ab * h_ab * (I_a/T_a - I_b/T_b)``
  (g,) from ``a`` to ``b`` after trading, ``h_ab`` the harmonic mean of the two targets;
  ``b`` pays ``a`` the value ``sum_j q_abj sqrt(p_aj p_bj)`` (geometric-mean price).
  Shipments are antisymmetric, so goods and money among merchants are conserved.
* **Prices from inventory.** Merchant ``m`` reads its own signal off its books,

  ``d_m = flow_gain * Z_m / u + inventory_gain * (T_m - I_m) / (target * u)``   (g,)

  with ``Z_m`` the day's net sales (its stock's fall before shipments) and ``u = S / M``
  the supply per merchant (one constant, computed once at setup as one consensus would).
  The first term is proportional action on the day's sales, the second integral action
  on the warehouse deficit (``T - I`` is the accumulated excess demand).
  ``flow_gain = 1, inventory_gain = 0`` and one merchant reproduce flat central
  tâtonnement exactly (tested); ``flow_gain = 0`` is the pure inventory rule
  ``p <- p (1 + step_size * clip((T - I)/T))``, which, linearized, has a round map of
  determinant 1 (a symplectic-Euler oscillator): it cannot damp, it orbits (measured:
  Cobb–Douglas cycles or slowly spirals out under it).
* **Merchants on a graph** first mix their coordinates with merchant neighbours
  (Metropolis weights ``W``, ``mix_prices=True``), then step:
  ``v_m = sum_k W_mk v_k; rule.kernel(v_m, y_m)``; the numeraire is pinned. Under
  ``signal="tracking"`` (default) ``y_m`` is a gradient-tracking estimate of the
  merchants' *average* signal, ``y_m <- sum_k W_mk y_k + d_m(t) - d_m(t-1)`` (as in the
  flat network dynamics); under ``"local"`` ``y_m = d_m``. Why tracking: at the
  Walrasian price a territory's own market does not clear, so a steady flow of goods must
  cross between merchants, driven by different fill ratios, so individual signals ``d_m``
  cannot all vanish; with ``"local"`` signals mixing and inventory pull against each other
  and the market stalls at a dispersed, non-clearing rest point (measured). With tracking
  the rest points have one common price, ``sum_m Z_m = 0`` (the Walrasian price) and total
  stock on target; individual merchants keep the fill differences that drive the
  shipments (``fill_min``/``fill_max``).

The numeraire good is the merchants' money. Its price is pinned, so its stock cannot be
steered: by Walras' law ``p . Z_m = 0`` every day, so when the other goods' stocks are back
at target, the numeraire stock holds the merchant's accumulated trading profit or loss
``-sum_t p* . Z_t`` (path-dependent; zero only if prices never moved). Its target is
therefore not enforced: it is excluded from ``inventory_gap`` but shown in
``fill_min``/``fill_max``. (Letting the numeraire float instead would leave, at any rest
point, one common fill offset across all goods: the same history term.)

Accounting (checked by ``tests/test_layered.py`` every round)::

    sum_i e_i + sum_m I_m(t-1) = sum_i x_i(t) + sum_m I_m(t)      (each good)
    p_m(i) . (x_i - e_i) = 0 for every agent;  sum_m c_m(t) = 0   (money)

Network version
---------------
Merchants sit at ``n_merchants`` agent nodes (a seeded draw); every agent deals with its
nearest merchant in hops (multi-source BFS, ties broken by scipy's order); two merchants
are neighbours when an edge of the agent graph joins their territories (so the merchant
graph is connected whenever the agent graph is). Everything a merchant does uses its own
books and messages from merchant neighbours. ``network.is_central`` (or
``n_merchants=1``) gives the central layered market: one merchant for everybody.

Layers (``layers = L >= 1``): above the ``n_merchants`` retailers (layer 1) sit wholesalers.
Layer ``l + 1`` has ``ceil(M_l / fan_in)`` merchants; each layer-``l`` merchant is attached
to its nearest layer-``l + 1`` site in the layer-``l`` territory graph (the same Voronoi
construction, one level up). Edges are child-parent links plus peer links *only at the
top layer*: with ``L >= 2`` retailers stop trading with each other and goods cross between
territories through their wholesalers. A wholesaler has no clients (``Z = 0``); its scale
(hence target) is the sum of its children's. Everything else, price mixing, gradient
tracking, rebalancing along edges, is the same on this merchant graph. Under ``central``
the layers form a chain (one retailer, one wholesaler above it, ...).

Which rules apply: every registered rule that fits the one-kernel contract
(``rule.engine is None``): ``entropic`` (``log p += step * d``), ``multiplicative``
(``log p += log1p(step * clip(d, -1, 1))``, Cole–Fleischer's capped update, the default),
``additive`` (price space, floored) and optimizer rules with buffers (one buffer row per
merchant), each in the geometry its ``space`` names (price space: floored at
``PRICE_FLOOR``), with its options: the schedule scales the step by the market day
(``state.round``), ``clip`` / ``normalize`` act on each merchant's signal row (norm over
the non-numeraire goods). Composite rules (``engine`` set: extragradient, Newton) need
trial excess-demand evaluations that a merchant does not have; under this (``kernel``)
design they raise a one-line RuleError.

Designs (``design=``, :data:`DESIGNS`)
--------------------------------------
``"kernel"`` (the default; everything above): each round the merchant steps its rule's
kernel on its book signal, one market day a round. ``"books"`` (:class:`BooksMarket`):
the same market, books, accounting and metrics, but the merchants price with the rules
that converge centrally, rewritten to need nothing but their books
(:mod:`tatonnet.environment.trade.merchant_rules`): ``optimistic`` (the last two signals;
bit for bit the kernel design with the ``optimistic`` rule), ``extragradient`` (the
look-ahead is a real market day at the extrapolated prices: two market days a round)
and ``broyden`` (a damped, trust-region quasi-Newton step from a secant estimate of the
merchant's own order Jacobian, learned from successive days' (price, order) lines after
``g - 1`` probe days). ``merchant_rule`` picks one; by default the rule's name does
(:data:`MERCHANT_RULE_OF`: ``optimistic``, ``extragradient``, ``newton`` -> ``broyden``),
and the rule gives the step size, the geometry and (broyden) ``damping`` / ``max_step``.
Measured (``benchmarks/layered_designs.py``, docs/05): broyden converges on scarf,
scarf-variant, ces-substitutes and cobb-douglas, centrally and on their networks, where
the kernel design diverges on scarf at every gain tried.

Metrics (:class:`LayeredMetrics`): ``excess`` (g,) is the agents' aggregate net order
against the merchants relative to supply, ``sum_m Z_m / S``; ``inventory_gap`` (g,) the
aggregate stock's distance to the aggregate target, ``|sum_m I_m / sum_m T_m - 1|`` (0 for
the numeraire, see above); ``excess_demand`` is the larger of the two, so "converged"
means orders clear *and* the stock is back at target (with ``price_dispersion``: merchants
agree). ``fill_min``/``fill_max`` (g,) give each good's extreme merchant fill ``I_m / T_m``
(inventory excursions; negative = backlog). ``mean_price`` is the mean over agents of the
prices they face; ``log_min``/``log_max`` range over merchants.

Messages per round: each agent sends its merchant one order (g floats) and receives one
price quote (g floats); each merchant sends each merchant neighbour its g coordinates and
its g fill ratios, and a shipment (g quantities and one payment) on every edge.

References
----------
.. [1] R. Cole and L. Fleischer, "Fast-converging tatonnement algorithms for one-time and
   ongoing market problems", STOC 2008.
.. [2] Y. K. Cheung, R. Cole and A. Rastogi, "Tatonnement in ongoing markets of
   complementary goods", EC 2012.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from tatonnet.agents.rules import PRICE_FLOOR, PriceRule, RuleError, make_rule, transforms
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network, from_edges, sorted_unique
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    RoundMetrics,
    coords_from_prices,
    prices_from_coords,
    use_threads,
)
from tatonnet.environment.trade import merchant_rules


class LayeredError(ValueError):
    """A parameter of the layered market is invalid (one-line message)."""


#: Market parameters and their defaults (see :class:`LayeredMarket`).
DEFAULTS = {
    "n_merchants": None,
    "target": 1.0,
    "flow_gain": 1.0,
    "inventory_gain": 0.1,
    "rebalance": 0.25,
    "mix_prices": True,
    "initial_inventory": 1.0,
    "seed": 0,
    "signal": "tracking",
    "layers": 1,
    "fan_in": 4,
}

#: What a merchant feeds its rule: its own signal, or a gradient-tracking estimate of the
#: merchants' average signal (see the module docstring).
SIGNALS = ("tracking", "local")


@dataclasses.dataclass(frozen=True, eq=False)
class LayeredState:
    """State of the layered market after market day ``round``.

    Attributes
    ----------
    coords : (M, g) — each merchant's posted log-prices (log-space rules) or prices
    inventory : (M, g) — merchant stock after the day's trade and rebalancing
    cash : (M,) — merchant money balances (numeraire units)
    orders : (M, g) — the day's net order ``Z_m`` of each merchant's clients
    own_signal : (M, g) — each merchant's signal ``d_m`` read off its books that day
    tracker : (M, g) — its estimate ``y_m`` of the merchants' average signal (tracking)
    allocation : (n, g) — what each agent took home (consumed) that day
    buffers : (M, n_buffers, g) — the rule's optimizer state per merchant
    round : int
    """

    coords: np.ndarray
    inventory: np.ndarray
    cash: np.ndarray
    orders: np.ndarray
    own_signal: np.ndarray
    tracker: np.ndarray
    allocation: np.ndarray
    buffers: np.ndarray
    round: int = 0


@dataclasses.dataclass(frozen=True)
class LayeredMetrics(RoundMetrics):
    """:class:`RoundMetrics` plus inventories.

    ``inventory_gap`` (g,) aggregate ``|sum_m I_m - sum_m T_m| / sum_m T_m`` (0 for the
    numeraire); ``fill_min``/``fill_max`` (g,)
    smallest / largest fill ratio ``I_m / T_m`` over merchants (negative: a backlog).
    """

    inventory_gap: np.ndarray = None
    fill_min: np.ndarray = None
    fill_max: np.ndarray = None

    @property
    def excess_demand(self) -> float:
        """Largest of the relative net order and the inventory gap (inf if not finite)."""
        m = max(np.max(np.abs(self.excess)), np.max(self.inventory_gap))
        return float(m) if np.isfinite(m) else np.inf

    @property
    def finite(self) -> bool:
        return super().finite and bool(np.isfinite(self.inventory_gap).all())


class LayeredMarket:
    """The layered (merchant) market of ``economy`` on ``network`` under ``rule``.

    Parameters
    ----------
    economy : Economy
    network : Network — the agent graph, or ``Network.central(n)`` for one merchant
    rule : PriceRule — the merchants' price-update rule (``engine is None``)
    n_merchants : int or None — retail (layer-1) merchants on a graph (default ``max(2, round(sqrt(n)/2))``);
        1 under ``central``
    target : float > 0 — warehouse level in days of the clients' supply
    flow_gain : float >= 0 — weight of last day's net order in the signal
    inventory_gain : float >= 0 — weight of the warehouse deficit (not both gains 0)
    rebalance : float in [0, 0.5] — inventory diffusion between merchant neighbours
        (0.5 keeps every fill-ratio update a convex combination)
    mix_prices : bool — merchants average coordinates with merchant neighbours
    initial_inventory : float >= 0 — initial stock as a fraction of target
    seed : int >= 0 — merchant placement
    layers : int >= 1 — merchant layers (1: retailers only; 2: plus wholesalers...)
    fan_in : int >= 2 — merchants of one layer per merchant of the layer above

    Attributes
    ----------
    n_retail : int — layer-1 merchants ``M_r``; n_merchants : int — all merchants ``M``
    merchant_of : (n,) — each agent's retailer; sites : (M_r,) — retailers' agent nodes
    parent : (M,) — each merchant's parent (-1 at the top layer); layer : (M,) — 1, 2, ...
    merchant_network : Network or None — the merchant graph (None for one merchant)
    scale, target : (M, g) — supply scale and warehouse targets; unit : (g,) ``S / M_r``
    signal : {"tracking", "local"} — what a merchant feeds its rule (module docstring)
    """

    def __init__(self, economy: Economy, network: Network, rule: PriceRule, **params):
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise LayeredError(
                f"layered market: unknown parameter {sorted(unknown)[0]!r}; expected one of "
                f"{sorted(DEFAULTS)}"
            )
        p = {**DEFAULTS, **params}
        if not isinstance(rule, PriceRule):
            raise RuleError(f"layered market: expected a PriceRule, got {type(rule).__name__}")
        self._check_rule(rule)
        if network.n_agents != economy.n_agents:
            raise LayeredError(
                f"layered market: network has {network.n_agents} agents, economy {economy.n_agents}"
            )
        for name in ("target", "flow_gain", "inventory_gain", "rebalance", "initial_inventory"):
            value = p[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LayeredError(f"layered market: {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise LayeredError(
                    f"layered market: {name} must be a finite number >= 0, got {value!r}"
                )
        if p["target"] <= 0:
            raise LayeredError(f"layered market: target must be > 0, got {p['target']!r}")
        if p["flow_gain"] == 0 and p["inventory_gain"] == 0:
            raise LayeredError("layered market: flow_gain and inventory_gain are both 0")
        if p["rebalance"] > 0.5:
            raise LayeredError(
                f"layered market: rebalance must be in [0, 0.5], got {p['rebalance']!r}"
            )
        for name in ("layers", "fan_in"):
            value = p[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LayeredError(f"layered market: {name} must be an integer >= 1, got {value!r}")
        if p["fan_in"] < 2 and p["layers"] > 1:
            raise LayeredError("layered market: fan_in must be >= 2 with more than one layer")
        if p["signal"] not in SIGNALS:
            raise LayeredError(
                f"layered market: signal must be one of {SIGNALS}, got {p['signal']!r}"
            )
        if not isinstance(p["mix_prices"], bool):
            raise LayeredError("layered market: mix_prices must be true or false")
        seed = p["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise LayeredError(f"layered market: seed must be an integer >= 0, got {seed!r}")

        n, g = economy.n_agents, economy.n_goods
        M = p["n_merchants"]
        if M is None:
            M = 1 if network.is_central else max(2, round(math.sqrt(n) / 2))
        if isinstance(M, bool) or not isinstance(M, int) or not 1 <= M <= n:
            raise LayeredError(
                f"layered market: n_merchants must be an integer in [1, {n}], got {M!r}"
            )
        if network.is_central and M != 1:
            raise LayeredError(
                f"layered market: a central market has one merchant, got n_merchants={M}"
            )
        self.economy, self.network, self.rule = economy, network, rule
        self.space = rule.space
        self.params = p
        self.signal = p["signal"]
        #: (g,) goods whose price moves (all but the numeraire): their stock has a target
        self._priced = np.arange(g) != economy.numeraire
        self.supply = economy.supply
        self._arrays = economy.kernel_arrays()
        self._rule_params = rule.params()

        self.n_retail = M
        self.merchant_of, self.sites, edges, self.parent = self._place(
            M, p["layers"], p["fan_in"], seed
        )
        #: merchant count over all layers (rows of every merchant array)
        self.n_merchants = M = self.parent.size
        self.merchant_network = from_edges(edges, M, "merchants") if M > 1 else None
        #: (M,) layer of each merchant, 1 = retail
        self.layer = np.ones(M, dtype=np.int64)
        for m in range(self.n_retail, M):  # a few wholesalers: set from their children
            self.layer[m] = self.layer[self.parent == m].max(initial=0) + 1
        rows = np.arange(n)
        #: (M, n) client assignment: ``assign @ x`` sums rows per merchant (0 above layer 1)
        self.assign = scipy.sparse.csr_array((np.ones(n), (self.merchant_of, rows)), shape=(M, n))
        self.clients = np.bincount(self.merchant_of, minlength=M)
        client_supply = self.assign @ economy.endowments
        fallback = np.broadcast_to(self.supply / self.n_retail, client_supply.shape)
        #: (M, g) supply scale: a retailer's clients' endowment (or S / M_retail); a
        #: wholesaler's, the sum of its children's
        self.scale = np.where(client_supply > 0, client_supply, fallback)
        self.scale[self.n_retail :] = 0.0
        for m in range(self.n_retail, M):
            self.scale[m] = self.scale[self.parent == m].sum(axis=0)
        #: (M, g) warehouse targets
        self.target = p["target"] * self.scale
        #: (g,) the signal's unit: supply per retailer ``S / M_retail`` (fixed at setup)
        self.unit = self.supply / self.n_retail

        net = self.merchant_network
        if net is None or not p["mix_prices"]:
            self.mixing = scipy.sparse.identity(M, format="csr")
        else:
            self.mixing = scipy.sparse.csr_array(
                (net.mixing, net.indices, net.indptr), shape=(M, M)
            )
        if net is None:
            self._edges = np.empty((0, 2), dtype=np.int64)
            self._edge_weight = np.empty(0)
        else:
            r = np.repeat(np.arange(M), np.diff(net.indptr))
            keep = r < net.indices
            self._edges = np.stack([r[keep], net.indices[keep].astype(np.int64)], axis=1)
            self._edge_weight = net.mixing[keep]
        n_e = self._edges.shape[0]
        #: (n_edges, M) signed incidence: +1 at the shipper a, -1 at the receiver b
        self._incidence = scipy.sparse.csr_array(
            (
                np.concatenate([np.ones(n_e), -np.ones(n_e)]),
                (np.tile(np.arange(n_e), 2), self._edges.T.reshape(-1)),
            ),
            shape=(n_e, M),
        )
        ta, tb = self.target[self._edges[:, 0]], self.target[self._edges[:, 1]]
        self._edge_scale = (
            p["rebalance"] * self._edge_weight[:, None] * 2 * ta * tb / (ta + tb)
            if n_e
            else np.empty((0, g))
        )

    def _check_rule(self, rule: PriceRule) -> None:
        """One-line RuleError for a rule this design cannot run (here: a composite rule; the
        message is the one the study tables record, kept as it was; ``design="books"``
        runs extragradient and newton merchants)."""
        if rule.engine is not None:
            raise RuleError(
                f"rule {rule.name!r} runs on the {rule.engine!r} engine (trial excess-demand "
                "evaluations); merchants only see their inventory: use entropic, "
                "multiplicative or another one-kernel rule"
            )

    # ---- construction ---------------------------------------------------------------------
    def _place(self, M: int, layers: int, fan_in: int, seed: int):
        """Each agent's retail merchant (n,), retail sites (M,), merchant edges (E, 2) in
        merchant ids and each merchant's parent (-1 at the top layer); merchants of layer
        1 are ``0..M-1``, each higher layer's follow."""
        n, net = self.economy.n_agents, self.network
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        if M == 1:
            owner, sites, peers = np.zeros(n, dtype=np.int64), np.zeros(1, np.int64), None
        else:
            owner, sites, peers = _territories(net.indptr, net.indices, M, rng)
            if owner is None:
                raise LayeredError("layered market: the agent graph is disconnected")
        merchant_of, edges, parent = owner, [], []
        size, offset = M, 0
        for _ in range(layers - 1):
            k = max(1, -(-size // fan_in))
            if k == 1:
                up, up_peers = np.zeros(size, dtype=np.int64), None
            else:
                g = from_edges(peers, size, "merchants")
                up, _, up_peers = _territories(g.indptr, g.indices, k, rng)
            children = offset + np.arange(size)
            edges.append(np.stack([children, offset + size + up], axis=1))
            parent.append(offset + size + up)
            offset, size, peers = offset + size, k, up_peers
        if peers is not None:
            edges.append(offset + peers)
        parent.append(np.full(size, -1, dtype=np.int64))
        edges = np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64)
        return merchant_of, sites, edges, np.concatenate(parent)

    # ---- the market day ------------------------------------------------------------------
    def _trade(self, coords, inventory, cash):
        """One market day at posted ``coords``: (allocation, orders, inventory, cash)."""
        prices = prices_from_coords(coords, self.space)  # (M, g)
        logp = np.ascontiguousarray(np.log(prices)[self.merchant_of])  # (n, g)
        excess = np.empty_like(logp)
        use_threads(kernel.n_blocks(logp.shape[0]))
        kernel.excess_demand_rows(logp, True, *self._arrays, excess)
        allocation = self.economy.endowments + excess
        orders = self.assign @ excess  # (M, g)
        inventory = inventory - orders
        cash = cash + np.einsum("mj,mj->m", prices, orders)
        if self._edges.shape[0]:
            fill = inventory / self.target
            a, b = self._edges[:, 0], self._edges[:, 1]
            shipped = self._edge_scale * (fill[a] - fill[b])  # (n_edges, g), a -> b
            value = np.einsum("ej,ej->e", shipped, np.sqrt(prices[a] * prices[b]))
            inventory = inventory - self._incidence.T @ shipped
            cash = cash + self._incidence.T @ value
        return allocation, orders, inventory, cash

    def init_state(self, prices) -> LayeredState:
        """Post ``prices`` ((g,) for all, or (M, g) per merchant) and run market day 0."""
        M, g = self.n_merchants, self.economy.n_goods
        prices = np.asarray(prices, dtype=float)
        if prices.shape not in ((g,), (M, g)):
            raise LayeredError(
                f"layered market: initial prices must be ({g},) or ({M}, {g}), got {prices.shape}"
            )
        if not (np.isfinite(prices).all() and (prices > 0).all()):
            raise LayeredError("layered market: initial prices must be finite and positive")
        prices = np.broadcast_to(prices, (M, g))
        prices = prices / prices[:, [self.economy.numeraire]]
        coords = coords_from_prices(prices, self.space)
        inventory = self.params["initial_inventory"] * self.target
        allocation, orders, inventory, cash = self._trade(coords, inventory, np.zeros(M))
        buffers = self.rule.init_buffers(np.arange(M), g)
        own = self._signal(orders, inventory)
        return LayeredState(coords, inventory, cash, orders, own, own.copy(), allocation,
                            buffers, 0)  # fmt: skip

    def merchant_signal(self, state: LayeredState) -> np.ndarray:
        """What each merchant feeds its rule, from its own books; (M, g)."""
        return self._signal(state.orders, state.inventory)

    def _signal(self, orders, inventory):
        p = self.params
        deficit = (self.target - inventory) / (p["target"] * self.unit)
        return p["flow_gain"] * orders / self.unit + p["inventory_gain"] * deficit

    def step(self, state: LayeredState, spare=None):
        """Update prices from inventories, then run one market day: ``(new_state, metrics)``.

        ``spare`` is accepted for interface compatibility and ignored (the step is pure).
        """
        signal = self.rule_signal(state)
        rule = self.rule
        params = rule.round_params(state.round) if rule.scheduled else self._rule_params
        u = np.ascontiguousarray(self.mixing @ state.coords)
        buffers = state.buffers.copy()
        for m in range(self.n_merchants):  # merchants are few; agents never loop
            rule.kernel(u[m], signal[m], buffers[m], params)
        new = self.trade_day(state, u, buffers, state.round + 1)
        return new, self.metrics(new)

    def rule_signal(self, state: LayeredState) -> np.ndarray:
        """What each merchant's rule steps on after ``state``'s day: its tracker (or, under
        ``local``, its own signal), clipped / normalized per merchant as the rule asks; (M, g)."""
        tracking = self.signal == "tracking"
        signal = np.ascontiguousarray(state.tracker if tracking else state.own_signal)
        if self.rule.signal_transform[0] != transforms.NONE:  # clip / normalize, per merchant
            num = self.economy.numeraire
            signal = transforms.transform_rows(signal, num, *self.rule.signal_transform)
        return signal

    def trade_day(self, state: LayeredState, coords, buffers, round_: int) -> LayeredState:
        """Post ``coords`` (M, g) (the numeraire pinned, price space floored), run one market
        day after ``state``'s and read the books: the new state (``buffers`` as given)."""
        num = self.economy.numeraire
        u = coords
        if self.space == "log":
            u[:, num] = 0.0
        else:
            u[:, num] = 1.0
            u = np.where(u < PRICE_FLOOR, PRICE_FLOOR, u)
        allocation, orders, inventory, cash = self._trade(u, state.inventory, state.cash)
        own = self._signal(orders, inventory)
        if self.signal == "tracking":
            tracker = self.mixing @ state.tracker + own - state.own_signal
        else:
            tracker = own
        return LayeredState(u, inventory, cash, orders, own, tracker, allocation, buffers,
                            round_)  # fmt: skip

    # ---- views ---------------------------------------------------------------------------
    def metrics(self, state: LayeredState) -> LayeredMetrics:
        prices = prices_from_coords(state.coords, self.space)
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.log(prices)
        fill = state.inventory / self.target
        total = state.inventory.sum(axis=0)
        return LayeredMetrics(
            round=state.round,
            excess=state.orders.sum(axis=0) / self.supply,
            mean_price=self.clients @ prices / self.economy.n_agents,
            log_min=logp.min(axis=0),
            log_max=logp.max(axis=0),
            inventory_gap=np.where(self._priced, np.abs(total / self.target.sum(axis=0) - 1), 0.0),
            fill_min=fill.min(axis=0),
            fill_max=fill.max(axis=0),
        )

    def merchant_prices(self, state: LayeredState) -> np.ndarray:
        """Each merchant's posted prices, numeraire = 1; (M, g)."""
        return prices_from_coords(state.coords, self.space)

    def prices(self, state: LayeredState) -> np.ndarray:
        """Prices each agent faces: (n, g); (1, g) for the central market (one merchant)."""
        p = self.merchant_prices(state)
        return p[:1] if self.network.is_central else p[self.merchant_of]

    def messages_per_round(self) -> dict:
        """Messages and float64 values one round sends (see the module docstring)."""
        g, n = self.economy.n_goods, self.economy.n_agents
        n_e = self._edges.shape[0]
        messages = 2 * n + 2 * 2 * n_e + n_e
        floats = 2 * n * g + 2 * 2 * n_e * g + n_e * (g + 1)
        return {"exchanges": 1, "messages": messages, "floats": floats}


class BooksMarket(LayeredMarket):
    """The ``books`` design: the same market, merchants price with a rule of
    :mod:`tatonnet.environment.trade.merchant_rules` (optimistic, extragradient, broyden).

    Parameters: those of :class:`LayeredMarket`, plus ``merchant_rule`` (None: from the
    rule's name, :data:`MERCHANT_RULE_OF`). ``rule`` gives the step size (and its
    schedule), the geometry, the signal transform and, for broyden, ``damping`` and
    ``max_step`` where it has them; composite rules (extragradient, newton) are welcome.

    Attributes (beyond :class:`LayeredMarket`'s): ``merchant_rule`` (the
    :class:`~tatonnet.environment.trade.merchant_rules.MerchantRule`), ``days_per_round``
    (market days one round runs: 2 for extragradient).
    """

    def __init__(self, economy: Economy, network: Network, rule: PriceRule,
                 merchant_rule: str | None = None, **params):  # fmt: skip
        if not isinstance(rule, PriceRule):
            raise RuleError(f"layered market: expected a PriceRule, got {type(rule).__name__}")
        name = MERCHANT_RULE_OF.get(rule.name) if merchant_rule is None else merchant_rule
        if name is None:
            raise LayeredError(
                f"layered market (books): rule {rule.name!r} has no merchant version; use "
                f"one of {sorted(MERCHANT_RULE_OF)} or set merchant_rule to one of "
                f"{sorted(merchant_rules.MERCHANT_RULES)}"
            )
        if name not in merchant_rules.MERCHANT_RULES:
            raise LayeredError(
                f"layered market (books): merchant_rule must be one of "
                f"{sorted(merchant_rules.MERCHANT_RULES)}, got {name!r}"
            )
        self.merchant_rule = merchant_rules.make_merchant_rule(name, rule)
        if self.merchant_rule.log_only and rule.space != "log":
            raise LayeredError(
                f"layered market (books): merchant rule {name!r} steps in log-prices; "
                f"got space={rule.space!r}"
            )
        if self.merchant_rule.log_only and rule.signal_transform[0] != transforms.NONE:
            raise LayeredError(
                f"layered market (books): merchant rule {name!r} takes a Newton step, not a "
                "step on the signal: no clip or normalize"
            )
        self.days_per_round = self.merchant_rule.days_per_round
        super().__init__(economy, network, rule, **params)
        #: whether merchants mix with neighbours (their Jacobian estimates too)
        self.mixing_merchants = self.merchant_network is not None and self.params["mix_prices"]

    def _check_rule(self, rule: PriceRule) -> None:
        return None  # the merchant rule replaces the engine: every rule gives its step

    def init_state(self, prices) -> LayeredState:
        state = super().init_state(prices)
        buffers = self.merchant_rule.init_buffers(self, state.coords, state.orders)
        return dataclasses.replace(state, buffers=buffers)

    def market_days(self, state: LayeredState) -> tuple[LayeredState, ...]:
        """The ``days_per_round`` market days of the round after ``state`` (the last one is
        the round's new state)."""
        rule = self.rule
        step = rule.round_params(state.round)[0] if rule.scheduled else rule.step_size
        return self.merchant_rule.round(self, state, step)

    def step(self, state: LayeredState, spare=None):
        """One round of the merchant rule (``days_per_round`` market days)."""
        new = self.market_days(state)[-1]
        return new, self.metrics(new)

    def messages_per_round(self) -> dict:
        day = super().messages_per_round()
        n_e = self._edges.shape[0]
        extra = self.merchant_rule.extra_floats(self.economy.n_goods, self.signal == "tracking")
        messages, floats = day["messages"], day["floats"]
        if extra and self.mixing_merchants:
            messages, floats = messages + 2 * n_e, floats + 2 * n_e * extra
        k = self.days_per_round
        return {"exchanges": k, "messages": k * messages, "floats": k * floats}


#: The merchant rule a central rule becomes in the ``books`` design.
MERCHANT_RULE_OF = {"optimistic": "optimistic", "extragradient": "extragradient",
                    "newton": "broyden"}  # fmt: skip

#: The layered market's designs: ``kernel`` (the rule's kernel on the book signal, one day
#: a round; the default) and ``books`` (merchant rules, :class:`BooksMarket`).
DESIGNS = {"kernel": LayeredMarket, "books": BooksMarket}


def make_layered_dynamics(economy: Economy, network: Network, rule=None, **params):
    """The layered market with the interface of :class:`tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`.

    ``rule``: a PriceRule, a registered rule name, or None (``multiplicative`` with its
    default step; under ``design="books"`` the rule behind ``merchant_rule``, default
    ``optimistic``). ``params``: see :data:`DEFAULTS` and :class:`LayeredMarket`, plus
    ``design`` (``"kernel"``, the default, or ``"books"``: :class:`BooksMarket`) and, for
    ``books``, ``merchant_rule``.

    >>> import numpy as np
    >>> from tatonnet.agents.utility import Family
    >>> from tatonnet.environment.economy import Economy
    >>> from tatonnet.environment.network import Network
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0]]); a = np.full((2, 2), 0.5)
    >>> econ = Economy(e, a, np.full(2, Family.COBB_DOUGLAS, np.int8), np.ones(2))
    >>> dyn = make_layered_dynamics(econ, Network.central(2), "entropic", step_size=0.5)
    >>> state = dyn.init_state(np.array([1.0, 2.0]))
    >>> for _ in range(200):
    ...     state, metrics = dyn.step(state)
    >>> bool(metrics.excess_demand < 1e-8), np.round(dyn.prices(state), 6)
    (True, array([[1., 1.]]))
    """
    design = params.pop("design", "kernel")
    if not isinstance(design, str) or design not in DESIGNS:
        raise LayeredError(f"layered market: design must be one of {list(DESIGNS)}, got {design!r}")
    market_keys = set(DEFAULTS)
    if design == "books":
        market_keys.add("merchant_rule")
    elif "merchant_rule" in params:
        raise LayeredError("layered market: merchant_rule needs design='books'")
    if rule is None:
        merchant = params.get("merchant_rule")
        default = {v: k for k, v in MERCHANT_RULE_OF.items()}.get(merchant, "optimistic")
        rule = make_rule("multiplicative" if design == "kernel" else default)
    elif isinstance(rule, str):
        hyper = {k: params.pop(k) for k in list(params) if k not in market_keys}
        rule = make_rule(rule, **hyper)
    return DESIGNS[design](economy, network, rule, **params)


def _territories(indptr, indices, k: int, rng: np.random.Generator):
    """Voronoi cells of ``k`` random sites on a CSR graph (hops; ties as scipy breaks them).

    Returns ``(owner (n,), sites (k,), edges (E, 2))``: each node's site index, the sorted
    sites, and the pairs ``a < b`` of cells joined by a graph edge; ``owner`` is None if
    some node cannot reach any site (a disconnected graph).
    """
    n = indptr.size - 1
    sites = np.sort(rng.choice(n, k, replace=False))
    adj = scipy.sparse.csr_array((np.ones(indices.size), indices, indptr), shape=(n, n))
    _, _, sources = scipy.sparse.csgraph.dijkstra(
        adj, directed=False, indices=sites, unweighted=True, min_only=True,
        return_predecessors=True,
    )  # fmt: skip
    if (sources < 0).any():
        return None, sites, None
    index = np.full(n, -1, dtype=np.int64)
    index[sites] = np.arange(k)
    owner = index[sources]
    rows = np.repeat(np.arange(n), np.diff(indptr))
    a, b = owner[rows], owner[indices]
    cross = a < b
    keys = sorted_unique(a[cross] * k + b[cross])
    return owner, sites, np.stack(np.divmod(keys, k), axis=1)
