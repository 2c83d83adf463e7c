"""Composite rounds written once for any set of rows: the whole network, or one shard's.

A composite rule (extragradient, Newton, proportional response) needs more per round than
the fused kernel's single pass, so its round is a :class:`RowRound`: a few **phases**,
each one message exchange followed by a vectorized computation on the rows it updates.
The rows are a :class:`Rows`: own rows ``0..o-1`` of source arrays of ``n_src`` rows — the
own rows first, then (on a shard) the ghost copies of out-of-shard neighbours, as in
:mod:`tatonnet.distributed.shard`.

* :class:`RowRoundDynamics` (the in-process dynamics, a
  :class:`~tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`) runs it on the
  whole network: ``n_src = o = n``, no ghosts, phases back to back;
* a shard of the sharded engine (:class:`tatonnet.distributed.composite_shard.CompositeShard`)
  runs the **same object** on its own rows, writing its neighbours' messages into the
  ghost rows before each phase.

Every per-row result is a function of that row's inputs alone, and every neighbourhood
sum is a scipy CSR product over the row's entries in its CSR (global-id) order, summed
from 0.0 in that order whatever the number of rows: so both give the same bits. Metrics
come from per-block partial sums aligned to global ids
(:func:`~tatonnet.environment.tatonnement.dynamics.state_partials`), reduced in block order.

The protocol of a round (``f`` maps field names to arrays; an exchanged field has
``n_src`` rows, any other field ``o``)::

    rows = round.prepare(rows)              # per-row constants, once per set of rows
    f = round.init(rows, prices)            # the state fields at round 0 (own rows)
    for p in range(len(round.exchanges)):   # one round
        # ... the fields named in round.exchanges[p] travel: ghost rows are written
        f.update(round.phase(p, rows, f, t))  # own rows of what phase p computes
    partials = round.partials(rows, f)

A phase returns fresh arrays (never views of its inputs) and mutates nothing, so a shard
can copy them into its ghosted storage and the in-process dynamics can keep the previous
state intact.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import scipy.sparse

from tatonnet.agents.rules import PRICE_FLOOR, PriceRule, transforms
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    MarketState,
    NetworkTatonnement,
    coords_from_prices,
    reduce_partials,
    state_partials,
    use_threads,
)

#: Largest |log-price| evaluated; beyond it (or NaN) an agent's excess demand is NaN.
EXP_SAFE = 700.0


def pin(coords: np.ndarray, numeraire: int, space: str) -> np.ndarray:
    """Pin the numeraire (log-price 0 / price 1) of every row of ``coords`` (n, g) in place
    and, in price space, floor prices at ``PRICE_FLOOR`` (NaN passes, to be reported)."""
    if space == "log":
        coords[:, numeraire] = 0.0
    else:
        coords[:, numeraire] = 1.0
        coords[coords < PRICE_FLOOR] = PRICE_FLOOR
    return coords


@dataclasses.dataclass(frozen=True, eq=False)
class Rows:
    """The rows a round updates and what they read (``o`` own rows, ``n_src`` sources).

    Attributes
    ----------
    start : int — global id of own row 0 (aligns the reduction blocks to global ids)
    indptr (o+1,), indices (nnz,), weights (nnz,) — the own rows' CSR over the source
        rows (closed neighbourhoods, entries in global-id order), Metropolis weights ``W``
    n_src : int — source rows: the own rows first, then ghosts
    endowments, shares (o, g); family, sigma (o,) — the own agents
    inv_scale : (o, g) — the signal scale ``c_i``
        (:meth:`~tatonnet.environment.tatonnement.dynamics.NetworkTatonnement._signal_scale`)
    numeraire : int
    extra : dict — per-row constants a round derives once (:meth:`RowRound.prepare`)
    """

    start: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    n_src: int
    endowments: np.ndarray
    shares: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    inv_scale: np.ndarray
    numeraire: int
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of_network(cls, economy: Economy, network: Network, inv_scale: np.ndarray) -> Rows:
        """Every agent of ``network`` (in this process: no ghosts)."""
        e, a, family, sigma = economy.kernel_arrays()
        return cls(0, network.indptr, network.indices, network.mixing, network.n_agents,
                   e, a, family, sigma, inv_scale, economy.numeraire)  # fmt: skip

    @property
    def n_own(self) -> int:
        return self.indptr.size - 1

    @property
    def arrays(self) -> tuple:
        """(endowments, shares, family, sigma), as the numba kernels take them."""
        return self.endowments, self.shares, self.family, self.sigma

    @functools.cached_property
    def mixing(self) -> scipy.sparse.csr_array:
        """W (o, n_src): the Metropolis weights of the own rows."""
        return scipy.sparse.csr_array((self.weights, self.indices, self.indptr),
                                      (self.n_own, self.n_src))  # fmt: skip

    @functools.cached_property
    def adjacency(self) -> scipy.sparse.csr_array:
        """A (o, n_src): 0/1 closed neighbourhoods (neighbourhood sums under ``local``)."""
        return scipy.sparse.csr_array((np.ones(self.indices.size), self.indices, self.indptr),
                                      (self.n_own, self.n_src))  # fmt: skip


class RowRound:
    """One composite rule's round on a :class:`Rows` (see the module docstring).

    Parameters
    ----------
    rule : PriceRule; signal : {"tracking", "local"}; numeraire : int; n_goods : int

    Attributes
    ----------
    exchanges : tuple of tuples of field names — what each agent sends each neighbour
        before each phase (one tuple per exchange, ``rule.exchanges_per_round`` of them)
    state_fields : the fields carried from round to round: the state a checkpoint keeps
    """

    state_fields: tuple[str, ...] = ("coords", "tracker", "excess", "buffers")
    exchanges: tuple[tuple[str, ...], ...] = ()

    def __init__(self, rule: PriceRule, signal: str, numeraire: int, n_goods: int):
        self.rule, self.signal, self.numeraire, self.n_goods = rule, signal, numeraire, n_goods
        self.space = rule.space
        self.tracking = signal == "tracking"

    # ---- what travels ----------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of one row of the exchanged field ``name`` (default: a g-vector)."""
        return (self.n_goods,)

    def columns(self, name: str) -> np.ndarray | None:
        """The columns of field ``name`` that travel (None: all of it)."""
        return None

    def width(self, name: str) -> int:
        """float64 values of field ``name`` one row sends."""
        cols = self.columns(name)
        return math.prod(self.shape(name)) if cols is None else len(cols)

    def message_floats(self, p: int) -> int:
        """float64 values one agent sends one neighbour in exchange ``p``."""
        return sum(self.width(name) for name in self.exchanges[p])

    # ---- the round ---------------------------------------------------------------------------
    def prepare(self, rows: Rows) -> Rows:
        """``rows`` with the per-row constants this round needs (default: none)."""
        return rows

    def init(self, rows: Rows, prices: np.ndarray) -> dict[str, np.ndarray]:
        """The state fields at round 0 from the own agents' prices (o, g), numeraire 1."""
        raise NotImplementedError

    def phase(self, p: int, rows: Rows, f: dict, round_: int) -> dict[str, np.ndarray]:
        """Phase ``p`` of round ``round_`` (global, from 0): the own rows it computes."""
        raise NotImplementedError

    def partials(self, rows: Rows, f: dict) -> np.ndarray:
        """Per-block partials (b, N_PARTIALS, g) of the own rows' state."""
        o = rows.n_own
        return state_partials(f["coords"][:o], f["excess"][:o], self.space, rows.start)

    # ---- shared pieces -------------------------------------------------------------------------
    def initial_state(self, rows: Rows, prices: np.ndarray) -> dict[str, np.ndarray]:
        """Coordinates, excess demand (tracker = excess) and the rule's buffers at round 0."""
        coords = np.ascontiguousarray(coords_from_prices(prices, self.space))
        excess = self.excess(rows, coords)
        ids = np.arange(rows.start, rows.start + rows.n_own)
        return {"coords": coords, "tracker": excess.copy(), "excess": excess,
                "buffers": self.rule.init_buffers(ids, self.n_goods)}  # fmt: skip

    def excess(self, rows: Rows, coords: np.ndarray) -> np.ndarray:
        """Each own agent's excess demand at its own coordinates ``coords`` (o, g)."""
        out = np.empty_like(coords)
        log_space = self.space == "log"
        # rows whose prices over- or underflow (a diverging run) report NaN excess demand,
        # which the status check reads as divergence, instead of failing in the kernel
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = coords if log_space else np.log(coords)
            bad = ~(np.abs(logp) <= EXP_SAFE).all(axis=1)
        safe = np.where(bad[:, None], 0.0 if log_space else 1.0, coords) if bad.any() else coords
        kernel.excess_demand_rows(np.ascontiguousarray(safe), log_space, *rows.arrays, out)
        out[bad] = np.nan
        return out

    def signal_of(self, rows: Rows, tracker: np.ndarray | None, excess: np.ndarray) -> np.ndarray:
        """What each own agent reacts to (o, g): ``c_i y_i`` (tracking: own rows) or
        ``c_i sum_N[i] z_j`` (local: ``excess`` has the source rows), then the rule's
        signal transform (clip / normalize), if any."""
        if self.tracking:
            s = tracker[: rows.n_own] * rows.inv_scale
        else:
            s = (rows.adjacency @ excess) * rows.inv_scale
        return transforms.transform_rows(s, self.numeraire, *self.rule.signal_transform)

    def pin(self, coords: np.ndarray) -> np.ndarray:
        return pin(coords, self.numeraire, self.space)


class RowRoundDynamics(NetworkTatonnement):
    """In-process dynamics of a composite rule: its :class:`RowRound` on every agent.

    A subclass says which round (:meth:`make_round`) and which state class (``state_cls``,
    whose fields are the round's ``state_fields`` plus ``round``). ``row_round`` is the
    object the sharded engine hands its shards, so a shard runs this very round.
    """

    state_cls = MarketState

    def __init__(self, economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
        super().__init__(economy, network, rule, signal)
        self.row_round = self.make_round()
        self.rows = self.row_round.prepare(Rows.of_network(economy, network, self.inv_scale))

    def make_round(self) -> RowRound:
        raise NotImplementedError

    @property
    def mixing(self) -> scipy.sparse.csr_array:
        """W (n, n): Metropolis mixing weights over closed neighbourhoods."""
        return self.rows.mixing

    @property
    def adjacency(self) -> scipy.sparse.csr_array:
        """A (n, n): 0/1 closed-neighbourhood adjacency."""
        return self.rows.adjacency

    def init_state(self, prices: np.ndarray) -> MarketState:
        """State at round 0 from initial prices (g,) for all, or (n, g) per agent."""
        n, g = self.economy.n_agents, self.economy.n_goods
        prices = np.broadcast_to(np.asarray(prices, dtype=float), (n, g))
        prices = prices / prices[:, [self.economy.numeraire]]
        use_threads(self.n_blocks)
        return self.state_cls(**self.row_round.init(self.rows, prices), round=0)

    def step(self, state: MarketState, spare: MarketState | None = None):
        """One round (every exchange); returns ``(new_state, metrics)``. ``spare`` is unused."""
        rr, rows = self.row_round, self.rows
        f = {name: getattr(state, name) for name in rr.state_fields}
        use_threads(self.n_blocks)
        for p in range(len(rr.exchanges)):
            f.update(rr.phase(p, rows, f, state.round))
        new = self.state_cls(**{name: f[name] for name in rr.state_fields}, round=state.round + 1)
        partials = rr.partials(rows, f)
        return new, reduce_partials(new.round, partials, self.supply, self.economy.n_agents)
