"""Augmentation: albumentations pipelines that keep image and mask aligned, plus HU jitter.

Order matters: intensity jitter happens in HU *before* windowing
(albumentations' pixel transforms assume [0, 1] or uint8), geometry happens after windowing on the
[0, 1] channels with fill 0 (= below the window, i.e. air). Instance boxes are derived from the
transformed mask afterwards, so they are exact after any rotation.

Volume slices are ``vol[:, :, k]`` (nibabel layout), so array axis 0 is the patient's left-right
axis and the optional left-right flip is albumentations' ``VerticalFlip`` (which flips axis 0); a
display image (JPG/PNG) is stored as it is viewed, anterior up, so its left-right axis is the columns
and the flip is ``HorizontalFlip``. It is off by default because left/right carries meaning.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from ..config_schema import FRACTION, NONNEGATIVE, K, defaults_of  # noqa: E402
from .fit import SquareFit  # noqa: E402

AUGMENT_SCHEMA = {  # the config's data.augment section
    "enabled": K(True, "random geometry (and display-intensity) changes on the training split"),
    "rotate": K(15.0, "degrees, +-", range=NONNEGATIVE),
    "translate": K(0.08, "fraction of size, +-", range=FRACTION),
    "scale": K([0.9, 1.1], "zoom range (low, high)", items="float"),
    "shear": K(5.0, "degrees, +-", range=NONNEGATIVE),
    "p_affine": K(0.7, "probability of the affine step", range=FRACTION),
    "flip_lr": K(0.0, "left-right flip probability; left/right carries meaning, so 0 by default", range=FRACTION),
    "hu_shift": K(8.0, "HU, +- (HU inputs only)", range=NONNEGATIVE),
    "hu_scale": K(0.05, "relative gain, +-", range=NONNEGATIVE),
    "hu_noise": K(4.0, "HU, max std of added gaussian noise", range=NONNEGATIVE),
    "brightness_contrast": K(0.1, "display (already windowed) inputs only", range=NONNEGATIVE),
}
AUGMENT_DEFAULTS = defaults_of(AUGMENT_SCHEMA)


def build_transforms(aug_cfg: dict | None, train: bool, image_size: int = 256, display: bool = False) -> A.Compose:
    """The geometric (+ display-intensity) pipeline applied to ``image`` (H, W, C in [0, 1]) and ``mask``."""
    cfg = {**AUGMENT_DEFAULTS, **(aug_cfg or {})}
    ops = SquareFit(image_size).albumentations()
    if train and cfg["enabled"]:
        lo, hi = cfg["scale"]
        ops.append(
            A.Affine(
                scale=(lo, hi),
                translate_percent=(-cfg["translate"], cfg["translate"]),
                rotate=(-cfg["rotate"], cfg["rotate"]),
                shear=(-cfg["shear"], cfg["shear"]),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                fill=0,
                fill_mask=0,
                p=cfg["p_affine"],
            )
        )
        if cfg["flip_lr"] > 0:
            flip = A.HorizontalFlip if display else A.VerticalFlip  # the patient's left-right axis
            ops.append(flip(p=cfg["flip_lr"]))
        if display and cfg["brightness_contrast"] > 0:
            bc = cfg["brightness_contrast"]
            ops.append(A.RandomBrightnessContrast(brightness_limit=bc, contrast_limit=bc, p=0.5))
    return A.Compose(ops)


class HUJitter:
    """Scanner-to-scanner variation in HU: a random offset, gain and noise, applied before windowing."""

    def __init__(self, shift: float = 8.0, scale: float = 0.05, noise: float = 4.0):
        self.shift, self.scale, self.noise = shift, scale, noise

    @classmethod
    def from_config(cls, aug_cfg: dict | None) -> "HUJitter":
        cfg = {**AUGMENT_DEFAULTS, **(aug_cfg or {})}
        return cls(cfg["hu_shift"], cfg["hu_scale"], cfg["hu_noise"])

    def __call__(self, hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gain = 1.0 + rng.uniform(-self.scale, self.scale)
        offset = rng.uniform(-self.shift, self.shift)
        out = hu * np.float32(gain) + np.float32(offset)
        if self.noise > 0:
            out += rng.normal(0.0, rng.uniform(0, self.noise), size=hu.shape).astype(np.float32)
        return out
