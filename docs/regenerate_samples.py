"""Rewrite, or check, the output samples and included files in README.md and docs/*.md.

A *sample* is the fenced block right after a marker line such as::

    <!-- sample: tatonnet --scenario cobb-douglas --workers 0 --quiet --out runs/cd && tatonnet inspect runs/cd -->

The commands (joined by ``&&``) run in this process (``tatonnet.cli.run.main``) in a fresh
temporary folder, so ``runs/cd`` is a relative path there; the block becomes
``$ <last command>`` followed by what that command printed. An *include* is::

    <!-- include: xor/headline.md -->
    ...
    <!-- end include -->

whose body is the named file (relative to the page), verbatim.

    python docs/regenerate_samples.py            # rewrite every sample and include
    python docs/regenerate_samples.py --check    # exit 1 and name the stale ones

The check compares every line after masking what depends on the machine (rates, wall
times); ``tests/test_docs.py`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = re.compile(r"^<!-- sample: (?P<cmd>.+?) -->$")
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$")
END_INCLUDE = "<!-- end include -->"

#: Machine-dependent figures, masked before comparing a sample with a fresh run.
MASKS = [
    (re.compile(r"[\d.]+(e[+-]\d+)? agent-rounds/s"), "<rate> agent-rounds/s"),
    (re.compile(r"wall [\d.]+ s"), "wall <t> s"),
    (re.compile(r"set-up [\d.]+ s, rounds [\d.]+ s"), "set-up <t> s, rounds <t> s"),
    (re.compile(r"\bin [\d.]+ s\b"), "in <t> s"),
]

#: How a command line may start; what follows is tatonnet's argv.
PREFIXES = (("tatonnet",), ("python", "run.py"), ("python", "-m", "tatonnet"))


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and the pages of docs/, in reading order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def tatonnet_argv(tokens: list[str]) -> list[str] | None:
    """The argv of a ``tatonnet`` / ``python run.py`` / ``python -m tatonnet`` command
    (``.venv/bin/`` and leading ``VAR=value`` assignments allowed), else None."""
    tokens = list(tokens)
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens.pop(0)
    if tokens:
        tokens[0] = tokens[0].removeprefix(".venv/bin/")
        if tokens[0] in ("python3", "python3.12"):
            tokens[0] = "python"
    for prefix in PREFIXES:
        if tuple(tokens[: len(prefix)]) == prefix:
            return tokens[len(prefix) :]
    return None


def run_tatonnet(argv: list[str]) -> tuple[int, str]:
    """Run ``tatonnet ARGV`` in this process; (exit status, stdout)."""
    from tatonnet.cli.run import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse errors
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, out.getvalue()


def run_sample(command: str) -> str:
    """The text of a sample: ``$ <last command>`` and its output, run in a fresh folder."""
    steps = [s.strip() for s in command.split("&&")]
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="tatonnet-sample-") as tmp:
        os.chdir(tmp)
        try:
            for step in steps:
                argv = tatonnet_argv(shlex.split(step))
                if argv is None:
                    raise ValueError(f"sample step is not a tatonnet command: {step!r}")
                rc, text = run_tatonnet(argv)
                if rc != 0:
                    raise RuntimeError(f"{step!r} exited {rc}")
        finally:
            os.chdir(here)
    return f"$ {steps[-1]}\n{text.rstrip()}"


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def _fence_end(lines: list[str], start: int) -> int:
    """Index of the closing fence of the block opening at ``lines[start]``."""
    for j in range(start + 1, len(lines)):
        if lines[j].startswith("```"):
            return j
    raise ValueError(f"unclosed code block at line {start + 1}")


def process(page: Path, check: bool) -> list[str]:
    """Regenerate the samples and includes of one page; the stale ones (check) or []."""
    lines = page.read_text().split("\n")
    problems: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        if m := SAMPLE.match(line.strip()):
            if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
                problems.append(f"{page.name}:{i + 1}: a sample marker must precede a code block")
                i += 1
                continue
            end = _fence_end(lines, i + 1)
            old = "\n".join(lines[i + 2 : end])
            new = run_sample(m["cmd"])
            if mask(old) != mask(new):
                problems.append(f"{page.name}:{i + 1}: sample of {m['cmd']!r} is stale")
            out += [lines[i + 1], *new.split("\n"), lines[end]]
            i = end + 1
            continue
        if m := INCLUDE.match(line.strip()):
            try:
                end = lines.index(END_INCLUDE, i + 1)
            except ValueError:
                problems.append(f"{page.name}:{i + 1}: include without '{END_INCLUDE}'")
                i += 1
                continue
            source = page.parent / m["path"]
            new = source.read_text().rstrip("\n")
            if "\n".join(lines[i + 1 : end]) != new:
                problems.append(f"{page.name}:{i + 1}: include of {m['path']} is stale")
            out += [*new.split("\n"), END_INCLUDE]
            i = end + 1
            continue
        i += 1
    if not check:
        text = "\n".join(out)
        if text != page.read_text():
            page.write_text(text)
    return problems


def regenerate(root: Path = ROOT, check: bool = False) -> list[str]:
    """Every page's samples and includes; the stale ones when ``check``."""
    return [p for page in doc_files(root) for p in process(page, check)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale samples, write nothing")
    args = parser.parse_args(argv)
    problems = regenerate(check=args.check)
    for problem in problems if args.check else ():
        print(problem, file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
