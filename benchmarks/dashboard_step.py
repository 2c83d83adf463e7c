"""Server-side cost of one dashboard step: model round + network picture + metrics picture.

python benchmarks/dashboard_step.py            # 2,000 drawn of 2,000; 2,000 of 20,000; 5,000 of 5,000

Renders exactly what the dashboard's components render (dashboard.drawing) to PNG, as
solara.FigureMatplotlib does; the browser adds transfer and decoding (see the browser
test's step_render_seconds.txt artifact for the time as seen in Chromium).
"""

from __future__ import annotations

import io
import os
import statistics
import time

from matplotlib.figure import Figure

from dashboard.drawing import draw_metrics, draw_network, sample_network
from environment.model import MarketModel


def step_seconds(agents: int, max_drawn: int, steps: int = 7) -> tuple[float, str]:
    model = MarketModel("default", agents=agents, mesa_agents=False, seed=7)
    sample = sample_network(model.network, max_drawn, 7)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        model.step()
        for draw in ("network", "metrics"):
            fig = Figure(figsize=(6.4, 5.2), dpi=80)
            if draw == "network":
                draw_network(fig, model, sample)
            else:
                frame = model.datacollector.get_model_vars_dataframe()
                draw_metrics(fig, frame, model.economy.goods)
            fig.savefig(io.BytesIO(), format="png")
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), sample.describe()


if __name__ == "__main__":
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for agents, drawn in ((2000, 2000), (20000, 2000), (5000, 5000)):
        seconds, what = step_seconds(agents, drawn)
        print(f"{agents:6d} agents, {what}: median step render {seconds:.3f} s")
