"""The dashboard in a real headless Chromium: it renders, Step advances it, a step is fast,
two browser sessions have a model each, and SIGTERM stops every process of it.

Needs Playwright (Python package) and a Chromium binary (Debian's ``chromium``, or the one
named by ``$TATONNET_CHROMIUM``). Without them the test is skipped, unless
``TATONNET_BROWSER_TESTS=1`` (set by ``.ci/run``), where their absence is a failure.
Screenshots and the measured step times go to ``$TATONNET_ARTIFACTS`` (default
``.ci/artifacts/``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("TATONNET_BROWSER_TESTS") == "1"
ARTIFACTS = Path(os.environ.get("TATONNET_ARTIFACTS", ROOT / ".ci" / "artifacts"))
DRAWN = 2000  # every agent drawn: the acceptance size
#: End-to-end bound for one step as seen in the browser (click -> counter and pictures
#: changed). The < 1 s acceptance is asserted on the server-side render in
#: tests/test_dashboard.py; here Chromium and the server share the CPUs, and on the shared
#: 2-core development machine the median was 0.76-1.26 s at load averages 8-14.
STEP_BUDGET_S = float(os.environ.get("TATONNET_STEP_BUDGET_S", "3.0"))


def _chromium() -> str | None:
    explicit = os.environ.get("TATONNET_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _need(what_is_missing: str):
    if REQUIRED:
        pytest.fail(f"browser test required (TATONNET_BROWSER_TESTS=1) but {what_is_missing}")
    pytest.skip(f"{what_is_missing} (install: pip install playwright; apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is not installed")
    exe = _chromium()
    if exe is None:
        _need("no chromium binary found (set TATONNET_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = dict(os.environ)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "dashboard-server.log", "w")  # noqa: SIM115  (closed at teardown)
    proc = subprocess.Popen(
        [sys.executable, "run.py", "dashboard", "--port", str(port), "--agents", str(DRAWN),
         "--scenario", "default", "--seed", "7"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard server exited with {proc.returncode}; see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail("dashboard server did not start listening within 300 s")
    yield Server(url, port, proc)
    if proc.poll() is None:  # the stop test did not run
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@dataclasses.dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux: from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


VIEWPORT = {"width": 1600, "height": 1100}


def _open(context, url: str):
    """A new page of ``context`` (a browser context) at the dashboard, once its counter,
    Step button and pictures are shown."""
    page = context.new_page()
    page.goto(url, timeout=300_000)  # a fresh clone compiles the kernels first
    page.get_by_text("Round:").first.wait_for(timeout=300_000)
    page.get_by_role("button", name="Step").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => [...document.images].filter(e => e.naturalWidth > 50).length >= 2",
        timeout=60_000,
    )
    return page


def _round(page) -> int:
    text = page.get_by_text("Round:").first.inner_text()
    return int(text.split("Round:")[1].split()[0])


#: Per picture: [width, height, pixels that are not near-white, a checksum of the pixels].
_PIXELS = """els => els.filter(e => e.complete && e.naturalWidth > 50).map(e => {
    const c = document.createElement('canvas');
    c.width = e.naturalWidth; c.height = e.naturalHeight;
    const ctx = c.getContext('2d'); ctx.drawImage(e, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let ink = 0, sum = 0;
    for (let i = 0; i < d.length; i += 4) {
        if (d[i] + d[i + 1] + d[i + 2] < 600) ink++;
        sum = (sum * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
    }
    return [c.width, c.height, ink, sum];
})"""


def _pixels(page) -> list[list[int]]:
    return page.eval_on_selector_all("img", _PIXELS)


def _sources(page) -> list[str]:
    return page.eval_on_selector_all(
        "img", "els => els.filter(e => e.complete && e.naturalWidth > 50).map(e => e.src)"
    )


def _step_and_wait(page, before_round: int, timeout_s=60.0) -> float:
    """Press Step; seconds until the counter shows the next round and both pictures changed.

    Polls cheaply (counter, picture URLs); the pixel checksums are compared only once both
    pictures were replaced, so a re-render of the same content does not count.
    """
    before = [p[3] for p in _pixels(page)[:2]]
    old = set(_sources(page))
    t0 = time.perf_counter()
    page.get_by_role("button", name="Step").click()
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        if _round(page) == before_round + 1:
            src = _sources(page)
            if len(src) == 2 and not old.intersection(src):
                now = [p[3] for p in _pixels(page)[:2]]
                if len(now) == 2 and all(a != b for a, b in zip(before, now, strict=True)):
                    return time.perf_counter() - t0
                old.update(src)
        page.wait_for_timeout(10)
    raise AssertionError(f"step {before_round + 1} did not render within {timeout_s} s")


def test_dashboard_renders_steps_and_is_fast(browser, server):
    page = _open(browser.new_context(viewport=VIEWPORT), server.url)
    page.wait_for_function("() => document.title.startsWith('tatonnet')", timeout=30_000)
    assert page.title() == "tatonnet: price discovery on a network"
    assert page.get_by_text("Page 0").count() == 0  # no lone tab
    assert page.get_by_text("agents: 2,000").count() >= 1  # sliders show their values
    # The network and the plots render as non-blank pictures; the info names what is drawn.
    pixels = _pixels(page)
    assert len(pixels) == 2, f"expected the network and the plots, found {len(pixels)} pictures"
    for width, height, ink, _ in pixels:  # drawn, not blank
        assert width > 200 and height > 200 and ink > 0.005 * width * height, pixels
    assert page.get_by_text(f"all {DRAWN:,} agents drawn").count() >= 1
    assert _round(page) == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-round0.png"))

    # Step: the round counter, the network and the plots change (the first step also loads
    # the compiled kernels, so it is not timed).
    _step_and_wait(page, 0, timeout_s=300.0)
    assert _round(page) == 1
    after = _pixels(page)
    assert all(a[3] != b[3] for a, b in zip(pixels, after, strict=True))
    assert page.get_by_text("status: running").count() == 1
    times = [_step_and_wait(page, k) for k in range(1, 8)]
    assert _round(page) == 8
    page.screenshot(path=str(ARTIFACTS / "dashboard-round8.png"))
    median = statistics.median(times)
    print(f"\nstep render with {DRAWN} drawn nodes: median {median:.3f} s, all {times}")
    (ARTIFACTS / "step_render_seconds.txt").write_text(
        f"drawn={DRAWN} median={median:.3f} times={[round(t, 3) for t in times]}\n"
    )
    assert median < STEP_BUDGET_S, (
        f"a step took {median:.2f} s to render (budget {STEP_BUDGET_S} s)"
    )
    page.context.close()


def test_two_sessions_have_a_model_each(browser, server):
    """Two browser contexts (two users): stepping one leaves the other's round alone."""
    first, second = browser.new_context(viewport=VIEWPORT), browser.new_context(viewport=VIEWPORT)
    try:
        a, b = _open(first, server.url), _open(second, server.url)
        assert _round(a) == 0 and _round(b) == 0
        _step_and_wait(a, 0)
        _step_and_wait(a, 1)
        b.wait_for_timeout(1000)  # time for a shared model to show up in b
        assert _round(a) == 2 and _round(b) == 0
        _step_and_wait(b, 0)
        assert _round(b) == 1 and _round(a) == 2
        a.reload()  # a new session of the same tab starts again at round 0
        a.get_by_text("Round:").first.wait_for(timeout=120_000)
        assert _round(a) == 0
    finally:
        first.close()
        second.close()


def test_sigterm_stops_every_process_and_closes_the_port(server):
    """SIGTERM to ``python run.py dashboard``: it exits 143, leaving no process, port closed."""
    tree = _descendants(server.proc.pid)
    assert tree, "the dashboard started no server process"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in tree):
        time.sleep(0.1)
    assert not [pid for pid in tree if _alive(pid)], "processes left after SIGTERM"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), 1).close()
