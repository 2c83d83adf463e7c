"""Heavy-ball (Polyak) momentum tâtonnement, on log-prices (default) or prices."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, RuleError, register, rule_kernel


def require_in(rule: PriceRule, name: str, low: float, high: float, low_closed=True) -> None:
    """Raise :class:`RuleError` unless ``low <= value < high`` (``low < value`` if open)."""
    value = getattr(rule, name)
    ok = (low <= value if low_closed else low < value) and value < high
    if not ok:
        bracket = "[" if low_closed else "("
        raise RuleError(
            f"rule {rule.name!r}: {name} must lie in {bracket}{low:g}, {high:g}), got {value!r}"
        )


def require_integer(rule: PriceRule, name: str) -> None:
    """Raise :class:`RuleError` unless the (already positive) hyperparameter is an integer."""
    value = getattr(rule, name)
    if float(value) != int(value):
        raise RuleError(f"rule {rule.name!r}: {name} must be a whole number, got {value!r}")


@rule_kernel
def _heavy_ball(u, signal, buffers, params):
    step, beta = params[0], params[1]
    for j in range(u.shape[0]):
        v = beta * buffers[0, j] + step * signal[j]
        buffers[0, j] = v
        u[j] += v


@register
@dataclasses.dataclass(frozen=True)
class Momentum(PriceRule):
    """Heavy-ball momentum: u <- u + v, v <- momentum * v + step_size * z/s (u = log p or p).

    Notes
    -----
    Polyak's heavy ball on the coordinates ``u`` (gradient *ascent* on excess demand, as in
    ``entropic``)::

        v_j   <- momentum * v_j + step_size * zhat_j
        u_j   <- mix(u)_j + v_j                     (u = log p, or p)

    Under ``central`` (no mixing) this is ``u_{t+1} = u_t + step_size * zhat_t +
    momentum * (u_t - u_{t-1})`` on every non-numeraire good. On a graph each agent keeps
    its own velocity and applies it after mixing (heavy ball on top of gradient tracking).

    Geometry (``space``, default ``"log"``): ``u`` are log-prices — the step is mirror
    descent with the entropy mirror map (multiplicative in prices, positive by
    construction). With ``space="price"`` ``u`` are the prices themselves — the same update
    with the Euclidean mirror map, the velocity in price units,
    floored at ``PRICE_FLOOR`` (a floored price counts as divergence).

    Hyperparameters: ``step_size`` η > 0 (default 0.02), ``momentum`` β in [0, 1)
    (default 0.5; β = 0 is ``entropic``).

    Buffers: (1, g) — row 0 the velocity ``v`` (zero at round 0).

    Messages per round, in either geometry: one exchange; each agent sends each neighbour
    its g coordinates and its g-vector signal (2·g floats).
    """

    name = "momentum"
    space = "log"
    n_buffers = 1
    signed = frozenset({"momentum"})
    step_size: float = 0.02
    momentum: float = 0.5

    kernel = staticmethod(_heavy_ball)

    def __post_init__(self):
        super().__post_init__()
        require_in(self, "momentum", 0.0, 1.0)
