"""Additive (gradient) tâtonnement."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, gradient_step, register


@register
@dataclasses.dataclass(frozen=True)
class Additive(PriceRule):
    """Additive tâtonnement: p <- p + step_size * z/s, in price space (floored to stay positive).

    Notes
    -----
    Update, per agent and good: ``p_j <- mix(p)_j + step_size * zhat_j`` where
    ``mix(p)`` is the neighbourhood average of prices and ``zhat`` the agent's estimate
    of excess demand relative to supply. This is plain gradient descent on prices — the
    classic Walrasian tâtonnement and the perceptron of the founding essay. Prices are
    floored at ``PRICE_FLOOR``; a floored price is reported as divergence.
    Per round each agent sends its g prices and its g-vector signal to each neighbour.
    """

    name = "additive"
    space = "price"
    step_size: float = 0.05

    kernel = staticmethod(gradient_step)
