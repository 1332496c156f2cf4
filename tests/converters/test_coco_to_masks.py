"""COCO -> label masks: the export's way back is lossless."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from converters.coco_to_masks import coco_to_label_masks, coco_to_label_volume
from converters.mask_to_coco import CocoBuilder, MaskToCoco


def export(volume, seg_format="auto"):
    builder = CocoBuilder(MaskToCoco(seg_format=seg_format))
    builder.add_volume(volume, lambda k: f"p_{k}.png", patient_id="p", source="hand")
    return builder.to_dict()


@pytest.mark.parametrize("seg_format", ["auto", "rle"])
def test_volume_round_trip_is_exact(volume, seg_format, tmp_path):
    coco = export(volume, seg_format)
    assert np.array_equal(coco_to_label_volume(coco, "p", strict=True), volume)


def test_polygon_format_fills_holes_only(volume):
    """Painting each 8-connected component hole-filled, in category order, is what must come back."""
    back = coco_to_label_volume(export(volume, "polygon"), "p")
    expected = np.zeros_like(volume)
    for k in range(volume.shape[2]):
        for c in range(1, 6):
            labels, n = ndimage.label(volume[:, :, k] == c, structure=np.ones((3, 3)))
            for i in range(1, n + 1):
                expected[:, :, k][ndimage.binary_fill_holes(labels == i)] = c
    assert np.array_equal(back, expected)
    assert not np.array_equal(back, volume)  # the hard cases do have holes


def test_negatives_are_zero_masks_and_json_path(volume, tmp_path):
    import json

    path = tmp_path / "c.json"
    path.write_text(json.dumps(export(volume)))
    masks = coco_to_label_masks(path)
    assert len(masks) == volume.shape[2]
    assert not masks[1].any() and masks[1].shape == volume.shape[:2]


def test_overlap_and_missing_slices_are_errors():
    coco = {"images": [{"id": 1, "height": 4, "width": 4, "file_name": "a", "patient_id": "p", "slice_idx": 0}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]]},
                {"id": 2, "image_id": 1, "category_id": 2, "segmentation": [[2, 2, 4, 2, 4, 4, 2, 4]]}]}
    assert coco_to_label_masks(coco)[1][2, 2] == 2  # later wins
    with pytest.raises(ValueError, match="annotation 2 overlaps annotation 1"):
        coco_to_label_masks(coco, strict=True)
    coco["images"][0]["slice_idx"] = 1
    with pytest.raises(ValueError, match=r"slices \[0\]"):
        coco_to_label_volume(coco, "p")
    with pytest.raises(KeyError):
        coco_to_label_volume(coco, "other")
    with pytest.raises(FileNotFoundError):
        coco_to_label_masks("/nonexistent/x.json")


@pytest.mark.parametrize("seg_format", ["auto", "polygon", "rle"])
def test_random_label_noise_round_trips(seg_format):
    """Worst case for tracing: salt-and-pepper labels, islands in holes, corner contacts."""
    rng = np.random.default_rng(11)
    volume = rng.choice(6, size=(23, 31, 6), p=[0.4, 0.12, 0.12, 0.12, 0.12, 0.12]).astype(np.uint8)
    volume[:, :, 2] = 0  # one negative slice
    coco = export(volume, seg_format)
    expected_components = sum(ndimage.label(volume[:, :, k] == c, structure=np.ones((3, 3)))[1]
                              for k in range(volume.shape[2]) for c in range(1, 6))
    assert len(coco["annotations"]) == expected_components
    back = coco_to_label_volume(coco, "p")
    if seg_format == "polygon":  # holes filled: every labelled pixel may only be painted over
        assert np.all((back == volume) | (back > 0))
    else:
        assert np.array_equal(back, volume)
