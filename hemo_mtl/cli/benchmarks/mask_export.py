"""Mask -> COCO / YOLO-seg: hemo-mtl's converters against ultralytics' converter and skimage contours.

    python tools/benchmark.py mask_export [--slices 64] [--size 512] [--seed 0] [--source phantom|synthetic|both]

Every method gets the same (size x size) label slices: slices with bleed from phantom patients
(hemo_mtl.data.phantom) and synthetic masks stressing holes, 1-px streaks and tiny blobs.
Throughput is slices per second from the fastest of ``repeats`` runs after a warm-up (the least
disturbed by other load on a shared machine). Fidelity compares each reference component
(8-connected, per subtype, scipy.ndimage) with the best-overlapping output of the same class:
mean/min IoU over all components, a component with no output counting as IoU 0 ("missed").
COCO outputs and YOLO polygons (which ultralytics' own COCO converter takes over in the COCO pixel
convention) are decoded with pycocotools; ultralytics' mask converter writes contour points at
pixel *centres*, so its lines are scored with the better of pycocotools and cv2.fillPoly (the
centre convention). Rows marked "png -> txt" read PNG masks and write one label file per slice,
like ultralytics' converter; the others run in memory.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from converters.coco_to_yolo import yolo_lines
from converters.mask_to_coco import CocoBuilder, MaskToCoco
from hemo_mtl.atomic import atomic_write_text
from hemo_mtl.categories import coco_categories

EIGHT = np.ones((3, 3), dtype=bool)
CATEGORIES = {"categories": coco_categories()}


# ---------------------------------------------------------------- inputs
def phantom_slices(num_slices: int, size: int, seed: int) -> list[np.ndarray]:
    """Slices with bleed from seeded phantom patients (hemo_mtl.data.phantom), or [] if absent."""
    try:
        from hemo_mtl.data.phantom import make_phantom_case
    except ImportError:
        return []
    out: list[np.ndarray] = []
    case_seed = seed
    while len(out) < num_slices and case_seed < seed + 10 * num_slices:
        mask = make_phantom_case(case_seed, size=size, slices=24, normal=False).mask
        out.extend(np.ascontiguousarray(mask[:, :, k]) for k in range(mask.shape[2]) if mask[:, :, k].any())
        case_seed += 1
    return out[:num_slices]


def synthetic_slices(num_slices: int, size: int, seed: int) -> list[np.ndarray]:
    """Lesion-like masks stressing the hard cases: a lens (EDH), a crescent (SDH), 1-px streaks in
    every direction (SAH), a ragged blob with holes (IPH), small blobs and single pixels (IVH)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(num_slices):
        m = np.zeros((size, size), np.uint8)
        c = size / 2
        r = size * rng.uniform(0.38, 0.45)
        dist = np.hypot(yy - c, xx - c)
        ang = np.arctan2(yy - c, xx - c)
        a0 = rng.uniform(-np.pi, np.pi)
        m[(dist > r - size * 0.03) & (dist < r) & (np.cos(ang - a0) > 0.6)] = 2  # SDH crescent
        a1 = a0 + np.pi
        lens = (dist < r) & (dist > r - size * 0.05 * np.clip(np.cos(ang - a1) * 3 - 2, 0, 1))
        m[lens] = 1  # EDH lens against the rim
        for _ in range(rng.integers(3, 7)):  # SAH: random 1-px walks (diagonal steps included)
            y, x = rng.integers(size // 4, 3 * size // 4, 2)
            for _ in range(rng.integers(10, 60)):
                m[y, x] = 3
                y = int(np.clip(y + rng.integers(-1, 2), 0, size - 1))
                x = int(np.clip(x + rng.integers(-1, 2), 0, size - 1))
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        rad = size * rng.uniform(0.04, 0.08)
        noise = ndimage.gaussian_filter(rng.random((size, size)), 2)
        blob = (np.hypot(yy - cy, xx - cx) < rad * (0.8 + 2 * (noise - 0.5)))
        m[blob & (m == 0)] = 4  # IPH, ragged, sometimes with holes
        m[(np.hypot(yy - cy, xx - cx) < rad * 0.25)] = 0  # a hole (or a notch)
        for _ in range(rng.integers(2, 6)):  # IVH: small blobs and single pixels
            y, x = rng.integers(size // 3, 2 * size // 3, 2)
            m[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = 5
        out.append(m)
    return out


# ---------------------------------------------------------------- fidelity
def reference_components(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    comps = []
    for c in range(1, 6):
        labels, n = ndimage.label(mask == c, structure=EIGHT)
        comps.extend((c, labels == i) for i in range(1, n + 1))
    return comps


def fidelity(slices: list[np.ndarray], outputs: list[list[tuple[int, np.ndarray]]]) -> dict:
    """mean/min IoU of each reference component against its best output of the same class."""
    ious = []
    for mask, outs in zip(slices, outputs):
        for cat, comp in reference_components(mask):
            best = 0.0
            for out_cat, decoded in outs:
                if out_cat == cat:
                    inter = np.count_nonzero(decoded & comp)
                    if inter:
                        best = max(best, inter / np.count_nonzero(decoded | comp))
            ious.append(best)
    ious = np.asarray(ious)
    return {"components": len(ious), "mean_iou": float(ious.mean()), "min_iou": float(ious.min()),
            "missed": int((ious == 0).sum())}


def _decode_polygons(parts: list[list[float]], h: int, w: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w))).astype(bool)


def _fill_centres(points: np.ndarray, h: int, w: int) -> np.ndarray:
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def _parse_yolo(text: str, h: int, w: int) -> list[tuple[int, np.ndarray]]:
    """(category id, (N, 2) pixel coordinates) per YOLO-seg line."""
    out = []
    for line in text.splitlines():
        values = line.split()
        if len(values) >= 7:
            out.append((int(values[0]) + 1, np.asarray(values[1:], float).reshape(-1, 2) * [w, h]))
    return out


# ---------------------------------------------------------------- methods
def ours_coco(slices, workdir):
    builder = CocoBuilder(MaskToCoco())
    for i, m in enumerate(slices):
        builder.add_slice(builder.add_image(f"{i:05d}.png", *m.shape), m)
    return builder.to_dict()


def ours_coco_decode(coco, slices):
    outs = [[] for _ in slices]
    for a in coco["annotations"]:
        h, w = slices[a["image_id"] - 1].shape
        seg = a["segmentation"]
        decoded = _decode_polygons(seg, h, w) if isinstance(seg, list) else \
            mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
        outs[a["image_id"] - 1].append((a["category_id"], decoded))
    return outs


_POLYGONS = MaskToCoco(seg_format="polygon")


def _mask_yolo_text(mask: np.ndarray) -> str:
    h, w = mask.shape
    anns = _POLYGONS.instances(mask)
    return "".join(f"{ln}\n" for ln in yolo_lines(CATEGORIES, {"height": h, "width": w}, anns))


def ours_yolo(slices, workdir):
    return [_mask_yolo_text(m) for m in slices]


def ours_yolo_files(slices, workdir):
    out = Path(workdir) / "ours_labels"
    for path in sorted((Path(workdir) / "masks").glob("*.png")):
        atomic_write_text(out / f"{path.stem}.txt", _mask_yolo_text(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)))
    return out


def yolo_decode(texts, slices):
    return [[(c, _decode_polygons([p.ravel().tolist()], *m.shape)) for c, p in _parse_yolo(t, *m.shape)]
            for t, m in zip(texts, slices)]


def yolo_files_decode(folder, slices):
    return yolo_decode([(Path(folder) / f"{i:05d}.txt").read_text() for i in range(len(slices))], slices)


def ultralytics_files(slices, workdir):
    from ultralytics.data.converter import convert_segment_masks_to_yolo_seg
    from ultralytics.utils import LOGGER

    out = Path(workdir) / "ultralytics_labels"
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # its two INFO lines per mask would time the terminal
    try:
        convert_segment_masks_to_yolo_seg(str(Path(workdir) / "masks"), str(out), classes=5)
    finally:
        LOGGER.setLevel(level)
    return out


def ultralytics_loop_in_memory(slices, workdir):
    """The per-mask body of ultralytics' ``convert_segment_masks_to_yolo_seg`` (8.4.x) without
    its file I/O, transcribed so both sides can be timed in memory: ``np.unique`` of the mask,
    per class ``findContours(RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``, contours of >= 3 points,
    coordinates ``round(v / size, 6)``."""
    texts = []
    for mask in slices:
        h, w = mask.shape
        rows = []
        for value in np.unique(mask):
            if value == 0:
                continue
            contours, _ = cv2.findContours((mask == value).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                if len(contour) >= 3:
                    row = [int(value) - 1]
                    for point in contour.squeeze():
                        row.append(round(point[0] / w, 6))
                        row.append(round(point[1] / h, 6))
                    rows.append(row)
        texts.append("".join(" ".join(map(str, r)) + "\n" for r in rows))
    return texts


def ultralytics_decode(folder, slices):
    """Scored in both pixel conventions; the better one is kept (see module doc)."""
    texts = folder if isinstance(folder, list) else [(Path(folder) / f"{i:05d}.txt").read_text() for i in range(len(slices))]
    by_coco, by_centre = [], []
    for text, m in zip(texts, slices):
        lines = _parse_yolo(text, *m.shape)
        by_coco.append([(c, _decode_polygons([p.ravel().tolist()], *m.shape)) for c, p in lines])
        by_centre.append([(c, _fill_centres(p, *m.shape)) for c, p in lines])
    return by_coco, by_centre


def skimage_coco(slices, workdir):
    """The straightforward way: label per subtype, ``find_contours`` at 0.5 on each padded
    component, every contour a polygon part (shifted +0.5 into the COCO pixel convention)."""
    from skimage import measure

    anns = []
    for i, m in enumerate(slices):
        for c in range(1, 6):
            binary = m == c
            if not binary.any():
                continue
            for region in measure.regionprops(measure.label(binary, connectivity=2)):
                y0, x0, y1, x1 = region.bbox
                crop = np.pad(region.image, 1)
                parts = [(ct[:, ::-1] + [x0 - 0.5, y0 - 0.5]).ravel().tolist()
                         for ct in measure.find_contours(crop.astype(np.uint8), 0.5) if len(ct) >= 3]
                anns.append({"image_id": i + 1, "category_id": c, "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "area": int(region.area), "segmentation": parts})
    return anns


def skimage_decode(anns, slices):
    outs = [[] for _ in slices]
    for a in anns:
        if a["segmentation"]:
            outs[a["image_id"] - 1].append((a["category_id"], _decode_polygons(a["segmentation"], *slices[0].shape)))
    return outs


# ---------------------------------------------------------------- runner
def _ultralytics_score(folder, slices):
    by_coco, by_centre = ultralytics_decode(folder, slices)
    f_coco, f_centre = fidelity(slices, by_coco), fidelity(slices, by_centre)
    if f_centre["mean_iou"] >= f_coco["mean_iou"]:
        return f_centre, f"scored with cv2.fillPoly (pycocotools: mean IoU {f_coco['mean_iou']:.4f})"
    return f_coco, "scored with pycocotools"


def methods() -> list[dict]:
    """name, io, convert fn(slices, workdir), score fn(result, slices) -> (fidelity, note), holes kept."""
    rows = [
        dict(name="hemo-mtl mask->COCO (auto: polygon/RLE)", io="memory", fn=ours_coco, holes="yes",
             score=lambda r, s: (fidelity(s, ours_coco_decode(r, s)), "")),
        dict(name="hemo-mtl mask->YOLO-seg", io="memory", fn=ours_yolo, holes="no (format)",
             score=lambda r, s: (fidelity(s, yolo_decode(r, s)), "")),
        dict(name="hemo-mtl mask->YOLO-seg", io="png -> txt", fn=ours_yolo_files, holes="no (format)",
             score=lambda r, s: (fidelity(s, yolo_files_decode(r, s)), "")),
    ]
    try:
        import ultralytics
    except ImportError:
        rows.append(dict(name="ultralytics convert_segment_masks_to_yolo_seg", skipped="ultralytics not installed"))
    else:
        rows.append(dict(name=f"ultralytics {ultralytics.__version__} convert_segment_masks_to_yolo_seg",
                         io="png -> txt", fn=ultralytics_files, holes="no", score=_ultralytics_score))
    rows.append(dict(name="ultralytics' loop body, transcribed (no file I/O)", io="memory",
                     fn=ultralytics_loop_in_memory, holes="no", score=_ultralytics_score))
    rows.append(dict(name="skimage find_contours per component -> COCO polygons", io="memory", fn=skimage_coco,
                     holes="no", score=lambda r, s: (fidelity(s, skimage_decode(r, s)), "")))
    return rows


def run(num_slices: int = 64, size: int = 512, seed: int = 0, source: str = "phantom", repeats: int = 5) -> list[dict]:
    """One row per method: slices/s, mean/min IoU, missed components, holes kept, and for our rows
    ``speedup`` over the fastest other method with the same io. Repeats run round-robin over the
    methods, so load from other processes hits them alike."""
    if source == "phantom":
        slices = phantom_slices(num_slices, size, seed)
        if not slices:
            source, slices = "synthetic", synthetic_slices(num_slices, size, seed)
    elif source == "synthetic":
        slices = synthetic_slices(num_slices, size, seed)
    else:
        raise ValueError(f"source must be phantom or synthetic, got {source!r}")
    label = f"{source} {len(slices)}x{size}x{size}"
    with tempfile.TemporaryDirectory(prefix="mask_export_") as workdir:
        masks = Path(workdir) / "masks"
        masks.mkdir()
        for i, m in enumerate(slices):
            cv2.imwrite(str(masks / f"{i:05d}.png"), m)
        todo = [m for m in methods() if "skipped" not in m]
        results, best = {}, {}
        for m in todo:  # warm-up: imports, caches
            results[id(m)] = m["fn"](slices, workdir)
        for _ in range(repeats):
            for m in todo:
                t = time.perf_counter()
                m["fn"](slices, workdir)
                best[id(m)] = min(best.get(id(m), float("inf")), time.perf_counter() - t)
        rows = []
        for m in todo:
            fid, note = m["score"](results[id(m)], slices)
            rows.append({"method": m["name"], "input": label, "io": m["io"],
                         "slices_per_s": round(len(slices) / best[id(m)], 1), "mean_iou": round(fid["mean_iou"], 4),
                         "min_iou": round(fid["min_iou"], 4), "missed": fid["missed"], "components": fid["components"],
                         "holes_kept": m["holes"], "note": note})
    for m in methods():
        if "skipped" in m:
            rows.append({"method": m["name"], "input": label, "note": f"skipped: {m['skipped']}"})
    for r in rows:
        if r["method"].startswith("hemo-mtl"):
            others = [o["slices_per_s"] for o in rows if o.get("io") == r["io"] and not o["method"].startswith("hemo-mtl")]
            r["speedup"] = f"{r['slices_per_s'] / max(others):.1f}x" if others else ""
    return rows


def format_table(rows: list[dict]) -> str:
    cols = ["method", "io", "slices_per_s", "speedup", "mean_iou", "min_iou", "missed", "holes_kept", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", choices=("phantom", "synthetic", "both"), default="both")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    for source in ("phantom", "synthetic") if args.source == "both" else (args.source,):
        rows = run(args.slices, args.size, args.seed, source=source, repeats=args.repeats)
        print(f"\n{rows[0]['input']} slices (components: {rows[0]['components']})\n")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
