"""Patch sampler (PhysioNet protocol): window grid and negative undersampling against hand-computed cases."""
import numpy as np
import pytest
import torch

from hemo_mtl.data.dataset import collate_samples
from hemo_mtl.data.patches import positive_windows, undersample, window_grid, window_starts
from hemo_mtl.data.views import DatasetView, crop_sample


def test_window_starts_cover_the_slice_with_a_window_flush_to_the_far_edge():
    # 512 px, 160/80: 0, 80, ..., 320 then 352 = 512 - 160 (the last window ends exactly at the edge)
    assert window_starts(512, 160, 80) == [0, 80, 160, 240, 320, 352]
    assert window_starts(400, 160, 80) == [0, 80, 160, 240]  # 240 + 160 = 400: already flush
    assert window_starts(100, 160, 80) == [0]  # smaller than a window: one (zero-padded) window
    assert window_grid(400, 240, 160, 80) == [(t, l) for t in (0, 80, 160, 240) for l in (0, 80)]
    with pytest.raises(ValueError):
        window_starts(512, 0, 80)


def test_every_pixel_is_covered_and_overlap_counts_match_hand_count():
    grid = window_grid(512, 512, 160, 80)
    cover = np.zeros((512, 512), int)
    for t, l in grid:
        cover[t:t + 160, l:l + 160] += 1
    assert cover.min() >= 1
    # pixel (100, 100): rows 0-159 and 80-239 contain it -> 2 tops x 2 lefts
    assert cover[100, 100] == 4
    # pixel (500, 5): only top 352 (352..511) and left 0 contain it
    assert cover[500, 5] == 1


def test_positive_windows_by_hand():
    mask = np.zeros((8, 8), np.uint8)
    mask[1, 1] = 2  # only in windows starting at row 0, col 0
    mask[6, 7] = 4  # in windows (4, 4) only (rows 4..7, cols 4..7)
    grid = window_grid(8, 8, 4, 2)  # starts 0, 2, 4 per axis
    pos = positive_windows(mask, grid, 4)
    assert [g for g, p in zip(grid, pos) if p] == [(0, 0), (4, 4)]


def test_undersample_keeps_all_positives_and_the_asked_share_of_negatives():
    positive = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)  # 2 positives, 9 negatives
    kept = undersample(positive, 1 / 3, seed=5)
    assert set(np.flatnonzero(positive)) <= set(kept)
    assert len(kept) == 2 + 3
    assert np.array_equal(kept, undersample(positive, 1 / 3, seed=5))  # seeded
    assert list(undersample(positive, 0.0, seed=0)) == [0, 5]
    assert len(undersample(positive, 1.0, seed=0)) == 11
    with pytest.raises(ValueError):
        undersample(positive, 1.5, seed=0)


def _sample(h=6, w=6):
    mask = torch.zeros(h, w, dtype=torch.int64)
    mask[4:6, 4:6] = 3
    return {"image": torch.arange(h * w, dtype=torch.float32).reshape(1, h, w), "mask": mask,
            "has": {"cls": True, "mask": True, "boxes": True}, "meta": {"patient_id": "p"},
            "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, h, w),
            "cls": torch.zeros(6), "cls_valid": torch.ones(6)}


def test_crop_sample_crops_pads_and_rederives_boxes():
    out = crop_sample(_sample(), 2, 2, 4)
    assert torch.equal(out["image"][0], torch.arange(36.0).reshape(6, 6)[2:6, 2:6])
    assert out["mask"].shape == (4, 4) and int(out["mask"].sum()) == 3 * 4
    assert out["boxes"].tolist() == [[2.0, 2.0, 4.0, 4.0]] and out["labels"].tolist() == [3]
    padded = crop_sample(_sample(), 4, 4, 4)  # runs 2 px past the edge: zero-padded
    assert padded["image"].shape == (1, 4, 4) and float(padded["image"][0, 3, 3]) == 0.0
    assert padded["meta"]["window"] == (4, 4, 4)


def test_dataset_view_forwards_patient_ids_and_windows():
    class Base:
        patient_ids = ["a", "b"]

        def __getitem__(self, i):
            return _sample()

        def __len__(self):
            return 2

    view = DatasetView(Base(), [1, 1, 0], windows=[(0, 0), (2, 2), (0, 2)], size=4)
    assert len(view) == 3 and view.patient_ids == ["b", "b", "a"]
    assert view[1]["image"].shape == (1, 4, 4)
    # importance weights ride along per item and collate into batch["weight"] (1 where none is given)
    weighted = DatasetView(Base(), [1, 0], weight=[0.5, 2.0])
    batch = collate_samples([weighted[0], weighted[1], _sample()])
    assert batch["weight"].tolist() == [0.5, 2.0, 1.0]
    with pytest.raises(ValueError, match="one value per index"):
        DatasetView(Base(), [1, 0], weight=[1.0])
