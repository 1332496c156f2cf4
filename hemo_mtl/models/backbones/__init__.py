"""Encoders (torchvision, timm) + FPN neck, registered in ``hemo_mtl.registry.BACKBONES``."""
from .encoders import (
    FPN_STRIDES,
    TIMM_NAMES,
    TIMM_PREFIX,
    Encoder,
    TimmEncoder,
    adapt_first_conv,
    build_encoder,
    build_timm_encoder,
    level_name,
    load_state_dict_file,
)
from .fpn import BackboneWithFPN, Features, build_backbone

__all__ = [
    "FPN_STRIDES",
    "TIMM_NAMES",
    "TIMM_PREFIX",
    "BackboneWithFPN",
    "Encoder",
    "Features",
    "TimmEncoder",
    "adapt_first_conv",
    "build_backbone",
    "build_encoder",
    "build_timm_encoder",
    "level_name",
    "load_state_dict_file",
]
