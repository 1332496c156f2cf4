"""Phantom generation and dataset conversion throughput, then mask -> COCO/YOLO against other tools."""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmark.py convert", description=__doc__)
    p.add_argument("--patients", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--slices", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--export-slices", type=int, default=64, help="512x512 slices for the mask export comparison")
    p.add_argument("--skip-export", action="store_true")
    args = p.parse_args(argv)

    from hemo_mtl.data.convert import convert_dataset
    from hemo_mtl.data.phantom import write_phantom_dataset

    tmp = Path(tempfile.mkdtemp(prefix="hemo_bench_"))
    try:
        n_slices = args.patients * args.slices
        t = time.perf_counter()
        write_phantom_dataset(tmp / "phantom", args.patients, seed=0, size=args.size, slices=args.slices)
        gen = time.perf_counter() - t
        rows = [{"step": f"phantom generation ({args.size}x{args.size}x{args.slices}, incl. NIfTI write)",
                 "seconds": f"{gen:.2f}", "slices/s": f"{n_slices / gen:.0f}"}]
        for formats, workers in [(("manifest",), 1), (("manifest", "png"), 1), (("manifest", "coco", "yolo"), 1),
                                 (("manifest", "coco", "yolo"), args.workers)]:
            out = tmp / f"conv_{'_'.join(formats)}_{workers}"
            t = time.perf_counter()
            convert_dataset("nifti", tmp / "phantom", out, formats=formats, workers=workers, progress=False,
                            overwrite=True)  # the same folder again when --workers is 1
            dt = time.perf_counter() - t
            rows.append({"step": f"convert --formats {','.join(formats)} --workers {workers}",
                         "seconds": f"{dt:.2f}", "slices/s": f"{n_slices / dt:.0f}"})
        print(f"## conversion ({args.patients} phantom patients, {n_slices} slices)\n")
        print(_table(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if not args.skip_export:
        from hemo_mtl.cli.benchmarks import mask_export

        print(f"\n## mask -> COCO / YOLO-seg ({args.export_slices} phantom slices, 512x512)\n")
        mask_export.main(["--slices", str(args.export_slices)])
    return 0
