"""Patient-wise k-fold cross-validation of one training recipe, scored on real patients.

    python tools/cross_validate.py --config configs/real/ctich_jpg.yaml --out runs/cv_ctich \\
        data.root=/data/ct-ich/jpg-release

The dataset is converted once into ``<out>/data`` and its patients dealt into ``--folds`` folds
(stratified by rarest subtype, seeded by ``data.split.seed``), written to ``<out>/cv_folds.json``. Run
``<out>/fold<i>`` trains on the other folds but one, validates on fold i+1 and is tested on fold i
(``hemo_mtl.evaluation.cross_validation`` has the protocol). Each fold's model then predicts its
validation and test patients through the predictor (``<out>/fold<i>/cv_predictions.csv``), and the
figures go to ``<out>/cv_results.json`` and ``<out>/cv_report.md``; ``<out>/members.txt`` lists the
fold models for an ensemble. A rerun continues: finished folds are kept, an unfinished one resumes
from its checkpoints. A used ``--out`` with another config or overrides is refused (``--overwrite``
starts again). Installed as the console command ``hemo-mtl-cross-validate``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hemo_mtl.atomic import atomic_write_json, atomic_write_text
from hemo_mtl.cli_errors import run_main
from hemo_mtl.config import ConfigError, load_config

PLAN = "cv_plan.json"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the training recipe (YAML)")
    p.add_argument("--out", required=True, help="cross-validation folder")
    p.add_argument("--folds", type=int, default=5, help="number of patient folds (>= 3)")
    p.add_argument("--overwrite", action="store_true", help="replace a used --out")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per training run (train.num_threads)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every fold")
    args = p.parse_intermixed_args(argv)  # overrides may come before and after the options
    if args.folds < 3:
        p.error("--folds must be >= 3 (a test fold, a validation fold and at least one training fold)")
    return args


def fold_overrides(args, data_dir: Path, fold: int) -> list[str]:
    extra = [f"train.num_threads={args.threads}"] if args.threads else []
    return [*args.overrides, *extra, f"output_dir={Path(args.out) / f'fold{fold}'}", f"data.root={data_dir}",
            "data.source=null", f"data.split.folds={args.folds}", f"data.split.fold={fold}",
            "data.split.held_out_as=test", "data.split.val=0.0", "data.split.test=0.0", "eval.final_split=test"]


def check_plan(out: Path, plan: dict, overwrite: bool) -> None:
    """A used --out continues only under the same plan (config text, overrides, folds)."""
    path = out / PLAN
    if path.is_file() and json.loads(path.read_text()) != plan:
        if not overwrite:
            raise ConfigError(f"{out} holds a cross-validation with another config, overrides or fold count; "
                              "choose another --out or pass --overwrite")
    if overwrite and out.exists():
        shutil.rmtree(out)
    atomic_write_json(path, plan)


def train_fold(args, data_dir: Path, fold: int) -> Path:
    """Train fold ``fold`` as its own process (``hemo_mtl.cli.train``; skipped when finished, resumed when
    started), so a crash or a kill of one fold leaves the others and their checkpoints intact."""
    run = Path(args.out) / f"fold{fold}"
    if (run / "model_final.pth").is_file():
        return run
    cmd = [sys.executable, "-m", "hemo_mtl.cli.train", "--config", args.config]
    if (run / "config.yaml").is_file():
        cmd.append("--resume")
    cmd += fold_overrides(args, data_dir, fold)
    print(f"[cv] fold {fold}: training -> {run}", flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0 or not (run / "model_final.pth").is_file():
        raise RuntimeError(f"fold {fold}: training failed (exit {done.returncode}); see {run}")
    return run


def main(argv=None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from hemo_mtl.data.manifest import read_manifest
    from hemo_mtl.data.splits import LeakageError, check_leakage, make_splits
    from hemo_mtl.engine.data import prepare_data_dir
    from hemo_mtl.evaluation import cross_validation as cv
    from hemo_mtl.inference.predictor import Predictor

    out = Path(args.out)
    cfg = load_config(args.config, args.overrides)
    plan = {"config": Path(args.config).read_text(), "overrides": list(args.overrides), "folds": args.folds}
    check_plan(out, plan, args.overwrite)
    data_dir = prepare_data_dir({**cfg, "output_dir": str(out)})
    frame = read_manifest(data_dir / "manifest.csv")
    seed = int(cfg["data"]["split"]["seed"])
    folds = make_splits(frame, seed=seed, val=0.0, test=0.0, folds=args.folds)["folds"]
    check_leakage({"folds": folds})
    atomic_write_json(out / "cv_folds.json", {"seed": seed, "folds": folds,
                                               "stratified_by": "rarest subtype present per patient"})
    window = int(cfg["eval"].get("patient_window") or 1)
    per_fold, tables, members, train_seconds = [], [], [], []
    for fold in range(args.folds):
        run = train_fold(args, data_dir, fold)
        final = json.loads((run / "final_metrics.json").read_text())
        if final.get("time/train_seconds") is not None:
            train_seconds.append(float(final["time/train_seconds"]))
        used = json.loads((run / "splits.json").read_text())
        if sorted(used["test"]) != sorted(folds[fold]):
            raise LeakageError(f"{run / 'splits.json'}: the run's test patients differ from {out / 'cv_folds.json'} fold {fold}")
        predictions = run / "cv_predictions.csv"
        if not predictions.is_file():
            roles = {**{p: "val" for p in used["val"]}, **{p: "test" for p in used["test"]}}
            table = cv.predict_patients(Predictor.from_checkpoint(run / "model_final.pth"), frame, roles)
            atomic_write_text(predictions, table.to_csv(index=False))
        table = pd.read_csv(predictions, dtype={"patient_id": str, "study_id": str})
        tables.append(table.assign(fold=fold))
        per_fold.append({"fold": fold, **cv.fold_figures(table, window)})
        members.append(str((run / "model_final.pth").resolve()))
    everything = pd.concat(tables, ignore_index=True)
    results = {"folds": per_fold, "summary": cv.summarise([{k: v for k, v in f.items() if k != "fold"} for f in per_fold]),
               "pooled": cv.pooled_figures(everything, window), "seg_by_patient": cv.seg_by_patient(everything),
               "patient_window": window, "config": args.config, "overrides": list(args.overrides),
               "train_minutes_per_fold": sum(train_seconds) / len(train_seconds) / 60 if train_seconds else None}
    atomic_write_json(out / "cv_results.json", results)
    atomic_write_text(out / "cv_report.md", cv.report_markdown(results))
    atomic_write_text(out / "members.txt", "\n".join(members) + "\n")
    print(cv.report_markdown(results))
    return 0


def cli(argv=None) -> int:
    """The console command: run, and report user errors in one line (exit status 2)."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
