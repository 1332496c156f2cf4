from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hemo_mtl.models.backbones import build_backbone
from hemo_mtl.models.heads import YoloSegmentHead

pytestmark = pytest.mark.yolo
KEYS = {"loss_yolo_box", "loss_yolo_seg", "loss_yolo_cls", "loss_yolo_dfl"}


@pytest.fixture()
def parts():
    pytest.importorskip("ultralytics")
    torch.manual_seed(0)
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 32})
    return backbone, YoloSegmentHead(backbone, num_protos=16)


def test_targets_in_ultralytics_format():
    t = {"boxes": torch.tensor([[8.0, 16, 24, 48]]), "labels": torch.tensor([3]), "masks": torch.ones(1, 64, 32)}
    e = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 64, 32)}
    out = YoloSegmentHead.yolo_targets({"targets": [e, t, t]}, [1, 2], (64, 32), "cpu")
    assert out["batch_idx"].tolist() == [0.0, 1.0]
    assert out["cls"].tolist() == [[2.0], [2.0]]  # SAH -> 0-based class 2
    assert torch.allclose(out["bboxes"][0], torch.tensor([16 / 32, 32 / 64, 16 / 32, 32 / 64]))
    assert out["masks"].shape == (2, 64, 32)


def test_ultralytics_loss_on_our_batch_and_zero_without_box_labels(parts, batch_fn, mask_fn):
    backbone, head = parts
    empty = np.zeros((64, 64), np.uint8)
    batch = batch_fn([mask_fn(64, 0), empty, mask_fn(64, 2)], [True] * 3, [True] * 3, [True, True, False])
    losses = head(backbone(batch["image"]), batch)
    assert set(losses) == KEYS and all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_yolo_seg"] > 0 and losses["loss_yolo_cls"] > 0
    sum(losses.values()).backward()
    head.zero_grad()
    batch["has"]["boxes"][:] = False
    losses = head(backbone(batch["image"]), batch)
    assert all(v.item() == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in head.parameters() if p.requires_grad)


def test_eval_instances(parts, batch_fn, mask_fn):
    backbone, head = parts
    backbone.eval()
    head.eval()
    head.conf_thresh = 0.0  # random init: keep some detections to check their shapes
    batch = batch_fn([mask_fn(64, 0)] * 2, [True] * 2, [True] * 2, [True] * 2)
    with torch.no_grad():
        out = head(backbone(batch["image"]), batch)["instances"]
    assert len(out) == 2
    for inst in out:
        n = len(inst["boxes"])
        assert n > 0 and inst["masks"].shape == (n, 64, 64) and inst["scores"].shape == (n,)
        assert bool(((inst["labels"] >= 1) & (inst["labels"] <= 5)).all())
        assert bool(((inst["masks"] >= 0) & (inst["masks"] <= 1)).all())


def test_missing_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "ultralytics.nn.modules.head", None)
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 16})
    with pytest.raises(ImportError, match=r"hemo-mtl\[yolo\]"):
        YoloSegmentHead(backbone)


def test_class_weight_reaches_the_ultralytics_classification_loss(parts, batch_fn, mask_fn):
    backbone, head = parts
    batch = batch_fn([mask_fn(64, 0), mask_fn(64, 2)], [True] * 2, [True] * 2, [True] * 2)
    feats = backbone(batch["image"])
    plain = head(feats, batch)["loss_yolo_cls"].item()
    weighted = YoloSegmentHead(backbone, num_protos=16, class_weight=[3.0] * 5)
    weighted.load_state_dict(head.state_dict())
    # ultralytics multiplies its per-class BCE by the weights: a uniform 3 triples the class loss
    assert weighted(feats, batch)["loss_yolo_cls"].item() == pytest.approx(3 * plain, rel=1e-4)
    with pytest.raises(ValueError, match=r"class_weight needs 5 positive values \(EDH, SDH"):
        YoloSegmentHead(backbone, num_protos=16, class_weight=[1.0, 1.0])
