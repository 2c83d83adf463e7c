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
    mix(log p)_j + step_size * zhat_j``. Prices stay positive by construction.

    Geometry (``space``, default ``"log"``): with ``space="price"`` the same step is taken
    on prices, ``p_j <- mix(p)_j + step_size * zhat_j`` (Euclidean mirror map, floored at
    ``PRICE_FLOOR``) — which is :class:`~tatonnet.agents.rules.additive.Additive`.
    ``entropic`` and ``additive`` are one rule (the same kernel, the same default step
    0.05) in two default geometries; both names are kept for backwards compatibility, and
    ``make_rule("entropic", space="price")`` runs exactly as ``make_rule("additive")``.

    Messages per round, in either geometry: each agent sends its g coordinates and its
    g-vector signal to each neighbour (2·g floats).
    """

    name = "entropic"
    space = "log"
    step_size: float = 0.05

    kernel = staticmethod(gradient_step)
