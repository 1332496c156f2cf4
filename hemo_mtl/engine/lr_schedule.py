"""Learning rate by training progress: linear warmup, then cosine or step decay, restarted per stage.

Multi-stage schedules (curriculum, cascade) restart the schedule at each stage boundary, so every
stage warms up and decays over its own length. The factor is a function of (progress through the
stage, iterations since the stage started) alone, so resume needs nothing but those two numbers.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import Mapping

import torch

SCHEDULE_NAMES = ("cosine", "step", "constant")


def lr_factor(progress: float, stage_iter: int, cfg: Mapping) -> float:
    """Multiplier of the base lr at ``progress`` in [0, 1] through a stage, ``stage_iter`` steps in."""
    name = cfg.get("name", "cosine")
    progress = min(max(float(progress), 0.0), 1.0)
    if name == "cosine":
        floor = float(cfg.get("min_lr_factor", 0.0))
        main = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif name == "step":
        main = float(cfg.get("gamma", 0.1)) ** bisect_right(sorted(cfg.get("steps", [])), progress)
    elif name == "constant":
        main = 1.0
    else:
        raise ValueError(f"train.lr_schedule.name must be one of {', '.join(SCHEDULE_NAMES)}, got {name!r}")
    warmup = int(cfg.get("warmup_iters", 0))
    if stage_iter < warmup:
        start = float(cfg.get("warmup_factor", 0.001))
        main *= start + (1.0 - start) * stage_iter / warmup
    return main


class WarmupLRScheduler:
    """Sets each param group's lr to ``group["base_lr"] * lr_factor(progress, stage_iter)``.

    Param groups added later (modules unfrozen by a later stage) take their ``base_lr`` from ``lr``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: Mapping):
        lr_factor(0.0, 0, cfg)  # fail on a bad name now, not mid-run
        self.optimizer, self.cfg = optimizer, dict(cfg)
        self.progress, self.stage_iter = 0.0, 0
        self.step(0.0, 0)

    def step(self, progress: float, stage_iter: int) -> None:
        self.progress, self.stage_iter = float(progress), int(stage_iter)
        f = lr_factor(progress, stage_iter, self.cfg)
        for group in self.optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * f

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"progress": self.progress, "stage_iter": self.stage_iter}

    def load_state_dict(self, state: Mapping) -> None:
        self.step(float(state["progress"]), int(state["stage_iter"]))
