"""U-Net and PSPNet decoders (segmentation-models-pytorch) on the shared trunk's raw encoder maps.

The Hemorica segmentation grid compares decoders across encoders; smp's decoder modules are the
reference implementations, so they are reused as is on our encoder's stride 4/8/16/32 maps (any
registered backbone, SwinV2 included) instead of smp's own encoders. U-Net also gets the full-
resolution image and a light stride-2 stem as its two finest skips (smp's encoders provide those).
PSPNet pools the stride-8 map (smp's default ``encoder_depth=3``) and upsamples its logits x8.
Loss and outputs are the ``seg`` heads' shared ones (``SemanticSegHead``); ``mode: binary`` for
lesion-vs-background.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hemo_mtl.config_schema import K, defaults_of
from hemo_mtl.registry import HEADS

from .segmentation import SemanticSegHead


class _SmpSegHead(SemanticSegHead):
    uses_fpn = False

    def forward(self, feats, batch: dict) -> dict[str, torch.Tensor]:
        if feats.levels is None:
            raise ValueError(f"{type(self).__name__} needs the trunk's raw encoder levels (Features.levels)")
        return super().forward(feats, batch)


@HEADS.register("unet")
class UnetHead(_SmpSegHead):
    SCHEMA = {
        "type": K("unet"),
        "mode": K("binary", "binary | multiclass"),
        "decoder_channels": K([256, 128, 64, 32, 16], items="int"),
        "stem_channels": K(32),
        "attention": K(None, "smp attention_type, e.g. scse", "str"),
        **SemanticSegHead.LOSS_SCHEMA,
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, mode: str = "binary", decoder_channels=(256, 128, 64, 32, 16), stem_channels: int = 32,
                 attention=None, type: str = "unet", **loss):
        super().__init__()
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self._init_loss(mode, **loss)
        if len(decoder_channels) != 5:
            raise ValueError(f"heads.seg.decoder_channels needs 5 values (strides 16..1), got {decoder_channels}")
        self.stem = nn.Sequential(
            nn.Conv2d(backbone.in_chans, stem_channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True),
        )
        channels = [backbone.in_chans, stem_channels, *backbone.level_channels]
        self.decoder = UnetDecoder(channels, list(decoder_channels), n_blocks=5, attention_type=attention)
        self.predictor = nn.Conv2d(decoder_channels[-1], self.num_classes, 3, padding=1)

    def logits(self, feats, image: torch.Tensor) -> torch.Tensor:
        image = image.to(feats.levels[0].dtype)
        x = self.decoder([image, self.stem(image), *feats.levels])
        return self.predictor(x)


@HEADS.register("pspnet")
class PSPNetHead(_SmpSegHead):
    SCHEMA = {
        "type": K("pspnet"),
        "mode": K("binary", "binary | multiclass"),
        "out_channels": K(512),
        "dropout": K(0.2),
        "level": K(1, "encoder level pooled: 0..3 = stride 4, 8, 16, 32 (smp default: stride 8)"),
        **SemanticSegHead.LOSS_SCHEMA,
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, mode: str = "binary", out_channels: int = 512, dropout: float = 0.2, level: int = 1,
                 type: str = "pspnet", **loss):
        super().__init__()
        from segmentation_models_pytorch.decoders.pspnet.decoder import PSPDecoder

        self._init_loss(mode, **loss)
        if not 0 <= level < len(backbone.level_channels):
            raise ValueError(f"heads.seg.level must be 0..{len(backbone.level_channels) - 1}, got {level}")
        self.level = int(level)
        self.decoder = PSPDecoder([backbone.level_channels[self.level]], out_channels=out_channels, dropout=dropout)
        self.predictor = nn.Conv2d(out_channels, self.num_classes, 3, padding=1)

    def logits(self, feats, image: torch.Tensor) -> torch.Tensor:
        x = self.predictor(self.decoder([feats.levels[self.level]]))
        return F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
