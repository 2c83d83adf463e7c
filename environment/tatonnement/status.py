"""Honest classification of a run: converged, cycling, diverged, stalled or max_rounds
(or numerical_error, when the arithmetic failed rather than the economy).

During the run (:func:`check_stop`, every round):

* ``converged`` — relative excess demand ``max_j |Z_j| / S_j`` **and** price dispersion
  ``max_j (max_i log p_ij - min_i log p_ij)`` are both at most ``tol``.
* ``diverged`` — some agent's price left ``[1/PRICE_BOUND, PRICE_BOUND]`` relative to
  the numeraire (heads to 0 or infinity; an infinite price counts).
* ``numerical_error`` — not an economic verdict: the excess demand is NaN or infinite
  while every price is finite and inside the bound, or a price is NaN. The kernels use
  numba's ``error_model="numpy"`` (no exceptions: an overflow or 0/0 in the demand, e.g.
  CES with a huge sigma raising a share to the power sigma, becomes inf / NaN), so the
  check is made here, on the reduced metrics, every round.

At the end of a run that did neither (:func:`classify`), the last half of the trajectory
(at least ``MIN_WINDOW`` rounds) is split into quarters and read as follows, in order:

1. ``stalled`` — prices stopped moving (every mean log-price and the dispersion moved less
   than ``STILL`` over the last quarter) away from equilibrium: a non-clearing rest point,
   e.g. persistent dispersion between local markets.
2. An oscillation: the autocorrelation of the de-meaned mean log-price path has a peak
   above ``RECURRENCE`` at some lag P after its first dip below zero (P is the period).
   Whole periods are compared — the window's first P rounds against its last P:
   mean excess demand down by more than 2% → ``max_rounds`` (damped, still converging);
   up by more than 2% with a wider orbit → ``diverged`` (a growing oscillation, heading
   to the boundary); otherwise → ``cycling`` (a recurrent orbit).
3. A long orbit (period longer than half the window, which the autocorrelation of the
   window cannot see): :func:`first_return` looks back over the *whole* trajectory for
   the latest round at which the price path came back to within ``RETURN_EPS`` of its
   range of the last point, after an excursion of at least ``RETURN_EXCURSION`` of the
   range in between; the elapsed rounds are the period, and the verdict is read as in 2
   (whole periods compared). Needs at least ~1.2 periods of data: an orbit not yet closed
   once cannot be told from a slow trend.
4. No clear period: ``max_rounds`` if the median excess demand of the last quarter is
   below ``IMPROVING`` times that of the first **and** the last quarter reached a new
   lowest excess demand of the whole run (still improving); ``diverged`` if the price
   amplitude grew over ``GROWTH``-fold with excess demand; else ``max_rounds``
   (irregular motion).

:func:`classify_run` is the full report on a finished trajectory: it finds the stopping
round itself (first converged or diverged row), names the reference equilibrium reached,
and attaches the evidence for cycling / divergence / stalling (see its docstring).
"""

from __future__ import annotations

import dataclasses

import numpy as np

STATUSES = ("converged", "cycling", "diverged", "stalled", "max_rounds", "numerical_error")
PRICE_BOUND = 1e8
MIN_WINDOW = 40
IMPROVING = 1 - 1e-3
GROWTH = 1.5
STILL = 1e-9
RECURRENCE = 0.6
PERIOD_DRIFT = (0.98, 1.02)
RETURN_EPS = 0.05
RETURN_EXCURSION = 0.5
RETURN_MATCH = 0.1
#: smallest price the price-space engines keep (tatonnet.agents.rules.base.PRICE_FLOOR)
PRICE_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A run's status with the evidence for it (``reason`` is one human-readable line)."""

    status: str
    reason: str
    evidence: dict = dataclasses.field(default_factory=dict)


def stop_verdict(metrics, tol: float):
    """:func:`check_stop` of a round's metrics (``excess_demand``, ``price_dispersion``,
    ``log_min``, ``log_max``: a :class:`~tatonnet.environment.tatonnement.dynamics.RoundMetrics`)."""
    m = metrics
    return check_stop(m.excess_demand, m.price_dispersion, m.log_min, m.log_max, tol)


def check_stop(excess_demand: float, dispersion: float, log_min, log_max, tol: float):
    """Verdict if the run must stop now (converged, diverged or numerical_error), else None.

    A price heading to 0 or infinity (outside the bound, infinite included) is
    ``diverged``; a NaN price, or a NaN / infinite excess demand at prices inside the
    bound, is ``numerical_error`` (the demand's arithmetic failed, not the dynamics).
    """
    lo, hi = float(np.min(log_min)), float(np.max(log_max))
    bound = np.log(PRICE_BOUND)
    if np.isnan(lo) or np.isnan(hi):
        return Verdict(
            "numerical_error",
            "numerical error: a price is NaN (not an economic verdict)",
            {"cause": "nan_price"},
        )
    if lo < -bound or hi > bound:
        side = "0" if lo < -bound else "infinity"
        with np.errstate(over="ignore"):  # a price past e^709 is reported as inf
            extremes = {"min_price": float(np.exp(lo)), "max_price": float(np.exp(hi))}
        return Verdict(
            "diverged",
            f"a price left [1e-8, 1e8] (headed to {side}): log-price range [{lo:.3g}, {hi:.3g}]",
            extremes,
        )
    if not np.isfinite(excess_demand):
        return Verdict(
            "numerical_error",
            f"numerical error: the excess demand is {float(excess_demand)} at finite prices "
            f"inside [1e-8, 1e8] (log-price range [{lo:.3g}, {hi:.3g}]): the demand "
            "overflowed or divided 0 by 0; not an economic verdict",
            {"cause": "excess_demand_not_finite", "min_price": float(np.exp(lo)),
             "max_price": float(np.exp(hi))},
        )  # fmt: skip
    if excess_demand <= tol and dispersion <= tol:
        return Verdict(
            "converged",
            f"excess demand {excess_demand:.3g} and dispersion {dispersion:.3g} <= tol {tol:g}",
        )
    return None


def classify(excess_demand, dispersion, log_prices, numeraire: int = 0) -> Verdict:
    """Classify a run that neither converged nor diverged within its rounds.

    Parameters
    ----------
    excess_demand, dispersion : (T,) per-round metrics
    log_prices : (T, g) log of the network-mean price of each good per round
    """
    excess_demand = np.asarray(excess_demand, dtype=float)
    dispersion = np.asarray(dispersion, dtype=float)
    s = np.delete(np.asarray(log_prices, dtype=float), numeraire, axis=1)
    T = excess_demand.size
    if T < MIN_WINDOW:
        return Verdict("max_rounds", f"only {T} rounds: too few to classify")
    W = max(MIN_WINDOW, T // 2)
    e, d, s = excess_demand[-W:], dispersion[-W:], s[-W:]
    q = W // 4
    e_first, e_last = float(np.median(e[:q])), float(np.median(e[-q:]))
    amp_first = float(np.ptp(s[:q], axis=0).max())
    amp_last = float(np.ptp(s[-q:], axis=0).max())
    evidence = {
        "window": W,
        "excess_demand_first_quarter": e_first,
        "excess_demand_last_quarter": e_last,
        "amplitude_first_quarter": amp_first,
        "amplitude_last_quarter": amp_last,
        "min_mean_price": float(np.exp(s.min())) if s.size else 1.0,
    }
    if amp_last < STILL and float(np.ptp(d[-q:])) < STILL:
        return Verdict(
            "stalled",
            f"prices stopped moving with excess demand {e_last:.3g} and dispersion "
            f"{float(d[-1]):.3g} (a non-clearing rest point)",
            evidence,
        )
    period, peak = recurrence(s)
    if period is not None:
        return _periodic(period, peak, e, s, amp_last, evidence, "autocorrelation")
    if period is None:
        full = np.delete(np.asarray(log_prices, dtype=float), numeraire, axis=1)
        period = first_return(full)
        if period is not None:
            return _periodic(period, None, excess_demand, full, amp_last, evidence, "first return")
    record, before = float(np.min(e[-q:])), float(np.min(excess_demand[:-q]))
    evidence["lowest_excess_demand_before_last_quarter"] = before
    if e_last < IMPROVING * e_first and record < IMPROVING * before:
        return Verdict(
            "max_rounds",
            f"still improving: excess demand fell from {e_first:.3g} to {e_last:.3g} "
            f"over the last {W} rounds",
            evidence,
        )
    if amp_last > GROWTH * amp_first and e_last > e_first:
        return Verdict(
            "diverged",
            f"oscillation grows: price amplitude x{amp_last / max(amp_first, 1e-300):.3g} "
            f"and excess demand {e_first:.3g} -> {e_last:.3g} over the last {W} rounds",
            evidence,
        )
    return Verdict(
        "max_rounds",
        f"irregular: neither converging nor a clear cycle (excess demand {e_last:.3g})",
        evidence,
    )


def _periodic(period, peak, e, s, amp_last, evidence, method) -> Verdict:
    """Verdict for an orbit of ``period`` rounds found in the path ``s`` (T, k) with excess
    demand ``e`` (T,): the last whole period against the one before it (or the first)."""
    T = e.size
    first = slice(T - 2 * period, T - period) if T >= 2 * period else slice(0, period)
    e_p0, e_p1 = float(e[first].mean()), float(e[-period:].mean())
    r = np.linalg.norm(s - s[-period:].mean(axis=0), axis=1)
    r_p0, r_p1 = float(r[first].max()), float(r[-period:].max())
    ptp = np.ptp(s[-period:], axis=0)
    evidence.update(
        period=int(period),
        period_method=method,
        autocorrelation=peak,
        amplitude=float(ptp.max()) / 2,
        amplitude_per_good=(ptp / 2).tolist(),
        excess_demand_first_period=e_p0,
        excess_demand_last_period=e_p1,
        radius_first_period=r_p0,
        radius_last_period=r_p1,
        amplitude_trend=(
            "growing" if r_p1 > 1.01 * r_p0 else "shrinking" if r_p1 < 0.99 * r_p0 else "steady"
        ),
    )
    how = f"autocorrelation {peak:.2f}" if peak is not None else "first return of the path"
    if e_p1 < PERIOD_DRIFT[0] * e_p0:
        return Verdict(
            "max_rounds",
            f"damped oscillation (period {period}): excess demand per period fell "
            f"{e_p0:.3g} -> {e_p1:.3g}; still converging",
            evidence,
        )
    if e_p1 > PERIOD_DRIFT[1] * e_p0 and r_p1 > r_p0:
        return Verdict(
            "diverged",
            f"growing oscillation (period {period}): excess demand per period rose "
            f"{e_p0:.3g} -> {e_p1:.3g} and the orbit widened {r_p0:.3g} -> {r_p1:.3g}",
            evidence,
        )
    return Verdict(
        "cycling",
        f"recurrent orbit: period {period} rounds ({how}), "
        f"price amplitude {amp_last:.3g}, excess demand ~{e_p1:.3g}",
        evidence,
    )


def first_return(path: np.ndarray) -> int | None:
    """Period of a (T, k) path by first return, or None.

    The latest round ``t < T - 1`` with ``max_j |x_t - x_{T-1}| <= RETURN_EPS * R`` (``R``
    the path's largest per-coordinate range) such that between ``t`` and ``T - 1`` the
    path went at least ``RETURN_EXCURSION * R`` away from ``x_{T-1}``: the path left and
    came back, so ``T - 1 - t`` rounds is one period of a recurrent orbit. Rounds before
    the first excursion are never candidates, so a path that drifts once and settles
    does not count. With several close rounds around the return, the closest is used.
    Confirmed only if the path repeats with that shift: the median over the last
    ``min(P, T - P)`` rounds of ``max_j |x_t - x_{t-P}| / R`` is at most ``RETURN_MATCH``
    (noise that passes near its end point by chance does not).
    """
    x = np.asarray(path, dtype=float)
    if x.ndim != 2 or x.shape[0] < 8 or not np.isfinite(x).all():
        return None
    R = float(np.ptp(x, axis=0).max())
    if R <= 0:
        return None
    d = np.abs(x - x[-1]).max(axis=1) / R
    far = np.flatnonzero(d >= RETURN_EXCURSION)
    if far.size == 0:
        return None
    last_far = int(far[-1])  # the path was away from the end point here
    close = np.flatnonzero(d[:last_far] <= RETURN_EPS)
    if close.size == 0:
        return None
    # the close stretch just before the excursion: take its closest point
    end = int(close[-1])
    start = end
    while start - 1 >= 0 and d[start - 1] <= RETURN_EPS:
        start -= 1
    t = start + int(np.argmin(d[start : end + 1]))
    P = x.shape[0] - 1 - t
    # confirm: the whole last period (or what the data holds of the one before) repeats
    n = min(P, x.shape[0] - P)
    shift = np.abs(x[-n:] - x[-n - P : x.shape[0] - P]).max(axis=1) / R
    return P if float(np.median(shift)) <= RETURN_MATCH else None


def recurrence(path: np.ndarray) -> tuple[int | None, float]:
    """Period and autocorrelation peak of a (T, k) path, or (None, best) if no clear cycle."""
    x = path - path.mean(axis=0)
    T = x.shape[0]
    denom = float((x * x).sum())
    if denom <= 0 or T < 8:
        return None, 0.0
    lags = np.arange(1, T // 2)
    acf = np.array([(x[:-k] * x[k:]).sum() / denom * T / (T - k) for k in lags])
    below = np.flatnonzero(acf < 0)
    if below.size == 0:
        return None, float(acf.max(initial=0.0))
    tail = acf[below[0] :]
    best = float(tail.max())
    if best < RECURRENCE:
        return None, best
    # the fundamental period: the first local peak nearly as high as the best one
    # (an exact orbit recurs at every multiple of its period too)
    high = np.flatnonzero(tail >= max(RECURRENCE, 0.9 * best))
    k = int(high[0])
    while k + 1 < tail.size and tail[k + 1] > tail[k]:
        k += 1
    return int(lags[below[0] + k]), float(tail[k])


def classify_run(
    excess_demand,
    dispersion,
    log_prices,
    *,
    numeraire: int = 0,
    tol: float = 1e-8,
    references=(),
    log_min=None,
    log_max=None,
    space: str = "log",
    first_round: int = 1,
    match: float = 1e-4,
    stop: Verdict | None = None,
) -> Verdict:
    """The full verdict on a finished trajectory, with its evidence.

    Parameters
    ----------
    excess_demand, dispersion : (T,) per-round relative excess-demand norm and log-price
        dispersion (as :class:`tatonnet.environment.tatonnement.dynamics.RoundMetrics`)
    log_prices : (T, g) log of the network-mean price of each good per round
    numeraire : the good whose price is 1
    tol : convergence tolerance on both excess demand and dispersion
    references : list of (g,) reference equilibria (numeraire = 1), e.g. from
        :func:`tatonnet.environment.equilibrium.find_equilibria`
    log_min, log_max : (T, g) smallest / largest log-price over agents per round
        (default: ``log_prices``, right for a central run)
    space : "price" or "log" — the rule's coordinates (picks the conserved quantity)
    first_round : the round number of row 0 (1 when round 0 is left out)
    match : a converged run "reached" reference k when ``distance <= match``
    stop : the verdict the run already stopped with at its last row (e.g.
        ``MarketModel.verdict``, which sees every agent's prices); None: found here

    Returns
    -------
    Verdict
        ``status`` in :data:`STATUSES`; ``evidence`` always holds ``rounds`` (rows read),
        ``rounds_to_tol`` (first round with both metrics <= tol, else None) and, with
        references, ``distances`` (to each reference, at the last row read) and
        ``equilibrium`` (index of the one reached, converged runs only; None when the
        limit is none of them). Then, by status:

        * converged — ``equilibrium``, ``distances``.
        * cycling — ``period``, ``period_method`` (autocorrelation of the de-meaned
          mean log-price path in the last half, or first return over the whole path; see
          the module docstring), ``amplitude`` (half the largest peak-to-peak log-price
          range over the last period), ``amplitude_trend`` (growing / shrinking /
          steady: the orbit's radius over the last period against the one before).
        * diverged — ``heads_to`` ({good: "0" | "infinity"} for the goods whose price
          left [1e-2, 1e2] or moved furthest), ``min_price`` and ``min_price_trend``
          (slope of the smallest log-price per round over the last quarter),
          ``first_floor_round`` (first round a price hit the price floor / bound, or None),
          and ``conserved`` (below).
        * stalled — ``dispersion_last``, ``excess_demand_trend`` (relative change of the
          excess demand over the last quarter).

        ``conserved`` (every non-converged verdict): Scarf (1960) showed that his
        economy's continuous tâtonnement ``dp/dt = Z(p)`` with every price free keeps both
        ``sum_j p_j^2`` (Walras' law; the invariant of price-space rules) and ``prod_j p_j``
        (the one of log-space rules) constant. Both are captured by the scale-free
        ``h = sum_j p_j^2 / (prod_j p_j)^(2/g)`` (``sum p^2`` on the normalization
        ``prod p = 1``; a decreasing function of ``prod p`` on ``sum p^2 = g``), which does
        not depend on which price is pinned; ``h >= g`` with equality only at equal
        prices. Reported: ``h`` at the first and last row, its least-squares trend over
        the last half, and with a period its mean over the last whole period and the one
        before. Measured caveat: with the numeraire pinned (as here) and discrete steps,
        ``h`` is **not** constant: it swings within each lap (Scarf, additive, step 0.01:
        between ~4 and ~38), so read its per-period means, whose growth is an outward
        spiral.
    """
    e = np.asarray(excess_demand, dtype=float)
    d = np.asarray(dispersion, dtype=float)
    lp = np.asarray(log_prices, dtype=float)
    if lp.ndim != 2 or lp.shape[0] != e.size or d.size != e.size:
        raise ValueError(
            f"expected (T,) metrics and (T, g) log-prices, got {e.shape}, {d.shape}, {lp.shape}"
        )
    lo = lp if log_min is None else np.asarray(log_min, dtype=float)
    hi = lp if log_max is None else np.asarray(log_max, dtype=float)
    T = e.size
    if T == 0:
        return stop or Verdict("max_rounds", "no rounds run: nothing to classify", {"rounds": 0})
    # the stopping row: the first one check_stop would have stopped at
    t = T - 1
    if stop is None:
        for t in range(T):
            stop = check_stop(e[t], d[t], lo[t], hi[t], tol)
            if stop is not None:
                break
    if stop is not None:
        e, d, lp, lo, hi = e[: t + 1], d[: t + 1], lp[: t + 1], lo[: t + 1], hi[: t + 1]
        T = t + 1
    ok = (e <= tol) & (d <= tol)
    evidence: dict = {
        "rounds": T,
        "rounds_to_tol": int(np.argmax(ok)) + first_round if ok.any() else None,
    }
    last = lp[-1] - lp[-1][numeraire]
    if len(references) and np.isfinite(last).all():
        dist = [float(np.max(np.abs(np.exp(last) / np.asarray(r) - 1))) for r in references]
        evidence["distances"] = dist
        evidence["equilibrium"] = None
    if stop is not None and stop.status == "converged":
        evidence.update(stop.evidence)
        reason = stop.reason
        if "distances" in evidence:
            k = int(np.argmin(evidence["distances"]))
            if evidence["distances"][k] <= match:
                evidence["equilibrium"] = k
                reason += (
                    f"; reached reference equilibrium {k} (distance {evidence['distances'][k]:.2g})"
                )
            else:
                reason += "; the limit is none of the reference equilibria"
        return Verdict("converged", reason, evidence)
    if stop is not None:
        verdict = Verdict(stop.status, stop.reason, {**stop.evidence, **evidence})
    else:
        verdict = classify(e, d, lp, numeraire)
        verdict = Verdict(verdict.status, verdict.reason, {**verdict.evidence, **evidence})
    ev = verdict.evidence
    ev["conserved"] = _conserved(lp, numeraire, space, ev.get("period"))
    if verdict.status == "diverged":
        found = _divergence(lp, lo, hi, numeraire, first_round)
        if stop is not None:
            # the stopping verdict saw every agent's prices; the rows may hold only means
            found["min_price"] = stop.evidence.get("min_price", found.get("min_price"))
            if found.get("first_floor_round") is None and "min_price" in stop.evidence:
                found["first_floor_round"] = T - 1 + first_round
        ev.update(found)
    elif verdict.status == "stalled":
        q = max(T // 8, 1)
        ev["dispersion_last"] = float(d[-1])
        ev["excess_demand_trend"] = float(e[-1] / e[-q] - 1) if e[-q] > 0 else 0.0
    return verdict


def _conserved(lp: np.ndarray, numeraire: int, space: str, period=None) -> dict:
    """Trend of ``h = sum_j p_j^2 / (prod_j p_j)^(2/g)`` along the path (see classify_run)."""
    x = lp - lp[:, numeraire : numeraire + 1]
    good = np.isfinite(x).all(axis=1)
    if good.sum() < 2:
        return {}
    x = x[good]
    g = x.shape[1]
    # log h, computed stably: log sum exp(2x) - (2/g) sum x
    m = x.max(axis=1, keepdims=True)
    log_h = (2 * m[:, 0] + np.log(np.exp(2 * (x - m)).sum(axis=1))) - 2 * x.mean(axis=1)
    with np.errstate(over="ignore"):
        h = np.exp(log_h)  # inf for a run that left every bound: still a trend
    half = h[h.size // 2 :]
    out = {
        "quantity": "sum_j p_j^2 / (prod_j p_j)^(2/g)",
        "equivalent": "sum_j p_j^2 at prod_j p_j = 1"
        if space == "price"
        else "-(g/2) log prod_j p_j at sum_j p_j^2 = g (up to a constant)",
        "minimum_possible": float(g),
        "first": float(h[0]),
        "last": float(h[-1]),
        "trend_per_round_last_half": float(np.polyfit(np.arange(half.size), half, 1)[0])
        if half.size >= 2
        else 0.0,
    }
    if period and h.size >= period:
        start = max(h.size - 2 * period, 0)
        out["mean_last_period"] = float(h[-period:].mean())
        out["mean_period_before"] = float(h[start : start + period].mean())
    return out


def _divergence(lp, lo, hi, numeraire: int, first_round: int) -> dict:
    finite = np.isfinite(lo).all(axis=1) & np.isfinite(hi).all(axis=1)
    rows = np.flatnonzero(finite)
    if rows.size == 0:
        return {"first_floor_round": None}
    lo_f, hi_f, lp_f = lo[rows], hi[rows], lp[rows]
    last = lp_f[-1] - lp_f[-1][numeraire]
    move = np.abs(last - (lp_f[0] - lp_f[0][numeraire]))
    move[numeraire] = -1
    heads = {}
    for j in np.flatnonzero((np.abs(last) > np.log(100)) | (move == move.max())):
        if j != numeraire:
            heads[str(int(j))] = "0" if last[j] < 0 else "infinity"
    smallest = lo_f.min(axis=1)
    q = max(rows.size // 4, 2)
    slope = float(np.polyfit(np.arange(q), smallest[-q:], 1)[0]) if rows.size >= 2 else 0.0
    floor = np.log(PRICE_FLOOR) + 1e-9
    hit = np.flatnonzero((smallest <= floor) | (smallest < -np.log(PRICE_BOUND)))
    hit_hi = np.flatnonzero(hi_f.max(axis=1) > np.log(PRICE_BOUND))
    firsts = [int(rows[h[0]]) for h in (hit, hit_hi) if h.size]
    return {
        "heads_to": heads,
        "min_price": float(np.exp(smallest[-1])),
        "min_price_trend": slope,
        "first_floor_round": (min(firsts) + first_round) if firsts else None,
    }
