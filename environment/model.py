"""The Mesa model: owns the market's arrays, steps the fused kernel, collects data.

>>> from tatonnet.environment.model import MarketModel
>>> model = MarketModel("cobb-douglas", n_agents=200, rounds=50)
>>> model.step()
>>> model.agents[0].prices.shape, model.steps, model.agents[0].unique_id
((4,), 1, 0)

Mesa idioms and what they mean here (see ``docs/10-mesa.md``):

* ``model.step()`` is one synchronous round of the fused kernel (the fast path);
  ``model.agents.shuffle_do("step")`` updates agent after agent against the current state
  (asynchronous tâtonnement, plain Python: the slow, per-agent path);
  :meth:`MarketModel.asynchronous_step` is one such sweep counted as a round.
* ``model.running`` turns False when the run converges, diverges or has spent the
  scenario's ``rounds``, so ``run_model()`` and ``mesa.batch_run`` stop there.
* ``rng`` is Mesa's seed argument: an explicit one overrides the scenario's seed (``None``
  draws a fresh one, as Mesa does; ``batch_run(iterations=k)`` passes ``None``); without it
  the scenario's seed is used, so runs and the CLI stay reproducible. The seed actually
  used is ``model.config.seed``.
* ``model.config`` is tatonnet's :class:`Scenario`; ``model.scenario`` is Mesa's
  (experimental) scenario object, which here only records ``rng`` and a few names.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
from mesa import Model
from mesa.datacollection import DataCollector
from mesa.experimental.scenarios import Scenario as MesaScenario

from tatonnet.agents.trader import Trader
from tatonnet.environment import sizing
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.growth import GrowingMarket
from tatonnet.environment.scenario import (
    Scenario,
    build_economy,
    build_market,
    initial_prices,
    load_scenario,
)
from tatonnet.environment.tatonnement import status
from tatonnet.environment.tatonnement.dynamics import (
    MarketState,
    RoundMetrics,
    coords_from_prices,
    prices_from_coords,
    reduce_partials,
    state_partials,
)

#: Models up to this size create their Mesa agents up front; larger ones create them on
#: first use of ``model.agents`` (measured on 2 cores: ~10 µs and ~300 bytes per agent).
MESA_AGENTS_UP_TO = sizing.MESA_AGENTS_UP_TO  # one constant, used by the memory estimate

#: Default sampling period of the agent reporters, in rounds ...
AGENT_DATA_EVERY = 10
#: ... when the whole run's samples stay under this many agent rows (else off by default).
AGENT_DATA_ROWS = 100_000

_SCENARIO_SEED = object()  # ``rng`` not given: the scenario's own seed


def seed_from_rng(rng) -> int:
    """The scenario seed for Mesa's ``rng`` argument.

    An integer is the seed itself; ``None`` draws a fresh seed from the operating system's
    entropy (Mesa's meaning of ``rng=None``); a ``SeedSequence``, ``Generator``,
    ``BitGenerator`` or sequence of ints seeds a generator that draws it.
    """
    if isinstance(rng, bool):
        raise TypeError("rng: expected an integer seed, None or a numpy seed/generator")
    if isinstance(rng, int | np.integer):
        return int(rng)
    if rng is None:
        rng = np.random.SeedSequence()
    return int(np.random.default_rng(rng).integers(0, sizing.MAX_SEED, endpoint=True))


class AgentColumn:
    """An agent reporter that is one column of :meth:`MarketModel.agent_table`.

    Called on one agent it computes that agent's value; :class:`MarketDataCollector`
    computes the column for all agents at once with numpy instead.
    """

    def __init__(self, column: str):
        self.column = column

    def __call__(self, agent: Trader) -> float:
        return float(agent.model.agent_table([agent.index])[self.column][0])

    def __repr__(self) -> str:
        return f"AgentColumn({self.column!r})"


class MarketDataCollector(DataCollector):
    """Mesa's DataCollector with agent reporters sampled every ``agent_every`` rounds.

    Model reporters are collected every round. Agent reporters are collected at rounds
    ``0, k, 2k, ...`` and at the round the run stops (``model.running`` False); other
    collections record no agent rows. When every agent reporter is an
    :class:`AgentColumn`, one call of :meth:`MarketModel.agent_table` computes them for all
    agents (no Python call per agent, no Mesa agent objects needed).
    """

    def __init__(self, model_reporters=None, agent_reporters=None, agent_every: int = 1):
        super().__init__(model_reporters=model_reporters, agent_reporters=agent_reporters)
        self.agent_every = int(agent_every)

    def _record_agents(self, model):
        if not (model.steps % self.agent_every == 0 or not model.running):
            return []
        columns = [getattr(r, "column", None) for r in self.agent_reporters.values()]
        if None in columns or not isinstance(model, MarketModel):
            return super()._record_agents(model)
        table = model.agent_table()
        n = model.economy.n_agents
        values = [table[c].tolist() for c in columns]
        return zip(itertools.repeat(model.time, n), range(n), *values, strict=True)


@dataclasses.dataclass(frozen=True)
class EngineDynamics:
    """What a model whose shards built the economy knows of its dynamics: the rule and the
    signal (the round itself runs on the shards)."""

    rule: object
    signal: str

    @property
    def space(self) -> str:
        return self.rule.space


class MarketModel(Model):
    """Decentralized (or central) tâtonnement of a scenario, as a Mesa model.

    Parameters
    ----------
    scenario : Scenario or str
        A validated tatonnet scenario, or a built-in name / TOML path (not Mesa's
        ``scenario``: the model keeps it as ``model.config``).
    n_agents : int or None
        Number of economic agents (rescales the scenario's groups); ``agents=`` is the same
        override under the CLI's name (``--agents``), kept as an alias; not both.
    rng : int, None, numpy seed or generator
        Mesa's seed argument. Given, it overrides the scenario's seed (see
        :func:`seed_from_rng`: ``None`` draws a fresh one); omitted, the scenario's seed is
        used. ``seed=`` (the scenario override) is the same, not both.
    engine : callable or None
        ``engine(economy, network, rule, signal, initial_prices, group)`` returning a
        distributed engine (e.g. ``functools.partial(tatonnet.distributed.engine.ShardEngine,
        n_shards=4, use_ray=True)``); None runs the fused kernel in this process, where
        every :class:`Trader` is a view onto ``state``.
    mesa_agents : bool or None
        Create the Mesa agents up front (default: up to ``MESA_AGENTS_UP_TO`` agents).
        Otherwise each is created when first needed (``trader(i)``) and all of them on
        first use of ``model.agents``, which is always complete.
    agent_data_every : int or None
        Sample the agent reporters every this many rounds (0: no agent reporters);
        default ``AGENT_DATA_EVERY`` if the run's samples fit ``AGENT_DATA_ROWS`` agent
        rows and no distributed engine is used, else 0.
    **overrides
        Passed to :meth:`Scenario.with_overrides` (``goods``, ``graph``, ``seed``,
        ``rule``, ``step_size``, ``rounds``, ``tol``, ``signal``).

    Attributes
    ----------
    config : Scenario — the tatonnet scenario actually run (``model.scenario`` is Mesa's)
    economy, network, dynamics — see :mod:`environment`
    state : MarketState — the arrays every :class:`Trader` views
    metrics : RoundMetrics — global metrics of the current state
    verdict : status.Verdict or None — set when the run stops (converged / diverged)
    datacollector : MarketDataCollector — per round ``excess_demand``,
        ``price_dispersion``, ``price_<good>`` (network-mean price) and ``excess_<good>``
        (relative to supply); per agent, every ``agent_data_every`` rounds,
        ``price_<good>``, ``excess_<good>`` (the agent's excess demand), ``wealth`` and
        ``utility`` (:meth:`agent_table`).
    """

    def __init__(
        self,
        scenario: Scenario | str = "default",
        *,
        n_agents: int | None = None,
        rng=_SCENARIO_SEED,
        engine=None,
        mesa_agents: bool | None = None,
        agent_data_every: int | None = None,
        **overrides,
    ):
        if n_agents is not None:
            if overrides.get("agents") is not None:
                raise ValueError("pass n_agents or agents (its alias), not both")
            overrides["agents"] = n_agents
        if rng is not _SCENARIO_SEED:
            if overrides.get("seed") is not None:
                raise ValueError("pass rng or seed, not both")
            overrides["seed"] = seed_from_rng(rng)
        if isinstance(scenario, MesaScenario):
            raise TypeError(
                "MarketModel's scenario is tatonnet's (a Scenario, built-in name or TOML "
                "path), not a mesa Scenario; pass Mesa's seed as rng="
            )
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        if any(v is not None for v in overrides.values()):
            scenario = scenario.with_overrides(**overrides)
        scenario.check_memory()  # SizeError before anything large is allocated
        d = scenario.dynamics
        super().__init__(
            scenario=MesaScenario(
                rng=scenario.seed, market=scenario.name, n_agents=scenario.n_agents,
                graph=scenario.network.kind, rule=d.rule, rounds=d.rounds,
            )
        )  # fmt: skip
        self.config = scenario
        rule = d.make_rule()
        self.reference_next: MarketState | None = None
        self._spare: MarketState | None = None
        self._next_round = None
        self._metrics: RoundMetrics | None = None
        self.growth: GrowingMarket | None = None
        if scenario.growth is not None and engine is not None:
            raise ValueError("growth: a growing market runs in this process (no engine)")
        if scenario.growth is not None:  # the founders: see tatonnet.environment.growth
            g = self.growth = GrowingMarket(scenario, *build_economy(scenario),
                                            initial_prices(scenario))  # fmt: skip
            self.economy, self._group, self.network = g.economy, g.group, g.network
            self.dynamics = make_dynamics(self.economy, self.network, rule, d.signal)
            self.engine = None
            self.state = self.dynamics.init_state(self.growth.prices)
            self.metrics = self._initial_metrics()
        elif engine is not None and scenario.builder == "shards":
            # the shards draw their own rows: this process holds views, not the economy
            self.engine = engine(None, None, rule, d.signal, None, None, scenario=scenario)
            self.economy, self.network = self.engine.views()
            self._group = None
            self.dynamics = EngineDynamics(rule, d.signal)
            self.state = None
            self.metrics = self.engine.initial_metrics()
        else:
            self.economy, self._group, self.network, prices = build_market(scenario)
            self.dynamics = make_dynamics(self.economy, self.network, rule, d.signal)
            if engine is None:
                self.engine = None
                self.state: MarketState | None = self.dynamics.init_state(prices)
                self.metrics = self._initial_metrics()
            else:
                self.engine = engine(self.economy, self.network, rule, d.signal, prices,
                                     self._group)  # fmt: skip
                self.state = None
                self.metrics = self.engine.initial_metrics()
        self.verdict: status.Verdict | None = None
        self.running = self.round < d.rounds
        n = self.economy.n_agents
        self._traders: dict[int, Trader] = {}
        self._all_created = False
        if mesa_agents is None:
            mesa_agents = n <= MESA_AGENTS_UP_TO and self.growth is None
        if mesa_agents:
            self._create_traders()

        reporters = {
            "excess_demand": lambda m: m.metrics.excess_demand,
            "price_dispersion": lambda m: m.metrics.price_dispersion,
        }
        for j, good in enumerate(self.economy.goods):
            reporters[f"price_{good}"] = lambda m, j=j: float(m.metrics.mean_price[j])
            reporters[f"excess_{good}"] = lambda m, j=j: float(m.metrics.excess[j])
        if agent_data_every is None:
            samples = math.ceil(d.rounds / AGENT_DATA_EVERY) + 1
            small = n * samples <= AGENT_DATA_ROWS and engine is None and self.growth is None
            agent_data_every = AGENT_DATA_EVERY if small else 0
        if agent_data_every < 0:
            raise ValueError(f"agent_data_every: expected >= 0, got {agent_data_every}")
        self.agent_data_every = int(agent_data_every)
        agent_reporters = None
        if self.agent_data_every:
            agent_reporters = {c: AgentColumn(c) for c in self.agent_columns()}
        self.datacollector = MarketDataCollector(
            reporters, agent_reporters, agent_every=max(1, self.agent_data_every)
        )
        self.datacollector.collect(self)

    @property
    def group(self) -> np.ndarray:
        """Each agent's group index (n_agents,) int32 (gathered from the shards when they
        built the economy)."""
        return self._group if self._group is not None else self.economy.group

    # ---- Mesa agents ---------------------------------------------------------------------
    @property
    def agents(self):
        """All :class:`Trader` views, in row order (created on first use if need be)."""
        if not self._all_created:
            self._create_traders()
        return self._all_agents

    @property
    def agents_by_type(self):
        if not self._all_created:
            self._create_traders()
        return self._agents_by_type

    @property
    def agent_types(self) -> list[type]:
        return [Trader]

    def _create_traders(self) -> None:
        n, made = self.economy.n_agents, self._traders
        ordered = all(i == k for k, i in enumerate(made))  # on-demand ones were rows 0...
        for i in range(len(made) if ordered else 0, n):
            if i not in made:
                made[i] = Trader(self, i)
        if not ordered:  # keep model.agents in row order
            rows = [made[i] for i in range(n)]
            self._all_agents._update(rows)
            self._agents_by_type[Trader]._update(rows)
        self._all_created = True

    def trader(self, i: int) -> Trader:
        """The Mesa agent of row ``i`` (``unique_id == i``), created on demand if need be."""
        i = int(i)
        if i not in self._traders:
            if not 0 <= i < self.economy.n_agents:
                raise IndexError(f"no agent {i}: ids run from 0 to {self.economy.n_agents - 1}")
            self._traders[i] = Trader(self, i)
        return self._traders[i]

    def check_per_agent(self) -> None:
        """Raise ValueError unless per-agent updates (``Trader.step``) can run here."""
        if self.engine is not None:
            raise ValueError(
                "Trader.step runs on the in-process state; with a distributed engine the "
                "agents' rows live in the shards (use model.step())"
            )
        if self.dynamics.rule.engine is not None:
            raise ValueError(
                f"the per-agent path runs fused-kernel rules only; rule "
                f"{self.dynamics.rule.name!r} has its own dynamics ({self.dynamics.rule.engine!r})"
            )

    def state_changed(self) -> None:
        """Mark the metrics stale after a change of ``state`` outside the round kernel."""
        self._metrics = None

    @property
    def metrics(self) -> RoundMetrics:
        if self._metrics is None:
            self._metrics = self.metrics_of(self.state)
        return self._metrics

    @metrics.setter
    def metrics(self, value: RoundMetrics) -> None:
        self._metrics = value

    # ---- stepping ------------------------------------------------------------------------
    def step(self) -> None:
        """One synchronous round with the fused kernel; stops the model on a final status
        or when the scenario's rounds are spent (``running`` False)."""
        round_, self._next_round = self._next_round or self._fused_round, None
        round_()
        if self.growth is not None:
            self._grow()
        self._after_round()

    def _fused_round(self) -> None:
        if self.engine is not None:
            self.metrics = self.engine.step()
        else:
            new, self.metrics = self.dynamics.step(self.state, self._spare)
            self._spare, self.state = self.state, new

    def _grow(self) -> None:
        """Apply the growth events due after this round (:mod:`tatonnet.environment.growth`):
        new rows, graph and dynamics; the Mesa agents are made afresh on demand."""
        dyn = self.dynamics
        state = self.growth.advance(self.round, self.state, dyn.rule, dyn.space == "log")
        if state is None:
            return
        g = self.growth
        self.economy, self._group, self.network = g.economy, g.group, g.network
        self.dynamics = make_dynamics(self.economy, self.network, dyn.rule, dyn.signal)
        self.state, self._spare = state, None
        for trader in self._traders.values():  # views of rows that moved
            self.deregister_agent(trader)
        self._traders, self._all_created = {}, False
        partials = state_partials(state.coords, state.excess, self.dynamics.space)
        self.metrics = reduce_partials(state.round, partials, self.economy.supply,
                                       self.economy.n_agents)  # fmt: skip

    def run_model(self) -> None:
        """Step until ``running`` turns False: converged, diverged, or the scenario's
        ``rounds`` spent (Mesa's ``run_model``)."""
        while self.running:
            self.step()

    @property
    def round(self) -> int:
        return self.engine.round if self.engine is not None else self.state.round

    def reference_step(self) -> None:
        """One synchronous round by the per-agent path: every ``Trader.step()`` in Python,
        reading the round's state and writing the next (equal to the fused kernel)."""
        if self.network.is_central:
            raise ValueError("the per-agent reference path is for in-process network dynamics")
        self.check_per_agent()
        self._next_round = self._reference_round
        self.step()  # through Mesa's step: steps and time advance as for a fused round

    def _reference_round(self) -> None:
        s = self.state
        self.reference_next = MarketState(
            np.empty_like(s.coords), np.empty_like(s.tracker), np.empty_like(s.excess),
            s.buffers, s.round + 1,
        )  # fmt: skip
        try:
            self.agents.do("step")
            self.state = self.reference_next
        finally:
            self.reference_next = None
        self._spare = None
        self.metrics = self.metrics_of(self.state)

    def asynchronous_step(self) -> None:
        """One round of asynchronous tâtonnement: ``model.agents.shuffle_do("step")``.

        Every agent, in an order drawn from ``model.random`` (seeded by the scenario's
        seed), updates its row against the current state (see :meth:`Trader.step`); the
        sweep then counts as one round. Under ``central`` the agents' steps change nothing
        and the auctioneer posts new prices as in :meth:`step`. Plain Python per agent:
        the slow path, for small models and for comparison with the synchronous round.
        """
        self.check_per_agent()
        self._next_round = self._asynchronous_round
        self.step()

    def _asynchronous_round(self) -> None:
        self.agents.shuffle_do("step")
        if self.network.is_central:
            self._fused_round()
        else:
            self.state = dataclasses.replace(self.state, round=self.state.round + 1)
            self.metrics = self.metrics_of(self.state)

    def _after_round(self) -> None:
        m, tol = self.metrics, self.config.dynamics.tol
        verdict = status.stop_verdict(m, tol)
        growing = self.growth is not None and self.growth.pending
        if verdict is not None and verdict.status == "converged" and growing:
            verdict = None  # converged so far, but more agents are still to join
        if verdict is not None:
            self.verdict = verdict
            self.running = False
        elif self.round >= self.config.dynamics.rounds:
            self.running = False  # the round budget is spent (no verdict: classify() judges)
        self.datacollector.collect(self)

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
        """Prices of agent ``i`` (g,), a fresh array (numeraire = 1)."""
        if self.engine is not None:
            return self.engine.agent_prices(i)
        row = self.state.coords[0 if self.network.is_central else i]
        return prices_from_coords(row, self.dynamics.space)

    def set_agent_prices(self, i: int, prices) -> None:
        """Set agent ``i``'s prices (g,) (``trader.prices = p``): in-process network only.

        Prices are divided by the numeraire's price; the agent's excess demand is
        recomputed there and its tracker moves by the same change, so the
        gradient-tracking invariant ``sum_i y_i = sum_i z_i`` holds. The rule's optimizer
        buffers are left as they are.
        """
        if self.network.is_central:
            raise ValueError(
                "under central dynamics every agent takes the auctioneer's prices: one "
                "agent's prices cannot be set"
            )
        self.check_per_agent()
        g, k = self.economy.n_goods, self.economy.numeraire
        p = np.array(prices, dtype=float).reshape(-1)
        if p.shape != (g,) or not np.isfinite(p).all() or (p <= 0).any():
            raise ValueError(f"prices: expected {g} finite positive numbers, got {prices!r}")
        p = p / p[k]
        s, i = self.state, int(i)
        coords = coords_from_prices(p, self.dynamics.space)
        p = prices_from_coords(coords, self.dynamics.space)
        excess = self.economy.excess_demand(p[None, :], [i])[0]
        if self.dynamics.signal == "tracking":
            s.tracker[i] += excess - s.excess[i]
        s.coords[i] = coords
        s.excess[i] = excess
        self.state_changed()

    def agent_columns(self) -> list[str]:
        """Names of the agent reporters (columns of :meth:`agent_table`)."""
        goods = self.economy.goods
        return [*(f"price_{g}" for g in goods), *(f"excess_{g}" for g in goods),
                "wealth", "utility"]  # fmt: skip

    def agent_table(self, rows=None) -> dict[str, np.ndarray]:
        """Per-agent values for ``rows`` (default: all) computed with numpy.

        ``price_<good>`` (the agent's price), ``excess_<good>`` (its excess demand at its
        own prices, in units of the good), ``wealth`` (``p_i . e_i``) and ``utility`` (of
        its demand); each (len(rows),). What :class:`Trader` reports, for all at once.
        """
        rows = np.arange(self.economy.n_agents) if rows is None else np.asarray(rows)
        with np.errstate(all="ignore"):  # a diverged run reports inf / nan, as its metrics
            prices = self.prices()[rows]
            demand = self.economy.demand(prices, rows)
            e = self.economy.endowments[rows]
            table = {}
            for j, good in enumerate(self.economy.goods):
                table[f"price_{good}"] = prices[:, j]
                table[f"excess_{good}"] = demand[:, j] - e[:, j]
            table["wealth"] = np.einsum("ij,ij->i", prices, e)
            table["utility"] = self.economy.utility(demand, rows)
        return table
