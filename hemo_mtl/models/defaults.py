"""The model section's defaults and its validation: configs describe, this decides what is allowed.

``MODEL_DEFAULTS`` is the full default ``model:`` section (cls + seg + Mask R-CNN on resnet18).
A config's ``model.heads`` lists the heads to build (any subset; ``null`` drops a default one); each
head section is merged over the defaults of its ``type`` (``HEAD_DEFAULTS``), so a YOLO ``det``
head has its own keys. Unknown keys and wrong value types raise with the dotted key path.
"""
from __future__ import annotations

import copy

from hemo_mtl.registry import HEADS

from . import heads as _heads  # noqa: F401  (registers the head types)

BACKBONE_DEFAULTS = {
    "name": "resnet18",  # a BACKBONES name, or "timm/<model>" for any timm features_only model
    "in_chans": 1,  # 1 = one HU window, 3 = stacked windows
    "weights": None,  # local file only (.pth state dict, or timm's .safetensors/.pth)
    "fpn_channels": 128,
    "kwargs": {},  # passed to the torchvision/timm constructor (e.g. img_size for swinv2)
}
DEFAULT_HEAD_TYPES = {"cls": "classification", "seg": "segmentation", "det": "rcnn"}
HEAD_DEFAULTS = {name: HEADS.get(name).DEFAULTS for name in HEADS.names()}
LOSS_DEFAULTS = {
    "balancing": "static",  # static | uncertainty | dwa
    "weights": {},  # static factors by task (cls/seg/det) or loss key (loss_mask)
    "pcgrad": False,
    "consistency": 0.0,  # weight of the cls/seg consistency term; 0 = off
    "dwa_temperature": 2.0,
}
MODEL_DEFAULTS = copy.deepcopy({
    "backbone": BACKBONE_DEFAULTS,
    "heads": {key: HEAD_DEFAULTS[kind] for key, kind in DEFAULT_HEAD_TYPES.items()},
    "loss": LOSS_DEFAULTS,
})

_FREE_FORM = {"kwargs", "weights"}  # dict values whose keys are not fixed


def _type_ok(default, value) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _merge(defaults: dict, given: dict, where: str) -> dict:
    if not isinstance(given, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if not _type_ok(defaults[key], value):
            raise ValueError(
                f"{where}.{key}: expected {type(defaults[key]).__name__}, got {type(value).__name__} ({value!r})"
            )
        if isinstance(defaults[key], dict) and key not in _FREE_FORM:
            value = _merge(defaults[key], value, f"{where}.{key}")
        out[key] = copy.deepcopy(value)
    return out


def resolve_model_cfg(cfg: dict | None = None) -> dict:
    """The full, validated model section: defaults filled in, unknown keys/types rejected."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"model: unknown key(s) {unknown}; known: {sorted(MODEL_DEFAULTS)}")
    heads_given = cfg.get("heads", MODEL_DEFAULTS["heads"])
    if not isinstance(heads_given, dict):
        raise ValueError("model.heads: expected a mapping of head name -> section")
    heads = {}
    for key, section in heads_given.items():
        if section is None or section is False:
            continue  # dropped
        section = dict(section)
        kind = section.get("type", DEFAULT_HEAD_TYPES.get(key))
        if kind is None:
            raise ValueError(f"model.heads.{key}: no 'type' given; one of {sorted(HEAD_DEFAULTS)}")
        if kind not in HEAD_DEFAULTS:
            raise ValueError(f"model.heads.{key}.type: unknown head type {kind!r}; one of {sorted(HEAD_DEFAULTS)}")
        heads[key] = _merge(HEAD_DEFAULTS[kind], {**section, "type": kind}, f"model.heads.{key}")
    if not heads:
        raise ValueError("model.heads: at least one head is needed")
    return {
        "backbone": _merge(BACKBONE_DEFAULTS, cfg.get("backbone", {}), "model.backbone"),
        "heads": heads,
        "loss": _merge(LOSS_DEFAULTS, cfg.get("loss", {}), "model.loss"),
    }
