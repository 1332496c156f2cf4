"""Protocol-specific image steps applied after the resize/augmentation pipeline (``data.extra``).

Some published protocols feed the network differently from our default (fit + pad, [0, 1] windows):
the dual-task ViT protocol resizes, takes a 224 center crop, sharpens and normalises with ImageNet
statistics. These steps live here, keyed by config, so the dataset and the engine stay protocol-free.
Normalisation happens last, on the [0, 1] window channels.
"""
from __future__ import annotations

import albumentations as A

EXTRA_DEFAULTS = {
    "center_crop": None,  # int: crop the (image_size) square to this center square
    "sharpen": 0.0,  # probability of a random sharpening (train only)
    "normalize": None,  # "imagenet": (x - mean) / std per channel (3 channels)
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_extra_transforms(cfg: dict | None, train: bool) -> A.Compose | None:
    """The ``data.extra`` steps as one albumentations pipeline (image + mask), or None when all are off."""
    cfg = {**EXTRA_DEFAULTS, **(cfg or {})}
    unknown = sorted(set(cfg) - set(EXTRA_DEFAULTS))
    if unknown:
        raise ValueError(f"data.extra: unknown key(s) {unknown}; known: {sorted(EXTRA_DEFAULTS)}")
    ops: list = []
    if cfg["center_crop"]:
        size = int(cfg["center_crop"])
        ops.append(A.CenterCrop(height=size, width=size))
    if train and cfg["sharpen"]:
        ops.append(A.Sharpen(alpha=(0.2, 0.5), lightness=(1.0, 1.0), p=float(cfg["sharpen"])))
    if cfg["normalize"] is not None:
        if cfg["normalize"] != "imagenet":
            raise ValueError(f"data.extra.normalize must be null or 'imagenet', got {cfg['normalize']!r}")
        ops.append(A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=1.0))
    return A.Compose(ops) if ops else None
