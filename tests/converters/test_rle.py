"""RLE helpers against pycocotools' own encoder/decoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from converters.rle import decode, encode_crop, string_counts


def reference_rle(full):
    return mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))


@pytest.mark.parametrize("seed", range(5))
def test_encode_crop_equals_full_image_encoding(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(5, 40, size=2)
    h, w = rng.integers(1, min(height, width), size=2)
    crop = rng.random((h, w)) < 0.5
    y0, x0 = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    full = np.zeros((height, width), bool)
    full[y0 : y0 + h, x0 : x0 + w] = crop
    ours = encode_crop(crop, int(x0), int(y0), int(height), int(width))
    ref = reference_rle(full)
    assert ours["size"] == [height, width]
    assert ours["counts"] == ref["counts"].decode()


def test_encode_crop_on_the_border_and_full_image():
    crop = np.ones((3, 4), bool)
    assert encode_crop(crop, 0, 0, 3, 4)["counts"] == reference_rle(crop)["counts"].decode()
    rng = np.random.default_rng(2)
    for _ in range(50):  # full-height crops: runs continue across columns; last pixel set
        crop = rng.random((4, 3)) < 0.6
        crop[-1, -1] = True
        full = np.zeros((4, 6), bool)
        full[:, 3:] = crop
        assert encode_crop(crop, 3, 0, 4, 6)["counts"] == reference_rle(full)["counts"].decode()
    with pytest.raises(ValueError, match="does not fit"):
        encode_crop(crop, 1, 0, 3, 4)


def test_string_counts_matches_pycocotools():
    rng = np.random.default_rng(1)
    full = rng.random((37, 23)) < 0.3
    full[:, :3] = False  # long runs need multi-character numbers
    counts = string_counts(reference_rle(full)["counts"].decode())
    assert sum(counts) == full.size
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    assert np.array_equal(flat.reshape(full.shape, order="F"), full)


def test_string_counts_rejects_garbage():
    with pytest.raises(ValueError, match="invalid character"):
        string_counts("ab\x01")
    with pytest.raises(ValueError, match="middle of a number"):
        string_counts("o")  # 'o' has the continuation bit set


def test_decode_accepts_all_segmentation_forms():
    full = np.zeros((6, 5), bool)
    full[1:4, 2:4] = True
    compressed = reference_rle(full)
    as_str = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    uncompressed = {"size": [6, 5], "counts": [13, 3, 3, 3, 8]}
    polygon = [[2, 1, 4, 1, 4, 4, 2, 4]]
    for seg in (as_str, uncompressed, polygon):
        assert np.array_equal(decode(seg, 6, 5).astype(bool), full)


def test_encode_masks_equals_pycocotools_per_mask():
    """The one stacked encoder (evaluation records, predicted detections) against pycocotools mask by mask."""
    from converters.rle import encode_masks

    rng = np.random.default_rng(3)
    probs = rng.random((3, 1, 9, 7)).astype(np.float32)
    for threshold, want_masks in [(0.5, probs[:, 0] > 0.5), (None, (probs[:, 0] > 0.5).astype(np.uint8))]:
        given = probs if threshold is not None else want_masks
        got = encode_masks(torch.from_numpy(np.asarray(given)), threshold)
        for rle, m in zip(got, want_masks):
            want = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            assert rle["size"] == [9, 7] and rle["counts"] == want["counts"].decode("ascii")
    assert encode_masks(np.zeros((0, 4, 4), np.uint8)) == []
