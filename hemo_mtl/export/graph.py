"""The exportable part of a multi-task model: image tensor in, a fixed tuple of probability maps out.

A runtime outside PyTorch sees one input (``image``, N x C x S x S float32) and named tensor outputs
(``cls_prob``, ``seg_prob``, ...), so the graph is the model's own eval forward restricted to the heads
whose eval outputs are tensors. Heads that return per-image detection lists (torchvision Mask R-CNN:
RPN proposals, per-image NMS and RoI loops with data-dependent box counts; the ultralytics head:
its Python NMS over a variable number of candidates) stay in PyTorch; ``split_heads`` says which.
The cascade gate is not part of the graph: the gated heads run on every slice and the runtime's
backend blanks the slices the gate rejects (``hemo_mtl.models.gating.gate_outputs``), which gives the
same outputs as PyTorch's gated forward.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.multitask import MultiTaskModel


def probe_outputs(model: MultiTaskModel, head: str, example: torch.Tensor) -> dict:
    """Eval outputs of one head of ``model`` on ``example`` (the head alone active)."""
    solo = MultiTaskModel(model.backbone, {head: model.heads[head]}).eval()
    with torch.no_grad():
        return solo({"image": example})


def split_heads(model: MultiTaskModel, example: torch.Tensor) -> tuple[dict[str, list[str]], dict[str, str]]:
    """({head: its tensor output names} for the heads that export, {head: why not} for the others)."""
    exported, skipped = {}, {}
    for key, head in model.heads.items():
        out = probe_outputs(model, key, example[:1])
        if all(torch.is_tensor(v) for v in out.values()):
            exported[key] = list(out)
        else:
            kind = getattr(head, "DEFAULTS", {}).get("type", type(head).__name__)
            skipped[key] = (f"{kind} head returns per-image detection lists (data-dependent box counts, "
                            f"NMS and per-image loops); it runs in PyTorch only")
    return exported, skipped


class ProbabilityModel(nn.Module):
    """``image -> tuple(outputs)`` over the backbone and the exportable heads of a trained model."""

    def __init__(self, model: MultiTaskModel, heads: dict[str, list[str]]):
        super().__init__()
        if not heads:
            raise ValueError("the model has no head with tensor outputs to export")
        self.model = MultiTaskModel(model.backbone, {k: model.heads[k] for k in heads}).eval()
        self.output_names = [name for names in heads.values() for name in names]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model({"image": image})
        return tuple(out[name] for name in self.output_names)
