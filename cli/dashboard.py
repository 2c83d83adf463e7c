"""``tatonnet dashboard``: start the live dashboard (a Solara server) and print its URL.

tatonnet dashboard                           # http://127.0.0.1:8765/
tatonnet dashboard --scenario scarf --graph central --port 9000
tatonnet dashboard --agents 10000            # draws 2,000 of them (--max-drawn)

Equivalent by hand: ``TATONNET_DASHBOARD='{"agents": 500}' solara run tatonnet.dashboard.page``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys

from tatonnet.cli.parsing import EXIT_USAGE, OneLineParser, positive_int
from tatonnet.environment.scenario import SCENARIO_ERRORS

USER_ERRORS = (*SCENARIO_ERRORS, ValueError)


def port_number(text: str) -> int:
    """A TCP port, 1..65535 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="tatonnet dashboard",
        description="Live dashboard (Mesa SolaraViz): the network coloured by price deviation, "
        "excess demand and dispersion per round, step / play / reset and scenario controls.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8765, help="port (default 8765)")
    p.add_argument("--scenario", default="default", help="built-in scenario or TOML file")
    p.add_argument("--agents", type=positive_int, default=1000, help="agents (default 1000)")
    p.add_argument("--graph", help="network kind (overrides the scenario)")
    p.add_argument("--rule", help="price-update rule")
    p.add_argument("--step-size", type=float, help="step size of the rule")
    p.add_argument("--signal", choices=("tracking", "local"))
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--max-drawn", type=positive_int, default=2000,
        help="draw all agents up to this many, else a breadth-first sample of this size",
    )  # fmt: skip
    return p


def check_options(args) -> dict:
    """Validate the starting options by building the scenario; the page's JSON config."""
    from tatonnet.environment.scenario import load_scenario

    scenario = load_scenario(args.scenario).with_overrides(
        agents=args.agents, graph=args.graph, rule=args.rule, step_size=args.step_size,
        signal=args.signal, seed=args.seed,
    )  # fmt: skip
    scenario.dynamics.make_rule()
    return {
        "market": args.scenario, "agents": args.agents, "graph": args.graph,
        "rule": args.rule, "step_size": args.step_size, "signal": args.signal,
        "seed": args.seed, "max_drawn": args.max_drawn,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``tatonnet dashboard``; SIGINT/SIGTERM stop the server too (one line, 130/143)."""
    from tatonnet.cli import signals

    return signals.guarded("tatonnet dashboard", _main, argv, nothing="the server had not started")


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = check_options(args)
    except USER_ERRORS as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with socket.socket() as s:
            s.bind((args.host, args.port))
    except (OSError, ValueError, TypeError) as exc:  # TypeError: a NUL byte in --host
        reason = getattr(exc, "strerror", None) or str(exc)
        host = args.host if args.host.isprintable() else repr(args.host)
        print(f"{parser.prog}: error: cannot listen on {host}:{args.port}: {reason}",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    # No calls home: Solara's version check and usage telemetry are off.
    env = dict(os.environ, TATONNET_DASHBOARD=json.dumps(config))
    env.setdefault("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "False")
    cmd = [
        sys.executable, "-m", "solara", "run", "tatonnet.dashboard.page", "--host", args.host,
        "--port", str(args.port), "--production", "--no-open", "--no-check-version",
    ]  # fmt: skip
    print(f"tatonnet dashboard: http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    return serve(cmd, env, parser.prog)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM if this process dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve(cmd: list[str], env: dict, prog: str, grace: float = 10.0) -> int:
    """Run the server until it exits, or until SIGINT/SIGTERM reaches this process: then
    the same signal goes to the server's process group, which is waited for (SIGKILL
    after ``grace`` seconds); one line on stderr, exit 130/143."""
    from tatonnet.cli import signals

    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True,  # its own group: signals reach it from us
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )  # fmt: skip
    try:
        return proc.wait()
    except KeyboardInterrupt:
        sig = signals.received() or signal.SIGINT
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(f"{prog}: {signals.stopped()}; the server stopped", file=sys.stderr)
        return signals.exit_code()
    finally:
        if proc.poll() is None:  # any other exit from this function
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
