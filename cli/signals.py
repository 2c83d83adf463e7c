"""Stopping a command cleanly on Ctrl-C (SIGINT) or SIGTERM.

:func:`guarded` runs a command's main with both signals turned into exceptions that the
command handles where it handles ``KeyboardInterrupt``: the first signal raises
:class:`Interrupted` (SIGINT) or :class:`Terminated` (SIGTERM), both ``KeyboardInterrupt``
subclasses, so a half-finished run can clean up in ``except``/``finally`` blocks; further
signals are ignored while it does (``kill -KILL`` still works). The command prints one line
saying what happened and how to continue, and exits 130 (SIGINT) or 143 (SIGTERM).

Which signal arrived is kept here (:func:`exit_code`, :func:`stopped`), not read from the
exception: Ray's ``ray.get`` turns any ``KeyboardInterrupt`` it sees into a plain one.

After :func:`defer` (called once the results are being published) a signal no longer
interrupts: the command completes, and :func:`guarded` then reports the signal and exits
130/143 all the same.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES = {signal.SIGINT: "interrupted (SIGINT)", signal.SIGTERM: "terminated (SIGTERM)"}


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) arrived."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


class _State:
    received: int | None = None  # the first signal
    deferring: bool = False
    depth: int = 0


_state = _State()


def _handler(signum, frame):
    if _state.received is not None:
        return  # already stopping: let the clean-up finish
    _state.received = signum
    if _state.deferring:
        return
    raise (Terminated if signum == signal.SIGTERM else Interrupted)()


def received() -> int | None:
    """The first SIGINT/SIGTERM received inside :func:`guarded` (None: none)."""
    return _state.received


def exit_code(default: int = 130) -> int:
    """130 after SIGINT, 143 after SIGTERM (``default`` when neither arrived)."""
    return EXIT_CODES.get(_state.received, default)


def stopped() -> str:
    """'interrupted (SIGINT)' or 'terminated (SIGTERM)' (plain 'interrupted' otherwise)."""
    return NAMES.get(_state.received, "interrupted")


def defer() -> None:
    """From now on a signal is recorded, not raised (the command is completing)."""
    _state.deferring = True


@contextlib.contextmanager
def handled():
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; nests)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth:
        _state.depth += 1
        try:
            yield
        finally:
            _state.depth -= 1
        return
    previous = {s: signal.getsignal(s) for s in EXIT_CODES}
    _state.received, _state.deferring, _state.depth = None, False, 1
    for s in EXIT_CODES:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _state.depth = 0


def guarded(prog: str, main, *args, nothing: str = "no result folder written") -> int:
    """``main(*args)`` with clean stops: one stderr line and 130/143 for a signal that
    escaped the command's own handling (or arrived after :func:`defer`); ``nothing`` says
    what was left when the signal came before the command's own handling began."""
    with handled():
        outer = _state.depth == 1
        try:
            code = main(*args)
        except KeyboardInterrupt:
            if not outer:
                raise
            _state.received = _state.received or signal.SIGINT
            # Outside the command's own handling: before it claimed an output folder
            # (starting up), so nothing was written.
            print(f"{prog}: {stopped()}; {nothing}", file=sys.stderr, flush=True)
            return exit_code()
        if outer and _state.received is not None and code not in EXIT_CODES.values():
            print(f"{prog}: {stopped()} after the command had completed", file=sys.stderr)
            return exit_code()
        return code


def finish(code: int):
    """End the process with ``code`` once a command has returned: no signal can interrupt
    the exit any more, and the interpreter's teardown is skipped (numba's and Ray's threads
    can crash it after a run was interrupted; everything was written and closed already)."""
    import os

    for s in EXIT_CODES:
        signal.signal(s, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
