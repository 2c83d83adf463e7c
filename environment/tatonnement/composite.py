"""Dynamics of the composite rules: extragradient and Newton-type tâtonnement.

These rules need more than one kernel call (or more than excess demand) per round, so
they do not fit the fused round of :mod:`tatonnet.environment.tatonnement.kernel`. Each
has a decentralized version and a central one (a subclass of
:class:`~tatonnet.environment.tatonnement.dynamics.CentralTatonnement`).

The decentralized round is written once, as a
:class:`~tatonnet.environment.tatonnement.rows.RowRound` (:class:`ExtragradientRound`,
:class:`NewtonRound`): every agent uses only its own row and its neighbours' messages,
mixed with the Metropolis weights ``W`` of :class:`~tatonnet.environment.network.Network`.
The in-process dynamics (:class:`NetworkExtragradient`, :class:`NetworkNewton`, subclasses
of :class:`~tatonnet.environment.tatonnement.dynamics.NetworkTatonnement`) runs it on the
whole network, and the sharded/Ray engine hands the same object to every shard
(:mod:`tatonnet.distributed.composite_shard`), so both give the same bits at any worker
count. The round is vectorized numpy / scipy.sparse: ``W @ X`` for the messages, the
numba kernel :func:`tatonnet.environment.tatonnement.kernel.excess_demand_rows` for
demand, batched ``numpy.linalg`` for the Newton systems; no Python loop over agents. The
economics of the update is documented on the rules
(:class:`tatonnet.agents.rules.extragradient.Extragradient`,
:class:`tatonnet.agents.rules.newton.Newton`).

Registered in :data:`tatonnet.environment.engines.DYNAMICS` under the rules' ``engine``
names. The central versions run in this process only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tatonnet.agents import jacobian
from tatonnet.agents.rules import PriceRule, RuleError, transforms
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement.dynamics import (
    CentralTatonnement,
    MarketState,
    prices_from_coords,
)
from tatonnet.environment.tatonnement.rows import RowRound, RowRoundDynamics, Rows, pin

#: Absolute floor of the Levenberg–Marquardt term (keeps ``J^T J + lam I`` invertible).
LM_FLOOR = 1e-300


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
                for i in np.flatnonzero(ok):  # row by row: a row's step never depends on
                    d[i] = _solve_one(a[i], b[i])  # which rows share its batch (shards)
        d[~np.isfinite(d).all(axis=1)] = 0.0
        big = np.abs(d).max(axis=1)
    scale = np.where(big > max_step, max_step / np.where(big > 0, big, 1.0), 1.0)
    return d * scale[:, None]


def _solve_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a^{-1} b`` for one system (k, k), (k, 1); the pseudo-inverse where ``a`` is singular."""
    try:
        return np.linalg.solve(a, b)[:, 0]
    except np.linalg.LinAlgError:
        return (np.linalg.pinv(a) @ b)[:, 0]


def _free_goods(g: int, numeraire: int) -> np.ndarray:
    return np.array([j for j in range(g) if j != numeraire])


def _require_log(rule: PriceRule) -> None:
    if rule.space != "log":
        raise RuleError(f"rule {rule.name!r}: the Newton dynamics work in log-prices")


# ---------------------------------------------------------------------------------------
# Extragradient
# ---------------------------------------------------------------------------------------


class ExtragradientRound(RowRound):
    """The decentralized extragradient round on a set of rows (two exchanges).

    Phase 0 (exchange 1: neighbours' ``coords`` and ``tracker``; ``local``: ``excess``)::

        wu_i = (W u)_i;  uh_i = pin(wu_i + eta s_i);  zh_i = z_i(uh_i)
        yh_i = (W y)_i + zh_i - z_i                    (local: yh_i = zh_i)

    Phase 1 (exchange 2: neighbours' ``look_tracker`` = yh; ``local``: ``look_excess`` = zh)::

        u'_i = pin(wu_i + eta sh_i);  z'_i = z_i(u'_i);  y'_i = (W yh)_i + z'_i - zh_i

    with ``s`` (``sh``) the signal of ``y`` (``yh``), see
    :class:`tatonnet.agents.rules.extragradient.Extragradient` (``Notes``). ``mixed_coords``
    (wu) is kept from phase 0 to phase 1 on the agent itself.
    """

    def __init__(self, rule: PriceRule, signal: str, numeraire: int, n_goods: int):
        super().__init__(rule, signal, numeraire, n_goods)
        if self.tracking:
            self.exchanges = (("coords", "tracker"), ("look_tracker",))
        else:
            self.exchanges = (("coords", "excess"), ("look_excess",))

    def init(self, rows: Rows, prices: np.ndarray) -> dict[str, np.ndarray]:
        return self.initial_state(rows, prices)

    def phase(self, p: int, rows: Rows, f: dict, round_: int) -> dict[str, np.ndarray]:
        eta, W, o = self.rule.round_params(round_)[0], rows.mixing, rows.n_own  # the step
        if p == 0:  # look ahead
            u, y, z = f["coords"], f["tracker"], f["excess"]
            wu = W @ u
            uh = self.pin(wu + eta * self.signal_of(rows, y, z))
            zh = self.excess(rows, uh)
            out = {"mixed_coords": wu, "look_excess": zh}
            if self.tracking:
                out["look_tracker"] = W @ y + zh - z[:o]
            return out
        yh, zh = f.get("look_tracker"), f["look_excess"]  # step from W u with the look-ahead
        u_new = self.pin(f["mixed_coords"] + eta * self.signal_of(rows, yh, zh))
        z_new = self.excess(rows, u_new)
        y_new = W @ yh + z_new - zh[:o] if self.tracking else z_new
        return {"coords": u_new, "tracker": y_new, "excess": z_new}


class NetworkExtragradient(RowRoundDynamics):
    """Decentralized extragradient tâtonnement (two message exchanges per round).

    The update is written out in :class:`tatonnet.agents.rules.extragradient.Extragradient`
    (``Notes``) and run by :class:`ExtragradientRound`. State:
    :class:`~tatonnet.environment.tatonnement.dynamics.MarketState` with ``coords`` (n, g)
    log-prices or prices (the rule's ``space``), ``tracker`` (n, g) (equal to ``excess``
    under ``local``), ``excess`` (n, g).
    """

    def make_round(self) -> ExtragradientRound:
        return ExtragradientRound(self.rule, self.signal, self.economy.numeraire,
                                  self.economy.n_goods)  # fmt: skip


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


def _mix_blocks(blocks: np.ndarray, matrix) -> np.ndarray:
    """``matrix @ blocks`` for (n_src, k, k) blocks: the neighbourhood sums of (o, k, k)."""
    n, k, _ = blocks.shape
    return (matrix @ blocks.reshape(n, k * k)).reshape(-1, k, k)


class NewtonRound(RowRound):
    """The decentralized Newton round on a set of rows (one exchange).

    Exchange: neighbours' ``coords``, ``tracker`` and ``jac_tracker`` (``local``: ``coords``,
    ``excess`` and ``jacobian``); then, with ``c_i`` the signal scale on the non-numeraire
    goods ``f``::

        zeta_i = c_i (W y)_i[f];  J_i = diag(c_i) (W H)_i    (local: sums over N[i] of z, J)
        u'_i = (W u)_i;  u'_i[f] += step_size * d(zeta_i, J_i)
        z'_i = z_i(u'_i);  J'_i = J_i(u'_i)
        y'_i = (W y)_i + z'_i - z_i;  H'_i = (W H)_i + J'_i - J_i      (local: z', J')

    See :class:`tatonnet.agents.rules.newton.Newton` (``Notes``).
    """

    state_fields = (*RowRound.state_fields, "jac_tracker", "jacobian")

    def __init__(self, rule: PriceRule, signal: str, numeraire: int, n_goods: int):
        super().__init__(rule, signal, numeraire, n_goods)
        _require_log(rule)
        self.free = _free_goods(n_goods, numeraire)
        if self.tracking:
            self.exchanges = (("coords", "tracker", "jac_tracker"),)
        else:
            self.exchanges = (("coords", "excess", "jacobian"),)

    def shape(self, name: str) -> tuple[int, ...]:
        k = self.free.size
        return (k, k) if name in ("jac_tracker", "jacobian") else (self.n_goods,)

    def jacobian(self, rows: Rows, coords: np.ndarray, excess: np.ndarray) -> np.ndarray:
        """Each own agent's non-numeraire block of ``d z_i / d log p`` at its prices; (o, k, k)."""
        e, a, family, sigma = rows.arrays
        jac = jacobian.demand_jacobian(np.exp(coords), e, a, family, sigma, log_prices=True,
                                       demand=excess + e)  # fmt: skip
        return np.ascontiguousarray(jac[:, self.free][:, :, self.free])

    def init(self, rows: Rows, prices: np.ndarray) -> dict[str, np.ndarray]:
        f = self.initial_state(rows, prices)
        jac = self.jacobian(rows, f["coords"], f["excess"])
        return {**f, "jac_tracker": jac.copy(), "jacobian": jac}

    def phase(self, p: int, rows: Rows, f: dict, round_: int) -> dict[str, np.ndarray]:
        rule, W, free, o = self.rule, rows.mixing, self.free, rows.n_own
        u, y, z, H, J = (f[name] for name in ("coords", "tracker", "excess", "jac_tracker",
                                              "jacobian"))  # fmt: skip
        scale = rows.inv_scale[:, free]  # c_i on the non-numeraire goods (o, k)
        if self.tracking:
            wy, wh = W @ y, _mix_blocks(H, W)
            zeta, jac_hat = wy[:, free] * scale, wh * scale[:, :, None]
        else:
            zeta = (rows.adjacency @ z)[:, free] * scale
            jac_hat = _mix_blocks(J, rows.adjacency) * scale[:, :, None]
        d = newton_direction(zeta, jac_hat, rule.damping, rule.max_step)
        u_new = W @ u
        u_new[:, free] += rule.step_size * d
        self.pin(u_new)
        z_new = self.excess(rows, u_new)
        J_new = self.jacobian(rows, u_new, z_new)
        if self.tracking:
            y_new, H_new = wy + z_new - z[:o], wh + J_new - J[:o]
        else:
            y_new, H_new = z_new, J_new
        return {"coords": u_new, "tracker": y_new, "excess": z_new, "jac_tracker": H_new,
                "jacobian": J_new}  # fmt: skip


class NetworkNewton(RowRoundDynamics):
    """Decentralized Newton-type tâtonnement (one exchange of ``2g + (g-1)^2`` floats).

    The update is written out in :class:`tatonnet.agents.rules.newton.Newton` (``Notes``)
    and run by :class:`NewtonRound`; the state is a :class:`NewtonState`.
    """

    state_cls = NewtonState

    def make_round(self) -> NewtonRound:
        return NewtonRound(self.rule, self.signal, self.economy.numeraire, self.economy.n_goods)

    @property
    def free(self) -> np.ndarray:
        return self.row_round.free

    def _jacobian(self, coords: np.ndarray, excess: np.ndarray) -> np.ndarray:
        """Each agent's non-numeraire block of ``d z_i / d log p`` at its prices; (n, k, k)."""
        return self.row_round.jacobian(self.rows, coords, excess)


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
