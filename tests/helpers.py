"""Helpers shared by test modules (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

from tatonnet.cli import run


def invoke(argv, capsys) -> tuple[int, str, str]:
    """Run the ``tatonnet`` command in this process: (exit status, stdout, stderr)."""
    try:
        code = run.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
