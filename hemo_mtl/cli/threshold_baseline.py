#!/usr/bin/env python
"""Score the intensity-threshold baseline on the held-out split of a finished (or planned) run.

    python tools/threshold_baseline.py runs/physionet/unet_patch/fold0 [--low 55 --high 90]
    python tools/threshold_baseline.py runs/grid/unet_patch --folds 5      # every fold + mean

Reads the run's config.yaml, data folder and splits.json (so the patients are exactly the ones its
model was scored on), predicts with ``ThresholdSegmenter`` and writes ``threshold_metrics.json``
(seg/any/*, cls/any/* slice sensitivity = recall, specificity) next to the run's final_metrics.json.
Installed as the console command ``hemo-mtl-threshold-baseline``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hemo_mtl.atomic import atomic_write_json
from hemo_mtl.cli_errors import run_main
from hemo_mtl.config import load_config


def score_run(run_dir: Path, low: float, high: float, closing: int, opening: int) -> dict:
    from hemo_mtl.engine.data import build_datasets, eval_loader
    from hemo_mtl.evaluation.loop import run_inference
    from hemo_mtl.evaluation import MultiTaskEvaluator
    from hemo_mtl.inference.threshold_baseline import ThresholdSegmenter

    cfg = load_config(run_dir / "config.yaml")
    data_dir = Path(cfg["data"]["root"]) if cfg["data"]["root"] and not cfg["data"].get("source") else run_dir / "data"
    splits = json.loads((run_dir / "splits.json").read_text())
    split = cfg["eval"]["final_split"]
    dataset = build_datasets({**cfg, "data": {**cfg["data"], "patches": {"size": 0}, "balance": None}},
                             data_dir, splits)[split]
    model = ThresholdSegmenter(low, high, closing, opening)
    result = run_inference(model, eval_loader(dataset, cfg), MultiTaskEvaluator(["cls", "seg"]), torch.device("cpu"))
    metrics = {k: v for k, v in result.metrics.items() if k.startswith(("seg/any/", "cls/any/"))}
    metrics["threshold/low_hu"], metrics["threshold/high_hu"] = low, high
    atomic_write_json(run_dir / "threshold_metrics.json", metrics)
    return metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--folds", type=int, default=0, help="score <run_dir>/fold0..N-1 and print the mean")
    p.add_argument("--low", type=float, default=55.0)
    p.add_argument("--high", type=float, default=90.0)
    p.add_argument("--closing", type=int, default=1)
    p.add_argument("--opening", type=int, default=1)
    args = p.parse_args(argv)
    dirs = [Path(args.run_dir) / f"fold{k}" for k in range(args.folds)] if args.folds else [Path(args.run_dir)]
    rows = [score_run(d, args.low, args.high, args.closing, args.opening) for d in dirs]
    keys = ("seg/any/dice", "seg/any/iou", "seg/any/precision", "seg/any/recall", "cls/any/recall", "cls/any/specificity")
    for d, r in zip(dirs, rows):
        print(d, " ".join(f"{k}={r.get(k, float('nan')):.4f}" for k in keys))
    if len(rows) > 1:
        print("mean", " ".join(f"{k}={sum(r[k] for r in rows) / len(rows):.4f}" for k in keys))
    return 0


def cli(argv=None) -> int:
    """The console command: ``main`` with user errors as one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
