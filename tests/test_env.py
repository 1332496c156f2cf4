"""Environment defaults: set by importing hemo_mtl (a fresh interpreter), the user's values kept, and
set nowhere else in the code (one place decides them)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("NO_ALBUMENTATIONS_UPDATE", "YOLO_OFFLINE", "YOLO_CONFIG_DIR", "CUBLAS_WORKSPACE_CONFIG")


def _environ_after_import(**given: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KEYS} | given
    code = "import json, os, hemo_mtl; print(json.dumps({k: os.environ.get(k) for k in %r}))" % (KEYS,)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_hemo_mtl_sets_the_defaults_and_keeps_the_users():
    env = _environ_after_import()
    assert env["NO_ALBUMENTATIONS_UPDATE"] == "1" and env["YOLO_OFFLINE"] == "1"
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # one of the two values cuBLAS documents as reproducible
    assert Path(env["YOLO_CONFIG_DIR"]) == Path.home() / ".cache" / "hemo_mtl" / "ultralytics"
    kept = _environ_after_import(YOLO_OFFLINE="0", CUBLAS_WORKSPACE_CONFIG=":16:8")
    assert kept["YOLO_OFFLINE"] == "0" and kept["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def _environ_writes(source: str, name: str) -> list[str]:
    """``os.environ.setdefault(KEY, ...)`` / ``os.environ[KEY] = ...`` for a literal KEY in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "setdefault":
            target, key = node.func.value, node.args[0] if node.args else None
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            target, key = node.targets[0].value, node.targets[0].slice
        else:
            continue
        if ast.unparse(target) == "os.environ" and isinstance(key, ast.Constant) and key.value in KEYS:
            found.append(f"{name}:{node.lineno} {key.value}")
    return found


def test_defaults_are_set_in_one_place():
    probe = 'import os\nos.environ.setdefault("YOLO_OFFLINE", "1")\nos.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"\n'
    assert len(_environ_writes(probe, "probe")) == 2  # the scan finds both forms
    files = [p for d in ("hemo_mtl", "converters", "tools") for p in (REPO / d).rglob("*.py")]
    writes = [w for p in files if p != REPO / "hemo_mtl" / "_env.py"
              for w in _environ_writes(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not writes, writes
