"""The segmenter's vote on a slice's p(any).

A segmentation head trained on masks sees *where* a bleed is; its highest pixel P(bleed) is a slice
score of its own, and its mistakes are not the classifier's (local density against a whole-slice
judgement), so the mean of the two ranks slices better than either (docs/real_data.md). With
``model.seg_vote`` w > 0 the eval p(any) becomes (1 - w) p_cls(any) + w max_pixels P(bleed), where
P(bleed) = 1 - P(background) for a binary or a subtype head. Only p(any) changes (the subtype columns
stay the classifier's), and only in eval: the losses never see it. A cascade that gates the segmenter
on p(any) cannot also let the segmenter vote on p(any) (``hemo_mtl.config`` refuses the pair).
"""
from __future__ import annotations

import torch
from torch import nn

from ..categories import ANY


def surest_bleed(seg_prob: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) segmentation softmax -> (B,) each slice's most confident bleed pixel, P(bleed) =
    1 - P(background): the vote here and the cls/seg consistency loss both read it."""
    return (1.0 - seg_prob[:, 0]).flatten(1).max(dim=1).values


def vote_any(cls_prob: torch.Tensor, seg_prob: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, 6) classifier probabilities, (B, K, H, W) segmentation softmax -> (B, 6) with p(any) mixed."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"model.seg_vote must be in [0, 1], got {weight}")
    bleed = surest_bleed(seg_prob)
    out = cls_prob.clone()
    out[:, ANY] = (1.0 - weight) * cls_prob[:, ANY] + weight * bleed.to(cls_prob.dtype)
    return out


def p_any_heads(model: nn.Module) -> set[str]:
    """The heads (``model.heads`` keys) whose outputs make the eval p(any): the classifier's, and with the
    vote the segmenter's too. A pass that only reads p(any) runs these (temperature scaling is fitted on
    the p(any) the predictor will scale)."""
    vote = float(getattr(model, "seg_vote", 0.0)) > 0
    return {key for key, head in model.heads.items() if head.task == "cls" or (vote and head.task == "seg")}
