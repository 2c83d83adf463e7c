"""Extragradient (Korpelevich / mirror-prox) tâtonnement: look ahead, then step."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, gradient_step, register


@register
@dataclasses.dataclass(frozen=True)
class Extragradient(PriceRule):
    """Extragradient: step from the start with the excess demand at a look-ahead step.

    A look-ahead step, then the step from the start with the excess demand seen at the
    look-ahead prices (two exchanges per round); in log-prices (default) or prices.

    Notes
    -----
    Korpelevich's extragradient method, in log-prices (the entropic mirror map, i.e.
    mirror-prox), with ``zeta(u) = Z(exp u) / S`` the relative excess demand::

        u_half = u + step_size * zeta(u)          # look ahead
        u_new  = u + step_size * zeta(u_half)     # step from u with the look-ahead signal

    The numeraire's log-price is pinned to 0 after each half step. Under ``central`` the
    auctioneer evaluates ``Z`` exactly at ``u_half`` and ``u_new`` (each is one exchange:
    every agent reports its g-vector excess demand and receives g prices).

    On a graph (gradient tracking as in :mod:`tatonnet.environment.tatonnement.kernel`: Metropolis weights
    ``W`` over closed neighbourhoods, ``c_i = 1 / mean_{N[i]} e`` the signal scale)::

        exchange 1 (send u_j, y_j):   uh_i = (W u)_i + eta c_i y_i        # look ahead
                                      zh_i = z_i(exp uh_i)
                                      yh_i = (W y)_i + zh_i - z_i         # track at uh
        exchange 2 (send yh_j):       u'_i = (W u)_i + eta c_i yh_i       # step from W u
                                      z'_i = z_i(exp u'_i)
                                      y'_i = (W yh)_i + z'_i - zh_i

    ``sum_i y = sum_i z`` holds after each half step (``W`` is doubly stochastic): the
    trackers are updated at the look-ahead point too, which is what the second exchange is
    for. Under ``local`` the signal is ``c_i sum_{N[i]} z_j`` (resp. ``zh_j``) and the
    exchanges carry ``z`` and ``zh`` instead of the trackers.
    (A variant with ``u' = W uh + eta (c yh - c y)``, two consensus steps per round,
    measured less stable: it diverged on ces-substitutes at a step where this one
    converges.)

    Hyperparameter: ``step_size`` (eta). Messages per round: two exchanges
    (``exchanges_per_round = 2``), 2·g floats per neighbour in the first, g in the
    second: 3·g per directed edge per round (:meth:`round_floats`). Under ``central``:
    per exchange each agent reports g floats and receives g, 4·g per agent per round.
    ``kernel`` is the plain gradient step of each half step. Its dynamics
    (:mod:`tatonnet.environment.tatonnement.composite`) runs in this process and, on a
    graph, on the sharded/Ray engine (the same round, bit-identical); central in-process.

    Geometry (``space``, default ``"log"``): ``u`` are log-prices (``zeta(u) = Z(exp u) /
    S``: mirror-prox with the entropy mirror map, the numeraire's log-price pinned at 0) or,
    with ``space="price"``, prices (``zeta(p) = Z(p) / S``: Korpelevich's Euclidean
    extragradient; the numeraire's price pinned at 1 and every price floored at
    ``PRICE_FLOOR`` after each half step). Messages are the same in both geometries.
    Options: the schedule scales ``step_size`` in both half steps of a round (the round's
    global number); ``clip`` / ``normalize`` transform each half step's signal.
    """

    name = "extragradient"
    space = "log"
    engine = "extragradient"
    exchanges_per_round = 2
    step_size: float = 0.1

    kernel = staticmethod(gradient_step)

    def round_floats(self, g: int, central: bool) -> int:
        """float64 per round: per directed edge (2g + g) or, central, per agent (2 x 2g)."""
        return 4 * g if central else 3 * g
