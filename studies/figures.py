"""The study's figures, drawn for a paper: convergence curves, price paths on the simplex and
verdict maps, each written as PNG, PDF and SVG under one stem.

* ``convergence-<scenario>``: max relative excess demand per round (log scale). One column
  per (mode, market), one row per family of rules (:data:`FAMILIES`: at most
  :data:`MAX_CURVES` rules a panel); one curve per rule, its best cell (:func:`best`), the
  step size, tuned hyperparameters and status in the legend.
* ``simplex-<scenario>`` (3-good economies): one panel per rule, rows by family; the best
  cell's mean price path per (mode, market) on the 2-simplex, over the equilibria (a
  filled star under the paths, a hollow one on top), start and end marked.
* ``verdicts-<mode>``: rules x scenarios, coloured by the best status of the rule's cells
  (:data:`STATUS_ORDER`), each annotated ``k/n`` (converged / run).

Every figure is drawn in :func:`paper_style` (one set of rcParams, applied in a context so
nothing leaks into other code) on a :class:`matplotlib.figure.Figure` made without pyplot
(no global figure registry, no backend switch). Its size depends on the panels only, never
on the number of agents. A result is ``{"row": row, "trajectory": arrays or None}`` as
:func:`tatonnet.studies.grid.run_cell` makes it; a row is one cell's verdict (plain values,
``_goods`` and ``_references`` among its internal keys).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

#: Okabe & Ito's colour-blind-safe palette: black, orange, sky blue, bluish green, yellow,
#: blue, vermillion, reddish purple.
OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
             "#CC79A7")  # fmt: skip
#: The order curves take the palette in (yellow, the palest on white, last).
LINE_COLOURS = tuple(OKABE_ITO[i] for i in (5, 1, 3, 6, 7, 2, 0, 4))
#: One line style per curve, paired with :data:`LINE_COLOURS` (colour and dash both differ).
LINE_STYLES = ("-", "--", "-.", ":", (0, (6, 2)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)),
               (0, (8, 2, 1, 2)))  # fmt: skip
#: The most labelled curves one panel carries.
MAX_CURVES = 8
#: Every figure is written in these formats (same stem).
FORMATS = ("png", "pdf", "svg")
#: Width of one panel in inches: a column of a two-column paper.
PANEL_WIDTH = 3.4
#: The modes a study's cells run in (one verdict map each).
MODES = ("central", "network")

#: Rule families, the rows of the convergence and simplex figures. A rule not named here
#: goes into "other" (in chunks of :data:`MAX_CURVES`).
FAMILIES = (
    ("gradient steps", ("additive", "multiplicative", "entropic")),
    ("momentum family", ("momentum", "nesterov", "adam")),
    ("game-theoretic", ("optimistic", "extragradient", "async-goods", "async-blocks")),
    ("second order", ("newton", "proportional-response")),
)

#: Statuses from best to worst: the colour of a verdict-map cell is its best one.
STATUS_ORDER = ("converged", "max_rounds", "cycling", "stalled", "diverged",
                "numerical_error", "error", "skipped")  # fmt: skip
#: A colour per status (Okabe-Ito; skipped a neutral grey).
STATUS_COLOURS = {
    "converged": OKABE_ITO[3], "max_rounds": OKABE_ITO[2], "cycling": OKABE_ITO[1],
    "stalled": OKABE_ITO[4], "diverged": OKABE_ITO[6], "numerical_error": OKABE_ITO[7],
    "error": OKABE_ITO[0], "skipped": "#DDDDDD",
}  # fmt: skip
STATUS_LABELS = {"max_rounds": "max rounds", "numerical_error": "numerical error"}

#: The house style of every figure (8-9 pt text, lines of at least 1 pt).
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 9,
    "lines.linewidth": 1.2,
    "lines.markersize": 5,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlepad": 4,
    "grid.color": "#E0E0E0",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.handlelength": 2.6,
    "legend.borderaxespad": 0.0,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,  # TrueType, as journals ask
    "svg.hashsalt": "tatonnet",  # the same ids in every SVG written
}
#: No creation date in the files: the same figure gives the same bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
#: Where a panel's legend starts below its axes (points): below the ticks and the x label.
_LEGEND_DROP = 30
#: Height of one legend line (inches, at 8 pt).
_LEGEND_LINE = 0.155


def paper_style():
    """A context manager applying :data:`STYLE` (``matplotlib.rc_context``)."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


# ---- names ---------------------------------------------------------------------------------
def figure_names(scenarios: Iterable[str], goods_by_scenario: dict | None = None,
                 modes: Iterable[str] = MODES) -> list[str]:  # fmt: skip
    """Every file the figures may write for these scenarios and modes, in all formats.

    ``goods_by_scenario`` (scenario -> goods), when known, leaves out the simplex of a
    scenario that has not 3 goods; without it every scenario's simplex is listed.
    """
    stems = []
    for scenario in dict.fromkeys(scenarios):
        stems.append(f"convergence-{scenario}")
        goods = None if goods_by_scenario is None else goods_by_scenario.get(scenario)
        if goods is None or int(goods) == 3:
            stems.append(f"simplex-{scenario}")
    stems += [f"verdicts-{mode}" for mode in dict.fromkeys(modes)]
    return [f"{stem}.{fmt}" for stem in stems for fmt in FORMATS]


def _save(fig, out: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<stem>.<format>`` for every format: the layout is computed once
    (then frozen) and the figure cropped to what it draws."""
    fig.draw_without_rendering()  # runs the constrained layout
    fig.set_layout_engine("none")
    bbox = fig.get_tightbbox().padded(STYLE["savefig.pad_inches"])
    paths = []
    for fmt in FORMATS:
        path = Path(out) / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, metadata=_METADATA[fmt], bbox_inches=bbox)
        paths.append(path)
    return paths


# ---- choosing what to draw ---------------------------------------------------------------
def rule_groups(rules: Iterable[str]) -> list[tuple[str, list[str]]]:
    """The rules as (family title, rules) rows of at most :data:`MAX_CURVES`, in
    :data:`FAMILIES` order; unknown rules sorted into "other" rows."""
    rules = list(dict.fromkeys(rules))
    groups = []
    for title, members in FAMILIES:
        present = [r for r in members if r in rules]
        for k in range(0, len(present), MAX_CURVES):
            groups.append((title, present[k : k + MAX_CURVES]))
    known = {r for _, members in FAMILIES for r in members}
    other = sorted(r for r in rules if r not in known)
    for k in range(0, len(other), MAX_CURVES):
        part = f" ({k // MAX_CURVES + 1})" if len(other) > MAX_CURVES else ""
        groups.append((f"other{part}", other[k : k + MAX_CURVES]))
    return groups


def rule_look(rule: str, group: Sequence[str] = ()) -> tuple[str, object]:
    """(colour, line style) of a rule: by its place in its family (the same in every
    figure); a rule of no family by its place in ``group``, its row of rules."""
    for _, members in FAMILIES:
        if rule in members:
            i = members.index(rule)
            break
    else:
        i = list(group).index(rule) if rule in group else 0
    return LINE_COLOURS[i % MAX_CURVES], LINE_STYLES[i % MAX_CURVES]


def _number(value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.inf
    return x if math.isfinite(x) else math.inf


def _rank(row: dict) -> tuple:
    """Sort key of a cell, best first: converged (the fewest rounds), then the lowest final
    excess demand; step size and seed break ties."""
    converged = row.get("status") == "converged"
    return (not converged, _number(row.get("rounds")) if converged else 0.0,
            _number(row.get("excess_demand")), _number(row.get("step_size")),
            _number(row.get("seed")))  # fmt: skip


def best(results: Sequence[dict]) -> dict | None:
    """The result of best status among ``results`` (:func:`_rank`); None if empty."""
    return min(results, key=lambda r: _rank(r["row"]), default=None)


def best_status(statuses: Iterable[str]) -> str | None:
    """The best of ``statuses`` in :data:`STATUS_ORDER` (unknown ones after); None if none."""
    order = {s: i for i, s in enumerate(STATUS_ORDER)}
    return min(statuses, key=lambda s: order.get(s, len(order) - 1), default=None)


def _short(value) -> str:
    """A number in 3 significant digits (a tuned step 0.0530171 reads 0.053); else as is."""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)


def _setting(row: dict) -> str:
    """The step size and the cell's hyperparameters: ``η=1, momentum=-0.6``."""
    step = row.get("step_size")
    parts = ["η default" if step is None or step == "" else f"η={_short(step)}"]
    for item in str(row.get("hyperparameters") or "").split():
        key, _, value = item.partition("=")
        if key != "step_size":
            parts.append(f"{key}={_short(value)}" if value else key)
    return ", ".join(parts)


def _wrap(label: str, width: int = 50) -> str:
    """A legend label on lines of at most ``width`` characters (a panel's width at 8 pt)."""
    import textwrap

    return textwrap.fill(label, width, subsequent_indent="    ", break_on_hyphens=False)


def _status(row: dict) -> str:
    return STATUS_LABELS.get(row.get("status"), str(row.get("status")))


def _panels(rows: Iterable[dict]) -> list[tuple[str, str]]:
    return sorted({(r["mode"], r["market"]) for r in rows}, key=lambda c: (c[0] != "central", c))


def _drop_legend(ax, handles, labels, drop: float = _LEGEND_DROP):
    """A legend below ``ax``, ``drop`` points under its bottom edge (outside the data)."""
    from matplotlib.transforms import offset_copy

    anchor = offset_copy(ax.transAxes, fig=ax.figure, y=-drop, units="points")
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                     bbox_transform=anchor, ncol=1)  # fmt: skip


# ---- the figures --------------------------------------------------------------------------
def plot_figures(results: list[dict], out: Path) -> list[Path]:
    """The figures of one study's results (one scenario at a time keeps memory low): for
    each scenario ``convergence-<scenario>`` and, with 3 goods, ``simplex-<scenario>``, in
    every format of :data:`FORMATS`; the paths written."""
    by_scenario: dict[str, list[dict]] = {}
    for res in results:
        by_scenario.setdefault(res["row"]["scenario"], []).append(res)
    written = []
    for scenario, runs in sorted(by_scenario.items()):
        if not any(r["trajectory"] is not None for r in runs):
            continue
        written += plot_convergence(runs, out, scenario)
        goods = next((r["row"].get("goods") for r in runs if r["row"].get("goods")), None)
        if goods is not None and int(goods) == 3:
            written += plot_simplex(runs, out, scenario)
    return written


def plot_convergence(runs: list[dict], out: Path, scenario: str) -> list[Path]:
    """``convergence-<scenario>`` (:func:`convergence_figure`) in every format; the paths."""
    with paper_style():
        return _save(convergence_figure(runs, scenario), out, f"convergence-{scenario}")


def convergence_figure(runs: list[dict], scenario: str):
    """Excess demand per round: one column per (mode, market), one row per rule family
    (:func:`rule_groups`), one curve per rule, its best cell (:func:`best`); a rule with no
    trajectory in a panel (skipped) is named in the legend, faded."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = _panels(r["row"] for r in runs)
    groups = rule_groups(r["row"]["rule"] for r in runs)
    heights = [1.75 + 0.75 + _LEGEND_LINE * len(rules) for _, rules in groups]
    with paper_style():
        fig = Figure(figsize=(PANEL_WIDTH * len(panels), sum(heights)), layout="constrained")
        axes = fig.subplots(len(groups), len(panels), squeeze=False,
                            gridspec_kw={"height_ratios": heights})  # fmt: skip
        fig.suptitle(f"{scenario} (best cell of each rule)")
        for (family, rules), row_axes in zip(groups, axes, strict=True):
            for ax, (mode, market) in zip(row_axes, panels, strict=True):
                handles, labels = [], []
                tol = None
                for rule in rules:
                    cells = [r for r in runs if r["row"]["rule"] == rule
                             and (r["row"]["mode"], r["row"]["market"]) == (mode, market)]  # fmt: skip
                    colour, ls = rule_look(rule, rules)
                    drawn = best([r for r in cells if r["trajectory"] is not None])
                    if drawn is None:
                        status = best_status(r["row"]["status"] for r in cells)
                        handles.append(Line2D([], [], color=colour, ls=ls, alpha=0.35))
                        labels.append(f"{rule}: {STATUS_LABELS.get(status, status or 'not run')}")
                        continue
                    row, t = drawn["row"], drawn["trajectory"]
                    if tol is None:
                        tol = _number(row.get("tol"))
                    y = np.asarray(t["excess_demand"], dtype=float)
                    # a log axis takes positive finite values: diverged tails are cut at 1e12
                    with np.errstate(invalid="ignore"):
                        y = np.where(np.isfinite(y) & (y > 0), np.minimum(y, 1e12), np.nan)
                    label = _wrap(f"{rule} ({_setting(row)}): {_status(row)}")
                    (line,) = ax.plot(np.asarray(t["round"]), y, color=colour, ls=ls,
                                      label=label, zorder=3)  # fmt: skip
                    handles.append(line)
                    labels.append(label)
                if tol is not None and math.isfinite(tol) and tol > 0:
                    ax.axhline(tol, color="#888888", lw=1.0, ls=(0, (1, 2)), zorder=1)
                    ax.annotate("tol", (1.0, tol), xycoords=("axes fraction", "data"),
                                xytext=(-2, 2), textcoords="offset points", ha="right",
                                va="bottom", color="#666666")  # fmt: skip
                if any(ax.get_lines()):
                    ax.set_yscale("log")
                else:  # every cell of this row and market was skipped (or failed)
                    ax.text(0.5, 0.5, "no cell ran", transform=ax.transAxes, ha="center",
                            va="center", color="#666666")  # fmt: skip
                    ax.set(xticks=[], yticks=[])
                ax.grid(True, which="major", axis="y")
                ax.set(xlabel="round", ylabel="max relative excess demand",
                       title=f"{mode}, {market}: {family}")  # fmt: skip
                _drop_legend(ax, handles, labels)
    return fig


# ---- the simplex ---------------------------------------------------------------------------
_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])
#: Colour and line style of each (mode, market) on the simplex.
_MARKET_LOOK = {("central", "flat"): (OKABE_ITO[5], "-"), ("network", "flat"): (OKABE_ITO[1], "--"),
                ("network", "layered"): (OKABE_ITO[3], "-.")}  # fmt: skip


def simplex_xy(prices: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(T, 3)`` prices as ``(n, 2)`` points on the 2-simplex (normalized to sum 1), cut
    before the first round whose prices are not all positive and finite (a path leaving the
    simplex); and whether it was cut."""
    p = np.asarray(prices, dtype=float).reshape(-1, 3)
    with np.errstate(all="ignore"):
        ok = np.isfinite(p).all(axis=1) & (p > 0).all(axis=1)
        n = len(p) if ok.all() else int(np.argmin(ok))
        q = p[:n] / p[:n].max(axis=1, keepdims=True)  # no overflow in the sum
        w = q / q.sum(axis=1, keepdims=True)
    return w @ _CORNERS, n < len(p)


def _simplex_frame(ax, goods: Sequence[str]) -> None:
    """The triangle, a light barycentric grid at quarters, and the corner labels."""
    ax.plot(*np.vstack([_CORNERS, _CORNERS[:1]]).T, color="#555555", lw=1.0, zorder=1)
    for level in (0.25, 0.5, 0.75):
        for k in range(3):  # the line where good k's share is `level`
            a, b = (k + 1) % 3, (k + 2) % 3
            ends = [level * _CORNERS[k] + (1 - level) * _CORNERS[j] for j in (a, b)]
            ax.plot(*np.array(ends).T, color=STYLE["grid.color"], lw=0.6, zorder=0.5)
    names = list(goods) if len(goods) == 3 else ["good 1", "good 2", "good 3"]
    for (x, y), good, (dx, dy, ha, va) in zip(_CORNERS, names,
            ((-3, -3, "right", "top"), (3, -3, "left", "top"), (0, 4, "center", "bottom")),
            strict=True):  # fmt: skip
        ax.annotate(f"p({good})", (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha,
                    va=va, color="#333333", annotation_clip=False)  # fmt: skip
    ax.set(aspect="equal", xticks=[], yticks=[], xlim=(-0.04, 1.04), ylim=(-0.06, 0.95))
    for spine in ax.spines.values():
        spine.set_visible(False)


def _equilibria(rows: Iterable[dict]) -> np.ndarray:
    """The distinct reference equilibria of ``rows`` on the simplex, ``(k, 2)``."""
    points = []
    for row in rows:
        for ref in row.get("_references") or []:
            xy, cut = simplex_xy(np.asarray(ref, dtype=float)[None, :])
            if not cut and len(xy):
                points.append(xy[0])
    if not points:
        return np.empty((0, 2))
    return np.unique(np.round(np.array(points), 4), axis=0)


def plot_simplex(runs: list[dict], out: Path, scenario: str) -> list[Path]:
    """``simplex-<scenario>`` (:func:`simplex_figure`) in every format; the paths."""
    with paper_style():
        return _save(simplex_figure(runs, scenario), out, f"simplex-{scenario}")


def simplex_figure(runs: list[dict], scenario: str):
    """Price paths of a 3-good economy on the 2-simplex: one panel per rule (rows by
    family), the best cell's mean price path per (mode, market), drawn over the equilibria
    (a filled star under the paths, a hollow one, ``gid="equilibrium"``, on top); the start
    a hollow circle, the end a square, or a cross where the path left the simplex (a price
    not positive and finite: the path stops at its last point inside)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = _panels(r["row"] for r in runs)
    groups = rule_groups(r["row"]["rule"] for r in runs)
    ncols = max(len(rules) for _, rules in groups)
    goods = next((r["row"]["_goods"] for r in runs if r["row"].get("_goods")), [])
    height = PANEL_WIDTH * 0.82 + 0.45 + _LEGEND_LINE * len(panels)
    with paper_style():
        fig = Figure(figsize=(PANEL_WIDTH * ncols, height * len(groups) + 0.35),
                     layout="constrained")  # fmt: skip
        fig.get_layout_engine().set(wspace=0.08)  # room between the corner labels
        axes = fig.subplots(len(groups), ncols, squeeze=False)
        fig.suptitle(f"{scenario}: mean prices (best cell per market)")
        left = False
        for (family, rules), row_axes in zip(groups, axes, strict=True):
            for ax in row_axes[len(rules) :]:
                ax.set_axis_off()
            for ax, rule in zip(row_axes, rules, strict=False):
                _simplex_frame(ax, goods)
                cells = [r for r in runs if r["row"]["rule"] == rule]
                shown = []
                for panel in panels:
                    drawn = best([r for r in cells if r["trajectory"] is not None
                                  and (r["row"]["mode"], r["row"]["market"]) == panel])  # fmt: skip
                    if drawn is not None:
                        shown.append((panel, drawn))
                eq = _equilibria(d["row"] for _, d in shown) if shown else _equilibria(
                    r["row"] for r in cells)  # fmt: skip
                if len(eq):  # under the paths, then a hollow outline over them
                    ax.plot(*eq.T, "*", color="black", ms=11, zorder=2)
                handles, labels = [], []
                for (mode, market), drawn in shown:
                    row = drawn["row"]
                    xy, cut = simplex_xy(drawn["trajectory"]["prices"])
                    left |= cut
                    if len(xy) == 0:
                        continue
                    colour, ls = _MARKET_LOOK.get((mode, market), (OKABE_ITO[7], ":"))
                    label = _wrap(f"{mode}, {market}, {_setting(row)}: {_status(row)}")
                    (line,) = ax.plot(*xy.T, color=colour, ls=ls, alpha=0.8, label=label,
                                      zorder=3)  # fmt: skip
                    ax.plot(*xy[0], "o", mfc="white", mec=colour, mew=1.2, zorder=4)
                    ax.plot(*xy[-1], "X" if cut else "s", color=colour, mec="white",
                            mew=0.5, zorder=4)  # fmt: skip
                    handles.append(line)
                    labels.append(label)
                if len(eq):
                    ax.plot(*eq.T, "*", mfc="none", mec="black", mew=1.0, ms=11, zorder=5,
                            label="equilibrium", gid="equilibrium")  # fmt: skip
                ax.set_title(f"{rule} ({family})")
                if not handles:
                    status = best_status(r["row"]["status"] for r in cells)
                    ax.text(0.5, 0.1, STATUS_LABELS.get(status, status or "not run"),
                            ha="center", va="center", color="#666666")  # fmt: skip
                _drop_legend(ax, handles, labels, drop=4)
        keys = [Line2D([], [], ls="", marker="o", mfc="white", mec="#333333", mew=1.2),
                Line2D([], [], ls="", marker="s", color="#333333"),
                Line2D([], [], ls="", marker="*", mfc="none", mec="black", ms=11)]  # fmt: skip
        names = ["start", "end", "equilibrium"]
        if left:
            keys.insert(2, Line2D([], [], ls="", marker="X", color="#333333"))
            names.insert(2, "left the simplex (a price hit 0 or ∞)")
        fig.legend(keys, names, loc="outside lower center", ncol=len(keys))
    return fig


# ---- the verdict map -----------------------------------------------------------------------
def _luminance(colour: str) -> float:
    from matplotlib.colors import to_rgb

    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _rule_order(rules: Iterable[str]) -> list[str]:
    return [r for _, members in rule_groups(rules) for r in members]


def plot_verdict_map(rows: list[dict], out: Path, mode: str) -> list[Path]:
    """``verdicts-<mode>`` (:func:`verdict_figure`) in every format; the paths (none when
    ``mode`` has no cell). ``rows``: one per cell, as in ``verdicts.csv``."""
    with paper_style():
        fig = verdict_figure(rows, mode)
        return [] if fig is None else _save(fig, out, f"verdicts-{mode}")


def verdict_figure(rows: list[dict], mode: str):
    """Rules x scenarios of ``mode``'s cells, each coloured by the best status of its cells
    (:data:`STATUS_ORDER`) and annotated ``k/n`` (converged / cells run, skipped ones not
    counted; "–" if none ran); None when ``mode`` has no cell."""
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sel = [r for r in rows if r["mode"] == mode]
    if not sel:
        return None
    scenarios = list(dict.fromkeys(r["scenario"] for r in sel))
    rules = _rule_order(r["rule"] for r in sel)
    markets = sorted({r.get("market") or "" for r in sel} - {""}, key=lambda m: (m != "flat", m))
    image = np.ones((len(rules), len(scenarios), 3))
    texts = {}
    present = set()
    for i, rule in enumerate(rules):
        for j, scenario in enumerate(scenarios):
            statuses = [r["status"] for r in sel if r["rule"] == rule and r["scenario"] == scenario]
            status = best_status(statuses)
            if status is None:
                continue
            present.add(status)
            colour = STATUS_COLOURS.get(status, "#999999")
            image[i, j] = to_rgb(colour)
            ran = [s for s in statuses if s != "skipped"]
            text = f"{ran.count('converged')}/{len(ran)}" if ran else "–"
            texts[i, j] = (text, "black" if _luminance(colour) > 0.3 else "white")
    width = max(PANEL_WIDTH, 1.3 + 0.48 * len(scenarios))
    height = 1.55 + 0.22 * len(rules)
    with paper_style():
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.subplots()
        ax.imshow(image, aspect="auto", interpolation="nearest")
        for (i, j), (text, colour) in texts.items():
            ax.text(j, i, text, ha="center", va="center", color=colour)
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=40, ha="right",
                      rotation_mode="anchor")  # fmt: skip
        ax.set_yticks(range(len(rules)), rules)
        ax.set_xticks(np.arange(len(scenarios) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(rules) + 1) - 0.5, minor=True)
        ax.grid(True, which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.tick_params(which="major", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        where = f"{mode} ({', '.join(markets)})" if markets else mode
        ax.set_title(f"{where}: best status; converged / run")
        order = [s for s in STATUS_ORDER if s in present] + sorted(present - set(STATUS_ORDER))
        handles = [Patch(facecolor=STATUS_COLOURS.get(s, "#999999"), edgecolor="#999999",
                         lw=0.5) for s in order]  # fmt: skip
        fig.legend(handles, [STATUS_LABELS.get(s, s) for s in order], loc="outside lower center",
                   ncol=min(4, len(order)), handlelength=1.2, columnspacing=1.0)  # fmt: skip
    return fig
