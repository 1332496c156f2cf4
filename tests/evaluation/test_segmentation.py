"""Dice/IoU by hand and against sklearn, the empty-mask conventions, volumes in mL and HD95."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import hausdorff_distance as sk_hausdorff
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score
from scipy import ndimage

from hemo_mtl.categories import LABELS
from hemo_mtl.evaluation.segmentation import (confusion_counts, hausdorff_distance, hd95_per_label,
                                              segmentation_metrics, volume_table)


def test_hand_computed_dice_iou_and_empty_cases():
    gt = np.zeros((4, 4, 4), np.int64)
    pred = np.zeros_like(gt)
    gt[0, 0, :4] = 2          # slice 0: SDH 4 px, predicted 2 of them + 1 extra
    pred[0, 0, :2] = 2
    pred[0, 1, 0] = 2
    pred[1, 2, 2] = 4         # slice 1: empty truth, IPH false positive
    gt[2, 3, 3] = 4           # slice 2: IPH missed
    # slice 3: both empty
    counts = confusion_counts(gt, pred)
    assert counts[0, LABELS.index("SDH")].tolist() == [2, 1, 2]
    m = segmentation_metrics(counts)
    # global SDH: tp 2 fp 1 fn 2 -> dice 4/7, iou 2/5
    assert m["seg/SDH/dice"] == pytest.approx(4 / 7) and m["seg/SDH/iou"] == pytest.approx(2 / 5)
    # global IPH: tp 0 fp 1 fn 1 -> 0
    assert m["seg/IPH/dice"] == 0.0
    # EDH never present anywhere: undefined
    assert math.isnan(m["seg/EDH/dice"])
    # per slice, any: s0 4/7, s1 0 (empty truth, FP), s2 0 (missed), s3 excluded (both empty)
    assert m["seg/any/dice_per_slice"] == pytest.approx((4 / 7 + 0 + 0) / 3)
    assert m["seg/any/n_empty_both_per_slice"] == 1
    assert m["seg/any/n_empty_gt_per_slice"] == 1
    assert m["seg/any/n_empty_pred_per_slice"] == 1
    assert m["seg/any/precision_per_slice"] == pytest.approx((2 / 3 + 0) / 2)  # s2, s3: no prediction
    assert m["seg/any/recall_per_slice"] == pytest.approx((2 / 4 + 0) / 2)    # s1, s3: no truth


def test_any_is_binary_foreground_regardless_of_subtype():
    gt = np.array([[1, 1, 0], [0, 0, 0]])
    pred = np.array([[2, 1, 0], [0, 0, 3]])  # subtype wrong on one pixel: still hemorrhage
    m = segmentation_metrics(confusion_counts(gt, pred))
    assert m["seg/any/dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))
    assert m["seg/EDH/dice"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))


def test_global_and_per_slice_match_sklearn_on_random_masks():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (12, 32, 32)) * (rng.random((12, 32, 32)) < 0.3)
    pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 6, gt.shape))
    gt[3], pred[3] = 0, 0
    m = segmentation_metrics(confusion_counts(torch.as_tensor(gt), torch.as_tensor(pred), chunk=5))
    for c, label in enumerate(LABELS):
        g, p = (gt > 0, pred > 0) if c == 0 else (gt == c, pred == c)
        assert m[f"seg/{label}/dice"] == pytest.approx(f1_score(g.ravel(), p.ravel()))
        assert m[f"seg/{label}/iou"] == pytest.approx(jaccard_score(g.ravel(), p.ravel()))
        assert m[f"seg/{label}/precision"] == pytest.approx(precision_score(g.ravel(), p.ravel()))
        assert m[f"seg/{label}/recall"] == pytest.approx(recall_score(g.ravel(), p.ravel()))
        per = [f1_score(g[i].ravel(), p[i].ravel()) for i in range(len(gt)) if (g[i] | p[i]).any()]
        assert m[f"seg/{label}/dice_per_slice"] == pytest.approx(np.mean(per))


def test_volume_ml_and_bland_altman_from_known_spacing():
    gt = np.zeros((2, 10, 10), np.int64)  # two slices of volume A, one of volume B below
    pred = np.zeros_like(gt)
    gt[0, :5, :4] = 4        # 20 voxels
    gt[1, :5, :4] = 4        # 20 voxels -> A truth 40 voxels
    pred[0, :5, :5] = 4      # 25 voxels -> A pred 25 voxels
    gtb = np.zeros((1, 10, 10), np.int64)
    predb = np.zeros_like(gtb)
    gtb[0, :2, :5] = 4       # B truth 10 voxels
    predb[0, :4, :5] = 4     # B pred 20 voxels
    counts = np.concatenate([confusion_counts(gt, pred), confusion_counts(gtb, predb)])
    spacing_a, spacing_b = (0.5, 0.5, 5.0), (1.0, 1.0, 2.0)  # mm
    voxel_ml = np.array([np.prod(spacing_a)] * 2 + [np.prod(spacing_b)]) / 1000.0
    ids = ["A", "A", "B"]
    m = segmentation_metrics(counts, ids, voxel_ml)
    gt_ml = np.array([40 * 1.25, 10 * 2.0]) / 1000  # A: 0.05 mL, B: 0.02 mL
    pred_ml = np.array([25 * 1.25, 20 * 2.0]) / 1000
    diff = pred_ml - gt_ml
    assert m["volume/IPH/mae_ml"] == pytest.approx(np.abs(diff).mean())
    assert m["volume/IPH/bias_ml"] == pytest.approx(diff.mean())
    sd = np.std(diff, ddof=1)
    assert m["volume/IPH/loa_low_ml"] == pytest.approx(diff.mean() - 1.96 * sd)
    assert m["volume/IPH/loa_high_ml"] == pytest.approx(diff.mean() + 1.96 * sd)
    assert m["volume/IPH/mean_rel_err"] == pytest.approx(np.mean(np.abs(diff) / gt_ml))
    assert m["volume/any/gt_mean_ml"] == pytest.approx(gt_ml.mean())
    table = volume_table(counts, ids, voxel_ml)
    np.testing.assert_allclose(table["gt_ml"][:, LABELS.index("IPH")], gt_ml)
    # per volume: A dice 2*20/(2*20+5+20), B 2*10/(2*10+10+0)
    assert m["seg3d/IPH/dice"] == pytest.approx((40 / 65 + 20 / 30) / 2)
    assert m["seg3d/IPH/n"] == 2 and m["seg3d/EDH/n_empty_both"] == 2


def test_hd95_against_hand_value_and_skimage():
    a = np.zeros((20, 20, 20), bool)
    b = np.zeros_like(a)
    a[5, 5, 5] = True
    b[8, 5, 5] = True
    assert hausdorff_distance(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)
    rng = np.random.default_rng(2)
    a = ndimage.binary_dilation(rng.random((30, 30, 12)) > 0.995, iterations=2)
    b = ndimage.binary_dilation(rng.random((30, 30, 12)) > 0.995, iterations=2)
    edges = lambda m: m & ~ndimage.binary_erosion(m)  # noqa: E731
    assert hausdorff_distance(a, b, percentile=100) == pytest.approx(sk_hausdorff(edges(a), edges(b)))
    assert hausdorff_distance(a, b) <= hausdorff_distance(a, b, percentile=100)
    assert math.isnan(hausdorff_distance(a, np.zeros_like(a)))
    per = hd95_per_label(a.astype(int) * 3, b.astype(int) * 3, (1, 1, 1))
    assert per["SAH"] == pytest.approx(per["any"]) and math.isnan(per["EDH"])
    m = segmentation_metrics(confusion_counts(a[None, :, :, 0] * 3, b[None, :, :, 0] * 3),
                             hd95={"SAH": [per["SAH"], math.nan]})
    assert m["seg3d/SAH/hd95"] == pytest.approx(per["SAH"]) and m["seg3d/SAH/n_hd95"] == 1


def test_bad_masks_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_counts(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="truth mask holds labels outside 0..6"):  # 6: bleed, subtype unknown
        confusion_counts(np.full((4, 4), 7), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="prediction mask holds labels outside 0..5"):  # never predicted
        confusion_counts(np.zeros((4, 4)), np.full((4, 4), 6))
