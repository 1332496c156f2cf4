#!/usr/bin/env python
"""Export a trained checkpoint for other runtimes: ONNX (onnxruntime) or TorchScript.

    python tools/export.py --weights runs/demo/model_final.pth --format onnx --out exported/
    python tools/export.py --weights runs/demo/model_final.pth --format torchscript --out exported/
    python tools/predict.py --weights exported/model.onnx --input scan.nii.gz --out preds/

Writes OUT/model.onnx (or OUT/model.torchscript.pt) holding the backbone and the heads with tensor
outputs (classification, segmentation, location), and beside it OUT/model.onnx.yaml: the training
config, cascade gate, input geometry and output names that tools/predict.py --backend onnxruntime
needs to run the same pipeline. Detection heads (Mask R-CNN, YOLO) are not exported; the tool says so.
The exported model is checked against the PyTorch model on a random batch and the largest difference
per output is printed (and kept in the sidecar). An existing export is never replaced without --force.
Installed as the console command ``hemo-mtl-export``.
"""
from __future__ import annotations

import argparse
import sys

import torch

from hemo_mtl.cli_errors import run_main
from hemo_mtl.export import FORMATS, export_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="RUN/model_final.pth")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = export_checkpoint(args.weights, args.format, args.out, force=args.force)
    except (ValueError, OSError) as exc:  # ExportError, DataError, a bad checkpoint: messages name the file
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for head, names in result.heads.items():
        print(f"exported head {head}: {', '.join(names)}", file=sys.stderr)
    for head, why in result.skipped.items():
        print(f"not exported: head {head}: {why}", file=sys.stderr)
    for name, diff in result.parity.items():
        print(f"parity {name}: max |{args.format} - torch| = {diff:.2e}", file=sys.stderr)
    print(f"{result.model_path} + {result.sidecar_path.name}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
