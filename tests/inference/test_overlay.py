"""overlay.png: radiological orientation from the affine, anatomical tile order, outlines and legend colours."""
from __future__ import annotations

import numpy as np
import pytest

from hemo_mtl.inference import Scan, ScanPrediction
from hemo_mtl.inference.overlay import (COLORS, GAP, HEADER, anatomical_order, choose_tiles, overlay,
                                        radiological_view, render_tile)


def _marker(nx=6, ny=4):
    a = np.zeros((nx, ny), int)
    a[nx - 1, ny - 1] = 1  # the highest x and y index
    return a


def test_radiological_view_puts_right_anterior_top_left():
    # RAS affine: the highest x index is the patient's right, the highest y index anterior
    assert radiological_view(np.eye(4))(_marker())[0, 0] == 1
    assert radiological_view(np.eye(4))(_marker()).shape == (4, 6)  # rows anterior-posterior
    # LPS-stored array (DICOM order): index 0 is right and anterior
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    a = np.zeros((6, 4), int)
    a[0, 0] = 1
    assert radiological_view(lps)(a)[0, 0] == 1
    # array axis 0 along the patient's front-back: the view transposes it back
    swapped = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    b = np.zeros((4, 6), int)
    b[3, 5] = 1  # highest y (anterior), highest x (right)
    assert radiological_view(swapped)(b)[0, 0] == 1
    assert radiological_view(None)(_marker()) is not None and radiological_view(None)(_marker())[5, 3] == 1


def test_anatomical_order_follows_world_z_and_natural_file_names():
    vol = np.zeros((4, 4, 6), np.float32)
    head_first = np.diag([1.0, 1.0, -2.0, 1.0])  # slice 0 is the most superior
    assert anatomical_order(Scan("x", "hu", vol, head_first), [1, 4, 2]) == [4, 2, 1]
    assert anatomical_order(Scan("x", "hu", vol, np.eye(4)), [4, 1, 2]) == [1, 2, 4]
    names = ["1.png", "10.png", "2.png"]
    folder = Scan("d", "display", [np.zeros((4, 4), np.uint8)] * 3, None, names)
    assert anatomical_order(folder, [0, 1, 2]) == [0, 2, 1]  # 1, 2, 10


def test_choose_tiles_prefers_bleed_area_then_p_any():
    masks = [np.zeros((4, 4), np.uint8) for _ in range(5)]
    masks[1][:2, :2] = 2
    masks[3][:1, :1] = 1
    truth = [np.zeros((4, 4), np.uint8) for _ in range(5)]
    truth[4][:, :] = 3
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    assert choose_tiles(masks, [], p, 8) == [1, 3]
    assert choose_tiles(masks, truth, p, 2) == [4, 1]
    empty = [np.zeros((4, 4), np.uint8)] * 5
    assert choose_tiles(empty, [], p, 2) == [0, 4]


def test_montage_tiles_in_anatomical_order_with_subtype_colours_and_dashed_truth():
    rng = np.random.default_rng(0)
    vol = rng.uniform(-100, 120, (40, 30, 5)).astype(np.float32)
    mask = np.zeros(vol.shape, np.uint8)
    mask[10:20, 8:18, 1] = 2  # SDH on slice 1
    mask[5:15, 5:15, 3] = 4  # IPH on slice 3
    truth = np.zeros_like(mask)
    truth[12:22, 8:18, 1] = 2
    cls = np.full((5, 6), 0.05, np.float32)
    cls[[1, 3], 0] = 0.9
    cls[1, 2] = 0.8
    cls[3, 4] = 0.7
    affine = np.diag([1.0, 1.0, -5.0, 1.0])  # slice 3 lies below slice 1
    scan = Scan("x.nii.gz", "hu", vol, affine)
    pred = ScanPrediction(cls_prob=cls, mask=mask, instances=[])
    tile = 96
    img = overlay(scan, pred, truth=truth, tile=tile)
    view = radiological_view(affine)
    from hemo_mtl.inference.overlay import _gray

    first = img[HEADER:HEADER + tile, GAP:GAP + tile]
    second = img[HEADER:HEADER + tile, 2 * GAP + tile:2 * GAP + 2 * tile]
    assert np.array_equal(first, render_tile(view(_gray(scan, 3)), view(mask[:, :, 3]), view(truth[:, :, 3]), None, tile))
    assert np.array_equal(second, render_tile(view(_gray(scan, 1)), view(mask[:, :, 1]), view(truth[:, :, 1]), None, tile))

    def has(region, colour):
        return bool((region == colour).all(-1).any())
    assert has(first, COLORS[3]) and not has(first, COLORS[1])  # IPH outline only
    assert has(second, COLORS[1])
    # truth alone (no prediction): dashed, so part of its outline is black, part coloured
    t = render_tile(np.full((30, 40), 128, np.uint8), None, view(truth[:, :, 1]), None, tile)
    outline = (t != 128).any(-1)
    assert has(t, COLORS[1]) and ((t == 0).all(-1) & outline).any()
    # legend swatches of all five subtypes in the header
    for c in COLORS:
        assert has(img[:HEADER], c)


def test_saliency_is_blended_where_it_is_high():
    gray = np.full((32, 32), 100, np.uint8)
    s = np.zeros((32, 32))
    s[:8, :8] = 1.0
    t = render_tile(gray, None, None, s, 32)
    assert (t[:6, :6] != 100).any(-1).all() and (t[20:, 20:] == 100).all()


@pytest.mark.parametrize("kind", ["display"])
def test_image_folder_captions_use_file_order(kind):
    slices = [np.full((20, 30), v, np.uint8) for v in (10, 200, 90)]
    scan = Scan("d", kind, slices, None, ["1.png", "10.png", "2.png"])
    masks = [np.zeros((20, 30), np.uint8) for _ in slices]
    for m in masks:
        m[5:10, 5:10] = 1
    pred = ScanPrediction(cls_prob=np.full((3, 6), 0.6, np.float32), mask=masks, instances=[])
    img = overlay(scan, pred, tile=64)
    tiles = [img[HEADER + 20:HEADER + 40, GAP + i * (64 + GAP) + 40:GAP + i * (64 + GAP) + 50, 0] for i in range(3)]
    assert [int(np.median(t)) for t in tiles] == [10, 90, 200]  # 1.png, 2.png, 10.png


def test_unknown_subtype_has_its_own_colour_and_legend_entry_only_when_predicted():
    from hemo_mtl.categories import UNKNOWN_SUBTYPE
    from hemo_mtl.inference.overlay import LABEL_COLORS, UNKNOWN_COLOR

    def has(region, colour):
        return bool((region == colour).all(-1).any())
    assert np.array_equal(LABEL_COLORS[1:6], COLORS) and np.array_equal(LABEL_COLORS[UNKNOWN_SUBTYPE], UNKNOWN_COLOR)
    assert not any(np.array_equal(UNKNOWN_COLOR, c) for c in COLORS)
    vol = np.zeros((40, 30, 2), np.float32)
    mask = np.zeros(vol.shape, np.uint8)
    mask[10:20, 8:18, 1] = UNKNOWN_SUBTYPE  # a binary head's bleed
    cls = np.full((2, 6), 0.05, np.float32)
    scan = Scan("x.nii.gz", "hu", vol, np.eye(4))
    binary = ScanPrediction(cls_prob=cls, mask=mask, instances=[], seg_labels=(UNKNOWN_SUBTYPE,))
    img = overlay(scan, binary, tile=96)
    tile = img[HEADER:HEADER + 96, GAP:GAP + 96]
    assert has(tile, UNKNOWN_COLOR) and not any(has(tile, c) for c in COLORS)  # outlined as ICH, not EDH
    assert has(img[:HEADER], UNKNOWN_COLOR)
    # a multiclass prediction without such voxels keeps the five-subtype legend
    multi = ScanPrediction(cls_prob=cls, mask=np.where(mask > 0, 2, 0).astype(np.uint8), instances=[])
    assert not has(overlay(scan, multi, tile=96)[:HEADER], UNKNOWN_COLOR)
