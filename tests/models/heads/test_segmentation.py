from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hemo_mtl.models.backbones import build_backbone
from hemo_mtl.models.heads import SegmentationHead


@pytest.fixture(scope="module")
def trunk():
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 16})
    image = torch.rand(3, 1, 64, 48)
    return backbone, backbone(image), image


def _numpy_dice_loss(prob: np.ndarray, target: np.ndarray, classes) -> float:
    """Reference: per-class soft Dice over the batch, smooth 1, averaged over the ``classes`` present
    in ``target`` (absent classes are left to cross-entropy)."""
    scores = []
    for c in classes:
        p, t = prob[:, c], (target == c).astype(np.float64)
        if not t.any():
            continue
        scores.append((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    return 1 - float(np.mean(scores)) if scores else 0.0


@pytest.mark.parametrize("mode,k", [("multiclass", 6), ("binary", 2)])
@pytest.mark.parametrize("refine", [True, False])
def test_full_resolution_softmax(trunk, mode, k, refine):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode=mode, channels=16, refine=refine).eval()
    prob = head(f, {"image": image})["seg_prob"]
    assert prob.shape == (3, k, 64, 48)
    assert torch.allclose(prob.sum(1), torch.ones(3, 64, 48), atol=1e-5)


def test_loss_is_ce_plus_per_class_dice_plus_any_bleed_dice_on_masked_slices_only(trunk, mask_fn):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, channels=16, any_dice_weight=0.5)
    mask = torch.from_numpy(np.stack([mask_fn(64, s)[:, :48] for s in range(3)]).astype(np.int64))
    batch = {"image": image, "mask": mask, "has": {"mask": torch.tensor([True, False, True])}}
    logits = head.logits(f, image).detach().requires_grad_()
    loss = head.loss(logits, batch)["loss_seg"]
    keep = [0, 2]
    ce = F.cross_entropy(logits[keep], mask[keep])
    prob = logits[keep].softmax(1).detach().double().numpy()
    dice = _numpy_dice_loss(prob, mask[keep].numpy(), range(1, 6))
    bleed = np.stack([prob[:, 0], 1 - prob[:, 0]], axis=1)
    any_dice = _numpy_dice_loss(bleed, (mask[keep].numpy() > 0).astype(np.int64), [1])
    assert loss.item() == pytest.approx(ce.item() + dice + 0.5 * any_dice, rel=1e-5)
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and torch.any(logits.grad[0] != 0)


def test_binary_mode_targets_any_bleed(trunk, mask_fn):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode="binary", channels=16, dice_weight=0.0)
    mask = torch.from_numpy(np.stack([mask_fn(64, s)[:, :48] for s in range(3)]).astype(np.int64))
    batch = {"image": image, "mask": mask, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    logits = head.logits(f, image)
    assert torch.allclose(head.loss(logits, batch)["loss_seg"], F.cross_entropy(logits, (mask > 0).long()))


def test_no_mask_in_batch_gives_exact_zero_with_zero_grad(trunk):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, channels=16)
    batch = {"image": image, "mask": torch.zeros(3, 64, 48, dtype=torch.long), "has": {"mask": torch.zeros(3, dtype=torch.bool)}}
    loss = head(f, batch)["loss_seg"]
    assert loss.item() == 0.0
    loss.backward(retain_graph=True)
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in head.parameters())


def test_class_weight_gives_the_weighted_cross_entropy_and_bad_lengths_are_refused(trunk, mask_fn):
    backbone, f, image = trunk
    w = [1.0, 2.0, 1.0, 4.0, 2.0, 2.0]
    head = SegmentationHead(backbone, channels=16, dice_weight=0.0, any_dice_weight=0.0, class_weight=w)
    mask = torch.from_numpy(np.stack([mask_fn(64, s)[:, :48] for s in range(3)]).astype(np.int64))
    batch = {"image": image, "mask": mask, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    logits = head.logits(f, image).detach()
    # reference: sum_i w[y_i] * -log p_i(y_i) / sum_i w[y_i], in float64 numpy
    logp = torch.log_softmax(logits.double(), 1).numpy()
    y = mask.numpy()
    nll = -np.take_along_axis(logp, y[:, None], axis=1)[:, 0]
    wy = np.asarray(w)[y]
    assert head.loss(logits, batch)["loss_seg"].item() == pytest.approx((wy * nll).sum() / wy.sum(), rel=1e-5)
    assert "class_weight" not in head.state_dict()  # a loss setting, not a weight: old checkpoints load
    with pytest.raises(ValueError, match=r"class_weight needs 6 positive values \(background, EDH"):
        SegmentationHead(backbone, channels=16, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weight needs 2 positive values"):
        SegmentationHead(backbone, mode="binary", channels=16, class_weight=[1.0, 0.0])


UNKNOWN = 6  # mask value: bleed, subtype unknown


def _with_unknown(mask_fn) -> torch.Tensor:
    """Three 64x48 masks; slice 1's bleed becomes "subtype unknown", slice 2 gets an unknown blob too."""
    mask = torch.from_numpy(np.stack([mask_fn(64, s)[:, :48] for s in range(3)]).astype(np.int64))
    mask[1][mask[1] > 0] = UNKNOWN
    mask[2, 2:8, 2:8] = UNKNOWN
    assert (mask == UNKNOWN).any() and ((mask > 0) & (mask < UNKNOWN)).any()
    return mask


def test_unknown_subtype_pixels_are_bleed_for_ce_and_any_dice_and_left_out_of_subtype_dice(trunk, mask_fn):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, channels=16, any_dice_weight=0.5)
    mask = _with_unknown(mask_fn)
    batch = {"image": image, "mask": mask, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    logits = head.logits(f, image).detach()
    loss = head.loss(logits, batch)["loss_seg"]
    # reference in float64 numpy: -log p_y on known pixels, -log(1 - p0) on unknown ones
    prob = logits.softmax(1).double().numpy()
    y = mask.numpy()
    unknown = y == UNKNOWN
    known_nll = -np.log(np.take_along_axis(prob, np.where(unknown, 0, y)[:, None], axis=1)[:, 0])
    ce = np.where(unknown, -np.log(1 - prob[:, 0]), known_nll).mean()
    subtype_prob = prob * ~unknown[:, None]  # unknown pixels count for no subtype
    dice = _numpy_dice_loss(subtype_prob, np.where(unknown, 0, y), range(1, 6))
    bleed = np.stack([prob[:, 0], 1 - prob[:, 0]], axis=1)
    any_dice = _numpy_dice_loss(bleed, (y > 0).astype(np.int64), [1])
    assert loss.item() == pytest.approx(ce + dice + 0.5 * any_dice, rel=1e-5)


def test_loss_is_blind_to_the_subtype_split_of_unknown_pixels(trunk, mask_fn):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, channels=16, class_weight=[1.0, 2.0, 1.0, 4.0, 2.0, 2.0])
    mask = _with_unknown(mask_fn)
    batch = {"image": image, "mask": mask, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    logits = head.logits(f, image).detach()
    unknown = (mask == UNKNOWN)[:, None]
    shuffled = torch.where(unknown, logits[:, [0, 4, 1, 5, 2, 3]], logits)  # re-split the bleed on unknown pixels
    assert head.loss(shuffled, batch)["loss_seg"].item() == pytest.approx(head.loss(logits, batch)["loss_seg"].item(), rel=1e-6)
    # ... but not to bleed vs background there
    less_bleed = torch.where(unknown, logits + torch.tensor([2.0, 0, 0, 0, 0, 0])[:, None, None], logits)
    assert head.loss(less_bleed, batch)["loss_seg"].item() > head.loss(logits, batch)["loss_seg"].item()


def test_binary_mode_takes_unknown_subtype_as_bleed(trunk, mask_fn):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode="binary", channels=16)
    mask = _with_unknown(mask_fn)
    batch = {"image": image, "mask": mask, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    logits = head.logits(f, image).detach()
    as_subtype = {**batch, "mask": torch.where(mask == UNKNOWN, 2, mask)}  # any subtype: binary cannot tell
    assert torch.equal(head.loss(logits, batch)["loss_seg"], head.loss(logits, as_subtype)["loss_seg"])


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_weak_loss_is_bce_of_the_top_k_mean_bleed_log_odds_on_labelled_unmasked_slices(trunk, mode):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode=mode, channels=16, weak_weight=0.5, weak_topk=0.05)
    assert head.loss_names == ("loss_seg", "loss_seg_weak")
    logits = torch.randn(4, head.num_classes, 64, 48, dtype=torch.float64, requires_grad=True)
    batch = {"image": image, "mask": torch.zeros(4, 64, 48, dtype=torch.long),
             "cls": torch.tensor([[1.0, 0, 1, 0, 0, 0], [0.0] * 6, [1.0] + [0] * 5, [1.0] + [0] * 5]),
             "cls_valid": torch.tensor([[1.0] * 6, [1.0] * 6, [0.0] * 6, [1.0] * 6]),
             "has": {"mask": torch.tensor([False, False, False, True]), "cls": torch.tensor([True, True, True, True])}}
    loss = head.loss(logits, batch)["loss_seg_weak"]
    # reference by hand: slices 0 (bleed) and 1 (no bleed); 2 has no known label, 3 has a mask
    lg = logits.detach().numpy()
    odds = [np.log(np.exp(lg[:, 1:]).sum(1)) - lg[:, 0]]  # any bleed; multiclass: + each subtype
    odds += [lg[:, c] - lg[:, 0] for c in range(1, 6)] if mode == "multiclass" else []
    k = round(0.05 * 64 * 48)
    pooled = np.array([[np.sort(o[i].ravel())[-k:].mean() for o in odds] for i in (0, 1)])  # (slice, label)
    y = batch["cls"][:2, :len(odds)].numpy()
    p = 1 / (1 + np.exp(-pooled))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert loss.item() == pytest.approx(0.5 * bce, rel=1e-9)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert torch.all(grad[2:] == 0)
    if mode == "binary":
        assert int((grad[0] > 0).sum()) == k  # only the pooled pixels learn from the slice label


def test_weak_loss_is_off_by_default_and_an_exact_zero_without_labelled_unmasked_slices(trunk):
    backbone, f, image = trunk
    assert SegmentationHead(backbone, channels=16).loss_names == ("loss_seg",)
    head = SegmentationHead(backbone, channels=16, weak_weight=1.0)
    logits = head.logits(f, image)
    batch = {"image": image, "mask": torch.zeros(3, 64, 48, dtype=torch.long), "cls": torch.zeros(3, 6),
             "cls_valid": torch.zeros(3, 6), "has": {"mask": torch.tensor([False] * 3), "cls": torch.tensor([False] * 3)}}
    out = head.loss(logits, batch)
    assert set(out) == {"loss_seg", "loss_seg_weak"} and out["loss_seg_weak"].item() == 0.0
    out["loss_seg_weak"].backward()


def test_weak_loss_with_a_roi_pools_inside_it_and_calls_the_outside_background(trunk):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode="binary", channels=16, weak_weight=1.0, weak_topk=0.02)
    logits = torch.randn(3, 2, 64, 48, dtype=torch.float64, requires_grad=True)
    roi = torch.zeros(3, 64, 48, dtype=torch.bool)
    roi[:, 10:50, 8:40] = True
    batch = {"image": image, "mask": torch.zeros(3, 64, 48, dtype=torch.long), "roi": roi,
             "cls": torch.tensor([[1.0] + [0] * 5, [0.0] * 6, [1.0] + [0] * 5]),
             "cls_valid": torch.ones(3, 6),
             "has": {"mask": torch.zeros(3, dtype=torch.bool), "cls": torch.ones(3, dtype=torch.bool),
                     "roi": torch.tensor([True, True, False])}}  # slice 2: no closed skull, left out
    loss = head.loss(logits, batch)["loss_seg_weak"]
    lg = logits.detach().numpy()
    odds = (lg[:, 1] - lg[:, 0])[:2]
    inside, outside = roi[:2].numpy(), ~roi[:2].numpy()
    k = round(0.02 * 64 * 48)
    pooled = np.array([np.sort(odds[i][inside[i]])[-k:].mean() for i in range(2)])
    y = np.array([1.0, 0.0])
    bce = -(y * np.log(1 / (1 + np.exp(-pooled))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-pooled)))).mean()
    background = np.log1p(np.exp(odds[outside])).mean()  # BCE to 0 of every outside pixel
    assert loss.item() == pytest.approx(bce + background, rel=1e-9)
    loss.backward()
    assert torch.all(logits.grad[2] == 0)


def test_pseudo_loss_is_the_mask_loss_of_the_roi_as_bleed_and_of_no_bleed_slices_as_background(trunk):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, channels=16, pseudo_weight=0.5)
    assert head.loss_names == ("loss_seg", "loss_seg_pseudo")
    logits = torch.randn(6, 6, 64, 48, dtype=torch.float64, requires_grad=True)
    roi = torch.zeros(6, 64, 48, dtype=torch.bool)
    roi[:, 20:30, 10:25] = True
    sdh, sdh_iph = [1.0, 0, 1, 0, 0, 0], [1.0, 0, 1, 0, 1, 0]
    batch = {"image": image, "mask": torch.zeros(6, 64, 48, dtype=torch.long), "roi": roi,
             "cls": torch.tensor([[0.0] * 6, sdh, sdh_iph, sdh, sdh, [0.0] * 6]),
             "cls_valid": torch.tensor([[1.0] * 6] * 5 + [[0.0] * 6]),
             "has": {"mask": torch.tensor([False, False, False, True, False, False]),
                     "cls": torch.ones(6, dtype=torch.bool),
                     "roi": torch.tensor([False, True, True, True, False, True])}}
    loss = head.loss(logits, batch)["loss_seg_pseudo"]
    # by hand: 0 no bleed (background with or without a skull), 1 one subtype (SDH = 2), 2 two subtypes
    # (unknown); 3 has a real mask, 4 a bleed without a roi, 5 no known label: left out
    keep = [0, 1, 2]
    masks = torch.zeros(3, 64, 48, dtype=torch.long)
    masks[1][roi[1]] = 2
    masks[2][roi[2]] = UNKNOWN
    as_masks = {"image": image, "mask": masks, "has": {"mask": torch.ones(3, dtype=torch.bool)}}
    reference = head.mask_loss(logits[keep].detach(), as_masks)
    assert loss.item() == pytest.approx(0.5 * reference.item(), rel=1e-9)
    loss.backward()
    assert torch.all(logits.grad[3:] == 0) and torch.all(logits.grad[:3].abs().sum((1, 2, 3)) > 0)


def test_pseudo_loss_needs_a_roi(trunk):
    backbone, f, image = trunk
    head = SegmentationHead(backbone, mode="binary", channels=16, pseudo_weight=1.0)
    batch = {"image": image, "mask": torch.zeros(3, 64, 48, dtype=torch.long), "cls": torch.zeros(3, 6),
             "cls_valid": torch.ones(3, 6), "has": {"mask": torch.zeros(3, dtype=torch.bool),
                                                    "cls": torch.ones(3, dtype=torch.bool)}}
    with pytest.raises(ValueError, match="data.bleed_roi"):
        head.loss(head.logits(f, image), batch)
