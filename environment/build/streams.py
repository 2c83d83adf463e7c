"""Counter-based randomness for economies that shards build themselves.

Every random number of a shard-built economy is a function of the seed, a stream name and
stable global ids — never of the number of shards, threads or machines:

* :func:`block_generator` — a ``numpy.random.Generator`` on Philox (a counter-based
  bit generator) keyed by ``SeedSequence(seed, spawn_key=(stream, block, ...))``. Draws
  are made per reduction block of :data:`BLOCK` consecutive global ids; shards own whole
  blocks (:func:`tatonnet.distributed.partition.shard_ranges`), so any shard count draws
  the same numbers. Making one costs ~40 µs here, so a block (2,048 agents) and not an
  agent is the unit.
* :class:`Permutation` — a pseudo-random bijection of ``0..n-1`` that any process can
  evaluate at any id in O(1): a balanced Feistel network on ``2h`` bits (4 rounds, a
  splitmix64 round function) with cycle walking onto ``[0, n)``. It places agent groups
  across the network (``placement = "shuffled"``) and spreads a scale-free graph's hubs
  over the ids, without any process holding a permutation array.
* :func:`hash_uniform` — a uniform in [0, 1) from (key, counter): splitmix64 twice, for
  the few places where a draw must be keyed finer than a block (a point of a spatial cell).
"""

from __future__ import annotations

import numba
import numpy as np

from tatonnet.environment.tatonnement.kernel import BLOCK

#: Stream numbers (the first spawn-key entry of a draw); never renumber, it changes economies.
SHARES, ENDOWMENT, PLACEMENT, PRICES, GRAPH, POINTS = range(6)
#: A growing market's join order, founders' graph, links and leavers (environment/growth.py).
GROWTH = 6

__all__ = ["BLOCK", "block_generator", "blocks_of", "Permutation", "hash_uniform", "splitmix64"]


def block_generator(seed: int, stream: int, block: int, *extra: int) -> np.random.Generator:
    """Philox generator of ``(seed, stream, block, *extra)``; the same in every process."""
    key = (int(stream), int(block), *(int(x) for x in extra))
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(int(seed), spawn_key=key)))


def blocks_of(start: int, stop: int):
    """``(block, lo, hi)`` for the reduction blocks meeting ids ``start..stop-1``.

    ``lo..hi-1`` are the ids of the block inside the range; a range that starts inside a
    block gets that block's tail (draws are made for the whole block and cut).
    """
    b = start // BLOCK
    while b * BLOCK < stop:
        yield b, max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
        b += 1


@numba.njit(cache=True)
def splitmix64(z):
    """The splitmix64 finalizer (a bijection of uint64 with good avalanche)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def _hash_uniform(key, counters, out):
    for i in range(counters.shape[0]):
        x = splitmix64(splitmix64(key ^ np.uint64(counters[i])) ^ key)
        out[i] = (x >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # 53 bits -> [0, 1)


def hash_uniform(seed: int, stream: int, counters: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), one per counter (uint64-castable ids); keyed by (seed, stream)."""
    key = np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(
        1, np.uint64
    )[0]
    counters = np.ascontiguousarray(counters, dtype=np.uint64)
    out = np.empty(counters.shape[0])
    _hash_uniform(key, counters, out)
    return out


_ROUNDS = 4


@numba.njit(cache=True)
def _feistel(x, keys, half, mask, inverse):
    left, right = x >> np.uint64(half), x & mask
    for r in range(_ROUNDS):
        k = keys[_ROUNDS - 1 - r] if inverse else keys[r]
        if inverse:  # undo: (l, r) = (r' ^ F(l'), l')
            left, right = right ^ (splitmix64(left ^ k) & mask), left
        else:
            left, right = right, left ^ (splitmix64(right ^ k) & mask)
    return (left << np.uint64(half)) | right


@numba.njit(cache=True)
def _permute(ids, n, keys, half, mask, inverse, out):
    for i in range(ids.shape[0]):
        x = np.uint64(ids[i])
        x = _feistel(x, keys, half, mask, inverse)
        while x >= n:  # cycle walking: stay on the orbit until back inside [0, n)
            x = _feistel(x, keys, half, mask, inverse)
        out[i] = np.int64(x)


class Permutation:
    """A keyed pseudo-random bijection of ``0..n-1`` (see the module docstring).

    >>> p = Permutation(10, seed=3, stream=2)
    >>> sorted(p(np.arange(10)).tolist()) == list(range(10))
    True
    >>> bool((p.inverse(p(np.arange(10))) == np.arange(10)).all())
    True
    """

    def __init__(self, n: int, seed: int, stream: int):
        if n < 1:
            raise ValueError(f"Permutation: n must be positive, got {n}")
        self.n = int(n)
        bits = max(2, int(n - 1).bit_length())
        self._half = (bits + 1) // 2
        self._mask = np.uint64((1 << self._half) - 1)
        ss = np.random.SeedSequence(int(seed), spawn_key=(int(stream), 0xFE15))
        self._keys = ss.generate_state(_ROUNDS, np.uint64)

    def _run(self, ids, inverse: bool) -> np.ndarray:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n):
            raise ValueError(f"Permutation: ids must lie in [0, {self.n})")
        out = np.empty(ids.shape[0], dtype=np.int64)
        _permute(ids, np.uint64(self.n), self._keys, np.uint64(self._half), self._mask,
                 inverse, out)  # fmt: skip
        return out

    def __call__(self, ids) -> np.ndarray:
        """``pi(ids)`` (int64 array)."""
        return self._run(ids, False)

    def inverse(self, ids) -> np.ndarray:
        """``pi^-1(ids)`` (int64 array)."""
        return self._run(ids, True)
