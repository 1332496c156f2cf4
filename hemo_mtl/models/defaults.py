"""The model section's schema: configs describe, this decides what is allowed.

``MODEL_SCHEMA`` types the full ``model:`` section (``hemo_mtl.config_schema.Key``); ``MODEL_DEFAULTS``
is its default (cls + seg + Mask R-CNN on resnet18). A config's ``model.heads`` lists the heads to
build (any subset; ``null`` drops a default one); each head section is filled from the schema of its
``type`` (each head class's ``SCHEMA``), so a YOLO ``det`` head has its own keys. The config's one
validator (``hemo_mtl.config_schema.check``) checks it, here as in a whole run config.
"""
from __future__ import annotations

import copy

from hemo_mtl.config_schema import FRACTION, HeadTypes, K, check, defaults_of, fill
from hemo_mtl.registry import HEADS

from . import heads as _heads  # noqa: F401  (registers the head types)
from .input_prior import INPUT_PRIOR_SCHEMA

BACKBONE_SCHEMA = {
    "name": K("resnet18", "a BACKBONES name, or timm/<model> for any timm features_only model"),
    "in_chans": K(1, "input channels = len(data.windows) x (2 x data.context_slices + 1), + 1 with model.input_prior"),
    "weights": K(None, "local file only (.pth state dict, or timm's .safetensors/.pth); null = random init", "str"),
    "fpn_channels": K(128),
    "kwargs": K({}, "passed to the torchvision/timm constructor (e.g. img_size for swinv2)"),
}
DEFAULT_HEAD_TYPES = {"cls": "classification", "seg": "segmentation", "det": "rcnn"}
HEAD_SCHEMAS = {name: HEADS.get(name).SCHEMA for name in HEADS.names()}
HEAD_DEFAULTS = {name: HEADS.get(name).DEFAULTS for name in HEADS.names()}
HEAD_TYPES = HeadTypes(HEAD_SCHEMAS, DEFAULT_HEAD_TYPES)
LOSS_SCHEMA = {
    "balancing": K("static", "static | uncertainty | dwa"),
    "weights": K({}, "static factors by task (cls/seg/det) or loss key (loss_mask)", items="float"),
    "pcgrad": K(False, "project conflicting task gradients (PCGrad)"),
    "consistency": K(0.0, "weight of the cls/seg consistency term; 0 = off"),
    "dwa_temperature": K(2.0),
}
MODEL_SCHEMA = {
    "backbone": BACKBONE_SCHEMA,
    "input_prior": INPUT_PRIOR_SCHEMA,
    "heads": K({key: HEAD_DEFAULTS[kind] for key, kind in DEFAULT_HEAD_TYPES.items()},
               "the heads to build, by name; each section's `type` picks its keys", "heads", items=HEAD_TYPES),
    "loss": LOSS_SCHEMA,
    "seg_vote": K(0.0, "w > 0: the eval p(any) is (1 - w) x the classifier's + w x the segmenter's highest pixel "
                       "P(bleed) (models.seg_vote); needs cls and seg heads; 0 = the classifier's alone",
                  range=FRACTION),
}
BACKBONE_DEFAULTS = defaults_of(BACKBONE_SCHEMA)
LOSS_DEFAULTS = defaults_of(LOSS_SCHEMA)
MODEL_DEFAULTS = copy.deepcopy(defaults_of(MODEL_SCHEMA))


def resolve_model_cfg(cfg: dict | None = None) -> dict:
    """The full, validated model section: defaults filled in, unknown keys/types rejected (ConfigError)."""
    out = fill(dict(cfg or {}), MODEL_SCHEMA)
    check(out, MODEL_SCHEMA, origin="model section", path=("model",))
    return out
