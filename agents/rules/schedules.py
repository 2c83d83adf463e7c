"""Step-size schedules: the per-round scale of a rule's step, a registry of small formulas.

As in optax (``optax.schedules``), a schedule is a function of the round alone. The engines
multiply the rule's ``step_size`` (``params[0]`` of its kernel) by
:func:`step_scale` of the *global* round before each round, so every shard, a run resumed
from a checkpoint and the per-agent reference path scale the same round by the same bits.

``t`` is the number of rounds already taken (0 for the first step). With a linear
``warmup`` of ``W`` rounds the scale climbs ``1/W, 2/W, ..., 1`` over rounds ``0..W-1``,
then the schedule runs on its own clock ``t - W`` (optax's ``join_schedules``)::

    scale(t) = (t + 1) / W                  t < W
    scale(t) = schedule(t - W)              t >= W

>>> [round(step_scale("1/t", t), 3) for t in range(4)]
[1.0, 0.5, 0.333, 0.25]
>>> [step_scale("cosine", t, horizon=4) for t in (0, 2, 4, 9)]
[1.0, 0.5, 0.0, 0.0]
>>> [step_scale("constant", t, warmup=4) for t in range(6)]
[0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One schedule: ``scale(t, horizon)`` for rounds ``t >= 0`` of its own clock."""

    name: str
    formula: str
    scale: Callable[[int, float | None], float]
    needs_horizon: bool = False


SCHEDULES: dict[str, Schedule] = {}


def register(schedule: Schedule) -> Schedule:
    SCHEDULES[schedule.name] = schedule
    return schedule


register(Schedule("constant", "1 (today's behaviour, the default)", lambda t, h: 1.0))
register(Schedule("1/t", "1 / (t + 1)", lambda t, h: 1.0 / (t + 1)))
register(Schedule("1/sqrt(t)", "1 / sqrt(t + 1)", lambda t, h: 1.0 / math.sqrt(t + 1)))
register(
    Schedule(
        "cosine",
        "(1 + cos(pi min(t, H) / H)) / 2: from 1 to 0 over H = horizon rounds, then 0",
        lambda t, h: 0.5 * (1.0 + math.cos(math.pi * min(t, h) / h)),
        needs_horizon=True,
    )
)


def step_scale(name: str, t: int, horizon: float | None = None, warmup: float = 0) -> float:
    """The factor on the step in round ``t`` (0-based) of schedule ``name`` after ``warmup``."""
    w = int(warmup)
    if t < w:
        return (t + 1) / w
    return SCHEDULES[name].scale(t - w, horizon)
