"""Which two goods a meeting trades: ``[trade] pair = "largest-gap" | "random"``.

* the option is validated (config and scenario) with a one-line error;
* with ``"random"`` every attempted trade is feasible (``u`` holds what it gives, ``v``
  what it pays, the numeraire on one side under ``medium = "numeraire"``) and has a
  positive log-MRS gap; every executed one raises both utilities (checked with
  ``tatonnet.agents.utility.utility``, independent of the kernel); goods are conserved;
* the draws are a function of (seed, round, pair ids) only: symmetric in the pair, the
  same whatever the other pairs, uniform (fixed seed, 4-sigma tolerance), and a sharded
  run (1, 2, 3 shards) is bit-identical to the in-process run;
* with 2 goods both rules are the same process (bit for bit); with 4 goods they pick
  different goods on some meetings of the same matching; ``"largest-gap"`` picks the
  largest feasible gap;
* a scenario with ``[trade] pair = "random"`` runs through ``tatonnet --trade``.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from test_trade import random_economy

from tatonnet.agents.utility import utility
from tatonnet.cli import run
from tatonnet.distributed.trade_shard import ShardedTrade
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import build_network, from_graph
from tatonnet.environment.scenario import (
    TradeSpec,
    build_economy,
    build_network_for,
    load_scenario,
)
from tatonnet.environment.trade import bilateral as tr
from tatonnet.environment.trade import flows


def cobb_douglas(seed: int, n: int, g: int) -> Economy:
    """Axtell's economy: Cobb–Douglas, interior endowments."""
    rng = np.random.default_rng(seed)
    return Economy(rng.uniform(0.5, 1.5, (n, g)), rng.dirichlet(np.ones(g), n),
                   np.full(n, 1, np.int8), np.ones(n))  # fmt: skip


def random_graph(seed: int, n: int):
    G = nx.gnp_random_graph(n, 0.2, seed=seed)
    G.add_edges_from((i, i + 1) for i in range(n - 1))  # connected
    return from_graph(G, "random")


def test_pair_is_validated():
    assert tr.TradeConfig().pair == "largest-gap" and TradeSpec().pair == "largest-gap"
    assert tr.TradeConfig(pair="random").pair == "random"
    with pytest.raises(tr.TradeError, match="trade.pair") as err:
        tr.TradeConfig(pair="best")
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ValueError, match="pair"):
        TradeSpec(pair="best")


@pytest.mark.parametrize("medium", ["barter", "numeraire"])
def test_random_pairs_are_feasible_rational_and_conserve(medium):
    economy, network = random_economy(5, 50, 4), random_graph(5, 50)
    config = tr.TradeConfig(seed=3, medium=medium, pair="random")
    a, f, s = economy.shares, economy.family, economy.sigma
    state = tr.TradeState.initial(economy.endowments)
    attempted = executed = 0
    for _ in range(12):
        before = state
        state, log = tr.trade_round(state, economy, network, config)
        np.testing.assert_allclose(state.holdings.sum(axis=0), economy.supply, rtol=1e-12)
        assert (state.holdings >= 0).all()
        tried = log[log[:, 3] != tr.NO_GAP]
        u, v = tried[:, 1].astype(int), tried[:, 2].astype(int)
        k, l = tried[:, 4].astype(int), tried[:, 5].astype(int)
        x = before.holdings
        assert (k != l).all() and (x[u, k] > 0).all() and (x[v, l] > 0).all()
        if medium == "numeraire":
            assert ((k == economy.numeraire) | (l == economy.numeraire)).all()
        r = tr.log_mrs(x, economy)  # log MRS in numeraire; of k in units of l: r_k - r_l
        assert ((r[v, k] - r[v, l]) - (r[u, k] - r[u, l]) > 0).all()
        done = tried[tried[:, 3] == tr.EXECUTED]
        u, v = done[:, 1].astype(int), done[:, 2].astype(int)
        for rows in (u, v):
            gain = utility(state.holdings[rows], a[rows], f[rows], s[rows]) - utility(
                x[rows], a[rows], f[rows], s[rows]
            )
            assert (gain > 0).all(), "a trade did not raise someone's utility"
        attempted, executed = attempted + tried.shape[0], executed + done.shape[0]
    assert executed > 30 and attempted >= executed


def test_draws_are_a_function_of_seed_round_and_ids():
    seed_state = tr.TradeConfig(seed=4).seed_state()
    rng = np.random.default_rng(0)
    u = rng.integers(0, 10_000, 20_000)
    v = u + rng.integers(1, 10_000, u.size)
    draws = tr.meeting_draws(tr.TradeConfig(pair="random"), seed_state, 7, u, v)
    assert draws.shape == u.shape and ((draws >= 0) & (draws < 1)).all()
    swapped = tr.meeting_draws(tr.TradeConfig(pair="random"), seed_state, 7, v, u)
    subset = tr.meeting_draws(tr.TradeConfig(pair="random"), seed_state, 7, u[::-7], v[::-7])
    assert np.array_equal(draws, swapped) and np.array_equal(draws[::-7], subset)
    other_round = tr.meeting_draws(tr.TradeConfig(pair="random"), seed_state, 8, u, v)
    assert np.abs(np.corrcoef(draws, other_round)[0, 1]) < 0.05
    # not the matching's key in disguise
    pairs = zip(u[:2000], v[:2000], strict=True)
    keys = np.array([tr.edge_key(seed_state, 7, a, b) for a, b in pairs], dtype=np.uint64)
    assert np.abs(np.corrcoef(draws[:2000], (keys >> np.uint64(11)) / 2.0**53)[0, 1]) < 0.1
    # uniform: 10 bins of 2,000 expected, std ~42; tolerance 4 sigma
    counts = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert np.abs(counts - 2000).max() < 170
    assert tr.meeting_draws(tr.TradeConfig(), seed_state, 7, u, v).size == 0  # largest-gap


def test_drawn_goods_are_uniform_over_all_pairs():
    g, n = 5, 20_000
    mu, mv = np.zeros(g), np.array([0.0, 0.3, 0.7, 1.2, 2.0])  # every pair has a gap
    x = np.ones(g)
    draws = tr.meeting_draws(tr.TradeConfig(pair="random"), np.uint64(1), 0,
                             np.arange(n), np.arange(n) + n)  # fmt: skip
    seen = {}
    for d in draws:
        k, l = tr.drawn_goods(mu, mv, x, x, -1, 1e-9, d)
        assert mv[k] - mv[l] > 0  # the profitable direction: v values k more
        seen[(k, l)] = seen.get((k, l), 0) + 1
    assert len(seen) == 10  # every unordered pair, each in one direction
    assert max(abs(c - n / 10) for c in seen.values()) < 4 * np.sqrt(n / 10 * 0.9)
    numeraire = {tr.drawn_goods(mu, mv, x, x, 2, 1e-9, d) for d in draws[:200]}
    assert numeraire == {(2, 0), (2, 1), (3, 2), (4, 2)}
    # a drawn pair without a gap (or not held) is no trade, as in Axtell's process
    assert tr.drawn_goods(mu, np.zeros(g), x, x, -1, 1e-9, 0.5) == (-1, -1)
    assert tr.drawn_goods(mu, mv, np.zeros(g), x, -1, 1e-9, 0.5) == (-1, -1)


def test_random_pair_sharded_is_bit_identical():
    economy, network = random_economy(7, 60, 4), random_graph(7, 60)
    config = tr.TradeConfig(seed=5, pair="random")
    reference = tr.run_trade(economy, network, config, 12)
    assert reference.metrics["trades"].sum() > 20
    for shards in (1, 2, 3):
        engine = ShardedTrade(economy, network, config, shards, checkpoint_every=4)
        engine.run(12)
        state = engine.gather()[0]
        assert np.array_equal(state.holdings, reference.state.holdings)
        assert np.array_equal(state.hop_mass, reference.state.hop_mass)


def test_two_goods_same_process_more_goods_other_pairs():
    network = build_network("complete", 40, 2)
    two = cobb_douglas(2, 40, 2)
    largest = tr.run_trade(two, network, tr.TradeConfig(seed=2), 10)
    drawn = tr.run_trade(two, network, tr.TradeConfig(seed=2, pair="random"), 10)
    assert np.array_equal(largest.state.holdings, drawn.state.holdings)
    assert np.array_equal(largest.log, drawn.log)
    four = cobb_douglas(3, 40, 4)
    state = tr.TradeState.initial(four.endowments)
    _, log_l = tr.trade_round(state, four, network, tr.TradeConfig(seed=2))
    _, log_r = tr.trade_round(state, four, network, tr.TradeConfig(seed=2, pair="random"))
    assert np.array_equal(log_l[:, :3], log_r[:, :3])  # the same meetings
    differ = (log_l[:, 4:6] != log_r[:, 4:6]).any(axis=1) & (log_r[:, 3] != tr.NO_GAP)
    assert differ.sum() >= 5
    # largest-gap: the chosen gap is the largest over the feasible ordered pairs
    r = tr.log_mrs(four.endowments, four)
    for row in log_l[log_l[:, 3] != tr.NO_GAP]:
        u, v, k, l = (int(c) for c in row[[1, 2, 4, 5]])
        gaps = (r[v][:, None] - r[v][None, :]) - (r[u][:, None] - r[u][None, :])
        np.fill_diagonal(gaps, -np.inf)
        assert np.isclose(gaps[k, l], gaps.max(), rtol=0, atol=1e-12)


SCENARIO = """
name = "pair-random"
seed = 3
goods = 3

[[agents]]
name = "traders"
count = 20
utility = "cobb-douglas"
shares = { distribution = "dirichlet", alpha = 1.0 }
endowment = { distribution = "uniform", low = 0.5, high = 1.5 }

[network]
kind = "complete"

[trade]
rounds = 12
pair = "random"
"""


def test_cli_runs_a_random_pair_scenario(tmp_path, capsys):
    import pyarrow.parquet as pq

    path = tmp_path / "pair-random.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    economy, group = build_economy(scenario)
    config, rounds, _ = flows.trade_config_for(scenario, group)
    assert config.pair == "random" and rounds == 12
    network = build_network_for(scenario)
    drawn = tr.run_trade(economy, network, config, rounds).state.holdings
    largest = tr.run_trade(economy, network, tr.TradeConfig(seed=3), rounds).state.holdings
    assert not np.array_equal(drawn, largest)
    out = tmp_path / "out"
    assert run.main(["--scenario", str(path), "--trade", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["scenario"]["trade"]["pair"] == "random"
    agents = pq.read_table(out / "trade_agents.parquet").to_pydict()
    holdings = np.column_stack([agents[f"holding_good{j}"] for j in range(3)])
    assert np.array_equal(holdings, drawn)  # the CLI drew the pairs
    assert "results:" in capsys.readouterr().out
    path.write_text(SCENARIO.replace('"random"', '"best"'))
    assert run.main(["--scenario", str(path), "--trade", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "trade.pair" in err and len(err.splitlines()) == 1
