"""Corner-traced outlines decode exactly with pycocotools; holes counted as scipy counts them."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from converters.polygons import largest_outline, signed_area, trace_outlines
from converter_cases import EIGHT


def rasterise(flat, h, w):
    return mask_utils.decode(mask_utils.frPyObjects([flat], h, w))[:, :, 0].astype(bool)


def test_random_components_round_trip_exactly():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(60):
        h, w = rng.integers(2, 24, size=2)
        binary = rng.random((h, w)) < rng.uniform(0.3, 0.8)
        labels, n = ndimage.label(binary, structure=EIGHT)
        for i in range(1, n + 1):
            comp = labels == i
            (outline,) = trace_outlines(comp)
            filled = ndimage.binary_fill_holes(comp)  # holes: 4-connected background, as OpenCV
            assert np.array_equal(rasterise(outline.flat(), h, w), filled)
            assert outline.holes == ndimage.label(filled & ~comp)[1]
            assert outline.area == filled.sum() > 0
            checked += 1
    assert checked > 100


def test_single_pixel_is_its_unit_square():
    binary = np.zeros((3, 4), bool)
    binary[1, 2] = True
    (outline,) = trace_outlines(binary)
    assert sorted(map(tuple, outline.points.tolist())) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert not outline.self_touching and outline.holes == 0
    assert signed_area(outline.points) == 1.0


def test_diagonal_pixels_touch_at_a_corner():
    binary = np.eye(3, dtype=bool)
    (outline,) = trace_outlines(binary)
    assert outline.self_touching
    assert np.array_equal(rasterise(outline.flat(), 3, 3), binary)


def test_no_redundant_vertices_and_shift():
    binary = np.zeros((5, 6), bool)
    binary[1:4, 1:5] = True
    (outline,) = trace_outlines(binary)
    assert len(outline.points) == 4  # a rectangle needs its 4 corners only
    assert min(outline.flat(10, 20)[0::2]) == 11 and min(outline.flat(10, 20)[1::2]) == 21


def test_largest_outline_and_empty():
    binary = np.zeros((8, 8), bool)
    binary[0:2, 0:2] = True
    binary[4:8, 4:8] = True
    assert largest_outline(binary).area == 16
    assert largest_outline(np.zeros((4, 4), bool)) is None
    assert len(trace_outlines(binary)) == 2
    with pytest.raises(ValueError, match="2D"):
        trace_outlines(np.zeros((2, 2, 2)))
