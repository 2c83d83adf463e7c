"""Extragradient (Korpelevich / mirror-prox) tâtonnement: look ahead, then step."""

import dataclasses

from agents.rules.base import PriceRule, gradient_step, register


@register
@dataclasses.dataclass(frozen=True)
class Extragradient(PriceRule):
    """Extragradient tâtonnement: a look-ahead log-price step, then the step from the start
    with the excess demand seen at the look-ahead prices (two exchanges per round).

    Notes
    -----
    Korpelevich's extragradient method, in log-prices (the entropic mirror map, i.e.
    mirror-prox), with ``zeta(u) = Z(exp u) / S`` the relative excess demand::

        u_half = u + step_size * zeta(u)          # look ahead
        u_new  = u + step_size * zeta(u_half)     # step from u with the look-ahead signal

    The numeraire's log-price is pinned to 0 after each half step. Under ``central`` the
    auctioneer evaluates ``Z`` exactly at ``u_half`` and ``u_new`` (each is one exchange:
    every agent reports its g-vector excess demand and receives g prices).

    On a graph (gradient tracking, Metropolis weights ``W`` over closed neighbourhoods,
    ``c_i = 1 / mean_{N[i]} e`` the kernel's signal scale; see :mod:`environment.kernel`)::

        exchange 1 (send u_j, y_j):     uh_i = (W u)_i + eta c_i y_i
                                        zh_i = z_i(exp uh_i)
                                        yh_i = (W y)_i + zh_i - z_i
        exchange 2 (send uh_j, yh_j):   u'_i = (W uh)_i + eta c_i (yh_i - y_i)
                                        z'_i = z_i(exp u'_i)
                                        y'_i = (W yh)_i + z'_i - zh_i

    ``sum_i y = sum_i z`` holds after every half step (``W`` is doubly stochastic), and the
    network average obeys ``avg u' = avg u + eta avg(c yh)``: the extragradient step from
    the original point with the look-ahead signal, while consensus gets two mixing steps
    per round. Hyperparameter: ``step_size`` (eta). Messages: two exchanges per round, each
    2·g floats per neighbour (``exchanges_per_round = 2``; counted in the totals).
    ``kernel`` is the plain gradient step used for each half step. Runs in-process only
    (:mod:`environment.composite`), not on the sharded/Ray engine.
    """

    name = "extragradient"
    space = "log"
    engine = "extragradient"
    exchanges_per_round = 2
    step_size: float = 0.1

    kernel = staticmethod(gradient_step)
