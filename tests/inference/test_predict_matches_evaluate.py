"""The predicted mask.nii.gz files score the same in tools/evaluate.py --task seg as by hand (numpy)."""
import importlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hemo_mtl.data.phantom import make_phantom_case

REPO = Path(__file__).resolve().parents[2]


def _tool(name):
    return importlib.import_module(f"hemo_mtl.cli.{name}")


def test_predicted_masks_score_the_same_in_evaluate_as_by_hand(weights, tmp_path):
    scans, gt_dir, pred_dir = tmp_path / "scans", tmp_path / "gt", tmp_path / "pred_masks"
    for d in (scans, gt_dir, pred_dir):
        d.mkdir()
    for seed in (5, 6):  # two phantom patients with bleeds
        case = make_phantom_case(seed, size=64, slices=6, normal=False)
        nib.save(nib.Nifti1Image(case.volume.astype(np.float32), case.affine), str(scans / f"p{seed}.nii.gz"))
        nib.save(nib.Nifti1Image(case.mask.astype(np.uint8), case.affine), str(gt_dir / f"p{seed}.nii.gz"))
    assert _tool("predict").main(["--weights", str(weights), "--input", str(scans), "--out", str(tmp_path / "out"),
                                  "--threads", "2"]) == 0
    for seed in (5, 6):
        shutil.copy(tmp_path / "out" / f"p{seed}" / "mask.nii.gz", pred_dir / f"p{seed}.nii.gz")
    assert _tool("evaluate").main(["--task", "seg", "--gt-masks", str(gt_dir), "--pred-masks", str(pred_dir),
                                   "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())

    gt = np.concatenate([np.asarray(nib.load(str(gt_dir / f"p{s}.nii.gz")).dataobj).ravel() for s in (5, 6)])
    pred = np.concatenate([np.asarray(nib.load(str(pred_dir / f"p{s}.nii.gz")).dataobj).ravel() for s in (5, 6)])
    assert pred.any(), "the biased test model paints bleeds; an empty prediction would make this test vacuous"
    for label, name in enumerate(("any", "EDH", "SDH", "SAH", "IPH", "IVH")):
        g, p = (gt > 0, pred > 0) if label == 0 else (gt == label, pred == label)
        if not (g.any() or p.any()):
            continue
        dice = 2 * np.logical_and(g, p).sum() / (g.sum() + p.sum())
        assert metrics[f"seg/{name}/dice"] == pytest.approx(dice, abs=1e-9), name
