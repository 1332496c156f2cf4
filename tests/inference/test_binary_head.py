"""A binary segmentation head (background + any bleed): its bleed is mask value 6 (ICH, subtype unknown),
never subtype 1 (EDH), in the mask and every writer; its probability map is the one channel P(bleed)."""
from __future__ import annotations

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage  # noqa: E402
from scipy.special import expit  # noqa: E402
from scipy.stats import entropy  # noqa: E402
from torch import nn  # noqa: E402

from hemo_mtl.categories import UNKNOWN_SUBTYPE  # noqa: E402
from hemo_mtl.data.windowing import window_hu  # noqa: E402
from hemo_mtl.inference import PredictOptions, Predictor, Scan, write_scan_outputs  # noqa: E402
from hemo_mtl.inference.geometry import class_labels, label_map  # noqa: E402
from hemo_mtl.inference.lesions import lesion_table  # noqa: E402
from hemo_mtl.inference.postprocess import clean_mask, lesion_counts, volumes_ml  # noqa: E402

overlay_module = importlib.import_module("hemo_mtl.inference.overlay")
SLOPE = 10.0  # P(bleed) = sigmoid(SLOPE * (brain-window intensity - 0.5))


class BinaryIntensityModel(nn.Module):
    """Pixelwise binary head: P(bleed) a sigmoid of the windowed intensity; p(any) = slice mean."""

    def forward(self, batch, gate=None):
        x = batch["image"][:, :1]
        p = torch.sigmoid(SLOPE * (x - 0.5))
        return {"cls_prob": x.mean((2, 3)).repeat(1, 6), "seg_prob": torch.cat([1 - p, p], dim=1)}


def _p_bleed(volume: np.ndarray) -> np.ndarray:
    return expit(SLOPE * (window_hu(volume, 40, 80).astype(np.float64) - 0.5))


def _predictor(size: int = 64, **opts) -> Predictor:
    cfg = {"data": {"windows": ["brain"], "image_size": size}, "model": {}}
    return Predictor(BinaryIntensityModel(), cfg, options=PredictOptions(**opts))


def test_label_map_of_two_classes_is_background_or_unknown_subtype():
    p = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]).T.reshape(1, 2, 1, 3)  # last pixel a tie
    assert label_map(p).tolist() == [[[0, UNKNOWN_SUBTYPE, 0]]]  # the first maximum (background) wins a tie
    assert class_labels(2) == (0, 6) and class_labels(6) == (0, 1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="got 3"):
        label_map(torch.rand(1, 3, 2, 2))


def test_binary_mask_and_probability_on_the_slice_grid(phantom_scan):
    _, volume, affine = phantom_scan  # 64 x 48 x 6 into the 64 px input: padded, not resized, so exact
    pred = _predictor(save_probabilities=True).predict(Scan("case.nii.gz", "hu", volume, affine))
    p = _p_bleed(volume)
    assert pred.seg_labels == (UNKNOWN_SUBTYPE,)
    assert pred.prob.shape == (*volume.shape, 1)
    assert np.allclose(pred.prob[..., 0], p, atol=1e-6)  # float32 sigmoid
    clear = np.abs(p - 0.5) > 1e-4  # away from ties the mask is P(bleed) > 1/2, valued 6
    assert np.array_equal(pred.mask[clear], np.where(p > 0.5, UNKNOWN_SUBTYPE, 0)[clear])
    assert set(np.unique(pred.mask)) == {0, UNKNOWN_SUBTYPE}


def test_resized_probability_stays_within_the_bilinear_error_bound():
    # a ramp along x only: HU = 10 + 70 i / 63, so the brain-window intensity is linear in i. 64 -> 32 px
    # keeps a linear input exact (each coarse pixel is the mean of two), the sigmoid is taken on the
    # coarse grid, and bilinear upsampling between samples h = 2 px apart errs by at most
    # h^2 / 8 * max |f''| = 0.5 * max|sigmoid''| * (SLOPE * dx/di)^2 away from the borders
    i = np.arange(64)
    volume = np.repeat(np.repeat((10.0 + 70.0 * i / 63)[:, None], 48, axis=1)[..., None], 2, axis=2)
    pred = _predictor(32, save_probabilities=True).predict(Scan("x", "hu", volume.astype(np.float32), np.eye(4)))
    slope = SLOPE * (70.0 / 63) / 80.0  # d(SLOPE * x)/di
    bound = 0.5 * 0.0963 * slope ** 2  # max |sigmoid''| = 0.0962 (at z = +-1.317)
    err = np.abs(pred.prob[2:-2, 2:-2, :, 0] - _p_bleed(volume)[2:-2, 2:-2])
    assert pred.prob.shape == (64, 48, 2, 1) and err.max() <= bound + 1e-6, (err.max(), bound)


def test_flip_tta_entropy_is_normalised_by_log_2(phantom_scan):
    _, volume, affine = phantom_scan
    pred = _predictor(save_probabilities=True, flip_tta=True).predict(Scan("case.nii.gz", "hu", volume, affine))
    p = _p_bleed(volume)  # pixelwise model: the mirrored pass gives the same p
    assert np.allclose(pred.uncertainty, entropy(np.stack([1 - p, p]), axis=0) / np.log(2), atol=1e-5)
    assert pred.uncertainty.max() <= 1.0 + 1e-6


def test_writers_name_the_bleed_ich(phantom_scan, tmp_path):
    _, volume, affine = phantom_scan
    scan = Scan("case.nii.gz", "hu", volume, affine)
    predictor = _predictor(save_probabilities=True, flip_tta=True)
    pred = predictor.predict(scan)
    summary = write_scan_outputs(tmp_path / "s", scan, pred, predictor)
    mask = np.asarray(nib.load(str(tmp_path / "s" / "mask.nii.gz")).dataobj)
    assert set(np.unique(mask)) == {0, UNKNOWN_SUBTYPE}
    img = nib.load(str(tmp_path / "s" / "probabilities.nii.gz"))
    assert img.shape == (*volume.shape, 1) and img.header["descrip"].tobytes().rstrip(b"\0") == b"p(ICH), 4th dim"
    assert np.abs(img.get_fdata()[..., 0] - _p_bleed(volume)).max() <= 0.5 / 255 + 1e-6  # steps of 1/255
    assert nib.load(str(tmp_path / "s" / "uncertainty.nii.gz")).header["descrip"].tobytes().startswith(
        b"predictive entropy / log 2")

    table = pd.read_csv(tmp_path / "s" / "lesions.csv")
    assert len(table) and set(table["subtype"]) == {"ICH"}
    assert table["voxels"].sum() == (mask == UNKNOWN_SUBTYPE).sum()
    # each lesion's mean probability is the mean P(bleed) over its voxels: 26-connected components of
    # the bleed, numbered in scipy's raster order as lesions.csv numbers them
    ids, n = ndimage.label(mask == UNKNOWN_SUBTYPE, np.ones((3, 3, 3), bool))
    means = ndimage.mean(_p_bleed(volume), ids, np.arange(1, n + 1))
    assert table["mean_probability"].tolist() == pytest.approx(list(means), abs=1e-5)

    voxel_ml = float(np.prod(scan.spacing)) / 1000
    assert summary["volume_ml"] == pytest.approx({"any": (mask > 0).sum() * voxel_ml,
                                                  "ICH": (mask > 0).sum() * voxel_ml})
    assert summary["lesions"] == {"any": len(table), "ICH": len(table)}
    assert summary["uncertainty"]["measure"].endswith("2-class probabilities / log 2 (0..1)")
    montage = np.asarray(Image.open(tmp_path / "s" / "overlay.png").convert("RGB"))
    assert (montage == overlay_module.UNKNOWN_COLOR).all(-1).any()


def test_image_folder_npz_has_one_named_channel(tmp_path):
    slices = [np.linspace(0, 255, 30 * 20).reshape(30, 20).astype(np.uint8), np.full((16, 16), 200, np.uint8)]
    scan = Scan("folder", "display", slices, None, ["a.png", "b.png"])
    predictor = _predictor(save_probabilities=True)
    pred = predictor.predict(scan)
    summary = write_scan_outputs(tmp_path / "f", scan, pred, predictor)
    for name, s in zip(("a", "b"), slices):
        z = np.load(tmp_path / "f" / "probabilities" / f"{name}.npz")
        assert z["prob"].shape == (*s.shape, 1) and list(z["subtypes"]) == ["ICH"]
        saved = np.asarray(Image.open(tmp_path / "f" / "masks" / f"{name}.png"))
        assert set(np.unique(saved)) <= {0, UNKNOWN_SUBTYPE}
    assert np.asarray(Image.open(tmp_path / "f" / "masks" / "b.png")).min() == UNKNOWN_SUBTYPE  # 200 / 255 > 1/2
    assert set(summary["lesions"]) == {"any", "ICH"} and summary["lesions"]["ICH"] >= 1
    assert set(pd.read_csv(tmp_path / "f" / "lesions.csv")["subtype"]) == {"ICH"}


def test_lesions_of_unknown_subtype_by_hand():
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[1:3, 1:3, 0:2] = UNKNOWN_SUBTYPE  # 8 voxels, slices 0..1
    mask[6, 6, 2] = UNKNOWN_SUBTYPE  # 1 voxel, not touching
    prob = np.full((8, 8, 3, 1), 0.7, np.float32)
    prob[6, 6, 2, 0] = 0.9
    t = lesion_table(mask, (1.0, 1.0, 2.0), prob, labels=(UNKNOWN_SUBTYPE,))
    assert list(t["subtype"]) == ["ICH", "ICH"] and list(t["voxels"]) == [8, 1]
    assert list(zip(t["slice_first"], t["slice_last"])) == [(0, 1), (2, 2)]
    assert t["volume_ml"].tolist() == pytest.approx([8 * 0.002, 0.002])
    assert t["mean_probability"].tolist() == pytest.approx([0.7, 0.9]) and t["max_probability"].tolist() == pytest.approx([0.7, 0.9])
    # a subtype lesion next to binary probabilities has no channel: empty probability columns
    mask[4, 4, 1] = 2
    t = lesion_table(mask, None, prob, labels=(UNKNOWN_SUBTYPE,)).set_index("subtype")
    assert pd.isna(t.loc["SDH", "mean_probability"]) and t.loc["ICH", "mean_probability"].tolist() == pytest.approx([0.7, 0.9])
    with pytest.raises(ValueError, match="1 channels"):
        lesion_table(mask, None, prob)  # five subtype channels expected by default


def test_cleaning_and_statistics_keep_unknown_subtype():
    mask = np.zeros((12, 12, 2), np.uint8)
    mask[2:7, 2:7, 0] = UNKNOWN_SUBTYPE
    mask[4, 4, 0] = 0  # a hole the closing fills
    mask[10, 10, 1] = UNKNOWN_SUBTYPE  # a single voxel min_voxels drops
    mask[9:11, 1:3, 1] = 3  # a 4-voxel SAH
    closed = clean_mask(mask, closing=1)
    assert closed[4, 4, 0] == UNKNOWN_SUBTYPE and (closed[2:7, 2:7, 0] == UNKNOWN_SUBTYPE).sum() == 25
    opened = clean_mask(closed, opening=1)  # the 5 x 5 square survives a 3 x 3 opening, the single voxel not
    assert (opened[2:7, 2:7, 0] == UNKNOWN_SUBTYPE).all() and opened[10, 10, 1] == 0
    kept = clean_mask(mask, min_voxels=2)
    assert kept[10, 10, 1] == 0 and (kept == UNKNOWN_SUBTYPE).sum() == 24 and (kept == 3).sum() == 4
    assert lesion_counts(mask) == {"any": 3, "EDH": 0, "SDH": 0, "SAH": 1, "IPH": 0, "IVH": 0}
    assert lesion_counts(mask, (UNKNOWN_SUBTYPE,)) == {"any": 3, "ICH": 2}
    vol = volumes_ml(mask, (1.0, 1.0, 1.0), (3, UNKNOWN_SUBTYPE))
    assert vol == pytest.approx({"any": 0.029, "SAH": 0.004, "ICH": 0.025})
