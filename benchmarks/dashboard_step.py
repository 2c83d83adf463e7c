"""Server-side cost of one dashboard step: model round + network picture + metrics picture.

python benchmarks/dashboard_step.py            # 2,000 drawn of 2,000; 2,000 of 20,000; 5,000 of 5,000

Renders exactly what the dashboard's components render (tatonnet.dashboard.drawing) to PNG, as
solara.FigureMatplotlib does; the browser adds transfer and decoding (see the browser
test's step_render_seconds.txt artifact for the time as seen in Chromium).
"""

from __future__ import annotations

import os

from tatonnet.dashboard.drawing import step_seconds

if __name__ == "__main__":
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for agents, drawn in ((2000, 2000), (20000, 2000), (5000, 5000)):
        seconds, what = step_seconds(agents, drawn)
        print(f"{agents:6d} agents, {what}: median step render {seconds:.3f} s")
