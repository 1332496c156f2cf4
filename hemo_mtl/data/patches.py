"""Patch training (PhysioNet CT-ICH protocol): a grid of windows over each slice, negatives undersampled.

The grid is the one the predictor slides at inference (``hemo_mtl.inference.predictor``): starts every
``stride`` pixels plus one window flush with the far edge, so every pixel is covered; an image smaller
than the window is zero-padded to it. A window is positive when its mask holds any bleed pixel;
every positive window is kept and ``neg_keep`` of the negative ones (a seeded draw, fixed for the run).
"""
from __future__ import annotations

import numpy as np

from .views import DatasetView

PATCH_DEFAULTS = {"size": 0, "stride": 0, "neg_keep": 1.0}  # size 0 = whole slices


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Window start offsets along one axis of ``length`` pixels (padded up to ``size`` when shorter)."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"patch size and stride must be > 0, got size={size}, stride={stride}")
    n = max(int(length), size)
    return sorted({*range(0, n - size + 1, stride), n - size})


def window_grid(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """(top, left) of every window, row-major."""
    return [(t, l) for t in window_starts(height, size, stride) for l in window_starts(width, size, stride)]


def positive_windows(mask: np.ndarray, grid: list[tuple[int, int]], size: int) -> np.ndarray:
    """bool per window: does it contain a bleed pixel of ``mask`` (H, W)?"""
    m = np.asarray(mask) > 0
    return np.array([bool(m[t:t + size, l:l + size].any()) for t, l in grid], dtype=bool)


def undersample(positive: np.ndarray, neg_keep: float, seed: int) -> np.ndarray:
    """Indices (sorted) of the kept items: all positives + ``round(neg_keep * n_negative)`` negatives
    drawn without replacement by a generator seeded with ``seed``."""
    if not 0.0 <= neg_keep <= 1.0:
        raise ValueError(f"data.patches.neg_keep must be in [0, 1], got {neg_keep}")
    positive = np.asarray(positive, dtype=bool)
    neg = np.flatnonzero(~positive)
    n_keep = int(round(neg_keep * len(neg)))
    kept_neg = np.random.default_rng(seed).choice(neg, size=n_keep, replace=False) if n_keep else neg[:0]
    return np.sort(np.concatenate([np.flatnonzero(positive), kept_neg]))


def resized_mask(row, cache, image_size: int) -> np.ndarray:
    """The slice's mask at training geometry (fit + pad to ``image_size``, nearest), zeros if it has none."""
    from .fit import SquareFit  # noqa: PLC0415
    from .io import read_slice  # noqa: PLC0415

    image = read_slice(row["image"], row["kind"], cache) if not row["has_mask"] else None
    mask = read_slice(row["mask"], "mask", cache) if row["has_mask"] else np.zeros(image.shape, np.uint8)
    return SquareFit(image_size).mask(mask)


def patch_view(dataset, size: int, stride: int, neg_keep: float = 1.0, seed: int = 0) -> DatasetView:
    """``dataset`` (a HemorrhageDataset) as a view over the kept windows of every slice."""
    items, positive = [], []
    for i in range(len(dataset)):
        row = dataset.frame.iloc[i]
        mask = resized_mask(row, dataset.cache, dataset.image_size)
        grid = window_grid(*mask.shape, size, stride)
        positive.extend(positive_windows(mask, grid, size))
        items.extend((i, w) for w in grid)
    keep = undersample(np.asarray(positive), neg_keep, seed)
    return DatasetView(dataset, [items[k][0] for k in keep], [items[k][1] for k in keep], size)
