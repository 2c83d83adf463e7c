"""Trade on the network: conservation, individual rationality, sharding, known structures.

* after every round: every good conserved, no holding negative, every executed trade
  raises both parties' utility (checked with ``tatonnet.agents.utility.utility``, an implementation
  independent of the trade kernel) at a price between the two MRS — over random
  economies and graphs (hypothesis);
* sharded runs (1, 2, 3 shards, two-phase boundary settlement) are bit-identical to the
  in-process run, also after a shard fails mid-round (restore + replay), and the ledger
  (holdings + escrow) is conserved at the failure;
* on a line / a tree with the producer at one end, goods reach consumers through the
  agents in between, who are classified as intermediaries, and the measured hops equal
  the graph distance (line: exactly; tree: at least, and within 10%);
* measurement known answers (Gini, star centralization, money detection) and user errors;
* the measurements read the per-edge accounts, not the log: the accounts are the log's and
  add up to the state, and the layers equal the log-based networkx definition;
  ``flows.graphml`` is written by size or on request, and the export works without it.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tatonnet.agents.utility import utility
from tatonnet.cli import run
from tatonnet.distributed.trade_shard import ShardedTrade
from tatonnet.environment.economy import Economy
from tatonnet.environment.network import build_network, from_graph
from tatonnet.environment.trade import bilateral as tr
from tatonnet.environment.trade import flows
from tatonnet.environment.trade.bilateral import edge_flows_from_log

FAMILY_SIGMA = {0: np.inf, 1: 1.0, 2: 0.0}


def random_economy(seed: int, n: int, g: int) -> Economy:
    rng = np.random.default_rng(seed)
    family = rng.integers(0, 4, n).astype(np.int8)
    sigma = np.array([FAMILY_SIGMA.get(int(f), 0.0) for f in family])
    sigma[family == 3] = rng.uniform(0.3, 3.0, int((family == 3).sum()))
    endow = rng.uniform(0.0, 2.0, (n, g)) * (rng.random((n, g)) < 0.8)
    endow[np.arange(n), rng.integers(0, g, n)] += 0.5
    shares = rng.dirichlet(np.ones(g), n)
    return Economy(endow, shares, family, sigma)


def random_graph(seed: int, n: int):
    G = nx.gnp_random_graph(n, 0.2, seed=seed)
    G.add_edges_from((i, i + 1) for i in range(n - 1))  # connected
    return from_graph(G, "random")


def check_round(economy, before, after, log):
    supply = economy.supply
    assert np.allclose(after.holdings.sum(axis=0), supply, rtol=1e-12, atol=1e-12)
    assert (after.holdings >= 0).all()
    done = log[log[:, 3] == tr.EXECUTED]
    if not done.size:
        return 0
    u, v = done[:, 1].astype(int), done[:, 2].astype(int)
    k, l = done[:, 4].astype(int), done[:, 5].astype(int)
    q, pay = done[:, 6], done[:, 7]
    assert (q > 0).all() and (pay > 0).all()
    xu, xv = before.holdings[u].copy(), before.holdings[v].copy()
    idx = np.arange(u.size)
    xu[idx, k] -= q
    xu[idx, l] += pay
    xv[idx, k] += q
    xv[idx, l] -= pay
    # the state after the round is exactly the log applied (pairs are disjoint)
    np.testing.assert_allclose(after.holdings[u], xu, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(after.holdings[v], xv, rtol=1e-13, atol=1e-15)
    a, f, s = economy.shares, economy.family, economy.sigma
    for rows, new in ((u, xu), (v, xv)):
        old_u = utility(before.holdings[rows], a[rows], f[rows], s[rows])
        new_u = utility(new, a[rows], f[rows], s[rows])
        assert (new_u >= old_u * (1 - 1e-12)).all(), "a trade lowered someone's utility"
    # the price lies between the two MRS (log MRS of k in units of l)
    r = tr.log_mrs(before.holdings, economy)
    ru, rv = r[u, k] - r[u, l], r[v, k] - r[v, l]
    price = done[:, 10]
    inside = (price >= np.minimum(ru, rv) - 1e-9) & (price <= np.maximum(ru, rv) + 1e-9)
    clipped = np.abs(price) >= 50 - 1e-9
    assert (inside | clipped).all()
    return u.size


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(4, 30),
    g=st.integers(2, 4),
    medium=st.sampled_from(["barter", "numeraire"]),
)
def test_every_round_conserves_and_every_trade_is_rational(seed, n, g, medium):
    economy = random_economy(seed, n, g)
    network = random_graph(seed, n)
    config = tr.TradeConfig(seed=seed, medium=medium)
    state = tr.TradeState.initial(economy.endowments)
    for _ in range(12):
        new, log = tr.trade_round(state, economy, network, config)
        check_round(economy, state, new, log)
        state = new


def test_random_economy_actually_trades():
    economy, network = random_economy(5, 40, 3), random_graph(5, 40)
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=1), 30)
    assert run_.metrics["trades"].sum() > 100  # the property test is not vacuous
    before, after = economy.utility(economy.endowments), economy.utility(run_.state.holdings)
    assert (after >= before * (1 - 1e-12)).all() and (after > before).sum() > 20


def test_matching_is_a_matching_on_graph_edges_and_seeded():
    network = build_network("small-world", 300, 4, k=6, p=0.2)
    G = network.to_networkx()
    seed_state = tr.TradeConfig(seed=9).seed_state()
    pairs = tr.matching(network, seed_state, 3)
    assert pairs.shape[0] > 300 // 8
    assert np.unique(pairs.ravel()).size == pairs.size  # nobody twice
    assert all(G.has_edge(int(a), int(b)) and a < b for a, b in pairs)
    assert np.array_equal(pairs, tr.matching(network, seed_state, 3))
    assert not np.array_equal(pairs, tr.matching(network, seed_state, 4))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(6, 40))
def test_sharded_is_bit_identical(seed, n):
    economy, network = random_economy(seed, n, 3), random_graph(seed, n)
    config = tr.TradeConfig(seed=seed)
    reference = tr.run_trade(economy, network, config, 15)
    for shards in (1, 2, 3):
        engine = ShardedTrade(economy, network, config, shards, checkpoint_every=4)
        engine.run(15)
        state, log = engine.gather()
        assert np.array_equal(state.holdings, reference.state.holdings)
        assert np.array_equal(state.hop_mass, reference.state.hop_mass)
        assert np.array_equal(state.inflow, reference.state.inflow)
        assert np.array_equal(log, reference.log)


@pytest.mark.parametrize("phase", ["prepare", "commit"])
def test_shard_failure_mid_round_conserves_and_recovers(phase):
    economy, network = random_economy(11, 60, 3), random_graph(11, 60)
    config = tr.TradeConfig(seed=2)
    reference = tr.run_trade(economy, network, config, 20)
    engine = ShardedTrade(economy, network, config, 3, checkpoint_every=5)
    engine.fail(shard=1, rnd=12, phase=phase)
    engine.run(20)
    assert len(engine.recoveries) == 1 and engine.recoveries[0]["round"] == 12
    # at the failure, holdings + escrow still add up to the supply
    np.testing.assert_allclose(engine.recoveries[0]["ledger"], economy.supply, rtol=1e-12)
    state, log = engine.gather()
    assert np.array_equal(state.holdings, reference.state.holdings)
    assert np.array_equal(log, reference.log)


def test_boundary_trades_happen():
    economy, network = random_economy(3, 60, 3), random_graph(3, 60)
    config = tr.TradeConfig(seed=2)
    run_ = tr.run_trade(economy, network, config, 10)
    engine = ShardedTrade(economy, network, config, 3)
    done = run_.log[run_.log[:, 3] == tr.EXECUTED]
    owner = np.searchsorted([r[0] for r in engine.ranges], done[:, 1:3], side="right")
    assert (owner[:, 0] != owner[:, 1]).sum() > 5  # two-phase settlement was exercised


def producer_consumer(G, producers, consumers):
    """Good 1 starts with the producers only; consumers want it (linear utility), the
    agents in between are Cobb–Douglas and start with none of it."""
    n = G.number_of_nodes()
    e = np.tile([1.0, 0.0], (n, 1))
    a = np.tile([0.5, 0.5], (n, 1))
    family, sigma = np.full(n, 1, np.int8), np.ones(n)
    e[producers] = [0.01, 10.0]
    a[producers] = [0.9, 0.1]
    e[consumers] = [10.0, 0.0]
    a[consumers] = [0.1, 0.9]
    family[consumers], sigma[consumers] = 0, np.inf
    return Economy(e, a, family, sigma), from_graph(G, "custom")


def test_line_goods_reach_consumer_through_intermediaries():
    G = nx.path_graph(7)
    economy, network = producer_consumer(G, [0], [6])
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=1, medium="numeraire"), 300)
    x = run_.state.holdings
    assert x[6, 1] > 1.0  # the consumer got the good...
    assert (run_.state.inflow[1:6, 1] > x[1:6, 1]).all()  # ...through the middle, who passed it on
    hops = run_.state.hop_mass[:, 1] / x[:, 1]
    np.testing.assert_allclose(hops, np.arange(7), atol=1e-9)  # hops = graph distance
    summary, table = flows.summarize(economy, run_)
    assert list(table["role"][1:6]) == [3] * 5  # intermediaries (threshold 0.5)
    assert table["role"][0] == 1 and table["role"][6] == 2  # producer, consumer
    np.testing.assert_array_equal(flows.layers(run_.edges, 7, good=1), np.arange(7))
    assert summary["intermediary_share"]["0.5"] == pytest.approx(5 / 7)


def test_tree_goods_flow_from_root_to_leaves():
    G = nx.balanced_tree(2, 3)
    leaves = [v for v in G if G.degree(v) == 1]
    economy, network = producer_consumer(G, [0], leaves)
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=1, medium="numeraire"), 300)
    x = run_.state.holdings
    distance = np.array([nx.shortest_path_length(G, 0, v) for v in G])
    assert (x[leaves, 1] > 0.1).all()
    hops = run_.state.hop_mass[:, 1] / x[:, 1]
    rest = distance > 0  # (a little flows back up to the root, too)
    assert (hops[rest] >= distance[rest] - 1e-9).all()
    assert (hops[rest] <= distance[rest] * 1.1).all()
    np.testing.assert_array_equal(flows.layers(run_.edges, G.number_of_nodes(), good=1), distance)
    inner = [v for v in G if v != 0 and v not in leaves]
    summary, table = flows.summarize(economy, run_)
    assert (table["throughput"][inner] > 0.25).all()
    assert (table["throughput"][leaves] < 1e-12).all()
    assert summary["money_good"] is not None


def test_measurements_known_answers():
    assert flows.gini(np.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert flows.gini(np.r_[np.zeros(9), 1.0]) == pytest.approx(0.9)
    # a star: every trade with agent 0
    log = np.zeros((4, len(tr.LOG_FIELDS)))
    log[:, 1], log[:, 2] = 0, [1, 2, 3, 4]
    log[:, 4], log[:, 5], log[:, 6], log[:, 7] = 1, 0, 1.0, 1.0
    edges = edge_flows_from_log(from_graph(nx.star_graph(4)), log, 2)
    c = flows.concentration(edges, 5, np.ones(2))
    assert c["degree_centralization"] == pytest.approx(1.0)
    assert c["edge_hhi"] == pytest.approx(0.25) and c["edge_gini"] == pytest.approx(0.0)
    assert c["top_agent_share"] == pytest.approx(0.5)


def layers_from_log(log, n, g, good=None):
    """The layer definition of ``flows`` as it was computed from the trade log, with
    networkx: per good, sum the signed units per pair, keep the pairs whose net exceeds
    1e-9 x the largest single trade of the good, BFS from the agents with no inflow."""
    t = log[log[:, 3] == tr.EXECUTED]
    src = np.r_[t[:, 1], t[:, 2]].astype(int)
    dst = np.r_[t[:, 2], t[:, 1]].astype(int)
    goods, units = np.r_[t[:, 4], t[:, 5]].astype(int), np.r_[t[:, 6], t[:, 7]]
    layer = np.full(n, -1)
    for k in range(g) if good is None else np.atleast_1d(good).tolist():
        sel = goods == k
        net: dict[tuple[int, int], float] = {}
        for s, d, q in zip(src[sel].tolist(), dst[sel].tolist(), units[sel].tolist(), strict=True):
            a, b, sign = (s, d, 1.0) if s < d else (d, s, -1.0)
            net[(a, b)] = net.get((a, b), 0.0) + sign * q
        eps = 1e-9 * max(units[sel].max(initial=0.0), 1e-300)
        G = nx.DiGraph((a, b) if q > 0 else (b, a) for (a, b), q in net.items() if abs(q) > eps)
        sources = [v for v in G if G.in_degree(v) == 0]
        if not sources:
            continue
        for v, d in nx.multi_source_dijkstra_path_length(G, sources, weight=lambda *_: 1).items():
            layer[v] = d if layer[v] < 0 else min(layer[v], d)
    return layer


@pytest.mark.parametrize(("seed", "medium"), [(4, "barter"), (8, "numeraire"), (15, "barter")])
def test_layers_from_edge_accounts_equal_the_networkx_definition(seed, medium):
    n, g = 36, 3
    economy, network = random_economy(seed, n, g), random_graph(seed, n)
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=seed, medium=medium), 25)
    reference = layers_from_log(run_.log, n, g)
    assert (reference >= 1).any()  # there are layers to compare
    np.testing.assert_array_equal(flows.layers(run_.edges, n), reference)
    for k in range(g):
        np.testing.assert_array_equal(flows.layers(run_.edges, n, k),
                                      layers_from_log(run_.log, n, g, k))  # fmt: skip
    table = flows.agent_table(economy, run_.state, run_.edges)
    np.testing.assert_array_equal(table["layer"], layers_from_log(run_.log, n, g, [1, 2]))


def test_edge_accounts_are_the_log_and_add_up_to_the_state():
    n, g = 40, 3
    economy, network = random_economy(7, n, g), random_graph(7, n)
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=3), 30)
    edges, log = run_.edges, run_.log
    assert edge_flows_from_log(network, log, g).equal(edges)
    done = log[log[:, 3] == tr.EXECUTED]
    assert edges.trades.sum() == done.shape[0] == run_.metrics["trades"].sum() > 50
    parties = np.bincount(done[:, 1:3].astype(int).ravel(), minlength=n)
    np.testing.assert_array_equal(edges.agent_trades(n), parties)
    # what every agent received and gave is what crossed its edges
    received, given = np.zeros((n, g)), np.zeros((n, g))
    np.add.at(received, edges.target, edges.forward)
    np.add.at(received, edges.source, edges.backward)
    np.add.at(given, edges.source, edges.forward)
    np.add.at(given, edges.target, edges.backward)
    np.testing.assert_allclose(received, run_.state.inflow, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(given, run_.state.outflow, rtol=1e-12, atol=1e-12)
    # the counts and the per-edge table the log used to give
    summary, _ = flows.summarize(economy, run_)
    assert summary["trades"] == done.shape[0]
    assert summary["rejected"] == (log[:, 3] == tr.REJECTED).sum()
    assert summary["pairs"] == log.shape[0]
    p = np.linspace(1.0, 2.0, g)
    table = flows.edge_table(edges, ["a", "b", "c"], p)
    key = {(a, b): e for e, (a, b) in enumerate(zip(table["source"].tolist(),
                                                    table["target"].tolist(), strict=True))}  # fmt: skip
    volume = np.zeros(len(key))
    for row in done:
        volume[key[int(row[1]), int(row[2])]] += p[int(row[4])] * row[6] + p[int(row[5])] * row[7]
    np.testing.assert_allclose(table["volume"], volume, rtol=1e-12)


def test_layer_aggregates_group_many_layers_into_ranges():
    layer = np.r_[-1, -1, np.arange(100)]
    table = {"layer": layer, "role": np.where(layer < 0, 0, 3), "throughput": np.ones(102),
             "profit": layer.astype(float), "gross": np.full(102, 2.0), "net": np.ones(102)}  # fmt: skip
    agg = flows.layer_aggregates(table, max_bars=11)
    assert agg["width"] == 10
    assert agg["label"] == ["outside", *(f"{a}-{a + 9}" for a in range(0, 100, 10))]
    assert agg["agents"].tolist() == [2] + [10] * 10
    assert agg["by_role"][0].tolist() == [2] + [0] * 10
    assert agg["by_role"].sum(axis=0).tolist() == agg["agents"].tolist()
    np.testing.assert_allclose(agg["profit"], [-1.0, *(np.arange(10) * 10 + 4.5)])
    np.testing.assert_allclose(agg["passed_on"], agg["agents"] * 1.0)
    roles = np.array(["inactive"] * 2 + ["producer"] * 100)  # as in trade_agents.parquet
    few = flows.layer_aggregates({**table, "layer": np.minimum(layer, 9), "role": roles})
    assert few["width"] == 1 and few["label"] == ["outside", *map(str, range(10))]
    assert few["agents"].tolist() == [2, *[1] * 9, 91] and few["by_role"][1].sum() == 100


def test_flows_graphml_by_size_or_on_request(tmp_path, monkeypatch, capsys):
    import json

    import pyarrow.parquet as pq

    from tatonnet.distributed import trade_runner
    from tatonnet.environment.scenario import load_scenario

    options = trade_runner.TradeOptions(workers=0, rounds=30, progress=False)
    outcome, _ = trade_runner.run(load_scenario("trade-line"), options)
    small, big, asked = (tmp_path / name for name in ("small", "big", "asked"))
    for folder in (small, big, asked):
        folder.mkdir()
    plot = flows.plot_layers
    monkeypatch.setattr(flows, "plot_layers", lambda *a, **k: None)  # drawn once, below
    assert flows.write_trade_results(small, outcome)["flows_graphml"] is True
    F = nx.read_graphml(small / "flows.graphml", node_type=int)
    roles = pq.read_table(small / "trade_agents.parquet")["role"].to_pylist()
    assert [F.nodes[i]["role"] for i in range(20)] == roles and roles[0] == "producer"
    assert F.number_of_edges() == 2 * outcome.run.edges.trades.astype(bool).sum() > 0
    monkeypatch.setattr(flows, "GRAPHML_MAX_AGENTS", 19)
    assert flows.write_trade_results(asked, outcome, graphml=True)["flows_graphml"] is True
    monkeypatch.setattr(flows, "plot_layers", plot)
    monkeypatch.setattr(flows, "DRAW_AGENTS_MAX", 19)  # and the aggregate picture only
    summary = flows.write_trade_results(big, outcome)
    assert not (big / "flows.graphml").exists() and (big / "layers.png").stat().st_size > 10_000
    assert summary["flows_graphml"] is False
    assert json.loads((big / "summary.json").read_text())["flows_graphml"] is False
    G = nx.read_graphml(asked / "flows.graphml", node_type=int)
    assert sorted(G.edges(data=True)) == sorted(F.edges(data=True))
    # the network with every attribute, from the Parquet tables, on request
    assert run.main(["inspect", str(big)]) == 0
    assert "no flows.graphml (20 agents)" in capsys.readouterr().out
    out = tmp_path / "export"
    assert run.main(["inspect", str(big), "--export", str(out), "--format", "graphml"]) == 0
    N = nx.read_graphml(out / "big.graphml", node_type=int)
    assert N.number_of_nodes() == 20 and N.number_of_edges() == 19
    assert [N.nodes[i]["layer"] for i in range(20)] == [F.nodes[i]["layer"] for i in range(20)]
    assert sum(d for *_, d in N.edges(data="trades")) == summary["trades"] > 0


def test_cobb_douglas_complete_graph_approaches_pareto_and_walras():
    rng = np.random.default_rng(0)
    n, g = 30, 3
    economy = Economy(rng.uniform(0.5, 1.5, (n, g)), rng.dirichlet(np.ones(g), n),
                      np.full(n, 1, np.int8), np.ones(n))  # fmt: skip
    network = build_network("complete", n, 0)
    run_ = tr.run_trade(economy, network, tr.TradeConfig(seed=0), 3000, tol=0.05)
    assert run_.converged and run_.metrics["pareto_gap"][-1] < 0.05
    prices, how = flows.reference_prices(economy)
    assert how == "closed form"
    w = flows.walras_comparison(economy, run_.state, prices)
    assert abs(w["utility_gap_mean"]) < 0.2  # close to, not equal to, the Walrasian allocation


def test_user_errors():
    with pytest.raises(tr.TradeError, match="medium"):
        tr.TradeConfig(medium="gold")
    with pytest.raises(tr.TradeError, match="halvings"):
        tr.TradeConfig(halvings=0)
    economy = random_economy(0, 5, 2)
    from tatonnet.environment.network import Network

    with pytest.raises(tr.TradeError, match="central"):
        tr.run_trade(economy, Network.central(5), tr.TradeConfig(), 3)


def test_explicit_merchants_buy_low_sell_high_and_shard_identically():
    # two merchants (numeraire only, no taste for grain) link producers and consumers
    G = nx.Graph()
    G.add_edges_from([(0, 1)] + [(m, v) for m in (0, 1) for v in range(2, 10)])
    producers, consumers = [2, 3, 4, 5], [6, 7, 8, 9]
    economy, network = producer_consumer(G, producers, consumers)
    config = tr.TradeConfig(seed=3, medium="numeraire", merchants=(0, 1))
    run_ = tr.run_trade(economy, network, config, 200)
    x, e = run_.state.holdings, economy.endowments
    np.testing.assert_allclose(x.sum(axis=0), economy.supply, rtol=1e-12)
    assert (x >= 0).all()
    assert (x[consumers, 1] > 0.1).all()  # grain reached every consumer, via the merchants
    assert (run_.state.inflow[[0, 1], 1] > 1.0).all()
    assert (x[[0, 1], 0] > e[[0, 1], 0]).all()  # both merchants made a numeraire profit
    done = run_.log[run_.log[:, 3] == tr.EXECUTED]
    assert (done[:, 8] > 0).all() and (done[:, 9] > 0).all()  # both sides gained
    for shards in (2, 3):
        engine = ShardedTrade(economy, network, config, shards)
        engine.run(200)
        state, log = engine.gather()
        assert np.array_equal(state.holdings, x) and np.array_equal(log, run_.log)


def test_cli_trade_writes_flow_outputs(tmp_path, capsys):
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "line"
    code = run.main(["--scenario", "trade-line", "--trade", "--rounds", "60", "--out", str(out)])
    assert code == 0
    G = nx.read_graphml(out / "flows.graphml")
    assert G.number_of_nodes() == 20 and G.number_of_edges() > 0
    roles = nx.get_node_attributes(G, "role")
    assert roles["0"] == "producer" and roles["5"] == "intermediary"
    metrics = pq.read_table(out / "trade_metrics.parquet").to_pydict()
    assert len(metrics["round"]) == 60 and sum(metrics["trades"]) > 0
    assert (out / "layers.png").stat().st_size > 10_000
    assert json.loads((out / "summary.json").read_text())["flows_graphml"] is True
    assert "intermediaries" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "trade-line", "--graph", "central"], "central"),
        (["--scenario", "trade-line", "--agents", "30"], "network.path has 20 nodes"),
        (["--scenario", "trade-line", "--workers", "30"], "1..20 trade shards can run, not 30"),
        (["--scenario", "trade-line", "--workers", "0", "--checkpoint-every", "5"],
         "needs --workers 1 or more"),
        (["--scenario", "trade-line", "--resume", "somewhere"], "has no stopped run"),
    ],
)
def test_cli_trade_user_errors_exit_2(tmp_path, capsys, argv, message):
    code = run.main([*argv, "--trade", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_trade_table_is_validated(tmp_path, capsys):
    from tatonnet.environment.scenario import BUILTIN_DIR

    text = (BUILTIN_DIR / "trade-axtell.toml").read_text().replace('"barter"', '"gold"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert run.main(["--scenario", str(path), "--trade", "--out", str(tmp_path / "y")]) == 2
    assert "trade.medium" in capsys.readouterr().err
