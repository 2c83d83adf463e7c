"""Merchant price rules of the ``books`` design: optimistic, extragradient, Broyden.

The rules that converge in a central market — optimistic gradient, extragradient and
Newton — need either the last two signals or trial evaluations of excess demand (and its
Jacobian) at prices nobody trades at. A merchant of the layered market
(:mod:`tatonnet.environment.trade.layered`) has neither oracle: all it knows is its own
books, one line a market day (the prices it posted, its clients' net order ``Z_m``, its
stock ``I_m``). These are those three rules rewritten to run *from the books only*: every
evaluation is a real market day at the posted prices, with real trades, consumption and
stock movements.

Notation (per merchant ``m``, rows of (M, g) arrays): ``u`` its coordinates (log-prices,
or prices in price space), ``W`` the merchant mixing weights (identity for one merchant or
``mix_prices=False``), ``d_m`` its signal (module docstring of ``layered``), ``y_m`` what its
rule steps on (the gradient-tracked average signal under ``signal="tracking"``, ``d_m``
under ``"local"``; clipped / normalized per merchant as the cell's rule asks), ``eta`` the
step size (the cell's rule's ``step_size``, scaled by its schedule), ``f`` the
non-numeraire goods. The numeraire coordinate is pinned after every update, price space is
floored at ``PRICE_FLOOR``.

``optimistic`` (1 market day per round)::

    u_m <- (W u)_m + eta (2 y_m(t) - y_m(t-1))          y(-1) = 0

  The last two signals, both read off the books: no extra day. Identical, bit for bit, to
  the ``kernel`` design with the ``optimistic`` rule (tested).

``extragradient`` (2 market days per round: one per half step)::

    day A (look ahead):  uh_m = (W u)_m + eta y_m      trade at uh, read dh_m
                         yh_m = (W y)_m + dh_m - d_m   (tracking; "local": yh = dh)
    day B (step):        u'_m = (W u)_m + eta yh_m     trade at u', read d'_m
                         y'_m = (W yh)_m + d'_m - dh_m

  The look-ahead is a real market day at the extrapolated prices (its orders are filled,
  its goods consumed, its stock moves), not a trial evaluation; day B's orders are the
  signal at the base price that the next round's look-ahead needs, so no day is wasted.
  Cost: two market days and two merchant message exchanges per round; a study's ``rounds``
  are rounds, so ``days = 2 x rounds`` (``days_per_round``).

``broyden`` (1 market day per round; log-prices only): a damped quasi-Newton step from a
Jacobian each merchant *learns* from its books. What it learns is its clients' order flow
``zeta_m = Z_m / u`` (g,) as a function of its posted log-prices: ``zeta`` depends on the
day's prices only (clients bring the same endowment every day), so successive days
``(u(t-1), zeta(t-1)), (u(t), zeta(t))`` give exact secant pairs. ``B_m`` (g x k, every
good's flow against the ``k = g - 1`` free log-prices) starts at ``-I`` (each good's own
demand falls as its price rises) and the first ``k`` rounds are *probe days*: day ``j``
moves good ``f_j``'s log-price by :data:`PROBE` and nothing else, so the secant update
fills in column ``j`` (a one-sided finite difference from the books). Beside ``y`` it
tracks the merchants' order flow ``w`` (``w <- W w + zeta(t+1) - zeta(t)``; ``"local"``:
``w = zeta``). Each round::

    s = u_f(t) - u_f(t-1),  q = zeta(t) - zeta(t-1)
    B <- (W B)_m                                      # merchants' estimates mixed
    B <- B + (q - B s) s^T / (s^T s)                  # Broyden's ("good") secant update,
                                                      # skipped when max|s| <= SECANT_MIN
    r_f   = y_f + (inventory_gain / target) w_f       # tomorrow's signal at today's
    r_num = NUMERAIRE_WEIGHT c w_num                  # prices, and the numeraire's flow
    A     = c B  (numeraire row times NUMERAIRE_WEIGHT),  c = flow_gain + inventory_gain / target
    delta = -(A^T A + lam I)^{-1} A^T r               # Levenberg–Marquardt,
                                                      # lam = lam_m trace(A^T A) / k
    delta <- delta min(1, max_step / max|delta|)      # step cap (log-price)
    u_m <- (W u)_m;  u_mf += eta delta                # eta <= 1: a damped Newton step

Why ``r``: tomorrow ``d = flow_gain zeta + inventory_gain (T - I) / (target u)`` with
the stock lowered by tomorrow's order too, so at prices ``u + delta`` it is ``r + A delta``
to first order: the step cancels tomorrow's signal. With an exact ``B``, ``eta = 1`` and
no damping the stock then returns to target geometrically, by the factor ``flow_gain /
c`` a day. The numeraire's row (its flow only: its stock holds the merchant's trading
result, module docstring of ``layered``) keeps the step from clearing the priced goods at
a root at infinity, where everybody wants the numeraire (measured on scarf-variant).

Safeguards: ``lam_m`` is a trust region, per merchant: each day compares the tracked
signal's actual norm with the norm the model predicted, and a step that achieved less
than ``RATIO_LOW`` of its predicted reduction multiplies ``lam_m`` by ``LM_GROW`` (at
least ``LM_START``), one above ``RATIO_HIGH`` divides it (down to ``damping``); a
non-finite ``B`` restarts at ``-I`` (and ``lam_m`` at ``damping``). ``damping`` (the floor
of the relative LM term) and ``max_step`` come from the cell's rule when it has them
(``newton``), else :data:`BROYDEN_DEFAULTS`. A Newton step is not a step on the signal:
broyden takes no ``clip`` / ``normalize``.

Buffers (per merchant, rows of ``state.buffers`` (M, n_buffers, g)): optimistic 1 (the
previous signal), extragradient 0, broyden ``5 + g``: the previous coordinates, the
previous ``zeta``, the flow tracker ``w``, (residual norm, predicted norm), ``lam_m``, then
``B`` as g rows (columns of the free goods used).

Messages (beyond the ``kernel`` design's per market day): extragradient doubles everything
(two days); broyden with merchant mixing sends each merchant neighbour its flow tracker
and Jacobian estimate too (``g + g (g-1)`` floats).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from tatonnet.agents.rules import RULES, PriceRule

#: Broyden's own hyperparameters when the cell's rule does not carry them.
BROYDEN_DEFAULTS = {"damping": 1e-6, "max_step": 0.5}

#: Smallest coordinate change (max over goods) a secant update is made from.
SECANT_MIN = 1e-10

#: Log-price change of a probe day (the first g - 1 rounds, one good each).
PROBE = 1e-3

#: Weight of the numeraire's row (its order flow) in a Broyden merchant's least squares:
#: without it, a step that clears the other goods may walk off to a root at infinity
#: (measured on scarf-variant: goods 2 and 3 priced up without bound while everybody
#: wants the numeraire); small, so that it barely slows the stock's return to target.
NUMERAIRE_WEIGHT = 0.1

#: Trust region (Levenberg–Marquardt): a step whose actual reduction of the residual norm
#: is below ``RATIO_LOW`` of the predicted one multiplies the damping by ``LM_GROW`` (at
#: least ``LM_START``); above ``RATIO_HIGH`` divides it (down to the rule's ``damping``).
RATIO_LOW, RATIO_HIGH = 0.25, 0.75
LM_GROW = 4.0
LM_START = 1e-2
LM_MAX = 1e8


@dataclasses.dataclass(frozen=True)
class MerchantRule:
    """A merchant's price rule of the ``books`` design (see the module docstring).

    ``round(market, state, step) -> tuple of states``: the market days of one round after
    ``state`` (the last is the new state), each through ``market.trade_day``.
    """

    name: ClassVar[str]
    days_per_round: ClassVar[int] = 1
    #: log-prices only
    log_only: ClassVar[bool] = False

    def n_buffers(self, g: int) -> int:
        return 0

    def init_buffers(self, market, coords: np.ndarray, orders: np.ndarray) -> np.ndarray:
        """Buffers after market day 0 at ``coords`` with ``orders`` (both (M, g))."""
        return np.zeros((coords.shape[0], self.n_buffers(coords.shape[1]), coords.shape[1]))

    def extra_floats(self, g: int, tracking: bool) -> int:
        """float64 a merchant sends each merchant neighbour per round beyond the kernel
        design's (times ``days_per_round``), when merchants mix."""
        return 0

    def round(self, market, state, step: float) -> tuple:
        raise NotImplementedError


MERCHANT_RULES: dict[str, type[MerchantRule]] = {}


def register(cls):
    MERCHANT_RULES[cls.name] = cls
    return cls


@register
@dataclasses.dataclass(frozen=True)
class OptimisticMerchant(MerchantRule):
    """``u <- W u + eta (2 y(t) - y(t-1))``: the registered optimistic kernel, per merchant."""

    name = "optimistic"

    def n_buffers(self, g: int) -> int:
        return 1

    def round(self, market, state, step):
        signal = market.rule_signal(state)
        u = np.ascontiguousarray(market.mixing @ state.coords)
        buffers = state.buffers.copy()
        params = np.array([step])
        kernel = RULES["optimistic"].kernel
        for m in range(u.shape[0]):  # merchants are few
            kernel(u[m], signal[m], buffers[m], params)
        return (market.trade_day(state, u, buffers, state.round + 1),)


@register
@dataclasses.dataclass(frozen=True)
class ExtragradientMerchant(MerchantRule):
    """Look ahead for one market day, then step from the base price with its signal."""

    name = "extragradient"
    days_per_round = 2

    def round(self, market, state, step):
        base = market.mixing @ state.coords
        ahead = market.trade_day(state, base + step * market.rule_signal(state),
                                 state.buffers, state.round + 1)  # fmt: skip
        new = market.trade_day(ahead, base + step * market.rule_signal(ahead),
                               state.buffers, state.round + 1)  # fmt: skip
        return ahead, new


@register
@dataclasses.dataclass(frozen=True)
class BroydenMerchant(MerchantRule):
    """Damped quasi-Newton steps from a secant (Broyden) estimate of the order Jacobian,
    safeguarded by a Levenberg–Marquardt trust region (see the module docstring)."""

    name = "broyden"
    log_only = True
    damping: float = BROYDEN_DEFAULTS["damping"]
    max_step: float = BROYDEN_DEFAULTS["max_step"]

    def n_buffers(self, g: int) -> int:
        return 5 + g

    def init_buffers(self, market, coords, orders):
        M, g = coords.shape
        buffers = np.zeros((M, 5 + g, g))
        buffers[:, 0] = coords
        buffers[:, 1] = orders / market.unit
        buffers[:, 2] = orders / market.unit
        buffers[:, 3] = np.nan  # no step taken yet: nothing to judge on day 1
        buffers[:, 4] = self.damping
        buffers[:, 5:] = -np.eye(g)
        return buffers

    def extra_floats(self, g: int, tracking: bool) -> int:
        return g * (g - 1) + (g if tracking else 0)  # B, and the flow tracker

    def round(self, market, state, step):
        num = market.economy.numeraire
        g = state.coords.shape[1]
        f = np.flatnonzero(np.arange(g) != num)
        k = f.size
        M = state.coords.shape[0]
        p = market.params
        c = p["flow_gain"] + p["inventory_gain"] / p["target"]
        zeta = state.orders / market.unit
        buffers = state.buffers.copy()
        jac = buffers[:, 5:][:, :, f]  # (M, g, k): every good's order flow, free log-prices
        if market.mixing_merchants:
            jac = (market.mixing @ jac.reshape(M, g * k)).reshape(M, g, k)
        s = (state.coords - buffers[:, 0])[:, f]
        q = zeta - buffers[:, 1]
        flow = buffers[:, 2]  # the merchants' (tracked) order flow, (M, g)
        signal = state.tracker if market.signal == "tracking" else state.own_signal
        lam = buffers[:, 4, 0]
        with np.errstate(all="ignore"):
            moved = np.abs(s).max(axis=1) > SECANT_MIN
            miss = q - np.einsum("mij,mj->mi", jac, s)
            ss = np.where(moved, np.einsum("mj,mj->m", s, s), 1.0)
            update = miss[:, :, None] * s[:, None, :] / ss[:, None, None]
            jac = np.where(moved[:, None, None], jac + update, jac)
            # what the step must cancel: tomorrow's signal at today's prices (today's
            # order lowers the stock once more) and, for the numeraire, its flow
            residual = signal + (p["inventory_gain"] / p["target"]) * flow
            residual[:, num] = NUMERAIRE_WEIGHT * c * flow[:, num]
            # trust region: the last step's actual against its predicted reduction
            actual = signal.copy()
            actual[:, num] = NUMERAIRE_WEIGHT * c * flow[:, num]
            before, predicted = buffers[:, 3, 0], buffers[:, 3, 1]
            ratio = (before - np.linalg.norm(actual, axis=1)) / (before - predicted)
            judged = np.isfinite(ratio)
            bad, good = judged & (ratio < RATIO_LOW), judged & (ratio > RATIO_HIGH)
            lam = np.where(bad, np.maximum(LM_GROW * lam, LM_START), lam)
            lam = np.where(good, np.maximum(lam / LM_GROW, self.damping), lam)
            lam = np.minimum(lam, LM_MAX)
        broken = ~np.isfinite(jac).all(axis=(1, 2))
        jac[broken] = -np.eye(g)[:, f]
        lam[broken] = self.damping
        a = c * jac
        a[:, num] *= NUMERAIRE_WEIGHT
        delta = step * lm_direction(residual, a, lam, self.max_step)
        if state.round < k:  # probe days: learn column state.round of B first
            delta[:] = 0.0
            delta[:, state.round] = PROBE
            buffers[:, 3] = np.nan
        else:
            with np.errstate(all="ignore"):
                buffers[:, 3, 0] = np.linalg.norm(residual, axis=1)
                model = residual + np.einsum("mij,mj->mi", a, delta)
                buffers[:, 3, 1] = np.linalg.norm(model, axis=1)
        buffers[:, 0] = state.coords
        buffers[:, 1] = zeta
        buffers[:, 4] = lam[:, None]
        rows = buffers[:, 5:]
        rows[:, :, f] = jac
        u = np.ascontiguousarray(market.mixing @ state.coords)
        u[:, f] += delta
        new = market.trade_day(state, u, buffers, state.round + 1)
        flow_new = new.orders / market.unit
        if market.signal == "tracking":
            new.buffers[:, 2] = market.mixing @ flow + flow_new - zeta
        else:
            new.buffers[:, 2] = flow_new
        return (new,)


def lm_direction(residual, jac, damping, max_step: float) -> np.ndarray:
    """Levenberg–Marquardt steps of a batch of least-squares systems ``residual + jac d ~ 0``.

    Parameters
    ----------
    residual : (M, g); jac : (M, g, k); damping : (M,) relative LM terms
    max_step : cap on ``max_j |d_j|`` (the step is scaled down, not clipped)

    Returns
    -------
    (M, k): ``d = -(J^T J + lam I)^{-1} J^T r``, ``lam = damping trace(J^T J) / k + 1e-300``;
    a row with a non-finite input or result is 0.
    """
    M, _, k = jac.shape
    jt = np.swapaxes(jac, 1, 2)
    a = jt @ jac
    lam = damping * np.einsum("mkk->m", a) / k + 1e-300
    a = a + lam[:, None, None] * np.eye(k)
    b = -(jt @ residual[:, :, None])
    d = np.zeros((M, k))
    with np.errstate(all="ignore"):
        ok = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
        if ok.any():
            d[ok] = (np.linalg.pinv(a[ok]) @ b[ok])[:, :, 0]
        d[~np.isfinite(d).all(axis=1)] = 0.0
        big = np.abs(d).max(axis=1)
    return d * np.where(big > max_step, max_step / np.where(big > 0, big, 1.0), 1.0)[:, None]


def make_merchant_rule(name: str, rule: PriceRule) -> MerchantRule:
    """The merchant rule ``name`` with the hyperparameters it takes from ``rule``
    (broyden: ``damping`` and ``max_step`` where ``rule`` has them)."""
    cls = MERCHANT_RULES[name]
    own = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: getattr(rule, k) for k in own if hasattr(rule, k)})
