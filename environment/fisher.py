"""Fisher markets: buyers with budgets, sellers with goods; Eisenberg–Gale and proportional response.

A Fisher market has ``n`` buyers with budgets ``B_i > 0`` and utilities of the CES family
over ``m`` goods (weights ``a_ij >= 0``; linear, Cobb–Douglas, Leontief or CES with
elasticity ``sigma``), and a fixed supply ``s_j > 0`` of each good. Prices ``p`` clear it
when every buyer spends its budget on a utility-maximizing bundle and ``sum_i x_ij = s_j``.

Three things live here:

* :class:`FisherMarket` — the market, validated, and its mapping onto the exchange
  :class:`~tatonnet.environment.economy.Economy` (:meth:`FisherMarket.to_economy`): money is good 0
  (the numeraire); buyers own money only and value goods only; sellers own the goods and
  value money only (Cobb–Douglas on money). Every tâtonnement rule runs on that economy
  unchanged, and its Walrasian prices are the Fisher prices (with ``p_money = 1``).
  :meth:`FisherMarket.from_economy` recognizes such an economy again.
* :func:`eisenberg_gale` — the reference solution: the Eisenberg–Gale convex program
  ``max sum_i B_i log u_i(x_i)  s.t.  sum_i x_ij <= s_j, x >= 0`` solved with cvxpy
  (Clarabel); equilibrium prices are the duals of the supply constraints.
* Proportional-response dynamics (Wu & Zhang 2007; Zhang 2011; Cheung, Cole & Tao 2018),
  central (:class:`CentralProportionalResponse`) and decentralized on a graph
  (:class:`NetworkProportionalResponse`), registered as the engine
  ``"proportional-response"`` of :class:`tatonnet.agents.rules.proportional_response.ProportionalResponse`.

The utility parameterization is that of :mod:`tatonnet.agents.utility`: a CES buyer has
``u(x) = (sum_j a_j^(1/sigma) x_j^rho)^(1/rho)`` with ``rho = (sigma - 1) / sigma``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import scipy.sparse

from tatonnet.agents.rules import RuleError
from tatonnet.agents.utility import Family
from tatonnet.environment.economy import Economy, EconomyError
from tatonnet.environment.network import Network
from tatonnet.environment.tatonnement.dynamics import MarketState, RoundMetrics
from tatonnet.environment.tatonnement.rows import RowRound, RowRoundDynamics, Rows

#: Smallest price a network agent's estimate may take (money units): tracking estimates can
#: be zero or negative before consensus has spread the bids.
ESTIMATE_FLOOR = 1e-6


def _family_sigma(code: int) -> float:
    return {Family.LINEAR: math.inf, Family.COBB_DOUGLAS: 1.0, Family.LEONTIEF: 0.0}[code]


def fisher_sigma(family: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Each buyer's elasticity (n,): inf linear, 1 Cobb–Douglas, 0 Leontief, CES its own."""
    for code in (Family.LINEAR, Family.COBB_DOUGLAS, Family.LEONTIEF):
        sigma = np.where(family == code, _family_sigma(code), sigma)
    return sigma


def buyer_rows(endowments: np.ndarray, shares: np.ndarray, numeraire: int) -> np.ndarray:
    """Which rows of an exchange economy are Fisher buyers (n,) bool: they own money (the
    numeraire) only and value goods only (see :meth:`FisherMarket.from_economy`)."""
    e, a, c = endowments, shares, numeraire
    goods = np.arange(e.shape[1]) != c
    return (e[:, c] > 0) & (e[:, goods] == 0).all(axis=1) & (a[:, c] == 0)


@dataclasses.dataclass(frozen=True, eq=False)
class FisherMarket:
    """A Fisher market of ``n_buyers`` buyers and ``n_goods`` goods.

    Attributes
    ----------
    budgets : (n,) float64, positive
    valuations : (n, m) float64, non-negative utility weights ``a_ij``; every buyer values
        some good and every good is valued by some buyer (else its price would be 0)
    family : (n,) int8 :class:`tatonnet.agents.utility.Family` codes
    sigma : (n,) float64 elasticity (inf linear, 1 Cobb–Douglas, 0 Leontief, CES positive)
    supplies : (m,) float64, positive (default: one unit of each good)
    goods : tuple of m names
    """

    budgets: np.ndarray
    valuations: np.ndarray
    family: np.ndarray
    sigma: np.ndarray
    supplies: np.ndarray | None = None
    goods: tuple[str, ...] = ()

    def __post_init__(self):
        b = np.asarray(self.budgets, dtype=float)
        a = np.asarray(self.valuations, dtype=float)
        if a.ndim != 2 or b.shape != (a.shape[0],):
            raise EconomyError(
                f"fisher: budgets {b.shape} and valuations {a.shape} must be (n,), (n, m)"
            )
        n, m = a.shape
        fam = np.asarray(self.family, dtype=np.int8).reshape(-1)
        if fam.size == 1:
            fam = np.full(n, fam[0], dtype=np.int8)
        sig = np.asarray(self.sigma, dtype=float).reshape(-1)
        if sig.size == 1:
            sig = np.full(n, sig[0])
        s = np.ones(m) if self.supplies is None else np.asarray(self.supplies, dtype=float)
        if fam.shape != (n,) or sig.shape != (n,) or s.shape != (m,):
            raise EconomyError(
                "fisher: family and sigma need one entry per buyer, supplies one per good"
            )
        if m < 1 or n < 1:
            raise EconomyError(f"fisher: needs at least one buyer and one good, got {n} and {m}")
        if not np.isin(fam, [int(f) for f in Family]).all():
            raise EconomyError("fisher: unknown utility family code")
        if not (np.isfinite(b).all() and (b > 0).all()):
            raise EconomyError("fisher: budgets must be positive and finite")
        if not (np.isfinite(a).all() and (a >= 0).all()):
            raise EconomyError("fisher: valuations must be finite and non-negative")
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise EconomyError("fisher: supplies must be positive and finite")
        if (a.sum(axis=1) <= 0).any():
            raise EconomyError(f"fisher: buyer {int(np.argmin(a.sum(axis=1)))} values no good")
        if (a.sum(axis=0) <= 0).any():
            raise EconomyError(
                f"fisher: good {int(np.argmin(a.sum(axis=0)))} is valued by no buyer (its price would be 0)"
            )
        ces = fam == Family.CES
        if not (np.isfinite(sig[ces]).all() and (sig[ces] > 0).all()):
            raise EconomyError("fisher: a CES elasticity sigma must be positive and finite")
        sig = fisher_sigma(fam, sig)
        goods = tuple(self.goods) or tuple(f"good{j + 1}" for j in range(m))
        if len(goods) != m:
            raise EconomyError(f"fisher: {len(goods)} names for {m} goods")
        for name, value in (("budgets", b), ("valuations", a), ("family", fam), ("sigma", sig),
                            ("supplies", s), ("goods", goods)):  # fmt: skip
            object.__setattr__(self, name, value)

    @property
    def n_buyers(self) -> int:
        return self.valuations.shape[0]

    @property
    def n_goods(self) -> int:
        return self.valuations.shape[1]

    def to_economy(
        self, n_sellers: int | None = None, money: str = "money"
    ) -> tuple[Economy, np.ndarray]:
        """The exchange economy of this market; returns ``(economy, is_buyer)``.

        Rows ``0..n-1`` are the buyers (endowment ``(B_i, 0, ..., 0)``, weights ``(0, a_i)``,
        their own family); rows ``n..n+n_sellers-1`` the sellers: seller ``k`` sells good
        ``k mod m`` (default one seller per good), the supply of a good split equally among
        its sellers, and values money only (Cobb–Douglas with weight on money alone). Good 0
        is money, the numeraire; ``economy.n_goods == m + 1``.
        """
        n, m = self.n_buyers, self.n_goods
        k = m if n_sellers is None else int(n_sellers)
        if k < m:
            raise EconomyError(f"fisher: {k} sellers for {m} goods; every good needs a seller")
        sells = np.arange(k) % m
        per_seller = self.supplies[sells] / np.bincount(sells, minlength=m)[sells]
        endow = np.zeros((n + k, m + 1))
        endow[:n, 0] = self.budgets
        endow[n + np.arange(k), 1 + sells] = per_seller
        shares = np.zeros((n + k, m + 1))
        shares[:n, 1:] = self.valuations
        shares[n:, 0] = 1.0
        family = np.concatenate([self.family, np.full(k, Family.COBB_DOUGLAS, dtype=np.int8)])
        sigma = np.concatenate([self.sigma, np.ones(k)])
        economy = Economy(endow, shares, family, sigma, 0, (money, *self.goods))
        return economy, np.arange(n + k) < n

    @classmethod
    def from_economy(cls, economy: Economy) -> tuple[FisherMarket, np.ndarray]:
        """Recognize a Fisher-shaped exchange economy; returns ``(market, is_buyer)`` (n_agents,).

        Money is the numeraire. Buyers own money only and value goods only; sellers own no
        money and value money only. Raises :class:`EconomyError` (one line) otherwise.
        """
        e, a, c = economy.endowments, economy.shares, economy.numeraire
        goods = np.arange(economy.n_goods) != c
        buyer = buyer_rows(e, a, c)
        seller = (e[:, c] == 0) & (a[:, goods] == 0).all(axis=1)
        odd = ~(buyer | seller)
        if odd.any() or not buyer.any():
            i = int(np.argmax(odd)) if odd.any() else 0
            raise EconomyError(
                "not a Fisher market: every agent must be a buyer (owns only the numeraire "
                f"good, money, and values only goods) or a seller (owns goods, values only "
                f"money); agent {i} is neither"
                if odd.any()
                else "not a Fisher market: no buyer"
            )
        market = cls(
            e[buyer, c], a[buyer][:, goods], economy.family[buyer], economy.sigma[buyer],
            e[seller][:, goods].sum(axis=0), tuple(str(economy.goods[j]) for j in np.flatnonzero(goods)),
        )  # fmt: skip
        return market, buyer


def is_fisher(economy: Economy) -> bool:
    """Whether ``economy`` has the shape of a Fisher market (see :meth:`FisherMarket.from_economy`)."""
    try:
        FisherMarket.from_economy(economy)
    except EconomyError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Eisenberg–Gale
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EGSolution:
    """Solution of the Eisenberg–Gale program.

    ``prices`` (m,) equilibrium prices in money (duals of the supply constraints);
    ``allocation`` (n, m); ``utilities`` (n,); ``status`` the solver's status string.
    """

    prices: np.ndarray
    allocation: np.ndarray
    utilities: np.ndarray
    status: str


#: Tight tolerances: the prices are read off the duals, which the defaults give to ~1e-4.
SOLVER_OPTIONS = {
    "CLARABEL": {
        "tol_gap_abs": 1e-12,
        "tol_gap_rel": 1e-12,
        "tol_feas": 1e-12,
        "tol_ktratio": 1e-10,
        "max_iter": 500,
    },
}


def eisenberg_gale(market: FisherMarket, solver: str = "CLARABEL") -> EGSolution:
    """Solve ``max sum_i B_i log u_i(x_i)  s.t.  sum_i x_ij <= s_j,  x >= 0`` (cvxpy).

    Notes
    -----
    One variable per pair ``(i, j)`` with ``a_ij > 0`` (a buyer never gets a good it does
    not value at the optimum). Per family, ``log u_i`` is written in conic form:

    * linear: ``log(sum_j a_ij x_ij)``; Cobb–Douglas: ``sum_j (a_ij / sum_k a_ik) log x_ij``;
    * Leontief: ``log u_i`` with ``x_ij >= a_ij u_i``;
    * CES, ``rho = (sigma - 1)/sigma``, ``c_ij = a_ij^(1/sigma)``: ``u_i <= (sum_j c_ij
      x_ij^rho)^(1/rho)`` is, for ``0 < rho < 1``, ``u_i <= sum_j t_ij`` with ``t_ij / c_ij <=
      x_ij^rho u_i^(1-rho)`` and, for ``rho < 0``, ``sum_j t_ij <= u_i`` with ``u_i <=
      (t_ij / c_ij)^(1/(1-rho)) x_ij^(-rho/(1-rho))`` — power cones.

    By KKT the supply constraints' multipliers are the equilibrium prices, and
    ``sum_j p_j s_j = sum_i B_i``. With :data:`SOLVER_OPTIONS` the prices agree with
    closed forms to ~1e-9 and satisfy that identity to ~1e-6 relative at worst (measured on
    small mixed markets). A status ``optimal_inaccurate`` is accepted and kept in
    ``status``: then budgets are met to ~1e-5 relative (measured worst 1.2e-5, a market
    mixing linear and Leontief buyers). Raises
    :class:`EconomyError` if the solver fails.
    """
    import cvxpy as cp

    n, m = market.n_buyers, market.n_goods
    a, B, fam, sig = market.valuations, market.budgets, market.family, market.sigma
    rows, cols = np.nonzero(a > 0)
    nnz = rows.size
    x = cp.Variable(nnz, nonneg=True)
    S = scipy.sparse.csr_array((np.ones(nnz), (cols, np.arange(nnz))), shape=(m, nnz))
    supply = S @ x <= market.supplies
    constraints = [supply]
    objective = 0
    for code in np.unique(fam):
        members = np.flatnonzero(fam == code)
        mask = np.isin(rows, members)
        k = np.flatnonzero(mask)
        local = np.searchsorted(members, rows[k])
        R = scipy.sparse.csr_array((np.ones(k.size), (local, np.arange(k.size))),
                                   shape=(members.size, k.size))  # fmt: skip
        Bm = B[members]
        if code == Family.LINEAR:
            objective += Bm @ cp.log(R @ cp.multiply(a[rows[k], cols[k]], x[k]))
        elif code == Family.COBB_DOUGLAS:
            w = a[rows[k], cols[k]] / a[members].sum(axis=1)[local]
            objective += (Bm[local] * w) @ cp.log(x[k])
        elif code == Family.LEONTIEF:
            u = cp.Variable(members.size, nonneg=True)
            constraints.append(x[k] >= cp.multiply(a[rows[k], cols[k]], R.T @ u))
            objective += Bm @ cp.log(u)
        else:
            s_ = sig[members]
            for sigma in np.unique(s_):  # one rho per block of buyers
                sub = members[s_ == sigma]
                objective += _ces_block(cp, x, rows, cols, a, B, sub, float(sigma), constraints)
    problem = cp.Problem(cp.Maximize(objective), constraints)
    try:
        with warnings.catch_warnings():  # "may be inaccurate": the status says so below
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=solver, **SOLVER_OPTIONS.get(solver, {}))
    except cp.error.SolverError as exc:
        raise EconomyError(f"Eisenberg-Gale: solver {solver} failed: {exc}") from None
    if problem.status not in ("optimal", "optimal_inaccurate") or supply.dual_value is None:
        raise EconomyError(f"Eisenberg-Gale: solver status {problem.status!r}")
    alloc = np.zeros((n, m))
    alloc[rows, cols] = np.maximum(x.value, 0.0)
    prices = np.asarray(supply.dual_value, dtype=float)
    utilities = _utilities(market, alloc)
    return EGSolution(prices, alloc, utilities, problem.status)


def _ces_block(cp, x, rows, cols, a, B, sub, sigma, constraints):
    """``sum_{i in sub} B_i log u_i`` for CES buyers ``sub`` of one ``sigma`` (power cones)."""
    if sigma == 1.0:  # the Cobb-Douglas limit
        mask = np.isin(rows, sub)
        k = np.flatnonzero(mask)
        local = np.searchsorted(sub, rows[k])
        w = a[rows[k], cols[k]] / a[sub].sum(axis=1)[local]
        return (B[sub][local] * w) @ cp.log(x[k])
    rho = (sigma - 1.0) / sigma
    k = np.flatnonzero(np.isin(rows, sub))
    local = np.searchsorted(sub, rows[k])
    R = scipy.sparse.csr_array(
        (np.ones(k.size), (local, np.arange(k.size))), shape=(sub.size, k.size)
    )
    c = a[rows[k], cols[k]] ** (1.0 / sigma)
    u = cp.Variable(sub.size, nonneg=True)
    t = cp.Variable(k.size)
    ui = R.T @ u
    if rho > 0:
        constraints += [cp.PowCone3D(x[k], ui, cp.multiply(1.0 / c, t), rho), R @ t >= u]
    else:
        alpha = 1.0 / (1.0 - rho)
        constraints += [cp.PowCone3D(cp.multiply(1.0 / c, t), x[k], ui, alpha), R @ t <= u]
    return B[sub] @ cp.log(u)


def _utilities(market: FisherMarket, alloc: np.ndarray) -> np.ndarray:
    from tatonnet.agents import utility

    return utility.utility(alloc, market.valuations, market.family, market.sigma)


#: An EG price below this fraction of the largest one counts as zero (a good left over).
ZERO_PRICE = 1e-7


def equilibrium_prices(economy: Economy) -> np.ndarray:
    """The exchange economy's equilibrium price vector (g,), numeraire (money) = 1, from EG.

    Raises :class:`EconomyError` if a good is left over at equilibrium (price 0: Leontief
    buyers can leave some good slack), since exchange prices must be positive.
    """
    market, _ = FisherMarket.from_economy(economy)
    sol = eisenberg_gale(market)
    if (sol.prices <= ZERO_PRICE * sol.prices.max()).any():
        j = int(np.argmin(sol.prices))
        raise EconomyError(
            f"Eisenberg-Gale: good {market.goods[j]!r} is left over at equilibrium (price "
            f"{sol.prices[j]:.2g}); the exchange economy has no positive-price equilibrium"
        )
    goods = np.arange(economy.n_goods) != economy.numeraire
    p = np.ones(economy.n_goods)
    p[goods] = sol.prices
    return p


# ---------------------------------------------------------------------------------------
# Proportional response
# ---------------------------------------------------------------------------------------


def respond(bids: np.ndarray, prices: np.ndarray, market: FisherMarket) -> np.ndarray:
    """Proportional response of every buyer: next bids (n, m) from bids and prices (n, m).

    ``b'_ij = B_i w_ij / sum_k w_ik`` with, by family (``rho = (sigma - 1)/sigma``):

    * linear (Wu & Zhang 2007): ``w_ij = a_ij x_ij``, ``x_ij = b_ij / p_ij`` — the utility
      each good gave;
    * CES substitutes, ``sigma > 1`` (Zhang 2011): ``w_ij = a_ij^(1/sigma) x_ij^rho`` — the
      utility share of good j;
    * Cobb–Douglas, CES complements ``sigma < 1`` and Leontief (Cheung, Cole & Tao 2018,
      who use the best response for ``rho < 0``): ``w_ij = a_ij p_ij^(1 - sigma)`` — the
      buyer's demand-spending at the prices (Leontief: ``a_ij p_ij``).
    """
    return respond_rows(bids, prices, market.valuations, market.sigma, market.budgets)


def respond_rows(bids: np.ndarray, prices: np.ndarray, valuations: np.ndarray,
                 sigma: np.ndarray, budgets: np.ndarray) -> np.ndarray:  # fmt: skip
    """:func:`respond` for buyers given by rows: bids, prices, valuations (n, m), elasticities
    (:func:`fisher_sigma`) and budgets (n,). Each row's result depends on that row alone."""
    a, sig = valuations, sigma[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = bids / prices
        subst = np.where(np.isinf(sig), a * x, a ** (1.0 / sig) * x ** ((sig - 1.0) / sig))
        compl = a * prices ** (1.0 - sig)
        w = np.where(sig > 1.0, subst, compl)
        w = np.where(a > 0, w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    ok = (total > 0) & np.isfinite(total)
    return np.where(ok, budgets[:, None] * w / np.where(ok, total, 1.0), bids)


def _fisher_of(economy: Economy, rule) -> tuple[FisherMarket, np.ndarray]:
    try:
        return FisherMarket.from_economy(economy)
    except EconomyError as exc:
        raise RuleError(
            f"rule {rule.name!r} needs a Fisher market: {str(exc).removeprefix('not a Fisher market: ')}"
        ) from None


class _ProportionalResponse:
    """Shared set-up of the central and network proportional-response dynamics."""

    space = "log"

    def __init__(self, economy: Economy, network: Network, rule, signal: str):
        self.economy, self.network, self.rule = economy, network, rule
        self.market, self.is_buyer = _fisher_of(economy, rule)
        self.buyers = np.flatnonzero(self.is_buyer)
        self.money = economy.numeraire
        self.goods = np.flatnonzero(np.arange(economy.n_goods) != self.money)
        self.supply = economy.supply
        self.damping = float(rule.step_size)
        self.n_blocks = 1

    def _initial_bids(self, prices: np.ndarray) -> np.ndarray:
        """``b_ij = B_i a_ij p_ij / sum_k a_ik p_k`` at the buyers' initial prices (n_buyers, m)."""
        w = self.market.valuations * prices
        return self.market.budgets[:, None] * w / w.sum(axis=1, keepdims=True)

    def _full(self, goods_part: np.ndarray, money: float | np.ndarray = 0.0) -> np.ndarray:
        out = np.empty(goods_part.shape[:-1] + (self.economy.n_goods,))
        out[..., self.goods] = goods_part
        out[..., self.money] = money
        return out

    def prices(self, state: MarketState) -> np.ndarray:
        """Each agent's prices (n, g) (one row under central), money = 1."""
        return np.exp(state.coords)


def make_proportional_response(economy: Economy, network: Network, rule, signal="tracking"):
    """Factory for :func:`tatonnet.environment.engines.make_dynamics`: central or network PR."""
    if network.is_central:
        return CentralProportionalResponse(economy, network, rule, signal)
    return NetworkProportionalResponse(economy, network, rule, signal)


class CentralProportionalResponse(_ProportionalResponse):
    """Proportional response with exact sums: ``p_j = sum_i b_ij / s_j`` seen by all.

    Parameters
    ----------
    economy : Economy of Fisher shape (see :meth:`FisherMarket.from_economy`)
    network : Network (central)
    rule : ProportionalResponse (``step_size`` = damping ``eta`` in (0, 1])

    Notes
    -----
    State (one row, like the central auctioneer): ``coords`` (1, g) log-prices (money 0);
    ``buffers`` (n_agents, 2, g): row ``i``'s bids ``b_i`` (money column 0) and its
    response ``r_i = respond(b, p)`` at the current prices (sellers: zeros). A round is::

        b <- (1 - eta) b + eta r;   p_j <- sum_i b_ij / s_j;   r <- respond(b, p)

    Goods are always cleared by allocation ``x_ij = b_ij / p_j``. The reported excess
    demand is that of the buyers' *response*: buyers demand ``r_ij / p_j`` (for Cobb–
    Douglas, complements and Leontief this is their Marshallian demand at ``p``), sellers
    demand their income ``p . e_k`` in money; relative to supply, so for goods it equals
    ``(sum_i r_ij - sum_i b_ij) / (p_j s_j)``: zero exactly at a fixed point, and the fixed
    points with positive bids are the equilibria. Each buyer sends its m bids and receives
    m prices per round.
    """

    signal = "central"

    def init_state(self, prices: np.ndarray) -> MarketState:
        prices = np.asarray(prices, dtype=float).reshape(-1)
        prices = prices / prices[self.money]
        b = self._initial_bids(np.broadcast_to(prices[self.goods], self.market.valuations.shape))
        return self._state(b, 0)

    def _state(self, b: np.ndarray, round_: int) -> MarketState:
        p = b.sum(axis=0) / self.market.supplies
        r = respond(b, np.broadcast_to(p, b.shape), self.market)
        n, g = self.economy.n_agents, self.economy.n_goods
        buffers = np.zeros((n, 2, g))
        buffers[self.buyers, 0] = self._full(b)
        buffers[self.buyers, 1] = self._full(r)
        pfull = self._full(p, 1.0)
        excess = self._full(
            (r.sum(axis=0) - b.sum(axis=0)) / p,
            p @ self.market.supplies - self.market.budgets.sum(),
        )
        return MarketState(np.log(pfull)[None, :], pfull[None, :], excess[None, :], buffers, round_)

    def step(self, state: MarketState, spare=None):
        """One round; returns ``(new_state, metrics)``."""
        b = state.buffers[self.buyers, 0][:, self.goods]
        r = state.buffers[self.buyers, 1][:, self.goods]
        new = self._state((1.0 - self.damping) * b + self.damping * r, state.round + 1)
        logp = new.coords[0]
        metrics = RoundMetrics(new.round, new.excess[0] / self.supply, np.exp(logp), logp, logp)
        return new, metrics


class ProportionalResponseRound(RowRound):
    """The decentralized proportional-response round on a set of rows (one exchange).

    Exchange: neighbours' tracked average bids ``y`` (the goods' columns of ``tracker``);
    then every agent ``k`` (a seller bids 0)::

        b_k  <- (1 - eta) b_k + eta r_k            # r_k: its response at its estimates
        y_k  <- sum_l W_kl y_l + b_k(new) - b_k(old)
        phat_k = max(N y_k / s, ESTIMATE_FLOOR);  r_k = respond(b_k, phat_k)

    ``N`` (the number of agents) and the supplies ``s`` are the market's, common knowledge
    (constants of the round). See :class:`NetworkProportionalResponse` for the state.
    """

    def __init__(self, rule, numeraire: int, n_goods: int, supplies: np.ndarray, n_agents: int):
        super().__init__(rule, "tracking", numeraire, n_goods)
        self.money = numeraire
        self.goods = np.flatnonzero(np.arange(n_goods) != numeraire)
        self.supplies = np.asarray(supplies, dtype=float)
        self.n_agents = int(n_agents)
        self.damping = float(rule.step_size)
        self.exchanges = (("tracker",),)

    def columns(self, name: str) -> np.ndarray | None:
        return self.goods  # the tracker's money column is always 0: it does not travel

    def prepare(self, rows: Rows) -> Rows:
        """The buyers among the rows, their budgets, valuations and elasticities, and the
        goods each seller owns (zero on buyer rows)."""
        e, a, family, sigma = rows.arrays
        is_buyer = buyer_rows(e, a, self.money)
        buyers = np.flatnonzero(is_buyer)
        seller_goods = e[:, self.goods]
        seller_goods[buyers] = 0.0
        extra = {
            "is_buyer": is_buyer,
            "buyers": buyers,
            "budgets": e[buyers, self.money],
            "valuations": a[buyers][:, self.goods],
            "sigma": fisher_sigma(family[buyers], sigma[buyers].astype(float)),
            "seller_goods": seller_goods,
        }
        return dataclasses.replace(rows, extra=extra)

    def _full(self, goods_part: np.ndarray, money: float | np.ndarray = 0.0) -> np.ndarray:
        out = np.empty(goods_part.shape[:-1] + (self.n_goods,))
        out[..., self.goods] = goods_part
        out[..., self.money] = money
        return out

    def _state(self, rows: Rows, b: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        """The state fields from bids ``b`` (o, m) and trackers ``y`` (o, m)."""
        x = rows.extra
        buyers = x["buyers"]
        phat = np.maximum(self.n_agents * y / self.supplies, ESTIMATE_FLOOR)
        r = np.zeros_like(b)
        r[buyers] = respond_rows(b[buyers], phat[buyers], x["valuations"], x["sigma"],
                                 x["budgets"])  # fmt: skip
        buffers = np.stack([self._full(b), self._full(r)], axis=1)
        excess = self._full(r / phat, 0.0)
        excess[buyers, self.money] = -x["budgets"]
        income = (phat * x["seller_goods"]).sum(axis=1)
        sellers = ~x["is_buyer"]
        excess[sellers, self.money] = income[sellers]
        excess[:, self.goods] -= x["seller_goods"]
        return {"coords": np.log(self._full(phat, 1.0)), "tracker": self._full(y),
                "excess": excess, "buffers": buffers}  # fmt: skip

    def init(self, rows: Rows, prices: np.ndarray) -> dict[str, np.ndarray]:
        """Bids ``b_ij = B_i a_ij p_ij / sum_k a_ik p_k`` at the buyers' initial prices;
        ``y = b``."""
        x = rows.extra
        b = np.zeros((rows.n_own, self.goods.size))
        w = x["valuations"] * prices[x["buyers"]][:, self.goods]
        b[x["buyers"]] = x["budgets"][:, None] * w / w.sum(axis=1, keepdims=True)
        return self._state(rows, b, b.copy())

    def phase(self, p: int, rows: Rows, f: dict, round_: int) -> dict[str, np.ndarray]:
        b = f["buffers"][:, 0][:, self.goods]
        r = f["buffers"][:, 1][:, self.goods]
        y = f["tracker"][:, self.goods]  # the source rows: own, then the neighbours'
        b_new = (1.0 - self.damping) * b + self.damping * r
        y_new = rows.mixing @ y + b_new - b
        return self._state(rows, b_new, y_new)


class NetworkProportionalResponse(RowRoundDynamics):
    """Decentralized proportional response: prices estimated by gradient tracking of bids.

    Parameters
    ----------
    economy : Economy of Fisher shape; network : Network (a graph, same agents);
    rule : ProportionalResponse (``step_size`` = damping ``eta`` in (0, 1]); signal : ignored
        (the estimate is always tracked).

    Notes
    -----
    The price of good j is ``sum_i b_ij / s_j``, a total no agent sees. Every agent k
    (buyer or seller; a seller bids 0) carries ``y_k`` (m,), an estimate of the network
    *average* bid, kept by gradient tracking (dynamic average consensus) with the
    Metropolis weights ``W`` of ``network.mixing``::

        phat_k = max(N y_k / s, ESTIMATE_FLOOR)          # its price estimates
        b_k   <- (1 - eta) b_k + eta respond(b_k, phat_k)  # buyers only
        y_k   <- sum_l W_kl y_l + b_k(new) - b_k(old)

    with ``y_k(0) = b_k(0)``. Since ``W`` is doubly stochastic, ``mean_k y_k = mean_k b_k``
    every round, so at consensus every estimate is the true price; a fixed point
    (consensus, ``b = respond(b, p)``) is the Fisher equilibrium. ``N`` (the number of
    agents) and the supplies ``s`` are common knowledge. Per round each agent sends its m
    tracked values to each neighbour (``message_floats = g - 1``). The round is
    :class:`ProportionalResponseRound`, which the sharded engine runs on its shards too.

    State: ``coords`` (N, g) log price estimates (money 0); ``tracker`` (N, g) ``y``
    (money column 0); ``buffers`` (N, 2, g) bids and the response at the agent's own
    estimates; ``excess`` (N, g) each agent's excess demand at its own estimates (buyers
    demand ``r_k / phat_k``, sellers their income ``phat_k . e_k`` in money), as in
    :class:`CentralProportionalResponse`. Metrics are reduced from per-block partial sums,
    as for every network dynamics.
    """

    def __init__(self, economy: Economy, network: Network, rule, signal: str = "tracking"):
        if network.n_agents != economy.n_agents:
            raise ValueError(f"network has {network.n_agents} agents, economy {economy.n_agents}")
        self.market, self.is_buyer = _fisher_of(economy, rule)
        self.buyers = np.flatnonzero(self.is_buyer)
        self.money = economy.numeraire
        self.goods = np.flatnonzero(np.arange(economy.n_goods) != self.money)
        self.damping = float(rule.step_size)
        super().__init__(economy, network, rule, "tracking")

    def make_round(self) -> ProportionalResponseRound:
        e = self.economy
        return ProportionalResponseRound(self.rule, e.numeraire, e.n_goods, self.market.supplies,
                                         e.n_agents)  # fmt: skip
