"""probabilities.nii.gz / uncertainty.nii.gz keep the input's shape and affine; lesions.csv against a hand-made mask."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import entropy  # noqa: E402
from torch import nn  # noqa: E402

from hemo_mtl.data.windowing import window_hu  # noqa: E402
from hemo_mtl.inference import PredictOptions, Predictor, Scan, write_scan_outputs  # noqa: E402
from hemo_mtl.inference.lesions import lesion_table  # noqa: E402
from hemo_mtl.inference.maps import predictive_entropy  # noqa: E402

CENTERS = torch.linspace(0, 1, 6)


class SoftIntensityModel(nn.Module):
    """Pixelwise: class probabilities a smooth function of the windowed intensity; p(any) = slice mean."""

    def forward(self, batch, gate=None):
        x = batch["image"][:, :1]
        return {"cls_prob": x.mean((2, 3)).repeat(1, 6),
                "seg_prob": torch.softmax(-8 * (x - CENTERS.view(1, 6, 1, 1)) ** 2, dim=1)}


def _reference_prob(volume):
    x = window_hu(volume, 40, 80)[..., None]
    z = -8 * (x - CENTERS.numpy()) ** 2
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)  # (X, Y, Z, 6)


def _predictor(**opts):
    cfg = {"data": {"windows": ["brain"], "image_size": 64}, "model": {}}
    return Predictor(SoftIntensityModel(), cfg, options=PredictOptions(**opts))


def test_predictive_entropy_matches_scipy():
    p = torch.softmax(torch.randn(7, 6, 3, 2), dim=1)
    p[0, :, 0, 0] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    ref = entropy(p.numpy(), axis=1) / np.log(6)
    assert np.allclose(predictive_entropy(p).numpy(), ref, atol=1e-6)  # float32 logs
    assert float(predictive_entropy(p)[0, 0, 0]) == 0.0


def test_probability_maps_keep_shape_and_affine(phantom_scan, tmp_path):
    _, volume, affine = phantom_scan  # 64 x 48 x 6: padded into the 64 px model input, no resize
    scan = Scan("case.nii.gz", "hu", volume, affine)
    predictor = _predictor(save_probabilities=True)
    pred = predictor.predict(scan)
    assert pred.prob.shape == (*volume.shape, 5) and pred.uncertainty is None  # one pass: no uncertainty
    assert np.allclose(pred.prob, _reference_prob(volume)[..., 1:], atol=1e-5)  # float32 softmax
    write_scan_outputs(tmp_path / "one", scan, pred, predictor)
    img = nib.load(str(tmp_path / "one" / "probabilities.nii.gz"))
    assert img.shape == (*volume.shape, 5) and np.allclose(img.affine, affine)
    assert np.abs(img.get_fdata() - pred.prob).max() <= 0.5 / 255 + 1e-6  # stored in steps of 1/255
    assert not (tmp_path / "one" / "uncertainty.nii.gz").exists()

    tta = _predictor(save_probabilities=True, flip_tta=True)
    pred = tta.predict(scan)
    write_scan_outputs(tmp_path / "tta", scan, pred, tta)
    u = nib.load(str(tmp_path / "tta" / "uncertainty.nii.gz"))
    assert u.shape == volume.shape and np.allclose(u.affine, affine)
    # the mean of the plain and the mirrored pass, then its entropy
    both = (_reference_prob(volume) + _reference_prob(volume[::-1])[::-1]) / 2
    assert np.allclose(pred.uncertainty, entropy(both, axis=-1) / np.log(6), atol=1e-5)
    summary = pd.read_json(tmp_path / "tta" / "summary.json", typ="series")
    assert summary["uncertainty"]["scan_mean"] == pytest.approx(float(pred.uncertainty.mean()), rel=1e-6)


def test_default_run_writes_no_maps(phantom_scan, tmp_path):
    _, volume, affine = phantom_scan
    scan = Scan("case.nii.gz", "hu", volume, affine)
    predictor = _predictor()
    pred = predictor.predict(scan)
    assert pred.prob is None and pred.uncertainty is None
    write_scan_outputs(tmp_path / "s", scan, pred, predictor)
    assert not (tmp_path / "s" / "probabilities.nii.gz").exists() and (tmp_path / "s" / "lesions.csv").is_file()


def test_lesions_csv_against_a_hand_made_mask():
    mask = np.zeros((10, 10, 5), np.uint8)
    mask[1:3, 1:3, 1:4] = 2  # SDH: 2 x 2 x 3 = 12 voxels, slices 1..3
    mask[6:9, 6:8, 2] = 2  # a second SDH, not touching: 6 voxels on slice 2
    mask[6, 1, 4] = 4  # IPH: one voxel on slice 4
    prob = np.zeros((10, 10, 5, 5), np.float32)
    prob[..., 1] = 0.8
    prob[6:9, 6:8, 2, 1] = np.array([[0.6, 0.7], [0.8, 0.9], [1.0, 0.6]])  # mean 0.7667, max 1.0
    prob[..., 3] = 0.55
    unc = np.full((10, 10, 5), 0.1, np.float32)
    unc[1:3, 1:3, 1] = 0.4  # 4 of the first lesion's 12 voxels: mean (4 x 0.4 + 8 x 0.1) / 12 = 0.2
    spacing = (0.5, 0.5, 5.0)  # 1.25 mm^3 per voxel = 0.00125 mL
    t = lesion_table(mask, spacing, prob, unc)
    assert list(t["subtype"]) == ["SDH", "SDH", "IPH"]
    assert list(t["voxels"]) == [12, 6, 1]
    assert list(zip(t["slice_first"], t["slice_last"])) == [(1, 3), (2, 2), (4, 4)]
    assert t["volume_ml"].tolist() == pytest.approx([12 * 0.00125, 6 * 0.00125, 0.00125])
    assert t["mean_probability"].tolist() == pytest.approx([0.8, 4.6 / 6, 0.55], abs=1e-6)
    assert t["max_probability"].tolist() == pytest.approx([0.8, 1.0, 0.55], abs=1e-6)
    assert t["uncertainty"].tolist() == pytest.approx([0.2, 0.1, 0.1], abs=1e-6)
    assert list(t["lesion_id"]) == [1, 2, 3]
    # without maps the extent and volume stay, the map columns are empty
    bare = lesion_table(mask, None)
    assert bare["voxels"].tolist() == [12, 6, 1] and bare["mean_probability"].isna().all()
    assert bare["volume_ml"].isna().all()


def test_image_folder_gets_per_slice_npz(tmp_path):
    slices = [np.linspace(0, 255, 30 * 20).reshape(30, 20).astype(np.uint8), np.full((16, 16), 200, np.uint8)]
    scan = Scan("folder", "display", slices, None, ["a.png", "b.png"])
    predictor = _predictor(save_probabilities=True, flip_tta=True)
    pred = predictor.predict(scan)
    write_scan_outputs(tmp_path / "f", scan, pred, predictor)
    for name, s in zip(("a", "b"), slices):
        z = np.load(tmp_path / "f" / "probabilities" / f"{name}.npz")
        assert z["prob"].shape == (*s.shape, 5) and list(z["subtypes"]) == ["EDH", "SDH", "SAH", "IPH", "IVH"]
        assert np.load(tmp_path / "f" / "uncertainty" / f"{name}.npz")["uncertainty"].shape == s.shape
    table = pd.read_csv(tmp_path / "f" / "lesions.csv")
    assert set(table["file"]) <= {"a.png", "b.png"}
