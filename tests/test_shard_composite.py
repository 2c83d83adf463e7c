"""Composite rules on the sharded engine: the same bits as their in-process dynamics.

Extragradient (two exchanges a round), Newton (Jacobian trackers, a batched solve per row)
and proportional response (tracked bids of a Fisher market) run their
:class:`~tatonnet.environment.tatonnement.rows.RowRound` in this process
(``--workers 0``) and on the shards of :class:`tatonnet.distributed.engine.ShardEngine`
(:class:`tatonnet.distributed.composite_shard.CompositeShard`):

* 1, 2, 3 and 4 in-process shards give every round's metrics, every agent's prices and the
  whole state (trackers, Jacobian trackers, bids) bit for bit, and send exactly the floats
  the rule's message accounting counts;
* the ``local`` signal, price space, a step schedule, clipping and per-agent initial prices
  hold the same on three shards;
* an interrupted sharded run resumed from its checkpoint ends bit-identical to the
  in-process run (Newton's Jacobian trackers are in the checkpoint);
* on two Ray workers through the runner, with a worker killed (recovery from the last
  checkpoint, replay) and rounds batched ``--sync-every`` 10 up to a stop inside a batch
  (snapshot, rollback, replay), the result equals the in-process run.

Four shards need four reduction blocks (``kernel.BLOCK`` agents each), hence ~6,400 agents.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from helpers import assert_same_run

from tatonnet.distributed.composite_shard import CompositeShard
from tatonnet.distributed.engine import ShardEngine
from tatonnet.distributed.runner import (
    DriverStopped,
    RunConfigError,
    RunOptions,
    run_scenario,
    save_run_config,
)
from tatonnet.environment.model import MarketModel
from tatonnet.environment.scenario import load_scenario
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import reduce_partials
from tatonnet.results.output import claim_new

N = 3 * kernel.BLOCK + 300  # four blocks: up to four shards
ROUNDS = 30

#: rule -> (scenario, overrides): small economies of environment/scenarios, their graphs
CASES = {
    "extragradient": ("scarf", {"step_size": 0.05}),  # small world, Leontief
    "newton": ("ces-substitutes", {"step_size": 0.3}),  # scale-free: hubs, many ghosts
    "proportional-response": ("fisher-ces", {"step_size": 0.1}),  # small world, Fisher
}


def _scenario(rule: str, **overrides):
    name, base = CASES[rule]
    rule_key = {} if rule == "proportional-response" else {"rule": rule}
    return load_scenario(name).with_overrides(agents=N, **rule_key, **{**base, **overrides})


def _run(scenario, engine=None, rounds: int = ROUNDS):
    """The model after ``rounds`` rounds and every round's metrics."""
    model = MarketModel(scenario, engine=engine, mesa_agents=False)
    history = []
    for _ in range(rounds):
        model.step()
        m = model.metrics
        history.append((m.excess, m.mean_price, m.log_min, m.log_max))
    return model, history


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x, y, equal_nan=True) for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )  # fmt: skip


def _state(model) -> dict[str, np.ndarray]:
    """Every state field of every agent: in-process, or gathered from the shards."""
    if model.engine is None:
        fields = model.dynamics.row_round.state_fields
        return {name: getattr(model.state, name) for name in fields}
    parts = model.engine.gather("state")
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _in_process_shards(k: int):
    return functools.partial(ShardEngine, n_shards=k, use_ray=False)


@pytest.mark.parametrize("rule", list(CASES))
def test_shards_equal_the_in_process_dynamics(rule):
    scenario = _scenario(rule)
    ref, ref_history = _run(scenario)
    ref_state = _state(ref)
    g = ref.economy.n_goods
    floats = {"extragradient": 3 * g, "newton": 2 * g + (g - 1) ** 2,
              "proportional-response": g - 1}[rule]  # fmt: skip
    assert floats == (ref.dynamics.rule.round_floats(g, False) if rule != "proportional-response"
                      else ref.dynamics.rule.message_floats(g))  # fmt: skip
    for k in (1, 2, 3, 4):
        model, history = _run(scenario, _in_process_shards(k))
        engine = model.engine
        assert engine.partition.n_shards == k and all(
            isinstance(s, CompositeShard) for s in engine.shards
        )
        assert _same(ref_history, history), k
        np.testing.assert_array_equal(model.prices(), ref.prices())
        state = _state(model)
        assert state.keys() == ref_state.keys()
        for name, value in ref_state.items():
            np.testing.assert_array_equal(state[name], value, err_msg=f"{name}, {k} shards")
        sent = sum(rows.size for spec in engine.specs for rows in spec.send.values())
        assert engine.bytes_per_round == 8 * floats * sent and (k == 1) == (sent == 0)
    assert np.isfinite(ref_history[-1][0]).all()


@pytest.mark.parametrize(
    "rule, overrides",
    [
        ("extragradient", {"signal": "local", "space": "price", "schedule": "cosine",
                           "horizon": 50.0, "clip": 0.5, "initial_spread": 0.3}),
        ("newton", {"signal": "local", "initial_spread": 0.3}),
    ],
)  # fmt: skip
def test_local_signal_and_options_on_three_shards(rule, overrides):
    scenario = _scenario(rule, **overrides)
    ref, ref_history = _run(scenario, rounds=20)
    model, history = _run(scenario, _in_process_shards(3), rounds=20)
    assert model.dynamics.signal == "local" and np.isfinite(ref_history[-1][0]).all()
    assert _same(ref_history, history)
    np.testing.assert_array_equal(model.prices(), ref.prices())


def test_one_shard_runs_many_rounds_a_call():
    """What one Ray worker does (``run_rounds``: whole rounds, no exchange), in-process."""
    scenario = _scenario("proportional-response")
    _, ref_history = _run(scenario)
    model = MarketModel(scenario, engine=_in_process_shards(1), mesa_agents=False)
    engine = model.engine
    partials = engine.shards[0].run_rounds(ROUNDS, engine.supply, engine.n_agents, None)
    history = []
    for t, p in enumerate(partials, start=1):
        m = reduce_partials(t, p, engine.supply, engine.n_agents)
        history.append((m.excess, m.mean_price, m.log_min, m.log_max))
    assert _same(ref_history, history)


def _interrupted_run(tmp_path, scenario, options, stop_after_round: int):
    """The work folder a driver stopped after ``stop_after_round`` leaves for --resume."""
    with claim_new(tmp_path / "out", "run") as claim:
        work = claim.work
        save_run_config(work, scenario, options, run_id=claim.run_id)
    with pytest.raises(DriverStopped):
        run_scenario(scenario, dataclasses.replace(options, stop_after_round=stop_after_round),
                     work)  # fmt: skip
    return work


def test_sharded_newton_resumes_from_its_checkpoint_bit_identically(tmp_path):
    scenario = _scenario("newton").with_overrides(rounds=36)
    in_process = run_scenario(scenario, RunOptions(workers=0, progress=False, reference=False))
    options = RunOptions(workers=3, ray=False, checkpoint_every=10, progress=False,
                         reference=False)  # fmt: skip
    work = _interrupted_run(tmp_path, scenario, options, 25)
    resumed = run_scenario(scenario, options, work, resume=True)
    assert resumed.summary["resumed_from_round"] == 20
    assert resumed.summary["engine"] == "in-process (newton dynamics)"  # no Ray: 3 shards here
    assert_same_run(in_process, resumed)


def test_what_stays_refused_is_one_line():
    scenario = _scenario("extragradient")
    RunOptions(workers=2).check(scenario)  # a graph: the sharded engine runs it
    for options, scenario_, match in [
        (RunOptions(workers=2), scenario.with_overrides(graph="central"), "under central"),
        (RunOptions(workers=2, exchange="peer"), scenario, "--exchange driver"),
        (RunOptions(workers=2), scenario.with_overrides(builder="shards"), "builder"),
    ]:
        with pytest.raises(RunConfigError, match=match) as info:
            options.check(scenario_)
        assert "\n" not in str(info.value)


@pytest.mark.ray
def test_ray_workers_recover_and_batch_bit_identically(local_ray, tmp_path):
    """Extragradient (two exchanges a round) on two Ray workers: worker 0 is killed after
    round 15 (restored from round 10, replayed), rounds go in batches of 10 and the run
    converges inside one (the shards roll back and replay to the stop round)."""
    scenario = load_scenario("ces-substitutes").with_overrides(
        agents=N, rule="extragradient", step_size=0.05, rounds=60, tol=0.118
    )
    in_process = run_scenario(scenario, RunOptions(workers=0, progress=False, reference=False))
    assert in_process.summary["status"] == "converged"
    assert in_process.summary["rounds"] % 10 and in_process.summary["rounds"] > 20
    work = tmp_path / ".out.partial"
    work.mkdir()
    options = RunOptions(workers=2, threads=1, checkpoint_every=10, progress=False,
                         reference=False, kill_worker_at_round=15)  # fmt: skip
    on_ray = run_scenario(scenario, options, work)
    s = on_ray.summary
    assert s["worker_recoveries"] == 1 and s["sync_every"] == 10
    assert s["engine"].endswith("(extragradient dynamics)") and s["boundary_bytes_per_round"] > 0
    assert_same_run(in_process, on_ray)
    on_ray.model.engine.shutdown()
