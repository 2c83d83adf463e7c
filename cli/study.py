"""``tatonnet study``: run a grid of scenarios x rules (a study file) and write its verdicts.

The grid, its cells and its outputs are :mod:`tatonnet.studies.grid`; the cell cache
(keys, reuse) :mod:`tatonnet.studies.cache`; the study folder and its cell files
:mod:`tatonnet.results.study_folder` and :mod:`tatonnet.results.cell_store`; the tables
:mod:`tatonnet.studies.report` and the figures :mod:`tatonnet.studies.figures`, assembled
from the stored cells; a tuned sweep's cells :mod:`tatonnet.studies.tune`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tatonnet.cli.parsing import EXIT_USAGE, OneLineParser, non_negative_int
from tatonnet.studies import figures, report
from tatonnet.studies.grid import StudyError, expand, load_study


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tatonnet study",
        description=(
            "Run a grid of scenarios x rules x step sizes x seeds (x central/network, flat/"
            "layered market) and write a verdict table (verdicts.csv, verdicts.md, "
            "headline.md), summary.json, run.json, the "
            "downsampled trajectories (cells.parquet) and figures as PNG, PDF and SVG "
            "(convergence-<scenario>, simplex-<scenario> for 3-good economies, "
            "verdicts-<mode>)."
        ),
        epilog="A sweep with a [sweep.tune] table tunes each of its cells: it searches the "
        "rule's step size (1e-4 to 10, log) and main hyperparameters with Optuna (TPE, "
        "successive halving), and the cell's verdict is the best trial's (converges, "
        "unconfirmed on a second seed, or fails: no trial of the budget converged). "
        "Each finished cell is kept in DIR/cells/ at once: running the same command "
        "again reuses the stored cells (an interrupted study resumes), and a changed study "
        "into the same --out runs only its new cells and rewrites the tables. Exit status: 0 "
        "when the grid ran (whatever the verdicts), 2 for invalid input, 130 when "
        "interrupted (Ctrl-C), 143 when terminated (SIGTERM).",
    )
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--grid", metavar="FILE|NAME",
                      help="study file (TOML) or built-in name (default: xor)")  # fmt: skip
    grid.add_argument("--quick", action="store_true", help="a tiny built-in grid (seconds)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="result folder (default: runs/study-<name>)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="run every cell again (ignore the stored ones); also replaces a "
                        "tatonnet folder of another kind at --out")  # fmt: skip
    parser.add_argument("--workers", type=non_negative_int, default=2, metavar="K",
                        help="Ray workers (default 2, local Ray); 0 runs in this process")  # fmt: skip
    parser.add_argument("--address", metavar="HOST:PORT", help="join an existing Ray cluster")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``tatonnet study``; SIGINT/SIGTERM stop it cleanly (:mod:`tatonnet.cli.signals`)."""
    from tatonnet.cli import signals

    return signals.guarded("tatonnet study", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    from tatonnet.cli import signals

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))

    from tatonnet.distributed import cluster
    from tatonnet.results.output import OutputError, safe_name
    from tatonnet.results.study_folder import TABLES, claim_study
    from tatonnet.studies import cache

    t0 = time.perf_counter()
    claim = staging = None
    try:
        if args.address and args.workers == 0:
            raise StudyError("--address joins a Ray cluster, but --workers 0 runs the cells "
                             "in this process: give --workers K (K >= 1) or leave out --address")  # fmt: skip
        study = load_study("quick" if args.quick else (args.grid or "xor"))
        cells = expand(study)
        configs = cache.cell_configs(cells)  # every key, before any folder is touched
        out = args.out or Path("runs") / f"study-{safe_name(study.name)}"
        plotted = figures.figure_names((c.scenario for c in cells), modes=(c.mode for c in cells))
        claim = claim_study(out, args.force, outputs=(*TABLES, *plotted))
        # validated, locked, marked; unlocked in `finally`, after any clean-up
        store = claim.store
        plan = cache.plan(cells, configs, store, reuse=not args.force)
        print(reuse_line(study.name, len(cells), plan), flush=True)
        cache.run_study_cells(cells, plan, store, args.workers, args.address,
                              progress=not args.quiet)  # fmt: skip
        rows = cache.stored_rows(cells, plan.keys, store)
        staging = claim.staging()
        _write_tables(study, cells, rows, plan, store, staging, args, t0, claim, out)
        signals.defer()  # publishing: a signal from here on is reported once it is done
        claim.publish(staging)
        staging = None
    except (StudyError, OutputError, cluster.ClusterError) as exc:
        _clean_up(claim, staging)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # SIGINT or SIGTERM (signals.Terminated)
        kept = _clean_up(claim, staging)
        what = (f"{kept} finished cell(s) kept in {str(claim.out / 'cells')!r}; run the same "
                "command again to resume" if kept else "no result folder written")  # fmt: skip
        print(f"{parser.prog}: {signals.stopped()}; {what}", file=sys.stderr)
        return signals.exit_code()
    except BaseException:
        _clean_up(claim, staging)
        raise
    finally:
        cluster.shutdown()
        if claim is not None:
            claim.release()
    counts = status_counts(rows)
    print(f"study {study.name}: {len(rows)} cells in {time.perf_counter() - t0:.1f} s - "
          + ", ".join(f"{s} {n}" for s, n in counts.items()))  # fmt: skip
    verdicts = verdict_counts(rows)
    if verdicts:
        print(f"study {study.name}: tuned verdicts - "
              + ", ".join(f"{v} {n}" for v, n in verdicts.items()))  # fmt: skip
    print(f"results:  {out}")
    errors = [r for r in rows if r["status"] == "error"]
    if errors:
        first = errors[0]
        print(
            f"{parser.prog}: {len(errors)} cell(s) failed (status 'error' in verdicts.csv); "
            f"first: cell {first['cell']} ({first['scenario']}, {first['rule']}): "
            f"{first['reason']}",
            file=sys.stderr,
        )
        return 1
    return 0


def reuse_line(name: str, n_cells: int, plan) -> str:
    """The one line saying how many cells are reused from the folder's cache and how many run."""
    line = (f"study {name}: {n_cells} cells - {plan.reused} reused from the cache, "
            f"{len(plan.to_run)} to run")  # fmt: skip
    if plan.unused:
        line += f"; {plan.unused} stored cell(s) not in this study kept unused in cells/"
    return line


def _clean_up(claim, staging) -> int:
    """After a failure or a stop: remove the unpublished tables, and the folder itself if
    this run created it and stored no cell; the number of this study's cells kept."""
    import contextlib
    import shutil

    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    if claim is None:
        return 0
    with contextlib.suppress(OSError):
        if claim.discard_if_empty():
            return 0
    return len(claim.store.keys())


def _write_tables(study, cells, rows, plan, store, work: Path, args, t0, claim, out) -> None:
    """The tables and figures of the study's current cells, read back from the store,
    into ``work`` (the staging folder); ``summary.json`` last, listing them all."""
    from tatonnet.results.provenance import versions, write_run_json

    seeds = sorted({c.seed for c in cells})
    options = {"workers": args.workers, "address": args.address, "progress": not args.quiet}
    write_run_json(work, "study", {"study": study.model_dump(), "options": options,
                                   "seeds": seeds, "cells": len(cells)}, claim.run_id)  # fmt: skip
    report.write_csv(rows, work / "verdicts.csv")
    seconds = sum(r.get("seconds", 0.0) for r in rows)
    footer = (
        f"Ran with `--workers {args.workers}` in {time.perf_counter() - t0:.0f} s "
        f"({len(plan.to_run)} cells run, {plan.reused} reused; {seconds:.0f} s of cell "
        "time); reasons and all columns: verdicts.csv."
    )
    report.write_markdown(study, rows, work / "verdicts.md", footer)

    def stored(selected):
        for row in selected:
            yield {"row": row, "trajectory": store.trajectory(row["_key"])}

    report.write_trajectories(stored(rows), work / "cells.parquet")
    report.write_timing(rows, work / "timing.csv")
    (work / "headline.md").write_text(report.headline_tables(rows) + "\n")
    for scenario in dict.fromkeys(r["scenario"] for r in rows):  # one scenario in memory
        figures.plot_figures(list(stored(r for r in rows if r["scenario"] == scenario)), work)
    for mode in dict.fromkeys(r["mode"] for r in rows):
        figures.plot_verdict_map(rows, work, mode)
    files = sorted({p.name for p in work.iterdir()} | {"summary.json"})
    write_summary(work, study, rows, {
        "seeds": seeds, **options, "wall_seconds": time.perf_counter() - t0,
        "cell_seconds": seconds, "versions": versions(), "run_id": claim.run_id,
        "out": str(out), "cells_run": len(plan.to_run), "cells_reused": plan.reused,
        "cells_stored_unused": plan.unused, "cell_store": "cells", "files": files,
    })  # fmt: skip


def _counts(values: list[str]) -> dict[str, int]:
    """How often each value occurs, in the order the values first appear."""
    return {v: values.count(v) for v in dict.fromkeys(values)}


def status_counts(rows: list[dict]) -> dict[str, int]:
    """Cells per status, in the order the statuses first appear."""
    return _counts([r["status"] for r in rows])


def verdict_counts(rows: list[dict]) -> dict[str, int]:
    """Tuned cells per verdict (``converges``, ``unconfirmed``, ``fails``...); {} if none."""
    return _counts([r["verdict"] for r in rows if r.get("verdict")])


def write_summary(work: Path, study, rows: list[dict], extra: dict) -> dict:
    """``summary.json`` of a study folder: the study, its cells per status and rule, where
    its tables are, and ``extra`` (seeds, options, timing, versions, run id)."""
    import json

    by_rule: dict[str, dict[str, int]] = {}
    for r in rows:
        counts = by_rule.setdefault(r["rule"], {})
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = {
        "kind": "study", "study": study.name, "description": study.description,
        "study_source": study.source, "cells": len(rows), "status_counts": status_counts(rows),
        "status_by_rule": by_rule, "verdict_counts": verdict_counts(rows),
        "scenarios": list(dict.fromkeys(r["scenario"] for r in rows)),
        "headline": "headline.md", "verdicts": "verdicts.csv", **extra,
    }  # fmt: skip
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    sys.exit(main())
