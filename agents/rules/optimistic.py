"""Optimistic gradient tâtonnement: a step on 2 z_t - z_{t-1}."""

import dataclasses

from tatonnet.agents.rules.base import PriceRule, register, rule_kernel


@rule_kernel
def _optimistic(u, signal, buffers, params):
    step = params[0]
    for j in range(u.shape[0]):
        s = signal[j]
        u[j] += step * (2.0 * s - buffers[0, j])
        buffers[0, j] = s


@register
@dataclasses.dataclass(frozen=True)
class Optimistic(PriceRule):
    """Optimistic gradient: u <- u + step_size * (2 z_t/s - z_{t-1}/s) (u = log p or p).

    Notes
    -----
    Optimistic gradient (Popov 1980; Rakhlin & Sridharan 2013; Daskalakis et al. 2018),
    the classic remedy for cycling in min-max games: the last signal is used as a
    prediction of the next one, an extrapolation step without a second evaluation::

        u_j <- mix(u)_j + η (2 zhat_j(t) - zhat_j(t-1))        (u = log p, or p)

    with ``zhat(-1) = 0``, so the first round steps by ``2 η zhat(0)``.

    Geometry (``space``, default ``"log"``): ``u`` are log-prices — the step is mirror
    descent with the entropy mirror map (multiplicative in prices, positive by
    construction). With ``space="price"`` ``u`` are the prices themselves — the same update
    with the Euclidean mirror map, ``p_j <- mix(p)_j + η (2 zhat_j(t) - zhat_j(t-1))``,
    floored at ``PRICE_FLOOR`` (a floored price counts as divergence).

    Hyperparameters: ``step_size`` η > 0 (default 0.01). Its stable range is about a third
    of plain gradient steps' (for a real eigenvalue λ of the linearized map the iteration
    is stable for η λ < 2/3, against 2 for ``entropic``).

    Buffers: (1, g) — row 0 the previous round's signal ``zhat(t-1)``.

    Messages per round, in either geometry: one exchange of 2·g floats per neighbour (its
    g coordinates and its signal); the previous signal is the agent's own.
    """

    name = "optimistic"
    space = "log"
    n_buffers = 1
    step_size: float = 0.01

    kernel = staticmethod(_optimistic)
