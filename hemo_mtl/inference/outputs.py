"""Per-scan result files: slices.csv, summary.json, mask.nii.gz (or masks/*.png), detections.json, overlay.png.

All files of a scan are written into a temp folder beside the final one, which is then renamed into
place: a crash or a bad scan never leaves a half set of outputs under the scan's name.
COCO image ids follow the converters: slice k of a scan is image ``k + 1`` (a single-scan export,
one image per slice in slice order, ids from 1).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
from pycocotools import mask as mask_utils

from ..atomic import atomic_write_json
from ..categories import LABELS, SUBTYPES
from ..data.windowing import window_hu
from .postprocess import contours, lesion_counts, volumes_ml

# one colour per subtype 1..5 (EDH, SDH, SAH, IPH, IVH), as hemo_mtl.engine.visualize.COLORS
COLORS = np.array([[0xE6, 0x19, 0x4B], [0x3C, 0xB4, 0x4B], [0xFF, 0xE1, 0x19], [0x43, 0x63, 0xD8],
                   [0xF5, 0x82, 0x31]], dtype=np.uint8)


def slice_table(cls_prob: np.ndarray, names: list[str] | None = None, gate: np.ndarray | None = None) -> pd.DataFrame:
    table = pd.DataFrame(cls_prob, columns=[f"p_{name}" for name in LABELS])
    table.insert(0, "slice_idx", np.arange(len(cls_prob)))
    table.insert(1, "image_id", np.arange(len(cls_prob)) + 1)
    if names is not None:
        table.insert(2, "file", names)
    if gate is not None:
        table["gate_passed"] = gate.astype(int)
    return table


def coco_results(instances: list[dict]) -> list[dict]:
    """COCO results format (image_id = slice index + 1, bbox xywh, RLE masks on the slice size)."""
    results = []
    for k, inst in enumerate(instances):
        for box, label, score, m in zip(inst["boxes"], inst["labels"], inst["scores"], inst["masks"]):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": k + 1, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score), "segmentation": rle})
    return results


def scan_summary(scan, pred, predictor) -> dict:
    """Patient-level probabilities (max over slices), predicted subtypes, volumes, lesions, provenance."""
    o = predictor.options
    # max over slices; None when the model has no classification head (valid JSON, unlike NaN)
    finite = np.isfinite(pred.cls_prob)
    p = {name: float(pred.cls_prob[finite[:, i], i].max()) if finite[:, i].any() else None
         for i, name in enumerate(LABELS)}
    if isinstance(pred.mask, np.ndarray):
        volumes, lesions = volumes_ml(pred.mask, scan.spacing), lesion_counts(pred.mask)
    else:  # unrelated 2D pictures: no spacing, lesions are 2D components per picture
        volumes = None
        per = [lesion_counts(m) for m in pred.mask]
        lesions = {k: sum(c[k] for c in per) for k in ("any", *SUBTYPES)}
    return {
        "input": scan.path,
        "kind": scan.kind,
        "num_slices": scan.num_slices,
        "shape": list(scan.slices.shape) if isinstance(scan.slices, np.ndarray) else None,
        "spacing_mm": list(scan.spacing) if scan.spacing else None,
        "probabilities": p,
        "predicted_subtypes": [s for s in SUBTYPES if p[s] is not None and p[s] >= o.subtype_threshold],
        "hemorrhage": None if p["any"] is None else bool(p["any"] >= o.subtype_threshold),
        "volume_ml": volumes,
        "lesions": lesions,
        "detections": int(sum(len(i["boxes"]) for i in pred.instances)),
        "cascade_threshold": predictor.gate_threshold,
        "slices_gated_off": None if pred.gate_passed is None else int((~pred.gate_passed).sum()),
        "model_sha256": predictor.weights_sha256,
        "config_sha256": predictor.config_sha256,
        "windows": list(predictor.windows),
        "image_size": predictor.image_size,
        "options": dict(vars(o)),
        "coco_image_ids": "slice index + 1",
    }


def _gray(scan, k: int) -> np.ndarray:
    if scan.kind == "hu":
        return (window_hu(scan.slices[:, :, k], 40.0, 80.0) * 255).astype(np.uint8)
    return scan.slices[k]


def overlay(scan, pred, max_tiles: int = 16, tile: int = 256) -> np.ndarray:
    """(H, W, 3) uint8 montage: slices with predicted bleed (else the highest p(any)), contours coloured
    by subtype."""
    masks = [pred.mask[:, :, k] for k in range(pred.mask.shape[2])] if isinstance(pred.mask, np.ndarray) else pred.mask
    with_bleed = [k for k, m in enumerate(masks) if m.any()]
    order = with_bleed or list(np.argsort(-np.nan_to_num(pred.cls_prob[:, 0]), kind="stable"))
    chosen = sorted(int(k) for k in order[:max_tiles])
    tiles = []
    for k in chosen:
        rgb = np.repeat(_gray(scan, k)[..., None], 3, axis=2)
        if masks[k].any():  # an empty slice has no contour: skip the two 3x3 filters
            edge = contours(masks[k])
            rgb[edge > 0] = COLORS[edge[edge > 0] - 1]
        tiles.append(np.asarray(Image.fromarray(rgb).resize((tile, tile), Image.NEAREST)))
    cols = min(4, len(tiles)) or 1
    rows = max(1, -(-len(tiles) // cols))
    canvas = np.zeros((rows * tile, cols * tile, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    return canvas


def write_scan_outputs(out_dir, scan, pred, predictor, extra_files: dict | None = None) -> dict:
    """Write every output of one scan into ``out_dir`` all at once (temp folder + rename); returns the summary.
    ``extra_files``: {name: write(path)} for further outputs (seg.dcm), written into the same temp folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        summary = scan_summary(scan, pred, predictor)
        slice_table(pred.cls_prob, scan.names, pred.gate_passed).to_csv(tmp / "slices.csv", index=False)
        atomic_write_json(tmp / "summary.json", summary)
        atomic_write_json(tmp / "detections.json", coco_results(pred.instances), indent=None)
        if isinstance(pred.mask, np.ndarray):
            nib.save(nib.Nifti1Image(pred.mask.astype(np.uint8), scan.affine), str(tmp / "mask.nii.gz"))
        else:
            (tmp / "masks").mkdir()
            for name, m in zip(scan.names, pred.mask):
                Image.fromarray(m.astype(np.uint8)).save(tmp / "masks" / f"{Path(name).stem}.png")
        Image.fromarray(overlay(scan, pred)).save(tmp / "overlay.png", compress_level=1)  # 6 (default) costs ~0.2 s
        for name, write in (extra_files or {}).items():
            write(tmp / name)
        os.chmod(tmp, 0o755)
        if out_dir.exists():  # swap: the old outputs leave only once the new ones are complete
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "x")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
