"""Head sections are filled from the defaults of their own type, not of the default head of that name."""
from pathlib import Path

from hemo_mtl.config import load_config
from hemo_mtl.models import HEAD_DEFAULTS

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_yolo_det_gets_yolo_defaults_not_rcnn():
    cfg = load_config(DEMO, ["model.heads.det={type: yolo}"])
    det = cfg["model"]["heads"]["det"]
    assert set(det) == set(HEAD_DEFAULTS["yolo"])
    assert "anchor_sizes" not in det


def test_rcnn_det_keeps_config_values_over_type_defaults():
    cfg = load_config(DEMO, ["model.heads.det.box_batch_size_per_image=32"])
    det = cfg["model"]["heads"]["det"]
    assert det["type"] == "rcnn" and det["box_batch_size_per_image"] == 32
    assert set(det) == set(HEAD_DEFAULTS["rcnn"])
