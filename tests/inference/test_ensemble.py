"""Ensembles: copies of one checkpoint equal it, different members equal their hand average, members that
predict different things are one clear error, and run_grid's members.txt predicts as the ensemble."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import entropy  # noqa: E402

from hemo_mtl.data.io import DataError  # noqa: E402
from hemo_mtl.inference import PredictOptions, Predictor, Scan  # noqa: E402
from hemo_mtl.inference.ensemble import EnsemblePredictor, load_predictor, member_paths  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
from hemo_mtl.cli import predict as predict_tool  # noqa: E402
from hemo_mtl.cli_errors import run_main  # noqa: E402


def random_checkpoint(path: Path, seed: int, *overrides: str, cascade: dict | None = None) -> Path:
    """A randomly initialised cls + seg model of the demo config (0 training steps) as a model_final.pth."""
    from hemo_mtl.config import load_config
    from hemo_mtl.models import build_model

    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.image_size=32", "model.heads.det=null",
                                                        "model.backbone.fpn_channels=16", *overrides])
    torch.manual_seed(seed)
    model = build_model(cfg["model"])
    if "seg" in model.heads:
        with torch.no_grad():  # spread the random seg outputs so the masks are not all background
            model.heads["seg"].predictor.bias.normal_(0, 2)
    torch.save({"model": model.state_dict(), "config": cfg, "cascade": cascade or {}}, path)
    return path


@pytest.fixture(scope="module")
def scan(phantom_scan):
    _, volume, affine = phantom_scan  # 64 x 48 x 6
    return Scan("case.nii.gz", "hu", volume, affine)


def _full_prob(prob: np.ndarray) -> np.ndarray:
    """(..., 5) subtype probabilities -> (..., 6) with background."""
    return np.concatenate([1 - prob.sum(-1, keepdims=True), prob], axis=-1)


def test_copies_of_one_checkpoint_predict_as_it(weights, scan, tmp_path):
    state = torch.load(weights, weights_only=True)
    single = Predictor.from_checkpoint(weights, PredictOptions(save_probabilities=True, score_threshold=0.0))
    p_any = single.predict(scan).cls_prob[:, 0]
    state["cascade"] = {"heads": ["seg", "det"], "target_sensitivity": 0.95, "threshold": float(np.median(p_any))}
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(state, a)
    torch.save(state, b)
    options = dict(save_probabilities=True, score_threshold=0.0)
    one = Predictor.from_checkpoint(a, PredictOptions(**options)).predict(scan)
    ens = load_predictor([a, b], PredictOptions(**options))
    assert isinstance(ens, EnsemblePredictor) and ens.num_members == 2
    two = ens.predict(scan)
    assert one.gate_passed is not None and one.gate_passed.any() and not one.gate_passed.all()
    assert np.array_equal(two.gate_passed, one.gate_passed)
    assert np.allclose(two.cls_prob, one.cls_prob, atol=1e-6)  # batch composition changes CPU kernels
    assert np.allclose(two.prob, one.prob, atol=1e-5)
    assert (two.mask == one.mask).mean() > 0.999 and one.mask.any()
    assert one.uncertainty is None and two.uncertainty.shape == scan.slices.shape  # an ensemble has one
    for x, y in zip(one.instances, two.instances):  # duplicate detections merged away by the NMS
        order_x, order_y = np.lexsort(x["boxes"].T), np.lexsort(y["boxes"].T)
        assert np.allclose(x["boxes"][order_x], y["boxes"][order_y], atol=1e-3)
        assert np.array_equal(x["labels"][order_x], y["labels"][order_y])
    assert sum(len(i["boxes"]) for i in one.instances) > 0


@pytest.mark.parametrize("sizes", [(32, 32), (32, 48)])  # one model grid; different grids (slice-grid mean)
def test_two_members_equal_the_hand_average(scan, tmp_path, sizes):
    paths = [random_checkpoint(tmp_path / f"m{k}.pth", k, f"data.image_size={s}")
             for k, s in enumerate(sizes)]
    options = PredictOptions(save_probabilities=True)
    singles = [Predictor.from_checkpoint(p, PredictOptions(save_probabilities=True)).predict(scan) for p in paths]
    pred = load_predictor(paths, options).predict(scan)
    assert np.allclose(pred.cls_prob, (singles[0].cls_prob + singles[1].cls_prob) / 2, atol=1e-6)
    mean = (singles[0].prob + singles[1].prob) / 2
    assert not np.allclose(singles[0].prob, singles[1].prob, atol=1e-2)  # the members do differ
    assert np.allclose(pred.prob, mean, atol=1e-5)
    full = _full_prob(mean)
    top2 = np.sort(full, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # away from ties, the mask is the argmax of the mean
    assert np.array_equal(pred.mask[clear], full.argmax(-1)[clear]) and clear.mean() > 0.9
    assert np.allclose(pred.uncertainty, entropy(np.clip(full, 0, 1), axis=-1) / np.log(6), atol=1e-4)


@pytest.mark.parametrize("sizes", [(32, 32), (32, 48)])
def test_binary_members_average_to_one_bleed_channel(scan, tmp_path, sizes):
    from hemo_mtl.categories import UNKNOWN_SUBTYPE

    binary = ("model.heads.seg.mode=binary", "model.heads.seg.class_weight=null")
    paths = [random_checkpoint(tmp_path / f"b{k}.pth", k, f"data.image_size={s}", *binary) for k, s in enumerate(sizes)]
    singles = [Predictor.from_checkpoint(p, PredictOptions(save_probabilities=True)).predict(scan) for p in paths]
    pred = load_predictor(paths, PredictOptions(save_probabilities=True)).predict(scan)
    assert pred.seg_labels == (UNKNOWN_SUBTYPE,) and pred.prob.shape == (*scan.slices.shape, 1)
    mean = (singles[0].prob + singles[1].prob) / 2  # each member's P(bleed)
    assert not np.allclose(singles[0].prob, singles[1].prob, atol=1e-2)
    assert np.allclose(pred.prob, mean, atol=1e-5)
    clear = np.abs(mean[..., 0] - 0.5) > 1e-4
    assert np.array_equal(pred.mask[clear], np.where(mean[..., 0] > 0.5, UNKNOWN_SUBTYPE, 0)[clear])
    assert set(np.unique(pred.mask)) == {0, UNKNOWN_SUBTYPE}
    p = np.clip(mean[..., 0], 0, 1)
    assert np.allclose(pred.uncertainty, entropy(np.stack([1 - p, p]), axis=0) / np.log(2), atol=1e-4)


def test_members_that_predict_different_things_are_one_error(tmp_path, scan, capsys):
    a = random_checkpoint(tmp_path / "a.pth", 0)
    binary = random_checkpoint(tmp_path / "binary.pth", 1, "model.heads.seg.mode=binary",
                               "model.heads.seg.class_weight=null")
    cls_only = random_checkpoint(tmp_path / "cls.pth", 2, "model.heads.seg=null", "model.loss.consistency=0.0")
    for other, key in ((binary, "model.heads.seg.mode"), (cls_only, "tasks")):
        with pytest.raises(DataError) as info:
            load_predictor([a, a, other])
        message = str(info.value)
        assert "ensemble member 3" in message and key in message and str(other) in message, message
        assert "\n" not in message
    scan_path = tmp_path / "scan.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(scan.slices, scan.affine), str(scan_path))
    code = run_main(predict_tool.main, ["--weights", str(a), str(binary), "--input", str(scan_path),
                                                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ensemble member 2" in err[0] and "model.heads.seg.mode" in err[0]
    assert not (tmp_path / "out").exists()


def test_run_grid_members_round_trip_into_predict(tmp_path, scan):
    from hemo_mtl.cli import run_grid

    config = tmp_path / "cfg.yaml"
    config.write_text("{}\n")
    grid = tmp_path / "grid"
    for k in range(2):
        run = grid / "cfg" / f"fold{k}"
        run.mkdir(parents=True)
        random_checkpoint(run / "model_final.pth", seed=k)
        (run / "final_metrics.json").write_text(json.dumps({"cls/any/f1": 0.5}))
    assert run_grid.main(run_grid.parse_args([str(config), "--folds", "3", "--out", str(grid), "--table"])) == 0
    folds = [grid / "cfg" / "fold0" / "model_final.pth", grid / "cfg" / "fold1" / "model_final.pth"]
    assert [p.resolve() for p in member_paths([grid / "cfg"])] == [p.resolve() for p in folds]
    assert [p.resolve() for p in member_paths([grid / "members.txt"])] == [p.resolve() for p in folds]

    import nibabel as nib

    scan_path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(scan.slices, scan.affine), str(scan_path))
    for name, weights in (("listed", [str(grid / "cfg")]), ("explicit", [str(p) for p in folds])):
        assert predict_tool.main(["--weights", *weights, "--input", str(scan_path), "--out",
                                  str(tmp_path / name), "--save-probabilities"]) == 0
    listed = json.loads((tmp_path / "listed" / "scan" / "summary.json").read_text())
    explicit = json.loads((tmp_path / "explicit" / "scan" / "summary.json").read_text())
    assert listed["members"] == 2 and listed["probabilities"] == explicit["probabilities"]
    assert listed["model_sha256"] == explicit["model_sha256"] and len(set(listed["model_sha256"])) == 2
    assert (tmp_path / "listed" / "scan" / "uncertainty.nii.gz").is_file()
