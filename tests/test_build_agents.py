"""Shard-built agent rows (environment/build/agents.py): partition invariance, placement,
distributions, seeds, validation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tatonnet.agents.utility import Family
from tatonnet.environment.build import agents as build
from tatonnet.environment.build.streams import BLOCK
from tatonnet.environment.economy import EconomyError
from tatonnet.environment.scenario import Scenario, load_scenario

FIELDS = ("endowments", "shares", "family", "sigma", "group")

#: n = 13,000 agents (6 whole blocks and a tail of 712) in four groups: Draw and list
#: vectors, CES and every limit family, one small group.
GROUPS = [
    {
        "name": "ces",
        "count": 6000,
        "utility": "ces",
        "sigma": 2.0,
        "shares": {"distribution": "dirichlet", "alpha": 1.0},
        "endowment": {"distribution": "uniform", "low": 0.5, "high": 1.5},
    },
    {
        "name": "cd",
        "count": 4000,
        "utility": "cobb-douglas",
        "shares": [0.2, 0.3, 0.5],
        "endowment": {"distribution": "lognormal", "mean": 0.0, "sigma": 0.5},
    },
    {
        "name": "leontief",
        "count": 2950,
        "utility": "leontief",
        "shares": {"distribution": "uniform", "low": 0.1, "high": 1.0},
        "endowment": [1.0, 2.0, 0.0],
    },
    {
        "name": "linear",
        "count": 50,
        "utility": "linear",
        "shares": [1.0, 1.0, 1.0],
        "endowment": [0.0, 0.0, 3.0],
    },
]
N = sum(g["count"] for g in GROUPS)


def scenario(placement="shuffled", seed=7, spread=0.3, groups=None, goods=3, kind="small-world"):
    network = {"kind": kind, "placement": placement}
    if kind == "small-world":
        network |= {"k": 4, "p": 0.1}
    return Scenario.model_validate(
        {
            "name": "shards",
            "seed": seed,
            "goods": goods,
            "agents": groups or GROUPS,
            "network": network,
            "dynamics": {"initial_spread": spread, "initial_prices": None},
        }
    )


def partitions(n):
    """Block-aligned partitions of 0..n into 1, 2, 3 and 4 ranges, equal and unequal."""
    nb = -(-n // BLOCK)
    cuts = [
        [],
        [nb // 2],
        [1],
        [nb - 1],
        [1, 2],
        [2, nb - 1],
        [1, 3, 4],
        [2, 4, 5],
    ]
    for inner in cuts:
        edges = [0, *(c * BLOCK for c in inner), n]
        yield list(zip(edges[:-1], edges[1:], strict=True))


def concat(scn, ranges):
    parts = [build.agent_rows(scn, a, b) for a, b in ranges]
    return {f: np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS}, parts


@pytest.mark.parametrize("placement", ["shuffled", "ordered"])
def test_any_block_aligned_partition_gives_the_same_rows(placement):
    scn = scenario(placement)
    assert N % BLOCK and 10_000 <= N <= 20_000
    whole = build.agent_rows(scn, 0, N)
    whole.validate()
    assert (whole.start, whole.stop, whole.endowments.shape) == (0, N, (N, 3))
    assert whole.endowments.dtype == whole.shares.dtype == whole.sigma.dtype == np.float64
    assert whole.family.dtype == np.int8 and whole.group.dtype == np.int32
    supply = build.block_supply(whole)
    prices = build.initial_price_rows(scn, 0, N)
    assert prices.shape == (N, 3)
    seen = 0
    for ranges in partitions(N):
        seen += 1
        rows, parts = concat(scn, ranges)
        for f in FIELDS:
            assert np.array_equal(rows[f], getattr(whole, f)), (ranges, f)
        assert np.array_equal(np.concatenate([build.block_supply(p) for p in parts]), supply)
        p = np.concatenate([build.initial_price_rows(scn, a, b) for a, b in ranges])
        assert np.array_equal(p, prices), ranges
    assert seen == 8
    # the block sums are the endowments' column sums, block by block
    for b in range(supply.shape[0]):
        np.testing.assert_allclose(
            supply[b], whole.endowments[b * BLOCK : (b + 1) * BLOCK].sum(axis=0), rtol=1e-13
        )
    assert supply.shape == (-(-N // BLOCK), 3)


def test_ranges_inside_blocks_cut_the_same_draws():
    """Rows do not depend on where a range starts, even inside a block."""
    scn = scenario()
    whole = build.agent_rows(scn, 0, N)
    edges = [0, 5, 2047, 2049, 7000, 12_999, N]
    rows, _ = concat(scn, list(zip(edges[:-1], edges[1:], strict=True)))
    for f in FIELDS:
        assert np.array_equal(rows[f], getattr(whole, f)), f
    empty = build.agent_rows(scn, 100, 100)
    assert empty.endowments.shape == (0, 3) and build.block_supply(empty).shape == (0, 3)


def test_shuffled_placement_has_exact_counts_and_mixes_groups():
    scn = scenario("shuffled")
    rows = build.agent_rows(scn, 0, N)
    counts = [g["count"] for g in GROUPS]
    assert np.bincount(rows.group, minlength=4).tolist() == counts
    blocks = -(-N // BLOCK)
    per_block = [np.unique(rows.group[b * BLOCK : (b + 1) * BLOCK]) for b in range(blocks)]
    for k in range(3):  # every big group in every block
        assert all(k in present for present in per_block), k
    assert sum(3 in present for present in per_block) >= blocks - 2  # 50 agents: spread out
    ids = np.flatnonzero(rows.group == 3)
    assert ids.max() - ids.min() > N // 2
    assert (np.diff(rows.group) != 0).sum() > N // 4  # not laid out in runs
    assert np.array_equal(build.group_of(scn, np.arange(N)), rows.group)


def test_ordered_placement_lays_groups_out_in_order():
    rows = build.agent_rows(scenario("ordered"), 0, N)
    expected = np.repeat(np.arange(4), [g["count"] for g in GROUPS])
    assert np.array_equal(rows.group, expected)


@pytest.mark.parametrize("placement", ["shuffled", "ordered"])
def test_family_sigma_and_constant_vectors_follow_the_group(placement):
    rows = build.agent_rows(scenario(placement), 0, N)
    g = rows.group
    families = [Family.CES, Family.COBB_DOUGLAS, Family.LEONTIEF, Family.LINEAR]
    sigmas = [2.0, 1.0, 0.0, np.inf]
    for k, (family, sigma) in enumerate(zip(families, sigmas, strict=True)):
        assert (rows.family[g == k] == family).all(), k
        assert (rows.sigma[g == k] == sigma).all(), k
    assert (rows.shares[g == 1] == [0.2, 0.3, 0.5]).all()
    assert (rows.endowments[g == 2] == [1.0, 2.0, 0.0]).all()
    assert (rows.shares[g == 3] == 1.0).all()
    assert (rows.endowments[g == 3] == [0.0, 0.0, 3.0]).all()
    # drawn vectors differ from row to row
    assert np.unique(rows.shares[g == 0][:, 0]).size == (g == 0).sum()


def test_distributions():
    """Fixed seed; tolerances about 5 standard errors of the sample mean."""
    big = [
        {
            "count": 20_000,
            "utility": "cobb-douglas",
            "shares": {"distribution": "dirichlet", "alpha": 2.0},
            "endowment": {"distribution": "uniform", "low": 0.5, "high": 2.5},
        },
        {
            "count": 20_000,
            "utility": "ces",
            "sigma": 0.5,
            "shares": {"distribution": "uniform", "low": 0.1, "high": 1.0},
            "endowment": {"distribution": "lognormal", "mean": 0.3, "sigma": 0.5},
        },
    ]
    rows = build.agent_rows(scenario(groups=big, goods=4, seed=3), 0, 40_000)
    a, e = rows.shares[rows.group == 0], rows.endowments[rows.group == 0]
    # dirichlet(2, 2, 2, 2): rows sum to 1, marginal mean 1/4, sd ~0.14, SE ~0.001
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(a.mean(axis=0), 0.25, atol=0.005)
    assert abs(a.std() - np.sqrt(0.25 * 0.75 / 9)) < 0.005
    # uniform [0.5, 2.5): mean 1.5, sd ~0.58, SE ~0.002 per good
    assert e.min() >= 0.5 and e.max() < 2.5
    np.testing.assert_allclose(e.mean(axis=0), 1.5, atol=0.01)
    # lognormal(0.3, 0.5): log-mean 0.3, log-sd 0.5, SE ~0.0035 per good
    log_e = np.log(rows.endowments[rows.group == 1])
    np.testing.assert_allclose(log_e.mean(axis=0), 0.3, atol=0.015)
    assert abs(log_e.std() - 0.5) < 0.01
    # initial prices: log(p / base) ~ N(0, spread)
    scn = scenario(groups=big, goods=4, seed=3, spread=0.4)
    log_p = np.log(build.initial_price_rows(scn, 0, 40_000))
    assert abs(log_p.mean()) < 0.01 and abs(log_p.std() - 0.4) < 0.01


def test_initial_prices_without_spread_or_on_a_central_network_are_one_vector():
    assert np.array_equal(build.initial_price_rows(scenario(spread=0.0), 0, N), np.ones(3))
    central = build.initial_price_rows(scenario(spread=0.5, kind="central"), 10, 20)
    assert np.array_equal(central, np.ones(3))
    data = scenario().model_dump()
    data["dynamics"]["initial_prices"] = [1.0, 2.0, 4.0]
    scn = Scenario.model_validate(data)
    rows = build.initial_price_rows(scn, 0, 3000)
    np.testing.assert_allclose(np.log(rows / [1.0, 2.0, 4.0]).mean(axis=0), 0, atol=0.05)
    data["dynamics"]["initial_spread"] = 0.0
    assert build.initial_price_rows(Scenario.model_validate(data), 0, 5).tolist() == [1, 2, 4]


@pytest.mark.parametrize("placement", ["shuffled", "ordered"])
def test_seeds(placement):
    one = build.agent_rows(scenario(placement, seed=11), 0, N)
    again = build.agent_rows(scenario(placement, seed=11), 0, N)
    other = build.agent_rows(scenario(placement, seed=12), 0, N)
    for f in FIELDS:
        assert np.array_equal(getattr(one, f), getattr(again, f)), f
    assert not np.array_equal(one.shares, other.shares)
    assert not np.array_equal(one.endowments, other.endowments)
    if placement == "shuffled":
        assert not np.array_equal(one.group, other.group)
    prices = [build.initial_price_rows(scenario(placement, seed=s), 0, N) for s in (11, 11, 12)]
    assert np.array_equal(prices[0], prices[1]) and not np.array_equal(prices[0], prices[2])


def good_rows(start=4096, o=10):
    return dict(
        start=start,
        stop=start + o,
        endowments=np.ones((o, 3)),
        shares=np.full((o, 3), 0.5),
        family=np.full(o, int(Family.CES), dtype=np.int8),
        sigma=np.full(o, 2.0),
        group=np.zeros(o, dtype=np.int32),
    )


def bad(field, row, value, col=None):
    kw = good_rows()
    arr = kw[field].copy()
    if col is None:
        arr[row] = value
    else:
        arr[row, col] = value
    kw[field] = arr
    return build.AgentRows(**kw)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (bad("endowments", 3, 0.0), "endowments: agent 4099 owns nothing"),
        (bad("shares", 7, 0.0), "shares: agent 4103 wants nothing"),
        (bad("endowments", 1, np.nan, 0), "endowments: NaN values"),
        (bad("shares", 1, np.nan, 2), "shares: NaN values"),
        (bad("sigma", 2, np.nan), "sigma: NaN values"),
        (bad("endowments", 1, -1.0, 0), "endowments: expected finite non-negative quantities"),
        (bad("endowments", 1, np.inf, 0), "endowments: expected finite non-negative quantities"),
        (bad("shares", 1, -0.5, 1), "shares: expected finite non-negative weights"),
        (bad("sigma", 4, 0.0), "sigma: a CES elasticity must be positive and finite"),
        (bad("sigma", 4, np.inf), "sigma: a CES elasticity must be positive and finite"),
        (bad("family", 0, 9), "family: unknown utility family codes"),
    ],
)
def test_validate_names_the_global_agent(rows, message):
    with pytest.raises(EconomyError, match="^" + message.replace("(", r"\(")) as info:
        rows.validate()
    assert "\n" not in str(info.value)


def test_validate_accepts_good_rows_and_limit_family_sigmas():
    build.AgentRows(**good_rows()).validate()
    kw = good_rows(0, 3)
    kw["family"] = np.array([Family.LINEAR, Family.LEONTIEF, Family.COBB_DOUGLAS], np.int8)
    kw["sigma"] = np.array([np.inf, 0.0, 1.0])
    build.AgentRows(**kw).validate()
    kw["sigma"] = np.zeros(2)
    with pytest.raises(EconomyError, match="one entry per agent"):
        build.AgentRows(**kw).validate()


def test_check_buildable_refuses_fisher_markets():
    fisher = load_scenario("fisher-ces")
    message = 'builder "shards" draws agent groups; a [fisher] market is built by the driver'
    with pytest.raises(ValueError, match=message.replace("[", r"\[")) as info:
        build.check_buildable(fisher)
    assert "\n" not in str(info.value) and '(builder = "driver")' in str(info.value)
    with pytest.raises(ValueError, match="fisher"):
        build.agent_rows(fisher, 0, 10)
    with pytest.raises(ValueError, match="fisher"):
        build.initial_price_rows(fisher, 0, 10)
    default = load_scenario("default")
    build.check_buildable(default)
    rows = build.agent_rows(default, 0, 100)
    rows.validate()
    assert rows.shares.shape == (100, default.n_goods)


def test_ranges_outside_the_economy_are_refused():
    scn = scenario()
    for start, stop in ((-1, 10), (10, 5), (0, N + 1)):
        with pytest.raises(ValueError, match="expected 0 <= start <= stop"):
            build.agent_rows(scn, start, stop)


def test_agents_module_does_not_import_the_scenario_module():
    code = (
        "import sys, tatonnet.environment.build.agents; "
        "print('tatonnet.environment.scenario' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
