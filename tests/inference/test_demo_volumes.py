"""End to end: the README demo's checkpoint measures bleed volumes on phantom scans it never saw.

`configs/demo.yaml` trains as-is (minutes on 2 CPU cores, hence ``slow``); `tools/make_phantom.py` writes
fresh scans with another seed; `tools/predict.py` writes mask.nii.gz + summary.json. The masks must keep
the input's shape and affine, their Dice must be what `tools/evaluate.py --task seg` reports, and the
predicted bleed volume summed over the scans must be within 15% of the true one, and so must each scan's
for at least 80% of the bleeding scans. Measured: 14 of 16 (1.5-23 mL bleeds at 128 px x 7.5 mm; the
misses: -34%, a skull-base SDH gated off on two slices, and -15.1%; this test's own retrain gave 15 of 16),
the total -0.2%; on 96 other unseen
scans 70 of 77 bleeding ones (91%); per-scan errors are printed.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 0.15


def _run(*args, timeout):
    done = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_demo_checkpoint_measures_bleed_volumes_on_unseen_phantom_scans(tmp_path):
    run = tmp_path / "demo"
    _run(REPO / "tools" / "train_net.py", "--config", REPO / "configs" / "demo.yaml", f"output_dir={run}",
         "train.progress=false", timeout=3600)
    scans = tmp_path / "scans"
    _run(REPO / "tools" / "make_phantom.py", "--out", scans, "--patients", 24, "--seed", 777, "--size", 128,
         "--slices", 16, timeout=600)
    out = tmp_path / "pred"
    _run(REPO / "tools" / "predict.py", "--weights", run / "model_final.pth", "--input", scans / "volumes",
         "--out", out, "--threads", 2, timeout=1200)

    pred_masks = tmp_path / "pred_masks"
    pred_masks.mkdir()
    overlap = total = 0
    errors, true_total, predicted_total = {}, 0.0, 0.0
    for gt_path in sorted((scans / "masks").glob("*.nii.gz")):
        name = gt_path.name[:-len(".nii.gz")]
        gt_img = nib.load(str(gt_path))
        pred_img = nib.load(str(out / name / "mask.nii.gz"))
        assert pred_img.shape == gt_img.shape and np.allclose(pred_img.affine, gt_img.affine), name
        gt, pred = np.asarray(gt_img.dataobj) > 0, np.asarray(pred_img.dataobj) > 0
        overlap, total = overlap + 2 * (gt & pred).sum(), total + gt.sum() + pred.sum()
        voxel_ml = float(np.prod(gt_img.header.get_zooms()[:3])) / 1000.0
        true_ml = gt.sum() * voxel_ml
        predicted_ml = json.loads((out / name / "summary.json").read_text())["volume_ml"]["any"]
        assert predicted_ml == pytest.approx(pred.sum() * voxel_ml, rel=1e-6), name  # summary agrees with its mask
        true_total, predicted_total = true_total + true_ml, predicted_total + predicted_ml
        if true_ml > 0:
            errors[name] = round(float(predicted_ml - true_ml) / true_ml, 3)
        shutil.copy(out / name / "mask.nii.gz", pred_masks / gt_path.name)

    _run(REPO / "tools" / "evaluate.py", "--task", "seg", "--gt-masks", scans / "masks", "--pred-masks", pred_masks,
         "--out", tmp_path / "eval", timeout=600)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["seg/any/dice"] == pytest.approx(overlap / total, abs=1e-9)
    assert errors, "the unseen phantom scans hold no bleed: the check would be vacuous"
    print(f"per-scan relative volume errors: {errors}")
    assert abs(predicted_total - true_total) <= TOLERANCE * true_total, (predicted_total, true_total, errors)
    within = [abs(e) <= TOLERANCE for e in errors.values()]
    assert sum(within) >= 0.8 * len(within), errors
