"""A calibration folder (``tatonnet calibrate``): the fit, its standard errors, the baseline.

Layout of ``DIR`` (claimed, marked ``calibrate`` and published atomically by
:mod:`tatonnet.results.output`):

* ``summary.json`` — mode, units, goods, observations; per method (``fit``, ``baseline``):
  objective, evaluations, the largest errors against known parameters (when the data carry
  ``true_share``/``true_sigma``), the parameters that are not identified and why
* ``parameters.csv`` and ``parameters.parquet`` — one row per unit and parameter
  (``share_<good>``, ``sigma``): ``estimate``, ``se``, ``identified``, ``note``,
  ``baseline`` (the baseline's estimate; absent with ``--baseline none``), ``truth`` (if known)
* ``fit.png``, ``fit.pdf`` — observed against fitted budget shares (mode ``demand``) or
  price paths (mode ``path``)
* ``run.json`` — what ran (:mod:`tatonnet.results.provenance`)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tatonnet.environment.calibration.estimates import Estimates


def method_summary(est: Estimates, truth=None) -> dict:
    """The JSON summary of one set of estimates."""
    out = {
        "method": est.method,
        "objective": est.total_objective,
        "evaluations": est.total_evaluations,
        "not_identified": {
            unit: list(notes) for unit, notes in zip(est.units, est.notes, strict=True) if notes
        },
    }
    if truth is not None:
        out["errors"] = est.errors(*truth)
    return out


def parameter_table(fit: Estimates, baseline: Estimates | None, truth=None) -> dict[str, list]:
    """The columns of ``parameters.csv``."""
    cols = fit.table()
    if baseline is not None:
        cols["baseline"] = baseline.table()["estimate"]
    if truth is not None:
        shares, sigma = truth
        shares = shares / shares.sum(axis=1, keepdims=True)
        cols["truth"] = [v for u in range(len(fit.units)) for v in (*shares[u], sigma[u])]
    return cols


def write_calibration(work: Path, summary: dict, columns: dict[str, list], figure) -> None:
    """Write ``summary.json``, ``parameters.csv``/``.parquet`` and the figure (``figure(path)``
    draws ``fit.png``; a PDF copy is written beside it) into ``work``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    work = Path(work)
    (work / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
    table = pa.table(columns)
    pq.write_table(table, work / "parameters.parquet")
    pcsv.write_csv(table, work / "parameters.csv")
    figure(work / "fit.png")


def _clean(value):
    """JSON values: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plot_demand_fit(path: Path, observed: np.ndarray, fits: dict[str, np.ndarray], goods) -> None:
    """Observed (x) against fitted (y) budget shares, one panel per method, one colour per
    good; the diagonal is a perfect fit. ``observed`` and every fit: (n_obs, g)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fits), figsize=(3.4 * len(fits) + 1.2, 3.4),
                             layout="constrained", squeeze=False)  # fmt: skip
    for ax, (name, fitted) in zip(axes[0], fits.items(), strict=True):
        for j, good in enumerate(goods):
            ax.scatter(observed[:, j], fitted[:, j], s=8, alpha=0.7, label=good)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="observed budget share",
               ylabel="fitted budget share", title=name)  # fmt: skip
    axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                       frameon=False, title="good")  # fmt: skip
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(fig)


def plot_path_fit(path: Path, observed: np.ndarray, fits: dict[str, np.ndarray], goods) -> None:
    """Observed price paths (solid) and each method's simulated paths (dashed, dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.4), layout="constrained")
    rounds = np.arange(observed.shape[0])
    styles = ["--", ":", "-."]
    for j, good in enumerate(goods):
        (line,) = ax.plot(rounds, observed[:, j], lw=1.5, label=f"{good} observed")
        for (name, fitted), ls in zip(fits.items(), styles, strict=False):
            ax.plot(rounds, fitted[:, j], ls=ls, color=line.get_color(), lw=1.0,
                    label=f"{good} {name}")  # fmt: skip
    ax.set(xlabel="round", ylabel="network-mean price", title="observed and fitted paths")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".pdf"), metadata={"CreationDate": None})
    plt.close(fig)
