"""MultiTaskModel: one trunk, any subset of heads; named losses in training, predictions in eval.

Partial labels: each head computes its loss only over the slices whose ``has[task]`` is true; when
no slice in the batch has that label the head returns an *exact zero that is still connected* to
every one of its parameters (zero gradient). So the trainer can always sum all losses, and DDP sees
a gradient for every parameter of an active head and never waits on one. Heads switched off with
``set_active_heads`` produce neither losses nor predictions (their parameters get no gradient:
run DDP with ``find_unused_parameters=True`` during such schedule stages).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from hemo_mtl.registry import HEADS

from .backbones import build_backbone
from .defaults import resolve_model_cfg
from .gating import CascadeGate, empty_instances, scatter_outputs, select_features
from .input_prior import InputPrior
from .losses import CONSISTENCY_KEY, build_balancer, consistency_loss
from .seg_vote import vote_any


class MultiTaskModel(nn.Module):
    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module], consistency: float = 0.0,
                 input_prior: InputPrior | None = None, seg_vote: float = 0.0):
        super().__init__()
        if not heads:
            raise ValueError("MultiTaskModel needs at least one head")
        self.input_prior = input_prior  # appends a non-learned channel to the input (model.input_prior)
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.consistency = float(consistency)
        self.seg_vote = float(seg_vote)  # the segmenter's share of the eval p(any) (seg_vote.vote_any)
        self._active = set(self.heads)
        self.balancer: nn.Module | None = None

    @property
    def active_heads(self) -> set[str]:
        return set(self._active)

    def set_active_heads(self, names) -> None:
        """Only these heads (config keys, e.g. {"cls", "seg"}) run; schedules call this per stage."""
        names = {names} if isinstance(names, str) else set(names)
        unknown = names - set(self.heads)
        if unknown:
            raise KeyError(f"unknown head(s) {sorted(unknown)}; this model has {sorted(self.heads)}")
        if not names:
            raise ValueError("set_active_heads needs at least one head")
        self._active = names

    @property
    def loss_tasks(self) -> dict[str, str]:
        """Loss key -> task (cls/seg/det) for every loss any head can return (for balancing)."""
        tasks = {}
        for head in self.heads.values():
            names = getattr(head, "loss_names", (f"loss_{head.task}",))
            tasks.update({name: head.task for name in names})
        if self.consistency > 0:
            tasks[CONSISTENCY_KEY] = "consistency"
        return tasks

    def forward(self, batch: dict, gate: CascadeGate | None = None) -> dict:
        """Training: named losses. Eval: predictions; with a ``gate`` the heads of its tasks run only on
        the slices it keeps (``gating``), and ``gate_passed`` says which."""
        active = [k for k in self.heads if k in self._active]
        with_fpn = any(self.heads[k].uses_fpn for k in active)
        if self.input_prior is not None:  # the heads that look at the image see the channel too
            batch = {**batch, "image": self.input_prior(batch["image"])}
        feats = self.backbone(batch["image"], with_fpn=with_fpn)
        gated = [k for k in active if gate is not None and self.heads[k].task in gate.heads]
        if gated and self.training:
            raise ValueError("the cascade gate is an inference step; call model.eval() first")
        if self.seg_vote > 0 and any(self.heads[k].task == "seg" for k in gated):
            raise ValueError("model.seg_vote mixes the segmenter into p(any), so a gate on p(any) cannot "
                             "gate the segmenter; set model.seg_vote=0 or leave seg out of the gate")
        out: dict = {}
        for key in active:
            if key not in gated:
                out.update(self.heads[key](feats, batch))
        if gated:
            if "cls_prob" not in out:
                raise ValueError(f"the cascade gate needs the classification head active; active: {active}")
            keep = gate.keep(out["cls_prob"][:, 0])
            index = keep.nonzero().flatten()
            part: dict = {}
            for key in gated:
                part.update(self.heads[key](select_features(feats, index), {"image": batch["image"][index]}))
            image = batch["image"]
            out.update(scatter_outputs(part, keep, empty_instances(image.shape[-2:], image)))
            out["gate_passed"] = keep
        if not self.training:
            if self.seg_vote > 0 and "cls_prob" in out and "seg_prob" in out:
                out["cls_prob"] = vote_any(out["cls_prob"], out["seg_prob"], self.seg_vote)
            return out
        if self.consistency > 0 and "cls_logits" in out:
            out[CONSISTENCY_KEY] = consistency_loss(out["cls_logits"], out.get("seg_logits"))
        return {k: v for k, v in out.items() if k.startswith("loss_")}


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def set_active_heads(model: nn.Module, heads: Iterable[str]) -> None:
    """Tell a multi-head model which heads to run; single-purpose models without the method are fine."""
    fn = getattr(unwrap(model), "set_active_heads", None)
    if fn is not None:
        fn(set(heads))


def build_model(model_cfg: dict | None = None) -> MultiTaskModel:
    """Build from the ``model:`` section (filled and checked against ``MODEL_SCHEMA``); ``model.balancer``
    is the ``LossBalancer`` for ``model.loss`` (a submodule, so learnable log-variances are in
    ``model.parameters()`` and in checkpoints)."""
    cfg = resolve_model_cfg(model_cfg)
    backbone = build_backbone(cfg["backbone"])
    heads = {key: HEADS.build(section["type"], backbone, **section) for key, section in cfg["heads"].items()}
    prior = cfg["input_prior"]
    model = MultiTaskModel(backbone, heads, consistency=cfg["loss"]["consistency"],
                           input_prior=InputPrior(prior["kind"], prior["channel"]) if prior["kind"] else None,
                           seg_vote=cfg["seg_vote"])
    model.balancer = build_balancer(cfg["loss"], model.loss_tasks)
    model.cfg = cfg
    return model


@torch.no_grad()
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
