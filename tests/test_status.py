"""tatonnet.environment.tatonnement.status: the run's verdict on constructed trajectories with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tatonnet.environment.tatonnement import status
from tatonnet.environment.tatonnement.status import check_stop, classify, recurrence

T = 400


def _series(log_price_path: np.ndarray, excess: np.ndarray, dispersion=None):
    """(excess, dispersion, log_prices) with good 0 the numeraire (log-price 0)."""
    log_prices = np.column_stack([np.zeros(len(excess)), log_price_path])
    if dispersion is None:
        dispersion = np.full(len(excess), 1e-3)
    return np.asarray(excess, dtype=float), np.asarray(dispersion, dtype=float), log_prices


def _orbit(period: float, n: int = T):
    """A constant-amplitude orbit of two non-numeraire log-prices and its excess demand."""
    phase = 2 * np.pi * np.arange(n) / period
    paths = np.column_stack([0.3 * np.sin(phase), 0.2 * np.cos(phase)])
    excess = 0.05 + 0.01 * np.sin(phase) ** 2  # periodic: neither rising nor falling
    return _series(paths, excess)


@pytest.mark.parametrize("period", [10, 12, 16, 20, 25, 30])
def test_constant_amplitude_orbit_is_cycling_with_its_period(period):
    """An exact orbit recurs at every multiple of its period: the period itself is reported."""
    verdict = classify(*_orbit(period))
    assert verdict.status == "cycling", verdict.reason
    assert verdict.evidence["autocorrelation"] > status.RECURRENCE
    assert abs(verdict.evidence["period"] - period) <= 1, verdict.evidence["period"]
    assert f"period {verdict.evidence['period']}" in verdict.reason


@pytest.mark.parametrize("period", [10, 12, 20, 25, 30])
def test_recurrence_of_a_sine_is_its_fundamental_period(period):
    t = np.arange(200)
    wave = np.sin(2 * np.pi * t / period)
    for path in (wave[:, None], np.column_stack([wave, -wave])):
        found, peak = recurrence(path)
        assert found == period
        assert peak > 0.99


def test_recurrence_finds_no_period_without_a_cycle():
    assert recurrence(np.ones((200, 1))) == (None, 0.0)
    assert recurrence(np.linspace(0, 1, 200)[:, None])[0] is None  # a trend is no cycle
    noise = np.random.default_rng(1).normal(size=(200, 2))
    assert recurrence(noise)[0] is None


def test_cycling_is_found_around_a_non_numeraire_good_only():
    """The numeraire column is dropped before looking for an orbit."""
    t = np.arange(T)
    wave = 0.3 * np.sin(2 * np.pi * t / 25)
    excess = np.full(T, 0.05)
    still = np.column_stack([np.zeros(T), np.zeros(T), np.full(T, 0.7)])
    moving = still.copy()
    moving[:, 1] = wave
    assert classify(excess, np.full(T, 1e-3), moving, numeraire=0).status == "cycling"
    # the only moving good is the numeraire: nothing else moves, so the run is stalled
    assert classify(excess, np.full(T, 1e-3), moving, numeraire=1).status == "stalled"


def test_geometric_decay_is_still_improving():
    t = np.arange(T)
    excess = 0.5 * 0.99**t
    paths = (0.2 * 0.99**t)[:, None]
    verdict = classify(*_series(paths, excess, dispersion=0.1 * 0.99**t))
    assert verdict.status == "max_rounds", verdict.reason
    assert "improving" in verdict.reason or "converging" in verdict.reason


def test_damped_oscillation_is_still_improving_not_cycling():
    t = np.arange(T)
    envelope = 0.99**t
    paths = (0.3 * envelope * np.sin(2 * np.pi * t / 25))[:, None]
    verdict = classify(*_series(paths, 0.1 * envelope * (1.1 + np.sin(2 * np.pi * t / 25))))
    assert verdict.status == "max_rounds", verdict.reason


def test_growing_oscillation_of_two_goods_is_diverged():
    t = np.arange(T)
    envelope = 1.005**t
    phase = 2 * np.pi * t / 30
    paths = 0.02 * envelope[:, None] * np.column_stack([np.sin(phase), np.cos(phase)])
    verdict = classify(*_series(paths, 0.01 * envelope * (1.1 + np.sin(phase))))
    assert verdict.status == "diverged", verdict.reason


def test_growing_oscillation_is_diverged():
    t = np.arange(T)
    envelope = 1.01**t
    paths = (0.01 * envelope * np.sin(2 * np.pi * t / 20))[:, None]
    excess = 1e-3 * envelope
    verdict = classify(*_series(paths, excess))
    assert verdict.status == "diverged", verdict.reason


def test_constant_excess_with_constant_prices_is_stalled():
    paths = np.full((T, 2), [0.4, -0.1])
    excess = np.full(T, 0.2)
    verdict = classify(*_series(paths, excess, dispersion=np.full(T, 0.3)))
    assert verdict.status == "stalled", verdict.reason
    assert "0.2" in verdict.reason  # the excess demand it stalled at


def test_constant_prices_with_moving_dispersion_is_not_stalled():
    t = np.arange(T)
    paths = np.full((T, 1), 0.4)
    dispersion = 0.3 + 0.1 * np.sin(2 * np.pi * t / 20)
    verdict = classify(*_series(paths, np.full(T, 0.2), dispersion=dispersion))
    assert verdict.status != "stalled"


def test_irregular_motion_is_max_rounds():
    rng = np.random.default_rng(0)
    paths = rng.normal(0.0, 0.1, (T, 2))
    excess = np.full(T, 0.05)
    verdict = classify(*_series(paths, excess))
    assert verdict.status == "max_rounds", verdict.reason


def test_too_short_a_run_is_max_rounds():
    n = status.MIN_WINDOW - 1
    t = np.arange(n)
    paths = (0.3 * np.sin(2 * np.pi * t / 10))[:, None]
    verdict = classify(*_series(paths, np.full(n, 0.05)))
    assert verdict.status == "max_rounds"
    assert "too few" in verdict.reason


def test_every_verdict_status_is_a_known_status():
    t = np.arange(T)
    cases = [
        _series(np.sin(t / 4)[:, None], np.full(T, 0.1)),
        _series(np.zeros((T, 1)), np.full(T, 0.1)),
        _series((0.01 * 1.01**t * np.sin(t))[:, None], 1.01**t),
    ]
    for case in cases:
        assert classify(*case).status in status.STATUSES


# ---- check_stop ------------------------------------------------------------------------------

G = 3
ZERO = np.zeros(G)


@pytest.mark.parametrize("excess", [math.nan, math.inf])
def test_check_stop_non_finite_excess_at_sane_prices_is_a_numerical_error(excess):
    """Issue 11: an overflow of the demand at in-range prices is not 'diverged'."""
    verdict = check_stop(excess, 0.0, ZERO, ZERO, 1e-8)
    assert verdict is not None and verdict.status == "numerical_error"
    assert "numerical error" in verdict.reason and "not an economic verdict" in verdict.reason


def test_check_stop_nan_price_is_a_numerical_error():
    log_max = np.array([0.0, np.nan, 0.0])
    verdict = check_stop(1e-12, 1e-12, ZERO, log_max, 1e-8)
    assert verdict is not None and verdict.status == "numerical_error"


def test_check_stop_infinite_price_is_diverged_even_with_a_nan_excess():
    """A price that reached infinity headed there along the dynamics: diverged."""
    log_max = np.array([0.0, np.inf, 0.0])
    verdict = check_stop(math.nan, 1.0, ZERO, log_max, 1e-8)
    assert verdict is not None and verdict.status == "diverged"
    assert "infinity" in verdict.reason


@pytest.mark.parametrize(
    ("log_min", "log_max", "side"),
    [
        (ZERO, np.array([0.0, math.log(status.PRICE_BOUND) + 0.1, 0.0]), "infinity"),
        (np.array([0.0, -math.log(status.PRICE_BOUND) - 0.1, 0.0]), ZERO, "0"),
    ],
)
def test_check_stop_price_out_of_bounds_is_diverged(log_min, log_max, side):
    # even with tiny metrics: leaving the bounds wins over convergence
    verdict = check_stop(1e-12, 1e-12, log_min, log_max, 1e-8)
    assert verdict is not None and verdict.status == "diverged"
    assert f"headed to {side}" in verdict.reason


def test_check_stop_price_just_inside_bounds_is_not_diverged():
    bound = math.log(status.PRICE_BOUND) - 1e-6
    assert check_stop(0.5, 0.5, np.full(G, -bound), np.full(G, bound), 1e-8) is None


def test_check_stop_both_below_tol_is_converged():
    verdict = check_stop(1e-9, 5e-9, ZERO, ZERO, 1e-8)
    assert verdict is not None and verdict.status == "converged"
    # the tolerance is inclusive
    assert check_stop(1e-8, 1e-8, ZERO, ZERO, 1e-8).status == "converged"


@pytest.mark.parametrize(("excess", "dispersion"), [(1e-9, 1e-3), (1e-3, 1e-9), (1e-3, 1e-3)])
def test_check_stop_not_both_below_tol_continues(excess, dispersion):
    assert check_stop(excess, dispersion, ZERO, ZERO, 1e-8) is None
