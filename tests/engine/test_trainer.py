"""The loop: exact resume on CPU, NaN guard, accumulation, EMA; on the toy model (seconds)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from hemo_mtl.config import DEFAULTS
from hemo_mtl.data.dataset import collate_samples
from hemo_mtl.engine import (CheckpointHook, LRScheduleHook, NonFiniteLossError, Trainer, build_schedule,
                             latest_checkpoint, load_checkpoint)

from .toy import ToyDataset, ToyModel

torch.set_num_threads(2)


def make_trainer(out, schedule_cfg=None, epochs=4, model=None, dataset=None, batch_size=4, **train):
    cfg = copy.deepcopy(DEFAULTS["train"])
    lr_schedule = {**cfg["lr_schedule"], "warmup_iters": 3, **train.pop("lr_schedule", {})}
    cfg.update({"lr": 0.02, "grad_clip": 5.0, **train, "lr_schedule": lr_schedule})
    torch.manual_seed(0)
    model = model or ToyModel()
    schedule = build_schedule(schedule_cfg or {"name": "joint"}, epochs, ["cls", "seg"])
    trainer = Trainer(model, dataset or ToyDataset(), schedule=schedule, train_cfg=cfg, batch_size=batch_size,
                      collate_fn=collate_samples, seed=3, output_dir=out)
    trainer.register_hooks([LRScheduleHook(), CheckpointHook(period=1, keep=10)])
    return trainer


CURRICULUM = {"name": "curriculum", "stages": [
    {"name": "cls", "epochs": 2, "heads": ["cls"], "labels": "cls"},
    {"name": "seg", "epochs": 2, "heads": ["cls", "seg"], "freeze": ["heads.cls"], "labels": "mask",
     "neg_fraction": 0.5},
]}


HARD_NEGATIVES = {"name": "cascade", "cascade": {"cls_epochs": 1, "neg_fraction": 0.5, "hard_negatives": 0.5}}


@pytest.mark.parametrize("schedule_cfg,extra", [
    ({"name": "joint"}, {"ema": {"enabled": True, "decay": 0.9, "tau": 0.0}}),
    (CURRICULUM, {"accum_steps": 2, "optimizer": "sgd"}),
    (HARD_NEGATIVES, {}),
], ids=["joint-ema", "curriculum-accum-sgd", "cascade-hard-negatives"])
def test_resume_is_exact(tmp_path, schedule_cfg, extra):
    straight = make_trainer(tmp_path / "a", schedule_cfg, **extra)
    straight.train()

    first = make_trainer(tmp_path / "b", schedule_cfg, **extra)
    first.train(until_epoch=2)
    ckpt = latest_checkpoint(tmp_path / "b")
    assert ckpt.name == "model_0002.pth"

    torch.manual_seed(123)  # a different init and RNG state: resume must overwrite all of it
    resumed = make_trainer(tmp_path / "b", schedule_cfg, model=ToyModel(), **extra)
    resumed.resume(ckpt)
    assert resumed.start_epoch == 2 and resumed.iter == first.iter
    resumed.train()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if straight.ema is not None:
        for k, v in straight.ema.state_dict().items():
            assert torch.equal(v, resumed.ema.state_dict()[k]), k
    assert straight.iter == resumed.iter
    # and training did something
    assert not torch.equal(a["heads.seg.weight"], make_trainer(tmp_path / "c", schedule_cfg).model.state_dict()["heads.seg.weight"])


def test_checkpoint_loads_weights_only_with_every_part(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, ema={"enabled": True, "decay": 0.9, "tau": 0.0})
    trainer.train()
    state = load_checkpoint(latest_checkpoint(tmp_path))  # torch.load(weights_only=True) inside
    for key in ("model", "optimizer", "lr_scheduler", "scaler", "ema", "epoch", "iter", "rng", "config"):
        assert key in state, key
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["epoch"] == 1 and state["iter"] == len(ToyDataset()) // 4


def test_nan_guard_names_the_task_and_keeps_last_good_checkpoint(tmp_path):
    per_epoch = len(ToyDataset()) // 4
    trainer = make_trainer(tmp_path, epochs=4, model=ToyModel(nan_at=per_epoch * 2 + 2))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.train()
    msg = str(info.value)
    assert "loss_seg" in msg and "task seg" in msg and "model_0002.pth" in msg
    assert latest_checkpoint(tmp_path).name == "model_0002.pth"
    good = load_checkpoint(latest_checkpoint(tmp_path))
    assert all(torch.isfinite(v).all() for v in good["model"].values() if v.is_floating_point())
    assert trainer.failed


def test_gradient_accumulation_matches_the_big_batch(tmp_path):
    """No BN/dropout effects: 2 x 4 slices accumulated == one batch of 8 (mean losses, SGD)."""
    def run(out, batch_size, accum):
        model = ToyModel()
        model.backbone[1] = torch.nn.Identity()  # BatchNorm sees the micro-batch: remove it
        model.backbone[3] = torch.nn.Identity()
        dataset = ToyDataset(noise=0.0)
        t = make_trainer(out, epochs=2, model=model, dataset=dataset, batch_size=batch_size, accum_steps=accum,
                         optimizer="sgd", grad_clip=None, lr_schedule={"name": "constant", "warmup_iters": 0})
        t.train()
        return t.model.state_dict()

    torch.manual_seed(0)
    big = run(tmp_path / "big", 8, 1)
    torch.manual_seed(0)
    small = run(tmp_path / "small", 4, 2)
    for k in big:
        torch.testing.assert_close(big[k], small[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tau", [0.0, 3.0])
def test_ema_weights_follow_the_ramped_average_of_every_step(tmp_path, tau):
    """The shipped EMA equals a by-hand average of the weights after each optimizer step:
    w_ema = w_1, then w_ema = d_n w_ema + (1 - d_n) w_n with d_n = decay (1 - exp(-(n - 1) / tau))."""
    from hemo_mtl.engine import HookBase

    class Snapshot(HookBase):
        def __init__(self):
            self.weights = []

        def after_step(self):
            self.weights.append({k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()})

    t = make_trainer(tmp_path, epochs=2, ema={"enabled": True, "decay": 0.8, "tau": tau})
    snap = Snapshot()
    t.register_hooks([snap])
    t.train()
    assert len(snap.weights) == t.iter > 3
    expected = {k: v.clone() for k, v in snap.weights[0].items()}
    for n, w in enumerate(snap.weights[1:], start=1):
        d = 0.8 * (1 - math.exp(-n / tau)) if tau else 0.8
        for k, v in w.items():
            expected[k] = v.clone() if not v.is_floating_point() else d * expected[k] + (1 - d) * v
    got = t.eval_model().state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(got["heads.seg.weight"], snap.weights[-1]["heads.seg.weight"])  # it is an average


def test_a_dropped_trainer_is_freed_without_the_cycle_collector(tmp_path):
    """Hooks must not keep their trainer alive: one left for the cycle collector took its DDP wrapper
    into interpreter shutdown, where torchrun's ranks aborted."""
    import gc
    import weakref

    from hemo_mtl.engine import CheckpointHook, LRScheduleHook

    trainer = make_trainer(tmp_path, epochs=1)
    trainer.register_hooks([LRScheduleHook(), CheckpointHook(period=1, keep=2)])
    trainer.train()
    alive = weakref.ref(trainer)
    gc.disable()
    try:
        del trainer
        assert alive() is None
    finally:
        gc.enable()


def test_pcgrad_receives_one_gradient_source_per_task(tmp_path):
    """Two loss terms of one task (like Mask R-CNN's) are summed before PCGrad projects task vs task."""
    from hemo_mtl.models import LossBalancer

    class TwoTermModel(ToyModel):
        def forward(self, batch):
            out = super().forward(batch)
            if self.training and "loss_seg" in out:
                out["loss_seg_extra"] = 0.5 * out["loss_seg"]
            return out

    seen = []

    def spy(per_task, params):
        seen.append({k: float(v.detach()) for k, v in per_task.items()})
        sum(per_task.values()).backward()

    torch.manual_seed(0)
    model = TwoTermModel()
    balancer = LossBalancer({"loss_cls": "cls", "loss_seg": "seg", "loss_seg_extra": "seg"})
    cfg = copy.deepcopy(DEFAULTS["train"])
    trainer = Trainer(model, ToyDataset(), schedule=build_schedule({"name": "joint"}, 1, ["cls", "seg"]),
                      train_cfg=cfg, batch_size=4, collate_fn=collate_samples, seed=3, output_dir=tmp_path,
                      balancer=balancer, pcgrad=spy)
    trainer.register_hooks([LRScheduleHook()])
    batch = collate_samples([trainer.train_set[i] for i in range(4)])
    model.train()
    torch.manual_seed(5)  # same dropout draw in both forwards
    losses = model(batch)
    torch.manual_seed(5)
    trainer.run_step(batch, last_in_epoch=True)
    assert sorted(seen[0]) == ["cls", "seg"]
    assert seen[0]["seg"] == pytest.approx(1.5 * float(losses["loss_seg"]), rel=1e-5)


def test_classifier_scores_are_the_eval_p_any_and_leave_the_trainer_as_it_was(tmp_path):
    data = ToyDataset(noise=0.0)
    trainer = make_trainer(tmp_path, HARD_NEGATIVES, epochs=2, dataset=data)
    trainer.train(until_epoch=1)
    trainer._enter_stage(1)
    trainer._train_mode()
    indices = np.array([0, 3, 5, 6, 11, 20, 21])
    scores = trainer.classifier_scores(indices)
    assert trainer.model.training and trainer.model.active == {"cls", "seg"}
    model = copy.deepcopy(trainer.model).eval()
    model.set_active_heads({"cls"})
    with torch.no_grad():
        want = model({"image": torch.stack([data[i]["image"] for i in indices])})["cls_prob"][:, 0]
    assert scores == pytest.approx(want.numpy(), abs=1e-6)


@pytest.mark.parametrize("inside_model", [True, False], ids=["balancer-in-model", "balancer-beside-model"])
def test_balancer_log_variances_are_never_decayed(tmp_path, inside_model):
    """Kendall log-variances get weight_decay 0 wherever the balancer lives; the model's weights keep it."""
    from hemo_mtl.models import LossBalancer

    torch.manual_seed(0)
    model = ToyModel()
    balancer = LossBalancer({"loss_cls": "cls", "loss_seg": "seg"}, "uncertainty")
    if inside_model:
        model.balancer = balancer
    cfg = {**copy.deepcopy(DEFAULTS["train"]), "weight_decay": 0.1}
    trainer = Trainer(model, ToyDataset(), schedule=build_schedule({"name": "joint"}, 1, ["cls", "seg"]),
                      train_cfg=cfg, batch_size=4, collate_fn=collate_samples, seed=3, output_dir=tmp_path,
                      balancer=balancer)
    decay_of = {id(p): g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    log_vars = list(balancer.parameters())
    assert log_vars and all(decay_of[id(p)] == 0.0 for p in log_vars)
    others = [p for n, p in model.named_parameters() if not n.startswith("balancer.")]
    assert others and all(decay_of[id(p)] == 0.1 for p in others)
    assert len(decay_of) == len({id(p) for p in [*others, *log_vars]})  # each parameter in one group
