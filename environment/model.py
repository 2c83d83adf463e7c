"""The Mesa model: owns the market's arrays, steps the fused kernel, collects data.

>>> from tatonnet.environment.model import MarketModel
>>> model = MarketModel("cobb-douglas", agents=200, rounds=50)
>>> model.step()
>>> model.agents[0].prices.shape, model.steps
((4,), 1)
"""

from __future__ import annotations

import numpy as np
from mesa import Model
from mesa.datacollection import DataCollector

from tatonnet.agents.trader import Trader
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.scenario import (
    Scenario,
    build_economy,
    build_network_for,
    initial_prices,
    load_scenario,
)
from tatonnet.environment.tatonnement import status
from tatonnet.environment.tatonnement.dynamics import (
    MarketState,
    RoundMetrics,
    prices_from_coords,
    reduce_partials,
    state_partials,
)

#: Larger models create Mesa agents only on demand (``model.trader(i)``).
MESA_AGENTS_UP_TO = 200_000


class MarketModel(Model):
    """Decentralized (or central) tâtonnement of a scenario, as a Mesa model.

    Parameters
    ----------
    scenario : Scenario or str
        A validated scenario, or a built-in name / TOML path.
    engine : callable or None
        ``engine(economy, network, rule, signal, initial_prices, group)`` returning a
        distributed engine (e.g. ``functools.partial(tatonnet.distributed.engine.ShardEngine,
        n_shards=4, use_ray=True)``); None runs the fused kernel in this process, where
        every :class:`Trader` is a view onto ``state``.
    mesa_agents : bool or None
        Create one Mesa agent per economic agent up front (default: up to
        ``MESA_AGENTS_UP_TO`` agents; beyond, ``trader(i)`` creates them on demand).
    **overrides
        Passed to :meth:`Scenario.with_overrides` (``agents``, ``goods``, ``graph``,
        ``seed``, ``rule``, ``step_size``, ``rounds``, ``tol``, ``signal``).

    Attributes
    ----------
    config : Scenario — the scenario actually run
    economy, network, dynamics — see :mod:`environment`
    state : MarketState — the arrays every :class:`Trader` views
    metrics : RoundMetrics — global metrics of the current round
    verdict : status.Verdict or None — set when the run stops (converged / diverged)
    datacollector : DataCollector — per-round ``excess_demand``, ``price_dispersion``,
        ``price_<good>`` (network-mean price) and ``excess_<good>`` (relative to supply)
    """

    def __init__(
        self,
        scenario: Scenario | str = "default",
        *,
        engine=None,
        mesa_agents: bool | None = None,
        **overrides,
    ):
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if any(v is not None for v in overrides.values()):
            scenario = scenario.with_overrides(**overrides)
        super().__init__(rng=scenario.seed)
        self.config = scenario
        self.economy, self.group = build_economy(scenario)
        self.network = build_network_for(scenario)
        rule = scenario.dynamics.make_rule()
        self.dynamics = make_dynamics(self.economy, self.network, rule, scenario.dynamics.signal)
        prices = initial_prices(scenario)
        self.reference_next: MarketState | None = None
        self._spare: MarketState | None = None
        if engine is None:
            self.engine = None
            self.state: MarketState | None = self.dynamics.init_state(prices)
            self.metrics: RoundMetrics = self._initial_metrics()
        else:
            self.engine = engine(
                self.economy, self.network, rule, scenario.dynamics.signal, prices, self.group
            )
            self.state = None
            self.metrics = self.engine.initial_metrics()
        self.verdict: status.Verdict | None = None
        n = self.economy.n_agents
        if mesa_agents is None:
            mesa_agents = n <= MESA_AGENTS_UP_TO
        self._traders: dict[int, Trader] = {}
        if mesa_agents:
            created = Trader.create_agents(self, n, index=list(range(n)))
            self._traders = dict(enumerate(created))

        reporters = {
            "excess_demand": lambda m: m.metrics.excess_demand,
            "price_dispersion": lambda m: m.metrics.price_dispersion,
        }
        for j, good in enumerate(self.economy.goods):
            reporters[f"price_{good}"] = lambda m, j=j: float(m.metrics.mean_price[j])
            reporters[f"excess_{good}"] = lambda m, j=j: float(m.metrics.excess[j])
        self.datacollector = DataCollector(model_reporters=reporters)
        self.datacollector.collect(self)

    # ---- stepping ------------------------------------------------------------------------
    def step(self) -> None:
        """One synchronous round with the fused kernel; stops the model on a final status."""
        if self.engine is not None:
            self.metrics = self.engine.step()
        else:
            new, self.metrics = self.dynamics.step(self.state, self._spare)
            self._spare, self.state = self.state, new
        self._after_round()

    @property
    def round(self) -> int:
        return self.engine.round if self.engine is not None else self.state.round

    def reference_step(self) -> None:
        """One round by the per-agent reference path: every ``Trader.step()`` in Python."""
        if self.network.is_central or self.engine is not None:
            raise ValueError("the per-agent reference path is for in-process network dynamics")
        if self.dynamics.rule.engine is not None:
            raise ValueError(
                f"the per-agent reference path runs fused-kernel rules only; rule "
                f"{self.dynamics.rule.name!r} has its own dynamics ({self.dynamics.rule.engine!r})"
            )
        s = self.state
        self.reference_next = MarketState(
            np.empty_like(s.coords), np.empty_like(s.tracker), np.empty_like(s.excess),
            s.buffers, s.round + 1,
        )  # fmt: skip
        self.agents.do("step")
        self.state, self.reference_next = self.reference_next, None
        self.metrics = self.metrics_of(self.state)
        self.steps += 1
        self._after_round()

    def _after_round(self) -> None:
        self.datacollector.collect(self)
        m, tol = self.metrics, self.config.dynamics.tol
        verdict = status.check_stop(m.excess_demand, m.price_dispersion, m.log_min, m.log_max, tol)
        if verdict is not None:
            self.verdict = verdict
            self.running = False

    def classify(self, references=()) -> status.Verdict:
        """The run's verdict with its evidence (:func:`status.classify_run`): the stopping
        one, or the end-of-run classification; ``references`` (list of (g,) equilibria)
        lets it name the equilibrium reached."""
        df = self.datacollector.get_model_vars_dataframe()
        prices = df[[f"price_{g}" for g in self.economy.goods]].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = np.log(prices)
        return status.classify_run(
            df["excess_demand"].to_numpy()[1:],
            df["price_dispersion"].to_numpy()[1:],
            logp[1:],
            numeraire=self.economy.numeraire,
            tol=self.config.dynamics.tol,
            references=references,
            space=self.dynamics.rule.space,
            stop=self.verdict,
        )

    # ---- views ---------------------------------------------------------------------------
    def metrics_of(self, state: MarketState) -> RoundMetrics:
        """Metrics of any state computed directly with numpy (no kernel partials)."""
        prices = self.dynamics.prices(state)
        logp = np.log(prices)
        excess = state.excess.sum(axis=0) / self.economy.supply
        return RoundMetrics(state.round, excess, prices.mean(axis=0), logp.min(0), logp.max(0))

    def _initial_metrics(self) -> RoundMetrics:
        """Round-0 metrics, reduced from per-block partials exactly as every engine does."""
        state, dyn = self.state, self.dynamics
        if self.network.is_central:
            return self.metrics_of(state)
        partials = state_partials(state.coords, state.excess, dyn.space)
        return reduce_partials(0, partials, self.economy.supply, self.economy.n_agents)

    def prices(self) -> np.ndarray:
        """Every agent's prices, numeraire = 1; (n_agents, g) (rows equal under central).

        With a distributed engine this gathers every shard: for inspection, not hot loops.
        """
        if self.engine is not None:
            return self.engine.prices()
        p = self.dynamics.prices(self.state)
        return np.broadcast_to(p, self.economy.endowments.shape)

    def agent_prices(self, i: int) -> np.ndarray:
        if self.engine is not None:
            return self.engine.agent_prices(i)
        row = self.state.coords[0 if self.network.is_central else i]
        return prices_from_coords(row, self.dynamics.space)

    def trader(self, i: int) -> Trader:
        """The Mesa agent of row ``i`` (global id ``i``), created on demand if need be."""
        if i not in self._traders:
            if not 0 <= i < self.economy.n_agents:
                raise IndexError(f"no agent {i}: ids run from 0 to {self.economy.n_agents - 1}")
            self._traders[i] = Trader(self, i)
        return self._traders[i]
