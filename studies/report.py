"""The study's report: the verdict table (CSV, Markdown, the README's headline tables)
and the downsampled trajectories (Parquet); the figures are :mod:`tatonnet.studies.figures`.

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

from tatonnet.studies.tune import TUNED_COLUMNS

COLUMNS = [
    "cell", "sweep", "scenario", "mode", "graph", "agents", "goods", "market", "rule",
    "step_size", "hyperparameters", "seed", "status", "rounds", "rounds_to_tol", "max_rounds", "tol",
    "excess_demand", "price_dispersion", "prices", "equilibria", "reached", "nearest",
    "distance", "distances", "equilibrium_method", "period", "evidence",
    "exchanges_per_round", "messages_per_round", "messages", "floats", "reason",
    *TUNED_COLUMNS,  # a tuned cell's; empty for a cell at fixed step sizes
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
    """Markdown pivot: scenario x rule, one column per (mode, market, tuned or not) with
    status counts (a tuned cell counts its best setting's status)."""
    def column(r):
        return r["mode"], r["market"], " tuned" if is_tuned(r) else ""

    columns = sorted({column(r) for r in rows}, key=lambda c: (c[0] != "central", c))
    table: dict = {}
    for r in rows:
        key = (r["scenario"], r["rule"])
        table.setdefault(key, {}).setdefault(column(r), []).append(r["status"])
    head = ["scenario", "rule"] + [f"{m} {k}{t}" for m, k, t in columns]
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
    columns = MD_COLUMNS + (TUNED_MD_COLUMNS if any(is_tuned(r) for r in rows) else [])
    buf.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
    for r in rows:
        buf.write("| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |\n")
    if footer:
        buf.write(f"\n{footer}\n")
    path.write_text(buf.getvalue())


#: The tuned columns ``verdicts.md`` shows (all of them are in ``verdicts.csv``).
TUNED_MD_COLUMNS = ["verdict", "trials", "converged_trials", "pruned_trials",
                    "converged_step_min", "converged_step_max", "recheck_status"]  # fmt: skip


def is_tuned(row: dict) -> bool:
    """Whether a row is a tuned cell's (it has a tuned ``verdict``)."""
    return bool(row.get("verdict"))


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


def _tuned_entry(r: dict) -> str:
    """One tuned cell in a headline table (see :func:`tuned_tables`)."""
    n, k = r.get("trials") or 0, r.get("converged_trials") or 0
    verdict = r["verdict"]
    if r["status"] == "error":
        return "err"
    if verdict == "skipped":
        return "–"
    if verdict == "fails":
        return f"fails {k}/{n} · best {SHORT.get(r['best_status'], r['best_status'])}"
    lo, hi = r.get("converged_step_min"), r.get("converged_step_max")
    steps = f"η {lo:.2g}" + (f"–{hi:.2g}" if hi != lo else "")
    if verdict == "unconfirmed":
        return f"unconfirmed {k}/{n} · {steps} · re-check {SHORT.get(r['recheck_status'], r['recheck_status'])}"
    return f"**{k}/{n}** · {steps} · {r['rounds_to_tol']} r"


#: What a tuned table's entries mean (written once above the tables).
TUNED_KEY = (
    "Each cell tuned (Optuna TPE, successive halving; studies/tune.py). **k/N** = k of the "
    "cell's N trials converged, η = the range of step sizes that converged, r = rounds to "
    "tolerance at the best setting; fails 0/N = no trial of the budget converged over the "
    "ranges in the last column, with the best trial's status (div = diverged, cyc = "
    "cycling, max = undecided at the round budget, stall = stalled, num = numerical error, "
    "pruned = stopped early); unconfirmed = the best trial converged, its re-check on a "
    "second seed of the economy did not; – = cannot run there."
)


def _rounds_text(rows: list[dict]) -> str:
    budgets = sorted({int(r["max_rounds"]) for r in rows if r.get("max_rounds") not in (None, "")})
    return "/".join(f"{b:,}" for b in budgets) + " rounds a trial" if budgets else "no rounds"


def tuned_tables(rows: list[dict]) -> str:
    """Headline tables of tuned cells: one per (sweep, market), rules x scenarios.

    An entry is ``**k/N** · η lo–hi · R r`` when the cell converges (k of N trials
    converged, over step sizes lo..hi; R rounds to tolerance at the best setting),
    ``unconfirmed k/N ...`` when the best trial's re-check on a second seed did not
    converge, ``fails 0/N · best <status>`` when no trial did (the row's last column says
    the range searched), ``–`` when the rule cannot run there (a rule that runs on none of
    the table's scenarios has no row). Several seeds: entries joined by ``|``.
    """
    out = [TUNED_KEY, ""]
    for sweep, market in dict.fromkeys((r["sweep"], r["market"]) for r in rows):
        sel = [r for r in rows if r["sweep"] == sweep and r["market"] == market]
        sizes = sorted({int(r["agents"]) for r in sel if r.get("agents") not in (None, "")})
        size = f", {sizes[0]:,} agents" if len(sizes) == 1 else ""
        what = ("Central auctioneer" + size if sel[0]["mode"] == "central"
                else f"Decentralized{size} on each scenario's network")  # fmt: skip
        market_text = {"flat": "flat market", "layered": "merchant layer (inventories)",
                       "layered-books": "merchants pricing from their books"}.get(
            market, f"{market} market")  # fmt: skip
        trials = sorted({r["trials"] for r in sel if r.get("trials")})
        budget = "/".join(str(t) for t in trials) or "0"
        out += [f"**{what}, {market_text}: tuned verdicts** ({budget} trials per cell, "
                f"{_rounds_text(sel)})", ""]  # fmt: skip
        scenarios = list(dict.fromkeys(r["scenario"] for r in sel))
        out += ["| rule | " + " | ".join(scenarios) + " | searched |",
                "|---|" + "---|" * (len(scenarios) + 1)]  # fmt: skip
        for rule in dict.fromkeys(r["rule"] for r in sel):
            entries = []
            for sc in scenarios:
                cells = [r for r in sel if r["rule"] == rule and r["scenario"] == sc]
                entries.append(" \\| ".join(_tuned_entry(r) for r in cells) or "")
            if all(e in ("–", "") for e in entries):
                continue  # the rule cannot run on any scenario of this table: no row
            searched = next((r["searched"] for r in sel if r["rule"] == rule and r.get("searched")),
                            "")  # fmt: skip
            out.append(f"| {rule} | " + " | ".join(entries) + f" | {searched} |")
        out.append("")
    return "\n".join(out)


def headline_tables(rows: list[dict]) -> str:
    """The README's verdict tables: the tuned cells' (:func:`tuned_tables`), then, for
    cells at fixed step sizes, converged cells per rule and scenario (central, then
    network flat / layered) and every Scarf cell (status and rounds)."""
    tuned = [r for r in rows if is_tuned(r)]
    rows = [r for r in rows if not is_tuned(r)]
    out = [tuned_tables(tuned)] if tuned else []
    if not rows:
        return "\n".join(out)
    rules = list(dict.fromkeys(r["rule"] for r in rows))
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
