"""metrics.json / report.md / plots: content matches the metrics, NaN is null, writes are atomic."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from hemo_mtl.evaluation import CONVENTIONS, classification_metrics, render_markdown, write_report
from hemo_mtl.evaluation.detection import froc_curve
from hemo_mtl.atomic import atomic_path
from hemo_mtl.evaluation.report import metric_tables, write_metrics_json


def _table_cell(md: str, table: str, row: str, col: str) -> str:
    lines = md.splitlines()
    start = lines.index(f"## {table}")
    header = [c.strip() for c in lines[start + 2].strip("|").split("|")]
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == row:
            return cells[header.index(col)]
    raise KeyError((table, row, col))


def test_report_tables_cis_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((120, 6)) < 0.4).astype(float)
    p = np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1)
    pids = rng.integers(0, 25, 120)
    m = classification_metrics(y, p, None, pids, n_bootstrap=30)
    m.update({"det/bbox/AP50": 0.5, "det/bbox/AP50/IVH": 0.25, "det/bbox/APl": math.nan,
              "seg/any/dice": 0.8, "volume/any/mae_ml": 1.5})
    curve = froc_curve(np.array([0.9, 0.5, 0.2]), np.array([1, 0, 1]), n_lesions=3, n_units=4)
    gt_ml = rng.random((10, 6)) * 20
    details = {"cls": {"y_true": y, "y_prob": p, "valid": np.ones_like(y, bool)},
               "froc": {"2d": curve},
               "volumes": {"labels": ("any", "EDH", "SDH", "SAH", "IPH", "IVH"), "gt_ml": gt_ml,
                           "pred_ml": gt_ml + rng.normal(0, 1, gt_ml.shape)}}
    paths = write_report(tmp_path, m, details=details, conventions=CONVENTIONS["cls"], notes=["a note"])

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["det/bbox/APl"] is None and saved["cls/any/auc"] == pytest.approx(m["cls/any/auc"])
    md = (tmp_path / "report.md").read_text()
    auc = _table_cell(md, "cls", "any", "auc")
    assert auc == f"{m['cls/any/auc']:.4f} [{m['cls/any/auc_ci95_low']:.4f}, {m['cls/any/auc_ci95_high']:.4f}]"
    assert _table_cell(md, "cls_patient", "SDH", "tp") == str(int(m["cls_patient/SDH/tp"]))
    assert _table_cell(md, "det/bbox", "IVH", "AP50") == "0.2500"
    assert _table_cell(md, "det/bbox", "all", "APl") == "n/a"
    # a summary count shares no column with the per-label rows: a line under the table, not a blank row
    assert f"- all: n_auc_undefined {int(m['cls/all/n_auc_undefined'])}" in md
    with pytest.raises(KeyError):
        _table_cell(md, "cls", "all", "n_auc_undefined")
    assert CONVENTIONS["cls"][0] in md and "- a note" in md
    for name in ("roc_pr", "confusion_cls", "confusion_cls_patient", "froc_2d", "bland_altman_any"):
        png = paths[name]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({png.name})" in md
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temp files left


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_metrics_json({"a": 1.0}, target)

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write('{"a": ')
        raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"a": 1.0}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_metric_tables_parse_key_shapes():
    t = metric_tables({"seg3d/IPH/dice": 0.5, "det/froc/sens@1fp/SDH": 0.25, "det/froc/sens@1fp": 0.3,
                       "weird": 1.0})
    assert t["seg3d"]["IPH"]["dice"] == "0.5000"
    assert t["det/froc"]["SDH"]["sens@1fp"] == "0.2500" and t["det/froc"]["all"]["sens@1fp"] == "0.3000"
    assert "weird" not in str(t) and render_markdown({}).startswith("# ")
