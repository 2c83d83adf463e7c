"""The Solara page: ``solara run tatonnet.dashboard.page`` (``tatonnet dashboard`` starts it).

Built from Mesa's own visualization: :func:`mesa.visualization.SolaraViz` (step / play /
reset controls, the model-parameter inputs and the page grid) with three components: the
round counter and metrics, the network (:mod:`tatonnet.dashboard.drawing`), and the live plots of
excess demand / price dispersion and network-mean prices per round (one figure: Mesa's
``make_plot_component`` would render one figure per measure group, twice as slow a step). The starting options come from the environment
variable ``TATONNET_DASHBOARD`` (JSON, written by :func:`tatonnet.cli.dashboard.main`).
"""

from __future__ import annotations

import json
import os

import solara
from matplotlib.figure import Figure
from mesa.visualization import SolaraViz
from mesa.visualization.utils import update_counter

from tatonnet.agents.rules import RULES
from tatonnet.dashboard.drawing import MAX_DRAWN, draw_metrics, roles_of, sample_network
from tatonnet.dashboard.drawing import draw_network as _draw
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import GENERATORS
from tatonnet.environment.scenario import builtin_names

#: PNG encoding: speed over size (pictures are ~100 kB either way).
FAST_PNG = {"compress_level": 1}

DEFAULTS = {
    "market": "default", "agents": 1000, "graph": None, "rule": None,
    "step_size": None, "signal": None, "seed": None, "max_drawn": MAX_DRAWN,
}  # fmt: skip


def options() -> dict:
    """Starting options: :data:`DEFAULTS` updated from ``$TATONNET_DASHBOARD``."""
    return dict(DEFAULTS, **json.loads(os.environ.get("TATONNET_DASHBOARD", "{}")))


class DashboardModel(MarketModel):
    """A :class:`MarketModel` with the dashboard's inputs as keyword arguments.

    SolaraViz re-creates the model from these on *Reset*. A bad combination (e.g. a step
    size the rule refuses) does not crash the page: the starting settings are used and
    ``error`` holds the one-line message shown in the page.
    """

    def __init__(
        self, market="default", agents=1000, graph=None, rule=None, step_size=None,
        signal=None, seed=None, colour_by="price", max_drawn=MAX_DRAWN,
    ):  # fmt: skip
        from tatonnet.environment.scenario import SCENARIO_ERRORS

        self.error = None
        try:
            super().__init__(
                market, mesa_agents=False, agents=int(agents), graph=graph, rule=rule,
                step_size=step_size, signal=signal, seed=None if seed is None else int(seed),
            )  # fmt: skip
        except (*SCENARIO_ERRORS, ValueError) as exc:
            start = options()
            super().__init__(start["market"], mesa_agents=False, agents=start["agents"])
            self.error = f"{exc} (showing '{start['market']}' instead)"
        self.colour_by = colour_by
        self.sample = sample_network(self.network, int(max_drawn), self.config.seed)


@solara.component
def NetworkView(model: DashboardModel):
    """The network, redrawn after every step."""
    update_counter.get()
    fig = Figure(figsize=(6.4, 5.2), dpi=80)
    _draw(fig, model, model.sample, model.colour_by)
    return solara.FigureMatplotlib(fig, format="png", pil_kwargs=FAST_PNG)


@solara.component
def RoundInfo(model: DashboardModel):
    """Round counter, metrics and the verdict once the run stops."""
    update_counter.get()
    m = model.metrics
    verdict = model.verdict.status if model.verdict is not None else "running"
    has_roles = roles_of(model) is not None
    if model.colour_by == "role":
        roles = "role" if has_roles else "price (this model has no roles: no trade)"
    else:
        roles = "price deviation"
    with solara.Column():
        solara.Markdown(
            f"**Round: {model.round}** &nbsp; status: {verdict}  \n"
            f"excess demand {m.excess_demand:.3e}, price dispersion {m.price_dispersion:.3e}  \n"
            f"{model.config.name}: {model.economy.n_agents:,} agents, "
            f"{model.config.network.kind} graph, rule {model.config.dynamics.rule} "
            f"(step {model.config.dynamics.step_size:g}), colour: {roles}  \n"
            f"{model.sample.describe()}"
        )
        if model.error:
            solara.Error(model.error)


@solara.component
def MetricsPlot(model: DashboardModel):
    """Per round: excess demand and price dispersion (log scale), and network-mean prices.

    One figure for both panels (one render per step instead of two).
    """
    update_counter.get()
    fig = Figure(figsize=(6.4, 5.2), dpi=80)
    draw_metrics(fig, model.datacollector.get_model_vars_dataframe(), model.economy.goods)
    return solara.FigureMatplotlib(fig, format="png", pil_kwargs=FAST_PNG)


def make_page(start: dict | None = None):
    """The SolaraViz page for the starting options ``start`` (default :func:`options`)."""
    start = options() if start is None else start
    model = DashboardModel(
        start["market"], start["agents"], start["graph"], start["rule"], start["step_size"],
        start["signal"], start["seed"], max_drawn=start["max_drawn"],
    )  # fmt: skip
    d = model.config.dynamics
    params = {
        "market": {"type": "Select", "value": start["market"], "label": "scenario",
                   "values": sorted(set(builtin_names()) | {start["market"]})},
        "agents": {"type": "SliderInt", "value": model.economy.n_agents, "min": 50,
                   "max": 20_000, "step": 50, "label": "agents"},
        "graph": {"type": "Select", "value": model.config.network.kind,
                  "values": list(GENERATORS), "label": "network"},
        "rule": {"type": "Select", "value": d.rule, "values": sorted(RULES), "label": "rule"},
        "step_size": {"type": "SliderFloat", "value": d.step_size, "min": 0.005, "max": 1.0,
                      "step": 0.005, "label": "step size"},
        "signal": {"type": "Select", "value": d.signal, "values": ["tracking", "local"],
                   "label": "signal"},
        "seed": {"type": "InputText", "value": str(model.config.seed), "label": "seed"},
        "colour_by": {"type": "Select", "value": "price", "values": ["price", "role"],
                      "label": "colour nodes by"},
        "max_drawn": start["max_drawn"],
    }  # fmt: skip
    return SolaraViz(
        model,
        components=[
            (RoundInfo, 0),
            (NetworkView, 0),
            (MetricsPlot, 0),
        ],
        model_params=params,
        name="tatonnet",
        play_interval=50,
    )


page = make_page()
