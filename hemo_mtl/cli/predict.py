#!/usr/bin/env python
"""Run a trained checkpoint on CT scans and write masks, boxes, probabilities and bleed volumes.

    python tools/predict.py --weights runs/demo/model_final.pth --input scan.nii.gz --out preds/
    python tools/predict.py --weights RUN/model_final.pth --input dicom_series_folder/ --out preds/
    python tools/predict.py --weights RUN/model_final.pth --input folder_of_scans/ --out preds/ --flip-tta
    python tools/predict.py --weights exported/model.onnx --input scan.nii.gz --out preds/   # onnxruntime
    python tools/predict.py --weights runs/grid/ --input scan.nii.gz --out preds/ --save-probabilities  # fold ensemble
    python tools/predict.py --weights RUN/model_final.pth --input scan.nii.gz --out preds/ --saliency

--input is a NIfTI file, a DICOM series folder, a folder of PNG/JPG slices, or a folder holding any
of these (one scan per NIfTI file / sub-folder). Per scan, OUT/<scan name>/ gets slices.csv,
summary.json, mask.nii.gz (input shape + affine; image folders: masks/*.png), detections.json (COCO
results, image_id = slice index + 1), lesions.csv (one row per 3D lesion; a binary segmentation head's
bleed is mask value 6, named ICH: intracranial hemorrhage, subtype unknown) and overlay.png (docs/predictions.md
tells how to read them; --dicom-seg: seg.dcm on DICOM series inputs; --save-probabilities: probability and
uncertainty maps; --saliency: saliency.nii.gz); OUT/summary.csv has one row per
scan. Scan names are the file names without .nii/.nii.gz, or the whole file name where two would be equal
(``scan/``, ``scan.nii`` and ``scan.nii.gz`` give three folders). A bad scan prints one line naming the
file and the problem; the others go on, and summary.csv is always written. Exit status 1 if any scan
failed, 2 for a bad checkpoint, option or output folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hemo_mtl.atomic import atomic_path  # noqa: E402
from hemo_mtl.cli_errors import one_line, run_main  # noqa: E402
from hemo_mtl.inference import PredictOptions, find_scans, load_scan, write_scan_outputs  # noqa: E402
from hemo_mtl.inference.backends import BACKENDS  # noqa: E402
from hemo_mtl.inference.dicom_seg import build_dicom_seg, dicom_sources, write_dicom_seg  # noqa: E402
from hemo_mtl.inference.ensemble import load_predictor  # noqa: E402
from hemo_mtl.paths import confined, safe_component  # noqa: E402


def _number(kind, low, high=None, low_open=False):
    """An argparse type: ``kind`` within [low, high] (low excluded with ``low_open``), else one line."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value != value or (value <= low if low_open else value < low) or (high is not None and value > high):
            want = f"> {low}" if low_open else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {want}"
                                             + (f" and <= {high}" if high is not None else ""))
        return value
    return parse


POSITIVE, NONNEGATIVE, PROBABILITY = _number(int, 0, low_open=True), _number(int, 0), _number(float, 0.0, 1.0)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, nargs="+",
                   help="RUN/model_final.pth, or an exported model.onnx / model.torchscript.pt; several (or a "
                        "members.txt, or a tools/run_grid.py output folder): an ensemble, outputs averaged")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="runtime (default: from --weights: .onnx -> onnxruntime, .torchscript.pt -> torchscript, else torch)")
    p.add_argument("--input", required=True, help="NIfTI file, DICOM folder, PNG/JPG folder, or a folder of scans")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=POSITIVE, default=16)
    p.add_argument("--no-gate", action="store_true", help="ignore the checkpoint's cascade gate")
    p.add_argument("--flip-tta", action="store_true", help="add the left-right mirrored pass: probabilities averaged, detections merged by NMS")
    p.add_argument("--no-calibration", action="store_true", help="ignore the checkpoint's temperature scaling")
    p.add_argument("--slice-context", type=NONNEGATIVE, default=None, metavar="C",
                   help="lift each slice's p towards the mean of its scan's slices z-C..z+C (0 = off); "
                        "default: the checkpoint's eval.slice_context")
    p.add_argument("--patient-window", type=POSITIVE, default=None, metavar="K",
                   help="a scan's patient-level p is its highest mean of K adjacent slices (1 = the highest "
                        "slice); default: the checkpoint's eval.patient_window")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write probabilities.nii.gz (4th dim: one channel per segmentation class but "
                        "background: P(EDH)..P(IVH), or P(bleed) for a binary head) and, with --flip-tta or several "
                        "--weights, uncertainty.nii.gz (image folders: probabilities/*.npz)")
    p.add_argument("--saliency", action="store_true",
                   help="also write saliency.nii.gz, Grad-CAM of the classifier's p(any) (image folders: "
                        "saliency/*.npz), drawn on overlay.png (extra 'explain')")
    p.add_argument("--sliding-window", action="store_true", help="native resolution, overlapping patches")
    p.add_argument("--patch", type=POSITIVE, default=160)
    p.add_argument("--stride", type=POSITIVE, default=80)
    p.add_argument("--closing", type=NONNEGATIVE, default=0, help="in-plane closing iterations per subtype")
    p.add_argument("--opening", type=NONNEGATIVE, default=0, help="in-plane opening iterations per subtype")
    p.add_argument("--min-voxels", type=NONNEGATIVE, default=0, help="drop 3D lesions smaller than this")
    p.add_argument("--score-threshold", type=PROBABILITY, default=0.5)
    p.add_argument("--threads", type=POSITIVE, default=None, help="torch CPU threads")
    p.add_argument("--dicom-seg", action="store_true",
                   help="DICOM series inputs: also write seg.dcm, a DICOM Segmentation on the source series (extra 'dicom')")
    return p.parse_args(argv)


def scan_name(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or "scan"


def scan_names(paths: list[Path]) -> list[str]:
    """One output folder name per scan, unique (case-insensitively) and a single safe path component:
    the name without .nii/.nii.gz where that is unique, else the whole file name, then -2, -3."""
    stems = [safe_component(scan_name(p), "scan") for p in paths]
    counts = Counter(s.lower() for s in stems)
    names, taken = [], {"summary.csv"}
    for path, stem in zip(paths, stems):
        name = base = stem if counts[stem.lower()] == 1 else safe_component(path.name, "scan")
        k = 2
        while name.lower() in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name.lower())
        names.append(name)
    return names


def writable_folder(out: Path) -> Path:
    """``out``, created if needed; an OSError (read-only, not a folder) before any scan is run."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=out):
        pass
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = PredictOptions(batch_size=args.batch_size, gate=not args.no_gate, flip_tta=args.flip_tta,
                             calibrate=not args.no_calibration, save_probabilities=args.save_probabilities,
                             sliding_window=args.sliding_window, patch=args.patch, stride=args.stride,
                             closing=args.closing, opening=args.opening, min_voxels=args.min_voxels,
                             score_threshold=args.score_threshold, saliency=args.saliency,
                             slice_context=args.slice_context, patient_window=args.patient_window)
    if not Path(args.input).exists():
        raise FileNotFoundError(2, "input not found", args.input)
    predictor = load_predictor(args.weights, options, args.device, args.backend)
    out = writable_folder(Path(args.out))
    scans = find_scans(args.input)
    rows, failed = [], 0
    try:
        for path, name in tqdm(list(zip(scans, scan_names(scans))), desc="scans", disable=len(scans) < 2,
                               file=sys.stderr):
            try:
                scan = load_scan(path)
                sources = dicom_sources(scan) if args.dicom_seg else None  # input type and geometry checked first
                pred = predictor.predict(scan)
                extra = {}
                if args.dicom_seg:  # built before anything of this scan is written
                    seg = build_dicom_seg(scan, pred.mask, sources)
                    extra["seg.dcm"] = lambda p, seg=seg: write_dicom_seg(seg, p)
                summary = write_scan_outputs(confined(out, name), scan, pred, predictor, extra)
            except (ValueError, OSError) as exc:  # DataError is a ValueError; messages name the file
                failed += 1
                message = one_line(exc)
                tqdm.write(f"error: {message}", file=sys.stderr)
                rows.append({"scan": name, "input": str(path), "status": "error", "error": message})
                continue
            volumes = summary["volume_ml"] or {}
            rows.append({"scan": name, "input": str(path), "status": "ok", "error": "",
                         "num_slices": summary["num_slices"],
                         **{f"p_{k}": v for k, v in summary["probabilities"].items()},
                         "predicted_subtypes": " ".join(summary["predicted_subtypes"]),
                         **{f"volume_ml_{k}": v for k, v in volumes.items()},
                         "lesions": summary["lesions"]["any"]})
    finally:  # the scans done so far are listed even when something unexpected stops the batch
        with atomic_path(out / "summary.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"{len(scans) - failed}/{len(scans)} scan(s) predicted -> {out}", file=sys.stderr)
    return 1 if failed else 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
