"""Command-line plumbing shared by ``run.py`` and its subcommands (study, inspect, dashboard).

A user mistake is one line on stderr and exit status :data:`EXIT_USAGE`, never a traceback.
"""

from __future__ import annotations

import argparse
import math

EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2)."""

    def error(self, message):  # noqa: D401
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_int_or_auto(text: str) -> int | str:
    """``auto`` or a positive integer (``--sync-every``)."""
    return "auto" if text == "auto" else positive_int(text)


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value
