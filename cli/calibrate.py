"""``tatonnet calibrate DATA``: estimate the agents' CES shares and sigma from data.

tatonnet calibrate --example obs.parquet                 # example data from a known scenario
tatonnet calibrate obs.parquet --out runs/cal            # fit demand per agent, random baseline
tatonnet calibrate obs.parquet --per group --baseline optuna --regularize 0.01
tatonnet calibrate --example path.parquet --mode path --scenario cobb-douglas --agents 40
tatonnet calibrate path.parquet --mode path --scenario cobb-douglas --agents 40

Mode ``demand`` fits observed bundles (:mod:`tatonnet.environment.calibration.demand_fit`);
mode ``path`` fits an observed tâtonnement price path of a run whose structure a scenario
gives (:mod:`tatonnet.environment.calibration.path_fit`). The data format and the method:
docs/11-calibration.md. The result folder: :mod:`tatonnet.results.calibration_folder`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tatonnet.cli.parsing import EXIT_USAGE, OneLineParser, non_negative_int, positive_int


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="tatonnet calibrate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Estimate CES utility parameters (shares, sigma) per agent or group from\n"
            "observed prices and bundles (--mode demand) or from an observed tatonnement\n"
            "price path (--mode path, with --scenario for the run's structure). Writes a\n"
            "result folder: summary.json, parameters.csv/.parquet, fit.png/.pdf, run.json."
        ),
        epilog=(
            "DATA (Parquet or CSV, long format; docs/11-calibration.md):\n"
            "  demand: market, agent and/or group, good, price, quantity (or net_trade\n"
            "          with endowment), optional endowment\n"
            "  path:   round, good, price (the network-mean price per round)\n"
            "Exit status: 0 done, 2 invalid input (one line on stderr, no folder written)."
        ),
    )
    p.add_argument("data", nargs="?", metavar="DATA", help="the observations (.parquet or .csv)")
    p.add_argument("--example", type=Path, metavar="OUT",
                   help="write example data (.parquet or .csv) drawn from --scenario, then stop")  # fmt: skip
    p.add_argument("--mode", choices=("demand", "path"), default="demand",
                   help="fit observed bundles (demand, default) or a price path (path)")  # fmt: skip
    p.add_argument("--per", choices=("agent", "group"),
                   help="one parameter set per agent (demand default) or per group (path: always)")  # fmt: skip
    p.add_argument("--regularize", type=non_negative_float, default=0.0, metavar="X",
                   help="ridge strength towards equal shares and sigma = 1 (default 0)")  # fmt: skip
    p.add_argument("--baseline", choices=("random", "optuna", "none"), default="random",
                   help="black-box baseline on the same budget (default random)")  # fmt: skip
    p.add_argument("--budget", type=positive_int, metavar="N",
                   help="evaluations per unit (demand) or dynamics runs (path) for both the fit "
                   "(a cap) and the baseline (exactly); default: the baseline gets what the "
                   "fit used")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed (baseline, example)")
    p.add_argument("--scenario", metavar="NAME|FILE",
                   help="mode path: the run's structure (endowments, network, rule, step, "
                   "initial prices); --example: the economy to draw from (ces-substitutes)")  # fmt: skip
    p.add_argument("--agents", type=positive_int, metavar="N",
                   help="override the scenario's agent count (default 12 for --example)")  # fmt: skip
    p.add_argument("--markets", type=positive_int, default=8, metavar="M",
                   help="--example demand: observations per agent (default 8)")  # fmt: skip
    p.add_argument("--rounds", type=positive_int, default=40, metavar="R",
                   help="--example path: rounds of the path (default 40)")  # fmt: skip
    p.add_argument("--noise", type=non_negative_float, default=0.01, metavar="S",
                   help="--example: log-noise of the bundles or prices (default 0.01)")  # fmt: skip
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="result folder (default: runs/calibrate-<UTC time>)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace --out if it is tatonnet's")
    return p


def main(argv: list[str] | None = None) -> int:
    """``tatonnet calibrate``; SIGINT/SIGTERM stop it cleanly (:mod:`tatonnet.cli.signals`)."""
    from tatonnet.cli import signals

    return signals.guarded("tatonnet calibrate", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    from tatonnet.cli import signals
    from tatonnet.environment.calibration.observations import CalibrationError
    from tatonnet.environment.scenario import SCENARIO_ERRORS
    from tatonnet.results.output import OutputError, claim_new, default_out_dir

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    errors = (CalibrationError, OutputError, *SCENARIO_ERRORS)
    claim = None
    try:
        if args.example is not None:
            if args.data is not None:
                raise CalibrationError("give DATA or --example OUT, not both")
            path = write_example(args)
            print(f"wrote {path}")
            return 0
        if args.data is None:
            raise CalibrationError("DATA: give a data file (or --example OUT to make one)")
        t0 = time.perf_counter()
        job = prepare(args)  # every check on the input, before any folder exists
        out = args.out or default_out_dir(f"calibrate-{args.mode}")
        claim = claim_new(out, "calibrate", args.force)
        summary = job.run(args, claim, out, t0)
        signals.defer()
        claim.publish()
    except errors as exc:
        if claim is not None:
            claim.discard()
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException:
        if claim is not None:
            claim.discard()
        raise
    finally:
        if claim is not None:
            claim.release()
    print(format_summary(summary))
    print(f"results:  {out}")
    return 0


# ---- the example data ---------------------------------------------------------------
def _scenario(args, default: str):
    from tatonnet.environment.scenario import load_scenario

    scenario = load_scenario(args.scenario or default)
    return scenario.with_overrides(agents=args.agents) if args.agents else scenario


def _group_labels(scenario, group: np.ndarray) -> np.ndarray:
    names = [spec.name or str(k) for k, spec in enumerate(scenario.agents)]
    return np.asarray(names, dtype=object)[group]


def write_example(args) -> Path:
    """Draw example data from a known scenario into ``args.example``; the path."""
    from tatonnet.agents.utility import Family
    from tatonnet.environment.calibration.observations import CalibrationError
    from tatonnet.environment.calibration.synthetic import demand_table
    from tatonnet.environment.scenario import build_economy

    out = Path(args.example)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise CalibrationError("--example: expected a .parquet or .csv file name")
    if out.exists() and not args.force:
        raise CalibrationError(f"--example: {str(out)!r} exists (pass --force to replace it)")
    if not out.parent.is_dir():
        raise CalibrationError(f"--example: no folder {str(out.parent)!r}")
    if args.mode == "path":
        table = _path_example(args)
    else:
        if args.agents is None:
            args.agents = 12
        scenario = _scenario(args, "ces-substitutes")
        if scenario.fisher is not None:
            raise CalibrationError("--example: a Fisher scenario has no agent groups to draw")
        economy, group = build_economy(scenario)
        if not np.isin(economy.family, [Family.CES, Family.COBB_DOUGLAS]).all():
            raise CalibrationError(
                f"--example: scenario {scenario.name!r} has linear or Leontief agents; "
                "calibration fits CES (Cobb-Douglas is sigma = 1)"
            )
        table = demand_table(economy.shares, economy.sigma, economy.endowments, args.markets,
                             args.noise, args.seed, goods=economy.goods,
                             groups=_group_labels(scenario, group))  # fmt: skip
    tmp = out.with_name(f".{out.name}.partial")
    if out.suffix.lower() == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    tmp.replace(out)
    return out


def _path_setup(scenario):
    """The known structure of a scenario's run, with its groups as the units."""
    from tatonnet.environment.calibration.path_fit import PathSetup
    from tatonnet.environment.scenario import build_market

    economy, group, network, prices = build_market(scenario)
    units = tuple(str(x) for x in _group_labels(scenario, np.arange(len(scenario.agents))))
    return PathSetup(economy, np.asarray(group), units, network, scenario.dynamics.make_rule(),
                     scenario.dynamics.signal, prices)  # fmt: skip


def _path_example(args):
    """A price path of ``--scenario`` whose agents all carry their group's mean shares."""
    import pandas as pd

    from tatonnet.agents.utility import Family
    from tatonnet.environment.calibration.path_fit import simulate_path

    scenario = _scenario(args, "ces-substitutes")
    setup = _path_setup(scenario)
    e = setup.economy
    n_units = len(setup.units)
    shares = np.array([(e.shares[setup.group == u] / e.shares[setup.group == u].sum(
        axis=1, keepdims=True)).mean(axis=0) for u in range(n_units)])  # fmt: skip
    sigma = np.array([e.sigma[setup.group == u][0] if e.family[setup.group == u][0] == Family.CES
                      else 1.0 for u in range(n_units)])  # fmt: skip
    path = simulate_path(setup, shares, sigma, args.rounds)
    rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(1,)))
    noisy = path * np.exp(args.noise * rng.standard_normal(path.shape))
    noisy[:, e.numeraire] = 1.0
    noisy[0] = path[0]
    g = e.n_goods
    table = {"round": np.repeat(np.arange(args.rounds + 1), g),
             "good": np.tile(np.asarray(e.goods), args.rounds + 1), "price": noisy.ravel()}  # fmt: skip
    for u, label in enumerate(setup.units):
        table[f"true_share_{label}"] = np.tile(shares[u], args.rounds + 1)
        table[f"true_sigma_{label}"] = sigma[u]
    return pd.DataFrame(table)


# ---- the fit ----------------------------------------------------------------------------
class DemandJob:
    """Mode demand: observations read and checked; :meth:`run` fits and writes."""

    def __init__(self, args, table):
        from tatonnet.environment.calibration.observations import from_table
        from tatonnet.environment.calibration.synthetic import truth_from_table

        self.per = args.per or "agent"
        self.obs = from_table(table, self.per)
        self.truth = truth_from_table(table, self.obs.units, self.obs.goods, self.per)

    def run(self, args, claim, out, t0) -> dict:
        from tatonnet.environment.calibration.baseline import baseline_demand
        from tatonnet.environment.calibration.demand_fit import fit_demand, predict
        from tatonnet.results import calibration_folder as folder

        obs = self.obs
        fit = fit_demand(obs, args.regularize, args.budget)
        base = None
        if args.baseline != "none":
            budgets = args.budget or fit.evaluations
            base = baseline_demand(obs, budgets, args.baseline, args.seed, args.regularize)
        fits = {"least squares": obs.prices * predict(obs, fit) / obs.wealth[:, None]}
        if base is not None:
            fits[args.baseline] = obs.prices * predict(obs, base) / obs.wealth[:, None]
        summary = _summary(args, claim, out, fit, base, self.truth, t0,
                           {"observations": obs.n_obs, "units": obs.n_units})  # fmt: skip
        folder.write_calibration(
            claim.work,
            summary,
            folder.parameter_table(fit, base, self.truth),
            lambda path: folder.plot_demand_fit(path, obs.budget_shares, fits, obs.goods),
        )
        _write_run_json(args, claim)
        return summary


class PathJob:
    """Mode path: the scenario's structure and the observed path; :meth:`run` fits."""

    def __init__(self, args, table):
        from tatonnet.environment.calibration.observations import CalibrationError
        from tatonnet.environment.calibration.path_fit import path_from_table

        if args.per == "agent":
            raise CalibrationError("--mode path fits one parameter set per group (--per group)")
        if args.scenario is None:
            raise CalibrationError("--mode path needs --scenario (the run's structure)")
        scenario = _scenario(args, "ces-substitutes")
        if scenario.fisher is not None:
            raise CalibrationError("--mode path: a Fisher scenario is not supported")
        self.setup = _path_setup(scenario)
        self.observed = path_from_table(table, self.setup.economy.goods)
        self.truth = _path_truth(table, self.setup)

    def run(self, args, claim, out, t0) -> dict:
        from tatonnet.environment.calibration.path_fit import baseline_path, fit_path, simulate_path
        from tatonnet.results import calibration_folder as folder

        setup, observed = self.setup, self.observed
        rounds = observed.shape[0] - 1
        fit = fit_path(setup, observed, args.regularize, args.budget)
        base = None
        if args.baseline != "none":
            budget = args.budget or fit.total_evaluations
            base = baseline_path(setup, observed, budget, args.baseline, args.seed,
                                 args.regularize)  # fmt: skip
        fits = {"least squares": simulate_path(setup, fit.shares, fit.sigma, rounds)}
        if base is not None:
            fits[args.baseline] = simulate_path(setup, base.shares, base.sigma, rounds)
        summary = _summary(args, claim, out, fit, base, self.truth, t0,
                           {"rounds": rounds, "units": len(setup.units),
                            "agents": setup.economy.n_agents})  # fmt: skip
        folder.write_calibration(
            claim.work,
            summary,
            folder.parameter_table(fit, base, self.truth),
            lambda path: folder.plot_path_fit(path, observed, fits, setup.economy.goods),
        )
        _write_run_json(args, claim)
        return summary


def _path_truth(table, setup):
    cols = [f"true_share_{u}" for u in setup.units] + [f"true_sigma_{u}" for u in setup.units]
    if not set(cols) <= set(table.columns):
        return None
    first = table[table["round"] == 0].set_index(table["good"].astype(str)[table["round"] == 0])
    goods = list(setup.economy.goods)
    shares = np.array(
        [first[f"true_share_{u}"].reindex(goods).to_numpy(float) for u in setup.units]
    )
    sigma = np.array([float(first[f"true_sigma_{u}"].iloc[0]) for u in setup.units])
    return (shares, sigma) if np.isfinite(shares).all() else None


def prepare(args):
    """Read DATA and check it against the mode (CalibrationError: one line)."""
    from tatonnet.environment.calibration.observations import read_table

    table = read_table(args.data)
    return PathJob(args, table) if args.mode == "path" else DemandJob(args, table)


def _summary(args, claim, out, fit, base, truth, t0, extra: dict) -> dict:
    from tatonnet.results.calibration_folder import method_summary

    return {
        "kind": "calibrate", "mode": args.mode, "data": str(args.data),
        "per": "group" if args.mode == "path" else (args.per or "agent"),
        "goods": list(fit.goods), **extra, "regularize": args.regularize,
        "budget": args.budget, "seed": args.seed,
        "fit": method_summary(fit, truth),
        "baseline": method_summary(base, truth) if base is not None else None,
        "seconds": round(time.perf_counter() - t0, 3), "run_id": claim.run_id, "out": str(out),
    }  # fmt: skip


def _write_run_json(args, claim) -> None:
    from tatonnet.results.provenance import write_run_json

    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("example", "force")}  # fmt: skip
    write_run_json(claim.work, "calibrate", {"options": options, "seed": args.seed}, claim.run_id)


def format_summary(summary: dict) -> str:
    """The lines printed after a calibration: one per method, then what is not identified."""
    lines = [f"calibrate: mode {summary['mode']}, per {summary['per']}, "
             f"{summary['units']} unit(s), goods {', '.join(summary['goods'])}"]  # fmt: skip
    for key in ("fit", "baseline"):
        m = summary[key]
        if m is None:
            continue
        err = m.get("errors")
        tail = (f", max share error {err['share']:.2e}, max sigma error {err['sigma']:.2e}"
                if err else "")  # fmt: skip
        lines.append(f"{key + ':':10s}{m['method']}: objective {m['objective']:.3e}, "
                     f"{m['evaluations']} evaluations{tail}")  # fmt: skip
    flagged = summary["fit"]["not_identified"]
    if flagged:
        lines.append(f"not identified: {len(flagged)} unit(s), e.g. {next(iter(flagged))}: "
                     f"{'; '.join(next(iter(flagged.values())))}")  # fmt: skip
    else:
        lines.append("identified: every parameter (no flat direction, every good bought)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
