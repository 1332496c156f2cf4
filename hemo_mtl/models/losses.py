"""Per-task loss pieces and multi-task loss balancing.

Balancing (``model.loss.balancing``) works on *tasks* (cls, seg, det; det's RPN/RoI/mask terms are
one task), not on every loss term:

- ``static``: total = sum_k w_k L_k, weights by loss key or by task name (default 1).
- ``uncertainty`` (Kendall, Gal & Cipolla 2018): total = sum_t exp(-s_t) L_t + s_t with learnable
  log-variances s_t; the total can go negative. A task whose loss is exactly 0 in a batch (its labels
  are absent: heads return an exact zero) skips its ``+ s_t`` term, else s_t would drift down on
  batches that never saw that task.
- ``dwa`` (Liu, Johns & Davison 2019): w_t = T_count * softmax(r_t / temperature), r_t =
  L_t(e-1) / L_t(e-2) from per-epoch means given to ``update_epoch``; 1 for the first two epochs.
- PCGrad (Yu et al. 2020) is a backward pass, not a weighting: ``pcgrad_backward(per_task, params)``
  with ``per_task = balancer.per_task(losses)`` when ``loss.pcgrad`` is true.

The optional consistency term (``loss.consistency`` > 0) asks that P(any) >= max subtype probability
and that a segmented bleed implies ``any``; it needs no labels and is weighted statically.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .seg_vote import surest_bleed

BALANCING = ("static", "uncertainty", "dwa")
CONSISTENCY_KEY = "loss_consistency"


def zero_loss(*sources) -> torch.Tensor:
    """An exact 0 that reaches every parameter/tensor given (modules or tensors) with zero gradient.

    Returned for a task whose labels are absent from the batch: the trainer can sum it and DDP sees
    a gradient (of zeros) for every parameter of that head, so it neither errors nor hangs.
    """
    parts = []
    for src in sources:
        tensors = src.parameters() if isinstance(src, nn.Module) else [src]
        parts += [t.sum() for t in tensors if t.requires_grad]
    if not parts:
        raise ValueError("zero_loss needs at least one tensor or parameter that requires grad")
    return torch.stack(parts).sum() * 0.0


def boxed_slices(head: nn.Module, feats, batch: dict) -> tuple[list[int], dict | None]:
    """Indices of the slices with box labels, or (``[]``, every loss of ``head`` as a connected exact 0)
    when the batch has none: the detection heads' shared partial-label rule."""
    index = torch.nonzero(batch["has"]["boxes"].bool()).flatten().tolist()
    if index:
        return index, None
    zero = zero_loss(head, *feats.fpn.values())
    return index, {name: zero for name in head.loss_names}


def masked_bce_with_logits(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                           pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the known labels only (``valid`` = 1); exact 0 with zero grad when none is known."""
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction="none")
    return (bce * valid).sum() / valid.sum().clamp(min=1.0)


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, include_background: bool = False,
                   smooth: float = 1.0, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in ``target``; ``prob`` (N,K,H,W), ``target`` (N,H,W).

    Each class's Dice is pooled over the whole batch (sums over N,H,W). Classes absent from the
    batch's target are left out: their Dice would be ``smooth / (sum of their probabilities + smooth)``,
    whose gradient drives every absent subtype to zero everywhere far harder than cross-entropy
    (with five sparse subtypes most are absent from most batches). Cross-entropy still penalises
    false positives of absent classes. No present class -> an exact 0 connected to ``prob``.
    ``valid`` (N,H,W) bool: only those pixels count (a pixel whose class is unknown is neither a
    hit nor a false positive of any class); ``target`` must hold a class 0..K-1 on every pixel.
    """
    onehot = F.one_hot(target, prob.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    if valid is not None:
        keep = valid[:, None].to(prob.dtype)
        prob, onehot = prob * keep, onehot * keep
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    present = onehot.sum(dims) > 0
    if not include_background:
        dice, present = dice[1:], present[1:]
    if not bool(present.any()):
        return prob.sum() * 0.0
    return 1.0 - dice[present].mean()


def subtype_partial_cross_entropy(logits: torch.Tensor, target: torch.Tensor, unknown: int,
                                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-mean cross-entropy where ``target == unknown`` marks a bleed pixel of unknown subtype.

    ``logits`` (N,K,H,W) with class 0 = background and 1..K-1 the subtypes. A known pixel gets the
    usual -log p_y; an unknown-subtype pixel gets -log(p_1 + .. + p_{K-1}) = -log(1 - p_0), computed
    as logsumexp(all logits) - logsumexp(subtype logits): it teaches bleed vs background, scores
    every split of the bleed among subtypes the same and leaves the split to the pixels that know it.
    ``weight`` (K,) as in ``F.cross_entropy`` (a weighted mean); an unknown pixel weighs the mean of
    the subtype weights. Without unknown pixels this is ``F.cross_entropy``.
    """
    is_unknown = target == unknown
    if not bool(is_unknown.any()):
        return F.cross_entropy(logits, target, weight=weight)
    known_target = target.masked_fill(is_unknown, 0)
    logp = logits.log_softmax(dim=1)
    nll = torch.where(is_unknown, -torch.logsumexp(logp[:, 1:], dim=1),
                      -logp.gather(1, known_target[:, None]).squeeze(1))
    if weight is None:
        return nll.mean()
    w = weight.to(logits.dtype)
    pixel_w = torch.where(is_unknown, w[1:].mean(), w[known_target])
    return (pixel_w * nll).sum() / pixel_w.sum()


def consistency_loss(cls_logits: torch.Tensor, seg_logits: torch.Tensor | None = None) -> torch.Tensor:
    """Penalty for P(any) < max_k P(subtype_k) and for P(any) < the most confident bleed pixel."""
    prob = cls_logits.sigmoid()
    p_any = prob[:, 0]
    penalty = F.relu(prob[:, 1:].max(dim=1).values - p_any)
    if seg_logits is not None:
        penalty = penalty + F.relu(surest_bleed(seg_logits.softmax(dim=1)) - p_any)
    return penalty.mean()


class LossBalancer(nn.Module):
    """Weights named raw losses into one total: ``total, weights = balancer(losses)``.

    ``tasks`` maps each loss key to its task (``MultiTaskModel.loss_tasks``); an unknown key is its
    own task. ``weights`` (static factors, also applied inside the other methods) may be keyed by
    loss key or task name.
    """

    def __init__(self, tasks: dict[str, str], method: str = "static", weights: dict | None = None,
                 temperature: float = 2.0, pcgrad: bool = False, consistency: float = 0.0):
        super().__init__()
        if method not in BALANCING:
            raise ValueError(f"model.loss.balancing must be one of {BALANCING}, got {method!r}")
        self.method = method
        self.tasks = dict(tasks)
        self.static = dict(weights or {})
        self.temperature = float(temperature)
        self.pcgrad = bool(pcgrad)
        self.consistency = float(consistency)
        names = sorted({t for k, t in self.tasks.items() if k != CONSISTENCY_KEY})
        self.task_names = names
        self.log_vars = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(())) for t in names} if method == "uncertainty" else {}
        )
        self.history: list[dict[str, float]] = []  # per-epoch task means, for DWA

    def task_of(self, key: str) -> str:
        return self.tasks.get(key, key)

    def static_weight(self, key: str) -> float:
        if key == CONSISTENCY_KEY:
            return self.consistency
        return float(self.static.get(key, self.static.get(self.task_of(key), 1.0)))

    def task_weights(self) -> dict[str, torch.Tensor | float]:
        """The current per-task factor: exp(-s_t) (uncertainty), DWA weight, or 1 (static)."""
        if self.method == "uncertainty":
            return {t: torch.exp(-s) for t, s in self.log_vars.items()}
        if self.method == "dwa" and len(self.history) >= 2:
            prev, prev2 = self.history[-1], self.history[-2]
            names = [t for t in self.task_names if t in prev and t in prev2]
            ratios = torch.tensor([prev[t] / max(prev2[t], 1e-12) for t in names])
            w = len(names) * torch.softmax(ratios / self.temperature, dim=0)
            return {t: float(v) for t, v in zip(names, w)}
        return {}

    def per_task(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted loss per task (their sum is the total); what ``pcgrad_backward`` takes."""
        factors = self.task_weights()
        grouped: dict[str, torch.Tensor] = {}
        for key, value in losses.items():
            task = self.task_of(key)
            w = self.static_weight(key)
            grouped[task] = grouped.get(task, 0.0) + w * value
        out = {}
        for task, value in grouped.items():
            if task in self.log_vars:
                s = self.log_vars[task]
                value = torch.exp(-s) * value + (s if bool(value.detach() != 0) else 0.0 * s)
            else:
                value = factors.get(task, 1.0) * value
            out[task] = value
        return out

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if not losses:
            raise ValueError("LossBalancer got no losses (are all heads inactive?)")
        total = torch.stack(list(self.per_task(losses).values())).sum()
        factors = self.task_weights()
        weights = {}
        for key in losses:
            f = factors.get(self.task_of(key), 1.0) if key != CONSISTENCY_KEY else 1.0
            weights[key] = self.static_weight(key) * float(f.detach() if torch.is_tensor(f) else f)
        return total, weights

    def update_epoch(self, mean_losses: dict[str, float]) -> None:
        """Record one epoch's mean raw losses (by loss key); DWA weights follow from the last two."""
        per_task: dict[str, float] = {}
        for key, value in mean_losses.items():
            if key == CONSISTENCY_KEY:
                continue
            task = self.task_of(key)
            per_task[task] = per_task.get(task, 0.0) + self.static_weight(key) * float(value)
        self.history = (self.history + [per_task])[-2:]

    def get_extra_state(self):
        return {"history": self.history}

    def set_extra_state(self, state) -> None:
        self.history = list(state.get("history", []))


def build_balancer(loss_cfg: dict, tasks: dict[str, str]) -> LossBalancer:
    """From the ``model.loss`` section and the model's ``loss_tasks``."""
    return LossBalancer(
        tasks,
        method=loss_cfg.get("balancing", "static"),
        weights=loss_cfg.get("weights"),
        temperature=loss_cfg.get("dwa_temperature", 2.0),
        pcgrad=loss_cfg.get("pcgrad", False),
        consistency=loss_cfg.get("consistency", 0.0),
    )


def pcgrad_backward(losses: dict[str, torch.Tensor], params: Iterable[torch.Tensor],
                    generator: torch.Generator | None = None) -> None:
    """PCGrad: per-task gradients, each projected off the others it conflicts with, summed into ``.grad``.

    For task i and every other task j in random order: if g_i . g_j < 0, g_i -= (g_i . g_j)/|g_j|^2 g_j.
    Gradients are accumulated into ``p.grad`` like ``backward()`` does (zero them first as usual).
    """
    params = [p for p in params if p.requires_grad]
    flat = []
    for loss in losses.values():
        if not loss.requires_grad:
            flat.append(torch.cat([torch.zeros_like(p).flatten() for p in params]))
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
    total = torch.zeros_like(flat[0])
    for i, g_i in enumerate(flat):
        g = g_i.clone()
        for j in torch.randperm(len(flat), generator=generator).tolist():
            if j == i:
                continue
            dot = torch.dot(g, flat[j])
            if dot < 0:
                g -= dot / torch.dot(flat[j], flat[j]) * flat[j]
        total += g
    offset = 0
    for p in params:
        n = p.numel()
        piece = total[offset:offset + n].view_as(p)
        p.grad = piece.clone() if p.grad is None else p.grad + piece
        offset += n


__all__ = [
    "BALANCING",
    "CONSISTENCY_KEY",
    "LossBalancer",
    "build_balancer",
    "consistency_loss",
    "masked_bce_with_logits",
    "pcgrad_backward",
    "soft_dice_loss",
    "subtype_partial_cross_entropy",
    "boxed_slices",
    "zero_loss",
]
