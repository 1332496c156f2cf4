#!/usr/bin/env python
"""faster-coco-eval vs pycocotools on a synthetic set: wall time of each and the largest stat gap.

    python tools/benchmark.py cocoeval [--images 5000] [--segm-images 1000] [--seed 0] [--out FILE]

Times ``hemo_mtl.evaluation.coco_metrics`` end to end (load results, evaluate, accumulate,
summarize, per-subtype slicing) with each engine on the same ground truth and detections: lesion
boxes with jittered hits, misses, duplicates, false positives and empty slices, all five subtypes.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from pycocotools import mask as mask_utils

from hemo_mtl.categories import coco_categories
from hemo_mtl.evaluation import coco_metrics
from hemo_mtl.atomic import atomic_write_json


def synthetic_coco(n_images: int, seed: int = 0, size: int = 256, masks: bool = False) -> tuple[dict, list]:
    """COCO ground truth and results; with ``masks``, ellipse RLEs for both."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] if masks else (None, None)

    def shape(cx, cy, rx, ry):
        bbox = [cx - rx, cy - ry, 2 * rx, 2 * ry]
        if not masks:
            return bbox, None, 4 * rx * ry
        m = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)
        rle = mask_utils.encode(np.asfortranarray(m))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        return bbox, rle, float(m.sum())

    images, anns, results = [], [], []
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "height": size, "width": size})
        n_gt = 0 if rng.random() < 0.4 else int(rng.integers(1, 5))
        for _ in range(n_gt):
            cx, cy = rng.uniform(30, size - 30, 2)
            rx, ry = rng.uniform(2, 28, 2)
            cat = int(rng.integers(1, 6))
            bbox, seg, area = shape(cx, cy, rx, ry)
            ann = {"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": bbox, "area": area,
                   "iscrowd": 0}
            if seg is not None:
                ann["segmentation"] = seg
            anns.append(ann)
            if rng.random() < 0.15:
                continue  # missed lesion
            for _ in range(1 + int(rng.random() < 0.1)):  # sometimes a duplicate
                jx, jy = rng.normal(0, 0.15 * rx), rng.normal(0, 0.15 * ry)
                bbox, seg, _ = shape(cx + jx, cy + jy, rx * rng.uniform(0.8, 1.2), ry * rng.uniform(0.8, 1.2))
                res = {"image_id": img_id, "category_id": cat if rng.random() > 0.05 else int(rng.integers(1, 6)),
                       "bbox": bbox, "score": float(rng.uniform(0.2, 1.0))}
                if seg is not None:
                    res["segmentation"] = seg
                results.append(res)
        for _ in range(int(rng.poisson(0.7))):  # false positives
            bbox, seg, _ = shape(*rng.uniform(30, size - 30, 2), *rng.uniform(2, 20, 2))
            res = {"image_id": img_id, "category_id": int(rng.integers(1, 6)), "bbox": bbox,
                   "score": float(rng.uniform(0.0, 0.7))}
            if seg is not None:
                res["segmentation"] = seg
            results.append(res)
    return {"images": images, "annotations": anns, "categories": coco_categories()}, results


def compare(gt: dict, results: list, iou_type: str, repeats: int = 3) -> dict:
    """Both engines ``repeats`` times, interleaved (faster, pycocotools, faster, ...): the speedup is the
    ratio of their fastest runs, so load that comes and goes hits both alike."""
    runs, stats = {"faster": [], "pycocotools": []}, {}
    for _ in range(repeats):
        for engine in runs:
            t0 = time.perf_counter()
            stats[engine] = coco_metrics(gt, results, iou_type, engine=engine)
            runs[engine].append(time.perf_counter() - t0)
    times = {engine: min(t) for engine, t in runs.items()}
    diffs = [abs(stats["faster"][k] - stats["pycocotools"][k]) for k in stats["faster"]
             if not (math.isnan(stats["faster"][k]) and math.isnan(stats["pycocotools"][k]))]
    return {"iou_type": iou_type, "images": len(gt["images"]), "annotations": len(gt["annotations"]),
            "detections": len(results), "faster_s": times["faster"], "pycocotools_s": times["pycocotools"],
            "speedup": times["pycocotools"] / times["faster"], "max_abs_stat_diff": max(diffs),
            "stats_compared": len(diffs), "AP": stats["faster"][f"det/{iou_type}/AP"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--segm-images", type=int, default=1000, help="segm subset size (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per engine; the fastest counts")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    rows = [compare(*synthetic_coco(args.images, args.seed), "bbox", args.repeats)]
    if args.segm_images:
        rows.append(compare(*synthetic_coco(args.segm_images, args.seed + 1, masks=True), "segm", args.repeats))
    for r in rows:
        print(f"{r['iou_type']:4s} {r['images']:5d} images {r['annotations']:5d} gt {r['detections']:5d} dets: "
              f"faster-coco-eval {r['faster_s']:.2f} s, pycocotools {r['pycocotools_s']:.2f} s "
              f"(x{r['speedup']:.1f}); max |stat diff| over {r['stats_compared']} stats = "
              f"{r['max_abs_stat_diff']:.2e}; AP {r['AP']:.4f}")
    if args.out:
        atomic_write_json(args.out, rows, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
