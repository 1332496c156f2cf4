"""The shared trunk: encoder + FPN neck, the one set of features every head reads.

A slice label, a box and a mask all back-propagate into the same encoder through these maps.
The FPN is torchvision's (``FeaturePyramidNetwork`` + ``LastLevelMaxPool`` for the RPN's "pool"
level); it is skipped when no active head reads it (a classifier on the top feature only).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .encoders import build_encoder, level_name


class Features(NamedTuple):
    """What the trunk hands to the heads."""

    fpn: OrderedDict[str, torch.Tensor] | None  # p2..p5 (+ "pool"), all ``out_channels`` wide
    top: torch.Tensor  # raw stride-32 encoder map, ``top_channels`` wide (for classification)
    levels: list[torch.Tensor] | None = None  # raw encoder maps at strides 4, 8, 16, 32 (smp-style decoders)


class BackboneWithFPN(nn.Module):
    def __init__(self, encoder: nn.Module, out_channels: int = 128):
        super().__init__()
        self.encoder = encoder
        self.in_chans = encoder.in_chans
        self.out_channels = int(out_channels)
        self.top_channels = encoder.channels[-1]
        self.level_channels = list(encoder.channels)
        self.level_names = [level_name(s) for s in encoder.strides]
        self.strides = OrderedDict((n, s) for n, s in zip(self.level_names, encoder.strides))
        self.strides["pool"] = encoder.strides[-1] * 2
        self.fpn = FeaturePyramidNetwork(list(encoder.channels), self.out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor, with_fpn: bool = True) -> Features:
        feats = self.encoder(x)
        fpn = self.fpn(OrderedDict(zip(self.level_names, feats))) if with_fpn else None
        return Features(fpn=fpn, top=feats[-1], levels=list(feats))


def build_backbone(cfg: dict) -> BackboneWithFPN:
    """``cfg``: the ``model.backbone`` section (name, in_chans, weights, fpn_channels, kwargs)."""
    encoder = build_encoder(
        cfg["name"], in_chans=cfg.get("in_chans", 1), weights=cfg.get("weights"), **(cfg.get("kwargs") or {})
    )
    return BackboneWithFPN(encoder, cfg.get("fpn_channels", 128))
