"""Write a seeded synthetic head-CT dataset (NIfTI volumes + masks, slice labels, lesions).

    python tools/make_phantom.py --out data/phantom --patients 24 --seed 0 [--size 256] [--slices 24]

Prints one summary line: patients written, slices, positive slices per subtype, seconds.
Installed as the console command ``hemo-mtl-phantom``.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from hemo_mtl.categories import LABELS
from hemo_mtl.cli_errors import run_main
from hemo_mtl.data.phantom import write_phantom_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--patients", required=True, type=int, help="number of patients")
    parser.add_argument("--seed", required=True, type=int, help="dataset seed (>= 0)")
    parser.add_argument("--size", type=int, default=256, help="in-plane size in pixels (default 256)")
    parser.add_argument("--slices", type=int, default=24, help="axial slices per patient (default 24)")
    return parser.parse_args(argv)


def positive_slices(labels_csv: Path) -> dict[str, int]:
    """Positive slice count per label column of slice_labels.csv."""
    counts = dict.fromkeys(LABELS, 0)
    with open(labels_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for name in LABELS:
                counts[name] += int(row[name])
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        ids = write_phantom_dataset(args.out, args.patients, args.seed, size=args.size, slices=args.slices)
    except (ValueError, OSError) as err:
        print(f"make_phantom: {err}", file=sys.stderr)
        return 2
    counts = positive_slices(args.out / "slice_labels.csv")
    positives = " ".join(f"{name}={n}" for name, n in counts.items())
    print(f"wrote {len(ids)} patients x {args.slices} slices ({len(ids) * args.slices} slices, "
          f"{args.size}x{args.size}) to {args.out}; positive slices: {positives}; "
          f"{time.perf_counter() - start:.1f}s")
    return 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
