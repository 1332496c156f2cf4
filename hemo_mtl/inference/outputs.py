"""Per-scan result files: slices.csv, summary.json, mask.nii.gz (or masks/*.png), detections.json, overlay.png,
lesions.csv; on request probabilities.nii.gz, uncertainty.nii.gz and saliency.nii.gz (image folders:
probabilities/*.npz, uncertainty/*.npz, saliency/*.png).

Probability maps have one channel (NIfTI 4th dim, npz last axis) per class of the segmentation head
but background, in ``ScanPrediction.seg_labels`` order and named in the header / the npz ``subtypes``
array: P(EDH) .. P(IVH) for a multiclass head, P(bleed) alone (named ICH) for a binary one. Mask
value 6 (ICH, ``categories.UNKNOWN_SUBTYPE``) is a binary head's bleed; volumes and lesion counts
report it under that name, and ``any`` counts every bleed label.

Probability and uncertainty volumes are stored as uint8 with the NIfTI scale factor 1/255 (``scl_slope``):
nibabel's ``get_fdata``, ITK-SNAP and 3D Slicer read probabilities 0..1 in steps of 1/255, a fifth of the
float32 file; lesions.csv and summary.json are computed from the unrounded maps.

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
from converters.rle import encode_masks
from PIL import Image

from ..atomic import atomic_write_json
from ..categories import LABEL_NAMES, LABELS, SUBTYPES
from .lesions import lesion_table
from .maps import channel_names, entropy_description
from .overlay import COLORS, overlay  # noqa: F401 - COLORS re-exported for callers of this module
from .postprocess import lesion_counts, volumes_ml


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
            rle = encode_masks(m[None])[0]
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": k + 1, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": float(score), "segmentation": rle})
    return results


PROB_SCALE = 1.0 / 255.0


def quantised_nifti(data: np.ndarray, affine, description: str) -> nib.Nifti1Image:
    """[0, 1] floats as a uint8 NIfTI with scl_slope 1/255 (rounded to the nearest step)."""
    q = np.clip(np.rint(np.asarray(data, np.float32) * 255.0), 0, 255).astype(np.uint8)
    img = nib.Nifti1Image(q, affine)
    img.header.set_slope_inter(PROB_SCALE, 0.0)
    img.header["descrip"] = description[:79].encode()
    return img


def uncertainty_summary(pred) -> dict | None:
    """Per-scan uncertainty: mean normalised predictive entropy over the predicted bleed and over the scan."""
    if pred.uncertainty is None:
        return None
    maps = pred.uncertainty if isinstance(pred.uncertainty, list) else [pred.uncertainty]
    masks = pred.mask if isinstance(pred.mask, list) else [pred.mask]
    bleed = np.concatenate([u[m > 0].ravel() for u, m in zip(maps, masks)])
    every = np.concatenate([u.ravel() for u in maps])
    return {"measure": entropy_description(len(pred.seg_labels) + 1),
            "bleed_mean": float(bleed.mean()) if bleed.size else None,
            "bleed_max": float(bleed.max()) if bleed.size else None,
            "scan_mean": float(every.mean()) if every.size else None}


def scan_summary(scan, pred, predictor) -> dict:
    """Patient-level probabilities (``Predictor.patient_probabilities``), predicted subtypes, volumes,
    lesions, provenance."""
    o = predictor.options
    # None when the model has no classification head (valid JSON, unlike NaN)
    p = {name: float(v) if np.isfinite(v) else None
         for name, v in zip(LABELS, predictor.patient_probabilities(pred.cls_prob))}
    labels = pred.seg_labels
    if isinstance(pred.mask, np.ndarray):
        volumes, lesions = volumes_ml(pred.mask, scan.spacing, labels), lesion_counts(pred.mask, labels)
    else:  # unrelated 2D pictures: no spacing, lesions are 2D components per picture
        volumes = None
        per = [lesion_counts(m, labels) for m in pred.mask]
        lesions = {k: sum(c[k] for c in per) for k in ("any", *(LABEL_NAMES[v] for v in labels))}
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
        "uncertainty": uncertainty_summary(pred),
        "members": int(getattr(predictor, "num_members", 1)),
        "patient_window": predictor.patient_window_used,
        "cascade_threshold": predictor.gate_threshold,
        "temperature": getattr(predictor, "applied_temperature", None),
        "slices_gated_off": None if pred.gate_passed is None else int((~pred.gate_passed).sum()),
        "model_sha256": predictor.weights_sha256,
        "config_sha256": predictor.config_sha256,
        "windows": list(predictor.windows),
        "image_size": predictor.image_size,
        "options": dict(vars(o)),
        "coco_image_ids": "slice index + 1",
    }


def mask_file_names(names: list[str]) -> list[str]:
    """masks/ file per slice image, ``<stem>.png`` made a safe path component. Stems are unique: the
    folder reader (``data.io.list_slice_images``) refuses two images of one slice (``1.jpg``, ``1.png``)."""
    from ..paths import safe_component

    return [safe_component(Path(n).stem, "slice") + ".png" for n in names]


def write_scan_outputs(out_dir, scan, pred, predictor, extra_files: dict | None = None) -> dict:
    """Write every output of one scan into ``out_dir`` all at once (temp folder + rename); returns the summary.
    ``extra_files``: {name: write(path)} for further outputs (seg.dcm), written into the same temp folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        summary = scan_summary(scan, pred, predictor)
        slice_table(pred.cls_prob, scan.names, pred.gate_passed).to_csv(tmp / "slices.csv", index=False)
        lesions = lesion_table(pred.mask, scan.spacing, pred.prob, pred.uncertainty, scan.names, pred.seg_labels)
        lesions.to_csv(tmp / "lesions.csv", index=False)
        unc = lesions["uncertainty"].dropna()
        if summary["uncertainty"] is not None:
            summary["uncertainty"]["lesion_max"] = float(unc.max()) if len(unc) else None
        atomic_write_json(tmp / "summary.json", summary)
        atomic_write_json(tmp / "detections.json", coco_results(pred.instances), indent=None)
        names = channel_names(pred.seg_labels)
        if isinstance(pred.mask, np.ndarray):
            nib.save(nib.Nifti1Image(pred.mask.astype(np.uint8), scan.affine), str(tmp / "mask.nii.gz"))
            if pred.prob is not None:
                nib.save(quantised_nifti(pred.prob, scan.affine, "p(" + ",".join(names) + "), 4th dim"),
                         str(tmp / "probabilities.nii.gz"))
            if pred.uncertainty is not None:
                nib.save(quantised_nifti(pred.uncertainty, scan.affine,
                                         f"predictive entropy / log {len(pred.seg_labels) + 1}"),
                         str(tmp / "uncertainty.nii.gz"))
            if pred.saliency is not None:
                nib.save(quantised_nifti(pred.saliency, scan.affine, "Grad-CAM of p(any), 0..1"),
                         str(tmp / "saliency.nii.gz"))
        else:
            if pred.saliency is not None:  # a picture per slice, 0..255 for 0..1, beside its mask's name
                (tmp / "saliency").mkdir()
                for name, m in zip(mask_file_names(scan.names), pred.saliency):
                    Image.fromarray(np.clip(np.rint(m * 255.0), 0, 255).astype(np.uint8)).save(tmp / "saliency" / name)
            for folder, maps in (("probabilities", pred.prob), ("uncertainty", pred.uncertainty)):
                if maps is not None:
                    (tmp / folder).mkdir()
                    for name, m in zip(mask_file_names(scan.names), maps):  # the masks' unique names
                        key = "prob" if folder == "probabilities" else folder
                        np.savez_compressed(tmp / folder / f"{Path(name).stem}.npz", **{key: m.astype(np.float32)},
                                            subtypes=np.array(names))

            (tmp / "masks").mkdir()
            for name, m in zip(mask_file_names(scan.names), pred.mask):
                Image.fromarray(m.astype(np.uint8)).save(tmp / "masks" / name)
        Image.fromarray(overlay(scan, pred, subtype_threshold=predictor.options.subtype_threshold,
                                title=Path(scan.path).name)).save(tmp / "overlay.png", compress_level=1)  # 6 (default) costs ~0.2 s
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
