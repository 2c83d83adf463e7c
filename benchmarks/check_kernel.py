"""Check the fused kernel against the per-agent reference path (every Mesa agent's ``step``).

Two copies of a scenario (300 agents) run 20 rounds: one with :meth:`MarketModel.step`
(the fused numba kernel), one with :meth:`MarketModel.reference_step` (plain Python and
numpy per agent); their states must agree to 1e-12 after every round. Cases: the
``default`` scenario under every kernel rule (not extragradient, Newton) and both
signals, plus a momentum rule with an optimizer buffer (defined here, to exercise the
kernel's buffer path); entropic with 2, 9, 12 and 17 goods (one or several mixing passes); every kernel rule that steps
in both geometries, in its other one with a warmed-up cosine schedule and a clipped or
normalized signal; the other built-in scenarios (Cobb-Douglas, Leontief, ...) as they
are. Last, the kernel must give the same bits on 1 thread and on all threads, with 2.5
blocks of agents.

Run::

    .venv/bin/python benchmarks/check_kernel.py

Exit status 0 when every check passes; one line per case.
"""

from __future__ import annotations

import dataclasses
import sys

import numba
import numpy as np

from tatonnet.agents.rules import RULES, PriceRule, register, rule_kernel
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import ScenarioError, builtin_names, load_scenario
from tatonnet.environment.tatonnement import kernel

ROUNDS = 20
AGENTS = 300


@rule_kernel
def _heavy_ball(u, signal, buffers, params):
    """Momentum: ``m <- beta m + signal``, ``u += step m`` (one buffer row)."""
    step, beta = params[0], params[1]
    for j in range(u.shape[0]):
        buffers[0, j] = beta * buffers[0, j] + signal[j]
        u[j] += step * buffers[0, j]


@register
@dataclasses.dataclass(frozen=True)
class _Momentum(PriceRule):
    """Heavy-ball momentum on log-prices (a test rule with an optimizer buffer)."""

    name = "check-momentum"
    space = "log"
    n_buffers = 1
    step_size: float = 0.05
    beta: float = 0.5

    kernel = staticmethod(_heavy_ball)


def compare(rule=None, signal=None, goods=None, scenario="default", **options) -> float:
    """Largest deviation (scaled as the tests do) between kernel and reference over the run
    (``options``: the rule's geometry, schedule, clip... as :class:`MarketModel` takes them)."""
    fused = MarketModel(scenario, agents=AGENTS, rule=rule, signal=signal, goods=goods, **options)
    ref = MarketModel(scenario, agents=AGENTS, rule=rule, signal=signal, goods=goods, **options)
    signal = fused.config.dynamics.signal
    worst = 0.0
    for _ in range(ROUNDS):
        fused.step()
        ref.reference_step()
        pairs = [(fused.state.coords, ref.state.coords), (fused.state.excess, ref.state.excess)]
        if signal == "tracking":
            pairs.append((fused.state.tracker, ref.state.tracker))
        if fused.state.buffers.size:
            pairs.append((fused.state.buffers, ref.state.buffers))
        for got, want in pairs:
            # |got - want| <= 1e-12 + 1e-12 |want|, as a ratio (<= 1 passes)
            err = np.abs(got - want) / (1e-12 + 1e-12 * np.abs(want))
            worst = max(worst, float(np.max(err)))
    return worst


def thread_invariance() -> bool:
    """The kernel on 1 thread and on all threads, 2.5 blocks of agents: the same bits."""
    model = MarketModel("default", agents=2 * kernel.BLOCK + kernel.BLOCK // 2)
    dyn, net = model.dynamics, model.network
    runs = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        src = [model.state.coords.copy(), model.state.tracker.copy(), model.state.excess.copy()]
        dst = [np.empty_like(a) for a in src]
        buffers = model.state.buffers.copy()
        partials = []
        for _ in range(5):
            out = np.empty((dyn.n_blocks, kernel.N_PARTIALS, src[0].shape[1]))
            kernel.network_round(
                net.indptr, net.indices, net.mixing, *src, *dst, *dyn._arrays, dyn.inv_scale, 0,
                dyn.space == "log", dyn.signal == "tracking", model.economy.numeraire,
                dyn.rule.kernel, dyn._params, *dyn.rule.signal_transform, buffers,
                np.arange(dyn.n_blocks), out,
            )  # fmt: skip
            partials.append(out)
            src, dst = dst, src
        runs.append(src + partials)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))


def main() -> int:
    failed = 0
    for rule in sorted(RULES):
        if RULES[rule].engine is not None:  # its own dynamics: no per-agent path to compare
            continue
        for signal in ("tracking", "local"):
            worst = compare(rule, signal)
            ok = worst <= 1.0
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {rule:15s} {signal:8s} "
                  f"max |kernel - reference| / (1e-12 + 1e-12 |reference|) = {worst:.3f}")  # fmt: skip
    for rule in sorted(RULES):  # the other geometry, a warmed-up cosine, clip / normalize
        # (not the check's own momentum, whose buffer sums the normalized signals: their
        # round-off, amplified by 1 / ||signal||, exceeds 1e-12 there, measured 7.5e-12)
        if RULES[rule].engine is not None or len(RULES[rule].spaces) < 2 or rule == _Momentum.name:
            continue
        other = "log" if RULES[rule].space == "price" else "price"
        for transform in ({"clip": 0.05}, {"normalize": True}):
            options = dict(space=other, schedule="cosine", horizon=15, warmup=3, **transform)
            worst = compare(rule, "tracking", **options)
            ok = worst <= 1.0
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {rule:15s} {other} cosine {list(transform)[0]:9s} "
                  f"max |kernel - reference| / (1e-12 + 1e-12 |reference|) = {worst:.3f}")  # fmt: skip
    for goods in (2, 9, 12, 17):  # one mixing pass of 2 goods; several passes above 8
        worst = compare("entropic", "tracking", goods)
        ok = worst <= 1.0
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} entropic        tracking {goods:2d} goods "
              f"max |kernel - reference| / (1e-12 + 1e-12 |reference|) = {worst:.3f}")  # fmt: skip
    for scenario in builtin_names():  # their own families, rules and graphs
        if scenario == "default" or RULES[load_scenario(scenario).dynamics.rule].engine:
            continue  # (a rule with its own dynamics has no per-agent path)
        try:
            worst = compare(scenario=scenario)
        except ScenarioError as err:  # e.g. a fixed graph file of another size than AGENTS
            print(f"skip scenario {scenario:15s} {err}")
            continue
        ok = worst <= 1.0
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} scenario {scenario:15s} "
              f"max |kernel - reference| / (1e-12 + 1e-12 |reference|) = {worst:.3f}")  # fmt: skip
    same = thread_invariance()
    failed += not same
    print(f"{'ok  ' if same else 'FAIL'} 1 thread vs {numba.config.NUMBA_NUM_THREADS} threads: "
          f"{'bit-identical' if same else 'DIFFERENT'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
