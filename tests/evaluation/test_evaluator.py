"""MultiTaskEvaluator on hand-made batches gives the same numbers as the direct functions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from hemo_mtl.categories import coco_categories
from hemo_mtl.evaluation import (MultiTaskEvaluator, classification_metrics, coco_metrics, confusion_counts,
                                 froc_2d, segmentation_metrics)

H = W = 32


def _batch(seed: int, b: int = 4):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, H, W, dtype=torch.int64)
    targets, instances = [], []
    for i in range(b):
        if i % 2 == 0:
            mask[i, 4:12, 5:15] = 2
            mask[i, 20:26, 20:30] = 4
        boxes = torch.tensor([[5, 4, 15, 12], [20, 20, 30, 26]], dtype=torch.float32)[: 2 if i % 2 == 0 else 0]
        labels = torch.tensor([2, 4])[: len(boxes)]
        masks = torch.stack([(mask[i] == 2), (mask[i] == 4)]).to(torch.uint8)[: len(boxes)]
        targets.append({"boxes": boxes, "labels": labels, "masks": masks})
        pboxes = torch.tensor([[5, 5, 15, 12], [0, 0, 6, 6], [21, 20, 30, 27]], dtype=torch.float32)
        pm = torch.zeros(3, 1, H, W)
        pm[0, 0, 5:12, 5:15] = 0.9
        pm[1, 0, 0:6, 0:6] = 0.7
        pm[2, 0, 20:27, 21:30] = 0.6
        pm[2, 0, 0, 0] = 0.5  # exactly 0.5: not part of the binary mask (> 0.5)
        instances.append({"boxes": pboxes, "labels": torch.tensor([2, 1, 4]),
                          "scores": torch.rand(3, generator=g), "masks": pm})
    cls = torch.zeros(b, 6)
    cls[0::2, 0] = 1
    cls[0::2, 2] = cls[0::2, 4] = 1
    cls_valid = torch.ones(b, 6)
    cls_valid[1, 1:] = 0  # a Kaggle-like slice: only `any` known
    has = {"cls": torch.tensor([True] * b), "mask": torch.tensor([True, True, False, True][:b]),
           "boxes": torch.tensor([True, False, True, True][:b])}
    meta = [{"patient_id": f"P{seed}{i // 2}", "study_id": "S", "slice_idx": i, "source": "hand",
             "spacing": (0.5, 0.5, 5.0), "orig_size": (2 * H, 2 * W), "image": ""} for i in range(b)]
    batch = {"image": torch.zeros(b, 1, H, W), "cls": cls, "cls_valid": cls_valid, "mask": mask, "has": has,
             "targets": targets, "meta": meta}
    seg_logits = torch.randn(b, 6, H, W, generator=g)
    seg_logits[:, 2, 4:12, 5:13] += 4  # mostly right
    outputs = {"cls_prob": torch.rand(b, 6, generator=g), "seg_prob": seg_logits.softmax(1),
               "instances": instances}
    return batch, outputs


def _coco_reference(batches):
    """Independent COCO conversion of the batches' boxes/masks for samples with has['boxes']."""
    images, anns, results = [], [], []
    for batch, out in batches:
        for i in range(len(batch["meta"])):
            if not batch["has"]["boxes"][i]:
                continue
            img_id = len(images) + 1
            images.append({"id": img_id, "height": H, "width": W})
            t = batch["targets"][i]
            for box, lab, m in zip(t["boxes"].tolist(), t["labels"].tolist(), t["masks"].numpy()):
                rle = mask_utils.encode(np.asfortranarray(m))
                anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": lab,
                             "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                             "area": float(m.sum()), "iscrowd": 0, "segmentation": rle})
            inst = out["instances"][i]
            for box, lab, s, m in zip(inst["boxes"].tolist(), inst["labels"].tolist(), inst["scores"].tolist(),
                                      inst["masks"][:, 0].numpy()):
                rle = mask_utils.encode(np.asfortranarray((m > 0.5).astype(np.uint8)))
                results.append({"image_id": img_id, "category_id": lab, "score": s, "segmentation": rle,
                                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    return {"images": images, "annotations": anns, "categories": coco_categories()}, results


def test_evaluator_equals_direct_functions():
    batches = [_batch(1), _batch(2)]
    ev = MultiTaskEvaluator()
    for b, o in batches:
        ev.process(b, o)
    got = ev.evaluate()

    y = torch.cat([b["cls"] for b, _ in batches]).numpy()
    p = torch.cat([o["cls_prob"] for _, o in batches]).numpy()
    v = torch.cat([b["cls_valid"] * b["has"]["cls"][:, None] for b, _ in batches]).numpy() > 0
    pids = [m["patient_id"] for b, _ in batches for m in b["meta"]]
    ref = classification_metrics(y, p, v, pids)

    sel = [(b["mask"][b["has"]["mask"]], o["seg_prob"][b["has"]["mask"]].argmax(1)) for b, o in batches]
    counts = np.concatenate([confusion_counts(g, q) for g, q in sel])
    vols = [f"{m['patient_id']}/S" for b, _ in batches for m, h in zip(b["meta"], b["has"]["mask"]) if h]
    voxel_ml = np.full(len(vols), 0.5 * 0.5 * 5.0 / 1000 * 4)  # 64x64 original -> 32x32: 4x the area
    ref.update(segmentation_metrics(counts, vols, voxel_ml))

    gt, results = _coco_reference(batches)
    ref.update(coco_metrics(gt, results, "bbox", engine="pycocotools"))
    ref.update(coco_metrics(gt, results, "segm", engine="pycocotools"))
    ref.update(froc_2d(gt, results))

    missing = set(ref) - set(got)
    assert not missing, sorted(missing)[:5]
    for k, v in ref.items():
        assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(v, abs=1e-9), k
    assert got["det/all/n_images"] == 6 and got["seg/any/n_per_slice"] == 6
    assert got["volume/SDH/gt_mean_ml"] > 0 and 0 < got["det/segm/AP"] < 1


def test_evaluator_reset_task_subset_and_missing_heads():
    batch, out = _batch(3)
    ev = MultiTaskEvaluator(tasks=("cls",))
    ev.process(batch, out)
    m = ev.evaluate()
    assert m and all(k.startswith("cls") for k in m)
    ev.reset()
    assert ev.evaluate() == {}
    ev2 = MultiTaskEvaluator(spacing_aware=False)
    ev2.process(batch, {"seg_prob": out["seg_prob"]})  # model without cls/det heads
    m2 = ev2.evaluate()
    assert "seg/any/dice" in m2 and not any(k.startswith(("volume", "cls", "det")) for k in m2)
    with pytest.raises(ValueError, match="unknown evaluation task"):
        MultiTaskEvaluator(tasks=("cls", "depth"))


def test_evaluator_counts_unknown_subtype_truth_for_any_only():
    from hemo_mtl.categories import UNKNOWN_SUBTYPE
    from hemo_mtl.evaluation.segmentation import subtype_known

    batch, outputs = _batch(3)
    batch["mask"][0][batch["mask"][0] > 0] = UNKNOWN_SUBTYPE  # a binary mask on a slice with two subtypes
    ev = MultiTaskEvaluator(tasks=("seg",))
    ev.process(batch, outputs)
    got = ev.evaluate()
    keep = batch["has"]["mask"]
    gt, pred = batch["mask"][keep], outputs["seg_prob"][keep].argmax(1)
    vols = [f"{m['patient_id']}/S" for m, h in zip(batch["meta"], keep) if h]
    known = subtype_known(gt)
    assert known.tolist() == [False, True, True]
    ref = segmentation_metrics(confusion_counts(gt, pred), vols, np.full(3, 0.5 * 0.5 * 5.0 / 1000 * 4),
                               slice_subtype_known=known)
    assert set(ref) == set(got)
    for k, v in ref.items():
        assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(v, abs=1e-9), k
    assert got["seg/any/n_subtype_unknown"] == 1 and got["seg/SDH/n_per_slice"] == 2 and got["seg/any/n_per_slice"] == 3
    # the unknown slice's bleed still counts for any: recall as if it were labelled
    labelled = dict(batch, mask=torch.where(batch["mask"] == UNKNOWN_SUBTYPE, 2, batch["mask"]))
    ev.reset()
    ev.process(labelled, outputs)
    assert ev.evaluate()["seg/any/recall"] == pytest.approx(got["seg/any/recall"])


def test_evaluator_scores_a_binary_head_as_any_bleed_never_as_edh():
    """A binary head's seg_prob (background, bleed) is bleed of unknown subtype: ``any`` is scored
    against sklearn on the binary masks, and no pixel counts as a predicted EDH (argmax 1)."""
    from sklearn.metrics import f1_score

    batch, outputs = _batch(3)
    keep = batch["has"]["mask"]
    multi = outputs["seg_prob"]
    binary = torch.stack([multi[:, 0], multi[:, 1:].sum(1)], dim=1)  # P(background), P(any bleed)
    ev = MultiTaskEvaluator(tasks=("seg",))
    ev.process(batch, dict(outputs, seg_prob=binary))
    got = ev.evaluate()
    gt, bleed = batch["mask"][keep].numpy(), binary[keep].argmax(1).numpy()
    assert got["seg/any/dice"] == pytest.approx(f1_score(gt.ravel() > 0, bleed.ravel() > 0))
    assert not (gt == 1).any() and math.isnan(got["seg/EDH/dice"])  # no EDH in truth, none predicted
    assert got["seg/SDH/recall"] == 0  # every SDH pixel: its subtype not predicted


def test_evaluator_gathers_across_ranks_only_when_asked(monkeypatch):
    """Training evaluates on the main rank alone: a gather there would wait for ranks that never
    evaluate (a torchrun run hung at its first validation). Only ``gather=True`` gathers."""
    import torch.distributed as dist

    calls = []

    def all_gather_object(parts, obj):
        calls.append(len(parts))
        parts[:] = [obj, obj]  # two ranks that saw the same slices

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    batch, out = _batch(3)
    alone = MultiTaskEvaluator(tasks=("cls",))
    alone.process(batch, out)
    single = alone.evaluate()
    assert calls == [] and single["cls/any/n"] > 0
    sharded = MultiTaskEvaluator(tasks=("cls",), gather=True)
    sharded.process(batch, out)
    assert sharded.evaluate()["cls/any/n"] == 2 * single["cls/any/n"] and calls == [2]
