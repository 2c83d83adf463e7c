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
    The agent's estimate of excess demand relative to supply (``z / s``).
``buffers`` : (n_buffers, g)
    The agent's optimizer state (momentum, moments...), updated in place.
``params`` : (k,) float64
    The rule's hyperparameters, from :meth:`PriceRule.params`.

The engine then pins the numeraire coordinate and, in price space, floors prices at
``PRICE_FLOOR`` so that prices stay positive (a floored price counts as divergence).

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
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import numba
import numpy as np

#: Smallest price the engines keep in price space; reaching it is reported as divergence.
PRICE_FLOOR = 1e-12

RULES: dict[str, type[PriceRule]] = {}

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
    """Base class; subclasses set the class variables and fields."""

    name: ClassVar[str]
    space: ClassVar[str]  # "log" or "price"
    n_buffers: ClassVar[int] = 0
    kernel: ClassVar  # compiled with @rule_kernel, see the module docstring
    signed: ClassVar[frozenset[str]] = frozenset()
    exchanges_per_round: ClassVar[int] = 1
    engine: ClassVar[str | None] = None

    step_size: float = 0.05

    def __post_init__(self):
        for field in dataclasses.fields(self):
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

    def init_buffers(self, ids: np.ndarray, g: int) -> np.ndarray:
        """Optimizer state at round 0 for the agents ``ids``: zeros (len(ids), n_buffers, g)."""
        return np.zeros((len(ids), self.n_buffers, g))

    def message_floats(self, g: int) -> int:
        """float64 values one agent sends one neighbour per exchange (coords + signal)."""
        return 2 * g

    def params(self) -> np.ndarray:
        """Hyperparameters as the float64 array the kernel receives."""
        return np.array([getattr(self, f.name) for f in dataclasses.fields(self)], dtype=float)

    @classmethod
    def describe(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


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
