"""The Mesa agent: a view onto one row of the market's arrays, plus a per-agent reference round.

A :class:`Trader` stores nothing but its row index: ``agent.prices``,
``agent.endowment``, ``agent.demand``... read the model's arrays, so inspecting agents,
Mesa's ``DataCollector`` and the dashboard see exactly what the vectorized kernel computes.

:meth:`Trader.step` is the *reference path*: the same decentralized round written for one
agent in plain Python and numpy (reading neighbours' messages, then updating itself). It is
slow on purpose and exists so tests can show that the fused kernel computes the same
numbers (see :meth:`tatonnet.environment.model.MarketModel.reference_step`).
"""

from __future__ import annotations

import mesa
import numpy as np

from tatonnet.agents.rules import PRICE_FLOOR
from tatonnet.agents.utility import Family


class Trader(mesa.Agent):
    """One economic actor of a :class:`tatonnet.environment.model.MarketModel`.

    Attributes are views: ``prices`` (g,), ``endowment`` (g,), ``shares`` (g,),
    ``utility_family`` (str), ``sigma``, ``group`` (index of its scenario agent group),
    ``demand`` and ``excess_demand`` (g,) at its own prices, ``utility`` of its demand,
    ``neighbors`` (list of Trader).
    """

    def __init__(self, model, index: int):
        super().__init__(model)
        self.index = int(index)

    # ---- views -------------------------------------------------------------------------
    @property
    def prices(self) -> np.ndarray:
        return self.model.agent_prices(self.index)

    @property
    def endowment(self) -> np.ndarray:
        return self.model.economy.endowments[self.index]

    @property
    def shares(self) -> np.ndarray:
        return self.model.economy.shares[self.index]

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
        return self.model.economy.demand(self.prices[None, :], [self.index])[0]

    @property
    def excess_demand(self) -> np.ndarray:
        return self.demand - self.endowment

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

    # ---- the per-agent reference round ---------------------------------------------------
    def step(self) -> None:
        """Compute this agent's next state from its neighbours' messages (plain Python).

        Reads ``model.state`` (the current round, never written here) and writes this
        agent's row of ``model.reference_next``; :meth:`MarketModel.reference_step` swaps
        the two once every agent has stepped (a synchronous round).
        """
        model = self.model
        dyn, state, nxt, i = model.dynamics, model.state, model.reference_next, self.index
        net, rule = model.network, dyn.rule
        lo, hi = net.indptr[i], net.indptr[i + 1]
        neighbours, weights = net.indices[lo:hi], net.mixing[lo:hi]

        coords = weights @ state.coords[neighbours]  # message 1: neighbours' coordinates
        if dyn.signal == "tracking":
            mixed_tracker = weights @ state.tracker[neighbours]  # message 2: their trackers
            signal = state.tracker[i] * dyn.inv_scale[i]
        else:
            signal = state.excess[neighbours].sum(axis=0) * dyn.inv_scale[i]
        rule.kernel.py_func(coords, signal, state.buffers[i], rule.params())
        numeraire = model.economy.numeraire
        if rule.space == "log":
            coords[numeraire] = 0.0
            prices = np.exp(coords)
        else:
            coords[numeraire] = 1.0
            coords = np.where(coords < PRICE_FLOOR, PRICE_FLOOR, coords)
            prices = coords
        excess = model.economy.excess_demand(prices[None, :], [i])[0]
        nxt.coords[i] = coords
        nxt.excess[i] = excess
        if dyn.signal == "tracking":
            nxt.tracker[i] = mixed_tracker + excess - state.excess[i]
