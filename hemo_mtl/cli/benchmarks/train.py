#!/usr/bin/env python
"""Training throughput: slices/s, and how the time splits between data loading and compute.

    python tools/benchmark.py train --config configs/mtl_joint.yaml --iters 20 [key.sub=value ...]

Runs ``--iters`` training steps of the config's model on its phantom/converted data (after
``--warmup`` steps that are not timed) and prints one table row per heads subset: data time (waiting
for the next batch), compute time (forward + backward + optimizer step) and slices/s.
"""
from __future__ import annotations

import argparse
import time

import torch

from hemo_mtl.config import load_config
from hemo_mtl.engine import Trainer, build_schedule, resolve_device, seed_everything
from hemo_mtl.engine.data import build_datasets, prepare_data_dir
from hemo_mtl.engine.trainer import HookBase


class _Stop(Exception):
    pass


class _Timer(HookBase):
    """Collects the trainer's data/step times after ``warmup`` steps; stops after ``iters`` more."""

    def __init__(self, warmup: int, iters: int):
        self.warmup, self.iters = warmup, iters
        self.data, self.step, self.slices = [], [], 0

    def after_step(self) -> None:
        t = self.trainer
        if t.iter >= self.warmup:
            latest = t.storage.latest()
            self.data.append(latest["train/data_time"][0])
            self.step.append(latest["train/step_time"][0])
            self.slices += t.batch_size
        if len(self.step) >= self.iters:
            raise _Stop


def measure(cfg: dict, heads: list[str], warmup: int, iters: int) -> dict:
    from hemo_mtl.data.dataset import collate_samples
    from hemo_mtl.data.splits import load_splits
    from hemo_mtl.models import build_model

    data_dir = prepare_data_dir(cfg)
    train = build_datasets(cfg, data_dir, load_splits(data_dir / "splits.json"))["train"]
    model = build_model(cfg["model"])
    schedule = build_schedule({"name": "joint"}, 1000, heads)
    device = resolve_device(cfg["train"]["device"])
    trainer = Trainer(model, train, schedule=schedule, train_cfg=cfg["train"], batch_size=int(cfg["data"]["batch_size"]),
                      collate_fn=collate_samples, seed=int(cfg["seed"]), num_workers=int(cfg["data"]["num_workers"]),
                      balancer=getattr(model, "balancer", None), device=device)
    timer = _Timer(warmup, iters)
    trainer.register_hooks([timer])
    start = time.perf_counter()
    try:
        trainer.train()
    except _Stop:
        pass
    data, step = sum(timer.data), sum(timer.step)
    return {"heads": "+".join(heads), "data_s": data, "compute_s": step, "wall_s": time.perf_counter() - start,
            "slices_per_s": timer.slices / max(data + step, 1e-9), "data_share": data / max(data + step, 1e-9)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mtl_joint.yaml")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--per-head", action="store_true", help="also time each head alone")
    p.add_argument("opts", nargs="*")
    args = p.parse_args(argv)
    cfg = load_config(args.config, ["train.progress=false", *args.opts])
    if cfg["train"].get("num_threads"):
        torch.set_num_threads(int(cfg["train"]["num_threads"]))
    seed_everything(int(cfg["seed"]))
    heads = list(cfg["model"]["heads"])
    subsets = [heads] + ([[h] for h in heads] if args.per_head and len(heads) > 1 else [])
    rows = [measure(cfg, h, args.warmup, args.iters) for h in subsets]
    print(f"config {args.config}: batch {cfg['data']['batch_size']}, image {cfg['data']['image_size']}, "
          f"workers {cfg['data']['num_workers']}, threads {torch.get_num_threads()}, {args.iters} timed steps")
    print(f"{'heads':<16}{'slices/s':>10}{'data s':>10}{'compute s':>11}{'data %':>8}")
    for r in rows:
        print(f"{r['heads']:<16}{r['slices_per_s']:>10.2f}{r['data_s']:>10.2f}{r['compute_s']:>11.2f}"
              f"{100 * r['data_share']:>7.1f}%")
    return rows


if __name__ == "__main__":
    main()
