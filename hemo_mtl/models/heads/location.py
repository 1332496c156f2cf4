"""Bleed location head (dual-task ViT protocol): a K-way softmax (deep / lobar / subtentorial ...).

An MLP on the pooled top encoder map. Trained and scored only on slices whose location is known
(``has["location"]``, from the manifest's ``location`` column mapped by ``data.location_classes``);
with none in a batch it returns an exact, connected zero (the MultiTaskModel contract).
Eval output: ``location_prob`` (B, K).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hemo_mtl.config_schema import K, defaults_of
from hemo_mtl.registry import HEADS

from ..losses import zero_loss


@HEADS.register("location")
class LocationHead(nn.Module):
    task = "location"
    uses_fpn = False
    SCHEMA = {"type": K("location"), "num_classes": K(3), "hidden": K(256), "dropout": K(0.0)}
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, num_classes: int = 3, hidden: int = 256, dropout: float = 0.0, type: str = "location"):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"heads.location.num_classes must be >= 2, got {num_classes}")
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        in_dim = backbone.top_channels
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU()]
            in_dim = hidden
        layers.append(nn.Linear(in_dim, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.num_classes = int(num_classes)

    def forward(self, feats, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.mlp(F.adaptive_avg_pool2d(feats.top, 1).flatten(1))
        if not self.training:
            return {"location_prob": logits.softmax(dim=1)}
        keep = batch["has"]["location"].to(logits.device).bool() if "location" in batch["has"] else None
        if keep is None or not bool(keep.any()):
            return {"loss_location": zero_loss(logits)}
        target = batch["location"].to(logits.device)[keep]
        if bool((target < 0).any() | (target >= self.num_classes).any()):
            raise ValueError(f"location targets must be 0..{self.num_classes - 1} where has['location'], got {target.tolist()}")
        return {"loss_location": F.cross_entropy(logits[keep], target)}
