"""The documentation stays true: README.md and docs/*.md.

* README.md is at most 150 lines;
* every relative link points to an existing file;
* every output sample (``<!-- sample: ... -->``) and included file is what the named
  command prints now (``docs/regenerate_samples.py --check``; machine-dependent rates and
  times are masked);
* every command in a fenced ``bash`` block runs: a ``tatonnet`` / ``python run.py`` /
  ``python -m tatonnet`` command is run in this process in a quick variant (60 agents,
  30 rounds, ``--workers 0``, ``--quick`` for studies) in a temporary folder, the page's
  commands in order (so ``tatonnet inspect runs/cd`` finds the run an earlier command made);
  ``tatonnet dashboard`` is parsed and its options validated, without starting a server;
  other commands must name existing files. A block after ``<!-- not run: reason -->`` is
  only parsed. A ``toml`` block after ``<!-- file: NAME -->`` is written to NAME first, and
  ``python`` blocks are executed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "regenerate_samples", ROOT / "docs" / "regenerate_samples.py"
)
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

PAGES = samples.doc_files(ROOT)
NOT_RUN = re.compile(r"^<!-- not run: .+ -->$")
FILE = re.compile(r"^<!-- file: (?P<name>[\w.-]+) -->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SUBCOMMANDS = ("study", "inspect", "dashboard")
QUICK_AGENTS, QUICK_ROUNDS = "60", "30"


def blocks(page: Path):
    """(language, marker line before it or '', body lines) of every fenced block."""
    lines = page.read_text().split("\n")
    found, i = [], 0
    while i < len(lines):
        if m := FENCE.match(lines[i]):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            found.append((m["lang"], before, lines[i + 1 : end]))
            i = end + 1
        else:
            i += 1
    return found


def shell_commands(body: list[str]) -> list[list[str]]:
    """The commands of a bash block: continuations joined, comments dropped, split at &&."""
    text = "\n".join(body).replace("\\\n", " ")
    commands = []
    for line in text.split("\n"):
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            commands.append(tokens[:cut])
            tokens = tokens[cut + 1 :]
    return [c for c in commands if c]


def _set(argv: list[str], option: str, value: str | None = None) -> list[str]:
    """argv with ``option`` (and its value) set, replacing a given one."""
    argv = list(argv)
    if option in argv:
        k = argv.index(option)
        if value is not None:
            argv[k + 1] = value
        return argv
    return argv + [option] + ([value] if value is not None else [])


def _drop(argv: list[str], option: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        k = argv.index(option)
        del argv[k : k + 2]
    return argv


def quick_variant(argv: list[str], n: int) -> list[str]:
    """A fast run of a documented command (see the module docstring)."""
    if argv and argv[0] == "study":
        rest = argv[1:]
        if "--grid" in rest and not Path(rest[rest.index("--grid") + 1]).is_file():
            rest = _drop(rest, "--grid")
        if "--grid" not in rest:
            rest = _set(rest, "--quick")
        rest = _drop(rest, "--address")
        rest = _set(_set(rest, "--workers", "0"), "--quiet")
        if "--out" not in rest:
            rest = _set(rest, "--out", f"runs/study-{n}")
        rest = _set(rest, "--force")
        return ["study", *rest]
    if argv and argv[0] in SUBCOMMANDS:
        return argv
    for option in ("--resume", "--address"):
        if option in argv:
            raise ValueError(
                f"{shlex.join(argv)!r} cannot run here ({option}): mark its block <!-- not run: ... -->"
            )
    argv = _set(argv, "--rounds", QUICK_ROUNDS)
    if "--trade" in argv:
        argv = _drop(argv, "--workers")  # trade runs in-process; its graphs are files
    else:
        argv = _set(argv, "--agents", QUICK_AGENTS)
        argv = _set(argv, "--workers", "1" if "--checkpoint-every" in argv else "0")
    if "--out" not in argv:
        argv = _set(argv, "--out", f"runs/cmd-{n}")
    return _set(_set(argv, "--quiet"), "--force")


def parse_only(argv: list[str]) -> None:
    """Parse a command with its own parser (and validate dashboard options)."""
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f"tatonnet.cli.{argv[0]}")
        args = module.build_parser().parse_args(argv[1:])
        if argv[0] == "dashboard":
            module.check_options(args)
    else:
        from tatonnet.cli.run import build_parser

        build_parser().parse_args(argv)


def check_other(tokens: list[str], runnable: bool) -> str | None:
    """A command that is not tatonnet's: the files it names must exist. Error or None."""
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]
    head = tokens[0].removeprefix(".venv/bin/") if tokens else ""
    if head == "bash":
        return None if (ROOT / tokens[1]).is_file() else f"no such script {tokens[1]}"
    if head == "python" and tokens[1:3] == ["-m", "pytest"]:
        missing = [
            t
            for t in tokens[3:]
            if t.startswith("tests") and not (ROOT / t.split("::")[0]).exists()
        ]
        return f"no such test {missing}" if missing else None
    if head == "python" and tokens[1].endswith(".py"):
        return None if (ROOT / tokens[1]).is_file() else f"no such script {tokens[1]}"
    if head == "solara" and tokens[1] == "run":
        return None if importlib.util.find_spec(tokens[2]) else f"no module {tokens[2]}"
    if head == "export" or not runnable:
        return None
    return f"unknown command {shlex.join(tokens)!r}: mark its block <!-- not run: ... -->"


def test_readme_is_a_page():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 150, f"README.md has {n} lines (at most 150)"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_samples_are_regenerated():
    problems = samples.regenerate(ROOT, check=True)
    assert not problems, "run `python docs/regenerate_samples.py`:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures, n = [], 0
    for lang, before, body in blocks(page):
        runnable = not NOT_RUN.match(before)
        if lang == "toml" and (m := FILE.match(before)):
            Path(m["name"]).write_text("\n".join(body) + "\n")
        elif lang == "python" and runnable:
            try:
                exec(compile("\n".join(body), f"{page.name} python block", "exec"), {})
            except Exception as exc:  # noqa: BLE001 - reported with the page
                failures.append(f"python block {body[0]!r}...: {exc!r}")
        elif lang == "bash":
            for tokens in shell_commands(body):
                argv = samples.tatonnet_argv(tokens)
                if argv is None:
                    if error := check_other(tokens, runnable):
                        failures.append(error)
                    continue
                n += 1
                try:
                    if not runnable or (argv and argv[0] == "dashboard"):
                        parse_only(argv)
                        continue
                    quick = quick_variant(argv, n)
                    rc, text = samples.run_tatonnet(quick)
                except SystemExit as exc:
                    failures.append(f"{shlex.join(tokens)!r} does not parse (exit {exc.code})")
                    continue
                except Exception as exc:  # noqa: BLE001 - reported with the page
                    failures.append(f"{shlex.join(tokens)!r}: {exc!r}")
                    continue
                if rc != 0:
                    failures.append(f"{shlex.join(tokens)!r} as {shlex.join(quick)!r} exited {rc}")
    assert not failures, f"{page.name}:\n" + "\n".join(failures)
