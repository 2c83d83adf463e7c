"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from tatonnet.cli import run


def invoke(argv, capsys) -> tuple[int, str, str]:
    """Run the ``tatonnet`` command in this process: (exit status, stdout, stderr)."""
    try:
        code = run.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_same_run(a, b) -> None:
    """Two finished runs (``RunResult``) are the same bits: rounds, status, prices, excess
    demand and dispersion in the summary, every agent's prices, every recorded round."""
    import numpy as np

    assert a.summary["rounds"] == b.summary["rounds"]
    for key in ("prices", "excess_demand_per_good", "price_dispersion", "status"):
        assert a.summary[key] == b.summary[key], key
    np.testing.assert_array_equal(a.model.prices(), b.model.prices())
    da = a.model.datacollector.get_model_vars_dataframe()
    db = b.model.datacollector.get_model_vars_dataframe()
    assert da.equals(db)
