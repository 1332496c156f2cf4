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
import sys
import time
from pathlib import Path

# OMP_WAIT_POLICY stays the user's: PASSIVE (threads sleep at once between parallel regions) made a
# training step 35% slower on 2 idle cores than libgomp's default (spin briefly, then sleep).

import torch

from hemo_mtl.cli_errors import run_main
from hemo_mtl.config import load_config
from hemo_mtl.engine import Trainer, build_schedule, init_distributed, resolve_device, seed_everything
from hemo_mtl.engine.data import build_datasets, eval_loader, prepare_data_dir, run_splits
from hemo_mtl.engine.distributed import barrier, cleanup, threads_per_rank
from hemo_mtl.engine.final import (final_metrics, save_final_model, saved_model, summary_line, trained_model,
                                   write_final_outputs)
from hemo_mtl.engine.run_dir import open_run_dir, resume_training, write_run_splits
from hemo_mtl.engine.run_eval import RunEvaluation, check_eval_settings, training_hooks


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
    """One run (or --eval-only evaluation); returns the final split's metrics ({} on ranks other than 0)."""
    # 1. config, device, process group, seeds, the folder this run writes
    cfg = load_config(args.config, args.opts)
    check_eval_settings(cfg)
    tcfg, final_split = cfg["train"], cfg["eval"]["final_split"]
    device = resolve_device(tcfg["device"], int(os.environ.get("LOCAL_RANK", "0")))
    dist = init_distributed(device)
    if device.type == "cpu" and tcfg.get("num_threads"):
        torch.set_num_threads(threads_per_rank(tcfg["num_threads"]))
    seed_everything(int(cfg["seed"]) + dist.rank, deterministic=bool(tcfg["deterministic"]))
    out = open_run_dir(cfg, dist, resume=bool(args.resume), overwrite=args.overwrite, eval_only=args.eval_only,
                       weights=args.weights)

    # 2. data: generated phantom or a converted dataset, patient-wise splits
    from hemo_mtl.data.splits import load_splits

    data_dir = prepare_data_dir(cfg, dist)
    splits = run_splits(cfg, data_dir, load_splits(data_dir / "splits.json"))
    if dist.is_main:
        write_run_splits(cfg, data_dir, splits, out)
    datasets = build_datasets(cfg, data_dir, splits)
    val_loader, final_loader = eval_loader(datasets["val"], cfg), eval_loader(datasets[final_split], cfg)

    # 3. model, schedule, trainer and its hooks
    from hemo_mtl.data.dataset import collate_samples
    from hemo_mtl.models import build_model
    from hemo_mtl.models.losses import pcgrad_backward

    model = build_model(cfg["model"])
    schedule = build_schedule(cfg["schedule"], int(tcfg["epochs"]), list(model.heads))
    trainer = Trainer(
        model, datasets["train"], schedule=schedule, train_cfg=tcfg, batch_size=int(cfg["data"]["batch_size"]),
        collate_fn=collate_samples, seed=int(cfg["seed"]), num_workers=int(cfg["data"]["num_workers"]),
        balancer=getattr(model, "balancer", None),
        pcgrad=pcgrad_backward if cfg["model"].get("loss", {}).get("pcgrad") else None,
        device=device, output_dir=out, config=cfg, dist_info=dist,
    )
    evaluation = RunEvaluation(cfg, model, device, amp=trainer.amp, channels_last=trainer.channels_last)
    trainer.register_hooks(training_hooks(cfg, out, evaluation, schedule, val_loader, final_loader))

    # 4. train (or load the weights to evaluate)
    start = time.perf_counter()
    if args.eval_only:
        to_score = saved_model(model, schedule, cfg, args.weights, device)
    else:
        if args.resume:
            resume_training(trainer, model, out, args.resume, device, cfg)
        trainer.train()
        to_score = trained_model(trainer, schedule)
    train_seconds = time.perf_counter() - start

    # 5. final evaluation on eval.final_split: model_final.pth, metrics, tensorboard, report
    final: dict = {}
    if dist.is_main:
        score = evaluation.final(to_score.model, to_score.gate, to_score.temperature, val_loader, final_loader)
        final = final_metrics(score.result.metrics, cfg, splits, trainer.extra_state)
        if not args.eval_only:
            save_final_model(out / "model_final.pth", to_score.model, cfg, score.gate, score.temperature)
            final["time/train_seconds"] = round(train_seconds, 1)
        write_final_outputs(out, final, score, cfg, datasets, epoch=trainer.epochs_done, step=trainer.iter,
                            weights=args.weights if args.eval_only else None)
        print(summary_line(final, train_seconds, final_split), flush=True)
    barrier()
    return final


def cli(argv=None) -> int:
    """parse, run, and report user errors (config, checkpoint, paths, a NaN loss) in one line."""
    args = parse_args(argv)
    try:
        return run_main(main, args)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(cli())
