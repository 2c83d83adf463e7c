"""The Solara page: ``solara run tatonnet.dashboard.page`` (``tatonnet dashboard`` starts it).

One model per browser session: :func:`Page` builds its :class:`DashboardModel` when the
session opens (``solara.use_memo``), so two tabs step, play and reset independently. The
page is made of Mesa's own visualization pieces: :func:`mesa.visualization.solara_viz.ModelController`
(step / play / reset, re-creating the model from the inputs on *Reset*) and the
``update_counter`` it bumps, with three components: the round counter and metrics, the
network (:mod:`tatonnet.dashboard.drawing`), and the live plots of excess demand / price
dispersion and network-mean prices per round (one figure: Mesa's ``make_plot_component``
would render one figure per measure group, twice as slow a step). Not ``SolaraViz``
itself: it shares the model instance it is given between sessions, labels its one tab
"Page 0" and shows slider values only while dragging. The starting options come from the
environment variable ``TATONNET_DASHBOARD`` (JSON, written by :func:`tatonnet.cli.dashboard.main`).

Importing this module turns Solara's usage telemetry off (also for ``solara run``); the
version check runs before any page is loaded, so ``solara run`` needs ``--no-check-version``
(``tatonnet dashboard`` passes it).
"""

from __future__ import annotations

import json
import os

import solara
from matplotlib.figure import Figure
from mesa.visualization.solara_viz import ModelController
from mesa.visualization.utils import update_counter

from tatonnet.agents.rules import RULES
from tatonnet.dashboard.drawing import MAX_DRAWN, draw_metrics, roles_of, sample_network
from tatonnet.dashboard.drawing import draw_network as _draw
from tatonnet.environment.model import MarketModel
from tatonnet.environment.network import GENERATORS
from tatonnet.environment.scenario import builtin_names


def no_calls_home() -> None:
    """Solara's usage telemetry off: for this server and any process it starts."""
    from solara.server import settings

    os.environ["SOLARA_TELEMETRY_MIXPANEL_ENABLE"] = "False"
    settings.telemetry.mixpanel_enable = False


no_calls_home()

#: The browser tab's title.
TITLE = "tatonnet: price discovery on a network"
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


def inputs(model: DashboardModel, start: dict) -> dict:
    """The page's inputs, ``{name: spec}``, starting from ``model``'s settings.

    ``spec["type"]`` is ``Select``, ``SliderInt``, ``SliderFloat`` or ``InputText`` (Mesa's
    ``model_params`` format); the values are the keyword arguments of :class:`DashboardModel`.
    """
    d = model.config.dynamics
    return {
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
    }  # fmt: skip


def slider_label(label: str, value) -> str:
    """A slider's label with its value: ``agents: 2,000``, ``step size: 0.05``."""
    return f"{label}: {value:,}" if isinstance(value, int) else f"{label}: {value:g}"


@solara.component
def Inputs(specs: dict, values: solara.Reactive[dict]):
    """The model inputs; each change goes into ``values`` (used on *Reset*).

    Sliders show their value in their label (and on the thumb while dragged).
    """

    for name, spec in specs.items():

        def change(value, name=name):
            values.value = {**values.value, name: value}

        label, kind, value = spec["label"], spec["type"], values.value[name]
        if kind in ("SliderInt", "SliderFloat"):
            slider = solara.SliderInt if kind == "SliderInt" else solara.SliderFloat
            slider(slider_label(label, value), value=value, on_value=change, min=spec["min"],
                   max=spec["max"], step=spec["step"])  # fmt: skip
        elif kind == "Select":
            solara.Select(label, value=value, values=spec["values"], on_value=change)
        else:
            solara.InputText(label, value=value, on_value=change)


def new_model(start: dict) -> DashboardModel:
    """The starting model of a session."""
    return DashboardModel(
        start["market"], start["agents"], start["graph"], start["rule"], start["step_size"],
        start["signal"], start["seed"], max_drawn=start["max_drawn"],
    )  # fmt: skip


@solara.component
def Page():
    """The dashboard of one browser session (its own model; Solara calls this per session)."""
    start = solara.use_memo(options, [])
    first = solara.use_memo(lambda: new_model(start), [])
    model = solara.use_reactive(first)
    specs = solara.use_memo(lambda: inputs(first, start), [])
    values = solara.use_reactive(
        solara.use_memo(
            lambda: {**{k: v["value"] for k, v in specs.items()}, "max_drawn": start["max_drawn"]},
            [],
        )
    )
    play_interval = solara.use_reactive(50)
    render_interval = solara.use_reactive(1)
    use_threads = solara.use_reactive(False)

    solara.Title(TITLE)
    with solara.AppBar():
        solara.AppBarTitle("tatonnet")
    with solara.Sidebar(), solara.Column():
        with solara.Card("Controls"):
            solara.SliderInt(f"play: {play_interval.value} ms", value=play_interval, min=10,
                             max=1000, step=10)  # fmt: skip
            solara.SliderInt(slider_label("draw every", render_interval.value),
                             value=render_interval, min=1, max=50, step=1)  # fmt: skip
            ModelController(
                model, model_parameters=values, play_interval=play_interval,
                render_interval=render_interval, use_threads=use_threads,
            )  # fmt: skip
        with solara.Card("Model (set, then Reset)"):
            Inputs(specs, values)
    with solara.Column():
        RoundInfo(model.value)
        with solara.Columns([1, 1]):
            NetworkView(model.value)
            MetricsPlot(model.value)
