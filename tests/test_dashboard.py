"""Dashboard pieces without a browser: sampling rule, colours, drawing, model inputs, CLI errors."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from matplotlib.figure import Figure

from tatonnet.cli import dashboard as app
from tatonnet.dashboard.drawing import (
    MAX_DRAWN,
    DashboardError,
    bfs_sample,
    draw_network,
    price_deviation,
    roles_of,
    sample_network,
)
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import build_network


def test_bfs_sample_on_a_ring_is_the_ball_around_agent_0():
    ring = build_network("ring", 20, seed=0)
    assert bfs_sample(ring.indptr, ring.indices, 0, 5).tolist() == [0, 1, 2, 18, 19]
    assert bfs_sample(ring.indptr, ring.indices, 0, 100).tolist() == list(range(20))


def test_price_deviation_known_answer():
    p = np.array([[1.0, 2.0, 4.0], [1.0, 0.5, 1.0]])
    # mean log prices of goods 1, 2: log 1 and log 2; agent 0 is +log 2 on both.
    np.testing.assert_allclose(price_deviation(p, 0), [np.log(2), -np.log(2)])


def test_all_agents_drawn_up_to_the_limit_and_a_connected_sample_above():
    small = build_network("small-world", 300, seed=1, k=6, p=0.1)
    s = sample_network(small, 300)
    assert s.nodes.tolist() == list(range(300)) and s.edges.shape[0] == small.n_edges
    assert s.describe() == "all 300 agents drawn"
    big = build_network("small-world", 5000, seed=1, k=6, p=0.1)
    s = sample_network(big, MAX_DRAWN)
    assert s.nodes.size == MAX_DRAWN and s.positions.shape == (MAX_DRAWN, 2)
    assert s.describe().startswith("2,000 of 5,000 agents drawn")
    import networkx as nx

    G = nx.Graph(s.edges.tolist())
    G.add_nodes_from(range(MAX_DRAWN))
    assert nx.is_connected(G)  # a breadth-first ball, not scattered agents
    with pytest.raises(DashboardError):
        sample_network(big, 0)


def _png(model, sample, colour_by="price") -> bytes:
    fig = Figure(figsize=(4, 3), dpi=60)
    draw_network(fig, model, sample, colour_by)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_drawing_changes_with_the_round_and_colours_by_role_when_present():
    model = MarketModel("default", agents=200, mesa_agents=False)
    sample = sample_network(model.network, 2000)
    before = _png(model, sample)
    model.step()
    assert _png(model, sample) != before
    assert roles_of(model) is None
    model.role = np.where(np.arange(200) % 2 == 0, "buyer", "seller")
    assert roles_of(model) is not None
    assert _png(model, sample, "role") != _png(model, sample, "price")


def test_dashboard_model_falls_back_with_a_message_on_bad_input(monkeypatch):
    from tatonnet.dashboard.page import DashboardModel

    monkeypatch.setenv("TATONNET_DASHBOARD", '{"market": "cobb-douglas", "agents": 100}')
    ok = DashboardModel("default", agents=150, rule="additive", step_size=0.1, seed=3)
    assert ok.error is None and ok.economy.n_agents == 150 and ok.config.seed == 3
    bad = DashboardModel("default", agents=150, rule="multiplicative", step_size=1.5)
    assert bad.error is not None and "cobb-douglas" in bad.error
    assert bad.config.name == "cobb-douglas" and bad.economy.n_agents == 100


def test_cli_refuses_bad_options_in_one_line(capsys):
    assert app.main(["--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("tatonnet dashboard: error:")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert app.main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_a_step_renders_in_under_a_second_with_2000_drawn_nodes():
    """Acceptance: round + network picture + metrics picture, server side, median of 5 steps.

    The benchmark (benchmarks/dashboard_step.py) measured 0.46 s on the shared 2-core
    machine at load 9; the end-to-end time in Chromium is recorded by the browser test.
    """
    from tatonnet.dashboard.drawing import step_seconds

    seconds, what = step_seconds(2000, 2000, steps=5)
    assert what == "all 2,000 agents drawn"
    assert seconds < 1.0, f"a dashboard step took {seconds:.2f} s to render (budget 1 s)"


def test_force_layout_keeps_neighbours_close_and_is_computed_once():
    ring = build_network("ring", 600, seed=0)
    s = sample_network(ring, 2000, seed=3)
    assert sample_network(ring, 2000, seed=3) is s  # reused, not laid out again
    pos = s.positions
    assert pos.shape == (600, 2) and np.isfinite(pos).all()
    edge = np.linalg.norm(pos[s.edges[:, 0]] - pos[s.edges[:, 1]], axis=1).mean()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 600, (2, 2000))
    pair = np.linalg.norm(pos[a] - pos[b], axis=1).mean()
    assert edge < 0.1 * pair  # neighbours on the ring are drawn next to each other
    near = np.linalg.norm(pos[:, None] - pos[None], axis=2)[np.triu_indices(600, 1)]
    assert near.min() > 1e-4  # no two agents on one point


def test_the_page_turns_solara_telemetry_off(monkeypatch):
    monkeypatch.setenv("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "True")
    from solara.server import settings

    from tatonnet.dashboard import page

    monkeypatch.setattr(settings.telemetry, "mixpanel_enable", True)
    page.no_calls_home()
    assert settings.telemetry.mixpanel_enable is False
    import os

    assert os.environ["SOLARA_TELEMETRY_MIXPANEL_ENABLE"] == "False"
