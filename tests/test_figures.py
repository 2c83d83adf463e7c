"""The study's figures (:mod:`tatonnet.studies.figures`): PNG, PDF and SVG written; at most
eight labelled curves a panel, in the Okabe-Ito palette; legends outside the data; the
best cell of each rule shown; the equilibrium marked on every simplex panel; a verdict map
that counts what converged; the house style not leaking into other code."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex, to_rgb

from tatonnet.studies import figures

RULES = ("additive", "multiplicative", "entropic", "momentum", "nesterov", "adam",
         "optimistic", "extragradient", "async-goods", "async-blocks", "newton",
         "proportional-response", "my-rule")  # fmt: skip
PANELS = (("central", "flat"), ("network", "flat"), ("network", "layered"))
SCARF_EQ = [1.0, 1.0, 1.0]


def _result(rule, step, status, mode="central", market="flat", *, rounds=60, agents=60,
            hyper="", prices=None, seed=0):  # fmt: skip
    """A fake cell of Scarf's economy: a spiral on the simplex, excess demand falling
    (converged) or flat."""
    t = np.arange(rounds + 1)
    angle = 0.3 * t
    radius = 0.4 * np.exp(-t / 30) if status == "converged" else np.full(t.size, 0.3)
    if prices is None:
        prices = np.exp(np.column_stack([radius * np.cos(angle), radius * np.sin(angle),
                                         np.zeros(t.size)]))  # fmt: skip
    excess = np.geomspace(0.1, 1e-9, t.size) if status == "converged" else np.full(t.size, 0.1)
    excess[0] = np.nan
    row = {
        "scenario": "scarf", "mode": mode, "market": market, "agents": agents, "goods": 3,
        "_goods": ["x1", "x2", "x3"], "_references": [SCARF_EQ], "rule": rule,
        "step_size": step, "hyperparameters": hyper, "seed": seed, "status": status,
        "rounds": rounds, "tol": 1e-8, "excess_demand": float(excess[-1]),
    }  # fmt: skip
    trajectory = {"round": t, "excess_demand": excess, "price_dispersion": np.zeros(t.size),
                  "prices": prices}  # fmt: skip
    return {"row": row, "trajectory": trajectory}


def _study(agents=60, rules=RULES, panels=PANELS) -> list[dict]:
    """Every rule (and one no family names) in every panel at two step sizes; the chosen
    cells are the ones of best status."""
    runs = []
    for mode, market in panels:
        for rule in rules:
            if market == "layered" and rule in ("newton", "proportional-response"):
                row = _result(rule, 0.5, "skipped", mode, market, agents=agents)
                row["trajectory"] = None
                runs.append(row)
                continue
            runs.append(_result(rule, 0.1, "cycling", mode, market, agents=agents))
            runs.append(_result(rule, 0.5, "converged", mode, market, rounds=40, agents=agents,
                                hyper="momentum=-0.6" if rule == "async-goods" else ""))  # fmt: skip
    # additive, central: a slower converged cell and a diverged one lose to the fast one
    runs.append(_result("additive", 0.05, "converged", rounds=80, agents=agents))
    runs.append(_result("additive", 1.0, "diverged", agents=agents,
                        prices=np.array([[1, 2, 3], [1, 5, 3], [1, np.inf, 3.0]])))  # fmt: skip
    return runs


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every figure of a small fake study written once: (folder, paths)."""
    out = tmp_path_factory.mktemp("figures")
    runs = _study(rules=("additive", "newton"), panels=PANELS[1:])
    runs[0]["row"]["mode"] = "central"  # a cell of each mode
    paths = figures.plot_figures(runs, out)
    rows = [r["row"] for r in runs]
    for mode in figures.MODES:
        paths += figures.plot_verdict_map(rows, out, mode)
    return out, paths


@pytest.fixture(scope="module")
def drawn():
    """The convergence and simplex figures, laid out and drawn (not written)."""
    runs = _study()
    with figures.paper_style():
        figs = {"convergence": figures.convergence_figure(runs, "scarf"),
                "simplex": figures.simplex_figure(runs, "scarf"),
                "verdicts": figures.verdict_figure([r["row"] for r in runs], "central")}  # fmt: skip
        for fig in figs.values():
            fig.draw_without_rendering()
    return figs


def _labelled(ax) -> list:
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _data_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.axison]


def test_every_figure_is_written_as_png_pdf_and_svg(written):
    out, paths = written
    names = {p.name for p in paths}
    stems = ("convergence-scarf", "simplex-scarf", "verdicts-central", "verdicts-network")
    assert names == {f"{s}.{f}" for s in stems for f in ("png", "pdf", "svg")}
    assert names <= set(figures.figure_names(["scarf"], {"scarf": 3}))
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        root = ET.parse(out / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")
        assert all((out / f"{stem}.{f}").stat().st_size > 5000 for f in ("png", "pdf", "svg"))


def test_figure_names_cover_every_format_and_the_simplex_only_of_3_goods():
    names = figures.figure_names(["scarf", "cobb-douglas"], {"scarf": 3, "cobb-douglas": 4},
                                 modes=["central"])  # fmt: skip
    assert names == [f"{stem}.{fmt}" for stem in ("convergence-scarf", "simplex-scarf",
                     "convergence-cobb-douglas", "verdicts-central")
                     for fmt in ("png", "pdf", "svg")]  # fmt: skip
    every = figures.figure_names(["cobb-douglas"])  # goods unknown: the simplex may be drawn
    assert "simplex-cobb-douglas.svg" in every and "verdicts-network.pdf" in every


def test_at_most_eight_labelled_curves_a_panel_one_per_rule(drawn):
    fig = drawn["convergence"]
    axes = _data_axes(fig)
    assert len(axes) == 5 * len(PANELS)  # 4 families and "other", one column per market
    for ax in axes:
        lines = _labelled(ax)
        assert len(lines) <= figures.MAX_CURVES
        rules = [line.get_label().split(" ")[0] for line in lines]
        assert len(rules) == len(set(rules))  # one curve per rule
        looks = {(to_hex(line.get_color()), str(line.get_linestyle())) for line in lines}
        assert len(looks) == len(lines)  # told apart by colour and by dash
    shown = {line.get_label().split(" ")[0] for ax in axes for line in _labelled(ax)}
    assert shown == set(RULES)
    for ax in _data_axes(drawn["simplex"]):
        assert len(_labelled(ax)) <= figures.MAX_CURVES


def test_the_palette_is_okabe_ito_with_a_line_style_each():
    assert figures.OKABE_ITO == ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442",
                                 "#0072B2", "#D55E00", "#CC79A7")  # fmt: skip
    assert sorted(figures.LINE_COLOURS) == sorted(figures.OKABE_ITO)
    assert len(set(map(str, figures.LINE_STYLES))) == len(figures.LINE_COLOURS) == 8
    others = [f"rule-{k}" for k in range(8)]  # rules of no family: by their place in the row
    assert len({figures.rule_look(r, others) for r in others}) == 8


def test_every_curve_is_drawn_in_the_palette_at_least_1_pt(drawn):
    palette = {c.lower() for c in figures.OKABE_ITO}
    for name in ("convergence", "simplex"):
        for ax in _data_axes(drawn[name]):
            for line in _labelled(ax):
                if line.get_gid() == "equilibrium":
                    continue
                assert to_hex(line.get_color()) in palette, (name, line.get_label())
                assert line.get_linewidth() >= 1.0


def test_legends_lie_outside_the_axes(drawn):
    for name, fig in drawn.items():
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent()
            for ax in _data_axes(fig):
                assert not box.overlaps(ax.get_window_extent()), (name, ax.get_title())


def test_text_is_8_to_9_pt_and_a_panel_a_column_wide(drawn):
    for name, fig in drawn.items():
        texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label,
                 *ax.texts, *ax.get_xticklabels(), *ax.get_yticklabels()) if t.get_text()]  # fmt: skip
        texts += [t for legend in [ax.get_legend() for ax in fig.axes if ax.get_legend()]
                  + fig.legends for t in legend.get_texts()]  # fmt: skip
        assert texts and all(8 <= t.get_fontsize() <= 9 for t in texts), name
    width, _ = drawn["convergence"].get_size_inches()
    assert width == pytest.approx(figures.PANEL_WIDTH * len(PANELS))


def test_the_shown_cell_of_a_rule_is_its_best(drawn):
    """additive, central: three converged cells and a diverged one; the fastest converged
    is shown, with its step size; the hyperparameters are in the label too."""
    labels = [line.get_label() for ax in _data_axes(drawn["convergence"])
              for line in _labelled(ax)]  # fmt: skip
    assert "additive (η=0.5): converged" in labels
    assert "async-goods (η=0.5, momentum=-0.6): converged" in labels
    central = _data_axes(drawn["convergence"])[0]
    assert central.get_title() == "central, flat: gradient steps"
    legend = [t.get_text() for t in central.get_legend().get_texts()]
    assert legend[0] == "additive (η=0.5): converged"
    layered = [ax for ax in _data_axes(drawn["convergence"])
               if ax.get_title() == "network, layered: second order"]  # fmt: skip
    assert [t.get_text() for t in layered[0].get_legend().get_texts()] == [
        "newton: skipped", "proportional-response: skipped"]  # fmt: skip


def test_every_simplex_panel_marks_the_equilibrium_over_the_paths(drawn):
    fig = drawn["simplex"]
    panels = _data_axes(fig)
    assert len(panels) == len(RULES)
    (expected,), _ = figures.simplex_xy(np.array([SCARF_EQ]))
    for ax in panels:
        marks = [line for line in ax.get_lines() if line.get_gid() == "equilibrium"]
        assert len(marks) == 1, ax.get_title()
        (mark,) = marks
        assert np.allclose(mark.get_xydata(), [expected], atol=1e-3)
        assert mark.get_markerfacecolor() == "none"  # hollow: the paths show through
        paths = _labelled(ax)
        paths.remove(mark)
        assert all(mark.get_zorder() > p.get_zorder() and p.get_alpha() < 1 for p in paths)
        under = [line for line in ax.get_lines() if line.get_marker() == "*" and line is not mark]
        assert under and all(u.get_zorder() < min(p.get_zorder() for p in paths) for u in under)


def test_a_path_leaving_the_simplex_stops_at_its_last_point_inside():
    prices = np.array([[1.0, 2.0, 3.0], [1e300, 1e300, 1e300], [1.0, 0.0, 1.0], [1, 1, 1]])
    xy, cut = figures.simplex_xy(prices)
    assert cut and xy.shape == (2, 2)
    assert np.allclose(xy[1], figures.simplex_xy(np.ones((1, 3)))[0][0])  # no overflow
    assert np.all(xy[:, 1] >= 0) and np.all(xy[:, 1] <= np.sqrt(3) / 2)
    assert figures.simplex_xy(np.ones((4, 3)))[1] is False


def test_the_verdict_map_colours_the_best_status_and_counts_converged(drawn):
    fig = drawn["verdicts"]
    (ax,) = fig.axes
    rules = [t.get_text() for t in ax.get_yticklabels()]
    assert rules == list(RULES[:7]) + ["extragradient", "async-goods", "async-blocks",
                                       "newton", "proportional-response", "my-rule"]  # fmt: skip
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}  # fmt: skip
    assert texts[0, 0] == "2/4"  # additive, central: 2 of 4 converged
    assert texts[rules.index("newton"), 0] == "1/2"
    image = ax.get_images()[0].get_array()
    assert np.allclose(image[0, 0], to_rgb(figures.STATUS_COLOURS["converged"]))
    rows = [{"rule": "a", "scenario": s, "mode": "network", "status": st}
            for s, st in (("x", "skipped"), ("y", "cycling"), ("y", "diverged"))]  # fmt: skip
    with figures.paper_style():
        fig = figures.verdict_figure(rows, "network")
    (ax,) = fig.axes
    assert sorted(t.get_text() for t in ax.texts) == ["0/2", "–"]
    image = ax.get_images()[0].get_array()
    assert np.allclose(image[0, 0], to_rgb(figures.STATUS_COLOURS["skipped"]))
    assert np.allclose(image[0, 1], to_rgb(figures.STATUS_COLOURS["cycling"]))
    assert figures.verdict_figure(rows, "central") is None


def test_the_size_does_not_depend_on_the_agents():
    with figures.paper_style():
        small = figures.convergence_figure(_study(10, RULES[:4]), "scarf").get_size_inches()
        large = figures.convergence_figure(_study(10**7, RULES[:4]), "scarf").get_size_inches()
    assert tuple(small) == tuple(large)


def test_the_style_does_not_leak(written):
    before = matplotlib.rcParams["font.size"], matplotlib.rcParams["lines.linewidth"]
    with figures.paper_style():
        assert matplotlib.rcParams["font.size"] == figures.STYLE["font.size"]
    assert (matplotlib.rcParams["font.size"], matplotlib.rcParams["lines.linewidth"]) == before
    assert matplotlib.rcParams["font.size"] == matplotlib.rcParamsDefault["font.size"]
