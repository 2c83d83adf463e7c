"""The price-update rule interface and its registry.

A rule is a small frozen dataclass: its fields are the hyperparameters, ``kernel`` is a
numba function that updates *one agent's* coordinates in place. The same kernel serves
the fused network round, the central auctioneer and the per-agent reference path, so each
rule's economics is written once. Adding a rule is one new module in this package that
defines a subclass decorated with :func:`register`.

Kernel contract::

    kernel(u, signal, buffers, params) -> None

``u`` : (g,)
    The agent's coordinates after mixing with its neighbours: log-prices when
    ``space == "log"``, prices when ``space == "price"``. Updated in place.
``signal`` : (g,)
    The agent's estimate of excess demand relative to supply (``z / s``), after the
    rule's signal transform (``clip`` / ``normalize``, :mod:`.transforms`).
``buffers`` : (n_buffers, g)
    The agent's optimizer state (momentum, moments...), updated in place.
``params`` : (k,) float64
    The rule's hyperparameters, from :meth:`PriceRule.params`; in round ``t`` the engines
    pass :meth:`PriceRule.round_params` ``(t)``: ``params[0]`` (``step_size``) times the
    schedule's scale (:mod:`.schedules`).

The engine then pins the numeraire coordinate (log-price 0, price 1: the same numeraire
price 1 in both geometries) and, in price space, floors prices at ``PRICE_FLOOR`` so that
prices stay positive (a floored price counts as divergence).

Options every rule takes besides its own hyperparameters (:data:`OPTIONS`; not in
:meth:`PriceRule.params`; validated with one-line :class:`RuleError`)::

    space      "log" | "price"   the geometry (mirror map) the kernel steps in; default:
                                 the rule's own (``space`` in its class body); rules
                                 meaningful in one geometry only list it in ``spaces``
    schedule   "constant" | "1/t" | "1/sqrt(t)" | "cosine"   step-size schedule
    horizon    whole number >= 1   rounds of the cosine schedule (cosine only)
    warmup     whole number >= 0   rounds of linear warmup before the schedule (0: none)
    clip       c > 0 or None       clip the signal's norm at c (per agent, per round)
    normalize  bool                step on signal / ||signal||

The defaults (the rule's own space, ``constant``, no warmup, no clip, no normalization)
are today's behaviour, bit for bit. Geometry: in log space a first-order step is mirror
descent with the entropy mirror map (``p <- p exp(step)``, prices positive by construction);
in price space it is the Euclidean step (``p <- p + step``, floored).

Class-level hooks a rule may override (defaults suit a one-exchange rule):

``signed``
    Names of hyperparameters that may be zero or negative (e.g. a momentum of either sign);
    all others must be positive.
``init_buffers(ids, g)``
    The optimizer state at round 0 for the agents with global ids ``ids``: (len(ids),
    n_buffers, g). Depends on ids only (never on the worker), so sharded runs agree.
``exchanges_per_round`` / ``message_floats(g)``
    How many times per round each agent messages each neighbour, and how many float64 it
    sends each time (default: its g coordinates and its g-vector signal). Used for the
    message totals the study reports; a rule documents both in its docstring.
``engine``
    ``None`` for rules that fit the kernel contract above. A rule that needs more than one
    kernel call per round (extragradient, Newton) names the dynamics that runs it, and
    :func:`tatonnet.environment.engines.make_dynamics` dispatches on it.
``spaces``
    The geometries the rule may step in (default both); e.g. ``multiplicative`` only
    ``{"log"}``.
``step_options``
    Whether the rule takes ``schedule``, ``warmup``, ``clip`` and ``normalize`` (default
    True; Newton and proportional response, which do not step on a signal, do not).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numba
import numpy as np

from tatonnet.agents.rules.schedules import SCHEDULES, step_scale
from tatonnet.agents.rules.transforms import NONE, code_of, transform_signal

#: Smallest price the engines keep in price space; reaching it is reported as divergence.
PRICE_FLOOR = 1e-12

RULES: dict[str, type[PriceRule]] = {}

#: The geometries a rule may step in: log-prices (entropy mirror map) or prices (Euclidean).
SPACES = ("log", "price")

#: Fields of every rule that are options of the engines, not kernel hyperparameters.
OPTIONS = ("space", "schedule", "horizon", "warmup", "clip", "normalize")

#: numba signature every rule kernel is compiled with (explicitly, so that the fused round
#: receives it as a first-class function of one fixed type and can be cached on disk).
KERNEL_SIGNATURE = numba.types.void(
    numba.types.float64[::1],  # u
    numba.types.float64[::1],  # signal
    numba.types.float64[:, ::1],  # buffers
    numba.types.float64[::1],  # params
)
KERNEL_TYPE = numba.types.FunctionType(KERNEL_SIGNATURE)


def rule_kernel(fn):
    """Decorator compiling a rule kernel with :data:`KERNEL_SIGNATURE` (cached)."""
    return numba.njit(KERNEL_SIGNATURE, cache=True, error_model="numpy")(fn)


@rule_kernel
def gradient_step(u, signal, buffers, params):
    """``u += params[0] * signal``: a plain gradient step in the rule's space."""
    step = params[0]
    for j in range(u.shape[0]):
        u[j] += step * signal[j]


class RuleError(ValueError):
    """A rule name or hyperparameter is invalid."""


@dataclasses.dataclass(frozen=True)
class PriceRule:
    """Base class; subclasses set the class variables and fields.

    ``space`` in a subclass body (``space = "log"``) is the rule's default geometry; the
    instance field ``space`` is the geometry this rule steps in (see the module docstring
    for the options).
    """

    name: ClassVar[str]
    n_buffers: ClassVar[int] = 0
    kernel: ClassVar  # compiled with @rule_kernel, see the module docstring
    signed: ClassVar[frozenset[str]] = frozenset()
    exchanges_per_round: ClassVar[int] = 1
    engine: ClassVar[str | None] = None
    spaces: ClassVar[frozenset[str]] = frozenset(SPACES)
    step_options: ClassVar[bool] = True

    step_size: float = 0.05
    space: str | None = None  # None: the class's default geometry (its ``space``)
    schedule: str = "constant"
    horizon: float | None = None
    warmup: float = 0
    clip: float | None = None
    normalize: bool = False

    def __post_init__(self):
        if self.space is None:
            object.__setattr__(self, "space", type(self).space)
        self._check_options()
        for field in dataclasses.fields(self):
            if field.name in OPTIONS:
                continue
            value = getattr(self, field.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            finite = number and math.isfinite(value)
            if field.name in self.signed and not finite:
                raise RuleError(
                    f"rule {self.name!r}: {field.name} must be a finite number, got {value!r}"
                )
            if field.name not in self.signed and not (finite and value > 0):
                raise RuleError(
                    f"rule {self.name!r}: {field.name} must be a positive finite number, got {value!r}"
                )

    def _check_options(self) -> None:
        """One-line :class:`RuleError` for a bad geometry, schedule or signal transform."""
        name, space = self.name, self.space
        if space not in SPACES:
            raise RuleError(f"rule {name!r}: space must be 'log' or 'price', got {space!r}")
        if space not in self.spaces:
            only = " or ".join(sorted(self.spaces))
            raise RuleError(
                f"rule {name!r} is defined in {only} space only, got space={space!r}"
            )
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise RuleError(
                f"rule {name!r}: unknown schedule {self.schedule!r}; expected one of "
                f"{list(SCHEDULES)}"
            )
        needs_horizon = SCHEDULES[self.schedule].needs_horizon
        if needs_horizon and self.horizon is None:
            raise RuleError(
                f"rule {name!r}: schedule {self.schedule!r} needs horizon (its length in rounds)"
            )
        if not needs_horizon and self.horizon is not None:
            raise RuleError(
                f"rule {name!r}: horizon is only for the 'cosine' schedule, not {self.schedule!r}"
            )
        if self.horizon is not None:
            _require_whole(name, "horizon", self.horizon, low=1)
        _require_whole(name, "warmup", self.warmup, low=0)
        clip = self.clip
        if clip is not None:
            number = isinstance(clip, int | float) and not isinstance(clip, bool)
            if not (number and math.isfinite(clip) and clip > 0):
                raise RuleError(
                    f"rule {name!r}: clip must be a positive finite number, got {clip!r}"
                )
        if not isinstance(self.normalize, bool | np.bool_):
            raise RuleError(
                f"rule {name!r}: normalize must be true or false, got {self.normalize!r}"
            )
        if self.normalize and clip is not None:
            raise RuleError(f"rule {name!r}: clip and normalize exclude each other; give one")
        if not self.step_options and (self.scheduled or self.signal_transform[0] != NONE):
            raise RuleError(
                f"rule {name!r} takes no schedule, warmup, clip or normalize (it does not "
                "step on a signal with step_size)"
            )

    @property
    def scheduled(self) -> bool:
        """Whether the step changes from round to round (a schedule other than constant,
        or a warmup)."""
        return self.schedule != "constant" or self.warmup > 0

    @property
    def signal_transform(self) -> tuple[int, float]:
        """``(code, bound)`` of the signal transform the kernels apply (:mod:`.transforms`)."""
        return code_of(self.clip, bool(self.normalize))

    def step_scale(self, round_: int) -> float:
        """The schedule's factor on ``step_size`` in round ``round_`` (0 = the first step)."""
        return step_scale(self.schedule, round_, self.horizon, self.warmup)

    def round_params(self, round_: int) -> np.ndarray:
        """The kernel's ``params`` for the step taken from round ``round_`` (the global round:
        0 for the first): :meth:`params` with ``params[0]`` scaled by :meth:`step_scale`."""
        params = self.params()
        if self.scheduled:
            params[0] *= self.step_scale(round_)
        return params

    def prepare_signal(self, signal, numeraire: int) -> np.ndarray:
        """The signal (g,) the kernel receives: a contiguous copy, transformed."""
        signal = np.array(signal, dtype=float)
        code, bound = self.signal_transform
        transform_signal(signal, numeraire, code, bound)
        return signal

    def init_buffers(self, ids: np.ndarray, g: int) -> np.ndarray:
        """Optimizer state at round 0 for the agents ``ids``: zeros (len(ids), n_buffers, g)."""
        return np.zeros((len(ids), self.n_buffers, g))

    def message_floats(self, g: int) -> int:
        """float64 values one agent sends one neighbour per exchange (coords + signal)."""
        return 2 * g

    def params(self) -> np.ndarray:
        """Hyperparameters (``step_size`` first, not the :data:`OPTIONS`) as the float64
        array the kernel receives."""
        return np.array(
            [getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in OPTIONS],
            dtype=float,
        )

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


def _require_whole(rule: str, name: str, value, low: int) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value == int(value) and value >= low):
        raise RuleError(
            f"rule {rule!r}: {name} must be a whole number >= {low} (rounds), got {value!r}"
        )


def register(cls: type[PriceRule]) -> type[PriceRule]:
    """Class decorator adding a rule to :data:`RULES` under ``cls.name``."""
    RULES[cls.name] = cls
    return cls


def make_rule(name: str, **hyperparameters) -> PriceRule:
    """Instantiate the registered rule ``name`` with the given hyperparameters."""
    try:
        cls = RULES[name]
    except KeyError:
        raise RuleError(f"unknown rule {name!r}; expected one of {sorted(RULES)}") from None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(hyperparameters) - known
    if unknown:
        raise RuleError(
            f"rule {name!r} has no hyperparameter {sorted(unknown)[0]!r}; it takes {sorted(known)}"
        )
    return cls(**hyperparameters)
