"""Nesterov accelerated tâtonnement (Sutskever's form, one signal per round)."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, register, rule_kernel
from tatonnet.agents.rules.momentum import require_in


@rule_kernel
def _nesterov(u, signal, buffers, params):
    step, beta = params[0], params[1]
    for j in range(u.shape[0]):
        v = beta * buffers[0, j] + step * signal[j]
        buffers[0, j] = v
        u[j] += beta * v + step * signal[j]


@register
@dataclasses.dataclass(frozen=True)
class Nesterov(PriceRule):
    """Nesterov momentum, look-ahead form: u <- u + momentum * v + step_size * z/s (u = log p or p).

    Notes
    -----
    Sutskever et al. (2013) write Nesterov's accelerated gradient with a look-ahead::

        v_{t+1} = β v_t + η zhat(θ_t + β v_t),      θ_{t+1} = θ_t + v_{t+1}

    which needs the signal at the look-ahead point ``θ_t + β v_t``. The agents here hold and
    publish the look-ahead point itself, ``φ_t = θ_t + β v_t`` (their log-prices ``u``), so the
    one signal a round provides (excess demand at the prices they hold) is exactly the one
    required. Substituting gives the update each agent applies::

        v_j <- β v_j + η zhat_j
        u_j <- mix(u)_j + β v_j + η zhat_j          (= u + (1 + β) v_new - β v_old)

    Under ``central`` the iterates ``u_t`` are Sutskever's look-ahead points ``φ_t`` and
    ``θ_t = u_t - β v_t``; both sequences converge to the same limit (``v -> 0``). This is
    also the form used by PyTorch's ``SGD(nesterov=True)``.

    Geometry (``space``, default ``"log"``): ``u`` are log-prices — the step is mirror
    descent with the entropy mirror map (multiplicative in prices, positive by
    construction). With ``space="price"`` ``u`` are the prices themselves — the same update
    with the Euclidean mirror map, look-ahead points and velocity in price units,
    floored at ``PRICE_FLOOR`` (a floored price counts as divergence).

    Hyperparameters: ``step_size`` η > 0 (default 0.02), ``momentum`` β in [0, 1)
    (default 0.5).

    Buffers: (1, g) — row 0 the velocity ``v`` (zero at round 0).

    Messages per round, in either geometry: one exchange of 2·g floats per neighbour (its
    g coordinates and its signal).
    """

    name = "nesterov"
    space = "log"
    n_buffers = 1
    signed = frozenset({"momentum"})
    step_size: float = 0.02
    momentum: float = 0.5

    kernel = staticmethod(_nesterov)

    def __post_init__(self):
        super().__post_init__()
        require_in(self, "momentum", 0.0, 1.0)
