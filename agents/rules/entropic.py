"""Entropic (exponentiated-gradient, mirror-descent) tâtonnement."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, gradient_step, register


@register
@dataclasses.dataclass(frozen=True)
class Entropic(PriceRule):
    """Entropic tâtonnement: p <- p * exp(step_size * z/s), i.e. gradient steps on log-prices.

    Notes
    -----
    Mirror descent with the entropy mirror map (exponentiated gradient): ``log p_j <-
    mix(log p)_j + step_size * zhat_j``. Prices stay positive by construction. Per round
    each agent sends its g log-prices and its g-vector signal to each neighbour.
    """

    name = "entropic"
    space = "log"
    step_size: float = 0.05

    kernel = staticmethod(gradient_step)
