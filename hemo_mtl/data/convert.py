"""Dataset conversion: a source folder -> manifest.csv, splits.json, PNG slices, COCO and YOLO.

The work per patient (reading slices, windowing, writing PNGs, tracing masks) runs in worker
processes; ids are assigned afterwards in manifest order, so N workers write byte-identical files
to one worker. Bad items are skipped and reported, never silently dropped.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_write_json
from ..categories import LABELS
from ..paths import confined, safe_component
from .io import DataError, VolumeCache, read_slice, save_png
from .manifest import parse_spacing, rows_to_frame, write_manifest
from .sources import scan_source
from .splits import SPLIT_NAMES, make_splits, save_splits
from .windowing import parse_window_list, stack_windows

FORMATS = ("manifest", "png", "coco", "yolo", "nnunet")


class ConversionError(RuntimeError):
    """Nothing usable was left, or --strict met a bad item."""


def _name_part(value) -> str:
    """A file-name component from an id: ``paths.safe_component``, plus a short hash of the raw value
    when cleaning changed it, so two ids that clean alike (``a/b``, ``a_b``) never share a file."""
    text = str(value)
    safe = safe_component(text)
    return safe if safe == text else f"{safe}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:8]}"


def slice_file_name(patient_id: str, slice_idx: int, study_id: str | None = None) -> str:
    """``<patient>_<slice>.png``, or ``<patient>_<study>_<slice>.png`` when the study id is its own
    (several studies or series of one patient), never a path: ids are read from input files."""
    parts = [_name_part(patient_id)]
    if study_id is not None and str(study_id) not in ("", "nan", str(patient_id)):
        parts.append(_name_part(study_id))
    return "_".join(parts) + f"_{int(slice_idx):04d}.png"


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
        name = slice_file_name(r["patient_id"], r["slice_idx"], r.get("study_id"))
        try:
            image = read_slice(r["image"], r["kind"], cache)
            if job["png"]:
                save_png(render_slice(image, r["kind"], job["windows"], job["bits"]), confined(job["image_dir"], name))
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
            reason = str(exc)
            out["errors"].append({"item": r["image"], "reason": reason.removeprefix(f"{r['image']}: ")})
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
        counts["unknown_subtype_images"] += len(part["report"].get("unknown_subtype", []))
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
    overwrite: bool = False,
    nnunet_channels: str = "hu",
) -> dict:
    """Convert one dataset; returns the report that is also written as conversion_report.json.

    Everything is built in a hidden sibling of ``out_dir`` and moved into place at the end, so a
    crash never leaves a half-written output and a rerun never mixes with an earlier one: a non-empty
    ``out_dir`` is refused unless ``overwrite`` (and then only if it holds an earlier conversion).
    The report's ``n_failed_exports`` counts manifest slices whose PNG/COCO export failed.
    """
    start = time.perf_counter()
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {FORMATS}")
    windows = parse_window_list(window)
    if bits == 8 and {"png", "coco", "yolo"} & set(formats) and len(windows) not in (1, 3):
        raise ValueError(f"--window {','.join(windows)}: an 8-bit PNG takes 1 window (grey) or 3 (RGB), got {len(windows)}")
    out_dir = Path(out_dir)
    _check_output(out_dir, input_path, overwrite)
    scan = scan_source(source, input_path)
    if strict and scan.skipped:
        raise ConversionError(f"--strict: {len(scan.skipped)} bad item(s), first: {scan.skipped[0]['item']}: {scan.skipped[0]['reason']}")
    if not scan.rows:
        raise ConversionError(f"{input_path}: nothing usable found ({len(scan.skipped)} item(s) skipped)")
    frame = rows_to_frame(scan.rows).sort_values(["patient_id", "study_id", "slice_idx"], kind="stable").reset_index(drop=True)
    names = [slice_file_name(p, k, s) for p, k, s in zip(frame["patient_id"], frame["slice_idx"], frame["study_id"])]
    repeated = Counter(names) - Counter(set(names))
    if repeated:
        name = next(iter(repeated))
        raise ConversionError(f"{input_path}: {sum(repeated.values()) + len(repeated)} manifest rows would share "
                              f"output names (first: {name}); patient/study/slice must be unique")
    splits = make_splits(frame, seed=split_seed, val=val, test=test, folds=folds)
    split_of = {pid: name for name in SPLIT_NAMES for pid in splits[name]}
    with staged_dir(out_dir) as work:
        save_splits(splits, work / "splits.json")
        write_manifest(frame, work / "manifest.csv")
        skipped = list(scan.skipped)
        exports, failed = {}, []
        if {"png", "coco", "yolo"} & set(formats):
            exports = _export(frame, scan, split_of, work, windows, formats, workers, bits, seg_format,
                              min_area, per_volume, split_seed, source, progress)
            failed = exports.pop("errors")
            skipped += failed
            if exports.get("yolo"):
                _relocate_yolo(work / "yolo", out_dir / "yolo")
                exports["yolo"] = _relocate(exports["yolo"], str(work.resolve()), str(out_dir.resolve()))
        if "nnunet" in formats:  # HU volumes: the windows name the channels only with nnunet_channels="windows"
            from converters.nnunet import export_nnunet

            exports["nnunet"] = export_nnunet(frame, splits, work, name=source, windows=windows,
                                              channels=nnunet_channels, source=source)
            skipped += exports["nnunet"]["skipped"]
        if strict and skipped:
            raise ConversionError(f"--strict: {len(skipped)} bad item(s), first: {skipped[0]['item']}: {skipped[0]['reason']}")
        report = _report(frame, splits, split_of, scan, skipped, source, input_path, windows, formats, exports)
        report["n_failed_exports"] = len(failed)
        report["seconds"] = round(time.perf_counter() - start, 3)
        report["slices_per_second"] = round(len(frame) / max(report["seconds"], 1e-9), 1)
        atomic_write_json(work / "conversion_report.json", report)
    for item in skipped:
        print(f"skipped: {item['item']}: {item['reason']}", file=sys.stderr)
    return report


# Files that mark a folder as an earlier conversion output, the only kind --overwrite replaces.
OUTPUT_MARKERS = ("conversion_report.json", "manifest.csv")


def _check_output(out_dir: Path, input_path, overwrite: bool) -> None:
    """Refuse an output folder that a conversion must not fill or replace, before any work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: --out exists and is not a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise ConversionError(f"{out_dir}: --out is not empty; pass --overwrite to replace an earlier conversion there")
    if not any((out_dir / m).is_file() for m in OUTPUT_MARKERS):
        raise ConversionError(f"{out_dir}: --overwrite replaces only an earlier conversion (a folder with "
                              f"{' or '.join(OUTPUT_MARKERS)}); this one holds other files")
    src, out = Path(input_path).resolve(), out_dir.resolve()
    if src == out or out in src.parents:
        raise ConversionError(f"{out_dir}: --out holds the input {input_path}; --overwrite would delete it")
    if out == Path.cwd().resolve() or out in Path.cwd().resolve().parents:
        raise ConversionError(f"{out_dir}: --out is the current folder (or holds it); --overwrite would delete it")


@contextmanager
def staged_dir(final: Path):
    """Yield a fresh hidden sibling of ``final`` to build in; on success it replaces ``final``.

    The swap is two renames (old aside, new in place) and then the old tree is deleted; a crash
    between them leaves the previous output whole beside ``final`` as ``.<name>.old-*``. On failure
    the staging folder is removed and ``final`` is untouched.
    """
    final = Path(final).resolve()  # '--out .' names the folder itself, so its sibling can be made
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    os.chmod(work, 0o755)  # mkdtemp makes 0700; outputs are meant to be read by others
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(work, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _relocate(obj, old: str, new: str):
    """Strings in a json-ready report that start with the staging path, pointed at the final one."""
    if isinstance(obj, dict):
        return {k: _relocate(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocate(v, old, new) for v in obj]
    if isinstance(obj, str) and obj.startswith(old):
        return new + obj[len(old):]
    return obj


def _relocate_yolo(root: Path, final_root: Path) -> None:
    """data.yaml holds its tree's absolute path (ultralytics needs it): point it at the final folder."""
    import yaml

    from ..atomic import atomic_write_text

    path = root / "data.yaml"
    data = yaml.safe_load(path.read_text())
    data["path"] = str(final_root.resolve())
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


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
        annotated = {a["image_id"] for a in annotations}
        negatives = sum(1 for i in images if i["id"] not in annotated and not i.get("unknown_subtype_pixels"))
        out["coco"][split] = {"images": len(images), "annotations": len(annotations),
                              "negative_images": negatives, **counts}
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
