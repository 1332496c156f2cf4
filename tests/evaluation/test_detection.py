"""COCO stats against pycocotools' COCOeval (every stat, bbox and segm, per subtype) and FROC by hand."""
from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hemo_mtl.categories import CATEGORY_IDS, coco_categories
from hemo_mtl.evaluation.detection import (STAT_NAMES, box_iou, coco_metrics, froc_2d, froc_3d,
                                           lesions_3d_from_mask)

SIZE = 96


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _synthetic_set(seed: int = 0, n_images: int = 40):
    """Lesion ellipses; detections: jittered hits, misses, duplicates, false positives, empty images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, anns, results = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "height": SIZE, "width": SIZE, "file_name": f"{img_id}.png"})
        n_gt = 0 if img_id % 5 == 0 else int(rng.integers(1, 4))  # every 5th image is empty
        for _ in range(n_gt):
            cx, cy = rng.uniform(15, SIZE - 15, 2)
            rx, ry = rng.uniform(2, 14, 2)  # small and medium areas
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            cat = int(rng.integers(1, 6))
            bbox = [float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m.astype(np.uint8))))]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": bbox,
                         "area": float(m.sum()), "iscrowd": 0, "segmentation": _rle(m)})
            u = rng.random()
            if u < 0.2:
                continue  # miss
            for dup in range(2 if u > 0.85 else 1):  # duplicates
                dx, dy = rng.normal(0, 1.5, 2)
                pm = ((xx - cx - dx) / rx) ** 2 + ((yy - cy - dy) / (ry * rng.uniform(0.8, 1.2))) ** 2 <= 1
                if not pm.any():
                    continue
                pcat = cat if rng.random() > 0.1 else int(rng.integers(1, 6))
                pb = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(pm.astype(np.uint8))))
                results.append({"image_id": img_id, "category_id": pcat, "bbox": [float(v) for v in pb],
                                "score": float(rng.uniform(0.05, 1.0)), "segmentation": _rle(pm)})
        for _ in range(int(rng.integers(0, 2))):  # false positives, also on empty images
            x0, y0 = rng.uniform(0, SIZE - 20, 2)
            w, h = rng.uniform(3, 18, 2)
            pm = np.zeros((SIZE, SIZE), bool)
            pm[int(y0):int(y0 + h), int(x0):int(x0 + w)] = True
            results.append({"image_id": img_id, "category_id": int(rng.integers(1, 6)),
                            "bbox": [float(int(x0)), float(int(y0)), float(int(x0 + w) - int(x0)),
                                     float(int(y0 + h) - int(y0))],
                            "score": float(rng.uniform(0.0, 0.6)), "segmentation": _rle(pm)})
    gt = {"images": images, "annotations": anns, "categories": coco_categories()}
    return gt, results


def _reference_stats(gt, results, iou_type, cat_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        d = g.loadRes(copy.deepcopy(results))
        ev = COCOeval(g, d, iou_type)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.where(np.asarray(ev.stats) > -1, ev.stats, np.nan)


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic_set()


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("engine", ["faster", "pycocotools"])
def test_all_12_stats_match_pycocotools_overall_and_per_subtype(synthetic, iou_type, engine):
    gt, results = synthetic
    m = coco_metrics(gt, results, iou_type, engine=engine)
    ref = _reference_stats(gt, results, iou_type)
    got = np.array([m[f"det/{iou_type}/{s}"] for s in STAT_NAMES])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert np.isfinite(ref[:3]).all() and 0 < ref[0] < 1  # a non-trivial set
    for name, cid in CATEGORY_IDS.items():
        ref_c = _reference_stats(gt, results, iou_type, [cid])
        got_c = np.array([m[f"det/{iou_type}/{s}/{name}"] for s in STAT_NAMES])
        np.testing.assert_allclose(got_c, ref_c, atol=1e-6, err_msg=name)


def test_empty_result_set_scores_zero_not_crash(synthetic):
    gt, _ = synthetic
    m = coco_metrics(gt, [], "bbox")
    assert m["det/bbox/AP"] == 0.0 and m["det/bbox/AR100"] == 0.0
    assert math.isnan(m["det/bbox/APl"])  # no large gt: undefined (pycocotools -1)


def test_results_not_matching_ground_truth_raise(synthetic):
    gt, results = synthetic
    bad = [dict(results[0], image_id=999)]
    with pytest.raises(ValueError, match="result 0: image_id 999"):
        coco_metrics(gt, bad)
    with pytest.raises(ValueError, match="category_id 7"):
        coco_metrics(gt, [dict(results[0], category_id=7)])
    with pytest.raises(ValueError, match="bbox must be 4"):
        coco_metrics(gt, [dict(results[0], bbox=[1, 2, 3])])


def _tiny_froc_set():
    """3 slices, 3 SDH lesions + 1 IPH lesion; hand-made detections."""
    images = [{"id": i, "height": 50, "width": 50} for i in (1, 2, 3)]
    a = lambda i, img, cat, box: {"id": i, "image_id": img, "category_id": cat, "bbox": box,  # noqa: E731
                                  "area": box[2] * box[3], "iscrowd": 0}
    anns = [a(1, 1, 2, [0, 0, 10, 10]), a(2, 1, 2, [20, 20, 10, 10]), a(3, 2, 2, [5, 5, 10, 10]),
            a(4, 2, 4, [30, 30, 10, 10])]
    r = lambda img, cat, box, s: {"image_id": img, "category_id": cat, "bbox": box, "score": s}  # noqa: E731
    results = [
        r(1, 2, [0, 0, 10, 10], 0.9),     # TP lesion 1
        r(1, 2, [1, 0, 10, 10], 0.8),     # duplicate on lesion 1: ignored
        r(3, 2, [0, 0, 10, 10], 0.7),     # FP (empty slice 3)
        r(2, 2, [5, 5, 10, 12], 0.6),     # TP lesion 3 (IoU 100/120)
        r(1, 2, [40, 40, 5, 5], 0.5),     # FP
        r(2, 4, [33, 33, 10, 10], 0.4),   # IPH, IoU 49/151 < 0.5: FP by IoU; centre (38,38) inside
        r(1, 2, [24, 24, 10, 10], 0.3),   # IoU 36/164: FP by IoU; centre (29,29) inside lesion 2
    ]
    return {"images": images, "annotations": anns, "categories": coco_categories()}, results


def test_froc_2d_hand_computed():
    gt, results = _tiny_froc_set()
    m = froc_2d(gt, results)
    # cumulative (TP, FP) by score: .9 (1,0) .8 ignored .7 (1,1) .6 (2,1) .5 (2,2) .4 (2,3) .3 (2,4); 3 slices
    assert m["det/froc/sens@0.5fp"] == pytest.approx(2 / 4)   # FP<=1.5 -> up to score .6
    assert m["det/froc/sens@1fp"] == pytest.approx(2 / 4)
    assert m["det/froc/sens@4fp"] == pytest.approx(2 / 4)
    assert m["det/froc/sens@1fp/SDH"] == pytest.approx(2 / 3)
    assert m["det/froc/sens@1fp/IPH"] == 0.0 and math.isnan(m["det/froc/sens@1fp/EDH"])
    assert m["det/froc/n_lesions"] == 4
    c = froc_2d(gt, results, criterion="center")
    # now .4 hits IPH and .3 hits SDH lesion 2: all 4 lesions found at 2 FP / 3 slices
    assert c["det/froc/sens@0.5fp"] == pytest.approx(2 / 4)
    assert c["det/froc/sens@1fp"] == pytest.approx(4 / 4)
    lax = froc_2d(gt, results, iou_threshold=0.2)  # .4 (IoU 0.32) and .3 (0.22) hit
    assert lax["det/froc/sens@1fp"] == pytest.approx(4 / 4)
    assert froc_2d(gt, results, iou_threshold=0.25)["det/froc/sens@1fp"] == pytest.approx(3 / 4)


def test_box_iou_matches_hand_values_2d_and_3d():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 0, 2, 2, 2]], [[1, 1, 1, 3, 3, 3]])[0, 0] == pytest.approx(1 / 15)


def test_froc_3d_from_masks_and_hand_made_predictions():
    vol = np.zeros((40, 40, 10), np.uint8)
    vol[5:15, 5:15, 2:6] = 2       # SDH, 10x10x4
    vol[25:30, 25:35, 5:7] = 4     # IPH
    gt = lesions_3d_from_mask(vol, "P1") + lesions_3d_from_mask(np.zeros_like(vol), "P2")
    assert len(gt) == 2
    sdh = next(x for x in gt if x["category_id"] == 2)
    assert sdh["bbox"] == [5, 5, 15, 15] and sdh["slices"] == [2, 5]
    preds = [
        {"patient_id": "P1", "category_id": 2, "bbox": [5, 5, 15, 15], "slices": [2, 4], "score": 0.9},  # IoU .75
        {"patient_id": "P1", "category_id": 4, "bbox": [25, 25, 35, 30], "slices": [0, 9], "score": 0.8},  # IoU .2
        {"patient_id": "P2", "category_id": 4, "bbox": [0, 0, 5, 5], "slices": [0, 0], "score": 0.7},
    ]
    m = froc_3d(gt, preds, volume_ids=["P1", "P2"])
    assert m["det/froc3d/sens@0.5fp"] == pytest.approx(0.5)
    assert m["det/froc3d/sens@1fp"] == pytest.approx(0.5)
    m2 = froc_3d(gt, preds, iou_threshold=0.2, volume_ids=["P1", "P2"])
    assert m2["det/froc3d/sens@0.5fp"] == pytest.approx(1.0)  # 1 FP over 2 volumes
    with pytest.raises(ValueError, match="patient 'P3'"):
        froc_3d(gt, [dict(preds[0], patient_id="P3")], volume_ids=["P1", "P2"])
