#!/usr/bin/env python
"""Convert a head-CT dataset to hemo-mtl's manifest (+ PNG slices, COCO json, YOLO labels).

    python tools/convert.py --source nifti --input runs/phantom --out runs/phantom_conv --formats manifest,png,coco,yolo
    python tools/convert.py --validate runs/phantom_conv/annotations/instances_train.json

Bad input items (CSV rows, images, volumes) are skipped and listed on stderr and in
DIR/conversion_report.json, one line each naming file and row or tag (docs/input_checks.md). The
output is built beside --out and moved into place when done: a non-empty --out is refused unless
--overwrite, which replaces an earlier conversion whole. Exit status 1 when nothing usable is left,
when a slice of the manifest could not be exported (PNG/COCO/YOLO), or with --strict on any bad item.
Installed as the console command ``hemo-mtl-convert``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hemo_mtl.cli_errors import run_main
from hemo_mtl.registry import SOURCES


def parse_args(argv=None):
    import hemo_mtl.data.sources  # noqa: F401  (registers the sources)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=SOURCES.names(), help="dataset layout")
    p.add_argument("--input", type=Path, help="dataset folder")
    p.add_argument("--out", type=Path, help="output folder")
    p.add_argument("--window", default="brain",
                   help="HU window(s): brain | subdural | bone | stroke | soft_tissue | custom:L/W (center/width, "
                        "e.g. custom:40/80); 1 window -> grey PNGs, 3 comma-separated -> RGB, e.g. brain,subdural,bone")
    p.add_argument("--split-seed", type=int, default=32)
    p.add_argument("--val", type=float, default=0.1, help="validation fraction of patients")
    p.add_argument("--test", type=float, default=0.2, help="test fraction of patients")
    p.add_argument("--folds", type=int, default=0, help="also make K cross-validation folds of the non-test patients")
    p.add_argument("--formats", default="manifest", help="comma list of manifest,png,coco,yolo,nnunet (nnunet: HU volumes -> nnUNet_raw/Dataset501_<source>, docs/interop.md)")
    p.add_argument("--png-bits", type=int, choices=(8, 16), default=8, help="8: windowed; 16: HU + 32768")
    p.add_argument("--seg-format", choices=("auto", "polygon", "rle"), default="auto")
    p.add_argument("--min-area", type=int, default=1, help="components below this many pixels are left out (and reported)")
    p.add_argument("--per-volume", action="store_true", help="also export 3D lesions (annotations/lesions_<split>.json)")
    p.add_argument("--workers", type=int, default=1, help="patients converted in parallel processes")
    p.add_argument("--strict", action="store_true", help="fail on the first bad item")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in a non-empty --out")
    p.add_argument("--validate", type=Path, metavar="COCO_JSON", help="only validate a COCO json and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.validate is None and not (args.source and args.input and args.out):
        p.error("--source, --input and --out are required (or --validate FILE)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.validate is not None:
        from converters.validation import validate_coco_file

        report = validate_coco_file(args.validate)
        print(report.summary() if hasattr(report, "summary") else report)
        return 0 if getattr(report, "ok", not getattr(report, "problems", [])) else 1

    from hemo_mtl.data.convert import ConversionError, convert_dataset
    from hemo_mtl.data.io import DataError

    try:
        report = convert_dataset(
            args.source, args.input, args.out, window=args.window, split_seed=args.split_seed, val=args.val,
            test=args.test, folds=args.folds, formats=[f.strip() for f in args.formats.split(",") if f.strip()],
            strict=args.strict, workers=args.workers, bits=args.png_bits, seg_format=args.seg_format,
            min_area=args.min_area, per_volume=args.per_volume, progress=not args.quiet, overwrite=args.overwrite,
        )
    except (ConversionError, DataError, OSError, ValueError) as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    c = report["counts"]["all"]
    subtypes = " ".join(f"{s}={c['slices_' + s]}" for s in ("EDH", "SDH", "SAH", "IPH", "IVH"))
    print(
        f"{args.out}: {c['patients']} patients, {c['slices']} slices ({c['slices_any']} with bleed; {subtypes}); "
        f"split {report['counts']['train']['patients']}/{report['counts']['val']['patients']}/{report['counts']['test']['patients']} "
        f"patients; {report['n_skipped']} skipped; {report['slices_per_second']} slices/s"
    )
    if report["n_failed_exports"]:
        print(f"error: {report['n_failed_exports']} of {c['slices']} slice(s) could not be exported "
              f"(listed above and in {args.out / 'conversion_report.json'})", file=sys.stderr)
        return 1
    return 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
