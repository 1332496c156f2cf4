"""Multi-task model: one trunk (encoder + FPN) whose features serve every head.

``build_model(cfg["model"])`` -> ``MultiTaskModel``; ``MODEL_SCHEMA`` types the model section the
config system validates, ``MODEL_DEFAULTS`` is its default (``resolve_model_cfg`` fills and checks one).
"""
from .backbones import BackboneWithFPN, Features, build_backbone, build_encoder
from .defaults import (BACKBONE_DEFAULTS, HEAD_DEFAULTS, HEAD_SCHEMAS, LOSS_DEFAULTS, MODEL_DEFAULTS, MODEL_SCHEMA,
                       resolve_model_cfg)
from .heads import ClassificationHead, MaskRCNNHead, SegmentationHead, YoloSegmentHead
from .losses import (
    LossBalancer,
    build_balancer,
    consistency_loss,
    masked_bce_with_logits,
    pcgrad_backward,
    soft_dice_loss,
    zero_loss,
)
from .multitask import MultiTaskModel, build_model, count_parameters

__all__ = [
    "BACKBONE_DEFAULTS",
    "HEAD_DEFAULTS",
    "HEAD_SCHEMAS",
    "LOSS_DEFAULTS",
    "MODEL_DEFAULTS",
    "MODEL_SCHEMA",
    "BackboneWithFPN",
    "ClassificationHead",
    "Features",
    "LossBalancer",
    "MaskRCNNHead",
    "MultiTaskModel",
    "SegmentationHead",
    "YoloSegmentHead",
    "build_backbone",
    "build_balancer",
    "build_encoder",
    "build_model",
    "consistency_loss",
    "count_parameters",
    "masked_bce_with_logits",
    "pcgrad_backward",
    "resolve_model_cfg",
    "soft_dice_loss",
    "zero_loss",
]
