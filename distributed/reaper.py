"""Watchdog of a private local Ray: when the driver is gone, end its Ray and remove its folder.

``python reaper.py TEMP_DIR DRIVER_PID`` (started by :func:`tatonnet.distributed.cluster.connect`
before ``ray.init``, stdlib only so it starts in milliseconds). It waits until its stdin
(a pipe whose write end only the driver holds) closes — at the driver's clean shutdown or
at its death, even by SIGKILL — or until the driver's pid is no longer its parent. Then it
ends every process of that Ray session: processes whose command line, working folder or
open files are under ``TEMP_DIR`` (the session folder Ray was given; gcs_server, raylet,
its agents and workers all keep their logs open there), with SIGTERM, then SIGKILL after
a grace period; finally it removes ``TEMP_DIR``. It never touches a process outside that
folder, so a joined cluster or another user's Ray is never affected.

Linux only (``/proc``); elsewhere it just removes the folder.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import time

GRACE_SECONDS = 2.0


def _parent_gone(driver: int) -> bool:
    return os.getppid() != driver


def wait_for_driver(driver: int, poll: float = 0.5) -> None:
    """Return when stdin reaches EOF or the driver is no longer our parent."""
    fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], poll)
        if ready:
            try:
                if not os.read(fd, 4096):
                    return
            except OSError:
                return
        if _parent_gone(driver):
            return


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + "/")


def session_pids(folder: str, exclude: tuple[int, ...] = ()) -> set[int]:
    """Live processes (not zombies, not this one, none in ``exclude``) that use ``folder``."""
    skip = {os.getpid(), *exclude}
    found = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit() or int(name) in skip:
            continue
        base = f"/proc/{name}"
        try:
            with open(f"{base}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X"):
                continue
            with open(f"{base}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            words = cmdline.replace("=", " ").split()
            if any(_under(w, folder) for w in words) or _under(os.readlink(f"{base}/cwd"), folder):
                found.add(int(name))
                continue
            for fd in os.listdir(f"{base}/fd"):
                try:
                    if _under(os.readlink(f"{base}/fd/{fd}"), folder):
                        found.add(int(name))
                        break
                except OSError:
                    continue
        except OSError:  # gone, or not ours to read
            continue
    return found


def end_session(
    folder: str, exclude: tuple[int, ...] = (), grace: float = GRACE_SECONDS
) -> set[int]:
    """SIGTERM every process of the session, SIGKILL those still alive after ``grace``."""
    ended = set()
    pids = session_pids(folder, exclude)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
                ended.add(pid)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = session_pids(folder, exclude)
        if not pids:
            break
        pids |= session_pids(folder, exclude)  # a worker started meanwhile
    return ended


def main(argv: list[str]) -> int:
    folder, driver = os.path.realpath(argv[0]), int(argv[1])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # outlive the driver's terminal and signals
    wait_for_driver(driver)
    if os.path.isdir("/proc"):
        end_session(folder, exclude=(driver,))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
