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
                                              segmentation_metrics, subtype_known, volume_table)


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
    with pytest.raises(ValueError, match="prediction mask holds labels outside 0..6"):
        confusion_counts(np.zeros((4, 4)), np.full((4, 4), 7))


UNKNOWN = 6  # truth value: bleed, subtype unknown


def _with_unknown_subtype(seed: int = 0):
    """Six 16x16 slices of two volumes; slices 1 and 4 hold bleed of unknown subtype."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((6, 16, 16), np.int64)
    gt[:, 2:7, 3:9] = 2
    gt[:, 9:13, 9:14] = 4
    gt[1][gt[1] > 0] = UNKNOWN
    gt[4, 9:13, 9:14] = UNKNOWN  # slice 4: a known SDH and an unknown blob
    pred = gt.copy()
    pred[pred == UNKNOWN] = 3  # a subtype guess on unknown truth: neither right nor wrong for SAH
    noise = rng.random(gt.shape) < 0.08
    pred[noise] = rng.integers(0, 6, noise.sum())
    return gt, pred, ["a"] * 3 + ["b"] * 3


def test_unknown_subtype_truth_counts_for_any_and_for_no_subtype_against_sklearn():
    gt, pred, _ = _with_unknown_subtype()
    counts = confusion_counts(gt, pred).sum(0)
    m = segmentation_metrics(counts[None])
    g, p = gt.ravel(), pred.ravel()
    assert m["seg/any/dice"] == pytest.approx(f1_score(g > 0, p > 0))
    known = g != UNKNOWN
    for c, label in enumerate(LABELS[1:], start=1):
        ref = f1_score(g[known] == c, p[known] == c, zero_division=np.nan)
        assert (math.isnan(ref) and math.isnan(m[f"seg/{label}/dice"])) or m[f"seg/{label}/dice"] == pytest.approx(ref), label
    # without the unknown pixels the subtype counts are those of the known pixels alone
    flat = confusion_counts(np.where(known, g, 0).reshape(gt.shape), np.where(known, p, 0).reshape(gt.shape)).sum(0)
    assert np.array_equal(counts[1:], flat[1:])


def test_predicted_unknown_subtype_is_bleed_for_any_and_no_subtype_against_sklearn():
    """A binary head predicts 6 (bleed, subtype unknown): it is bleed for ``any`` and, for each subtype,
    a pixel not predicted as it (a miss where the truth is that subtype, never a false positive)."""
    gt, pred, _ = _with_unknown_subtype(seed=1)
    pred[:, 9:13, 9:14] = UNKNOWN  # the binary head's bleed over the IPH blob
    counts = confusion_counts(gt, pred).sum(0)
    g, p = gt.ravel(), pred.ravel()
    assert counts[0].tolist() == [((g > 0) & (p > 0)).sum(), ((g == 0) & (p > 0)).sum(), ((g > 0) & (p == 0)).sum()]
    m = segmentation_metrics(counts[None])
    assert m["seg/any/dice"] == pytest.approx(f1_score(g > 0, p > 0))
    known = g != UNKNOWN
    for c, label in enumerate(LABELS[1:], start=1):
        ref = f1_score(g[known] == c, p[known] == c, zero_division=np.nan)
        assert (math.isnan(ref) and math.isnan(m[f"seg/{label}/dice"])) or m[f"seg/{label}/dice"] == pytest.approx(ref), label
    assert counts[4].tolist()[0] == 0 and counts[4, 2] == ((g == 4) & (p == UNKNOWN)).sum() + ((g == 4) & ~np.isin(p, [4, UNKNOWN])).sum()


def test_slices_and_volumes_of_unknown_subtype_count_for_any_only():
    gt, pred, vols = _with_unknown_subtype()
    counts = confusion_counts(gt, pred)
    known = subtype_known(gt)
    assert known.tolist() == [True, False, True, True, False, True]
    voxel_ml = np.full(6, 0.01)
    m = segmentation_metrics(counts, vols, voxel_ml, slice_subtype_known=known)
    every = segmentation_metrics(counts, vols, voxel_ml)
    only_known = segmentation_metrics(counts[known], [v for v, k in zip(vols, known) if k], voxel_ml[known])
    for key in every:
        task, label, name = key.split("/")
        if name == "n_subtype_unknown":
            continue
        if label == "any" or (task == "seg" and not name.endswith("_per_slice")):
            ref = every[key]  # "any" everywhere and the pooled pixel counts: every slice
        elif task == "seg":
            ref = only_known[key]  # subtype means over slices: the known slices only
        else:
            continue  # seg3d / volume subtypes: below
        assert m[key] == pytest.approx(ref, nan_ok=True), key
    assert m["seg/SDH/n_per_slice"] == 4 and m["seg/SDH/dice_per_slice"] != pytest.approx(every["seg/SDH/dice_per_slice"])
    # both volumes hold an unknown slice: no per-volume subtype figure, any over both
    assert m["seg3d/SDH/n"] == 0 and math.isnan(m["seg3d/SDH/dice"]) and m["volume/SDH/n"] == 0
    assert m["seg3d/any/n"] == 2 and m["seg3d/any/dice"] == pytest.approx(every["seg3d/any/dice"])
    assert m["volume/any/mae_ml"] == pytest.approx(every["volume/any/mae_ml"])
    assert m["seg/any/n_subtype_unknown"] == 2 and m["seg3d/any/n_subtype_unknown"] == 2
    table = volume_table(counts, vols, voxel_ml, known)
    assert np.isnan(table["gt_ml"][:, 1:]).all() and np.isfinite(table["gt_ml"][:, 0]).all()
    assert math.isnan(hd95_per_label(gt, pred)["SDH"]) and math.isfinite(hd95_per_label(gt, pred)["any"])
