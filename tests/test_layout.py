"""The package's shape: rooms import downwards only, no import loop, and the wheel installs
nothing but ``tatonnet`` (tested beside packages named as Dask's ``distributed`` and
openai-agents' ``agents``).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The rooms from the bottom up; a room may import only rooms below it (same rank: neither).
RANKS = {
    "agents": 0,  # who acts: utilities, the Mesa agent view, price rules
    "environment": 1,  # the world: economy, network, scenarios, market worlds
    "results": 2,  # the run folder: writing, reading, exporting, summaries
    "distributed": 3,  # how a run spreads: partition, shards, engine, Ray, run loop
    "studies": 4,  # experiments
    "dashboard": 4,  # the browser
    "cli": 5,  # the command line
    "": 6,  # tatonnet/__init__.py, __main__.py, run.py
}


def _package_modules() -> dict[str, Path]:
    """``tatonnet.x.y`` -> file, for every module the wheel installs."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] not in RANKS and len(rel.parts) > 1:
            continue  # tests/, benchmarks/, docs/, .venv/ ...
        parts = ["tatonnet", *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _package_modules()


def _imports(path: Path, module: str) -> set[str]:
    """The tatonnet modules ``path`` imports, at any depth of the file (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name != "tatonnet":
                found.add(name)
    return found


GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANKS) else ""


def test_the_rooms_are_the_package():
    assert {"tatonnet.agents.rules", "tatonnet.environment.tatonnement.kernel",
            "tatonnet.distributed.engine", "tatonnet.cli.run"} <= set(MODULES)  # fmt: skip
    assert all(_room(m) in RANKS for m in MODULES)


def test_imports_run_downwards_only():
    upward = [
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if _room(a) != _room(b) and RANKS[_room(b)] >= RANKS[_room(a)]
    ]
    assert not upward, "imports that do not run down the rooms:\n" + "\n".join(sorted(upward))


def test_no_import_loop():
    """No module reaches itself through imports (function-level imports count too)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (loop := visit(n)):
                return loop
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (loop := visit(m)):
            pytest.fail("import loop: " + " -> ".join(loop))


def test_distributed_is_only_about_spreading_a_run():
    """distributed/ neither parses command lines nor knows about studies."""
    for m, path in MODULES.items():
        if _room(m) == "distributed":
            text = path.read_text()
            assert "argparse" not in text, m
            assert not any(_room(n) in ("studies", "cli", "dashboard") for n in GRAPH[m]), m


# ---- the built wheel in a fresh environment -----------------------------------------------
def _pip(python: Path, *args, cwd=None) -> subprocess.CompletedProcess:
    """This environment's pip, acting on the environment of ``python`` (pip's ``--python``:
    the fresh environment needs no pip of its own, which saves ensurepip's ~10 s)."""
    target = [] if Path(python) == Path(sys.executable) else ["--python", str(python)]
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *target, *args],
        capture_output=True, text=True, timeout=900, cwd=cwd,
    )  # fmt: skip


@pytest.mark.slow
def test_wheel_installs_only_tatonnet_beside_distributed_and_agents(tmp_path):
    """A fresh virtual environment: the wheel adds only ``tatonnet`` and its dist-info to
    site-packages; with top-level packages ``distributed`` (Dask's name) and ``agents``
    (openai-agents' name) installed too, both sides import and a small scenario runs
    through ``python -m tatonnet`` and the ``tatonnet`` script.

    The clash is one of import names, so the two are small stand-in distributions built
    here (``distributed`` with a ``Client``, ``agents`` with ``Agent`` and ``Runner``),
    installed by pip like any wheel: no registry, and 20 s less than downloading them.
    tatonnet's own dependencies come from this environment's site-packages through a
    ``.pth`` line (a line adds a folder, it does not run that folder's editable-install
    hooks).
    """
    built = _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "-w", str(tmp_path / "dist"), str(ROOT))  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tatonnet-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True,
    ).strip())  # fmt: skip
    ours = Path(next(p for p in sys.path if p.endswith("site-packages")))
    before = set(os.listdir(site))
    installed = _pip(python, "install", "-q", "--no-deps", str(wheel))
    assert installed.returncode == 0, installed.stderr[-2000:]
    added = set(os.listdir(site)) - before - {"__pycache__"}
    assert added == {"tatonnet", wheel.name.split("-py3")[0] + ".dist-info"}, added

    (site / "zz_tatonnet_deps.pth").write_text(f"{ours}\n")
    stand_ins = {"distributed": "class Client:\n    pass\n",
                 "agents": "class Agent:\n    pass\n\n\nclass Runner:\n    pass\n"}  # fmt: skip
    for name, code in stand_ins.items():
        src = tmp_path / f"clash-{name}"
        (src / name).mkdir(parents=True)
        (src / name / "__init__.py").write_text(code)
        (src / "pyproject.toml").write_text(
            f'[project]\nname = "clash-{name}"\nversion = "1.0"\n'
            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
            f'[tool.setuptools]\npackages = ["{name}"]\n'
        )
        made = _pip(Path(sys.executable), "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "clash"), str(src))  # fmt: skip
        assert made.returncode == 0, made.stderr[-2000:]
    wheels = [str(w) for w in (tmp_path / "clash").glob("*.whl")]
    clash = _pip(python, "install", "-q", "--no-deps", *wheels)
    assert clash.returncode == 0, clash.stderr[-2000:]
    assert {"distributed", "agents"} <= set(os.listdir(site))

    work = tmp_path / "cwd"  # not the checkout: nothing of it on sys.path
    work.mkdir()
    code = (
        "import distributed, agents, tatonnet\n"
        "assert hasattr(distributed, 'Client'), distributed.__file__\n"
        "assert hasattr(agents, 'Agent') and hasattr(agents, 'Runner'), agents.__file__\n"
        "import tatonnet.distributed.engine, tatonnet.agents.rules\n"
        "print(tatonnet.__file__)\n"
    )
    both = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          cwd=work, timeout=300)  # fmt: skip
    assert both.returncode == 0, both.stderr[-3000:]
    assert str(site / "tatonnet") in both.stdout

    argv = ["--scenario", "cobb-douglas", "--agents", "60", "--rounds", "30", "--workers",
            "0", "--no-reference", "--quiet"]  # fmt: skip
    for cmd in ([str(python), "-m", "tatonnet"], [str(env_dir / "bin" / "tatonnet")]):
        out = work / f"run-{len(list(work.iterdir()))}"
        ran = subprocess.run([*cmd, *argv, "--out", str(out)], capture_output=True,
                             text=True, cwd=work, timeout=300)  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert "status:" in ran.stdout and (out / "summary.json").is_file()
    shutil.rmtree(env_dir, ignore_errors=True)


def test_package_docstring_example_runs():
    """The example in ``tatonnet``'s docstring (``help(tatonnet)``) runs as shown."""
    import doctest

    import tatonnet

    result = doctest.testmod(tatonnet, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def _architecture_tree() -> set[str]:
    """The module paths the tree in docs/09-architecture.md names (``folder/file.py``)."""
    text = (ROOT / "docs" / "09-architecture.md").read_text()
    block = text.split("## The rooms", 1)[1].split("```", 2)[1]
    named, folders = set(), {}
    for line in block.splitlines():
        entry = line.split("  ", 1)[0] if not line.startswith(" ") else line.strip().split()[0]
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if not entry or "," in entry:
            continue
        if entry.endswith("/"):
            folders[depth] = entry
            for deeper in [d for d in folders if d > depth]:
                del folders[deeper]
        elif entry.endswith(".py") and depth > 0:
            named.add("".join(folders[d] for d in range(depth)) + entry)
    return named


def test_the_architecture_page_names_every_module():
    """docs/09-architecture.md's tree lists exactly the package's modules (no stale names)."""
    actual = {
        str(path.relative_to(ROOT))
        for m, path in MODULES.items()
        if _room(m) and path.name != "__init__.py" and path.parent.name != "rules"
    }
    named = _architecture_tree()
    assert actual - named == set(), "modules missing from docs/09-architecture.md"
    assert named - actual == set(), "docs/09-architecture.md names modules that do not exist"
