"""Intensity-threshold baseline on hand-made HU slices."""
import numpy as np
import torch

from hemo_mtl.data.windowing import window_hu
from hemo_mtl.inference.threshold_baseline import ThresholdSegmenter, threshold_mask


def _slice():
    hu = np.full((20, 20), 30.0, np.float32)  # brain
    hu[5:10, 5:10] = 70.0  # a 5x5 bleed
    hu[15, 15] = 70.0  # a one-pixel speck: removed by the opening
    hu[0:2, :] = 1000.0  # bone: above the band
    hu[12:14, 0:4] = 45.0  # denser brain, below the band
    return hu


def test_band_then_closing_and_opening():
    expected = np.zeros((20, 20), np.uint8)
    expected[5:10, 5:10] = 1  # a 5x5 square survives a 3x3 closing and opening unchanged
    assert np.array_equal(threshold_mask(_slice(), 55, 90, closing=1, opening=1), expected)
    raw = threshold_mask(_slice(), 55, 90, closing=0, opening=0)
    assert raw.sum() == 25 + 1  # without morphology the speck stays


def test_segmenter_on_brain_window_input_matches_hu_rule():
    hu = _slice()
    image = torch.from_numpy(window_hu(hu, 40, 80))[None, None]  # bone saturates at 1.0
    out = ThresholdSegmenter(55, 90)({"image": image})
    assert out["seg_prob"].shape == (1, 2, 20, 20)
    assert np.array_equal(out["seg_prob"][0].argmax(0).numpy(), threshold_mask(hu, 55, 90))
    assert float(out["cls_prob"][0, 0]) == 1.0
    empty = ThresholdSegmenter(55, 90)({"image": torch.from_numpy(window_hu(np.full((8, 8), 30.0, np.float32), 40, 80))[None, None]})
    assert float(empty["cls_prob"][0, 0]) == 0.0
