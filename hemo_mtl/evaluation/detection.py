"""COCO detection metrics (bbox and segm) and lesion-level FROC in 2D (slices) and 3D (volumes).

COCO stats are computed by faster-coco-eval (C++, identical numbers) or pycocotools; FROC is our own
lesion matching. Conventions are listed in ``CONVENTIONS`` and written into every report.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..categories import CATEGORY_IDS, CATEGORY_NAMES, SUBTYPES
from ..lesions import connected_lesions

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
ENGINES = ("faster", "pycocotools")
FROC_FPS = (0.5, 1.0, 2.0, 4.0)
# (is AP, IoU threshold or None = mean over .50:.95, area range name, maxDets) per stat, as summarize()
_STAT_SPECS = (
    (True, None, "all", 100), (True, 0.5, "all", 100), (True, 0.75, "all", 100),
    (True, None, "small", 100), (True, None, "medium", 100), (True, None, "large", 100),
    (False, None, "all", 1), (False, None, "all", 10), (False, None, "all", 100),
    (False, None, "small", 100), (False, None, "medium", 100), (False, None, "large", 100),
)


CONVENTIONS = (
    "COCO: the 12 COCOeval.summarize stats (AP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) by faster-coco-eval (identical to pycocotools); pycocotools' -1 (no ground truth for that area range or category) is reported as n/a. Per-subtype stats equal COCOeval with catIds=[id].",
    "FROC: a prediction hits a ground-truth lesion of the same category when box IoU >= the threshold (default 0.5; 3D box IoU for volumes), or with criterion 'center' (2D) when its box centre lies inside the lesion mask.",
    'FROC matching: predictions in descending score order over the whole set; each claims the unclaimed lesion it overlaps best; one that hits only already-claimed lesions is ignored (neither TP nor FP, as LUNA16/CAMELYON16); one that hits nothing is a false positive.',
    'sens@f = the highest lesion sensitivity reached with at most f false positives per slice (2D) or per volume (3D), no interpolation; every slice/volume counts in the denominator.',
)

def _engine_classes(engine: str):
    if engine not in ENGINES:
        raise ValueError(f"unknown COCO engine {engine!r}; expected one of {ENGINES}")
    if engine == "faster":
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, lambda g, d, t: COCOeval_faster(g, d, t, print_function=lambda *a, **k: None)
        except ImportError:  # fall back to the reference implementation
            pass
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def check_results(gt: Mapping, results: Sequence[Mapping], iou_type: str = "bbox") -> None:
    """Raise ValueError naming the first result that does not fit the ground truth."""
    image_ids = {im["id"] for im in gt.get("images", [])}
    cat_ids = {c["id"] for c in gt.get("categories", [])}
    for i, r in enumerate(results):
        for key in ("image_id", "category_id", "score"):
            if key not in r:
                raise ValueError(f"result {i}: missing key {key!r}")
        if r["image_id"] not in image_ids:
            raise ValueError(f"result {i}: image_id {r['image_id']!r} is not in the ground truth")
        if r["category_id"] not in cat_ids:
            raise ValueError(f"result {i}: category_id {r['category_id']!r} is not one of {sorted(cat_ids)}")
        if not math.isfinite(float(r["score"])):
            raise ValueError(f"result {i}: score is {r['score']!r}")
        if iou_type == "bbox":
            box = r.get("bbox")
            if box is None or len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
                raise ValueError(f"result {i}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
        elif "segmentation" not in r:
            raise ValueError(f"result {i}: segm evaluation needs a 'segmentation'")


def _load(coco_cls, gt: Mapping, results: Sequence[Mapping]):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        else:  # loadRes([]) fails in pycocotools: an empty result set is a valid (all-miss) answer
            coco_dt = coco_cls()
            coco_dt.dataset = {"images": copy.deepcopy(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
    return coco_gt, coco_dt


def _summary_stats(precision: np.ndarray, recall: np.ndarray, params, k: slice | int) -> np.ndarray:
    """The 12 summarize() stats from accumulated arrays, restricted to category index ``k``."""
    stats = np.empty(len(_STAT_SPECS))
    area_idx = {name: i for i, name in enumerate(params.areaRngLbl)}
    for s, (is_ap, iou, area, max_det) in enumerate(_STAT_SPECS):
        a, m = area_idx[area], list(params.maxDets).index(max_det)
        if is_ap:
            arr = precision[:, :, k, a, m]  # T, R, K, A, M
        else:
            arr = recall[:, k, a, m]  # T, K, A, M
        if iou is not None:
            t = np.where(np.abs(params.iouThrs - iou) < 1e-9)[0]
            arr = arr[t]
        valid = arr[arr > -1]
        stats[s] = float(np.mean(valid)) if valid.size else -1.0
    return stats


def coco_metrics(gt: Mapping, results: Sequence[Mapping], iou_type: str = "bbox", *,
                 engine: str = "faster", per_category: bool = True) -> dict[str, float]:
    """Flat dict ``det/<iou_type>/<stat>`` and ``det/<iou_type>/<stat>/<subtype>``; -1 -> NaN."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    check_results(gt, results, iou_type)
    coco_cls, eval_cls = _engine_classes(engine)
    coco_gt, coco_dt = _load(coco_cls, gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = eval_cls(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prefix = f"det/{iou_type}"

    def _put(out, stats, suffix=""):
        for name, v in zip(STAT_NAMES, stats):
            out[f"{prefix}/{name}{suffix}"] = float(v) if v > -1 else math.nan

    out: dict[str, float] = {}
    _put(out, np.asarray(ev.stats, np.float64))
    if per_category:
        precision, recall = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
        cat_ids = list(ev.params.catIds)
        for cid in sorted(CATEGORY_NAMES):
            if cid in cat_ids:
                _put(out, _summary_stats(precision, recall, ev.params, cat_ids.index(cid)),
                     f"/{CATEGORY_NAMES[cid]}")
    return out


# ----------------------------------------------------------------------------------------- FROC


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of axis-aligned boxes in any dimension: (n, 2d) x (m, 2d) mins-then-maxes."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.shape[1] // 2 if a.size else (b.shape[1] // 2 if b.size else 2)
    a, b = a.reshape(-1, 2 * d), b.reshape(-1, 2 * d)
    lo = np.maximum(a[:, None, :d], b[None, :, :d])
    hi = np.minimum(a[:, None, d:], b[None, :, d:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    va = np.clip(a[:, d:] - a[:, :d], 0, None).prod(-1)
    vb = np.clip(b[:, d:] - b[:, :d], 0, None).prod(-1)
    union = va[:, None] + vb[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy_status(scores: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Per prediction of one unit: 1 TP, 0 FP, -1 ignored. ``quality`` (n_pred, n_gt), NaN = no hit."""
    status = np.zeros(len(scores), np.int8)
    claimed = np.zeros(quality.shape[1], bool)
    for i in np.argsort(-scores, kind="stable"):
        q = quality[i]
        hits = ~np.isnan(q)
        if not hits.any():
            continue  # FP
        free = hits & ~claimed
        if free.any():
            j = int(np.nanargmax(np.where(free, q, np.nan)))
            claimed[j] = True
            status[i] = 1
        else:
            status[i] = -1
    return status


def froc_curve(scores: np.ndarray, status: np.ndarray, n_lesions: int, n_units: int) -> dict[str, np.ndarray]:
    """FROC points over all score thresholds: fps (FP per unit), sensitivity, threshold."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    s, st = np.asarray(scores, np.float64)[order], np.asarray(status)[order]
    tp, fp = np.cumsum(st == 1), np.cumsum(st == 0)
    last = np.r_[s[1:] != s[:-1], True] if s.size else np.zeros(0, bool)  # one point per distinct score
    fps = np.r_[0.0, fp[last] / max(n_units, 1)]
    sens = np.r_[0.0, tp[last] / n_lesions] if n_lesions else np.full(int(last.sum()) + 1, np.nan)
    return {"fps": fps, "sensitivity": sens, "threshold": np.r_[np.inf, s[last]],
            "n_lesions": n_lesions, "n_units": n_units}


def sensitivity_at(curve: Mapping[str, np.ndarray], fp_rate: float) -> float:
    """Highest sensitivity with at most ``fp_rate`` false positives per unit (no interpolation)."""
    ok = curve["fps"] <= fp_rate + 1e-12
    return float(np.max(curve["sensitivity"][ok])) if curve["n_lesions"] else math.nan


def _froc_keys(curves: Mapping[str, dict], prefix: str, fps: Sequence[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, curve in curves.items():
        suffix = "" if name == "all" else f"/{name}"
        sens = [sensitivity_at(curve, f) for f in fps]
        for f, v in zip(fps, sens):
            out[f"{prefix}/sens@{f:g}fp{suffix}"] = v
        out[f"{prefix}/mean_sens{suffix}"] = float(np.mean(sens)) if curve["n_lesions"] else math.nan
        out[f"{prefix}/n_lesions{suffix}"] = float(curve["n_lesions"])
    return out


def _xywh_to_xyxy(b) -> np.ndarray:
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.c_[b[:, :2], b[:, :2] + b[:, 2:]]


def _center_hits(pred_xyxy: np.ndarray, gt_masks: list[np.ndarray]) -> np.ndarray:
    """(n_pred, n_gt) bool: box centre inside the gt mask (pixel (r, c) covers [c, c+1) x [r, r+1))."""
    hits = np.zeros((len(pred_xyxy), len(gt_masks)), bool)
    if not len(pred_xyxy):
        return hits
    cx = np.floor((pred_xyxy[:, 0] + pred_xyxy[:, 2]) / 2).astype(int)
    cy = np.floor((pred_xyxy[:, 1] + pred_xyxy[:, 3]) / 2).astype(int)
    for j, m in enumerate(gt_masks):
        inside = (cx >= 0) & (cy >= 0) & (cx < m.shape[1]) & (cy < m.shape[0])
        hits[inside, j] = m[cy[inside], cx[inside]] > 0
    return hits


def _run_froc(units: Iterable, quality_fn, fps: Sequence[float], prefix: str, n_units: int):
    """units: (unit id, gt list, pred list) with 'category_id'; returns (keys, curves)."""
    per_cat = {c: ([], [], 0) for c in ["all", *SUBTYPES]}
    scores_all, status_all, n_all = [], [], 0
    for _, gts, preds in units:
        for cname in SUBTYPES:
            cid = CATEGORY_IDS[cname]
            g = [x for x in gts if x["category_id"] == cid]
            p = [x for x in preds if x["category_id"] == cid]
            sc = np.asarray([x["score"] for x in p], np.float64)
            q = quality_fn(p, g) if (p and g) else np.full((len(p), len(g)), np.nan)
            st = _greedy_status(sc, q)
            s_list, st_list, n = per_cat[cname]
            per_cat[cname] = (s_list + [sc], st_list + [st], n + len(g))
            scores_all.append(sc)
            status_all.append(st)
            n_all += len(g)
    per_cat["all"] = (scores_all, status_all, n_all)
    curves = {}
    for name, (s_list, st_list, n) in per_cat.items():
        s = np.concatenate(s_list) if s_list else np.zeros(0)
        st = np.concatenate(st_list) if st_list else np.zeros(0, np.int8)
        curves[name] = froc_curve(s, st, n, n_units)
    return _froc_keys(curves, prefix, fps), curves


def froc_2d(gt: Mapping, results: Sequence[Mapping], *, iou_threshold: float = 0.5,
            criterion: str = "iou", fps: Sequence[float] = FROC_FPS,
            return_curves: bool = False):
    """Lesion-level FROC per slice from a COCO ground truth and COCO results (bbox).

    Keys ``det/froc/sens@<f>fp`` (all subtypes pooled) and ``det/froc/sens@<f>fp/<subtype>``.
    Crowd annotations are not lesions here and are skipped.
    """
    if criterion not in ("iou", "center"):
        raise ValueError(f"FROC criterion must be 'iou' or 'center', got {criterion!r}")
    check_results(gt, results, "bbox")
    images = {im["id"]: im for im in gt["images"]}
    gts = {i: [] for i in images}
    for a in gt.get("annotations", []):
        if not a.get("iscrowd", 0):
            gts[a["image_id"]].append(a)
    preds = {i: [] for i in images}
    for r in results:
        preds[r["image_id"]].append(r)

    def quality(p, g):
        pb = _xywh_to_xyxy([x["bbox"] for x in p])
        iou = box_iou(pb, _xywh_to_xyxy([x["bbox"] for x in g]))
        if criterion == "iou":
            return np.where(iou >= iou_threshold, iou, np.nan)
        masks = [_annotation_mask(x, images[x["image_id"]]) for x in g]
        hit = _center_hits(pb, masks)
        return np.where(hit, iou, np.nan)  # among hit lesions, the best-overlapping is claimed

    units = ((i, gts[i], preds[i]) for i in images)
    keys, curves = _run_froc(units, quality, fps, "det/froc", len(images))
    return (keys, curves) if return_curves else keys


def _annotation_mask(ann: Mapping, image: Mapping) -> np.ndarray:
    """Binary mask of a COCO annotation; its box when it has no segmentation."""
    from converters.rle import decode

    h, w = int(image["height"]), int(image["width"])
    seg = ann.get("segmentation")
    if seg:
        return decode(seg, h, w)
    m = np.zeros((h, w), np.uint8)
    x, y, bw, bh = ann["bbox"]
    m[int(math.floor(y)):int(math.ceil(y + bh)), int(math.floor(x)):int(math.ceil(x + bw))] = 1
    return m


def lesion_box_3d(lesion: Mapping) -> np.ndarray:
    """[x0, y0, z0, x1, y1, z1] of a 3D lesion dict: bbox xyxy (pixels) + slices [first, last] inclusive."""
    try:
        x0, y0, x1, y1 = (float(v) for v in lesion["bbox"])
        first, last = (float(v) for v in lesion["slices"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"3D lesion {dict(lesion)!r}: needs 'bbox' [x0, y0, x1, y1] and 'slices' "
                         f"[first, last] ({e})") from None
    if last < first or x1 < x0 or y1 < y0:
        raise ValueError(f"3D lesion {dict(lesion)!r}: empty extent")
    return np.array([x0, y0, first, x1, y1, last + 1.0])  # slice k covers [k, k+1)


def froc_3d(gt_lesions: Sequence[Mapping], pred_lesions: Sequence[Mapping], *, iou_threshold: float = 0.5,
            volume_ids: Sequence[str] | None = None, fps: Sequence[float] = FROC_FPS,
            return_curves: bool = False):
    """Lesion-level FROC per volume. Lesions are dicts {patient_id, category_id, bbox, slices
    (+ score for predictions)}; a prediction hits when its 3D box IoU >= ``iou_threshold``.

    ``volume_ids`` lists every evaluated volume (FP denominator); default: the ids seen in either list.
    """
    for kind, lesions in (("ground-truth", gt_lesions), ("predicted", pred_lesions)):
        for i, les in enumerate(lesions):
            for key in ("patient_id", "category_id") + (("score",) if kind == "predicted" else ()):
                if key not in les:
                    raise ValueError(f"{kind} 3D lesion {i}: missing key {key!r}")
    ids = list(volume_ids) if volume_ids is not None else sorted(
        {str(x["patient_id"]) for x in [*gt_lesions, *pred_lesions]})
    known = set(map(str, ids))
    groups = {v: ([], []) for v in map(str, ids)}
    for kind, lesions, slot in (("ground-truth", gt_lesions, 0), ("predicted", pred_lesions, 1)):
        for les in lesions:
            pid = str(les["patient_id"])
            if pid not in known:
                raise ValueError(f"{kind} 3D lesion of patient {pid!r}: not among the evaluated volumes")
            groups[pid][slot].append(les)

    def quality(p, g):
        iou = box_iou(np.stack([lesion_box_3d(x) for x in p]), np.stack([lesion_box_3d(x) for x in g]))
        return np.where(iou >= iou_threshold, iou, np.nan)

    units = ((v, g, p) for v, (g, p) in groups.items())
    keys, curves = _run_froc(units, quality, fps, "det/froc3d", len(ids))
    return (keys, curves) if return_curves else keys


def lesions_3d_from_mask(mask: np.ndarray, patient_id: str, *, connectivity: int = 26,
                         scores: np.ndarray | None = None) -> list[dict]:
    """3D lesions (``hemo_mtl.lesions``: 26-connected components per subtype by default) of a label
    volume (X, Y, Z).

    bbox is xyxy in slice pixel coordinates (x = column = axis 1 of ``vol[:, :, k]``); with a
    probability volume ``scores`` (same shape) each lesion gets its max probability as score.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"label volume for patient {patient_id!r} must be 3D (X, Y, Z), got {mask.shape}")
    ids, subtypes = connected_lesions(mask, connectivity)
    out = []
    for i, (sl, c) in enumerate(zip(ndimage.find_objects(ids), subtypes), start=1):
        rows, cols, zs = sl
        les = {"patient_id": patient_id, "category_id": c,
               "bbox": [cols.start, rows.start, cols.stop, rows.stop], "slices": [zs.start, zs.stop - 1]}
        if scores is not None:
            les["score"] = float(np.max(scores[sl][ids[sl] == i]))
        out.append(les)
    return out
