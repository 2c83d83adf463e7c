"""Price geometry as a choice, and the optimizer toolbox (schedules, clipping, normalized
steps) of every first-order rule.

Known answers: every first-order rule, in each geometry, reaches the Cobb–Douglas closed
form, a CES gross-substitutes equilibrium and the Eisenberg–Gale prices of a Fisher market
(central auctioneer), and the closed form on a graph (fused kernel). Equivalence: the
defaults are today's trajectories (values recorded before the options existed), additive
and entropic are one rule in two geometries, the fused kernel equals the per-agent path
with options, sharded = unsharded bit for bit (also resumed from a checkpoint), the
layered market's one flow-reading merchant = the central auctioneer. Formulas: each
schedule's scale; clipping and normalization bound the step.

Steps and round budgets below were measured on these economies (tens of agents); every
run must reach ``max |Z/S| < 1e-10`` and land within the stated tolerance of the reference.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.sparse

from tatonnet.agents.rules import OPTIONS, RULES, RuleError, make_rule
from tatonnet.agents.rules.schedules import SCHEDULES, step_scale
from tatonnet.agents.utility import Family
from tatonnet.distributed.engine import ShardEngine
from tatonnet.environment import equilibrium, fisher
from tatonnet.environment.economy import Economy
from tatonnet.environment.engines import make_dynamics
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import Network, build_network
from tatonnet.environment.scenario import ScenarioError, load_scenario
from tatonnet.environment.tatonnement import kernel
from tatonnet.environment.tatonnement.dynamics import CentralTatonnement
from tatonnet.environment.trade.layered import make_layered_dynamics

#: The first-order rules: each steps in either geometry.
FIRST_ORDER = ["additive", "entropic", "momentum", "nesterov", "adam", "optimistic",
               "async-goods", "async-blocks", "extragradient"]  # fmt: skip
#: Rules meaningful in log space only.
LOG_ONLY = ["multiplicative", "newton", "proportional-response"]
#: The geometry each rule had as a class constant before it became an option.
DEFAULT_SPACE = {name: "price" if name == "additive" else "log" for name in RULES}

TOL = 1e-10


def _economy(family: Family, sigma: float, n=12, g=3, seed=1) -> Economy:
    rng = np.random.default_rng(seed)
    e = rng.uniform(0.5, 1.5, (n, g))
    a = rng.dirichlet(np.ones(g), n)
    return Economy(e, a, np.full(n, family, np.int8), np.full(n, sigma))


@functools.cache
def economies() -> dict[str, tuple[Economy, np.ndarray, float]]:
    """name -> (economy, reference prices (g,), relative tolerance on prices)."""
    cd = _economy(Family.COBB_DOUGLAS, 1.0, seed=1)
    ces = _economy(Family.CES, 2.0, seed=2)  # sigma = 2: gross substitutes, one equilibrium
    (ces_ref,) = equilibrium.find_equilibria(ces)
    rng = np.random.default_rng(3)
    market = fisher.FisherMarket(rng.uniform(0.5, 1.5, 10), rng.uniform(0.2, 1.0, (10, 3)),
                                 np.full(10, Family.CES, np.int8), np.full(10, 2.0),
                                 np.full(3, 2.0))  # fmt: skip
    fisher_economy, _ = market.to_economy()
    eg = fisher.eisenberg_gale(market).prices
    return {
        "cobb-douglas": (cd, equilibrium.cobb_douglas_equilibrium(cd), 1e-8),
        "ces-substitutes": (ces, ces_ref, 1e-8),
        "fisher-eg": (fisher_economy, np.concatenate([[1.0], eg]), 1e-7),
    }


def _run(dyn, prices0, rounds: int):
    state = dyn.init_state(prices0)
    for _ in range(rounds):
        state, m = dyn.step(state)
        if m.excess_demand < TOL and m.price_dispersion < TOL:
            return state, m
    return state, m


# ---------------------------------------------------------------------------------------
# The option and its validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RULES))
def test_space_defaults_to_the_rule_s_former_geometry(name):
    rule = make_rule(name)
    assert rule.space == DEFAULT_SPACE[name] == type(rule).space
    assert set(OPTIONS) <= {f for f in rule.__dataclass_fields__}
    assert rule.params()[0] == rule.step_size  # the options are not kernel parameters
    other = "log" if rule.space == "price" else "price"
    if name in FIRST_ORDER:
        assert make_rule(name, space=other).space == other
    else:
        with pytest.raises(RuleError, match=f"rule '{name}' is defined in log space only"):
            make_rule(name, space=other)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("momentum", {"space": "euclid"}, "space must be 'log' or 'price'"),
        ("momentum", {"schedule": "exp"}, "unknown schedule 'exp'"),
        ("momentum", {"schedule": "cosine"}, "needs horizon"),
        ("momentum", {"horizon": 100}, "horizon is only for the 'cosine' schedule"),
        ("adam", {"schedule": "cosine", "horizon": 0}, "horizon must be a whole number >= 1"),
        ("adam", {"schedule": "cosine", "horizon": 2.5}, "horizon must be a whole number"),
        ("entropic", {"warmup": -1}, "warmup must be a whole number >= 0"),
        ("entropic", {"warmup": math.inf}, "warmup must be a whole number"),
        ("entropic", {"clip": 0.0}, "clip must be a positive finite number"),
        ("entropic", {"clip": math.nan}, "clip must be a positive finite number"),
        ("entropic", {"clip": "big"}, "clip must be a positive finite number"),
        ("entropic", {"normalize": 1}, "normalize must be true or false"),
        ("entropic", {"clip": 1.0, "normalize": True}, "clip and normalize exclude each other"),
        ("newton", {"schedule": "1/t"}, "takes no schedule"),
        ("proportional-response", {"clip": 1.0}, "takes no schedule"),
        ("multiplicative", {"space": "price"}, "defined in log space only"),
        ("momentum", {"spaces": "log"}, "has no hyperparameter 'spaces'"),
    ],
)
def test_bad_options_are_one_line_rule_errors(name, options, message):
    with pytest.raises(RuleError, match=message) as info:
        make_rule(name, **options)
    assert "\n" not in str(info.value)


def test_the_dynamics_table_takes_the_options(tmp_path):
    text = """
name = "geometry"
goods = 3
[[agents]]
count = 12
utility = "cobb-douglas"
shares = { distribution = "dirichlet", alpha = 1.0 }
endowment = { distribution = "uniform", low = 0.5, high = 1.5 }
[network]
kind = "ring"
[dynamics]
rule = "momentum"
step_size = 0.1
space = "price"
schedule = "cosine"
horizon = 2000
warmup = 50
clip = 1.0
hyperparameters = { momentum = 0.4 }
"""
    path = tmp_path / "geometry.toml"
    path.write_text(text)
    rule = load_scenario(path).dynamics.make_rule()
    assert rule == make_rule("momentum", step_size=0.1, space="price", schedule="cosine",
                             horizon=2000, warmup=50, clip=1.0, momentum=0.4)  # fmt: skip
    for old, new, message in [
        ('space = "price"', 'space = "euclid"', "space must be 'log' or 'price', got 'euclid'"),
        ("horizon = 2000", "horizon = 20.5", "horizon must be a whole number"),
        ("momentum = 0.4 }", "momentum = 0.4, clip = 2.0 }", "clip is given twice"),
        ("clip = 1.0", "normalize = 1", "normalize: Input should be a valid boolean"),
    ]:
        path.write_text(text.replace(old, new))
        with pytest.raises(ScenarioError, match=message) as info:
            load_scenario(path)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# Known answers in both geometries
# ---------------------------------------------------------------------------------------

#: Central steps (measured: 20–420 rounds on all three economies in both geometries).
CENTRAL = {
    "additive": {"step_size": 0.7}, "entropic": {"step_size": 0.7},
    "momentum": {"step_size": 0.6, "momentum": 0.3},
    "nesterov": {"step_size": 0.6, "momentum": 0.3},
    "adam": {"step_size": 0.05}, "optimistic": {"step_size": 0.3},
    "async-goods": {"step_size": 1.0}, "async-blocks": {"step_size": 0.7},
    "extragradient": {"step_size": 0.3},
}  # fmt: skip


@pytest.mark.parametrize("market", ["cobb-douglas", "ces-substitutes", "fisher-eg"])
@pytest.mark.parametrize("space", ["log", "price"])
@pytest.mark.parametrize("name", FIRST_ORDER)
def test_central_auctioneer_reaches_the_known_prices(name, space, market):
    economy, reference, rtol = economies()[market]
    rule = make_rule(name, space=space, **CENTRAL[name])
    dyn = make_dynamics(economy, Network.central(economy.n_agents), rule)
    state, m = _run(dyn, np.linspace(0.6, 1.6, economy.n_goods), 1500)
    assert m.excess_demand < TOL, (name, space, market, m.excess_demand)
    np.testing.assert_allclose(dyn.prices(state)[0], reference, rtol=rtol)
    if space == "price":  # the coordinates are the prices, numeraire pinned at 1
        assert state.coords[0, economy.numeraire] == 1.0
        np.testing.assert_array_equal(dyn.prices(state), state.coords)


#: Steps on a complete graph of 16 agents with gradient tracking (measured: 220–1800 rounds).
NETWORK = {
    "entropic": {"step_size": 0.1},
    "momentum": {"step_size": 0.1, "momentum": 0.3},
    "nesterov": {"step_size": 0.08, "momentum": 0.3},
    "adam": {"step_size": 0.02}, "optimistic": {"step_size": 0.03},
    "async-goods": {"step_size": 0.3}, "async-blocks": {"step_size": 0.1},
    "extragradient": {"step_size": 0.1},
}  # fmt: skip


@pytest.mark.parametrize("space", ["log", "price"])
@pytest.mark.parametrize("name", list(NETWORK))
def test_network_reaches_the_cobb_douglas_closed_form(name, space):
    """The fused kernel (and the composite extragradient) in each geometry, on a graph;
    ``additive`` is ``entropic`` in the other geometry (tested bit for bit below)."""
    economy = _economy(Family.COBB_DOUGLAS, 1.0, n=16, seed=1)
    dyn = make_dynamics(economy, build_network("complete", 16, 0),
                        make_rule(name, space=space, **NETWORK[name]))  # fmt: skip
    state, m = _run(dyn, np.linspace(0.6, 1.6, 3), 2500)
    assert m.excess_demand < TOL and m.price_dispersion < TOL, (m.excess_demand, m.price_dispersion)
    prices = dyn.prices(state)
    np.testing.assert_allclose(prices, np.broadcast_to(
        equilibrium.cobb_douglas_equilibrium(economy), prices.shape), rtol=1e-8)  # fmt: skip


# ---------------------------------------------------------------------------------------
# The defaults are today's behaviour
# ---------------------------------------------------------------------------------------

#: Mean prices after 15 rounds of the ``default`` scenario (40 agents, 3 goods, small
#: world), recorded from the code before geometry and schedules were options (commit
#: 3d0aead). On the recording machine the new code reproduced them bit for bit, and also
#: the central, per-agent and layered trajectories of every kernel rule.
TODAY = {
    "adam": [1.1421574473628975, 1.1610205835023573],
    "additive": [1.041522374454992, 1.0555246839530812],
    "async-blocks": [1.0237773113639963, 1.0370353579449039],
    "async-goods": [1.0156411281687057, 1.0237721061690195],
    "entropic": [1.0423494600619052, 1.056710184617369],
    "extragradient": [1.0415845804229487, 1.0557939242186543],
    "momentum": [1.0714529122052925, 1.0882454164394224],
    "multiplicative": [1.0410583629643824, 1.055722755930285],
    "nesterov": [1.072273854441847, 1.0887214645495589],
    "newton": [1.071277180968081, 1.0778508818875367],
    "optimistic": [1.0656494884419954, 1.0647703104041473],
}


def _trajectory(rounds=15, **overrides):
    """Every round's metrics and the final coordinates and buffers of a small default run
    (``overrides``: the rule and its options, as ``MarketModel`` takes them)."""
    model = MarketModel("default", agents=40, goods=3, mesa_agents=False, **overrides)
    out = []
    for _ in range(rounds):
        model.step()
        m = model.metrics
        out += [m.excess.copy(), m.mean_price.copy(), m.log_min.copy(), m.log_max.copy()]
    return out + [model.state.coords.copy(), model.state.buffers.copy()]


@pytest.mark.parametrize("name", sorted(TODAY))
def test_defaults_reproduce_today_s_trajectories(name):
    explicit = make_rule(name, space=DEFAULT_SPACE[name], schedule="constant", warmup=0,
                         clip=None, normalize=False)  # fmt: skip
    assert explicit == make_rule(name)
    model = MarketModel("default", agents=40, goods=3, rule=name, mesa_agents=False)
    assert all(getattr(model.dynamics.rule, o) == getattr(explicit, o) for o in OPTIONS)
    for _ in range(15):
        model.step()
    np.testing.assert_allclose(model.metrics.mean_price[1:], TODAY[name], rtol=1e-12, atol=0)
    if RULES[name].engine is None:  # the fused round with explicit options: the same bits
        given = _trajectory(rule=name, space=DEFAULT_SPACE[name], schedule="constant",
                            warmup=0, normalize=False)  # fmt: skip
        plain = _trajectory(rule=name)
        assert all(np.array_equal(a, b) for a, b in zip(given, plain, strict=True))


def test_additive_and_entropic_are_one_rule_in_two_geometries():
    log, price = _trajectory(rule="entropic"), _trajectory(rule="additive")
    for same, other in [(_trajectory(rule="additive", space="log"), log),
                        (_trajectory(rule="entropic", space="price"), price)]:  # fmt: skip
        assert all(np.array_equal(x, y) for x, y in zip(same, other, strict=True))
    assert np.abs(price[-2] - np.exp(log[-2])).max() > 1e-6  # two geometries, two paths


# ---------------------------------------------------------------------------------------
# Schedules and signal transforms
# ---------------------------------------------------------------------------------------

FORMULAS = {
    "constant": lambda t, h: 1.0,
    "1/t": lambda t, h: 1.0 / (t + 1),
    "1/sqrt(t)": lambda t, h: (t + 1) ** -0.5,
    "cosine": lambda t, h: 0.5 * (1 + math.cos(math.pi * min(t, h) / h)),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("warmup", [0, 5])
def test_each_schedule_scales_the_step_by_its_formula(schedule, warmup):
    assert set(FORMULAS) == set(SCHEDULES)
    horizon = 20 if schedule == "cosine" else None
    rule = make_rule("momentum", step_size=0.3, schedule=schedule, horizon=horizon,
                     warmup=warmup)  # fmt: skip
    for t in range(40):
        want = (t + 1) / warmup if t < warmup else FORMULAS[schedule](t - warmup, horizon)
        assert rule.step_scale(t) == pytest.approx(want, rel=1e-15, abs=1e-16)
        assert step_scale(schedule, t, horizon, warmup) == rule.step_scale(t)
        params = rule.round_params(t)
        assert params[0] == 0.3 * rule.step_scale(t) and params[1] == 0.5  # the step only
    if schedule == "cosine":
        assert rule.step_scale(warmup + horizon) == 0.0 == rule.step_scale(warmup + 5 * horizon)
    if warmup:
        assert [rule.step_scale(t) for t in range(warmup)] == [(t + 1) / warmup
                                                               for t in range(warmup)]  # fmt: skip


@pytest.mark.parametrize("space", ["log", "price"])
def test_the_engines_scale_the_step_of_the_global_round(space):
    """Central entropic/additive: u_{t+1} - u_t = step_size * scale(t) * zhat_t exactly,
    the same in extragradient's first (look-ahead) half step."""
    economy, _, _ = economies()["cobb-douglas"]
    rule = make_rule("entropic", space=space, step_size=0.5, schedule="1/sqrt(t)", warmup=3)
    dyn = CentralTatonnement(economy, rule)
    state = dyn.init_state(np.linspace(0.6, 1.6, 3))
    for t in range(12):
        signal = state.excess[0] / dyn.supply
        new, _ = dyn.step(state)
        step = 0.5 * rule.step_scale(t)
        np.testing.assert_allclose((new.coords - state.coords)[0, 1:], step * signal[1:],
                                   rtol=1e-12, atol=1e-15)  # fmt: skip
        state = new


@pytest.mark.parametrize("space", ["log", "price"])
@pytest.mark.parametrize("transform", [{"clip": 0.02}, {"normalize": True}])
def test_clip_and_normalize_bound_the_step(space, transform):
    """Central and on a graph (fused kernel): the step of the free goods has norm
    ``step_size * min(||zhat||, c)`` (clip) or exactly ``step_size`` (normalize)."""
    economy = _economy(Family.CES, 2.0, n=16, seed=2)
    eta, free = 0.05, slice(1, None)
    rule = make_rule("entropic", space=space, step_size=eta, **transform)
    bound = transform.get("clip", 1.0)
    for network in (Network.central(16), build_network("small-world", 16, 0, k=4, p=0.2)):
        dyn = make_dynamics(economy, network, rule)
        state = dyn.init_state(np.linspace(0.4, 2.5, 3))
        acted = 0
        for _ in range(8):
            if network.is_central:
                base, signal = state.coords, state.excess / dyn.supply
            else:
                W = scipy.sparse.csr_array((network.mixing, network.indices, network.indptr))
                base, signal = W @ state.coords, state.tracker * dyn.inv_scale
            new, _ = dyn.step(state)
            step = np.linalg.norm((new.coords - base)[:, free], axis=1)
            raw = np.linalg.norm(signal[:, free], axis=1)
            want = eta * (np.minimum(raw, bound) if "clip" in transform else np.ones_like(raw))
            np.testing.assert_allclose(step, want, rtol=1e-9)
            acted += int((np.abs(want - eta * raw) > 1e-6 * eta).sum())
            state = new
        assert acted > 0  # the transform changed some steps


@pytest.mark.parametrize("name", ["momentum", "adam", "async-blocks"])
def test_fused_kernel_equals_the_per_agent_path_with_options(name):
    options = {"space": "price", "schedule": "cosine", "horizon": 8, "warmup": 2, "clip": 0.05}
    runs = []
    for path in ("step", "reference_step"):
        model = MarketModel("default", agents=30, goods=3, rule=name, **options)
        for _ in range(10):
            getattr(model, path)()
        runs.append([model.state.coords, model.state.excess, model.state.tracker,
                     model.state.buffers])  # fmt: skip
    for fused, ref in zip(*runs, strict=True):
        np.testing.assert_allclose(fused, ref, rtol=1e-12, atol=1e-12)


def test_layered_market_with_one_flow_merchant_is_the_auctioneer_with_options():
    economy = _economy(Family.CES, 2.0, n=30, seed=4)
    rule = make_rule("nesterov", space="price", step_size=0.3, schedule="cosine", horizon=30,
                     warmup=4, clip=0.1)  # fmt: skip
    flat = CentralTatonnement(economy, rule)
    layered = make_layered_dynamics(economy, Network.central(30), rule, inventory_gain=0.0)
    p0 = np.array([1.0, 2.0, 0.5])
    fs, ls = flat.init_state(p0), layered.init_state(p0)
    for _ in range(40):
        fs, _ = flat.step(fs)
        ls, _ = layered.step(ls)
        np.testing.assert_allclose(layered.prices(ls), flat.prices(fs), rtol=1e-12)
    assert np.abs(flat.prices(fs) - p0).max() > 0.1  # prices moved


# ---------------------------------------------------------------------------------------
# Sharded = unsharded, bit for bit, with a geometry and a schedule
# ---------------------------------------------------------------------------------------

N_SHARDED = 2 * kernel.BLOCK + 300  # three reduction blocks: up to three shards
SHARDED_OPTIONS = {"space": "price", "schedule": "cosine", "horizon": 10, "warmup": 3,
                   "clip": 0.05}  # fmt: skip


def _metrics(m):
    return [m.excess.copy(), m.mean_price.copy(), m.log_min.copy(), m.log_max.copy()]


@pytest.mark.parametrize("graph", ["small-world", "central"])
def test_sharded_run_with_price_space_and_cosine_equals_one_process(graph, tmp_path):
    scenario = load_scenario("default").with_overrides(
        agents=N_SHARDED, goods=3, graph=graph, rule="momentum", step_size=0.05, rounds=12,
        **SHARDED_OPTIONS,
    )
    assert scenario.dynamics.make_rule().space == "price"
    ref = MarketModel(scenario, mesa_agents=False)
    history = []
    for _ in range(12):
        ref.step()
        history.append(_metrics(ref.metrics))
    assert np.abs(history[-1][1] - history[0][1]).max() > 1e-3  # prices moved
    for k in (1, 3):
        engine = functools.partial(ShardEngine, n_shards=k, use_ray=False,
                                   checkpoint_dir=tmp_path / f"k{k}")  # fmt: skip
        model = MarketModel(scenario, engine=engine, mesa_agents=False)
        got = []
        for r in range(12):
            model.step()
            got.append(_metrics(model.metrics))
            if r == 6 and k == 3 and graph != "central":
                folder = model.engine.checkpoint()
        assert all(np.array_equal(x, y) for a, b in zip(history, got, strict=True)
                   for x, y in zip(a, b, strict=True)), k  # fmt: skip
        np.testing.assert_array_equal(model.prices(), ref.prices())
    if graph == "central":  # the auctioneer's round is the driver's (tested above)
        return
    # resumed from round 7: the schedule continues from the global round, not from 0
    resumed = MarketModel(scenario, engine=engine, mesa_agents=False)
    assert resumed.engine.restore(folder) == 7
    for r in range(7, 12):
        m = resumed.engine.step()
        assert all(np.array_equal(x, y) for x, y in zip(history[r], _metrics(m), strict=True))
