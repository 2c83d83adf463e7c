"""The driver's view of a shard-built economy: sizes and sums, agent rows only on request.

When the shards build their own rows (scenario ``builder = "shards"`` with a sharded
engine), no process holds the whole economy. ``MarketModel`` then gets an
:class:`EconomyView` and a :class:`NetworkView` in place of the
:class:`~tatonnet.environment.economy.Economy` and
:class:`~tatonnet.environment.network.Network`:

* what a run needs is O(goods) or O(shards) and computed on the shards: the supply,
  aggregate excess demand at a price vector (the reference equilibrium solve and its
  stability), the Cobb–Douglas exchange matrix, the edge count — each reduced in block
  order, so the numbers are the bits the whole economy gives;
* anything per agent (``endowments``, ``demand``, ``to_networkx`` …) gathers every shard
  into one :class:`Economy` / :class:`Network` on first use and keeps it: for inspecting
  small runs, never on a large run's path.
"""

from __future__ import annotations

import functools

import numpy as np

from tatonnet.agents.utility import FAMILY_NAMES
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import kernel


class EconomyView:
    """An economy whose rows live on the shards of ``engine`` (see the module docstring)."""

    block_supply = True

    def __init__(self, engine, scenario):
        self._engine = engine
        self.n_agents, self.n_goods = scenario.n_agents, scenario.n_goods
        self.numeraire = scenario.numeraire
        self.goods = tuple(scenario.good_names)
        self._families = {int(FAMILY_NAMES[g.utility]) for g in scenario.agents}

    @property
    def supply(self) -> np.ndarray:
        return self._engine.supply

    def families(self) -> set[int]:
        """The utility family codes present."""
        return set(self._families)

    def aggregate_excess_demand(self, prices: np.ndarray) -> np.ndarray:
        """``sum_i z_i(p)`` at one price vector (g,), summed on the shards in block order."""
        return self._engine.aggregate(np.asarray(prices, dtype=float))

    def relative_excess_demand(self, prices: np.ndarray) -> np.ndarray:
        return self.aggregate_excess_demand(prices) / self.supply

    def cobb_douglas_matrix(self) -> np.ndarray:
        """``M = sum_i alpha_i e_i^T / S`` (g, g), alpha the normalized shares."""
        return kernel.sum_blocks(self._engine.gather("cobb_douglas_blocks")) / self.supply[:, None]

    @functools.cached_property
    def whole(self) -> Economy:
        """Every shard's rows in one Economy (O(agents): inspection of small runs only)."""
        parts = self._engine.gather_rows()
        return Economy(
            *(np.concatenate([p[k] for p in parts]) for k in ("endowments", "shares",
                                                              "family", "sigma")),
            self.numeraire, self.goods, block_supply=True,
        )  # fmt: skip

    @functools.cached_property
    def group(self) -> np.ndarray:
        return np.concatenate([p["group"] for p in self._engine.gather_rows()])

    def __getattr__(self, name):  # endowments, shares, demand, utility, kernel_arrays, ...
        if name.startswith("_") or name == "whole":
            raise AttributeError(name)
        return getattr(self.whole, name)


class NetworkView:
    """A network whose CSR rows live on the shards of ``engine``."""

    def __init__(self, engine, scenario):
        self._engine = engine
        self.kind = scenario.network.kind
        self.n_agents = scenario.n_agents
        self.is_central = self.kind == "central"
        self.n_edges = 0 if self.is_central else engine.partition.n_edges

    @functools.cached_property
    def whole(self) -> Network:
        """The whole CSR gathered from the shards (O(edges): inspection only)."""
        if self.is_central:
            return Network.central(self.n_agents)
        parts = self._engine.gather("global_rows")
        indptr = np.concatenate(
            [[0], np.cumsum(np.concatenate([np.diff(p[0]) for p in parts]))]
        ).astype(np.int64)
        indices = np.concatenate([p[1] for p in parts]).astype(np.int32)
        mixing = np.concatenate([p[2] for p in parts])
        return Network(self.kind, self.n_agents, indptr, indices, mixing)

    def __getattr__(self, name):  # indptr, indices, degrees, neighbors, to_networkx, ...
        if name.startswith("_") or name == "whole":
            raise AttributeError(name)
        return getattr(self.whole, name)
