"""Calibration (environment/calibration, tatonnet calibrate): known answers from known CES
parameters, identification, standard errors, the baseline, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tatonnet.agents.jacobian import demand_parameter_jacobian
from tatonnet.agents.rules import make_rule
from tatonnet.agents.utility import Family, demand
from tatonnet.cli.calibrate import main as calibrate
from tatonnet.environment.calibration.baseline import baseline_demand
from tatonnet.environment.calibration.demand_fit import fit_demand, unit_problems
from tatonnet.environment.calibration.observations import CalibrationError, from_table
from tatonnet.environment.calibration.path_fit import (
    PathSetup,
    baseline_path,
    fit_path,
    simulate_path,
)
from tatonnet.environment.calibration.synthetic import demand_table
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import Network


def economy_truth(n: int, g: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(g, 3.0), n)
    sigma = rng.uniform(0.3, 4.0, n)
    endowments = rng.lognormal(0.0, 0.3, (n, g))
    return shares, sigma, endowments


def test_parameter_jacobian_matches_finite_differences():
    """d x / d log a and d x / d sigma agree with central differences to 1e-7 (relative)."""
    shares, sigma, e = economy_truth(5, 4)
    p = np.random.default_rng(3).lognormal(0, 0.5, (5, 4))
    ces = np.full(5, Family.CES, dtype=np.int8)
    d_log_a, d_sigma = demand_parameter_jacobian(p, e, shares, sigma)
    h = 1e-6
    for m in range(4):
        up, down = shares.copy(), shares.copy()
        up[:, m] *= np.exp(h)
        down[:, m] *= np.exp(-h)
        fd = (demand(p, e, up, ces, sigma) - demand(p, e, down, ces, sigma)) / (2 * h)
        np.testing.assert_allclose(d_log_a[:, :, m], fd, rtol=1e-7, atol=1e-9)
    fd = (demand(p, e, shares, ces, sigma + h) - demand(p, e, shares, ces, sigma - h)) / (2 * h)
    np.testing.assert_allclose(d_sigma, fd, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(d_log_a.sum(axis=2), 0.0, atol=1e-12)  # scale of a is flat


def test_residual_jacobian_is_the_analytic_one():
    """The fit's residual Jacobian equals central differences of its residuals (1e-8)."""
    shares, sigma, e = economy_truth(3)
    problem = unit_problems(from_table(demand_table(shares, sigma, e, 6, seed=4)))[0]
    q = problem.start() + 0.2
    jac = problem.data_jacobian(q)
    h = 1e-6
    fd = np.column_stack([(problem.data_residuals(q + h * d) - problem.data_residuals(q - h * d))
                          / (2 * h) for d in np.eye(q.size)])  # fmt: skip
    np.testing.assert_allclose(jac, fd, atol=1e-8)


def test_noiseless_recovery_and_baseline_comparison():
    """Noiseless bundles of 8 agents in 8 markets: shares and sigma recovered to 1e-6
    (absolute for shares, relative for sigma); the random baseline on the same budget
    (evaluations per unit) is reported and is no more accurate than the gradient fit."""
    shares, sigma, e = economy_truth(8)
    obs = from_table(demand_table(shares, sigma, e, 8, noise=0.0, seed=2))
    fit = fit_demand(obs)
    err = fit.errors(shares, sigma)
    assert err["share"] < 1e-6 and err["sigma"] < 1e-6
    assert fit.share_identified.all() and fit.sigma_identified.all()
    base = baseline_demand(obs, fit.evaluations, "random", seed=0)
    np.testing.assert_array_equal(base.evaluations, fit.evaluations)
    base_err = base.errors(shares, sigma)
    assert base_err["share"] >= err["share"] and base_err["sigma"] >= err["sigma"]
    assert base.total_objective >= fit.total_objective


def test_noisy_recovery_within_standard_errors():
    """1% log-noise on bundles, 40 agents x 12 markets (fixed seed): every estimate lies
    within 5 standard errors of the truth, shares within 0.02 and sigma within 10%, and the
    nominal 95% intervals cover the truth at a rate of at least 0.85."""
    shares, sigma, e = economy_truth(40, seed=5)
    obs = from_table(demand_table(shares, sigma, e, 12, noise=0.01, seed=6))
    fit = fit_demand(obs)
    z_share = np.abs(fit.shares - shares / shares.sum(axis=1, keepdims=True)) / fit.share_se
    z_sigma = np.abs(fit.sigma - sigma) / fit.sigma_se
    assert z_share.max() < 5 and z_sigma.max() < 5
    err = fit.errors(shares, sigma)
    assert err["share"] < 0.02 and err["sigma"] < 0.10
    assert err["coverage"] >= 0.85


def test_never_bought_good_is_not_identified():
    """An agent with a zero share never buys that good: its share is estimated 0, flagged
    not identified with a 'never bought' note; the other agents stay identified."""
    shares, sigma, e = economy_truth(3)
    shares[1, 2] = 0.0
    obs = from_table(demand_table(shares, sigma, e, 6, noise=0.0, seed=3))
    fit = fit_demand(obs)
    assert fit.shares[1, 2] == 0.0 and not fit.share_identified[1, 2]
    assert any("never bought: good2" in note for note in fit.notes[1])
    assert fit.share_identified[[0, 2]].all() and not fit.notes[0]
    np.testing.assert_allclose(fit.sigma[1], sigma[1], rtol=1e-6)


def test_constant_relative_prices_leave_a_flat_direction():
    """Prices that never change relative to each other cannot separate sigma from the
    shares: the fit reports a flat direction and nothing identified for that unit."""
    shares, sigma, e = economy_truth(1)
    table = demand_table(shares, sigma, e, 5, seed=1)
    table["price"] = table.groupby("good")["price"].transform("first") * (1 + table["market"])
    fit = fit_demand(from_table(table))
    assert not fit.sigma_identified[0] and not fit.share_identified[0].any()
    assert np.isinf(fit.condition[0]) and "flat direction" in fit.notes[0][0]


def test_regularization_keeps_estimates_finite_and_bounded_bias():
    """A ridge of 1e-4 on noiseless data moves the estimates by less than 1e-2."""
    shares, sigma, e = economy_truth(4)
    obs = from_table(demand_table(shares, sigma, e, 8, seed=2))
    err = fit_demand(obs, regularize=1e-4).errors(shares, sigma)
    assert 0 < err["share"] < 1e-2 and err["sigma"] < 1e-2


def _path_setup(n=12, g=3):
    rng = np.random.default_rng(0)
    e = rng.lognormal(0, 0.4, (n, g))
    economy = Economy(e, np.ones((n, g)), np.full(n, Family.CES, dtype=np.int8), np.ones(n))
    return PathSetup(economy, np.zeros(n, dtype=np.int64), ("all",), Network.central(n),
                     make_rule("entropic", step_size=0.3), "tracking", np.ones(g))  # fmt: skip


def test_path_mode_recovers_a_noiseless_path_and_beats_the_baseline():
    """One CES group behind a 30-round central entropic path: the path fit (finite
    differences) recovers shares to 1e-5 and sigma to 1e-4 (relative); the random baseline
    on the same number of dynamics runs is reported and fits worse."""
    setup = _path_setup()
    shares, sigma = np.array([[0.5, 0.3, 0.2]]), np.array([2.5])
    observed = simulate_path(setup, shares, sigma, 30)
    fit = fit_path(setup, observed)
    err = fit.errors(shares, sigma)
    assert err["share"] < 1e-5 and err["sigma"] < 1e-4
    base = baseline_path(setup, observed, fit.total_evaluations, "random", seed=0)
    assert base.total_evaluations == fit.total_evaluations
    assert base.total_objective >= fit.total_objective


BAD = [
    (lambda t: t.drop(columns="price"), "missing column(s) price"),
    (lambda t: t.assign(price=-t["price"]), "positive prices"),
    (lambda t: t.assign(quantity=t["quantity"].where(t.index != 3)), "NaN"),
    (lambda t: t.assign(agent=t["agent"] - 5), "unknown agent ids"),
    (lambda t: t[t["market"] == 0], "too few observations"),
    (lambda t: t.drop(index=[0]), "does not list every good"),
]


@pytest.mark.parametrize(("spoil", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_data_is_one_line_and_no_folder(spoil, message, tmp_path, capsys):
    shares, sigma, e = economy_truth(2)
    data = tmp_path / "bad.csv"
    spoil(demand_table(shares, sigma, e, 3, seed=1)).to_csv(data, index=False)
    out = tmp_path / "out"
    assert calibrate([str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [data]  # no folder, no work folder, no lock


def test_from_table_takes_net_trades_with_endowments():
    shares, sigma, e = economy_truth(2)
    table = demand_table(shares, sigma, e, 3, seed=1)
    net = table.assign(net_trade=table["quantity"] - table["endowment"]).drop(columns="quantity")
    np.testing.assert_allclose(from_table(net).quantities, from_table(table).quantities)
    with pytest.raises(CalibrationError, match="needs an endowment"):
        from_table(net.drop(columns="endowment"))


def test_cli_example_then_fit_writes_the_documented_folder(tmp_path, capsys):
    """``--example`` then a fit: the folder holds the documented files, the summary both
    methods on the same budget, and parameters.csv estimates, standard errors, flags."""
    data = tmp_path / "obs.parquet"
    assert calibrate(["--example", str(data), "--agents", "4", "--noise", "0"]) == 0
    out = tmp_path / "cal"
    assert calibrate([str(data), "--out", str(out), "--seed", "1"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "parameters.csv", "parameters.parquet", "fit.png", "fit.pdf",
            "run.json", ".tatonnet-output.json"} <= names  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fit"]["evaluations"] == summary["baseline"]["evaluations"]
    assert summary["fit"]["errors"]["share"] < 1e-6
    params = pd.read_csv(out / "parameters.csv")
    assert {"unit", "parameter", "estimate", "se", "identified", "baseline", "truth"} <= set(
        params.columns
    )
    assert len(params) == 4 * 4 and params["identified"].all()
    assert json.loads((out / ".tatonnet-output.json").read_text())["kind"] == "calibrate"
    assert "least-squares" in capsys.readouterr().out
    assert calibrate([str(data), "--out", str(out)]) == 2  # not overwritten without --force


def test_cli_path_mode_needs_a_scenario(tmp_path, capsys):
    data = tmp_path / "path.csv"
    pd.DataFrame({"round": [0, 0, 1, 1, 2, 2], "good": ["a", "b"] * 3,
                  "price": [1.0] * 6}).to_csv(data, index=False)  # fmt: skip
    assert calibrate([str(data), "--mode", "path", "--out", str(tmp_path / "o")]) == 2
    assert "needs --scenario" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
