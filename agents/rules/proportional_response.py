"""Proportional response: buyers re-split their budgets by the utility each good gave."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, RuleError, register


@register
@dataclasses.dataclass(frozen=True)
class ProportionalResponse(PriceRule):
    """Proportional response (Fisher markets only): bids follow each good's utility share.

    Notes
    -----
    Not a tâtonnement kernel: buyers update *bids* ``b_ij`` and prices are their totals,
    ``p_j = sum_i b_ij / s_j``; the dynamics is :mod:`tatonnet.environment.fisher` (engine
    ``"proportional-response"``). Per round every buyer moves to ``b_i <- (1 - eta) b_i +
    eta * B_i w_i / sum_j w_ij`` with ``w_ij = a_ij x_ij`` (linear; Wu & Zhang 2007),
    ``a_ij^(1/sigma) x_ij^rho`` (CES substitutes; Zhang 2011) or ``a_ij p_j^(1-sigma)``
    (Cobb–Douglas, CES complements, Leontief: the best response, as Cheung, Cole & Tao
    2018 use for ``rho < 0``), where ``x_ij = b_ij / p_j``.

    Hyperparameter: ``step_size`` = the damping ``eta`` in (0, 1] (1: plain proportional
    response). On a graph each agent estimates the price totals by gradient tracking of
    the average bid and sends its m = g - 1 tracked values to each neighbour per round.
    Needs a Fisher-shaped economy (buyers own money only, sellers value money only);
    anything else is refused with a one-line :class:`RuleError`.

    Geometry: buyers update bids, not prices, so there is no price step to take in
    another geometry: ``space`` stays ``"log"`` (``"price"`` is refused), and the rule
    takes no ``schedule``, ``warmup``, ``clip`` or ``normalize``.
    """

    name = "proportional-response"
    space = "log"
    spaces = frozenset({"log"})
    step_options = False
    engine = "proportional-response"
    kernel = None  # the engine runs it (see tatonnet.environment.fisher)

    step_size: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not self.step_size <= 1:
            raise RuleError(
                f"rule 'proportional-response': step_size (damping) must be in (0, 1], "
                f"got {self.step_size}"
            )

    def message_floats(self, g: int) -> int:
        """The m = g - 1 tracked average bids (money has none)."""
        return g - 1
