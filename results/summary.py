"""The few lines ``tatonnet`` prints about a finished run, from its ``summary.json`` dict."""

from __future__ import annotations

import numpy as np


def format_summary(summary: dict) -> str:
    """A short human-readable summary of a run (several lines)."""
    s = summary
    fmt = lambda v: np.array2string(np.asarray(v), precision=6, separator=", ")  # noqa: E731
    lines = [
        f"tatonnet: {s['scenario']} - {s['n_agents']} agents, {s['n_goods']} goods, "
        f"{s['graph']} network, rule {s['rule']} (step {s['step_size']:g}, {s['signal']})",
        f"status:   {s['status']} after {s['rounds']} rounds - {s['reason']}",
        f"prices:   {fmt(s['prices'])}  (network mean, {s['goods'][s['numeraire']]} = 1)",
    ]
    if s["reference_prices"]:
        k = s["nearest_reference"]
        lines.append(
            f"equilibrium: {fmt(s['reference_prices'][k])}  distance "
            f"{s['distance_to_reference']:.3g} ({len(s['reference_prices'])} found, "
            f"{s['reference_method']})"
        )
        stab = (s.get("reference_stability") or [None] * (k + 1))[k]
        if stab is not None:
            lines.append(
                "             locally "
                + (
                    f"stable under {stab['space']}-space tatonnement (steps < "
                    f"{stab['max_stable_step']:.3g})"
                    if stab["stable"]
                    else f"unstable under {stab['space']}-space tatonnement"
                )
            )
    elif s["reference_prices"] is not None:
        lines.append(f"equilibrium: none found ({s['reference_method']})")
    engine = f"{s['engine']} ({s.get('engine_reason') or '--workers ' + str(s['workers'])})"
    if s["edge_cut"] is not None and s["workers"] >= 2:
        engine += f", edge cut {s['edge_cut']}, {s['boundary_bytes_per_round']} B/round exchanged"
    if s["worker_recoveries"]:
        engine += f", recovered from {s['worker_recoveries']} lost worker(s)"
    lines.append(f"engine:   {engine}")
    speed = s["agent_rounds_per_second"]
    parts = ""
    if s.get("setup_seconds") is not None:
        parts = f" (set-up {s['setup_seconds']:.2f} s, rounds {s['round_seconds']:.2f} s)"
    lines.append(
        f"speed:    {speed:.3g} agent-rounds/s, wall {s['wall_seconds']:.2f} s{parts}"
        if speed
        else f"wall:     {s['wall_seconds']:.2f} s{parts}"
    )
    return "\n".join(lines)
