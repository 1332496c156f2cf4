"""Slice location labels: the nifti source derives each slice's location from lesions.csv + mask
(largest bleed), the dataset maps it through data.location_classes."""
import numpy as np
import pandas as pd
import pytest
import torch

from hemo_mtl.data.dataset import HemorrhageDataset, collate_samples
from hemo_mtl.data.manifest import read_manifest
from hemo_mtl.data.phantom import make_phantom_case
from hemo_mtl.data.sources.nifti import slice_locations


def test_largest_bleed_wins_by_hand():
    mask = np.zeros((6, 6, 4), np.uint8)
    mask[0:2, 0:2, 0] = 1  # EDH 4 px on slice 0
    mask[3:6, 3:6, 0] = 4  # IPH 9 px on slice 0 -> slice 0 is the IPH's location
    mask[0:2, 0:2, 1] = 1  # EDH only on slice 1
    lesions = pd.DataFrame([
        {"subtype": "EDH", "location": "lobar", "first_slice": 0, "last_slice": 1},
        {"subtype": "IPH", "location": "deep", "first_slice": 0, "last_slice": 0},
    ])
    assert slice_locations(mask, lesions) == ["deep", "lobar", "", ""]


def test_matches_the_phantom_instance_map():
    for seed in range(4):
        case = make_phantom_case(seed, size=64, slices=12)
        lesions = pd.DataFrame([{"subtype": les["subtype"], "location": les["location"],
                                 "first_slice": les["slices"][0], "last_slice": les["slices"][1]}
                                for les in case.lesions])
        expected = []
        for k in range(case.mask.shape[2]):  # reference: the largest instance on the slice
            counts = np.bincount(case.instances[:, :, k].ravel(), minlength=len(case.lesions) + 1)
            counts[0] = 0
            expected.append(case.lesions[int(counts.argmax()) - 1]["location"] if counts.max() else "")
        got = slice_locations(case.mask, lesions) if len(lesions) else [""] * case.mask.shape[2]
        assert got == expected


def test_converted_phantom_has_locations_and_dataset_maps_them(phantom_dir, tmp_path):
    from hemo_mtl.data.convert import convert_dataset

    convert_dataset("nifti", phantom_dir, tmp_path, progress=False)
    frame = read_manifest(tmp_path / "manifest.csv")
    assert "location" in frame.columns
    bleed = frame["any"].astype(float) == 1
    assert (frame.loc[bleed, "location"] != "").all() and (frame.loc[~bleed, "location"] == "").all()
    classes = ("deep", "lobar", "subtentorial")
    ds = HemorrhageDataset(frame, image_size=64, location_classes=classes)
    i = int(np.flatnonzero(bleed.to_numpy())[0])
    j = int(np.flatnonzero(~bleed.to_numpy())[0])
    s = ds[i]
    assert s["has"]["location"] and classes[int(s["location"])] == frame["location"].iloc[i]
    assert not ds[j]["has"]["location"] and int(ds[j]["location"]) == -1
    batch = collate_samples([ds[i], ds[j]])
    assert batch["location"].tolist() == [classes.index(frame["location"].iloc[i]), -1]
    assert batch["has"]["location"].tolist() == [True, False]
    with pytest.raises(ValueError, match="not in data.location_classes"):
        HemorrhageDataset(frame, image_size=64, location_classes=("deep",))


def test_cls_labels_keeps_only_the_named_labels(phantom_dir, tmp_path):
    from hemo_mtl.data.convert import convert_dataset

    convert_dataset("nifti", phantom_dir, tmp_path, progress=False)
    frame = read_manifest(tmp_path / "manifest.csv")
    s = HemorrhageDataset(frame, image_size=64, cls_labels=["any"])[0]
    assert s["cls_valid"].tolist() == [1, 0, 0, 0, 0, 0]
    assert torch.equal(s["cls"][1:], torch.zeros(5))
    with pytest.raises(ValueError, match="unknown label"):
        HemorrhageDataset(frame, image_size=64, cls_labels=["bleed"])
