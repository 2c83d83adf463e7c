"""Reference Walrasian equilibria of the centralized economy, and their stability.

* :func:`cobb_douglas_equilibrium` — exact, by linear algebra: with Cobb–Douglas agents
  market clearing reads ``p_j S_j = sum_i alpha_ij (p . e_i)``, i.e. ``p = M p`` with
  ``M_jk = sum_i alpha_ij e_ik / S_j``, a column-stochastic matrix; ``p`` is its
  Perron eigenvector (unique when ``M`` is irreducible).
* :func:`find_equilibria` — numerical, numeraire price 1:

  - **2 goods: complete.** The one free relative price ``x = log p_free`` is scanned on a
    grid of ``GRID_POINTS`` points over ``[-log PRICE_BOUND, log PRICE_BOUND]`` (spacing
    ~0.02 in log-price); every sign change of the free good's relative excess demand is
    refined by ``scipy.optimize.brentq`` to ``xtol=1e-14``. By Walras' law the free good's
    market clears iff both do, so this finds every equilibrium in the price box whose
    roots are at least one grid step apart and cross zero (a tangential double root, which
    does not change sign, is the one case it can miss; it is non-generic).
  - **3 goods or more: multi-start.** ``scipy.optimize.root`` (``hybr``, then ``lm``) on
    the relative excess demand of the non-numeraire goods in log-prices, from all prices
    1 and ``n_starts - 1`` seeded uniform log-price starts in [-2, 2]; roots are
    deduplicated. Not a proof of completeness: more starts find more.

  Every returned ``p`` satisfies ``max_j |Z_j(p)| / S_j < accept``; an empty list says
  honestly that none was found (linear utilities, whose demand is discontinuous, often
  end there).
* :func:`stability` — local stability of an equilibrium under tâtonnement: the Jacobian
  of the tâtonnement ODE of the free goods, ``d u_F / dt = Z_F(p) / S_F`` with ``u = p``
  (price-space rules: ``additive``) or ``u = log p`` (log-space rules: ``entropic``,
  ``multiplicative``), by central finite differences; its eigenvalues say whether plain
  continuous tâtonnement can reach the equilibrium (all real parts < 0) and the largest
  constant step of the discrete rule ``u <- u + step * Z/S`` that is still locally stable
  (``|1 + step * lambda| < 1`` for every eigenvalue ``lambda``).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.linalg
import scipy.optimize

from tatonnet.agents.utility import Family
from tatonnet.environment.economy import Economy
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import use_threads

#: Price box of the 2-good scan: relative prices in [1/PRICE_BOUND, PRICE_BOUND]
#: (the same bound past which a run is called diverged, see tatonnet.environment.tatonnement.status).
PRICE_BOUND = 1e8
GRID_POINTS = 2001


def cobb_douglas_equilibrium(economy: Economy) -> np.ndarray:
    """The exact equilibrium price vector (numeraire = 1) of an all-Cobb–Douglas economy."""
    if economy.families() != {int(Family.COBB_DOUGLAS)}:
        raise ValueError("the closed form needs every agent to be Cobb-Douglas")
    M = economy.cobb_douglas_matrix()
    # null space of (M - I): the eigenvector for eigenvalue 1
    null = scipy.linalg.null_space(M - np.eye(economy.n_goods), rcond=1e-12)
    if null.shape[1] != 1:
        raise ValueError("the Cobb-Douglas equilibrium is not unique (reducible economy)")
    p = np.abs(null[:, 0])
    return p / p[economy.numeraire]


def relative_excess_demand(economy: Economy, prices: np.ndarray) -> np.ndarray:
    """``Z(p) / supply`` at one price vector (g,), by the fused kernel (deterministic).

    ``economy`` may also be a view whose rows live on shards
    (:class:`tatonnet.distributed.views.EconomyView`): it sums on them, in the same order.
    """
    if not isinstance(economy, Economy):
        return economy.relative_excess_demand(np.asarray(prices, dtype=float))
    arrays = economy.kernel_arrays()
    blocks = np.empty((kernel.n_blocks(economy.n_agents), economy.n_goods))
    use_threads(blocks.shape[0])
    kernel.excess_demand_blocks(np.asarray(prices, dtype=float), *arrays, 0, blocks)
    return kernel.sum_blocks(blocks) / economy.supply


def _free(economy: Economy) -> np.ndarray:
    return np.array([j for j in range(economy.n_goods) if j != economy.numeraire])


def compress(economy: Economy) -> Economy:
    """An economy with the same aggregate excess demand and one agent per distinct type.

    Demand and excess demand are linear in the endowment for fixed preferences, so ``c``
    identical agents act like one agent owning ``c`` times the endowment.
    """
    if getattr(economy, "block_supply", False):  # sums stay in block order (shard-built)
        return economy
    key = np.column_stack(
        [economy.endowments, economy.shares, economy.family.astype(float), economy.sigma]
    )
    rows, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    if rows.shape[0] == economy.n_agents:
        return economy
    return dataclasses.replace(
        economy,
        endowments=economy.endowments[first] * counts[:, None],
        shares=economy.shares[first],
        family=economy.family[first],
        sigma=economy.sigma[first],
    )


def method_description(economy: Economy, n_starts: int = 8) -> str:
    """One line saying how :func:`find_equilibria` searched this economy."""
    if economy.n_goods == 2:
        return f"complete 1-D scan: brentq on sign changes over {GRID_POINTS} log-price points"
    return f"numerical root finding from {n_starts} starts"


def find_equilibria(
    economy: Economy,
    n_starts: int = 8,
    seed: int = 0,
    accept: float = 1e-10,
    distinct: float = 1e-6,
) -> list[np.ndarray]:
    """Distinct equilibrium price vectors (g,) (numeraire = 1), sorted by price vector.

    Two goods: the complete scan of the module docstring (``n_starts``, ``seed`` unused).
    More goods: multi-start from ``n_starts`` starts (all prices 1, then seeded log-prices
    uniform in [-2, 2]). Each returned ``p`` satisfies ``max_j |Z_j(p)| / S_j < accept``;
    two roots are distinct when their prices differ by more than ``distinct`` relatively.
    """
    g = economy.n_goods
    free = _free(economy)

    def prices_of(x):
        p = np.ones(g)
        p[free] = np.exp(np.clip(x, -700, 700))
        return p

    def clears(p):
        with np.errstate(all="ignore"):
            z = relative_excess_demand(economy, p)
        return bool(np.all(np.isfinite(z))) and float(np.max(np.abs(z))) < accept

    found: list[np.ndarray] = []

    def keep(p):
        if clears(p) and not any(np.max(np.abs(p / q - 1)) < distinct for q in found):
            found.append(p)

    if g == 2:
        j = int(free[0])

        small = compress(economy)

        def z_free(x):
            with np.errstate(all="ignore"):
                if small is economy:  # shard-built: the block-ordered sum every engine takes
                    return relative_excess_demand(economy, prices_of(np.array([x])))[j]
                return small.aggregate_excess_demand(prices_of(np.array([x])))[j]

        grid = np.linspace(-np.log(PRICE_BOUND), np.log(PRICE_BOUND), GRID_POINTS)
        values = np.array([z_free(x) for x in grid])
        for k in np.flatnonzero(values == 0.0):
            keep(prices_of(grid[k : k + 1]))
        change = np.flatnonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)
        for k in change:
            x = scipy.optimize.brentq(z_free, grid[k], grid[k + 1], xtol=1e-14)
            keep(prices_of(np.array([x])))
        return sorted(found, key=tuple)

    def residual(x):
        with np.errstate(all="ignore"):
            return relative_excess_demand(economy, prices_of(x))[free]

    rng = np.random.default_rng(seed)
    starts = [np.zeros(free.size)] + [rng.uniform(-2, 2, free.size) for _ in range(n_starts - 1)]
    for x0 in starts:
        for method in ("hybr", "lm"):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                sol = scipy.optimize.root(residual, x0, method=method, options={"xtol": 1e-14})
            if not np.isfinite(sol.x).all():
                continue
            p = prices_of(sol.x)
            if clears(p):
                keep(p)
                break
    return sorted(found, key=tuple)


@dataclasses.dataclass(frozen=True)
class Stability:
    """Local stability of one equilibrium under the tâtonnement ODE of the free goods.

    Attributes
    ----------
    prices : (g,) the equilibrium (numeraire = 1)
    space : "price" or "log" — the coordinates the rule moves (``u``)
    jacobian : (g-1, g-1) ``d (Z_F / S_F) / d u_F`` at the equilibrium
    eigenvalues : (g-1,) complex
    stable : bool — every eigenvalue has a negative real part (continuous time)
    max_stable_step : float — the discrete rule ``u <- u + step * Z/S`` is locally stable
        for ``0 < step < max_stable_step``: ``min_k -2 Re(l_k) / |l_k|^2`` (0 if unstable)
    """

    prices: np.ndarray
    space: str
    jacobian: np.ndarray
    eigenvalues: np.ndarray
    stable: bool
    max_stable_step: float

    def as_dict(self) -> dict:
        """JSON-friendly form (eigenvalues as real and imaginary parts)."""
        return {
            "prices": self.prices.tolist(),
            "space": self.space,
            "eigenvalues_real": self.eigenvalues.real.tolist(),
            "eigenvalues_imag": self.eigenvalues.imag.tolist(),
            "stable": self.stable,
            "max_stable_step": self.max_stable_step,
        }


def stability(economy: Economy, prices: np.ndarray, space: str = "log", h: float = 1e-6):
    """:class:`Stability` of the equilibrium ``prices`` (g,) for a rule in ``space``.

    Central differences with relative step ``h`` in ``u`` (the rule's coordinates);
    cost: ``2 (g - 1)`` excess-demand evaluations.
    """
    if space not in ("log", "price"):
        raise ValueError(f"space must be 'log' or 'price', got {space!r}")
    p = np.asarray(prices, dtype=float) / prices[economy.numeraire]
    free = _free(economy)
    J = np.empty((free.size, free.size))
    for c, j in enumerate(free):
        cols = []
        for sign in (1.0, -1.0):
            q = p.copy()
            if space == "log":
                q[j] = p[j] * np.exp(sign * h)
            else:
                q[j] = p[j] + sign * h * p[j]
            cols.append(relative_excess_demand(economy, q)[free])
        J[:, c] = (cols[0] - cols[1]) / (2 * h * (1.0 if space == "log" else p[j]))
    lam = np.linalg.eigvals(J)
    # finite differences are accurate to ~h^2 relative: a real part within 1e-7 of the
    # spectral radius is zero (a centre, as in Scarf's economy), which is not stable
    stable = bool(np.all(lam.real < -1e-7 * max(float(np.abs(lam).max()), 1e-300)))
    step = float(np.min(-2 * lam.real / np.abs(lam) ** 2)) if stable else 0.0
    return Stability(p, space, J, lam, stable, step)


def distance(prices: np.ndarray, reference: np.ndarray) -> float:
    """Largest relative price difference ``max_j |p_j / p*_j - 1|`` (numeraire-normalized)."""
    return float(np.max(np.abs(np.asarray(prices) / np.asarray(reference) - 1.0)))


def nearest(prices: np.ndarray, references: list[np.ndarray]) -> tuple[int, float] | None:
    """Index of and distance to the nearest reference equilibrium, or None if there is none."""
    if not references:
        return None
    d = [distance(prices, r) for r in references]
    k = int(np.argmin(d))
    return k, d[k]


def reference_equilibria(economy: Economy, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """The reference equilibria of ``economy`` and how they were found (one line).

    Fisher markets: the Eisenberg–Gale program (:mod:`tatonnet.environment.fisher`); all-Cobb–Douglas
    economies: the closed form; otherwise :func:`find_equilibria`. An empty list means none
    was found, and the method line says why.
    """
    from tatonnet.agents.utility import Family
    from tatonnet.environment import fisher

    if not getattr(economy, "block_supply", False) and fisher.is_fisher(economy):
        try:
            return [fisher.equilibrium_prices(economy)], "Eisenberg-Gale convex program (cvxpy)"
        except ValueError as exc:  # EconomyError: solver failure or a good left over
            return [], str(exc)
    if economy.families() == {int(Family.COBB_DOUGLAS)}:
        try:
            return [cobb_douglas_equilibrium(economy)], "closed form (Cobb-Douglas)"
        except ValueError:
            pass
    return find_equilibria(economy, seed=seed), method_description(economy)
