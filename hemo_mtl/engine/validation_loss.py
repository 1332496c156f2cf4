"""The training loss measured on a held-out split, for rules that select epochs by it.

The model returns named losses only in train mode, so it runs in train mode with every norm and
dropout layer switched to eval (running statistics used and left unchanged, no dropout) and no
gradients: the same loss definition as training, on fixed weights.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..data.dataset import move_to_device

_EVAL_ALWAYS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.dropout._DropoutNd)


@torch.no_grad()
def validation_loss(model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
    """Slice-weighted mean of each named loss and of their plain sum (``loss``) over ``loader``."""
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, _EVAL_ALWAYS):
            m.eval()
    sums: dict[str, float] = {}
    n = 0
    try:
        for batch in loader:
            batch = move_to_device(batch, device)
            size = len(batch["image"])
            losses = model(batch)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) * size
            sums["loss"] = sums.get("loss", 0.0) + float(sum(losses.values())) * size
            n += size
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return {k: v / n for k, v in sums.items()} if n else {}
