from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hemo_mtl.models import build_model

SMALL = {
    "backbone": {"name": "resnet18", "in_chans": 1, "fpn_channels": 32},
    "heads": {
        "cls": {},
        "seg": {"channels": 16},
        "det": {"type": "rcnn", "representation_size": 64, "mask_channels": 32, "mask_layers": 2,
            "rpn_post_nms_top_n_test": 50, "box_detections_per_img": 20},
    },
}
DET_KEYS = {"loss_rpn_objectness", "loss_rpn_box", "loss_box_cls", "loss_box_reg", "loss_mask"}


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_model(SMALL)


@pytest.fixture()
def mixed(batch_fn, mask_fn):
    """Fully labelled lesion slice, Kaggle slice (any only), labelled negative, RSNA slice (cls only)."""
    lesion, empty = mask_fn(64, 0), np.zeros((64, 64), np.uint8)
    valid = [[1] * 6, [1, 0, 0, 0, 0, 0], [1] * 6, [1] * 6]
    return batch_fn([lesion, mask_fn(64, 1), empty, mask_fn(64, 2)], [True] * 4,
                    [True, False, True, False], [True, False, True, False], cls_valid=valid)


def _capture(model):
    """Keep each head's raw training outputs and the FPN maps, with gradients retained."""
    seen = {}

    def keep(name):
        def hook(module, args, out):
            for key in ("cls_logits", "seg_logits"):
                if key in out:
                    out[key].retain_grad()
                    seen[key] = out[key]
        return hook

    def keep_fpn(module, args, out):
        out.fpn["p2"].retain_grad()
        seen["p2"] = out.fpn["p2"]

    for name, head in model.heads.items():
        head.register_forward_hook(keep(name))
    model.backbone.register_forward_hook(keep_fpn)
    return seen


def test_train_returns_finite_named_losses_eval_returns_contract_keys(model, mixed):
    losses = model(mixed)
    assert set(losses) == {"loss_cls", "loss_seg"} | DET_KEYS
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(mixed)
    assert set(out) == {"cls_prob", "seg_prob", "instances"}
    assert out["cls_prob"].shape == (4, 6) and out["seg_prob"].shape == (4, 6, 64, 64)
    assert len(out["instances"]) == 4
    assert all(set(i) == {"boxes", "labels", "scores", "masks"} for i in out["instances"])


def test_mixed_batch_loss_terms_match_hand_computation_and_absent_labels_get_zero_grad(model, mixed):
    seen = _capture(model)
    losses = model(mixed)
    cls_logits, seg_logits, p2 = seen["cls_logits"], seen["seg_logits"], seen["p2"]

    valid = mixed["cls_valid"]
    bce = F.binary_cross_entropy_with_logits(cls_logits, mixed["cls"], reduction="none")
    assert torch.allclose(losses["loss_cls"], (bce * valid).sum() / valid.sum())

    keep = [0, 2]
    target = mixed["mask"][keep]
    prob = seg_logits[keep].softmax(1)
    onehot = F.one_hot(target, 6).permute(0, 3, 1, 2).float()
    dice = (2 * (prob * onehot).sum((0, 2, 3)) + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    present = onehot.sum((0, 2, 3))[1:] > 0  # Dice averages the subtypes present in the batch only
    fg, p_fg = (target > 0).float(), 1 - prob[:, 0]  # + the "any bleed" region Dice
    any_dice = (2 * (p_fg * fg).sum() + 1) / (p_fg.sum() + fg.sum() + 1)
    expected_seg = F.cross_entropy(seg_logits[keep], target) + 1 - dice[1:][present].mean() + 1 - any_dice
    assert torch.allclose(losses["loss_seg"], expected_seg, atol=1e-6)

    losses["loss_cls"].backward(retain_graph=True)
    assert torch.all(cls_logits.grad[1, 1:] == 0) and torch.all(cls_logits.grad[1, 0] != 0)
    losses["loss_seg"].backward(retain_graph=True)
    assert torch.all(seg_logits.grad[[1, 3]] == 0) and torch.any(seg_logits.grad[0] != 0)
    p2.grad = None
    sum(losses[k] for k in DET_KEYS).backward()
    assert torch.all(p2.grad[[1, 3]] == 0) and torch.any(p2.grad[0] != 0)


def test_batch_without_masks_or_boxes_sums_with_zero_grads_everywhere(model, batch_fn, mask_fn):
    batch = batch_fn([mask_fn(64, 0), mask_fn(64, 1)], [True, True], [False, False], [False, False])
    losses = model(batch)
    assert all(losses[k].item() == 0.0 for k in {"loss_seg"} | DET_KEYS)
    total, weights = model.balancer(losses)
    assert total.item() == pytest.approx(losses["loss_cls"].item()) and set(weights) == set(losses)
    total.backward()
    params = dict(model.named_parameters())
    assert all(p.grad is not None for p in params.values() if p.requires_grad)  # DDP sees every parameter
    assert all(torch.all(p.grad == 0) for n, p in params.items() if n.startswith(("heads.seg", "heads.det")))


def test_set_active_heads_limits_losses_predictions_and_skips_fpn(model, mixed):
    calls = []
    model.backbone.fpn.register_forward_hook(lambda *a: calls.append(1))
    model.set_active_heads({"cls"})
    assert set(model(mixed)) == {"loss_cls"} and calls == []
    model.eval()
    with torch.no_grad():
        assert set(model(mixed)) == {"cls_prob"}
    model.set_active_heads(["seg", "det"])
    with torch.no_grad():
        assert set(model(mixed)) == {"seg_prob", "instances"}
    with pytest.raises(KeyError, match="bogus"):
        model.set_active_heads({"bogus"})


def test_consistency_term_is_added_and_weighted(batch_fn, mask_fn):
    model = build_model({**SMALL, "loss": {"consistency": 0.25}})
    losses = model(batch_fn([mask_fn(64, 0)] * 2, [True] * 2, [True] * 2, [True] * 2))
    assert "loss_consistency" in losses and losses["loss_consistency"] >= 0
    assert model.balancer(losses)[1]["loss_consistency"] == 0.25


def test_single_task_models_and_yolo_variant(batch_fn, mask_fn):
    batch = batch_fn([mask_fn(64, 0)] * 2, [True] * 2, [True] * 2, [True] * 2)
    assert set(build_model({**SMALL, "heads": {"seg": {"channels": 16}}})(batch)) == {"loss_seg"}
    assert set(build_model({**SMALL, "heads": {"cls": {"features": "fpn"}}})(batch)) == {"loss_cls"}
    pytest.importorskip("ultralytics")
    yolo = build_model({**SMALL, "heads": {"det": {"type": "yolo", "num_protos": 16}}})
    assert set(yolo(batch)) == {"loss_yolo_box", "loss_yolo_seg", "loss_yolo_cls", "loss_yolo_dfl"}


def test_unknown_subtype_mask_trains_segmentation_and_not_detection(model, batch_fn, mask_fn):
    """A binary mask on a multi-subtype slice (value 6, no boxes) beside a fully labelled slice."""
    from hemo_mtl.categories import UNKNOWN_SUBTYPE

    unknown = np.where(mask_fn(64, 3) > 0, UNKNOWN_SUBTYPE, 0).astype(np.uint8)
    batch = batch_fn([unknown, mask_fn(64, 0)], [True, True], [True, True], [False, True])
    seen = _capture(model)
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss_seg"].backward(retain_graph=True)
    assert torch.any(seen["seg_logits"].grad[0] != 0)  # its pixels teach bleed vs background
    seen["p2"].grad = None
    sum(losses[k] for k in DET_KEYS).backward()
    assert torch.all(seen["p2"].grad[0] == 0) and torch.any(seen["p2"].grad[1] != 0)  # no box targets from it
