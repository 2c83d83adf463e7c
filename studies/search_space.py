"""What the tuner searches, per price-update rule: a registry of hyperparameter ranges.

Every registered rule (:data:`tatonnet.agents.rules.RULES`) has a search space here: its
step size on a wide log range (:data:`STEP_RANGE`, 1e-4 to 10, clipped to the rule's own
valid range where it has one) and its other main hyperparameters::

    additive, entropic, optimistic, extragradient   step_size          1e-4..10 (log)
    multiplicative                                   step_size          1e-4..0.99 (log; < 1)
    momentum, nesterov                               step_size, momentum in [0, 0.99]
    adam                                             step_size, beta1 in [0, 0.99],
                                                     beta2 in [0.9, 0.9999]
    async-goods                                      step_size, momentum in [-0.95, 0.95]
    async-blocks                                     step_size, momentum in [-0.95, 0.95],
                                                     blocks in {1, ..., 4}
    newton                                           step_size 1e-4..1 (log; <= 1),
                                                     max_step 0.1..10 (log)
    proportional-response                            step_size 1e-4..1 (log; <= 1)

Numerical guards (Adam's ``eps``, Newton's ``damping``) keep the rule's default.

Markets have search spaces too (:data:`MARKET_SPACES`, :func:`market_space_for`): the
parameters of the layered market (:mod:`tatonnet.environment.trade.layered`), named with
the prefix ``market.`` so that one trial's hyperparameters can hold both
(:func:`tatonnet.studies.grid.split_hyperparameters` splits them)::

    flat            (none)
    layered         market.flow_gain        1e-2..10 (log)   weight of the day's net order
                    market.inventory_gain   1e-3..10 (log)   weight of the stock's shortfall
                    market.rebalance        0..0.5           stock shipped between merchant
                                                             neighbours (not under central)
    layered-books   the same three, and
                    market.merchant_rule    {optimistic, extragradient, broyden}

Both gains are searched on log ranges, so neither is ever 0: a zero inventory gain never
brings the stock back to target (no run converges), and a zero flow gain is the pure
inventory rule, which the kernel design cannot damp. The books design's merchant step is
the rule's ``step_size`` (searched in the rule's space), and broyden's ``damping`` and
``max_step`` are the rule's where it has them (``newton``): a searched
``market.merchant_rule`` replaces the merchant rule the cell's rule names, so pin it
(``fixed``) to keep a cell's rule its merchants' rule.

Extending it: a new rule calls :func:`register_space`; a hyperparameter that many rules
share (the ``space`` geometry ``"price"`` / ``"log"``, a step schedule) goes into
:data:`SHARED_DIMENSIONS`, and every rule whose dataclass has a field of that name
searches it too (``space`` over the geometries of the rule's ``spaces`` only, and not at
all for a rule defined in one geometry). Whether a rule has the field is read from ``dataclasses.fields`` when
:func:`space_for` is called, so a rule that gains the field is searched over it with no
change here.
"""

from __future__ import annotations

import dataclasses
import math

#: The step-size range every rule starts from (log-uniform).
STEP_RANGE = (1e-4, 10.0)


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: a float range (log or linear), an integer range, or
    a set of choices.

    Parameters
    ----------
    name : the rule's field name (``step_size``, ``momentum``, ...)
    low, high : the closed range of a numeric dimension
    log : sample ``log(value)`` uniformly (positive ranges only)
    integer : whole numbers ``low, low + 1, ..., high``
    choices : the values of a categorical dimension (then ``low`` / ``high`` are unused)
    """

    name: str
    low: float = math.nan
    high: float = math.nan
    log: bool = False
    integer: bool = False
    choices: tuple = ()

    def __post_init__(self):
        if self.choices:
            return
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"search dimension {self.name!r}: need low <= high, finite")
        if self.log and self.low <= 0:
            raise ValueError(f"search dimension {self.name!r}: a log range needs low > 0")

    def distribution(self):
        """The Optuna distribution of this dimension."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.choices:
            return CategoricalDistribution(self.choices)
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)

    def describe(self) -> str:
        """The searched range in one short string: ``"0.0001..10 log"``, ``"{price, log}"``."""
        if self.choices:
            return "{" + ", ".join(str(c) for c in self.choices) + "}"
        kind = " log" if self.log else (" integer" if self.integer else "")
        return f"{self.low:g}..{self.high:g}{kind}"


def step(high: float = STEP_RANGE[1]) -> Dimension:
    """The step size on the log range from ``STEP_RANGE[0]`` to ``high``."""
    return Dimension("step_size", STEP_RANGE[0], high, log=True)


#: Per rule: its searched dimensions, the step size first.
SEARCH_SPACES: dict[str, tuple[Dimension, ...]] = {}


def geometry(rule_cls) -> Dimension | None:
    """The ``space`` geometries ``rule_cls`` may step in (its ``spaces``), or None when it
    has only one (nothing to search)."""
    allowed = getattr(rule_cls, "spaces", ("price", "log"))
    choices = tuple(s for s in ("price", "log") if s in allowed)
    return Dimension("space", choices=choices) if len(choices) > 1 else None


#: Hyperparameters shared by several rules: ``name -> make(rule_cls) -> Dimension | None``,
#: searched for every rule whose dataclass has a field of that name (at the time
#: :func:`space_for` is called) and for which ``make`` gives a dimension.
SHARED_DIMENSIONS: dict = {
    "space": geometry,
}


def register_space(rule: str, *dimensions: Dimension) -> None:
    """Set the search space of ``rule`` (replacing any earlier one)."""
    names = [d.name for d in dimensions]
    if len(set(names)) != len(names):
        raise ValueError(f"search space of {rule!r}: a hyperparameter is listed twice")
    SEARCH_SPACES[rule] = tuple(dimensions)


MOMENTUM = Dimension("momentum", 0.0, 0.99)
SIGNED_MOMENTUM = Dimension("momentum", -0.95, 0.95)

for _name in ("additive", "entropic", "optimistic", "extragradient"):
    register_space(_name, step())
register_space("multiplicative", step(0.99))
register_space("momentum", step(), MOMENTUM)
register_space("nesterov", step(), MOMENTUM)
register_space("adam", step(), Dimension("beta1", 0.0, 0.99), Dimension("beta2", 0.9, 0.9999))
register_space("async-goods", step(), SIGNED_MOMENTUM)
register_space("async-blocks", step(), SIGNED_MOMENTUM, Dimension("blocks", 1, 4, integer=True))
register_space("newton", step(1.0), Dimension("max_step", 0.1, 10.0, log=True))
register_space("proportional-response", step(1.0))


def space_for(rule: str, fixed=()) -> tuple[Dimension, ...]:
    """The dimensions searched for ``rule``, less those ``fixed`` pins.

    Parameters
    ----------
    rule : a registered rule name
    fixed : names of hyperparameters held at a given value (not searched)

    Returns
    -------
    tuple of Dimension
        The rule's registered dimensions, then every :data:`SHARED_DIMENSIONS` entry
        whose name is a field of the rule's dataclass and not already listed (``space``:
        the geometries in the rule's ``spaces``, when there are two).

    Raises
    ------
    KeyError
        ``rule`` has no registered search space.
    """
    from tatonnet.agents.rules import RULES

    dims = list(SEARCH_SPACES[rule])
    fields = {f.name for f in dataclasses.fields(RULES[rule])} if rule in RULES else set()
    listed = {d.name for d in dims}
    for name, make in SHARED_DIMENSIONS.items():
        if name in fields and name not in listed:
            dim = make(RULES[rule])
            dims += [dim] if dim is not None else []
    return tuple(d for d in dims if d.name not in set(fixed))


# ---- markets ------------------------------------------------------------------------------
#: Prefix of a market hyperparameter (``market.flow_gain``).
MARKET_PREFIX = "market."

#: Per market name (:data:`tatonnet.studies.grid.MARKETS`): its searched parameters.
MARKET_SPACES: dict[str, tuple[Dimension, ...]] = {}


def register_market_space(market: str, *dimensions: Dimension) -> None:
    """Set the search space of ``market`` (replacing any earlier one); every dimension's
    name starts with ``market.``."""
    names = [d.name for d in dimensions]
    if len(set(names)) != len(names):
        raise ValueError(f"search space of market {market!r}: a parameter is listed twice")
    for name in names:
        if not name.startswith(MARKET_PREFIX):
            raise ValueError(
                f"search space of market {market!r}: {name!r} does not start with {MARKET_PREFIX!r}"
            )
    MARKET_SPACES[market] = tuple(dimensions)


FLOW_GAIN = Dimension("market.flow_gain", 1e-2, 10.0, log=True)
INVENTORY_GAIN = Dimension("market.inventory_gain", 1e-3, 10.0, log=True)
REBALANCE = Dimension("market.rebalance", 0.0, 0.5)
MERCHANT_RULE = Dimension(
    "market.merchant_rule", choices=("optimistic", "extragradient", "broyden")
)
#: Searched only where merchants have merchant neighbours (not under ``central``).
NETWORK_ONLY = frozenset({"market.rebalance"})

register_market_space("flat")
register_market_space("layered", FLOW_GAIN, INVENTORY_GAIN, REBALANCE)
register_market_space("layered-books", FLOW_GAIN, INVENTORY_GAIN, REBALANCE, MERCHANT_RULE)


def market_space_for(market: str, fixed=(), central: bool = False) -> tuple[Dimension, ...]:
    """The dimensions searched for ``market``, less those ``fixed`` pins.

    Parameters
    ----------
    market : a market name (``flat``, ``layered``, ``layered-books``)
    fixed : names (with the ``market.`` prefix) held at a given value (not searched)
    central : one merchant (the ``central`` graph): drop what only acts between merchants
        (``market.rebalance``)

    Raises
    ------
    KeyError
        ``market`` has no registered search space.
    """
    skip = set(fixed) | (NETWORK_ONLY if central else set())
    return tuple(d for d in MARKET_SPACES[market] if d.name not in skip)
