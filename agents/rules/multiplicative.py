"""Multiplicative tâtonnement, capped and scaled by supply (Cole–Fleischer)."""

import dataclasses
import math

from tatonnet.agents.rules.base import PriceRule, RuleError, register, rule_kernel


@rule_kernel
def _multiplicative(u, signal, buffers, params):
    step = params[0]
    for j in range(u.shape[0]):
        z = min(1.0, max(-1.0, signal[j]))
        u[j] += math.log1p(step * z)


@register
@dataclasses.dataclass(frozen=True)
class Multiplicative(PriceRule):
    """Multiplicative tâtonnement: p <- p * (1 + step_size * clip(z/s, -1, 1)).

    Notes
    -----
    The update of Cole & Fleischer (2008) and Cheung, Cole & Devanur (2013): the price of
    good j moves by a fraction of itself proportional to excess demand *relative to
    supply*, capped at ±1 so that one round changes a price by at most a factor
    ``1 ± step_size``. Implemented in log space: ``log p_j <- mix(log p)_j +
    log1p(step_size * clip(zhat_j, -1, 1))``; needs ``step_size < 1`` so that prices stay
    positive. Per round each agent sends its g log-prices and its g-vector signal.

    Geometry: log space only (``spaces = {"log"}``). The rule *is* a proportional price
    change, ``p <- p (1 + ...)``; a price-space version would be a different rule (its
    step would not scale with the price), so ``space="price"`` is refused. Schedules and
    signal transforms apply (the schedule scales ``step_size``; a clip acts before the
    ±1 cap).
    """

    name = "multiplicative"
    space = "log"
    spaces = frozenset({"log"})
    step_size: float = 0.1

    kernel = staticmethod(_multiplicative)

    def __post_init__(self):
        super().__post_init__()
        if not self.step_size < 1:
            raise RuleError(
                f"rule 'multiplicative': step_size must be < 1 (prices would reach zero), "
                f"got {self.step_size}"
            )
