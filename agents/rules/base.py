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
    return numba.njit(KERNEL_SIGNATURE, cache=True)(fn)


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

    step_size: float = 0.05

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise RuleError(
                    f"rule {self.name!r}: {field.name} must be a positive finite number, got {value!r}"
                )

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
