"""The console commands setup.py installs run the same functions as the tools/ scripts of a checkout.

setup.py is read as source (its ``entry_points`` literal), since this checkout is not installed.
"""
from __future__ import annotations

import ast
import importlib
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRAPPERS = sorted((REPO / "tools").glob("*.py"))


def console_scripts() -> dict[str, str]:
    """{command: "module:function"} from the ``entry_points`` keyword of setup.py's ``setup()`` call."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    pairs = [line.split("=") for line in entry_points["console_scripts"]]
    return {name.strip(): target.strip() for name, target in pairs}


def resolve(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def wrapper_function(path: Path):
    """The function ``tools/<name>.py`` calls under ``__main__``: its module-level ``cli``."""
    return runpy.run_path(str(path), run_name="wrapper")["cli"]


def test_every_tools_script_is_a_console_command_and_back():
    commands = console_scripts()
    assert len(commands) == len(WRAPPERS) == len(set(commands.values()))
    installed = {resolve(target) for target in commands.values()}
    for path in WRAPPERS:
        assert wrapper_function(path) in installed, f"{path.name} runs no console command's function"
    for name, target in commands.items():
        assert name == "hemo-mtl-" + target.split(":")[0].rsplit(".", 1)[1].replace("_", "-"), name


def test_wrappers_hold_no_code_of_their_own():
    """A tools/ script only imports its command and calls it (no sys.path edits, no options of its own)."""
    for path in WRAPPERS:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        body = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        kinds = [type(n).__name__ for n in body]
        assert kinds == ["Import", "ImportFrom", "If"], (path.name, kinds)
        assert body[1].module.startswith("hemo_mtl.cli.") and [a.name for a in body[1].names] == ["cli"]


def test_readme_table_lists_every_console_command_with_its_script_and_module():
    rows = re.findall(r"^\| `(hemo-mtl-[a-z-]+)` \| `(tools/\w+\.py)` \| `(hemo_mtl/cli/\w+\.py)` \|$",
                      (REPO / "README.md").read_text(encoding="utf-8"), re.M)
    commands = console_scripts()
    assert sorted(name for name, _, _ in rows) == sorted(commands)
    for name, script, module in rows:
        assert commands[name].split(":")[0] == module[:-len(".py")].replace("/", "."), name
        assert wrapper_function(REPO / script) is resolve(commands[name]), name


@pytest.mark.parametrize("command", sorted(console_scripts()))
def test_console_command_help_exits_0(command, capsys):
    function = resolve(console_scripts()[command])
    try:
        code = function(["--help"])
    except SystemExit as exc:  # argparse's --help
        code = exc.code
    out = capsys.readouterr().out
    assert code == 0
    # the dispatcher prints its docstring and the benchmark names; the others are argparse's help
    assert "available: cocoeval" in out if command == "hemo-mtl-benchmark" else out.startswith("usage:")


@pytest.mark.parametrize("module", ["hemo_mtl.cli.train", "hemo_mtl.cli.phantom"])
def test_module_runs_with_python_m(module):
    """``python -m hemo_mtl.cli.train`` is how run_grid starts each run."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
