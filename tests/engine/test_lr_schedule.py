"""Warmup + cosine / step factors against hand computation; per-stage restart in the trainer."""
from __future__ import annotations

import math

import pytest
import torch

from hemo_mtl.engine import WarmupLRScheduler, lr_factor


def test_cosine_with_warmup_by_hand():
    cfg = {"name": "cosine", "warmup_iters": 4, "warmup_factor": 0.1, "min_lr_factor": 0.0}
    assert lr_factor(0.0, 0, cfg) == pytest.approx(0.1)
    assert lr_factor(0.0, 2, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(0.5, 10, cfg) == pytest.approx(0.5)
    assert lr_factor(0.25, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(1.0, 99, {**cfg, "min_lr_factor": 0.01}) == pytest.approx(0.01)


def test_step_and_errors():
    cfg = {"name": "step", "steps": [0.5, 0.8], "gamma": 0.1, "warmup_iters": 0}
    assert [lr_factor(p, 100, cfg) for p in (0.0, 0.49, 0.5, 0.79, 0.8, 1.0)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="cosine, step, constant"):
        lr_factor(0, 0, {"name": "poly"})


def test_scheduler_sets_every_group_and_new_groups():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 0.1}], lr=0.1)
    sched = WarmupLRScheduler(opt, {"name": "cosine", "warmup_iters": 0, "min_lr_factor": 0.0})
    sched.step(0.5, 10)
    opt.add_param_group({"params": [p2], "lr": 0.2})
    sched.step(0.5, 11)
    assert sched.get_last_lr() == pytest.approx([0.05, 0.1])
    state = sched.state_dict()
    sched.step(0.9, 12)
    sched.load_state_dict(state)
    assert sched.get_last_lr() == pytest.approx([0.05, 0.1])
