#!/usr/bin/env python
"""Train (and evaluate) a hemo-mtl model from a YAML config: the recipe, top to bottom.

    python tools/train_net.py --config configs/mtl_cascade.yaml [key.sub=value ...]
    python tools/train_net.py --config configs/demo.yaml output_dir=runs/demo train.epochs=2
    python tools/train_net.py --config configs/mtl_joint.yaml --resume            # latest checkpoint
    python tools/train_net.py --config configs/demo.yaml --overwrite              # replace the run in output_dir
    python tools/train_net.py --config configs/mtl_joint.yaml --eval-only --weights runs/x/model_final.pth
    torchrun --nproc_per_node 2 tools/train_net.py --config configs/mtl_joint.yaml   # DDP (gloo on CPU)

Installed as the console command ``hemo-mtl-train`` (the same arguments).

The run directory (``output_dir``) gets config.yaml, splits.json, checkpoints/, tensorboard events,
metrics.json (one line per evaluation), model_final.pth, final_metrics.json (test split) and report.md.
A run directory that already holds a run is refused unless --resume continues it or --overwrite
replaces it. --eval-only writes into output_dir/eval/<weights name>-<split>/ and leaves the run's own
files alone.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Mapping

# OMP_WAIT_POLICY stays the user's: PASSIVE (threads sleep at once between parallel regions) made a
# training step 35% slower on 2 idle cores than libgomp's default (spin briefly, then sleep).

import torch

from hemo_mtl.atomic import atomic_write_json, atomic_write_text
from hemo_mtl.cli_errors import run_main
from hemo_mtl.config import ConfigError, load_config, save_config
from hemo_mtl.engine import (CheckpointHook, EvalHook, LRScheduleHook, ProgressHook, TensorboardHook,
                             Trainer, build_schedule, init_distributed, load_checkpoint,
                             resolve_device, save_checkpoint, seed_everything)
from hemo_mtl.engine.checkpoint import (CHECKPOINT_DIR, CheckpointError, config_differences,
                                        describe_differences, list_checkpoints, load_model_weights,
                                        newest_intact_checkpoint)
from hemo_mtl.engine.data import build_datasets, eval_loader, prepare_data_dir, run_splits
from hemo_mtl.engine.distributed import barrier, cleanup, threads_per_rank
from hemo_mtl.engine.hooks import append_metrics_line
from hemo_mtl.evaluation.loop import evaluate
from hemo_mtl.models.gating import CascadeGate
from hemo_mtl.paths import safe_component

# what a training run writes into its output_dir (data/ and phantom/ are the generated dataset, kept and reused)
RUN_FILES = ("config.yaml", "splits.json", "model_final.pth", "metrics.json", "final_metrics.json",
             "report.md", "epochs.json", "events.out.tfevents.*")
RUN_DIRS = (CHECKPOINT_DIR, "report", "eval")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (may use _base_)")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from output_dir/checkpoints (latest) or from the given checkpoint path")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in output_dir (its checkpoints, weights, metrics, reports)")
    p.add_argument("--eval-only", action="store_true",
                   help="only evaluate --weights on eval.final_split, into output_dir/eval/<weights>-<split>/")
    p.add_argument("--weights", default=None, help="model_final.pth or a training checkpoint (with --eval-only)")
    p.add_argument("opts", nargs="*", help="config overrides key.sub=value (output_dir=DIR sets the run dir)")
    args = p.parse_args(argv)
    if args.resume not in (None, "latest") and "=" in args.resume and not Path(args.resume).exists():
        args.opts.insert(0, args.resume)  # `--resume key=value ...`: an override, not a checkpoint path
        args.resume = "latest"
    return args


def main(args: argparse.Namespace) -> dict:
    # 1. config, device, process group, seeds
    cfg = load_config(args.config, args.opts)
    tcfg = cfg["train"]
    device = resolve_device(tcfg["device"], int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed(device)
    if device.type == "cpu" and tcfg.get("num_threads"):
        torch.set_num_threads(threads_per_rank(tcfg["num_threads"]))
    seed_everything(int(cfg["seed"]) + dist.rank, deterministic=bool(tcfg["deterministic"]))
    final_split = cfg["eval"]["final_split"]
    if final_split not in ("val", "test"):
        raise ConfigError(f"eval.final_split must be val or test, got {final_split!r}")
    run_dir = Path(cfg["output_dir"])
    out = eval_dir(run_dir, args.weights, final_split) if args.eval_only else run_dir
    if not args.eval_only:
        check_run_dir(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    if dist.is_main:
        if args.overwrite and not args.eval_only:
            clear_run_dir(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier()

    # 2. data: generated phantom or a converted dataset, patient-wise splits
    data_dir = prepare_data_dir(cfg, dist)
    from hemo_mtl.data.splits import load_splits

    splits = run_splits(cfg, data_dir, load_splits(data_dir / "splits.json"))
    if dist.is_main and cfg["data"]["split"].get("folds"):
        atomic_write_json(out / "splits.json", splits)  # this fold's train/val + the fold lists
    elif dist.is_main and (data_dir / "splits.json").resolve() != (out / "splits.json").resolve():
        shutil.copyfile(data_dir / "splits.json", out / "splits.json")
    datasets = build_datasets(cfg, data_dir, splits)
    val_loader, test_loader = eval_loader(datasets["val"], cfg), eval_loader(datasets[final_split], cfg)

    # 3. model, schedule, trainer
    from hemo_mtl.data.dataset import collate_samples
    from hemo_mtl.evaluation import MultiTaskEvaluator
    from hemo_mtl.models import build_model
    from hemo_mtl.models.losses import pcgrad_backward

    model = build_model(cfg["model"])
    heads = list(model.heads)
    schedule = build_schedule(cfg["schedule"], int(tcfg["epochs"]), heads)
    trainer = Trainer(
        model, datasets["train"], schedule=schedule, train_cfg=tcfg, batch_size=int(cfg["data"]["batch_size"]),
        collate_fn=collate_samples, seed=int(cfg["seed"]), num_workers=int(cfg["data"]["num_workers"]),
        balancer=getattr(model, "balancer", None),
        pcgrad=pcgrad_backward if cfg["model"].get("loss", {}).get("pcgrad") else None,
        device=device, output_dir=out, config=cfg, dist_info=dist,
    )
    window = cfg["eval"].get("sliding_window") or {}
    # the sliding-window wrapper derives slice labels from the cleaned mask: cls is scored without a cls head
    derived = {"cls"} if int(window.get("size") or 0) and "seg" in heads else set()
    tasks = [t for t in cfg["eval"]["tasks"] if t in heads or t in derived]
    select = cfg["eval"].get("select") or {}
    if select.get("rule") and int(tcfg["epochs"]) < int(select["after_epoch"]) + int(select["k"]):
        raise ConfigError(f"eval.select needs train.epochs >= after_epoch + k = {int(select['after_epoch']) + int(select['k'])}"
                          f", got {tcfg['epochs']} (lower eval.select.k / eval.select.after_epoch for short runs)")

    def make_evaluator(temperature=None):
        evaluator = MultiTaskEvaluator(tasks, temperature=temperature)
        if "location" in heads:
            from hemo_mtl.evaluation.location import CombinedEvaluator, LocationEvaluator

            classes = cfg["data"].get("location_classes") or [str(i) for i in range(model.heads["location"].num_classes)]
            evaluator = CombinedEvaluator([evaluator, LocationEvaluator(classes)])
        return evaluator

    def protocol_model(m):
        """The model as the protocol predicts full slices (overlap-averaged windows + morphology)."""
        if not int(window.get("size") or 0):
            return m
        from hemo_mtl.inference.window_eval import SlidingWindowModel

        return SlidingWindowModel(m, int(window["size"]), int(window.get("stride") or window["size"]),
                                  int(window.get("closing") or 0), int(window.get("opening") or 0),
                                  batch_size=int(cfg["eval"].get("batch_size") or cfg["data"]["batch_size"]))

    def run_eval(model_to_eval, loader, eval_heads, gate=schedule.gate, panels=0, evaluator=None):
        evaluator = evaluator or make_evaluator()
        return evaluate(protocol_model(model_to_eval), loader, evaluator, device, heads=eval_heads,
                        gate=gate, amp=trainer.amp,
                        channels_last=trainer.channels_last, panels=panels, flip_tta=bool(cfg["eval"]["flip_tta"]))

    def fit_val_temperature(model_to_eval) -> list[float] | None:
        """Per-label temperatures fitted on the validation split's slice probabilities (cls-only pass)."""
        from hemo_mtl.evaluation.calibration import fit_temperature

        evaluator = MultiTaskEvaluator(["cls"])
        run_eval(model_to_eval, val_loader, {"cls"}, evaluator=evaluator)
        d = evaluator.details.get("cls")
        return None if d is None else fit_temperature(d["y_true"], d["y_prob"], d["valid"])

    def eval_val(t: Trainer) -> dict:
        result = run_eval(t.eval_model(), val_loader, schedule.heads_trained_by(t.stage_index or 0),
                          panels=int(cfg["eval"]["image_panels"]))
        if result.gate is not None:
            t.extra_state["cascade_gate"] = result.gate.state_dict()
        for i, panel in enumerate(result.panels):
            t.storage.put_image(f"val/panel_{i}", panel)
        return result.metrics

    trainer.register_hooks([
        LRScheduleHook(),
        EvalHook(int(tcfg["eval_period"]), eval_val, out / "metrics.json"),
        CheckpointHook(int(tcfg["checkpoint_period"]), int(tcfg["checkpoint_keep"])),
        TensorboardHook(out, int(tcfg["log_period"])),
        ProgressHook(bool(tcfg["progress"])),
    ])
    if select.get("rule"):  # record val loss + reporting-split metrics per epoch, select at the end
        from functools import partial

        from hemo_mtl.engine.hooks import EpochRecordHook
        from hemo_mtl.engine.validation_loss import validation_loss
        from hemo_mtl.evaluation.epoch_selection import select_epochs

        trainer.register_hooks([EpochRecordHook(
            val_loss=lambda t: validation_loss(t.eval_model(), val_loader, device),
            metrics=lambda t: run_eval(t.eval_model(), test_loader, set(heads)).metrics,
            path=out / "epochs.json",
            select=partial(select_epochs, rule=select["rule"], k=int(select["k"]),
                           after_epoch=int(select["after_epoch"])),
        )])

    # 4. train (or load weights), then evaluate on the test split
    start = time.perf_counter()
    if args.eval_only:
        if not args.weights:
            raise ConfigError("--eval-only needs --weights PATH")
        state = load_checkpoint(args.weights, map_location=device)
        load_model_weights(model, state.get("model") or {}, args.weights)
        warn_config_differs(cfg, state.get("config"), args.weights, ignore=("output_dir", "train.", "eval."))
        eval_model = model
        gate = schedule.gate.with_saved(state.get("cascade")) if schedule.gate is not None else None
        from hemo_mtl.evaluation.calibration import checkpoint_temperature

        temperature = checkpoint_temperature(state)
    else:
        if args.resume:
            path, state = resume_state(out, args.resume, device)
            load_model_weights(model, state.get("model") or {}, path)  # one line naming keys if it does not fit
            warn_config_differs(cfg, state.get("config"), path, ignore=("output_dir",))
            trainer.load_state_dict(state)
            if dist.is_main:
                trim_metrics(out / "metrics.json", trainer.start_epoch)
            print(f"resumed from {path} at epoch {trainer.start_epoch}", file=sys.stderr)
        trainer.train()
        eval_model = trainer.eval_model()
        gate = CascadeGate.from_state(trainer.extra_state.get("cascade_gate")) or schedule.gate
        temperature = None
    train_seconds = time.perf_counter() - start

    final: dict = {}
    if dist.is_main:
        if gate is not None and gate.threshold is None:  # choose the gate on validation
            gate = run_eval(eval_model, val_loader, set(heads), gate).gate
        if temperature is None and cfg["eval"].get("temperature_scaling") and "cls" in heads:
            temperature = fit_val_temperature(eval_model)
        evaluator = make_evaluator(temperature)
        result = run_eval(eval_model, test_loader, set(heads), gate,
                          panels=int(cfg["eval"]["image_panels"]), evaluator=evaluator)
        final = result.metrics
        final["init"] = f"imagenet:{Path(cfg['model']['backbone']['weights']).name}" if (
            cfg["model"].get("backbone", {}).get("weights")) else "random"
        if "fold" in splits:
            final["fold"] = int(splits["fold"])
        final.update(trainer.extra_state.get("selection") or {})
        gate = result.gate
        if not args.eval_only:
            from hemo_mtl.evaluation.calibration import temperature_record

            save_checkpoint(out / "model_final.pth", {"model": eval_model.state_dict(), "config": cfg,
                                                      "cascade": gate.state_dict() if gate else {},
                                                      "calibration": temperature_record(temperature) if temperature else {}})
            final["time/train_seconds"] = round(train_seconds, 1)
        atomic_write_json(out / "final_metrics.json", final)
        record = {"epoch": trainer.epochs_done, "iter": trainer.iter, "split": final_split, **final}
        if args.eval_only:  # this folder holds one evaluation: a rerun replaces it, never appends
            (out / "metrics.json").unlink(missing_ok=True)
            record["weights"] = str(args.weights)
        append_metrics_line(out / "metrics.json", record)
        _write_test_logs(out, final, result.panels, trainer.iter, final_split)
        _write_report(out, final, cfg, gate, datasets, getattr(evaluator, "details", None))
        print(summary_line(final, train_seconds, final_split), flush=True)
    barrier()
    return final


def eval_dir(run_dir: Path, weights: str | None, split: str) -> Path:
    """Where --eval-only writes: its own folder per weights file and split, inside the run dir."""
    if not weights:
        raise ConfigError("--eval-only needs --weights PATH")
    name = Path(weights).name
    stem = name[: -len(".pth")] if name.endswith(".pth") else name
    return run_dir / "eval" / f"{safe_component(stem, 'weights')}-{split}"


def used_run_files(run_dir: Path) -> list[str]:
    """The files of an earlier run in ``run_dir`` (final weights, checkpoints, metrics)."""
    used = [n for n in ("model_final.pth", "metrics.json", "final_metrics.json") if (run_dir / n).is_file()]
    if list_checkpoints(run_dir / CHECKPOINT_DIR):
        used.append(f"{CHECKPOINT_DIR}/")
    return used


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a run dir that holds another run, unless told to continue or replace it:
    training over it would mix metrics.json and leave old weights for a later --resume."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in output_dir and --overwrite replaces it: give one")
    used = used_run_files(run_dir)
    if used and not (resume or overwrite):
        raise ConfigError(f"output_dir {run_dir} already holds a run ({', '.join(used)}): pass --resume to "
                          f"continue it, --overwrite to replace it, or set another output_dir=DIR")


def clear_run_dir(run_dir: Path) -> None:
    """Delete the files a run wrote (RUN_FILES, RUN_DIRS); the generated data/ and anything else stay."""
    if not run_dir.is_dir():
        return
    for pattern in RUN_FILES:
        for p in run_dir.glob(pattern):
            p.unlink()
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def resume_state(run_dir: Path, resume: str, device) -> tuple[Path, dict]:
    """(path, state) to resume from: the given checkpoint, or the newest intact one in the run dir
    (a newer one that is cut short is skipped, and said so)."""
    if resume != "latest":
        return Path(resume), load_checkpoint(resume, map_location=device)
    found = newest_intact_checkpoint(run_dir, map_location=device)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir / CHECKPOINT_DIR}")
    path, state, skipped = found
    for reason in skipped:
        print(f"warning: skipped {reason}; resuming from the newest intact checkpoint {path.name}", file=sys.stderr)
    return path, state


def warn_config_differs(cfg: Mapping, saved: Mapping | None, path, ignore: tuple[str, ...] = ()) -> None:
    """Say which keys of the config differ from the one the checkpoint was trained with (a warning,
    not a refusal: more epochs or another eval setting are ordinary reasons to differ)."""
    if not isinstance(saved, Mapping):
        return
    diffs = [d for d in config_differences(dict(cfg), dict(saved)) if not d.startswith(ignore)]
    if diffs:
        print(f"warning: the config differs from {path}'s in {len(diffs)} key(s): {describe_differences(diffs)}",
              file=sys.stderr)


def trim_metrics(path: Path, epoch: int) -> None:
    """Keep only metrics.json lines of the epochs a resumed run keeps (evaluations after the
    checkpoint and the last final-split line are written again)."""
    import json

    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("split") == "val" and int(json.loads(line).get("epoch", 0)) <= epoch]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _write_test_logs(out: Path, metrics: dict, panels, step: int, split: str = "test") -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out)) as writer:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value == value:
                writer.add_scalar(f"{split}/{key}", value, step)
        for i, panel in enumerate(panels):
            writer.add_image(f"{split}/panel_{i}", panel, step)


def _write_report(out: Path, metrics: dict, cfg: dict, gate: CascadeGate | None, datasets: dict,
                  details: dict | None = None) -> None:
    """report/ (metrics.json, report.md, plots from the evaluation package) + report.md at the top."""
    from hemo_mtl.categories import LABELS
    from hemo_mtl.evaluation import CONVENTIONS, write_report

    notes = [
        f"config: {cfg['output_dir']}/config.yaml (schedule {cfg['schedule']['name']}, backbone "
        f"{cfg['model'].get('backbone', {}).get('name')}, image_size {cfg['data']['image_size']})",
        f"{cfg['eval']['final_split']} split: {len(datasets[cfg['eval']['final_split']])} slices of "
        f"{len(set(datasets[cfg['eval']['final_split']].patient_ids))} patients",
    ]
    notes.append(f"backbone initialisation: {metrics.get('init', 'random')}")
    if "select/epochs" in metrics:
        sel = cfg["eval"]["select"]
        notes.append(f"select/* = mean over the {sel['k']} epochs with the lowest validation loss after epoch "
                     f"{sel['after_epoch']} (rule {sel['rule']}): epochs {metrics['select/epochs']}; per-epoch "
                     f"records in epochs.json")
    if gate:
        notes.append(
            f"cascade: {gate.describe()}. On {cfg['eval']['final_split']}: "
            f"{metrics.get('cascade/gate/skipped_fraction', float('nan')):.3f} "
            f"of slices skipped, slice sensitivity lost to gating {metrics.get('cascade/gate/sensitivity_lost', float('nan')):.3f}, "
            f"lesions on gated-off slices {metrics.get('cascade/gate/lesions_lost', float('nan')):.3f}."
        )
    conventions = [c for task in ("cls", "seg", "det") for c in CONVENTIONS.get(task, ())]
    if (details or {}).get("cls", {}).get("temperature") is not None:
        t = details["cls"]["temperature"]
        notes.append("temperature scaling (fitted on the validation split, carried in model_final.pth and applied "
                     "by tools/predict.py): T = " + ", ".join(f"{l} {v:.3f}" for l, v in zip(LABELS, t)))
    paths = write_report(out / "report", metrics, details=details, conventions=conventions, notes=notes,
                         title=f"hemo-mtl {cfg['eval']['final_split']} report: {Path(cfg['output_dir']).name}")
    text = Path(paths["report"]).read_text(encoding="utf-8")
    for key, p in paths.items():
        if key not in ("metrics", "report"):
            text = text.replace(f"]({Path(p).name})", f"](report/{Path(p).name})")
    from hemo_mtl.atomic import atomic_write_text

    atomic_write_text(out / "report.md", text)


def summary_line(m: dict, seconds: float, split: str = "test") -> str:
    keys = ("cls/any/f1", "seg/any/dice", "det/bbox/AP50", "det/segm/AP50", "cascade/gate/skipped_fraction")
    parts = [f"{k}={m[k]:.4f}" for k in keys if isinstance(m.get(k), (int, float))]
    return f"{split}: {' '.join(parts)} ({seconds / 60:.1f} min)"


def cli(argv=None) -> int:
    """parse, run, and report user errors (config, checkpoint, paths, a NaN loss) in one line."""
    args = parse_args(argv)
    try:
        return run_main(main, args)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(cli())
