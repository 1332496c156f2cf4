"""Multi-task model: one trunk (encoder + FPN) whose features serve every head.

``build_model(cfg["model"])`` -> ``MultiTaskModel``; ``MODEL_DEFAULTS`` is the full default model
section the config system validates against (``resolve_model_cfg`` does the validation).
"""
from .backbones import BackboneWithFPN, Features, build_backbone, build_encoder
from .defaults import BACKBONE_DEFAULTS, HEAD_DEFAULTS, LOSS_DEFAULTS, MODEL_DEFAULTS, resolve_model_cfg
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
    "LOSS_DEFAULTS",
    "MODEL_DEFAULTS",
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
