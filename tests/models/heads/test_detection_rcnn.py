from __future__ import annotations

import numpy as np
import pytest
import torch

from hemo_mtl.models.backbones import build_backbone
from hemo_mtl.models.heads import MaskRCNNHead, pad_small_boxes

RPN_KEYS = {"loss_rpn_objectness", "loss_rpn_box"}
ALL_KEYS = RPN_KEYS | {"loss_box_cls", "loss_box_reg", "loss_mask"}


@pytest.fixture()
def parts():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 32})
    head = MaskRCNNHead(backbone, representation_size=64, mask_channels=32, mask_layers=2)
    return backbone, head


def test_pad_small_boxes_hand_cases():
    boxes = torch.tensor([[5.0, 5, 5, 6], [0, 0, 1, 1], [63, 10, 64, 30], [10, 10, 20, 20]])
    out = pad_small_boxes(boxes, 2.0, (64, 64))
    expected = torch.tensor([[4.0, 4.5, 6, 6.5], [0, 0, 2, 2], [62, 10, 64, 30], [10, 10, 20, 20]])
    assert torch.allclose(out, expected)


def test_training_losses_with_lesions_one_pixel_boxes_and_negative_slices(parts, batch_fn, mask_fn):
    backbone, head = parts
    empty = np.zeros((64, 64), np.uint8)
    batch = batch_fn([mask_fn(64, 0), empty, mask_fn(64, 1)], [True] * 3, [True] * 3, [True, True, False])
    assert batch["targets"][0]["boxes"][:, 2:].sub(batch["targets"][0]["boxes"][:, :2]).min() == 1  # 1-px EDH
    losses = head(backbone(batch["image"]), batch)
    assert set(losses) == ALL_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_only_negative_slices_still_train_the_rpn(parts, batch_fn):
    backbone, head = parts
    empty = np.zeros((64, 64), np.uint8)
    batch = batch_fn([empty, empty], [True] * 2, [True] * 2, [True, True])
    losses = head(backbone(batch["image"]), batch)
    assert losses["loss_rpn_objectness"] > 0 and losses["loss_box_cls"] > 0  # background is learned
    assert losses["loss_rpn_box"] == 0 and losses["loss_box_reg"] == 0 and losses["loss_mask"] == 0
    sum(losses.values()).backward()
    assert head.rpn.head.cls_logits.weight.grad.abs().sum() > 0


def test_no_box_labels_gives_exact_zeros_with_zero_grad(parts, batch_fn, mask_fn):
    backbone, head = parts
    batch = batch_fn([mask_fn(64, 0)] * 2, [True] * 2, [True] * 2, [False, False])
    losses = head(backbone(batch["image"]), batch)
    assert set(losses) == ALL_KEYS and all(v.item() == 0.0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in head.parameters())


def test_eval_instances_have_contract_shapes(parts, batch_fn, mask_fn):
    backbone, head = parts
    backbone.eval()
    head.eval()
    batch = batch_fn([mask_fn(64, 0), mask_fn(64, 1)], [True] * 2, [True] * 2, [True] * 2)
    with torch.no_grad():
        out = head(backbone(batch["image"]), batch)
    assert list(out) == ["instances"] and len(out["instances"]) == 2
    for inst in out["instances"]:
        n = len(inst["boxes"])
        assert inst["boxes"].shape == (n, 4) and inst["scores"].shape == (n,)
        assert inst["labels"].dtype == torch.int64 and bool(((inst["labels"] >= 1) & (inst["labels"] <= 5)).all())
        assert inst["masks"].shape == (n, 64, 64) and inst["masks"].is_floating_point()
        assert bool(((inst["masks"] >= 0) & (inst["masks"] <= 1)).all())


def test_anchor_sizes_must_match_levels():
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 16})
    with pytest.raises(ValueError, match="anchor_sizes"):
        MaskRCNNHead(backbone, anchor_sizes=[8, 16])
