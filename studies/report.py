"""The study's report: the verdict table (CSV, Markdown, the README's headline tables),
the downsampled trajectories (Parquet) and the figures (simplex paths, convergence curves).

Every function reads rows / results as :func:`tatonnet.studies.grid.run_cells` makes them
and ``tatonnet study`` reads them back from the study folder's cell store
(:mod:`tatonnet.studies.cache`): a row is one cell's verdict (plain values; keys starting
with ``_`` are internal), a result is ``{"row": row, "trajectory": arrays or None}``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

COLUMNS = [
    "cell", "sweep", "scenario", "mode", "graph", "agents", "goods", "market", "rule",
    "step_size", "hyperparameters", "seed", "status", "rounds", "rounds_to_tol", "max_rounds", "tol",
    "excess_demand", "price_dispersion", "prices", "equilibria", "reached", "nearest",
    "distance", "distances", "equilibrium_method", "period", "evidence",
    "exchanges_per_round", "messages_per_round", "messages", "floats", "reason",
]  # fmt: skip


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_fmt(row.get(c)) for c in COLUMNS])


MD_COLUMNS = [
    "scenario", "mode", "market", "agents", "rule", "step_size", "hyperparameters", "seed",
    "status", "rounds",
    "rounds_to_tol", "excess_demand", "reached", "distances", "evidence", "messages",
]  # fmt: skip


def summary_pivot(rows: list[dict]) -> str:
    """Markdown pivot: scenario x rule, one column per (mode, market) with status counts."""
    columns = sorted({(r["mode"], r["market"]) for r in rows}, key=lambda c: (c[0] != "central", c))
    table: dict = {}
    for r in rows:
        key = (r["scenario"], r["rule"])
        table.setdefault(key, {}).setdefault((r["mode"], r["market"]), []).append(r["status"])
    head = ["scenario", "rule"] + [f"{m} {k}" for m, k in columns]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (scenario, rule), by_col in sorted(table.items()):
        cells = []
        for col in columns:
            statuses = by_col.get(col, [])
            counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
            cells.append(", ".join(f"{s} {n}/{len(statuses)}" for s, n in counts.items()))
        out.append("| " + " | ".join([scenario, rule, *cells]) + " |")
    return "\n".join(out)


def write_markdown(study, rows: list[dict], path: Path, footer: str = "") -> None:
    """``verdicts.md``: the study's name and description (a :class:`~tatonnet.studies.grid.Study`),
    the summary pivot, then every cell."""
    buf = io.StringIO()
    buf.write(f"# Study {study.name}: verdicts\n\n")
    if study.description:
        buf.write(f"{study.description}\n\n")
    buf.write(
        f"{len(rows)} cells. Statuses are measured by `tatonnet.environment.tatonnement.status` "
        "(converged / cycling / diverged / stalled / max_rounds; numerical_error = the "
        "arithmetic failed, not an economic verdict; skipped = cannot run). "
        "Each entry counts cells (step sizes x seeds).\n\n"
    )
    buf.write("## Summary\n\n" + summary_pivot(rows) + "\n\n## Cells\n\n")
    buf.write("| " + " | ".join(MD_COLUMNS) + " |\n|" + "---|" * len(MD_COLUMNS) + "\n")
    for r in rows:
        buf.write("| " + " | ".join(_fmt(r.get(c)) for c in MD_COLUMNS) + " |\n")
    if footer:
        buf.write(f"\n{footer}\n")
    path.write_text(buf.getvalue())


SHORT = {"diverged": "div", "cycling": "cyc", "max_rounds": "max", "stalled": "stall",
         "numerical_error": "num", "error": "err"}  # fmt: skip


def _tally(statuses: list[str]) -> str:
    """``converged/run`` and the other statuses: ``"2/6 · cyc 3, div 1"``; "" if none ran."""
    ran = [s for s in statuses if s != "skipped"]
    if not ran:
        return "–"
    others = {s: ran.count(s) for s in dict.fromkeys(ran) if s != "converged"}
    text = f"{ran.count('converged')}/{len(ran)}"
    if others:
        text += " · " + ", ".join(f"{SHORT.get(k, k)} {n}" for k, n in others.items())
    return text


def headline_tables(rows: list[dict]) -> str:
    """The README's verdict tables: converged cells per rule and scenario (central, then
    network flat / layered), then every Scarf cell (status and rounds)."""
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    out = []
    for mode, markets, title in (
        ("central", ("flat",), "Central auctioneer: converged cells / cells run (step sizes x seeds)"),
        ("network", ("flat", "layered"), "Decentralized, 2,000 agents on each scenario's network: "
         "converged / run, flat market | with the merchant layer"),
    ):  # fmt: skip
        sel = [r for r in rows if r["mode"] == mode]
        if not sel:
            continue
        scenarios = list(dict.fromkeys(r["scenario"] for r in sel))
        out += [f"**{title}** (div = diverged, cyc = cycling, max = undecided at the round "
                "budget, num = numerical error; – = cannot run)", "",
                "| rule | " + " | ".join(scenarios) + " |",
                "|---|" + "---|" * len(scenarios)]  # fmt: skip
        for rule in rules:
            cells = []
            for sc in scenarios:
                parts = [_tally([r["status"] for r in sel if r["rule"] == rule
                                 and r["scenario"] == sc and r["market"] == m])
                         for m in markets]  # fmt: skip
                cells.append(" \\| ".join(parts) if len(parts) > 1 else parts[0])
            out.append(f"| {rule} | " + " | ".join(cells) + " |")
        out.append("")
    scarf = [r for r in rows if r["scenario"] == "scarf" and r["status"] != "skipped"]
    if scarf:
        out += ["**Scarf's economy, every cell** (status and rounds run; every converged "
                "cell reached the equilibrium (1, 1, 1))", "",
                "| rule | central | network, flat | network, layered |", "|---|---|---|---|"]  # fmt: skip
        for rule in rules:
            cols = []
            for mode, market in (("central", "flat"), ("network", "flat"), ("network", "layered")):
                sel = [r for r in scarf if r["rule"] == rule and r["mode"] == mode
                       and r["market"] == market]  # fmt: skip
                extra = lambda r: "".join(  # noqa: E731
                    f", {k}={v:g}" for k, v in r.get("_hyper", {}).items() if k != "step_size"
                )
                cols.append("; ".join(
                    f"η={r['step_size']:g}{extra(r)}: {SHORT.get(r['status'], r['status'])} "
                    f"{r['rounds']}" for r in sel) or "–")  # fmt: skip
            if any(c != "–" for c in cols):
                out.append(f"| {rule} | " + " | ".join(cols) + " |")
        out.append("")
    return "\n".join(out)


def write_timing(rows: list[dict], path: Path) -> None:
    """Wall seconds per cell (machine-dependent, so kept out of verdicts.csv)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["cell", "scenario", "mode", "market", "rule", "rounds", "seconds"])
        for r in rows:
            writer.writerow([r["cell"], r["scenario"], r["mode"], r["market"], r["rule"],
                             r["rounds"], _fmt(r.get("seconds", 0.0))])  # fmt: skip


#: Cells whose trajectories are buffered before ``cells.parquet`` gets a row group.
CELLS_PER_ROW_GROUP = 256


def write_trajectories(results: Iterable[dict], path: Path) -> None:
    """``cells.parquet``: every result's trajectory, one row per kept round, tagged ``cell``.

    ``results`` may be a generator (the cells read back from the store one by one): rows
    are written in row groups of :data:`CELLS_PER_ROW_GROUP` cells, so memory holds that
    many trajectories, not the whole study.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("cell", pa.int64()), ("round", pa.int64()),
                        ("excess_demand", pa.float64()), ("price_dispersion", pa.float64()),
                        ("prices", pa.list_(pa.float64()))])  # fmt: skip
    buffered: list[dict] = []

    def flush(writer) -> None:
        if not buffered:
            return
        prices = [list(map(float, p)) for res in buffered for p in res["trajectory"]["prices"]]
        writer.write_table(pa.table({
            "cell": np.concatenate([np.full(res["trajectory"]["round"].size, res["row"]["cell"],
                                            dtype=np.int64) for res in buffered]),
            **{k: np.concatenate([np.asarray(res["trajectory"][k]) for res in buffered])
               for k in ("round", "excess_demand", "price_dispersion")},
            "prices": pa.array(prices, type=pa.list_(pa.float64())),
        }, schema=schema))  # fmt: skip
        buffered.clear()

    with pq.ParquetWriter(path, schema) as writer:
        for res in results:
            if res["trajectory"] is None:
                continue
            buffered.append(res)
            if len(buffered) >= CELLS_PER_ROW_GROUP:
                flush(writer)
        flush(writer)


def _simplex_xy(prices: np.ndarray) -> np.ndarray:
    """Project (T, 3) prices onto the 2-simplex (normalized to sum 1), as 2-D points."""
    w = prices / prices.sum(axis=1, keepdims=True)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
    return w @ corners


def plot_figures(results: list[dict], out: Path) -> list[Path]:
    """``simplex-<scenario>.png`` (3 goods) and ``convergence-<scenario>.png``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_scenario: dict[str, list[dict]] = {}
    for res in results:
        if res["trajectory"] is not None:
            by_scenario.setdefault(res["row"]["scenario"], []).append(res)
    for scenario, runs in sorted(by_scenario.items()):
        rules = sorted({r["row"]["rule"] for r in runs})
        palette = [plt.cm.tab20(k) for k in (*range(0, 20, 2), *range(1, 20, 2))]
        colors = {rule: palette[i % 20] for i, rule in enumerate(rules)}
        steps = {rule: sorted({r["row"]["step_size"] for r in runs if r["row"]["rule"] == rule})
                 for rule in rules}  # fmt: skip
        style = lambda row, steps=steps: ("-", "--", ":", "-.")[  # noqa: E731
            steps[row["rule"]].index(row["step_size"]) % 4
        ]
        panels = sorted({(r["row"]["mode"], r["row"]["market"]) for r in runs},
                        key=lambda c: (c[0] != "central", c))  # fmt: skip
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2),
                                 squeeze=False, constrained_layout=True)  # fmt: skip
        for ax, panel in zip(axes[0], panels, strict=True):
            for r in runs:
                row = r["row"]
                if (row["mode"], row["market"]) != panel or row["seed"] != min(
                    x["row"]["seed"] for x in runs
                ):
                    continue
                t = r["trajectory"]
                y = np.asarray(t["excess_demand"], dtype=float)
                # a log axis takes positive finite values: diverged tails are cut at 1e12
                y = np.where(np.isfinite(y) & (y > 0), np.minimum(y, 1e12), np.nan)
                ax.semilogy(t["round"], y, color=colors[row["rule"]], ls=style(row), lw=1,
                            label=f"{row['rule']} {row['step_size']:g}: {row['status']}")  # fmt: skip
            ax.set(xlabel="round", ylabel="max relative excess demand",
                   title=f"{scenario}: {panel[0]}, {panel[1]}")  # fmt: skip
            ax.legend(fontsize=6, ncol=2)
        path = out / f"convergence-{scenario}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
        if runs[0]["row"]["goods"] != 3:
            continue
        ncols = min(4, len(rules))
        nrows = math.ceil(len(rules) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 4.4 * nrows), squeeze=False,
                                 constrained_layout=True)  # fmt: skip
        for ax in axes.flat[len(rules) :]:
            ax.set_axis_off()
        corners = _simplex_xy(np.eye(3))
        for ax, rule in zip(axes.flat, rules, strict=False):
            ax.plot(*np.vstack([corners, corners[:1]]).T, color="grey", lw=0.8)
            for (x, y), good, va in zip(corners, runs[0]["row"]["_goods"], ("top", "top", "bottom"),
                                        strict=True):  # fmt: skip
                ax.text(x, y, f"p({good})", ha="center", va=va, fontsize=8, color="grey")
            for r in runs:
                row = r["row"]
                if row["rule"] != rule or row["mode"] != "central" and row["market"] != "flat":
                    continue
                p = r["trajectory"]["prices"]
                p = p[np.isfinite(p).all(axis=1) & (p > 0).all(axis=1)]
                if p.size == 0:
                    continue
                xy = _simplex_xy(p)
                (line,) = ax.plot(*xy.T, lw=0.8, alpha=0.8,
                                  label=f"{row['mode']} {row['step_size']:g} s{row['seed']}: "
                                  f"{row['status']}")  # fmt: skip
                ax.plot(*xy[0], "o", color=line.get_color(), ms=3)
            refs = [r for r in runs if r["row"]["rule"] == rule]
            ref_prices = refs[0]["row"].get("_references") if refs else None
            if ref_prices:
                ax.plot(*_simplex_xy(np.asarray(ref_prices)).T, "k*", ms=9, label="equilibrium")
            ax.set(title=f"{scenario}: {rule}", aspect="equal", xticks=[], yticks=[],
                   ylim=(-0.08, 0.95))  # fmt: skip
            ax.legend(fontsize=6)
        path = out / f"simplex-{scenario}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
