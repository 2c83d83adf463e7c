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

    Geometry (``space``, default ``"price"``): in price space the step is Euclidean (the
    mirror map ``p²/2``), as above; with ``space="log"`` it is ``log p_j <- mix(log p)_j +
    step_size * zhat_j``, mirror descent with the entropy mirror map — which is
    :class:`~tatonnet.agents.rules.entropic.Entropic`. ``additive`` and ``entropic`` are
    one rule (the same kernel, the same default step 0.05) in two default geometries;
    both names are kept for backwards compatibility, and ``make_rule("additive",
    space="log")`` runs exactly as ``make_rule("entropic")``.

    Messages per round, in either geometry: each agent sends its g coordinates (prices or
    log-prices) and its g-vector signal to each neighbour (2·g floats).
    """

    name = "additive"
    space = "price"
    step_size: float = 0.05

    kernel = staticmethod(gradient_step)
