"""Shard-built graphs (environment/build/graphs.py): definitions, partition invariance, errors."""

from __future__ import annotations

import math
from itertools import pairwise

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from tatonnet.environment.build import graphs
from tatonnet.environment.build.graphs import (
    SHARD_GENERATORS,
    check_params,
    decided_edges,
    geometric_cells,
    points,
)
from tatonnet.environment.build.streams import BLOCK, GRAPH, Permutation
from tatonnet.environment.network import NetworkError, _near_square_grid

N = 15001  # several blocks, not a multiple of BLOCK
CASES = [
    ("ring", {}),
    ("grid", {}),
    ("small-world", {"k": 10, "p": 0.3}),
    ("small-world", {"k": 4, "p": 1.0}),
    ("random-geometric", {"k": 10}),
    ("random-geometric", {"k": 3.5}),
    ("scale-free", {"m": 5}),
    ("scale-free", {"m": 3, "gamma": 2.5}),
]
IDS = [f"{kind}-{'-'.join(f'{k}{v}' for k, v in par.items())}" for kind, par in CASES]


def pair_keys(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """Sorted keys ``min * n + max`` of the edges (a multiset)."""
    return np.sort(np.minimum(u, v) * n + np.maximum(u, v))


def unique_pairs(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    return np.unique(pair_keys(u, v, n))


def pair_set(u: np.ndarray, v: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(np.minimum(u, v).tolist(), np.maximum(u, v).tolist(), strict=True))


def nx_pairs(G: nx.Graph) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in G.edges}


def whole(kind: str, n: int, params: dict, seed: int = 7):
    return decided_edges(kind, n, seed, params, 0, n)


def by_parts(kind: str, n: int, params: dict, cuts, seed: int = 7):
    bounds = [0, *cuts, n]
    parts = [decided_edges(kind, n, seed, params, a, b) for a, b in pairwise(bounds)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def degrees(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = np.divmod(unique_pairs(u, v, n), n)
    return np.bincount(np.concatenate([a, b]), minlength=n)


def n_components(n: int, u: np.ndarray, v: np.ndarray) -> int:
    A = sp.coo_matrix((np.ones(u.size), (u, v)), shape=(n, n))
    return connected_components(A, directed=False)[0]


# ---------------------------------------------------------------- fixed definitions


@pytest.mark.parametrize("n", [2, 3, 5, BLOCK, 2 * BLOCK + 1])
def test_ring_is_the_cycle_graph(n):
    u, v = whole("ring", n, {})
    assert u.size == nx.cycle_graph(n).number_of_edges()
    assert pair_set(u, v) == nx_pairs(nx.cycle_graph(n))


@pytest.mark.parametrize("n", [2, 3, 10, 17, 2 * BLOCK + 1, 5000])
def test_grid_is_todays_near_square_grid(n):
    u, v = whole("grid", n, {})
    assert u.size == _near_square_grid(n).number_of_edges()
    assert pair_set(u, v) == nx_pairs(_near_square_grid(n))


@pytest.mark.parametrize("n,k", [(3, 2), (11, 10), (50, 6), (2 * BLOCK + 3, 10)])
def test_small_world_without_rewiring_is_the_ring_lattice(n, k):
    u, v = whole("small-world", n, {"k": k, "p": 0})
    assert u.size == n * k // 2
    assert pair_set(u, v) == nx_pairs(nx.watts_strogatz_graph(n, k, 0))


# ---------------------------------------------------------------- partition invariance


@pytest.mark.parametrize("kind,params", CASES, ids=IDS)
def test_any_block_partition_gives_the_same_graph(kind, params):
    u, v = whole(kind, N, params)
    reference = pair_keys(u, v, N)
    partitions = [
        [3 * BLOCK],  # 2 ranges, unequal
        [BLOCK, 5 * BLOCK],  # 3 ranges
        [2 * BLOCK, 3 * BLOCK, 6 * BLOCK],  # 4 ranges
        [7 * BLOCK],  # a short last range
        [100, BLOCK + 777, 6 * BLOCK - 1],  # not aligned (supported too; shards align)
    ]
    for cuts in partitions:
        pu, pv = by_parts(kind, N, params, cuts)
        # the same rows decide the same edges: equal as multisets, so equal as sets
        assert np.array_equal(pair_keys(pu, pv, N), reference), cuts


@pytest.mark.parametrize("kind,params", CASES, ids=IDS)
def test_rows_decide_their_edges(kind, params):
    """Every edge of a range has its deciding row in the range; no self-loops; ids valid."""
    start, stop = 2 * BLOCK, 5 * BLOCK
    u, v = decided_edges(kind, N, 3, params, start, stop)
    assert u.dtype == v.dtype == np.int64 and u.shape == v.shape and u.size > 0
    assert (u != v).all()
    assert ((0 <= v) & (v < N)).all()
    assert ((start <= u) & (u < stop)).all()
    if kind == "random-geometric":
        assert (u < v).all()  # decided by the lower id


@settings(max_examples=25, deadline=None)
@given(
    case=st.sampled_from(CASES),
    n=st.integers(12, 3 * BLOCK + 100),
    raw_cuts=st.lists(st.integers(1, 10**6), max_size=4),
    aligned=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_partition_invariance_property(case, n, raw_cuts, aligned, seed):
    """Any contiguous partition (block-aligned or not) reproduces the one-range graph."""
    kind, params = case
    params = dict(params)
    if kind == "small-world":
        params["k"] = min(params["k"], n - 2 if n % 2 else n - 1) // 2 * 2
    if kind == "random-geometric":
        params["k"] = min(params["k"], n / 2)
    cuts = sorted({c % n for c in raw_cuts} - {0})
    if aligned:
        cuts = sorted({c // BLOCK * BLOCK for c in cuts} - {0})
    u, v = whole(kind, n, params, seed)
    pu, pv = by_parts(kind, n, params, cuts, seed)
    assert np.array_equal(pair_keys(pu, pv, n), pair_keys(u, v, n))


@pytest.mark.parametrize("kind,params", CASES, ids=IDS)
def test_small_ranges_of_a_huge_network_are_cheap(kind, params):
    """Work is proportional to the range: 10^9 agents, one block each at the start, middle,
    end (an O(n) step would need gigabytes here)."""
    n = 10**9 + 7
    for start in (0, 123_456 * BLOCK, n - n % BLOCK):
        stop = min(n, start + BLOCK)
        u, v = decided_edges(kind, n, 1, params, start, stop)
        assert u.size >= stop - start - 1 and (u != v).all()
        assert ((start <= u) & (u < stop)).all() and ((0 <= v) & (v < n)).all()


def test_seeds():
    for kind, params in CASES:
        a = whole(kind, 9001, params, seed=1)
        b = whole(kind, 9001, params, seed=1)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), kind
        if kind in ("small-world", "random-geometric", "scale-free"):
            c = whole(kind, 9001, params, seed=2)
            assert not np.array_equal(unique_pairs(*a, 9001), unique_pairs(*c, 9001)), kind


def test_bad_ranges_are_refused():
    for start, stop in [(-1, 10), (10, 5), (0, N + 1)]:
        with pytest.raises(ValueError, match="start <= stop"):
            decided_edges("ring", N, 0, {}, start, stop)
    with pytest.raises(NetworkError):
        decided_edges("small-world", N, 0, {"k": 3}, 0, N)


# ---------------------------------------------------------------- small world


def test_small_world_definition():
    n, k, p = N, 10, 0.2
    h = k // 2
    u, v = whole("small-world", n, {"k": k, "p": p})
    assert (np.bincount(u, minlength=n) == h).all()  # every row has its h slots
    keys = unique_pairs(u, v, n)
    # duplicates are i -> w and w -> i both rewired: about (p (h - 1))^2 / 2 = 0.32 expected
    assert n * h - 6 <= keys.size <= n * h
    assert abs(2 * keys.size / n - k) <= 12 / n
    ring_dist = np.minimum((v - u) % n, (u - v) % n)
    rewired = ring_dist > h
    # each slot j >= 2 independently rewired with probability p: binomial, 5 sigma
    slots = n * (h - 1)
    assert abs(rewired.sum() - p * slots) <= 5 * math.sqrt(slots * p * (1 - p))
    assert abs(rewired.mean() - p * (h - 1) / h) <= 5 * math.sqrt(p * (1 - p) / slots)
    # no row rewires twice to the same target, the slot j = 1 is the ring edge
    assert np.unique(u * n + v).size == u.size
    assert ((v[::h] - u[::h]) % n == 1).all()
    assert n_components(n, u, v) == 1
    # targets are uniform over the ids (chi-square over 20 bins)
    counts = np.bincount(v[rewired] * 20 // n, minlength=20)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_small_world_full_rewiring():
    n, k = N, 6
    u, v = whole("small-world", n, {"k": k, "p": 1.0})
    ring_dist = np.minimum((v - u) % n, (u - v) % n)
    assert (ring_dist > k // 2).sum() == n * (k // 2 - 1)  # every slot j >= 2 rewired
    assert n_components(n, u, v) == 1


def test_small_world_on_a_tiny_ring_keeps_lattice_slots_it_cannot_rewire():
    u, v = whole("small-world", 11, {"k": 10, "p": 1.0})  # the window covers everyone
    assert pair_set(u, v) == nx_pairs(nx.complete_graph(11))


# ---------------------------------------------------------------- random geometric


@pytest.mark.parametrize("n,k,seed", [(20000, 10, 3), (9001, 3.5, 11), (12000, 40, 5)])
def test_random_geometric_edges_are_exactly_the_near_pairs(n, k, seed):
    xy = points(n, seed, {"k": k}, 0, n)
    assert xy.shape == (n, 2) and ((xy >= 0) & (xy < 1)).all()
    r = math.sqrt(k / (math.pi * n))
    u, v = decided_edges("random-geometric", n, seed, {"k": k}, 0, n)
    near = cKDTree(xy).query_pairs(r, output_type="ndarray")
    assert u.size == len(near)  # no duplicates
    assert np.array_equal(pair_keys(u, v, n), np.sort(near[:, 0] * n + near[:, 1]))
    # mean degree: (n - 1) P(|X - Y| <= r) in the unit square = (n-1)(pi r^2 - 8 r^3/3 + r^4/2)
    expected = (n - 1) * (math.pi * r**2 - 8 * r**3 / 3 + r**4 / 2)
    assert abs(2 * u.size / n - expected) <= 0.03 * expected


def test_random_geometric_points_are_shard_invariant():
    n, params = N, {"k": 10}
    full = points(n, 4, params, 0, n)
    bounds = [0, BLOCK, 4 * BLOCK, 4 * BLOCK + 777, n]
    parts = [points(n, 4, params, a, b) for a, b in pairwise(bounds)]
    assert np.array_equal(np.concatenate(parts), full)
    assert not np.array_equal(points(n, 5, params, 0, n), full)


def test_random_geometric_cells():
    n, params = 20000, {"k": 10}
    cells, first, count, L = geometric_cells(n, 9, params, 0, n)
    r = math.sqrt(10 / (math.pi * n))
    assert 2.0**-L >= r > 2.0 ** -(L + 1)  # the finest grid with side >= r
    assert count.sum() == n and (count > 0).all()
    assert first[0] == 0 and np.array_equal(first[1:], np.cumsum(count)[:-1])
    assert (np.diff(cells) > 0).all() and cells[-1] < 4**L
    # each point lies in its cell: Morton number of floor(2^L (x, y))
    xy = points(n, 9, params, 0, n)
    cx, cy = np.floor(xy * 2**L).astype(np.int64).T
    morton = np.zeros(n, np.int64)
    for t in range(L):
        morton |= ((cx >> t) & 1) << (2 * t) | ((cy >> t) & 1) << (2 * t + 1)
    assert np.array_equal(morton, np.repeat(cells, count))
    # multinomial(n, 1/4^L): mean n/4^L, variance about the mean (zero cells included)
    full = np.zeros(4**L)
    full[cells] = count
    assert abs(full.var() / full.mean() - 1) < 0.1
    # a sub-range sees the same cells with the same counts
    sub = geometric_cells(n, 9, params, 3 * BLOCK, 5 * BLOCK)
    keep = (first + count > 3 * BLOCK) & (first < 5 * BLOCK)
    for got, want in zip(sub[:3], (cells[keep], first[keep], count[keep]), strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("N_points", [1, 63, 200, 257, 1000, 10**6, 10**9])
def test_tree_split_is_binomial_half(N_points):
    """The tree's left-child counts: popcount (N <= 256) and BTRS above, vs scipy.binom."""
    key = graphs._key(1, 2, 3)
    x = np.array([graphs._binomial_half(N_points, key, node) for node in range(1, 20001)])
    assert ((0 <= x) & (x <= N_points)).all()
    lo, hi = stats.binom.ppf([1e-3, 1 - 1e-3], N_points, 0.5)
    edges = np.unique(np.linspace(lo, hi + 1, 21).astype(np.int64))
    bins = np.concatenate([[-1], edges - 1, [N_points]])  # (bins[i], bins[i+1]]
    observed = np.histogram(x, bins=bins + 0.5)[0]
    expected = np.diff(stats.binom.cdf(bins, N_points, 0.5)) * x.size
    assert observed.sum() == x.size
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, max(keep.sum() - 1, 1)) > 1e-4


# ---------------------------------------------------------------- scale free


@pytest.mark.parametrize("gamma", [2.5, 3.0])
def test_scale_free_definition(gamma):
    n, m = 20000, 5
    u, v = whole("scale-free", n, {"m": m, "gamma": gamma})
    assert n_components(n, u, v) == 1  # the ring
    deg = degrees(n, u, v)
    assert abs(deg.mean() - 2 * m) < 0.15
    # power-law tail: discrete Hill (maximum-likelihood) estimate of gamma above 3x the mean
    xmin = 30
    tail = deg[deg >= xmin]
    hill = 1 + tail.size / np.log(tail / (xmin - 0.5)).sum()
    assert abs(hill - gamma) < 0.5, hill
    assert deg.max() > 20 * deg.mean()
    # hubs are the top ranks, spread over the ids by the permutation: mean degree of the
    # 50 top ranks = 2 (ring) + their expected Chung-Lu degree w_r (1 - w_r / S)
    W0, r0, alpha, S = graphs.chung_lu_weights(n, m, gamma)
    w = W0 * (1 + np.arange(50) / r0) ** -alpha
    hubs = Permutation(n, 7, GRAPH).inverse(np.arange(50))
    assert abs(deg[hubs].mean() / (2 + (w * (1 - w / S)).mean()) - 1) < 0.06
    assert np.ptp(hubs) > n / 2


def test_scale_free_weights():
    for n, m, gamma in [(20000, 5, 3.0), (10**6, 5, 3.0), (10**5, 10, 6.0), (10**7, 2, 2.1)]:
        W0, r0, alpha, S = graphs.chung_lu_weights(n, m, gamma)
        assert S == n * (2 * m - 2) and alpha == pytest.approx(1 / (gamma - 1))
        assert W0 <= math.sqrt(S) * (1 + 1e-9) and r0 >= 1  # capped: w_r w_s / S <= 1
        assert r0 == 1 or W0 == pytest.approx(math.sqrt(S), rel=1e-9)
        if n <= 10**6:
            exact = (W0 * (1 + np.arange(n) / r0) ** -alpha).sum()
            assert exact == pytest.approx(S, rel=1e-9)


def test_scale_free_with_m_1_is_the_ring():
    u, v = whole("scale-free", 9001, {"m": 1})
    assert pair_set(u, v) == nx_pairs(nx.cycle_graph(9001))


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kind,n,params,field",
    [
        ("mesh", 100, {}, "network.kind"),
        ("complete", 100, {}, "network.kind"),
        ("ring", 1, {}, "network:"),
        ("small-world", 100, {"k": 3}, "network.k"),
        ("small-world", 100, {"k": 10.5}, "network.k"),
        ("small-world", 100, {"k": 100}, "network.k"),
        ("small-world", 100, {"k": 0}, "network.k"),
        ("small-world", 100, {"k": "10"}, "network.k"),
        ("small-world", 100, {"k": True}, "network.k"),
        ("small-world", 100, {"p": 1.5}, "network.p"),
        ("small-world", 100, {"p": -0.1}, "network.p"),
        ("small-world", 100, {"p": float("nan")}, "network.p"),
        ("small-world", 100, {"p": "x"}, "network.p"),
        ("scale-free", 100, {"m": 0}, "network.m"),
        ("scale-free", 100, {"m": 2.5}, "network.m"),
        ("scale-free", 100, {"m": 50}, "network.m"),
        ("scale-free", 100, {"gamma": 2}, "network.gamma"),
        ("scale-free", 100, {"gamma": 1.5}, "network.gamma"),
        ("scale-free", 100, {"gamma": float("inf")}, "network.gamma"),
        ("scale-free", 100, {"gamma": "3"}, "network.gamma"),
        ("random-geometric", 100, {"k": 0}, "network.k"),
        ("random-geometric", 100, {"k": -1}, "network.k"),
        ("random-geometric", 100, {"k": 100}, "network.k"),
        ("random-geometric", 100, {"k": float("nan")}, "network.k"),
    ],
)
def test_check_params_refuses(kind, n, params, field):
    with pytest.raises(NetworkError) as info:
        check_params(kind, n, params)
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message
    assert "got" in message or "unknown" in message  # names the offending value


@pytest.mark.parametrize(
    "kind,params",
    [
        ("small-world", {"k": 10.0, "p": 0}),
        ("small-world", {"k": np.int64(4), "p": 1}),
        ("scale-free", {"m": 5.0, "gamma": 2.2}),
        ("scale-free", {"m": 1}),
        ("random-geometric", {"k": 2.5}),
        ("ring", {"k": 3, "path": "ignored"}),  # another kind's keys are ignored
        ("grid", {}),
    ],
)
def test_check_params_accepts(kind, params):
    check_params(kind, 100, params)
    u, v = decided_edges(kind, 100, 0, params, 0, 100)
    assert u.size > 0


def test_kinds():
    assert SHARD_GENERATORS == ("ring", "grid", "small-world", "random-geometric", "scale-free")
    # an integral float parameter gives the same graph as the integer
    a = whole("small-world", 5000, {"k": 10.0, "p": 0.1})
    b = whole("small-world", 5000, {"k": 10, "p": 0.1})
    assert np.array_equal(a[1], b[1])
