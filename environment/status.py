"""Honest classification of a run: converged, cycling, diverged, stalled or max_rounds.

During the run (:func:`check_stop`, every round):

* ``converged`` — relative excess demand ``max_j |Z_j| / S_j`` **and** price dispersion
  ``max_j (max_i log p_ij - min_i log p_ij)`` are both at most ``tol``.
* ``diverged`` — a price is not finite, or some agent's price left
  ``[1/PRICE_BOUND, PRICE_BOUND]`` relative to the numeraire (heads to 0 or infinity).

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
3. No clear period: ``max_rounds`` if the median excess demand of the last quarter is
   below ``IMPROVING`` times that of the first (still improving); ``diverged`` if the
   price amplitude grew over ``GROWTH``-fold with excess demand; else ``max_rounds``
   (irregular motion).
"""

from __future__ import annotations

import dataclasses

import numpy as np

STATUSES = ("converged", "cycling", "diverged", "stalled", "max_rounds")
PRICE_BOUND = 1e8
MIN_WINDOW = 40
IMPROVING = 1 - 1e-3
GROWTH = 1.5
STILL = 1e-9
RECURRENCE = 0.6
PERIOD_DRIFT = (0.98, 1.02)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A run's status with the evidence for it (``reason`` is one human-readable line)."""

    status: str
    reason: str
    evidence: dict = dataclasses.field(default_factory=dict)


def check_stop(excess_demand: float, dispersion: float, log_min, log_max, tol: float):
    """Verdict if the run must stop now (converged or diverged), else None."""
    lo, hi = float(np.min(log_min)), float(np.max(log_max))
    bound = np.log(PRICE_BOUND)
    if not (np.isfinite(excess_demand) and np.isfinite(lo) and np.isfinite(hi)):
        return Verdict("diverged", "a price or the excess demand is not finite")
    if lo < -bound or hi > bound:
        side = "0" if lo < -bound else "infinity"
        return Verdict(
            "diverged",
            f"a price left [1e-8, 1e8] (headed to {side}): log-price range [{lo:.3g}, {hi:.3g}]",
            {"min_price": float(np.exp(lo)), "max_price": float(np.exp(hi))},
        )
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
        # compare whole periods, so that the phase of the orbit does not matter
        e_p0, e_p1 = float(e[:period].mean()), float(e[-period:].mean())
        r = np.linalg.norm(s - s.mean(axis=0), axis=1)
        r_p0, r_p1 = float(r[:period].max()), float(r[-period:].max())
        evidence.update(
            period=period,
            autocorrelation=peak,
            excess_demand_first_period=e_p0,
            excess_demand_last_period=e_p1,
            radius_first_period=r_p0,
            radius_last_period=r_p1,
        )
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
            f"recurrent orbit: period {period} rounds (autocorrelation {peak:.2f}), "
            f"price amplitude {amp_last:.3g}, excess demand ~{e_p1:.3g}",
            evidence,
        )
    if e_last < IMPROVING * e_first:
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
