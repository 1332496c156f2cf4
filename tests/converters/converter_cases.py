"""Hand-made label volumes covering the export's hard cases, built in a few lines of numpy."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, the export's rule


def disk(shape, cy, cx, r):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def hard_cases_volume(h: int = 48, w: int = 40) -> np.ndarray:
    """(H, W, 8) label volume: slice 0 and 7 empty; holes, touching subtypes, one-pixel lesions,
    lesions on every border, 1-px streaks (straight and diagonal), blobs with ragged edges."""
    vol = np.zeros((h, w, 8), dtype=np.uint8)
    s = vol[:, :, 1]  # IPH ring with a hole, IVH blob touching an SDH crescent
    s[disk((h, w), 12, 12, 7) & ~disk((h, w), 12, 12, 3)] = 4
    s[disk((h, w), 30, 25, 5)] = 5
    s[disk((h, w), 30, 33, 5) & (s == 0)] = 2
    s = vol[:, :, 2]  # one-pixel lesions, one of them in a corner, and a 2-pixel diagonal pair
    s[5, 5] = 1
    s[0, 0] = 3
    s[h - 1, w - 1] = 2
    s[20, 20] = s[21, 21] = 4
    s = vol[:, :, 3]  # lesions on all four borders
    s[0:4, 10:20] = 2
    s[h - 3 : h, 5:15] = 1
    s[15:25, 0:2] = 3
    s[30:40, w - 5 : w] = 4
    s = vol[:, :, 4]  # thin SAH streaks: horizontal, vertical, diagonal, zig-zag
    s[10, 3:30] = 3
    s[15:40, 35] = 3
    for i in range(15):
        s[20 + i, 5 + i] = 3
    for i in range(10):
        s[42 + (i % 2), 10 + i] = 3
    rng = np.random.default_rng(3)  # ragged blobs of each subtype (random boundary, small holes)
    noisy = ndimage.gaussian_filter(rng.random((h, w)), 1.5)
    s = vol[:, :, 5]
    s[noisy > np.quantile(noisy, 0.8)] = 4
    s[(noisy < np.quantile(noisy, 0.1))] = 1
    s = vol[:, :, 6]  # same subtype, several components + a hole containing an island
    s[2:14, 2:14] = 5
    s[5:11, 5:11] = 0
    s[7:9, 7:9] = 5
    s[20:24, 20:24] = 5
    s[24, 24] = 5  # diagonal neighbour: same 8-connected component
    return vol


def components(mask2d: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Reference instances via scipy: (category_id, bool mask) per 8-connected component."""
    out = []
    for c in range(1, 6):
        labels, n = ndimage.label(mask2d == c, structure=EIGHT)
        out.extend((c, labels == i) for i in range(1, n + 1))
    return out

