"""Atomic writers: strict JSON (undefined metrics are null) and ordinary file permissions."""
from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from hemo_mtl.atomic import atomic_write_json, atomic_write_text
from hemo_mtl.evaluation import write_report


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_nan_and_inf_metrics_are_written_as_null(tmp_path):
    path = tmp_path / "final_metrics.json"
    atomic_write_json(path, {"cls/any/auc": math.nan, "det/bbox/AP": np.float32("inf"), "n": np.int64(3),
                             "nested": [1.5, -math.inf, {"x": np.nan}]})
    assert _strict_loads(path.read_text()) == {"cls/any/auc": None, "det/bbox/AP": None, "n": 3,
                                               "nested": [1.5, None, {"x": None}]}


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_mode_of_an_ordinary_file(tmp_path, umask):
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:  # the reference: what the process umask gives any new file
        f.write("x")
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "a.json", {"a": 1})
    paths = write_report(tmp_path / "report", {"cls/any/auc": 0.5, "cls/any/ap": math.nan})
    assert _mode(plain) == 0o666 & ~umask
    for path in [tmp_path / "a.txt", tmp_path / "a.json", *paths.values()]:
        assert _mode(path) == _mode(plain), path
