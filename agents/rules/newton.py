"""Newton-type tâtonnement: damped Newton steps on log-prices from the demand Jacobian."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, RuleError, gradient_step, register


@register
@dataclasses.dataclass(frozen=True)
class Newton(PriceRule):
    """Newton tâtonnement: damped (Levenberg–Marquardt) Newton steps on log-prices.

    From the analytic excess-demand Jacobian (aggregated over the network by gradient
    tracking).

    Notes
    -----
    Let ``f`` be the non-numeraire goods, ``zeta = Z / S`` the relative excess demand and
    ``J = diag(1/S) dZ/dlog p`` restricted to ``f x f`` (income effect included, see
    :mod:`tatonnet.agents.jacobian`). Each round, with ``lam = damping * (trace(J^T J) / (g-1))
    + 1e-300`` (a relative Levenberg–Marquardt term, so the system is always solvable,
    also where ``J`` is singular)::

        d    = -(J^T J + lam I)^{-1} J^T zeta_f           # damped Newton direction
        d   <- d * min(1, max_step / max|d|)              # step cap (log-price units)
        u_f <- u_f + step_size * d                        # numeraire log-price stays 0

    With ``damping -> 0`` and ``step_size = 1`` this is Newton's method on ``Z(p) = 0``
    in log-prices (quadratic convergence near a regular equilibrium). A non-finite
    direction (e.g. a non-finite Jacobian) becomes a zero step, and the run is reported
    as it behaves.

    ``central``: the auctioneer uses the exact aggregate Jacobian ``sum_i dz_i/dlog p``.
    On a graph, each agent tracks both the average excess demand (``y``, as in
    :mod:`tatonnet.environment.tatonnement.kernel`) and the average ``f x f`` Jacobian block (``H``), and
    solves its own system with the trackers it has just received, mixed: ``zeta_hat =
    c_i (W y)_i``, ``J_hat = diag(c_i) (W H)_i`` (``c_i`` the kernel's signal scale, 1 /
    neighbourhood-mean endowment; under ``local``, neighbourhood sums of ``z`` and of the
    own Jacobians instead)::

        u'_i = (W u)_i + step_size * d_i(c_i y_i, diag(c_i) H_i)
        y'_i = (W y)_i + z_i(u'_i) - z_i(u_i)
        H'_i = (W H)_i + J_i(u'_i) - J_i(u_i)

    On a graph the rate is set by consensus, not by Newton: full steps (``step_size = 1``)
    taken on early, still local, tracker estimates scatter the agents' prices; steps of
    ~0.1–0.3 converge (measured on small worlds, see ``tests/test_composite.py``).

    Hyperparameters: ``step_size`` (1 = full Newton step), ``damping`` (relative LM term),
    ``max_step`` (cap on the largest log-price change per round). Messages: one exchange
    per round, each ``2 g + (g-1)^2`` floats per neighbour (log-prices, tracker, Jacobian
    tracker). Under ``central`` each agent reports ``g + (g-1)^2`` floats (excess demand and
    its Jacobian block) and receives g prices. ``kernel`` (a plain gradient step) is not
    used by the Newton dynamics (:mod:`tatonnet.environment.tatonnement.composite`), which
    runs in this process and, on a graph, on the sharded/Ray engine (bit-identical).

    Geometry: log space only — the Jacobian is taken in log-prices and the step cap is in
    log-price units; ``space="price"`` is refused. Its step is a Newton step, not a step on
    the signal, so it takes no ``schedule``, ``warmup``, ``clip`` or ``normalize``.
    """

    name = "newton"
    space = "log"
    spaces = frozenset({"log"})
    step_options = False
    engine = "newton"
    step_size: float = 1.0
    damping: float = 1e-6
    max_step: float = 1.0

    kernel = staticmethod(gradient_step)

    def __post_init__(self):
        super().__post_init__()
        if self.step_size > 1:
            raise RuleError(
                f"rule 'newton': step_size must be <= 1 (a fraction of the Newton step), "
                f"got {self.step_size}"
            )

    def round_floats(self, g: int, central: bool) -> int:
        """float64 per round: per directed edge, or (central) per agent: up g + (g-1)^2
        (excess demand and Jacobian block), down g prices."""
        return 2 * g + (g - 1) ** 2

    def message_floats(self, g: int) -> int:
        """Log-prices, excess-demand tracker and the (g-1)x(g-1) Jacobian tracker."""
        return 2 * g + (g - 1) ** 2
