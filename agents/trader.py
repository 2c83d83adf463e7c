"""The Mesa agent: a view onto one row of the market's arrays, plus a per-agent update.

A :class:`Trader` stores nothing but its row index (which is also its Mesa ``unique_id``):
``agent.prices``, ``agent.endowment``, ``agent.demand``... read the model's arrays, so
inspecting agents, Mesa's ``DataCollector`` and the dashboard see exactly what the
vectorized kernel computes. Every array a view returns is read-only (``writeable=False``):
writing ``agent.endowment[0] = 99`` raises instead of silently changing (or not changing)
the economy. The one writable attribute is ``agent.prices = p`` (network dynamics in this
process), which writes the agent's state row consistently.

:meth:`Trader.step` is the *per-agent path*: one agent's decentralized update written in
plain Python and numpy. Mesa calls it (``model.agents.shuffle_do("step")``, ``do``,
``select(...).do``): each call updates one agent against the *current* state, so a
shuffled sweep is asynchronous (Gauss–Seidel) tâtonnement. Inside
:meth:`~tatonnet.environment.model.MarketModel.reference_step` the same update writes into
the next round's arrays instead, so a sweep is the synchronous round, which tests compare
with the fused kernel. It is slow on purpose (a Python call per agent); the fused
synchronous round is :meth:`~tatonnet.environment.model.MarketModel.step`.
"""

from __future__ import annotations

import mesa
import numpy as np

from tatonnet.agents.rules import PRICE_FLOOR
from tatonnet.agents.utility import Family


class AgentRemovalError(RuntimeError):
    """A :class:`Trader` cannot be removed from a running market (one-line message)."""


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (writes raise ``ValueError``)."""
    view = array.view()
    view.flags.writeable = False
    return view


class Trader(mesa.Agent):
    """One economic actor of a :class:`tatonnet.environment.model.MarketModel`.

    Attributes are views, all read-only: ``prices`` (g,), ``endowment`` (g,), ``shares``
    (g,), ``utility_family`` (str), ``sigma``, ``group`` (index of its scenario agent
    group), ``demand`` and ``excess_demand`` (g,) at its own prices, ``utility`` of its
    demand, ``wealth`` (value of its endowment), ``neighbors`` (list of Trader).
    ``unique_id`` and ``index`` are the agent's row in those arrays (0 ... n_agents - 1).

    ``agent.prices = p`` (g,) sets this agent's prices (network dynamics in this process):
    the row is normalised to the numeraire, its excess demand recomputed and its tracker
    moved by the same change, so ``sum_i y_i = sum_i z_i`` still holds.
    """

    def __init__(self, model, index: int):
        self.index = int(index)  # before Mesa registers the agent: unique_id reads it
        self._registering = True
        super().__init__(model)
        del self._registering

    # ---- identity ----------------------------------------------------------------------
    @property
    def unique_id(self) -> int:
        """The agent's row id (Mesa's own counter is not used: ids follow the arrays)."""
        return self.index

    @unique_id.setter
    def unique_id(self, value) -> None:
        # Mesa's Agent.__init__ writes None, then register_agent its counter: both are
        # registration, not a change of identity; anything else is refused.
        if value is None or self.__dict__.get("_registering", False):
            return
        if value != self.index:
            raise AttributeError(
                f"unique_id of Trader {self.index} is its row id and cannot be changed"
            )

    # ---- views -------------------------------------------------------------------------
    @property
    def prices(self) -> np.ndarray:
        """This agent's prices (g,), numeraire = 1; read-only (assign to set them)."""
        return read_only(self.model.agent_prices(self.index))

    @prices.setter
    def prices(self, value) -> None:
        self.model.set_agent_prices(self.index, value)

    @property
    def endowment(self) -> np.ndarray:
        # read-only: writing an endowment would create or destroy goods
        return read_only(self.model.economy.endowments[self.index])

    @property
    def shares(self) -> np.ndarray:
        return read_only(self.model.economy.shares[self.index])

    @property
    def utility_family(self) -> str:
        return Family(int(self.model.economy.family[self.index])).name.lower().replace("_", "-")

    @property
    def sigma(self) -> float:
        return float(self.model.economy.sigma[self.index])

    @property
    def group(self) -> int:
        return int(self.model.group[self.index])

    @property
    def demand(self) -> np.ndarray:
        p = self.model.agent_prices(self.index)
        return read_only(self.model.economy.demand(p[None, :], [self.index])[0])

    @property
    def excess_demand(self) -> np.ndarray:
        return read_only(self.demand - self.model.economy.endowments[self.index])

    @property
    def utility(self) -> float:
        return float(self.model.economy.utility(self.demand[None, :], [self.index])[0])

    @property
    def wealth(self) -> float:
        return float(self.prices @ self.endowment)

    @property
    def neighbors(self) -> list[Trader]:
        network = self.model.network
        if network.is_central:
            return []
        return [self.model.trader(j) for j in network.neighbors(self.index)]

    def __repr__(self) -> str:
        return f"Trader({self.index}, {self.utility_family}, prices={np.round(self.prices, 4)})"

    def remove(self) -> None:
        """Refused: raises :class:`AgentRemovalError`.

        A trader is a row of the economy's arrays. Taking it out would change the supply
        of every good it owns (goods conservation is checked against the economy), the
        neighbours' Metropolis weights (the mixing matrix must stay doubly stochastic) and
        the trackers' sum; a running market cannot do that consistently. Build a
        scenario without the agent instead.
        """
        raise AgentRemovalError(
            f"Trader {self.index} cannot be removed: it is a row of the economy's arrays "
            "(its goods, its network weights and its tracker are part of the run); build a "
            "scenario without it instead"
        )

    # ---- the per-agent update ------------------------------------------------------------
    def step(self) -> None:
        """One agent's tâtonnement update in plain Python (the slow, per-agent path).

        Network dynamics: the agent mixes its neighbours' current coordinates with its
        Metropolis weights, applies the rule to its signal, and recomputes its excess
        demand at its new prices::

            u_i <- sum_{j in N[i]} W_ij u_j + rule(signal_i)
            z_i <- d_i(p(u_i)) - e_i
            y_i <- sum_{j in N[i]} W_ij y_j + z_i(new) - z_i(old)      (tracking)

        Called by Mesa (``model.agents.shuffle_do("step")``) it updates ``model.state`` in
        place against the current values: asynchronous tâtonnement. The tracker is
        averaged by pairwise exchanges with each neighbour ``j``: ``j`` gives
        ``W_ij (y_j - y_i)`` to ``i`` (so ``y_i`` becomes the weighted mean above) and the
        neighbours' trackers change by the opposite amounts, which keeps the
        gradient-tracking invariant ``sum_i y_i = sum_i z_i`` after every agent step.
        Inside :meth:`MarketModel.reference_step` it reads the round's state and writes
        row ``i`` of ``model.reference_next`` (the synchronous round, neighbours
        untouched).

        Central dynamics: the auctioneer is not an agent. A trader is a price taker whose
        only act is to compute its demand at the posted prices (``agent.demand``) for the
        auctioneer to aggregate in :meth:`MarketModel.step`; the state holds only that
        aggregate, so an agent step changes nothing.
        """
        model = self.model
        model.check_per_agent()
        if model.network.is_central:
            return
        state, nxt = model.state, model.reference_next
        neighbours, weights, coords, excess, mixed_tracker = self._update(state)
        i = self.index
        if nxt is not None:  # synchronous: the round's state is read-only here
            nxt.coords[i] = coords
            nxt.excess[i] = excess
            if mixed_tracker is not None:
                nxt.tracker[i] = mixed_tracker + excess - state.excess[i]
            return
        if mixed_tracker is not None:
            y = state.tracker
            others = neighbours != i
            j, w = neighbours[others], weights[others]
            flow = w[:, None] * (y[j] - y[i])  # what each neighbour gives agent i
            y[j] -= flow
            y[i] += flow.sum(axis=0) + (excess - state.excess[i])
        state.coords[i] = coords
        state.excess[i] = excess
        model.state_changed()

    def _update(self, state):
        """This agent's next coordinates and excess demand from ``state`` (not written).

        Returns ``(neighbours, weights, coords, excess, mixed_tracker)``; the rule's
        buffers of row ``i`` are updated in place; ``mixed_tracker`` is None unless the
        signal is ``tracking``.
        """
        model = self.model
        dyn, i = model.dynamics, self.index
        net, rule = model.network, dyn.rule
        lo, hi = net.indptr[i], net.indptr[i + 1]
        neighbours, weights = net.indices[lo:hi], net.mixing[lo:hi]

        coords = weights @ state.coords[neighbours]  # message 1: neighbours' coordinates
        mixed_tracker = None
        if dyn.signal == "tracking":
            mixed_tracker = weights @ state.tracker[neighbours]  # message 2: their trackers
            signal = state.tracker[i] * dyn.inv_scale[i]
        else:
            signal = state.excess[neighbours].sum(axis=0) * dyn.inv_scale[i]
        numeraire = model.economy.numeraire
        # the rule's options: its signal transform, and the schedule's step in this round
        # (state.round: the rounds taken so far, the same count the fused round uses)
        signal = rule.prepare_signal(signal, numeraire)
        rule.kernel.py_func(coords, signal, state.buffers[i], rule.round_params(state.round))
        if rule.space == "log":
            coords[numeraire] = 0.0
            prices = np.exp(coords)
        else:
            coords[numeraire] = 1.0
            coords = np.where(coords < PRICE_FLOOR, PRICE_FLOOR, coords)
            prices = coords
        excess = model.economy.excess_demand(prices[None, :], [i])[0]
        return neighbours, weights, coords, excess, mixed_tracker
