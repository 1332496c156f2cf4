#!/usr/bin/env python
"""Run a grid of configs (and cross-validation folds) one after another; collect one results table.

    python tools/run_grid.py configs/hemorica/cls_*.yaml --out runs/hemorica_grid
    python tools/run_grid.py configs/kaggle/cls_resnet18.yaml --folds 5 --out runs/grid --set train.epochs=10
    python tools/run_grid.py configs/physionet/unet_patch.yaml --folds 5 --table   # only rebuild the table

Each run goes to ``<out>/<config stem>[/fold<k>]`` through ``python -m hemo_mtl.cli.train`` (same overrides
for every run via ``--set``). A run whose ``final_metrics.json`` exists is skipped, and an unfinished
one continues from its checkpoints (``--resume``; ``--overwrite`` when it stopped before its first
checkpoint), so an interrupted grid resumes where it stopped. The table (``<out>/grid.csv`` and ``grid.md``) has one row per run and,
with folds, a mean and a standard deviation row per config. ``<out>/members.txt`` lists the finished runs'
``model_final.pth`` (and ``<out>/<config stem>/members.txt`` that config's folds): ``tools/predict.py
--weights <out>/<config stem>/`` predicts with the fold models as an ensemble.
Installed as the console command ``hemo-mtl-run-grid``.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from hemo_mtl.atomic import atomic_write_text
from hemo_mtl.cli_errors import run_main

DEFAULT_KEYS = (
    "select/cls/any/precision", "select/cls/any/recall", "select/cls/any/specificity", "select/cls/any/f1",
    "select/cls/any/auc", "cls/any/precision", "cls/any/recall", "cls/any/specificity", "cls/any/f1",
    "cls/any/auc", "cls/any/accuracy", "seg/any/dice", "seg/any/iou", "seg/any/precision", "seg/any/recall",
    "seg/any/dice_per_slice", "seg/EDH/dice", "seg/SDH/dice", "seg/SAH/dice", "seg/IPH/dice", "seg/IVH/dice",
    "location/accuracy", "location/macro/precision", "location/macro/recall", "location/macro/specificity",
    "location/macro/f1", "time/train_seconds",
)

# how a run is started: a fresh interpreter per run, so one run's memory and threads never reach the next
TRAIN = [sys.executable, "-m", "hemo_mtl.cli.train"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="config files or glob patterns")
    p.add_argument("--out", default="runs/grid", help="grid folder (one sub-folder per run)")
    p.add_argument("--folds", type=int, default=0, help="run data.split.fold=0..N-1 for each config")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key.sub=value for every run")
    p.add_argument("--keys", default=None, help="comma-separated metric keys for the table (default: common ones)")
    p.add_argument("--table", action="store_true", help="only collect finished runs into the table")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return p.parse_args(argv)


def expand(patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        hits = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not hits:
            raise FileNotFoundError(f"no config matches {pattern!r}")
        for hit in hits:
            path = Path(hit)
            if not path.is_file():
                raise FileNotFoundError(f"config not found: {path}")
            if not path.name.startswith("_"):  # _base_*.yaml are building blocks, not runs
                out.append(path)
    return out


def plan(configs: list[Path], out: Path, folds: int) -> list[tuple[Path, int | None, Path]]:
    """(config, fold or None, run dir) for every run of the grid, in order."""
    runs = []
    for cfg in configs:
        for fold in (range(folds) if folds else [None]):
            run_dir = out / cfg.stem / (f"fold{fold}" if fold is not None else "")
            runs.append((cfg, fold, run_dir))
    return runs


def restart_flag(run_dir: Path) -> list[str]:
    """How train_net continues an unfinished run: from its checkpoints, or afresh over what a run that
    stopped before its first checkpoint left (train_net refuses a used run dir without one of them)."""
    if any((run_dir / "checkpoints").glob("model_*.pth")):
        return ["--resume"]
    if any((run_dir / name).exists() for name in ("model_final.pth", "metrics.json")):
        return ["--overwrite"]
    return []


def command(cfg: Path, fold: int | None, run_dir: Path, overrides: list[str]) -> list[str]:
    cmd = [*TRAIN, "--config", str(cfg), f"output_dir={run_dir}", *overrides]
    if fold is not None:
        cmd.append(f"data.split.fold={fold}")
    return cmd + restart_flag(run_dir)


def collect(runs, keys: list[str]) -> list[dict]:
    """One row per finished run, plus mean/std rows per config that has folds."""
    rows, by_config = [], {}
    for cfg, fold, run_dir in runs:
        path = run_dir / "final_metrics.json"
        if not path.is_file():
            continue
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # a hand-edited or cut file: reported, the table goes on
            print(f"warning: {path}: unreadable ({type(exc).__name__}); run left out of the table", file=sys.stderr)
            continue
        row = {"config": str(cfg), "fold": "" if fold is None else fold, "init": metrics.get("init", ""),
               **{k: metrics.get(k) for k in keys}}
        rows.append(row)
        if fold is not None:
            by_config.setdefault(str(cfg), []).append(row)
    for cfg, fold_rows in by_config.items():
        for stat in ("mean", "std"):
            agg = {"config": cfg, "fold": f"{stat} of {len(fold_rows)}", "init": fold_rows[0]["init"]}
            for k in keys:
                vals = [r[k] for r in fold_rows if isinstance(r[k], (int, float)) and math.isfinite(r[k])]
                if not vals:
                    agg[k] = None
                elif stat == "mean":
                    agg[k] = sum(vals) / len(vals)
                else:
                    mu = sum(vals) / len(vals)
                    agg[k] = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            rows.append(agg)
    return rows


def write_table(rows: list[dict], keys: list[str], out: Path) -> None:
    used = [k for k in keys if any(r.get(k) is not None for r in rows)]
    columns = ["config", "fold", "init", *used]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "grid.csv", buf.getvalue())

    def cell(v):
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.4f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    atomic_write_text(out / "grid.md", "\n".join(lines) + "\n")


def write_member_lists(runs, out: Path) -> None:
    """members.txt of the finished runs' model_final.pth: the grid's in ``out``, each config's folds in its
    folder (``tools/predict.py --weights <folder>`` predicts with them as an ensemble)."""
    from hemo_mtl.inference.ensemble import write_members

    done = [(cfg, fold, run_dir / "model_final.pth") for cfg, fold, run_dir in runs
            if (run_dir / "final_metrics.json").is_file() and (run_dir / "model_final.pth").is_file()]
    write_members(out, [c for _, _, c in done])
    for cfg in dict.fromkeys(cfg for cfg, fold, _ in done if fold is not None):
        write_members(out / cfg.stem, [c for k, fold, c in done if k == cfg and fold is not None])


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    runs = plan(expand(args.configs), out, args.folds)
    keys = args.keys.split(",") if args.keys else list(DEFAULT_KEYS)
    failed = []
    if not args.table:
        for cfg, fold, run_dir in runs:
            if (run_dir / "final_metrics.json").is_file():
                print(f"skip (finished): {run_dir}", flush=True)
                continue
            cmd = command(cfg, fold, run_dir, args.overrides)
            print(" ".join(cmd), flush=True)
            if args.dry_run:
                continue
            start = time.perf_counter()
            code = subprocess.call(cmd)
            print(f"{'ok' if code == 0 else f'FAILED ({code})'}: {run_dir} ({time.perf_counter() - start:.0f} s)", flush=True)
            if code != 0:
                failed.append(str(run_dir))
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        rows = collect(runs, keys)
        write_table(rows, keys, out)
        print(f"table: {out / 'grid.md'} ({len(rows)} rows)")
        write_member_lists(runs, out)
    for f in failed:
        print(f"error: run failed: {f}", file=sys.stderr)
    return 1 if failed else 0


def cli(argv=None) -> int:
    """The console command: parse, run, and report user errors in one line (exit status 2)."""
    return run_main(main, parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
