#!/usr/bin/env python
"""Evaluate prediction files from any model and write metrics.json, report.md and plots.

    python tools/evaluate.py --task cls --gt slice_labels.csv --pred probs.csv --out DIR
    python tools/evaluate.py --task det --gt instances.json --pred results.json --out DIR
    python tools/evaluate.py --task seg --gt-masks DIR --pred-masks DIR --out DIR

cls: both CSVs keyed by ``patient_id,slice_idx`` with one column per label ``any,EDH,SDH,SAH,IPH,IVH``
(truth 0/1, empty = unknown; predictions = probabilities). det: COCO instances json and COCO
results json, the ground truth checked with converters.validation (the rules of
``tools/convert.py --validate``; box-only annotations allowed). seg: label masks (0..5) as NIfTI
(.nii/.nii.gz; voxel spacing from the affine, as predict measures volumes) or PNG, matched by file name. Ground truth without a prediction is reported and counted as a miss; a
prediction without ground truth, NaN probabilities or wrong shapes stop with one line on stderr and
exit code 2. Installed as the console command ``hemo-mtl-evaluate``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hemo_mtl.categories import LABELS
from hemo_mtl.cli_errors import run_main
from hemo_mtl.evaluation import (CONVENTIONS, classification_metrics, coco_metrics, confusion_counts,
                                 froc_2d, hd95_per_label, segmentation_metrics, subtype_known,
                                 tune_thresholds, volume_table, write_report)
from hemo_mtl.evaluation.detection import check_results

KEYS = ("patient_id", "slice_idx")
MASK_SUFFIXES = (".nii.gz", ".nii", ".png")


class InputError(ValueError):
    """Bad input files: printed as one line, exit code 2."""


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------- cls


def read_label_csv(path: Path, kind: str):
    """CSV -> DataFrame indexed by (patient_id, slice_idx) with the six label columns (float, NaN = empty)."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    df = pd.read_csv(path, dtype={"patient_id": str}, skipinitialspace=True)
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in (*KEYS, *LABELS) if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join((*KEYS, *LABELS))})")
    idx = pd.to_numeric(df["slice_idx"], errors="coerce")
    bad = idx.isna() | (idx != idx.round())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} row {row + 2}: slice_idx {df['slice_idx'].iloc[row]!r} is not an integer")
    if df["patient_id"].isna().any():
        raise InputError(f"{path} row {int(np.flatnonzero(df['patient_id'].isna())[0]) + 2}: empty patient_id")
    df["slice_idx"] = idx.astype(int)
    dup = df.duplicated(list(KEYS))
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise InputError(f"{path} row {row + 2}: duplicate key ({df['patient_id'].iloc[row]}, "
                         f"{df['slice_idx'].iloc[row]})")
    values = df[list(LABELS)].apply(pd.to_numeric, errors="coerce")
    text_bad = values.isna() & df[list(LABELS)].notna()
    if text_bad.any().any():
        r, c = np.argwhere(text_bad.to_numpy())[0]
        raise InputError(f"{path} row {r + 2} column {LABELS[c]}: {df[LABELS[c]].iloc[r]!r} is not a number")
    arr = values.to_numpy(np.float64)
    if kind == "ground truth":
        bad = ~np.isnan(arr) & ~np.isin(arr, (0.0, 1.0))
        what = "expected 0, 1 or empty"
    else:
        bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
        what = "expected a probability in [0, 1]"
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise InputError(f"{path} row {r + 2} column {LABELS[c]}: {arr[r, c]!r}; {what}")
    out = pd.DataFrame(arr, columns=list(LABELS))
    out.index = pd.MultiIndex.from_frame(df[list(KEYS)])
    return out


def align_predictions(gt, pred, gt_path: Path, pred_path: Path):
    """(y, p, valid, patient_ids, n_missing); unknown prediction ids stop, missing ones are misses."""
    extra = pred.index.difference(gt.index)
    if len(extra):
        pid, sl = extra[0]
        raise InputError(f"{pred_path}: {len(extra)} prediction row(s) have no ground truth in {gt_path}, "
                         f"e.g. patient_id={pid} slice_idx={sl}")
    missing = gt.index.difference(pred.index)
    if len(missing):
        pid, sl = missing[0]
        warn(f"{len(missing)} of {len(gt)} slices in {gt_path} have no prediction in {pred_path} "
             f"(e.g. patient_id={pid} slice_idx={sl}); counted as misses (probability 0)")
    p = pred.reindex(gt.index).fillna(0.0).to_numpy()
    y = gt.to_numpy()
    valid = ~np.isnan(y)
    return np.nan_to_num(y), p, valid, gt.index.get_level_values(0).to_numpy(), len(missing)


def run_cls(args) -> tuple[dict, dict, list[str]]:
    gt = read_label_csv(Path(args.gt), "ground truth")
    pred = read_label_csv(Path(args.pred), "predictions")
    y, p, valid, pids, n_missing = align_predictions(gt, pred, Path(args.gt), Path(args.pred))
    tuned = temperature = None
    notes = [f"ground truth: {args.gt} ({len(gt)} slices, {len(set(pids))} patients)",
             f"predictions: {args.pred}; {n_missing} slice(s) without a prediction counted as misses",
             f"patient aggregation: {args.aggregation}" + (f" (top {args.top_k})" if args.aggregation == "topk" else "")]
    if args.val_gt or args.val_pred:
        if not (args.val_gt and args.val_pred):
            raise InputError("--val-gt and --val-pred go together")
        vgt = read_label_csv(Path(args.val_gt), "ground truth")
        vpred = read_label_csv(Path(args.val_pred), "predictions")
        vy, vp, vv, vpids, _ = align_predictions(vgt, vpred, Path(args.val_gt), Path(args.val_pred))
        tuned = tune_thresholds(vy, vp, vv, vpids, method=args.threshold_method, target=args.target_sensitivity,
                                aggregation=args.aggregation, top_k=args.top_k)
        notes.append(f"@tuned thresholds: {args.threshold_method} on {args.val_gt}")
        if args.temperature_scaling:
            from hemo_mtl.evaluation.calibration import fit_temperature

            temperature = fit_temperature(vy, vp, vv)
            notes.append(f"@calibrated: temperature scaling fitted on {args.val_pred}: T = "
                         + ", ".join(f"{l} {t:.3f}" for l, t in zip(LABELS, temperature)))
    elif args.temperature_scaling:
        raise InputError("--temperature-scaling fits on the validation split: give --val-gt and --val-pred")
    metrics = classification_metrics(y, p, valid, pids, aggregation=args.aggregation, top_k=args.top_k,
                                     tuned=tuned, n_bootstrap=args.bootstrap, seed=args.seed,
                                     temperature=temperature)
    metrics["cls/all/n_missing_predictions"] = float(n_missing)
    if args.bootstrap:
        notes.append(f"bootstrap: {args.bootstrap} patient resamples, seed {args.seed}")
    details = {"cls": {"y_true": y, "y_prob": p, "valid": valid, "patient_ids": pids, "temperature": temperature,
                       "aggregation": args.aggregation, "top_k": args.top_k}}
    return metrics, details, notes


# ---------------------------------------------------------------------------------------- det


def _read_json(path: Path, kind: str):
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply to read") from None


def check_coco_gt(gt, path: Path) -> None:
    """The validator's errors stop the evaluation (a duplicated lesion would lower AP, a duplicated
    image id would merge two slices); its warnings are printed."""
    from converters.validation import validate_coco

    box_only = isinstance(gt, dict) and isinstance(gt.get("annotations"), list) and not any(
        isinstance(a, dict) and "segmentation" in a for a in gt["annotations"])
    report = validate_coco(gt, source=str(path), require_segmentation=not box_only)
    if report.errors:
        more = f" (and {len(report.errors) - 1} more; tools/convert.py --validate lists them)" if len(report.errors) > 1 else ""
        first = report.errors[0]
        raise InputError(f"{path}: {first.where}: {first.message} [{first.code}]{more}")
    if report.warnings:
        codes = ", ".join(sorted({p.code for p in report.warnings}))
        warn(f"{path}: {len(report.warnings)} COCO warning(s) ({codes}), e.g. {report.warnings[0].where}: "
             f"{report.warnings[0].message}")
    for i, a in enumerate(gt["annotations"]):
        if "area" not in a:  # COCOeval's area ranges read it
            raise InputError(f"{path} annotation id {a['id']}: missing 'area'")
        a.setdefault("iscrowd", 0)


def run_det(args) -> tuple[dict, dict, list[str]]:
    gt_path, pred_path = Path(args.gt), Path(args.pred)
    gt = _read_json(gt_path, "ground truth")
    results = _read_json(pred_path, "predictions")
    check_coco_gt(gt, gt_path)
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise InputError(f"{pred_path}: COCO results must be a list of {{image_id, category_id, bbox, score}}")
    try:
        check_results(gt, results, "bbox")
    except ValueError as e:
        raise InputError(f"{pred_path}: {e}") from None
    iou_types = ["bbox"]
    has_segm = (all("segmentation" in a for a in gt["annotations"]) and gt["annotations"]
                and all("segmentation" in r for r in results))
    if args.iou_type in ("segm", "both") or (args.iou_type == "auto" and has_segm):
        iou_types = ["bbox", "segm"] if args.iou_type != "segm" else ["segm"]
    metrics: dict[str, float] = {}
    for t in iou_types:
        metrics.update(coco_metrics(gt, results, t, engine=args.engine))
    froc, curves = froc_2d(gt, results, iou_threshold=args.froc_iou, criterion=args.froc_criterion,
                           return_curves=True)
    metrics.update(froc)
    with_pred = {r["image_id"] for r in results}
    n_without = sum(im["id"] not in with_pred for im in gt["images"])
    metrics["det/all/n_images"] = float(len(gt["images"]))
    metrics["det/all/n_images_without_predictions"] = float(n_without)
    notes = [f"ground truth: {gt_path} ({len(gt['images'])} images, {len(gt['annotations'])} annotations)",
             f"predictions: {pred_path} ({len(results)} detections; {n_without} image(s) without any, "
             f"their lesions count as misses)",
             f"COCO engine: {args.engine}; IoU types: {', '.join(iou_types)}",
             f"FROC hit criterion: {args.froc_criterion}" + (f" (IoU >= {args.froc_iou})" if args.froc_criterion == "iou" else "")]
    return metrics, {"froc": {"2d": curves["all"]}}, notes


# ---------------------------------------------------------------------------------------- seg


def _mask_key(path: Path) -> str | None:
    name = path.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def list_masks(folder: Path, kind: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{kind} mask folder not found: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        key = _mask_key(p)
        if key is None or not p.is_file():
            continue
        if key in out:
            raise InputError(f"{folder}: two {kind} masks named {key!r} ({out[key].name}, {p.name})")
        out[key] = p
    if not out:
        raise InputError(f"{folder}: no {kind} masks (.nii, .nii.gz or .png)")
    return out


def read_mask(path: Path) -> tuple[np.ndarray, tuple[float, float, float] | None, np.ndarray | None]:
    """Label mask as (X, Y, Z) int64 (PNG: (H, W, 1)), voxel spacing in mm and affine (None for PNG)."""
    if path.name.lower().endswith(".png"):
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError(f"{path}: cannot read as PNG")
        if arr.ndim != 2:
            raise InputError(f"{path}: a label mask PNG must be single-channel, got shape {arr.shape}")
        data, spacing, affine = arr[:, :, None], None, None
    else:  # the reader and the voxel spacing (affine column lengths) predict uses
        from hemo_mtl.data.io import load_nifti

        vol = load_nifti(path, dtype=np.float64)
        data, spacing, affine = vol.data, vol.spacing, vol.affine
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(f"{path}: the affine gives voxel spacing {spacing}: no volumes can be measured")
    if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
        raise InputError(f"{path}: label masks must hold integers 0..5")
    data = data.astype(np.int64)
    if data.size and (data.min() < 0 or data.max() > 5):
        raise InputError(f"{path}: labels must be 0..5 (0 background, 1 EDH .. 5 IVH), found {data.min()}..{data.max()}")
    return data, spacing, affine


def run_seg(args) -> tuple[dict, dict, list[str]]:
    gt_dir, pred_dir = Path(args.gt_masks), Path(args.pred_masks)
    gts, preds = list_masks(gt_dir, "ground-truth"), list_masks(pred_dir, "predicted")
    extra = sorted(set(preds) - set(gts))
    if extra:
        raise InputError(f"{pred_dir}: {len(extra)} predicted mask(s) have no ground truth in {gt_dir}, "
                         f"e.g. {preds[extra[0]].name}")
    missing = sorted(set(gts) - set(preds))
    if missing:
        warn(f"{len(missing)} of {len(gts)} ground-truth masks have no prediction in {pred_dir} "
             f"(e.g. {gts[missing[0]].name}); counted as misses (empty prediction)")
    counts, volume_ids, voxel_ml, known = [], [], [], []
    hd95: dict[str, list[float]] = {}
    any_png = False
    for key, gpath in gts.items():
        g, spacing, affine = read_mask(gpath)
        if key in preds:
            p, _, p_affine = read_mask(preds[key])
            if p.shape != g.shape:
                raise InputError(f"{preds[key]}: shape {p.shape} differs from the ground truth {gpath.name} {g.shape}")
            if affine is not None and p_affine is not None and not np.allclose(affine, p_affine, atol=1e-3):
                warn(f"{preds[key]}: affine differs from the ground truth {gpath.name}; voxels compared as stored")
        else:
            p = np.zeros_like(g)
        c = confusion_counts(np.moveaxis(g, -1, 0), np.moveaxis(p, -1, 0))  # slices along Z
        counts.append(c)
        known.append(subtype_known(np.moveaxis(g, -1, 0)))  # truth value 6: bleed of unknown subtype
        volume_ids += [key] * len(c)
        any_png |= spacing is None
        voxel_ml += [np.prod(spacing) / 1000.0 if spacing else np.nan] * len(c)
        if args.hd95:
            for label, d in hd95_per_label(g, p, spacing).items():
                hd95.setdefault(label, []).append(d)
    counts, known = np.concatenate(counts), np.concatenate(known)
    volumes = None if any_png else volume_ids
    ml = np.asarray(voxel_ml) if not any_png else None
    metrics = segmentation_metrics(counts, volumes, ml, hd95 or None, slice_subtype_known=known)
    metrics["seg/all/n_missing_predictions"] = float(len(missing))
    details = {"volumes": volume_table(counts, volume_ids, ml, known)} if ml is not None else {}
    notes = [f"ground truth: {gt_dir} ({len(gts)} files, {len(counts)} slices); predictions: {pred_dir}",
             f"{len(missing)} file(s) without a prediction scored as empty predictions"]
    if any_png:
        notes.append("PNG masks carry no spacing or volume grouping: slice-level keys only")
    return metrics, details, notes


# --------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, choices=("cls", "det", "seg"))
    ap.add_argument("--out", required=True, help="output folder (metrics.json, report.md, plots)")
    ap.add_argument("--gt", help="cls: slice_labels.csv; det: COCO instances.json")
    ap.add_argument("--pred", help="cls: probs.csv; det: COCO results.json")
    ap.add_argument("--gt-masks", help="seg: folder of ground-truth label masks")
    ap.add_argument("--pred-masks", help="seg: folder of predicted label masks")
    g = ap.add_argument_group("cls")
    g.add_argument("--aggregation", default="max", choices=("max", "mean", "topk"), help="patient score")
    g.add_argument("--top-k", type=int, default=3)
    g.add_argument("--val-gt", help="validation truth CSV: choose @tuned thresholds on it")
    g.add_argument("--val-pred", help="validation predictions CSV")
    g.add_argument("--threshold-method", default="youden", choices=("youden", "sensitivity"))
    g.add_argument("--target-sensitivity", type=float, default=0.9)
    g.add_argument("--temperature-scaling", action="store_true",
                   help="fit per-label temperatures on --val-gt/--val-pred; report ECE/NLL before and after")
    g.add_argument("--bootstrap", type=int, default=1000, help="patient resamples for 95%% CIs (0: none)")
    g.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("det")
    g.add_argument("--iou-type", default="auto", choices=("auto", "bbox", "segm", "both"))
    g.add_argument("--engine", default="faster", choices=("faster", "pycocotools"))
    g.add_argument("--froc-iou", type=float, default=0.5)
    g.add_argument("--froc-criterion", default="iou", choices=("iou", "center"))
    g = ap.add_argument_group("seg")
    g.add_argument("--hd95", action="store_true", help="also Hausdorff 95 per volume (slower)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    need = {"cls": ("gt", "pred"), "det": ("gt", "pred"), "seg": ("gt_masks", "pred_masks")}[args.task]
    absent = [f"--{n.replace('_', '-')}" for n in need if not getattr(args, n)]
    if absent:
        print(f"error: --task {args.task} needs {' and '.join(absent)}", file=sys.stderr)
        return 2
    run = {"cls": run_cls, "det": run_det, "seg": run_seg}[args.task]

    def evaluate_and_write() -> int:
        metrics, details, notes = run(args)
        paths = write_report(args.out, metrics, details=details, conventions=CONVENTIONS[args.task],
                             notes=notes, title=f"hemo-mtl evaluation: {args.task}")
        print(f"wrote {paths['metrics']} and {paths['report']} ({len(metrics)} metrics)")
        return 0

    # ValueError / KeyError: the metric code's own checks on the values read (shapes, NaN, ids)
    return run_main(evaluate_and_write, extra=(ValueError, KeyError))


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
