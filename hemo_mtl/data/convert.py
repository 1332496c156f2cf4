"""Dataset conversion: a source folder -> manifest.csv, splits.json, PNG slices, COCO and YOLO.

The work per patient (reading slices, windowing, writing PNGs, tracing masks) runs in worker
processes; ids are assigned afterwards in manifest order, so N workers write byte-identical files
to one worker. Bad items are skipped and reported, never silently dropped.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_json
from ..categories import LABELS
from .io import DataError, VolumeCache, read_slice, save_png
from .manifest import parse_spacing, rows_to_frame, write_manifest
from .sources import scan_source
from .splits import SPLIT_NAMES, make_splits, save_splits
from .windowing import parse_window, stack_windows

FORMATS = ("manifest", "png", "coco", "yolo", "nnunet")


class ConversionError(RuntimeError):
    """Nothing usable was left, or --strict met a bad item."""


def slice_file_name(patient_id: str, slice_idx: int) -> str:
    return f"{patient_id}_{int(slice_idx):04d}.png"


def render_slice(image: np.ndarray, kind: str, windows, bits: int = 8) -> np.ndarray:
    """The PNG pixels of one slice: windowed 8-bit (1 window -> gray, 3 -> RGB) or 16-bit HU + 32768."""
    if kind == "display":
        return image.astype(np.uint8)
    if bits == 16:
        return np.clip(np.round(image) + 32768, 0, 65535).astype(np.uint16)
    chans = stack_windows(image, windows)
    pix = np.round(chans * 255.0).astype(np.uint8)
    if len(pix) == 1:
        return pix[0]
    if len(pix) == 3:
        return np.ascontiguousarray(pix.transpose(1, 2, 0))
    raise ValueError(f"PNG export takes 1 or 3 windows, got {len(pix)}")


def _patient_job(job: dict) -> dict:
    """Everything one patient needs: PNGs written, COCO instances traced, 3D lesions found."""
    from converters.mask_to_coco import CocoBuilder, MaskToCoco, volume_instances

    cache = VolumeCache(1e9)
    out = {"patient_id": job["patient_id"], "coco": None, "lesions": [], "errors": []}
    builder = CocoBuilder(MaskToCoco(min_area=job["min_area"], seg_format=job["seg_format"])) if job["coco"] else None
    masks = []
    for r in job["rows"]:
        name = slice_file_name(r["patient_id"], r["slice_idx"])
        try:
            image = read_slice(r["image"], r["kind"], cache)
            if job["png"]:
                save_png(render_slice(image, r["kind"], job["windows"], job["bits"]), Path(job["image_dir"]) / name)
            if builder is not None:
                mask = read_slice(r["mask"], "mask", cache) if r["has_mask"] else None
                if mask is not None and mask.shape != image.shape:
                    raise DataError(f"{r['mask']}: mask shape {mask.shape} differs from image {image.shape}")
                image_id = builder.add_image(name, image.shape[0], image.shape[1], patient_id=r["patient_id"],
                                             slice_idx=int(r["slice_idx"]), source=r["source"], has_mask=bool(r["has_mask"]))
                if mask is not None:
                    builder.add_slice(image_id, mask)
                    masks.append((int(r["slice_idx"]), mask))
        except (DataError, ValueError) as exc:
            out["errors"].append({"item": f"{r['image']}", "reason": str(exc)})
    if builder is not None:
        out["coco"] = {"images": builder.images, "annotations": builder.annotations, "report": builder.report.to_dict()}
        if job["per_volume"] and masks and job["spacing"] is not None:
            ks = [k for k, _ in masks]
            if ks == list(range(ks[0], ks[0] + len(ks))):
                vol = np.stack([m for _, m in masks], axis=-1)
                for lesion in volume_instances(vol, job["spacing"]):
                    lesion["slices"] = [lesion["slices"][0] + ks[0], lesion["slices"][1] + ks[0]]
                    out["lesions"].append({"patient_id": job["patient_id"], **lesion})
    return out


def merge_coco_parts(parts: list[dict]) -> tuple[list[dict], list[dict], Counter]:
    """Concatenate per-patient COCO parts, renumbering image and annotation ids from 1 in order."""
    images, annotations, counts = [], [], Counter()
    for part in parts:
        offset_img = len(images)
        remap = {}
        for img in part["images"]:
            new = dict(img, id=offset_img + len(remap) + 1)
            remap[img["id"]] = new["id"]
            images.append(new)
        for ann in part["annotations"]:
            annotations.append(dict(ann, id=len(annotations) + 1, image_id=remap[ann["image_id"]]))
        for key in ("polygons", "rles"):
            counts[key] += part["report"].get(key, 0)
        counts["below_min_area"] += len(part["report"].get("below_min_area", []))
    return images, annotations, counts


def convert_dataset(
    source: str,
    input_path,
    out_dir,
    window="brain",
    split_seed: int = 32,
    val: float = 0.1,
    test: float = 0.2,
    folds: int = 0,
    formats=("manifest",),
    strict: bool = False,
    workers: int = 1,
    bits: int = 8,
    seg_format: str = "auto",
    min_area: int = 1,
    per_volume: bool = False,
    progress: bool = True,
    nnunet_channels: str = "hu",
) -> dict:
    """Convert one dataset; returns the report that is also written as conversion_report.json."""
    start = time.perf_counter()
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {FORMATS}")
    windows = [w.strip() for w in window.split(",")] if isinstance(window, str) else list(window)
    for w in windows:
        parse_window(w)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_source(source, input_path)
    if strict and scan.skipped:
        raise ConversionError(f"--strict: {len(scan.skipped)} bad item(s), first: {scan.skipped[0]['item']}: {scan.skipped[0]['reason']}")
    if not scan.rows:
        raise ConversionError(f"{input_path}: nothing usable found ({len(scan.skipped)} item(s) skipped)")
    frame = rows_to_frame(scan.rows).sort_values(["patient_id", "study_id", "slice_idx"], kind="stable").reset_index(drop=True)
    splits = make_splits(frame, seed=split_seed, val=val, test=test, folds=folds)
    save_splits(splits, out_dir / "splits.json")
    write_manifest(frame, out_dir / "manifest.csv")
    split_of = {pid: name for name in SPLIT_NAMES for pid in splits[name]}

    skipped = list(scan.skipped)
    exports = {}
    if {"png", "coco", "yolo"} & set(formats):
        exports = _export(frame, scan, split_of, out_dir, windows, formats, workers, bits, seg_format,
                          min_area, per_volume, split_seed, source, progress)
        skipped += exports.pop("errors")
    if "nnunet" in formats:  # HU volumes: the windows name the channels only with nnunet_channels="windows"
        from converters.nnunet import export_nnunet

        exports["nnunet"] = export_nnunet(frame, splits, out_dir, name=source, windows=windows,
                                          channels=nnunet_channels, source=source)
        skipped += exports["nnunet"]["skipped"]
    report = _report(frame, splits, split_of, scan, skipped, source, input_path, windows, formats, exports)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["slices_per_second"] = round(len(frame) / max(report["seconds"], 1e-9), 1)
    atomic_write_json(out_dir / "conversion_report.json", report)
    for item in skipped:
        print(f"skipped: {item['item']}: {item['reason']}", file=sys.stderr)
    if strict and skipped:
        raise ConversionError(f"--strict: {len(skipped)} bad item(s)")
    return report


def _export(frame, scan, split_of, out_dir, windows, formats, workers, bits, seg_format, min_area,
            per_volume, split_seed, source, progress) -> dict:
    from tqdm import tqdm

    want_coco = "coco" in formats or "yolo" in formats
    jobs = []
    for pid, rows in frame.groupby("patient_id", sort=True):
        split = split_of[pid]
        spacing = parse_spacing(rows["spacing"].iloc[0])
        jobs.append({
            "patient_id": pid,
            "rows": rows.to_dict("records"),
            "png": "png" in formats or "coco" in formats or "yolo" in formats,
            "coco": want_coco,
            "image_dir": str(out_dir / "images" / split),
            "windows": windows,
            "bits": bits,
            "min_area": min_area,
            "seg_format": seg_format,
            "per_volume": per_volume,
            "spacing": spacing,
        })
    bar = dict(total=len(jobs), desc="patients", unit="patient", disable=not progress, file=sys.stderr)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_patient_job, jobs, chunksize=1), **bar))
    else:
        results = [_patient_job(j) for j in tqdm(jobs, **bar)]
    errors = [e for r in results for e in r["errors"]]
    out = {"errors": errors, "coco": {}, "yolo": None}
    if not want_coco:
        return out
    from converters.mask_to_coco import make_info

    window_text = ",".join(windows) if bits == 8 else "none (16-bit HU + 32768)"
    coco_files = {}
    for split in SPLIT_NAMES:
        parts = [r["coco"] for r in results if split_of[r["patient_id"]] == split]
        if not parts:
            continue
        images, annotations, counts = merge_coco_parts(parts)
        from hemo_mtl.categories import coco_categories

        coco = {
            "info": make_info(source, window=window_text, split_seed=split_seed, split=split),
            "licenses": scan.licenses,
            "categories": coco_categories(),
            "images": images,
            "annotations": annotations,
        }
        path = out_dir / "annotations" / f"instances_{split}.json"
        atomic_write_json(path, coco, indent=None)
        coco_files[split] = path
        out["coco"][split] = {"images": len(images), "annotations": len(annotations),
                              "negative_images": len(images) - len({a["image_id"] for a in annotations}), **counts}
        if per_volume:
            lesions = [l for r in results if split_of[r["patient_id"]] == split for l in r["lesions"]]
            atomic_write_json(out_dir / "annotations" / f"lesions_{split}.json", {"lesions": lesions}, indent=None)
            out["coco"][split]["lesions_3d"] = len(lesions)
    if "yolo" in formats:
        from converters.coco_to_yolo import write_yolo_tree

        out["yolo"] = write_yolo_tree({s: (p, out_dir / "images" / s) for s, p in coco_files.items()}, out_dir / "yolo")
    return out


def _report(frame, splits, split_of, scan, skipped, source, input_path, windows, formats, exports) -> dict:
    frame = frame.assign(split=frame["patient_id"].map(split_of))
    counts = {}
    for split in ("all",) + SPLIT_NAMES:
        sub = frame if split == "all" else frame[frame["split"] == split]
        per = {"patients": int(sub["patient_id"].nunique()), "slices": int(len(sub))}
        for label in LABELS:
            known = sub[label].notna()
            per[f"slices_{label}"] = int(sub.loc[known, label].sum())
            per[f"patients_{label}"] = int(sub.loc[known & (sub[label] == 1), "patient_id"].nunique())
        per["slices_with_mask"] = int(sub["has_mask"].sum())
        per["slices_with_cls"] = int(sub["has_cls"].sum())
        counts[split] = per
    return {
        "hemo_mtl_version": __version__,
        "source": source,
        "input": str(Path(input_path).resolve()),
        "windows": windows,
        "formats": list(formats),
        "split_seed": splits["seed"],
        "counts": counts,
        "skipped": skipped,
        "n_skipped": len(skipped),
        "notes": scan.notes,
        "exports": exports,
    }
