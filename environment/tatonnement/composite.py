"""Dynamics of the composite rules: extragradient and Newton-type tâtonnement.

These rules need more than one kernel call (or more than excess demand) per round, so
they do not fit the fused round of :mod:`tatonnet.environment.tatonnement.kernel`. Each has a decentralized
version (a subclass of :class:`~tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`: every agent
uses only its own row and its neighbours' messages, mixed with the Metropolis weights
``W`` of :class:`~tatonnet.environment.network.Network`) and a central one (a subclass of
:class:`~tatonnet.environment.tatonnement.dynamics.CentralTatonnement`). The round is vectorized numpy /
scipy.sparse: ``W @ X`` for the messages, the numba kernel
:func:`tatonnet.environment.tatonnement.kernel.excess_demand_rows` for demand, batched ``numpy.linalg`` for the
Newton systems; no Python loop over agents. The economics of the update is documented on
the rules (:class:`tatonnet.agents.rules.extragradient.Extragradient`,
:class:`tatonnet.agents.rules.newton.Newton`).

They run in this process only (``--workers 0``); the sharded/Ray engine runs the fused
kernel alone. Registered in :data:`tatonnet.environment.engines.DYNAMICS` under the rules'
``engine`` names; :mod:`tatonnet.environment.tatonnement.dynamics` imports this module, so
:func:`~tatonnet.environment.engines.make_dynamics` always finds them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from tatonnet.agents import jacobian
from tatonnet.agents.rules import PRICE_FLOOR, PriceRule, RuleError, transforms
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import (
    CentralTatonnement,
    MarketState,
    NetworkTatonnement,
    RoundMetrics,
    prices_from_coords,
    reduce_partials,
    state_partials,
    use_threads,
)

#: Absolute floor of the Levenberg–Marquardt term (keeps ``J^T J + lam I`` invertible).
LM_FLOOR = 1e-300

#: Largest |log-price| evaluated; beyond it (or NaN) an agent's excess demand is NaN.
EXP_SAFE = 700.0


# ---------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------


def newton_direction(zeta: np.ndarray, jac: np.ndarray, damping: float, max_step: float):
    """Damped Newton directions for a batch of systems ``zeta + J d = 0``; (m, k).

    Parameters
    ----------
    zeta : (m, k) residuals (relative excess demand of the non-numeraire goods)
    jac : (m, k, k) Jacobians ``d zeta / d log p`` (non-numeraire block)
    damping : relative Levenberg–Marquardt term: ``lam = damping * trace(J^T J) / k``
    max_step : cap on ``max_j |d_j|`` (the direction is scaled down, not clipped)

    Notes
    -----
    ``d = -(J^T J + lam I)^{-1} J^T zeta`` with ``lam = damping * trace(J^T J) / k +
    LM_FLOOR``: positive definite for any finite ``J``, so singular Jacobians (e.g. a
    Leontief agent's own block, or a tracker at zero) give a finite, damped step instead
    of an error. Rows with a non-finite input or result get ``d = 0``.
    """
    m, k = zeta.shape
    jt = np.swapaxes(jac, 1, 2)
    a = jt @ jac
    lam = damping * np.einsum("mkk->m", a) / k + LM_FLOOR
    a = a + lam[:, None, None] * np.eye(k)
    b = -(jt @ zeta[:, :, None])
    with np.errstate(all="ignore"):
        ok = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
        d = np.zeros((m, k))
        if ok.any():
            try:
                d[ok] = np.linalg.solve(a[ok], b[ok])[:, :, 0]
            except np.linalg.LinAlgError:  # numerically singular despite the LM term
                d[ok] = (np.linalg.pinv(a[ok]) @ b[ok])[:, :, 0]
        d[~np.isfinite(d).all(axis=1)] = 0.0
        big = np.abs(d).max(axis=1)
    scale = np.where(big > max_step, max_step / np.where(big > 0, big, 1.0), 1.0)
    return d * scale[:, None]


def _free_goods(g: int, numeraire: int) -> np.ndarray:
    return np.array([j for j in range(g) if j != numeraire])


def pin(coords: np.ndarray, numeraire: int, space: str) -> np.ndarray:
    """Pin the numeraire (log-price 0 / price 1) of every row of ``coords`` (n, g) in place
    and, in price space, floor prices at ``PRICE_FLOOR`` (NaN passes, to be reported)."""
    if space == "log":
        coords[:, numeraire] = 0.0
    else:
        coords[:, numeraire] = 1.0
        coords[coords < PRICE_FLOOR] = PRICE_FLOOR
    return coords


def _require_log(rule: PriceRule) -> None:
    if rule.space != "log":
        raise RuleError(f"rule {rule.name!r}: the Newton dynamics work in log-prices")


class _NetworkComposite(NetworkTatonnement):
    """Validation, mixing matrices and metrics shared by the decentralized composites."""

    def __init__(self, economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
        super().__init__(economy, network, rule, signal)
        n, net = economy.n_agents, network
        #: W (n, n): Metropolis mixing weights over closed neighbourhoods (doubly stochastic)
        self.mixing = scipy.sparse.csr_array((net.mixing, net.indices, net.indptr), (n, n))
        #: A (n, n): 0/1 closed-neighbourhood adjacency (neighbourhood sums, ``local``)
        self.adjacency = scipy.sparse.csr_array(
            (np.ones(net.indices.size), net.indices, net.indptr), (n, n)
        )

    def _excess(self, coords: np.ndarray) -> np.ndarray:
        """Each agent's excess demand at its own coordinates ``coords`` (n, g): log-prices
        or prices, by the rule's space."""
        out = np.empty_like(coords)
        log_space = self.space == "log"
        # rows whose prices over- or underflow (a diverging run) report NaN excess demand,
        # which the status check reads as divergence, instead of failing in the kernel
        with np.errstate(divide="ignore", invalid="ignore"):
            logp = coords if log_space else np.log(coords)
            bad = ~(np.abs(logp) <= EXP_SAFE).all(axis=1)
        safe = np.where(bad[:, None], 0.0 if log_space else 1.0, coords) if bad.any() else coords
        use_threads(self.n_blocks)
        kernel.excess_demand_rows(np.ascontiguousarray(safe), log_space, *self._arrays, out)
        out[bad] = np.nan
        return out

    def _signal(self, tracker: np.ndarray, excess: np.ndarray) -> np.ndarray:
        """What each agent reacts to (n, g): ``c_i y_i`` (tracking) or ``c_i sum_N[i] z_j``,
        then the rule's signal transform (clip / normalize), if any."""
        if self.signal == "tracking":
            s = tracker * self.inv_scale
        else:
            s = (self.adjacency @ excess) * self.inv_scale
        return transforms.transform_rows(s, self.economy.numeraire, *self.rule.signal_transform)

    def _pin(self, coords: np.ndarray) -> np.ndarray:
        return pin(coords, self.economy.numeraire, self.space)

    def _metrics(self, round_: int, coords: np.ndarray, excess: np.ndarray) -> RoundMetrics:
        partials = state_partials(coords, excess, self.space)
        return reduce_partials(round_, partials, self.supply, self.economy.n_agents)


# ---------------------------------------------------------------------------------------
# Extragradient
# ---------------------------------------------------------------------------------------


class NetworkExtragradient(_NetworkComposite):
    """Decentralized extragradient tâtonnement (two message exchanges per round).

    The update is written out in :class:`tatonnet.agents.rules.extragradient.Extragradient`
    (``Notes``). State: :class:`~tatonnet.environment.tatonnement.dynamics.MarketState`
    with ``coords`` (n, g) log-prices or prices (the rule's ``space``), ``tracker`` (n, g) (equal to ``excess`` under ``local``), ``excess`` (n, g).
    """

    def step(self, state: MarketState, spare: MarketState | None = None):
        """One round (two exchanges); returns ``(new_state, metrics)``. ``spare`` is unused."""
        eta, W = self.rule.round_params(state.round)[0], self.mixing  # the schedule's step
        u, y, z = state.coords, state.tracker, state.excess
        s = self._signal(y, z)
        # exchange 1: neighbours' log-prices and trackers (local: excess demands)
        wu = W @ u
        uh = self._pin(wu + eta * s)
        zh = self._excess(uh)
        yh = W @ y + zh - z if self.signal == "tracking" else zh
        # exchange 2: neighbours' look-ahead trackers (local: look-ahead excess demands)
        sh = self._signal(yh, zh)
        u_new = self._pin(wu + eta * sh)
        z_new = self._excess(u_new)
        y_new = W @ yh + z_new - zh if self.signal == "tracking" else z_new
        new = MarketState(u_new, y_new, z_new, state.buffers, state.round + 1)
        return new, self._metrics(new.round, u_new, z_new)


class CentralExtragradient(CentralTatonnement):
    """Extragradient with one auctioneer: two exact evaluations of ``Z`` per round."""

    def step(self, state: MarketState, spare: MarketState | None = None):
        num, space = self.economy.numeraire, self.space
        eta = self.rule.round_params(state.round)[0]  # the schedule's step of this round
        u = state.coords[0]
        uh = _central_step(u, self._delta(eta, state.excess[0]), num, space)
        with np.errstate(over="ignore"):  # an overflow is reported as divergence
            zh = self._aggregate(prices_from_coords(uh, space))
            u_new = _central_step(u, self._delta(eta, zh), num, space)
            prices = prices_from_coords(u_new, space)
        return self.post(state, u_new, prices)

    def _delta(self, eta: float, excess: np.ndarray) -> np.ndarray:
        """The half step ``eta * signal`` from aggregate excess demand (g,)."""
        if self.rule.signal_transform[0] == transforms.NONE:
            return eta * excess / self.supply  # the order of operations of the default
        return eta * self.rule.prepare_signal(excess / self.supply, self.economy.numeraire)


def _central_step(u: np.ndarray, delta: np.ndarray, numeraire: int, space: str) -> np.ndarray:
    return pin((u + delta)[None, :], numeraire, space)[0]


def make_extragradient(economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
    """The extragradient dynamics for ``network`` (central or a graph)."""
    if network.is_central:
        return CentralExtragradient(economy, rule)
    return NetworkExtragradient(economy, network, rule, signal)


# ---------------------------------------------------------------------------------------
# Newton
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class NewtonState(MarketState):
    """:class:`~tatonnet.environment.tatonnement.dynamics.MarketState` plus the Jacobian messages.

    Attributes
    ----------
    jac_tracker : (n, k, k) — each agent's tracking estimate of the average
        non-numeraire Jacobian block ``d z / d log p`` (``k = g - 1``); under ``local``
        equal to ``jacobian``.
    jacobian : (n, k, k) — each agent's own block at its own prices.
    """

    jac_tracker: np.ndarray | None = None
    jacobian: np.ndarray | None = None


class NetworkNewton(_NetworkComposite):
    """Decentralized Newton-type tâtonnement (one exchange of ``2g + (g-1)^2`` floats).

    The update is written out in :class:`tatonnet.agents.rules.newton.Newton` (``Notes``).
    """

    def __init__(self, economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
        super().__init__(economy, network, rule, signal)
        _require_log(rule)
        self.free = _free_goods(economy.n_goods, economy.numeraire)

    def _jacobian(self, coords: np.ndarray, excess: np.ndarray) -> np.ndarray:
        """Each agent's non-numeraire block of ``d z_i / d log p`` at its prices; (n, k, k)."""
        e, a, family, sigma = self._arrays
        jac = jacobian.demand_jacobian(np.exp(coords), e, a, family, sigma, log_prices=True,
                                       demand=excess + e)  # fmt: skip
        return np.ascontiguousarray(jac[:, self.free][:, :, self.free])

    def init_state(self, prices: np.ndarray) -> NewtonState:
        base = super().init_state(prices)
        jac = self._jacobian(base.coords, base.excess)
        return NewtonState(base.coords, base.tracker, base.excess, base.buffers, 0,
                           jac.copy(), jac)  # fmt: skip

    def _mix_blocks(self, blocks: np.ndarray, matrix) -> np.ndarray:
        n, k, _ = blocks.shape
        return (matrix @ blocks.reshape(n, k * k)).reshape(n, k, k)

    def step(self, state: NewtonState, spare: MarketState | None = None):
        """One round (one exchange); returns ``(new_state, metrics)``. ``spare`` is unused."""
        rule, W, free = self.rule, self.mixing, self.free
        u, y, z, H, J = state.coords, state.tracker, state.excess, state.jac_tracker, state.jacobian
        scale = self.inv_scale[:, free]  # c_i on the non-numeraire goods (n, k)
        if self.signal == "tracking":
            zeta, jac_hat = (W @ y)[:, free] * scale, self._mix_blocks(H, W) * scale[:, :, None]
        else:
            zeta = (self.adjacency @ z)[:, free] * scale
            jac_hat = self._mix_blocks(J, self.adjacency) * scale[:, :, None]
        d = newton_direction(zeta, jac_hat, rule.damping, rule.max_step)
        u_new = W @ u
        u_new[:, free] += rule.step_size * d
        self._pin(u_new)
        z_new = self._excess(u_new)
        J_new = self._jacobian(u_new, z_new)
        if self.signal == "tracking":
            y_new = W @ y + z_new - z
            H_new = self._mix_blocks(H, W) + J_new - J
        else:
            y_new, H_new = z_new, J_new
        new = NewtonState(u_new, y_new, z_new, state.buffers, state.round + 1, H_new, J_new)
        return new, self._metrics(new.round, u_new, z_new)


class CentralNewton(CentralTatonnement):
    """Newton-type tâtonnement with one auctioneer, on the exact aggregate Jacobian."""

    def __init__(self, economy: Economy, rule: PriceRule):
        super().__init__(economy, rule)
        _require_log(rule)
        self.free = _free_goods(economy.n_goods, economy.numeraire)

    def jacobian(self, prices: np.ndarray) -> np.ndarray:
        """``diag(1/S) dZ/dlog p`` on the non-numeraire goods at ``prices`` (g,); (k, k)."""
        e, a, family, sigma = self._arrays
        jac = jacobian.aggregate_demand_jacobian(prices, e, a, family, sigma, log_prices=True)
        return (jac / self.supply[:, None])[np.ix_(self.free, self.free)]

    def step(self, state: MarketState, spare: MarketState | None = None):
        rule, supply, free = self.rule, self.supply, self.free
        u = state.coords[0]
        zeta = (state.excess[0] / supply)[free]
        d = newton_direction(zeta[None, :], self.jacobian(np.exp(u))[None], rule.damping,
                             rule.max_step)[0]  # fmt: skip
        u_new = u.copy()
        u_new[free] += rule.step_size * d
        u_new[self.economy.numeraire] = 0.0
        return self.post(state, u_new, np.exp(u_new))


def make_newton(economy: Economy, network: Network, rule: PriceRule, signal="tracking"):
    """The Newton dynamics for ``network`` (central or a graph)."""
    if network.is_central:
        return CentralNewton(economy, rule)
    return NetworkNewton(economy, network, rule, signal)
