"""The report of ``ray_scale.py``: a one-line description of each result row, the strong and
weak scaling tables, and the Markdown page (``<out>.md``) written from the JSON report.
"""

from __future__ import annotations

from tatonnet.distributed import cluster

MIB = 2**20
OBJECT_STORE_MIB = cluster.OBJECT_STORE_BYTES // MIB


def mib(x) -> str:
    return "–" if not x else f"{x / MIB:,.0f}"


def describe(row: dict) -> str:
    ident = row.get("metrics_identical")
    ident = (
        "not compared" if ident is None else ("yes" if ident and row["prices_identical"] else "NO")
    )
    workers = "/".join(mib(w["hwm"]) for w in row["workers_mem"]) or "–"
    return (
        f"{row['config']:>10}  N={row['n_agents']:>9,}  wall {row['wall_s']:8.3f} s  "
        f"{row['rounds_per_s']:7.2f} rounds/s  {row['agent_rounds_per_s'] / 1e6:8.2f} M agent-rounds/s  "
        f"setup {row['setup_s']:6.2f} s  driver HWM {mib(row['driver_hwm'])} MiB  "
        f"workers HWM {workers} MiB  bit-identical: {ident}"
    )


def strong_table(rows: list[dict]) -> list[dict]:
    serial = next(r for r in rows if r["config"] == "inproc-1t")
    allc = next(r for r in rows if r["config"] == "inproc")
    out = []
    for r in rows:
        k = r["workers"] or (1 if r["config"] == "inproc-1t" else r["numba_threads"])
        rate = r["agent_rounds_per_s"]
        out.append({
            "config": r["config"], "n_agents": r["n_agents"], "cores": k,
            "agent_rounds_per_s": rate,
            "speedup_vs_inproc_1t": rate / serial["agent_rounds_per_s"],
            "efficiency": rate / (k * serial["agent_rounds_per_s"]),
            "vs_inproc_all_cores": rate / allc["agent_rounds_per_s"],
        })  # fmt: skip
    return out


def weak_table(rows: list[dict], n0: int) -> list[dict]:
    serial = next(r for r in rows if r["config"] == "inproc-1t" and r["n_agents"] == n0)
    out = []
    for r in rows:
        if r["kind"] != "ray":
            continue
        k = r["workers"]
        inproc = next(
            (x for x in rows if x["config"] == "inproc" and x["n_agents"] == r["n_agents"]), None
        )
        rate = r["agent_rounds_per_s"]
        out.append({
            "config": r["config"], "n_agents": r["n_agents"], "cores": k,
            "agent_rounds_per_s": rate,
            "efficiency": rate / (k * serial["agent_rounds_per_s"]),
            "inproc_all_cores_agent_rounds_per_s": inproc and inproc["agent_rounds_per_s"],
            "vs_inproc_all_cores": inproc and rate / inproc["agent_rounds_per_s"],
        })  # fmt: skip
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Ray-sharded engine vs in-process engine",
        "",
        f"- date (UTC): {report['date_utc']}  (run took {report['duration_s']:.0f} s)",
        f"- command: `{report['command']}`",
        f"- machine: {m['cpu_model']}, {m['usable_cores']} usable cores "
        f"({m['logical_cores']} logical), {m['memory_total_gib']} GiB; numba threads "
        f"{m['numba_threads']}; ray {m['versions']['ray']}, numba {m['versions']['numba']}, "
        f"numpy {m['versions']['numpy']}",
        f"- code: {report['code']['label'] or report['code']['root']}; git "
        f"{report['git']['commit'] or 'n/a (not a git checkout)'}"
        + (" (working tree modified)" if report["git"]["dirty"] else "")
        + f"; source fingerprint {report['code']['source_fingerprint']}, "
        + (
            "unchanged during the run, Ray workers import the same files as the driver"
            if report["code"]["consistent"]
            and (report["code"]["module_files"] or {}).get("same", True)
            else f"**CHANGED during the run** ({', '.join(report['code']['changed_during'])}): "
            "driver and workers may have run different code"
        ),
        f"- economy: {report['economy']['goods']} goods, CES sigma={report['economy']['sigma']}, "
        f"Dirichlet shares, uniform[0.5,1.5] endowments; {report['economy']['graph']}; "
        f"{report['economy']['rule']}, gradient tracking",
        f"- timing: {report['timing']}",
        f"- all final metrics and prices bit-identical to the in-process engine: "
        f"**{'yes' if report['all_bit_identical'] else 'NO'}**",
        "",
        "Graph construction (not part of any configuration's setup):",
        "",
        "| N | edges | generator | graph s | ordering | ordering s |",
        "| ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for n, c in report["cases"].items():
        lines.append(
            f"| {int(n):,} | {c['n_edges']:,} | {c['generator']} | {c['graph_seconds']:.1f} | "
            f"{c['ordering']} | {c['ordering_seconds']:.1f} |"
        )
    if report["ray_start_s"]:
        lines += ["", "Ray start (`cluster.connect(K)`): " + ", ".join(
            f"K={k}: {s:.1f} s" for k, s in report["ray_start_s"].items())]  # fmt: skip
    lines += [
        "",
        "| config | mode | N | rounds | wall s (median) | rounds/s | agent-rounds/s | "
        "median round ms | setup s | partition s | first round s | edge cut | "
        "boundary MiB/round | driver peak RSS MiB | worker peak RSS MiB (each) | "
        "worker peak PSS MiB (each, sampled) | bit-identical | CPU used by us / by others "
        "(cores, per repeat) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        "---: | ---: | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        ident = r.get("metrics_identical")
        ident = "not compared" if ident is None else (
            "yes" if ident and r["prices_identical"] else f"NO (max diff {r['metrics_max_abs_diff']:.3g})")  # fmt: skip
        walls = ", ".join(f"{w:.2f}" for w in r["wall_s_all"])
        load = ", ".join(
            ("?" if o is None else f"{o:.2f} / {x:.2f}") + (f" (try {a})" if a > 1 else "")
            for o, x, a in zip(r["own_cores"], r["other_cores"], r["attempts"], strict=True)
        )
        lines.append(
            f"| {r['config']} | {r.get('mode', 'default')} | {r['n_agents']:,} | "
            f"{r['rounds_timed']} | {r['wall_s']:.2f} ({walls}) | {r['rounds_per_s']:.2f} | "
            f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {1e3 * r['round_s_median']:.1f} | "
            f"{r['setup_s']:.2f} | "
            f"{'–' if r['partition_s'] is None else f'{r["partition_s"]:.2f}'} | "
            f"{r['first_round_s']:.2f} | "
            f"{'–' if r['edge_cut'] is None else f'{r["edge_cut"]:,}'} | "
            f"{'–' if r['bytes_per_round'] is None else f'{r["bytes_per_round"] / MIB:.2f}'} | "
            f"{mib(r['driver_hwm']) if r['kind'] != 'shards' else '–'} | "
            f"{' / '.join(mib(w['hwm']) for w in r['workers_mem']) or '–'} | "
            f"{' / '.join(mib(w['pss_sampled']) for w in r['workers_mem']) or '–'} | {ident} | "
            f"{load} |"
        )
    lines += [
        "",
        "`inproc`: NetworkTatonnement on all numba threads; `inproc-1t`: one thread; "
        "`ray-K`: ShardEngine on K Ray actors (one numba thread each); `shards-K`: "
        "ShardEngine(use_ray=False), K one-thread shards run one after another in the "
        "driver (a diagnostic: its wall time is the sum over shards). Driver peak RSS is "
        "VmHWM after resetting it before each configuration (so it includes the graph "
        "and economy the driver holds); worker peak RSS is each actor's VmHWM; PSS counts "
        "object-store pages shared between processes once. CPU used by others: busy "
        "time of the whole machine (/proc/stat) minus this process tree's, during the "
        "timed rounds; well above 0 means another job shared the cores and the timing "
        "is not clean.",
    ]
    ray_rows = [r for r in report["results"] if r["kind"] == "ray" and r["ray_system"]]
    if ray_rows:
        lines += [
            "",
            "Ray system processes at the end of each Ray configuration (RSS / peak) and the "
            f"object store ({report.get('object_store_mib', OBJECT_STORE_MIB)} MiB, "
            "`--object-store-mib`):",
            "",
        ]
        for r in ray_rows:
            procs = ", ".join(
                f"{p['name']} {mib(p.get('VmRSS'))} / {mib(p.get('VmHWM'))} MiB"
                for p in r["ray_system"]
            )
            stores = r.get("object_store") or []
            last = stores[-1] if stores else None
            if last and "error" not in last:
                procs += (
                    f"; object store after the timed rounds: {last['plasma_mib']} MiB in use, "
                    f"{last['spilled_mib']} MiB spilled to disk so far"
                )
            lines.append(f"- {r['config']} (N={r['n_agents']:,}): {procs}")
    shards = [r for r in report["results"] if r["kind"] == "shards"]
    if shards:
        lines += [
            "",
            "Where a round's time goes (medians per round, then the median over repeats; shard "
            "times from `shards-K`; Ray overhead = Ray round - slowest shard's "
            "receive+step+outgoing):",
            "",
            "| K | Ray round ms | slowest shard ms | per shard: receive / step / outgoing ms | "
            "own / ghost rows | Ray overhead ms | in-process 1-thread round ms |",
            "| ---: | ---: | ---: | --- | --- | ---: | ---: |",
        ]
        serial = next((r for r in report["results"] if r["config"] == "inproc-1t"), None)
        for s in shards:
            ray = next((r for r in report["results"]
                        if r["kind"] == "ray" and r["workers"] == s["workers"]
                        and r["n_agents"] == s["n_agents"]), None)  # fmt: skip
            b = s["breakdown"]
            per = "; ".join(
                f"{1e3 * d['receive']:.1f} / {1e3 * d['step']:.1f} / {1e3 * d['outgoing']:.1f}"
                for d in b["per_shard_median_s"]
            )
            rows = "; ".join(
                f"{o:,} / {g:,}" for o, g in zip(b["own_rows"], b["ghost_rows"], strict=True)
            )
            ray_ms = None if ray is None else 1e3 * ray["round_s_median"]
            lines.append(
                f"| {s['workers']} | {'–' if ray_ms is None else f'{ray_ms:.1f}'} | "
                f"{1e3 * b['slowest_shard_s']:.1f} | {per} | {rows} | "
                f"{'–' if ray_ms is None else f'{ray_ms - 1e3 * b["slowest_shard_s"]:.1f}'} | "
                f"{'–' if serial is None else f'{1e3 * serial["round_s_median"]:.1f}'} |"
            )
    for mode, rows in report["scaling"].items():
        lines += ["", f"{mode.capitalize()} scaling (efficiency = rate / (cores x rate of "
                  "inproc-1t" + (" at N = per-worker size" if mode == "weak" else "") + ")):", ""]  # fmt: skip
        if mode == "strong":
            lines += [
                "| config | N | cores | agent-rounds/s | speedup vs inproc-1t | efficiency | "
                "vs inproc (all cores) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in rows:
                lines.append(
                    f"| {r['config']} | {r['n_agents']:,} | {r['cores']} | "
                    f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {r['speedup_vs_inproc_1t']:.2f} | "
                    f"{r['efficiency']:.0%} | {r['vs_inproc_all_cores']:.2f} |"
                )
        else:
            lines += [
                "| config | N | workers | agent-rounds/s | efficiency | inproc (all cores) "
                "agent-rounds/s at same N | ray / inproc |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for r in rows:
                inp = r["inproc_all_cores_agent_rounds_per_s"]
                lines.append(
                    f"| {r['config']} | {r['n_agents']:,} | {r['cores']} | "
                    f"{r['agent_rounds_per_s'] / 1e6:.2f} M | {r['efficiency']:.0%} | "
                    f"{'–' if inp is None else f'{inp / 1e6:.2f} M'} | "
                    f"{'–' if inp is None else f'{r["vs_inproc_all_cores"]:.2f}'} |"
                )
    return "\n".join(lines) + "\n"
