"""The vectorized engine against the per-agent Mesa model, on the same tâtonnement.

The economy and dynamics are the ``default`` scenario at every size: ``N`` agents, 5 goods,
CES utility with sigma = 2, Dirichlet(1) shares, endowments uniform on [0.5, 1.5] (seed
42), all initial prices 1, good 0 the numeraire; a Watts-Strogatz small world (k = 10,
p = 0.1); the entropic rule (step 0.05) with gradient tracking.

Two ways to run one round:

* **engine** — :meth:`tatonnet.environment.tatonnement.dynamics.NetworkTatonnement.step` with a ping-pong spare
  state, exactly as :meth:`tatonnet.environment.model.MarketModel.step` calls it (the fused numba
  kernel on all cores; round metrics included, Mesa's data collection not);
* **Mesa** — :meth:`tatonnet.environment.model.MarketModel.reference_step`: every Mesa agent's
  Python ``step()`` (plain Python and numpy per agent), then the model's metrics and data
  collection.

Up to ``--mesa-max`` agents (default 10^5) both run on one :class:`MarketModel` (the same
economy, graph and initial state), their repetitions interleaved so that background load
hits both alike; the ratio is taken within each size. Above it (10^6) the engine runs
alone, in a fresh subprocess (for a clean peak RSS), on a graph from the vectorized numpy
generator ``common.watts_strogatz_edges`` (networkx needs minutes and several GiB at 10^6;
drawn from stream ``()`` of seed 1: the distribution of
``networkx.connected_watts_strogatz_graph``, not its draws), then the same locality ordering
as :func:`tatonnet.environment.scenario.build_network_for`.
The engine row at the largest Mesa size is also measured on that generator's graph (JSON
``engine_numpy_graph``), to show the two graphs run alike.

Figures: agent-rounds per second (median of ``--repeats`` repetitions; each engine
repetition runs enough rounds for ``--seconds``), the engine's state bytes per agent (every
array it holds for the run, counted once: economy arrays, CSR, state and spare state,
optimizer buffers, inverse signal scales, partials), the subprocess's peak RSS per agent,
and the fraction of this machine's memory bandwidth the round uses at the largest size:
``bytes per agent-round x agent-rounds/s / copy bandwidth``, where the copy bandwidth is the
median over numpy copies of a 512 MiB array (bytes read + written per second, one thread),
and bytes per agent-round are the arrays a round must read and write once (see
:func:`bytes_per_agent_round`).

Usage::

    .venv/bin/python benchmarks/engine_vs_mesa.py                  # the full run (~3 min)
    .venv/bin/python benchmarks/engine_vs_mesa.py --quick          # smoke run (< 30 s)
    .venv/bin/python benchmarks/engine_vs_mesa.py --sizes 1e3,1e5 --repeats 7

Writes ``benchmarks/results/engine_vs_mesa.md`` and ``.json`` (not under ``--quick``,
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
from common import (
    calibrate,
    cpu_model,
    load_average,
    memory_total_bytes,
    numba_threading_layer,
    ordered_small_world,
    summary,
    write_report,
)

from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.scenario import build_economy, initial_prices, load_scenario
from tatonnet.environment.tatonnement import kernel

SCENARIO = "default"
K_DEGREE, P_REWIRE = 10, 0.1
GRAPH_STREAM = ()  # the graph's draws: SeedSequence(seed, spawn_key=(attempt,))
HERE = Path(__file__).resolve().parent


# ---- the graph at 10^6 -----------------------------------------------------------------


def numpy_small_world(n: int, seed: int):
    network, _ = ordered_small_world(n, K_DEGREE, P_REWIRE, seed, "numpy", stream=GRAPH_STREAM)
    return network


# ---- measuring ----------------------------------------------------------------------------


def engine_runner(dyn, state):
    """A function ``run(rounds) -> seconds`` stepping the engine as MarketModel.step does."""
    current = {"state": state, "spare": None}

    def run(rounds: int) -> float:
        state, spare = current["state"], current["spare"]
        t0 = time.perf_counter()
        for _ in range(rounds):
            new, _metrics = dyn.step(state, spare)
            spare, state = state, new
        seconds = time.perf_counter() - t0
        current["state"], current["spare"] = state, spare
        return seconds

    return run


def engine_arrays(dyn, state, spare, partials) -> list[np.ndarray]:
    net, economy = dyn.network, dyn.economy
    arrays = [*dyn._arrays, economy.endowments, economy.shares, economy.family, economy.sigma]
    arrays += [net.indptr, net.indices, net.mixing, dyn.inv_scale, dyn.supply, dyn._params]
    arrays += [state.coords, state.tracker, state.excess, state.buffers]
    arrays += [spare.coords, spare.tracker, spare.excess, partials]
    return arrays


def state_bytes(arrays: list[np.ndarray]) -> int:
    """Bytes of distinct array buffers (an array and its views or aliases count once)."""
    seen, total = set(), 0
    for a in arrays:
        base = a
        while isinstance(base.base, np.ndarray):
            base = base.base
        key = (base.__array_interface__["data"][0], base.nbytes)
        if key not in seen:
            seen.add(key)
            total += base.nbytes
    return total


def bytes_per_agent_round(dyn) -> dict:
    """Bytes a round must move per agent, every array read or written once.

    Read: the agent's CSR row (``indptr`` 8 B, ``indices`` 4 B and ``mixing`` 8 B per
    neighbour, itself included), its coordinates, tracker and excess demand (each row is
    read once if neighbours' rows hit the caches), endowment, shares, family, sigma, inverse
    signal scale, optimizer buffers; written: new coordinates, tracker, excess demand and
    buffers. Extra traffic from cache misses on random neighbours and write-allocate reads
    of the outputs is not counted, so this is a lower bound.
    """
    n, g = dyn.economy.n_agents, dyn.economy.n_goods
    nnz = dyn.network.indices.size / n
    row = 8 * g
    b = dyn.rule.n_buffers * row
    read = 8 + 12 * nnz + 3 * row + 2 * row + 1 + 8 + row + b
    write = 3 * row + b
    return {"read": read, "write": write, "total": read + write, "neighbours_per_row": nnz}


def copy_bandwidth(mib: int = 512, repeats: int = 7) -> dict:
    """Median memory copy bandwidth of ``np.copyto`` on a ``mib`` MiB array (read + write)."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    rates = [2 * src.nbytes / t for t in times]
    return {"array_mib": mib, "repeats": repeats, "bytes_per_s": float(np.median(rates)),
            "min": float(min(rates)), "max": float(max(rates))}  # fmt: skip


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- one size -----------------------------------------------------------------------------


def measure_with_mesa(n: int, repeats: int, seconds: float, mesa_seconds: float) -> dict:
    """Engine and Mesa on one MarketModel of ``n`` agents, repetitions interleaved."""
    from tatonnet.environment.model import MarketModel

    t0 = time.perf_counter()
    model = MarketModel(SCENARIO, agents=n)
    build = time.perf_counter() - t0
    dyn = model.dynamics
    engine = engine_runner(dyn, model.dynamics.init_state(initial_prices(model.config)))
    rounds = calibrate(engine, seconds)
    # Mesa: rounds per repetition for about mesa_seconds (at least one round)
    t0 = time.perf_counter()
    model.reference_step()
    per_round = time.perf_counter() - t0
    mesa_rounds = max(1, int(round(mesa_seconds / per_round)))
    engine_rates, mesa_rates = [], []
    for _ in range(repeats):
        engine_rates.append(n * rounds / engine(rounds))
        t0 = time.perf_counter()
        for _ in range(mesa_rounds):
            model.reference_step()
        mesa_rates.append(n * mesa_rounds / (time.perf_counter() - t0))
    ratios = [e / m for e, m in zip(engine_rates, mesa_rates, strict=True)]
    spare = model.dynamics.init_state(initial_prices(model.config))
    partials = np.empty((dyn.n_blocks, kernel.N_PARTIALS, dyn.economy.n_goods))
    arrays = engine_arrays(dyn, model.state, spare, partials)
    return {
        "agents": n,
        "graph": f"networkx connected_watts_strogatz + {model.config.network.order} order "
        "(MarketModel's own)",
        "build_s": build,
        "engine": {"rounds_per_repeat": rounds, **summary(engine_rates)},
        "mesa": {"rounds_per_repeat": mesa_rounds, **summary(mesa_rates)},
        "ratio": {
            "median_of_ratios": float(np.median(ratios)),
            "ratio_of_medians": float(np.median(engine_rates) / np.median(mesa_rates)),
            "all": [float(r) for r in ratios],
        },  # fmt: skip
        "state_bytes_per_agent": state_bytes(arrays) / n,
        "bytes_per_agent_round": bytes_per_agent_round(dyn),
    }


def measure_engine_only(n: int, repeats: int, seconds: float, seed: int = 1) -> dict:
    """The engine alone on the numpy-generated small world (run in a fresh process)."""
    rss_start = rss_bytes()
    t0 = time.perf_counter()
    scenario = load_scenario(SCENARIO).with_overrides(agents=n)
    economy, _ = build_economy(scenario)
    network = numpy_small_world(n, seed)
    rule = scenario.dynamics.make_rule()
    dyn = make_dynamics(economy, network, rule, scenario.dynamics.signal)
    state = dyn.init_state(initial_prices(scenario))
    build = time.perf_counter() - t0
    rss_setup = rss_bytes()
    engine = engine_runner(dyn, state)
    rounds = calibrate(engine, seconds)
    rates = [n * rounds / engine(rounds) for _ in range(repeats)]
    rss_end = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    spare = dyn.init_state(initial_prices(scenario))
    partials = np.empty((dyn.n_blocks, kernel.N_PARTIALS, economy.n_goods))
    arrays = engine_arrays(dyn, state, spare, partials)
    return {
        "agents": n,
        "graph": "numpy Watts-Strogatz (this script) + locality order",
        "build_s": build,
        "engine": {"rounds_per_repeat": rounds, **summary(rates)},
        "state_bytes_per_agent": state_bytes(arrays) / n,
        "bytes_per_agent_round": bytes_per_agent_round(dyn),
        "rss": {
            "at_start_bytes": rss_start,
            "after_setup_bytes": rss_setup,
            "after_run_bytes": rss_end,
            "peak_bytes": peak,
            "peak_per_agent": peak / n,
            "peak_minus_start_per_agent": (peak - rss_start) / n,
            "after_run_minus_start_per_agent": (rss_end - rss_start) / n,
        },
    }


def engine_only_in_subprocess(n: int, repeats: int, seconds: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n),
           "--repeats", str(repeats), "--seconds", str(seconds)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- report -------------------------------------------------------------------------------


def machine() -> dict:
    return {
        "cpu": cpu_model(detail=True),
        "logical_cpus": os.cpu_count(),
        "memory_bytes": memory_total_bytes(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": numba_threading_layer(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "platform": platform.platform(),
    }


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Engine vs per-agent Mesa model",
        "",
        f"Command: `{result['command']}`  ",
        f"Date: {result['date']}  ",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
        f"{(m['memory_bytes'] or 0) / 2**30:.0f} GiB; numba {m['numba']} on "
        f"{m['numba_threads']} threads ({m['numba_threading_layer']} layer), numpy "
        f"{m['numpy']}, Python {m['python']}  ",
        f"Load average before / after: {result['load_before']} / {result['load_after']}",
        "",
        "Scenario `default`: CES sigma = 2, 5 goods, Dirichlet shares, endowments U[0.5, 1.5], "
        "Watts-Strogatz k = 10, p = 0.1, entropic rule (step 0.05), gradient tracking. "
        f"Medians of {result['repeats']} repetitions; engine repetitions of about "
        f"{result['seconds']} s.",
        "",
        "| agents | engine agent-rounds/s | Mesa agent-rounds/s | ratio | engine state B/agent "
        "| peak RSS B/agent |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["sizes"]:
        mesa = row.get("mesa")
        ratio = row.get("ratio")
        rss = row.get("rss")
        lines.append(
            f"| {row['agents']:,} | {fmt_rate(row['engine']['median'])} "
            f"| {fmt_rate(mesa['median']) if mesa else '—'} "
            f"| {f'{ratio["median_of_ratios"]:.0f}x' if ratio else '—'} "
            f"| {row['state_bytes_per_agent']:.0f} "
            f"| {f'{rss["peak_per_agent"]:.0f}' if rss else '—'} |"
        )
    lines.append("")
    bw = result.get("bandwidth")
    if bw:
        lines += [
            f"Memory copy bandwidth (numpy copy of {bw['copy']['array_mib']} MiB, one thread, "
            f"read + write): {bw['copy']['bytes_per_s'] / 1e9:.1f} GB/s.  ",
            f"At {bw['agents']:,} agents a round moves at least "
            f"{bw['bytes_per_agent_round']:.0f} B per agent "
            f"({bw['neighbours_per_row']:.1f} CSR entries per row): "
            f"{bw['bytes_per_s'] / 1e9:.2f} GB/s = **{100 * bw['fraction']:.0f}%** of the copy "
            "bandwidth.",
            "",
        ]
    for row in result["sizes"]:
        if row.get("rss"):
            r = row["rss"]
            lines += [
                f"RSS at {row['agents']:,} agents (fresh process): {r['at_start_bytes'] / 2**20:.0f} "
                f"MiB after imports, {r['after_setup_bytes'] / 2**20:.0f} MiB after setup, "
                f"{r['after_run_bytes'] / 2**20:.0f} MiB after the run, peak "
                f"{r['peak_bytes'] / 2**20:.0f} MiB (graph construction); "
                f"(after run - after imports) / agent = "
                f"{r['after_run_minus_start_per_agent']:.0f} B.",
                "",
            ]
    extra = result.get("engine_numpy_graph")
    if extra:
        lines += [
            f"Engine at {extra['agents']:,} agents on this script's numpy small world: "
            f"{fmt_rate(extra['engine']['median'])} agent-rounds/s (MarketModel's graph: see "
            "table).",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes", default=None, help="agents, comma-separated (default 1e3,1e4,1e5,1e6)"
    )
    ap.add_argument("--mesa-max", type=float, default=1e5, help="largest size Mesa runs (1e5)")
    ap.add_argument("--repeats", type=int, default=None, help="repetitions (default 5)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per engine repetition (1)")
    ap.add_argument("--mesa-seconds", type=float, default=None,
                    help="seconds per Mesa repetition, at least one round (default 2)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="smoke run (< 30 s)")
    ap.add_argument("--out", default=None, help="results path without suffix")
    ap.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child is not None:  # the engine-only measurement in a fresh process
        result = measure_engine_only(int(args.child), args.repeats, args.seconds)
        print(json.dumps(result))
        return 0

    quick = args.quick
    sizes = [int(float(s)) for s in (args.sizes or ("1e3,1e4" if quick else "1e3,1e4,1e5,1e6")).split(",")]  # fmt: skip
    repeats = args.repeats or (2 if quick else 5)
    seconds = args.seconds or (0.2 if quick else 1.0)
    mesa_seconds = args.mesa_seconds or (0.2 if quick else 2.0)
    out = args.out or (None if quick else str(HERE / "results" / "engine_vs_mesa"))

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_average(),
        "repeats": repeats,
        "seconds": seconds,
        "sizes": [],
    }
    print(f"machine: {result['machine']['cpu']}, {result['machine']['logical_cpus']} CPUs; "
          f"load {result['load_before']}", flush=True)  # fmt: skip
    for n in sizes:
        if n <= args.mesa_max:
            row = measure_with_mesa(n, repeats, seconds, mesa_seconds)
        else:
            row = engine_only_in_subprocess(n, repeats, seconds)
        result["sizes"].append(row)
        mesa = row.get("mesa")
        print(f"{n:>9,} agents: engine {fmt_rate(row['engine']['median'])} agent-rounds/s"
              + (f", Mesa {fmt_rate(mesa['median'])}, ratio {row['ratio']['median_of_ratios']:.0f}x"
                 if mesa else "")
              + f", state {row['state_bytes_per_agent']:.0f} B/agent", flush=True)  # fmt: skip
    with_mesa = [r for r in result["sizes"] if "mesa" in r]
    if not quick and with_mesa:
        n = with_mesa[-1]["agents"]
        result["engine_numpy_graph"] = engine_only_in_subprocess(n, repeats, seconds)
        print(f"{n:>9,} agents on the numpy graph: engine "
              f"{fmt_rate(result['engine_numpy_graph']['engine']['median'])}", flush=True)  # fmt: skip
    largest = result["sizes"][-1]
    copy = copy_bandwidth(64 if quick else 512, 3 if quick else 7)
    moved = largest["bytes_per_agent_round"]["total"] * largest["engine"]["median"]
    result["bandwidth"] = {
        "agents": largest["agents"],
        "copy": copy,
        "bytes_per_agent_round": largest["bytes_per_agent_round"]["total"],
        "neighbours_per_row": largest["bytes_per_agent_round"]["neighbours_per_row"],
        "bytes_per_s": moved,
        "fraction": moved / copy["bytes_per_s"],
    }
    result["load_after"] = load_average()
    text = markdown(result)
    print()
    print(text)
    if out:
        write_report(out + ".json", result, out + ".md", text + "\n")
        print(f"wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
