"""Asynchronous tâtonnement: one good a round (``async-goods``) or one block of agents a
round (``async-blocks``), each with an optional momentum of either sign.

The kernel sees no round number, so each agent counts rounds in its buffers. Every agent
starts its count at 0 and steps it once a round, so the count is the same for all agents
and a sharded run takes the same decisions as one process.
"""

import dataclasses

import numpy as np

from tatonnet.agents.rules.base import PriceRule, register, rule_kernel
from tatonnet.agents.rules.momentum import require_in, require_integer


@rule_kernel
def _async_goods(u, signal, buffers, params):
    step, beta = params[0], params[1]
    g = u.shape[0]
    k = int(buffers[1, 0])
    v = beta * buffers[0, k] + step * signal[k]
    buffers[0, k] = v
    u[k] += v
    buffers[1, 0] = float((k + 1) % g)


@register
@dataclasses.dataclass(frozen=True)
class AsyncGoods(PriceRule):
    """Asynchronous goods: round t moves only good t mod g (optional momentum).

    Notes
    -----
    A cyclic coordinate (Gauss–Seidel-like) tâtonnement: in round ``t`` each agent moves
    the log-price of one good, ``k = t mod g``, and leaves the others as mixing made them::

        v_k <- momentum * v_k + step_size * zhat_k
        u_k <- mix(u)_k + v_k                       (u = log p; other goods: u_j = mix(u)_j)

    The velocity ``v_k`` of good k changes only on its own turn. A kernel is not told which
    good is the numeraire, so the cycle runs over all g goods and the numeraire's turn is
    a round in which no price moves (the engine pins the numeraire): each non-numeraire
    good moves once every g rounds, in a fixed order. Under ``central`` those idle rounds
    change nothing (same prices, same signal), so the run is the cycle over the g-1
    non-numeraire goods with round numbers stretched by g/(g-1); on a graph, mixing and
    tracking continue in them.

    A negative momentum is allowed: Gidel et al. (2019), "Negative momentum for improved
    game dynamics" (AISTATS), show that on bilinear games simultaneous gradient steps
    diverge, alternating ones cycle, and alternating steps with a *negative* momentum
    converge — cyclic goods are this rule's analogue of alternating play.

    Hyperparameters: ``step_size`` η > 0 (default 0.05), ``momentum`` β in (-1, 1)
    (default 0: plain cyclic steps).

    Geometry (``space``, default ``"log"``): ``u`` are log-prices — the step is mirror
    descent with the entropy mirror map (multiplicative in prices, positive by
    construction). With ``space="price"`` ``u`` are the prices themselves — the same update
    with the Euclidean mirror map, ``p_k <- mix(p)_k + v_k``,
    floored at ``PRICE_FLOOR`` (a floored price counts as divergence).

    Buffers: (2, g) — row 0 the per-good velocity ``v``; ``buffers[1, 0]`` the round count
    ``t mod g`` (the rest of row 1 unused, zero).

    Messages per round, in either geometry: one exchange of 2·g floats per neighbour (its
    g coordinates and its signal); every good's coordinates are still mixed every round.
    """

    name = "async-goods"
    space = "log"
    n_buffers = 2
    signed = frozenset({"momentum"})
    step_size: float = 0.05
    momentum: float = 0.0

    kernel = staticmethod(_async_goods)

    def __post_init__(self):
        super().__post_init__()
        require_in(self, "momentum", -1.0, 1.0, low_closed=False)


@rule_kernel
def _async_blocks(u, signal, buffers, params):
    step, blocks, beta = params[0], params[1], params[2]
    count = buffers[1, 0]
    if count == buffers[1, 1]:  # this agent's block moves this round
        for j in range(u.shape[0]):
            v = beta * buffers[0, j] + step * signal[j]
            buffers[0, j] = v
            u[j] += v
    count += 1.0
    if count >= blocks:
        count = 0.0
    buffers[1, 0] = count


@register
@dataclasses.dataclass(frozen=True)
class AsyncBlocks(PriceRule):
    """Asynchronous blocks: agents in B blocks by global id; block t mod B moves in round t.

    Notes
    -----
    Agent ``i`` belongs to block ``i mod B`` (its *phase*, fixed by its stable global id,
    so that any sharding gives the same blocks). In round ``t`` the agents of block
    ``t mod B`` take a step, the others keep their mixed coordinates::

        if t mod B == i mod B:
            v_i <- momentum * v_i + step_size * zhat_i
            u_i <- mix(u)_i + v_i                   (u = log p, or p)
        else:
            u_i <- mix(u)_i

    On a graph every agent still mixes and tracks every round; only the rule's step is
    staggered. Under ``central`` the auctioneer is agent 0 of one, so it steps in rounds
    0, B, 2B, ... and holds its prices in between (a plain step every B rounds).

    A negative momentum is allowed: Gidel et al. (2019), "Negative momentum for improved
    game dynamics" (AISTATS), show that alternating gradient play with a negative momentum
    converges on bilinear games where it otherwise cycles.

    Hyperparameters: ``step_size`` η > 0 (default 0.05), ``blocks`` B a whole number >= 1
    (default 2; B = 1 is synchronous heavy ball), ``momentum`` β in (-1, 1) (default 0).

    Geometry (``space``, default ``"log"``): ``u`` are log-prices — the step is mirror
    descent with the entropy mirror map (multiplicative in prices, positive by
    construction). With ``space="price"`` ``u`` are the prices themselves — the same update
    with the Euclidean mirror map, ``p_i <- mix(p)_i + v_i``,
    floored at ``PRICE_FLOOR`` (a floored price counts as divergence).

    Buffers: (2, g) — row 0 the velocity ``v``; ``buffers[1, 0]`` the round count
    ``t mod B`` (equal for every agent), ``buffers[1, 1]`` the agent's phase ``i mod B``
    (set by :meth:`init_buffers`); the rest of row 1 unused, zero.

    Messages per round, in either geometry: one exchange of 2·g floats per neighbour (its
    g coordinates and its signal), for agents of every block.
    """

    name = "async-blocks"
    space = "log"
    n_buffers = 2
    signed = frozenset({"momentum"})
    step_size: float = 0.05
    blocks: float = 2
    momentum: float = 0.0

    kernel = staticmethod(_async_blocks)

    def __post_init__(self):
        super().__post_init__()
        require_integer(self, "blocks")
        require_in(self, "momentum", -1.0, 1.0, low_closed=False)

    def init_buffers(self, ids: np.ndarray, g: int) -> np.ndarray:
        """Zero velocity and count; ``[:, 1, 1]`` the phase ``id mod blocks``: (len(ids), 2, g)."""
        buffers = np.zeros((len(ids), self.n_buffers, g))
        buffers[:, 1, 1] = np.asarray(ids, dtype=np.int64) % int(self.blocks)
        return buffers
