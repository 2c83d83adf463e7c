"""The result folder, written atomically: a failed run leaves no half-written folder.

A run works in ``.<name>.partial`` beside ``DIR`` (its checkpoints live there, so that
``--resume`` can continue a run whose driver stopped) and renames it to ``DIR`` only when
everything is written. Layout of ``DIR``:

* ``summary.json`` — the run's parameters, verdict, final metrics and speed
* ``metrics.parquet`` — per round: ``round``, ``excess_demand``, ``price_dispersion``,
  ``price_<good>`` (network-mean price), ``excess_<good>`` (relative to supply)
* ``agents/part-<k>.parquet`` — a Parquet dataset (``pyarrow.parquet.read_table(DIR /
  "agents")``), one part per shard, written by the shards in parallel: per agent ``id``,
  ``group``, ``family``, ``price_<good>`` (final prices), ``excess_<good>`` (final excess
  demand at own prices), ``wealth``
* ``edges.parquet`` — the network, one row per undirected edge: ``source`` < ``target``
  (agent ids, int64); no rows under ``central``
* ``convergence.png`` — excess demand and dispersion per round, and mean prices
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tatonnet.agents.utility import Family


class OutputError(ValueError):
    """The output folder cannot be used (one-line message)."""


def default_out_dir(scenario_name: str, root: Path = Path("runs")) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = root / f"{scenario_name}-{stamp}"
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def check_out_dir(out: Path, force: bool) -> None:
    """Fail early (before any work) if ``out`` cannot become the result folder."""
    if out.exists() and not force:
        raise OutputError(f"--out: {str(out)!r} already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out: {str(out)!r} exists and is not a folder")


def work_dir_for(out: Path) -> Path:
    """The hidden folder a run to ``out`` works in until it is complete."""
    return out.parent / f".{out.name}.partial"


def prepare_work_dir(out: Path, force: bool) -> Path:
    """Create the work folder of a new run to ``out`` (checks ``out`` first)."""
    check_out_dir(out, force)
    work = work_dir_for(out)
    if work.exists():
        if not force:
            raise OutputError(
                f"--out: an interrupted run to {str(out)!r} left {str(work)!r}; continue it "
                f"with --resume {out}, or pass --force to start over"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return work


def finalize(work: Path, out: Path, force: bool = False) -> Path:
    """Rename the complete work folder to ``out`` (replacing it under ``force``)."""
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    if out.exists():
        if not force:
            raise OutputError(f"--out: {str(out)!r} already exists (use --force to replace it)")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / "run")
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)
    return out


@contextlib.contextmanager
def atomic_dir(out: Path, force: bool = False):
    """Yield a fresh work folder for ``out``; rename it to ``out`` only on success."""
    work = prepare_work_dir(out, force)
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finalize(work, out, force)


def write_results(result, work: Path, out: Path | None = None) -> None:
    """Write a finished :class:`tatonnet.distributed.runner.RunResult` into ``work``."""
    summary = dict(result.summary, out=str(out) if out else None)
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=_json) + "\n")
    metrics = result.model.datacollector.get_model_vars_dataframe()
    metrics.insert(0, "round", np.arange(len(metrics)))
    pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), work / "metrics.parquet")
    model = result.model
    if model.engine is not None:
        model.engine.write_agents(work / "agents")
    else:
        (work / "agents").mkdir(exist_ok=True)
        pq.write_table(agent_table(model), work / "agents" / "part-0000.parquet")
    pq.write_table(edge_table(model.network), work / "edges.parquet")
    plot_convergence(metrics, result, work / "convergence.png")


def write_run(result, out: Path, force: bool = False) -> Path:
    """Write a finished run to ``out`` atomically (a fresh work folder, then rename)."""
    with atomic_dir(out, force) as work:
        write_results(result, work, out)
    return out


def agent_table(model) -> pa.Table:
    """Final per-agent state of an in-process model (see :func:`agent_columns`)."""
    economy = model.economy
    prices = np.ascontiguousarray(model.prices())
    excess = model.state.excess if not model.network.is_central else (
        economy.excess_demand(prices[0])
    )  # fmt: skip
    return agent_columns(
        np.arange(economy.n_agents), model.group, economy.family, economy.goods,
        prices, excess, economy.endowments,
    )  # fmt: skip


def edge_table(network) -> pa.Table:
    """The network's undirected edges: ``source`` < ``target``, int64; (n_edges,) each."""
    if network.is_central:
        empty = np.empty(0, dtype=np.int64)
        return pa.table({"source": empty, "target": empty})
    rows = np.repeat(np.arange(network.n_agents, dtype=np.int64), np.diff(network.indptr))
    cols = network.indices.astype(np.int64)
    keep = rows < cols
    return pa.table({"source": rows[keep], "target": cols[keep]})


def agent_columns(ids, group, family, goods, prices, excess, endowments) -> pa.Table:
    """The ``agents`` table: id, group, family, price_<good>, excess_<good>, wealth."""
    columns = {
        "id": ids,
        "group": group,
        "family": [Family(int(c)).name.lower() for c in family],
    }
    for j, good in enumerate(goods):
        columns[f"price_{good}"] = prices[:, j]
    for j, good in enumerate(goods):
        columns[f"excess_{good}"] = excess[:, j]
    columns["wealth"] = np.einsum("ij,ij->i", prices, endowments)
    return pa.table(columns)


def plot_convergence(metrics, result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.summary
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    rounds = metrics["round"].to_numpy()
    positive = lambda x: np.where(x > 0, x, np.nan)  # noqa: E731  (log axes)
    ax1.semilogy(rounds, positive(metrics["excess_demand"]), label="excess demand")
    if s["graph"] != "central":
        ax1.semilogy(rounds, positive(metrics["price_dispersion"]), label="price dispersion")
    ax1.axhline(s["tol"], color="grey", ls=":", label=f"tol {s['tol']:g}")
    ax1.set(xlabel="round", title=f"{s['scenario']}: {s['status']} ({s['rule']})")
    ax1.legend()
    for j, good in enumerate(s["goods"]):
        (line,) = ax2.plot(rounds, metrics[f"price_{good}"], label=good)
        if s["reference_prices"]:
            ref = s["reference_prices"][s["nearest_reference"]][j]
            ax2.axhline(ref, color=line.get_color(), ls="--", lw=0.8)
    ax2.set(xlabel="round", ylabel="network-mean price", title="prices (dashed: equilibrium)")
    ax2.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
