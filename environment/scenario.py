"""Scenario files (TOML): goods, agent groups, the network and the dynamics, validated.

A scenario is a TOML file (format documented in the README, section "Scenario format");
built-in ones live in ``environment/scenarios/``. :func:`load_scenario` parses and
validates it (pydantic), :meth:`Scenario.with_overrides` applies command-line overrides,
and :func:`build_economy` / :func:`build_network_for` draw the economy and the graph.
A ``[fisher]`` table (:class:`FisherSpec`) replaces ``[[agents]]`` for a Fisher market,
built through :meth:`tatonnet.environment.fisher.FisherMarket.to_economy` (money is good 0).

Randomness: every draw comes from ``np.random.SeedSequence(seed, spawn_key=(stream,
group))`` — one stream per purpose and agent group, never per process or worker — so the
same seed gives the same economy everywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_serializer, model_validator

from tatonnet.agents.rules import OPTIONS, PriceRule, RuleError, make_rule
from tatonnet.agents.utility import FAMILY_NAMES, FAMILY_SIGMA, Family
from tatonnet.environment import fisher, sizing
from tatonnet.environment.build.streams import ENDOWMENT, GRAPH, PLACEMENT, PRICES, SHARES
from tatonnet.environment.economy import Economy, EconomyError
from tatonnet.environment.growth import GrowthError, GrowthSpec
from tatonnet.environment.network import GENERATORS, Network, NetworkError, build_network
from tatonnet.environment.ordering import locality_order, reorder
from tatonnet.environment.sizing import SizeError

BUILTIN_DIR = Path(__file__).parent / "scenarios"

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(gt=0, le=sizing.MAX_AGENTS)]

#: Largest ``dynamics.initial_spread`` (std of the log-price noise): at 3, even 10^8
#: agents' draws stay inside the [1e-8, 1e8] price bound that means "diverged".
MAX_INITIAL_SPREAD = 3.0
#: Smallest / largest initial price relative to the numeraire (the divergence bound).
INITIAL_PRICE_BOUND = 1e8
#: Good names that would collide with the per-round metric columns (``excess_demand``,
#: ``price_dispersion``) once prefixed ``excess_`` / ``price_``.
RESERVED_GOODS = ("demand", "dispersion")
#: Longest scenario or good name (a name becomes part of a folder name).
MAX_NAME = 100

# seed streams (spawn_key[0]): tatonnet.environment.build.streams, shared by both builders


class ScenarioError(ValueError):
    """The scenario (file or override) is invalid; the message is one line."""


#: What a user's scenario (file or overrides) can raise: each is a one-line message.
SCENARIO_ERRORS = (ScenarioError, RuleError, NetworkError, EconomyError, SizeError, GrowthError)


def check_name(name: str, what: str = "name") -> str:
    """``name`` if it is safe as part of a folder name, else ValueError: not empty, at
    most :data:`MAX_NAME` characters, no path separator, no leading ``.`` (so neither
    ``..`` nor a hidden folder), no control character."""
    if not name or not name.strip():
        raise ValueError(f"{what}: empty")
    if len(name) > MAX_NAME:
        raise ValueError(f"{what}: longer than {MAX_NAME} characters")
    if "/" in name or "\\" in name:
        raise ValueError(f"{what}: a name, not a path: no '/' or '\\' (got {name!r})")
    if name.startswith(".") or ".." in name:
        raise ValueError(f"{what}: may not start with '.' or contain '..' (got {name!r})")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"{what}: control characters are not allowed (got {name!r})")
    return name


def check_depth(data, limit: int = sizing.MAX_NESTING, depth: int = 0) -> None:
    """Raise SizeError if tables / arrays in ``data`` nest deeper than ``limit``."""
    if depth > limit:
        raise SizeError(f"nested deeper than {limit} levels of tables / arrays")
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
    for v in values:
        if isinstance(v, dict | list):
            check_depth(v, limit, depth + 1)


def read_toml(path: Path, source: str, error=None) -> dict:
    """Parse a scenario or study file with the size and nesting limits; one-line errors
    (``error``: the exception class, default ScenarioError)."""
    error = error or ScenarioError
    try:
        size = path.stat().st_size
        if size > sizing.MAX_FILE_BYTES:
            raise error(f"{source}: {size} bytes, over the {sizing.MAX_FILE_BYTES}-byte limit")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{source}: invalid TOML: {exc}") from None
    except RecursionError:
        raise error(
            f"{source}: nested deeper than {sizing.MAX_NESTING} levels of tables / arrays"
        ) from None
    except OSError as exc:
        raise error(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        check_depth(data)
    except SizeError as exc:
        raise error(f"{source}: {exc}") from None
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Draw(_Strict):
    """A per-agent random vector: ``uniform`` (low, high), ``dirichlet`` (alpha) or
    ``lognormal`` (mean, sigma of the log) — per good, independently."""

    distribution: Literal["uniform", "dirichlet", "lognormal"]
    low: NonNegFloat = 0.5
    high: NonNegFloat = 1.5
    alpha: PositiveFloat = 1.0
    mean: float = Field(0.0, allow_inf_nan=False)
    sigma: NonNegFloat = 0.5

    @model_validator(mode="after")
    def _order(self):
        if self.distribution == "uniform" and not self.low < self.high:
            raise ValueError(f"uniform needs low < high, got low={self.low}, high={self.high}")
        return self

    def sample(self, rng: np.random.Generator, n: int, g: int) -> np.ndarray:
        if self.distribution == "uniform":
            return rng.uniform(self.low, self.high, (n, g))
        if self.distribution == "dirichlet":
            return rng.dirichlet(np.full(g, self.alpha), n)
        return rng.lognormal(self.mean, self.sigma, (n, g))


Vector = list[NonNegFloat] | Draw


class AgentGroup(_Strict):
    name: str = ""
    count: Count
    utility: Literal["linear", "cobb-douglas", "leontief", "ces"]
    sigma: PositiveFloat | None = None
    shares: Vector
    endowment: Vector

    @model_validator(mode="after")
    def _sigma(self):
        if self.utility == "ces" and self.sigma is None:
            raise ValueError("a 'ces' group needs sigma (the elasticity of substitution)")
        if self.utility != "ces" and self.sigma is not None:
            raise ValueError(f"sigma is only for 'ces' groups; '{self.utility}' fixes it")
        return self


class FisherSpec(_Strict):
    """A Fisher market (``[fisher]`` table): buyers with budgets, one seller group.

    The scenario's ``goods`` are the m goods for sale; money is added as good 0 (named
    ``money``, the numeraire), so the economy has m + 1 goods. ``supplies`` is per buyer:
    good j's total supply is ``supplies[j] * buyers``, so that prices stay of the order of
    the budgets when ``--agents`` replicates the market. Sellers (at least one per good)
    split each good's supply equally and value money only.
    """

    buyers: Count
    sellers: Count | None = None
    utility: Literal["linear", "cobb-douglas", "leontief", "ces"]
    sigma: PositiveFloat | None = None
    budgets: PositiveFloat | Draw = 1.0
    valuations: Vector
    supplies: PositiveFloat | list[PositiveFloat] = 1.0

    @model_validator(mode="after")
    def _sigma(self):
        if self.utility == "ces" and self.sigma is None:
            raise ValueError("a 'ces' market needs sigma (the elasticity of substitution)")
        if self.utility != "ces" and self.sigma is not None:
            raise ValueError(f"sigma is only for 'ces' buyers; '{self.utility}' fixes it")
        b = self.budgets
        if isinstance(b, Draw) and b.distribution == "uniform" and not b.low > 0:
            raise ValueError("budgets: a uniform budget draw needs low > 0 (budgets are positive)")
        return self


class NetworkSpec(_Strict):
    kind: Literal[GENERATORS]  # type: ignore[valid-type]
    k: float | None = Field(None, gt=0, allow_inf_nan=False)
    p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    m: int | None = Field(None, gt=0)
    path: str | None = None
    placement: Literal["shuffled", "ordered"] = "shuffled"
    order: Literal["locality", "generator"] = "locality"

    def params(self) -> dict:
        """The generator's parameters given (``k``, ``p``, ``m``, ``path``)."""
        skip = ("kind", "placement", "order")
        return {k: v for k, v in self.model_dump().items() if k not in skip and v is not None}


class Dynamics(_Strict):
    """The ``[dynamics]`` table: the rule, its step and options, the signal, the budget.

    ``space``, ``schedule``, ``horizon``, ``warmup``, ``clip`` and ``normalize`` are the
    options every rule takes (:data:`tatonnet.agents.rules.OPTIONS`; unset: the rule's
    defaults); :class:`~tatonnet.agents.rules.RuleError` checks their values.
    """

    rule: str = "entropic"
    step_size: PositiveFloat | None = None
    hyperparameters: dict[str, FiniteFloat] = Field(default_factory=dict)
    space: str | None = None
    schedule: str | None = None
    horizon: FiniteFloat | None = None
    warmup: FiniteFloat | None = None
    clip: FiniteFloat | None = None
    normalize: StrictBool | None = None
    signal: Literal["tracking", "local"] = "tracking"
    rounds: int = Field(2000, gt=0, le=sizing.MAX_ROUNDS)
    tol: PositiveFloat = 1e-8
    initial_prices: list[PositiveFloat] | None = None
    initial_spread: float = Field(0.0, ge=0, le=MAX_INITIAL_SPREAD, allow_inf_nan=False)

    @model_validator(mode="after")
    def _rule(self):
        self.make_rule()  # raises RuleError (a ValueError) with the reason
        return self

    def make_rule(self) -> PriceRule:
        """The price-update rule this table asks for."""
        hyper = dict(self.hyperparameters)
        if self.step_size is not None:
            hyper["step_size"] = self.step_size
        for name in OPTIONS:
            value = getattr(self, name)
            if value is None:
                continue
            if name in hyper:
                raise RuleError(
                    f"dynamics: {name} is given twice (in hyperparameters and as a key of "
                    "[dynamics]); give it once"
                )
            hyper[name] = value
        return make_rule(self.rule, **hyper)


class TradeSpec(_Strict):
    """Optional ``[trade]`` table: bilateral trade along edges (``run.py --trade``; see
    :mod:`tatonnet.environment.trade.bilateral`)."""

    rounds: int = Field(500, gt=0)
    medium: Literal["barter", "numeraire"] = "barter"
    halvings: int = Field(20, ge=1, le=60)
    min_gap: NonNegFloat = 1e-9
    tol: PositiveFloat | None = None
    merchant_groups: list[str] = Field(default_factory=list)
    pair: Literal["largest-gap", "random"] = "largest-gap"


class Scenario(_Strict):
    """A validated scenario. ``source`` is where it came from (a path or ``builtin:NAME``)."""

    name: str
    description: str = ""
    seed: int = Field(0, ge=0, le=sizing.MAX_SEED)
    goods: int | list[str]
    numeraire: int = Field(0, ge=0)
    agents: list[AgentGroup] = Field(default_factory=list)
    fisher: FisherSpec | None = None
    network: NetworkSpec
    builder: Literal["driver", "shards"] = "driver"
    dynamics: Dynamics = Dynamics()
    trade: TradeSpec | None = None
    growth: GrowthSpec | None = None
    source: str = ""

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        data = handler(self)
        if self.growth is None:  # dumps (run.json, cache keys) stay as before growth existed
            data.pop("growth", None)
        return data

    @model_validator(mode="after")
    def _shapes(self):
        check_name(self.name)
        self._limits()
        if self.builder == "shards":
            self._shard_buildable()
        if self.growth is not None:
            self._growth_fits()
        if self.fisher is not None:
            return self._fisher_shapes()
        if not self.agents:
            raise ValueError("agents: at least one agent group (or a [fisher] table)")
        g = self.n_goods
        if g < 2:
            raise ValueError(f"goods: an exchange economy needs at least 2 goods, got {g}")
        if self.numeraire >= g:
            raise ValueError(f"numeraire: expected a good index below {g}, got {self.numeraire}")
        for i, group in enumerate(self.agents):
            for field in ("shares", "endowment"):
                value = getattr(group, field)
                if isinstance(value, list):
                    if len(value) != g:
                        raise ValueError(
                            f"agents[{i}].{field}: expected {g} values (one per good), "
                            f"got {len(value)}"
                        )
                    if sum(value) <= 0:
                        raise ValueError(f"agents[{i}].{field}: all zero")
        prices = self.dynamics.initial_prices
        if prices is not None and len(prices) != g:
            raise ValueError(f"dynamics.initial_prices: expected {g} values, got {len(prices)}")
        self._initial_price_range()
        return self

    def _growth_fits(self):
        """A ``[growth]`` table: what can grow, and a schedule that brings everybody in."""
        why = (
            "a Fisher market" if self.fisher is not None
            else 'builder "shards"' if self.builder == "shards"
            else "network.kind central (no graph to join)" if self.network.kind == "central"
            else f"network.kind {self.network.kind!r}" if self.network.kind == "file"
            else f"rule {self.dynamics.rule!r} (its own dynamics)"
            if self.dynamics.make_rule().engine is not None
            else None
        )  # fmt: skip
        if why is not None:
            raise ValueError(f"growth: {why} cannot grow (growth runs the fused kernel on a graph)")
        self.growth.events(self.n_agents, self.dynamics.rounds)  # GrowthError: one line

    def _limits(self):
        """Hard size limits (:mod:`tatonnet.environment.sizing`) and safe good names."""
        g = self.n_goods
        if g > sizing.MAX_GOODS:
            raise ValueError(f"goods: {g} goods, over the limit of {sizing.MAX_GOODS}")
        n = self.n_agents
        if n > sizing.MAX_AGENTS:
            raise ValueError(f"agents: {n} agents, over the limit of {sizing.MAX_AGENTS}")
        edges = self.directed_edges
        if edges > sizing.MAX_EDGES:
            raise ValueError(
                f"network: a {self.network.kind} network of {n} agents has ~{edges} "
                f"adjacency entries, over the limit of {sizing.MAX_EDGES}"
            )
        if isinstance(self.goods, list):
            seen = set()
            for j, name in enumerate(self.goods):
                check_name(name, f"goods[{j}]")
                if name in seen:
                    raise ValueError(f"goods: duplicate name {name!r} (good names must differ)")
                if name in RESERVED_GOODS or (self.fisher is not None and name == "money"):
                    raise ValueError(
                        f"goods: {name!r} is reserved (it would clash with a metric column"
                        f"{' or the money good' if name == 'money' else ''})"
                    )
                seen.add(name)

    @property
    def graph_seed(self) -> int:
        """The graph generator's seed: the scenario seed's graph stream (both builders)."""
        return int(np.random.SeedSequence(self.seed, spawn_key=(GRAPH,)).generate_state(1)[0])

    def _shard_buildable(self):
        """``builder = "shards"``: a kind the shards can draw row by row (or a Parquet edge
        list they read in slices), no Fisher market."""
        from tatonnet.environment.build.edge_file import check_edge_file
        from tatonnet.environment.build.graphs import SHARD_GENERATORS, check_params

        if self.fisher is not None:
            raise ValueError(
                'builder "shards" draws agent groups; a [fisher] market is built by the '
                'driver (builder = "driver")'
            )
        kind = self.network.kind
        if kind not in (*SHARD_GENERATORS, "central", "file"):
            raise ValueError(
                f'builder "shards": network.kind {kind!r} is built by the driver; the shards '
                f"draw {', '.join(SHARD_GENERATORS)} (or central), or read a .parquet file"
            )
        if kind == "file":
            check_edge_file(self.network.path, self.n_agents)
        elif kind != "central":
            check_params(kind, self.n_agents, self.network.params())

    def _initial_price_range(self):
        prices = self.dynamics.initial_prices
        if prices is None:
            return
        ratio = np.asarray(prices, dtype=float) / prices[self.numeraire]
        bound = INITIAL_PRICE_BOUND
        if not ((ratio >= 1 / bound) & (ratio <= bound)).all():
            raise ValueError(
                f"dynamics.initial_prices: relative to the numeraire they must lie in "
                f"[{1 / bound:g}, {bound:g}] (outside, the run has diverged before it starts)"
            )

    @property
    def directed_edges(self) -> int:
        """Directed adjacency entries the network will have (estimate, before building)."""
        net = self.network
        return sizing.directed_edges(net.kind, self.n_agents, net.k, net.m, net.path)

    def memory_estimate(self, rounds: int | None = None, trade: bool = False) -> int:
        """Rough peak bytes of building and running this scenario in one process
        (:func:`tatonnet.environment.sizing.estimate_bytes`); ``rounds`` of history
        (default: ``dynamics.rounds``)."""
        try:
            buffers = int(getattr(self.dynamics.make_rule(), "n_buffers", 0))
        except (RuleError, TypeError):
            buffers = 0
        return sizing.estimate_bytes(
            self.n_agents, self.n_goods, self.directed_edges, buffers,
            self.dynamics.rounds if rounds is None else rounds,
            mesa_agents=self.n_agents <= sizing.MESA_AGENTS_UP_TO, builder=self.builder,
        ) + (self.n_agents * sizing.TRADE_BYTES_PER_AGENT if trade else 0)  # fmt: skip

    def check_memory(
        self, rounds: int | None = None, available: int | None = None, trade: bool = False
    ) -> None:
        """Raise SizeError (one line) if this scenario does not fit this machine's memory
        (``trade``: as a bilateral-trade run, which holds more per agent)."""
        sizing.check_memory(
            self.memory_estimate(rounds, trade),
            f"scenario {self.source or self.name} ({self.n_agents} agents, {self.n_goods} "
            f"goods, {self.network.kind} network)",
            available,
        )

    def _fisher_shapes(self):
        f, m = self.fisher, self.n_market_goods
        if self.agents:
            raise ValueError("agents: a Fisher scenario declares its agents in [fisher]")
        if m < 1:
            raise ValueError(f"goods: a Fisher market needs at least 1 good, got {m}")
        if self.numeraire != 0:
            raise ValueError("numeraire: a Fisher market's numeraire is money (good 0)")
        if f.sellers is not None and f.sellers < m:
            raise ValueError(f"fisher.sellers: every good needs a seller: at least {m}")
        for field in ("valuations", "supplies"):
            value = getattr(f, field)
            if isinstance(value, list) and len(value) != m:
                raise ValueError(
                    f"fisher.{field}: expected {m} values (one per good for sale), got {len(value)}"
                )
        if isinstance(f.valuations, list) and sum(f.valuations) <= 0:
            raise ValueError("fisher.valuations: all zero")
        prices = self.dynamics.initial_prices
        if prices is not None and len(prices) != m + 1:
            raise ValueError(
                f"dynamics.initial_prices: expected {m + 1} values (money first), got {len(prices)}"
            )
        self._initial_price_range()
        return self

    @property
    def n_market_goods(self) -> int:
        """Goods listed in ``goods`` (for a Fisher market: those for sale, money excluded)."""
        return self.goods if isinstance(self.goods, int) else len(self.goods)

    @property
    def n_goods(self) -> int:
        return self.n_market_goods + (self.fisher is not None)

    @property
    def n_sellers(self) -> int:
        """Sellers of a Fisher market (default one per good); 0 otherwise."""
        if self.fisher is None:
            return 0
        return self.fisher.sellers or self.n_market_goods

    @property
    def n_agents(self) -> int:
        if self.fisher is not None:
            return self.fisher.buyers + self.n_sellers
        return sum(group.count for group in self.agents)

    @property
    def good_names(self) -> tuple[str, ...]:
        names = (
            tuple(self.goods)
            if isinstance(self.goods, list)
            else tuple(f"good{j + (self.fisher is not None)}" for j in range(self.goods))
        )
        return ("money", *names) if self.fisher is not None else names

    def with_overrides(
        self,
        agents: int | None = None,
        goods: int | None = None,
        graph: str | None = None,
        seed: int | None = None,
        builder: str | None = None,
        **dynamics,
    ) -> Scenario:
        """A copy with command-line overrides applied (and validated)."""
        if agents is not None and agents > sizing.MAX_AGENTS:
            raise SizeError(f"--agents: {agents} agents, over the limit of {sizing.MAX_AGENTS}")
        if goods is not None and goods > sizing.MAX_GOODS:
            raise SizeError(f"--goods: {goods} goods, over the limit of {sizing.MAX_GOODS}")
        data = self.model_dump()
        if agents is not None and self.fisher is not None:
            data["fisher"] = _rescale_fisher(
                data["fisher"], self.n_sellers, self.n_market_goods, agents
            )
        elif agents is not None:
            data["agents"] = _rescale_groups(data["agents"], agents)
        if goods is not None and self.fisher is not None:
            for field in ("valuations", "supplies"):
                if isinstance(getattr(self.fisher, field), list):
                    raise ScenarioError(
                        f"--goods: scenario {self.name!r} lists fisher.{field} per good "
                        "explicitly, so its number of goods is fixed"
                    )
            if self.fisher.sellers is not None and self.fisher.sellers < goods:
                data["fisher"]["sellers"] = goods
        if goods is not None:
            for i, group in enumerate(self.agents):
                for field in ("shares", "endowment"):
                    if isinstance(getattr(group, field), list):
                        raise ScenarioError(
                            f"--goods: scenario {self.name!r} lists agents[{i}].{field} per "
                            "good explicitly, so its number of goods is fixed"
                        )
            data["goods"] = goods
            data["dynamics"]["initial_prices"] = None
        if graph is not None:
            data["network"] = {
                "kind": graph,
                "placement": self.network.placement,
                "order": self.network.order,
            }
        if seed is not None:
            data["seed"] = seed
        if builder is not None:
            data["builder"] = builder
        data["dynamics"].update({k: v for k, v in dynamics.items() if v is not None})
        return _validate(data, self.source or self.name)


def _rescale_groups(groups: list[dict], total: int) -> list[dict]:
    if total < len(groups):
        raise ScenarioError(
            f"--agents: expected at least {len(groups)} (one per agent group), got {total}"
        )
    counts = np.array([g["count"] for g in groups], dtype=float)
    scaled = np.maximum(1, np.floor(counts / counts.sum() * total)).astype(int)
    scaled[np.argmax(counts)] += total - scaled.sum()
    return [dict(g, count=int(c)) for g, c in zip(groups, scaled, strict=True)]


def _rescale_fisher(spec: dict, sellers: int, m: int, total: int) -> dict:
    """Buyers and sellers of a Fisher market rescaled to ``total`` agents (>= m sellers)."""
    if total < m + 1:
        raise ScenarioError(
            f"--agents: a Fisher market of {m} goods needs at least {m + 1} agents "
            f"(a seller per good and a buyer), got {total}"
        )
    groups = _rescale_groups([{"count": spec["buyers"]}, {"count": sellers}], total)
    n_sellers = max(m, groups[1]["count"])
    return dict(spec, buyers=total - n_sellers, sellers=n_sellers)


def _validate(data: dict, source: str) -> Scenario:
    try:
        return Scenario.model_validate({**data, "source": source})
    except pydantic.ValidationError as exc:
        errors = exc.errors()
        # in a `list | Draw` union, the branch that does not match the input's type only
        # says "should be a valid list/dictionary": report the other branch's error
        specific = [e for e in errors if e["type"] not in _UNION_TYPE_ERRORS]
        err = (specific or errors)[0]
        loc = ".".join(str(part) for part in err["loc"] if not _is_union_tag(part))
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        where = f"{loc}: " if loc else ""
        raise ScenarioError(f"scenario {source}: {where}{msg}{shown}") from None


_UNION_TYPE_ERRORS = {"list_type", "model_type", "dict_type", "model_attributes_type"}


def _is_union_tag(part) -> bool:
    return isinstance(part, str) and (part.startswith(("list[", "Draw", "function-")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def find_toml(name_or_path: str | Path, folder: Path) -> tuple[Path, str] | None:
    """``(path, source)`` of a built-in TOML in ``folder`` named ``name_or_path`` (no
    suffix), else of the file ``name_or_path``; None when neither exists. ``source`` is
    ``builtin:NAME`` or the path, as results record it."""
    path = Path(name_or_path)
    if not path.suffix and (folder / f"{name_or_path}.toml").is_file():
        return folder / f"{name_or_path}.toml", f"builtin:{name_or_path}"
    if path.is_file():
        return path, str(path)
    return None


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name, or a TOML file by path; raises ScenarioError."""
    found = find_toml(name_or_path, BUILTIN_DIR)
    if found is None:
        raise ScenarioError(
            f"scenario {str(name_or_path)!r}: not a built-in ({', '.join(builtin_names())}) "
            "and no such file"
        )
    path, source = found
    data = read_toml(path, f"scenario {source}")
    net = data.get("network")
    if isinstance(net, dict) and isinstance(net.get("path"), str):
        net["path"] = str((path.parent / net["path"]).resolve())
    data.setdefault("name", path.stem)
    return _validate(data, source)


def _rng(seed: int, stream: int, group: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, group)))


def _vector(value, rng, n: int, g: int) -> np.ndarray:
    if isinstance(value, Draw):
        return value.sample(rng, n, g)
    return np.tile(np.asarray(value, dtype=float), (n, 1))


def build_market(scenario: Scenario, signal: str | None = None):
    """Everything a run starts from: ``(economy, group, network, initial prices)``.

    ``builder = "driver"``: :func:`build_economy`, :func:`build_network_for` and
    :func:`initial_prices`; ``"shards"``: the whole shard-built economy in one pass
    (:func:`tatonnet.environment.build.shard_rows.build_whole`), bit-identical to what any
    number of shards build for themselves.
    """
    if scenario.builder == "shards":
        return _shard_built(scenario, signal)
    economy, group = build_economy(scenario)
    return economy, group, build_network_for(scenario), initial_prices(scenario)


def _shard_built(scenario: Scenario, signal: str | None = None):
    from tatonnet.environment.build.shard_rows import build_whole

    try:
        return build_whole(scenario, signal or scenario.dynamics.signal)
    except ValueError as exc:
        raise ScenarioError(f"scenario {scenario.source or scenario.name}: {exc}") from None


def build_economy(scenario: Scenario) -> tuple[Economy, np.ndarray]:
    """Draw the economy; returns ``(economy, group)`` with ``group`` (n,) each agent's group index.

    Agents are laid out group by group, then (``placement = "shuffled"``, the default)
    permuted by a seeded permutation so groups mix across the network.
    """
    if scenario.builder == "shards":
        economy, group, _, _ = _shard_built(scenario)
        return economy, group
    g, seed = scenario.n_goods, scenario.seed
    if scenario.fisher is not None:
        return _place(scenario, _fisher_arrays(scenario))
    endow, shares, family, sigma, group = [], [], [], [], []
    for k, spec in enumerate(scenario.agents):
        n = spec.count
        endow.append(_vector(spec.endowment, _rng(seed, ENDOWMENT, k), n, g))
        shares.append(_vector(spec.shares, _rng(seed, SHARES, k), n, g))
        code = FAMILY_NAMES[spec.utility]
        family.append(np.full(n, code, dtype=np.int8))
        sigma.append(np.full(n, spec.sigma if code == Family.CES else float(FAMILY_SIGMA[code])))
        group.append(np.full(n, k, dtype=np.int32))
    arrays = [np.concatenate(a) for a in (endow, shares, family, sigma, group)]
    return _place(scenario, arrays)


def _place(scenario: Scenario, arrays: list[np.ndarray]) -> tuple[Economy, np.ndarray]:
    """Shuffle the agents' rows (``placement = "shuffled"``) and build the Economy."""
    seed = scenario.seed
    if scenario.network.placement == "shuffled":
        order = _rng(seed, PLACEMENT).permutation(arrays[0].shape[0])
        arrays = [a[order] for a in arrays]
    endow_, shares_, family_, sigma_, group_ = arrays
    try:
        economy = Economy(endow_, shares_, family_, sigma_, scenario.numeraire, scenario.good_names)
    except ValueError as exc:
        raise ScenarioError(f"scenario {scenario.source or scenario.name}: {exc}") from None
    return economy, group_


def _fisher_arrays(scenario: Scenario) -> list[np.ndarray]:
    """``[endowments, shares, family, sigma, group]`` of a Fisher scenario (buyers: group 0,
    sellers: group 1), before placement; budgets, valuations from their own seed streams."""
    f, m, seed = scenario.fisher, scenario.n_market_goods, scenario.seed
    n = f.buyers
    budgets = (
        f.budgets.sample(_rng(seed, ENDOWMENT, 0), n, 1)[:, 0]
        if isinstance(f.budgets, Draw)
        else np.full(n, f.budgets)
    )
    valuations = _vector(f.valuations, _rng(seed, SHARES, 0), n, m)
    supplies = np.broadcast_to(np.asarray(f.supplies, dtype=float), (m,)) * n
    code = FAMILY_NAMES[f.utility]
    sigma = f.sigma if code == Family.CES else float(FAMILY_SIGMA[code])
    try:
        market = fisher.FisherMarket(budgets, valuations, np.int8(code), sigma, supplies,
                                     scenario.good_names[1:])  # fmt: skip
        economy, is_buyer = market.to_economy(scenario.n_sellers)
    except ValueError as exc:
        raise ScenarioError(f"scenario {scenario.source or scenario.name}: {exc}") from None
    group = np.where(is_buyer, 0, 1).astype(np.int32)
    return [economy.endowments, economy.shares, economy.family, economy.sigma, group]


def build_network_for(scenario: Scenario) -> Network:
    """Build the scenario's network (the graph's own seed stream); raises ScenarioError."""
    if scenario.builder == "shards":
        return _shard_built(scenario)[2]
    spec = scenario.network
    seed = scenario.graph_seed
    try:
        network = build_network(spec.kind, scenario.n_agents, seed, **spec.params())
    except ValueError as exc:
        raise ScenarioError(f"scenario {scenario.source or scenario.name}: {exc}") from None
    if spec.order == "locality" and not network.is_central:
        order, _ = locality_order(network, seed)
        network = reorder(network, order)
    if network.n_agents != scenario.n_agents:
        raise ScenarioError(
            f"scenario {scenario.source or scenario.name}: network.path has "
            f"{network.n_agents} nodes but the agent groups count {scenario.n_agents} agents"
        )
    return network


def initial_prices(scenario: Scenario) -> np.ndarray:
    """Initial prices: (g,) for all agents, or (n, g) with a seeded log-normal spread."""
    if scenario.builder == "shards":
        from tatonnet.environment.build.agents import initial_price_rows

        return initial_price_rows(scenario, 0, scenario.n_agents)
    g = scenario.n_goods
    base = np.asarray(scenario.dynamics.initial_prices or np.ones(g), dtype=float)
    spread = scenario.dynamics.initial_spread
    if spread == 0 or scenario.network.kind == "central":
        return base
    noise = _rng(scenario.seed, PRICES).normal(0.0, spread, (scenario.n_agents, g))
    return base * np.exp(noise)
