"""A real checkpoint from a tiny run of tools/train_net.py (demo config, 64 px phantom, one epoch),
plus a copy whose segmentation head is biased away from background so masks are not all empty."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config", str(REPO / "configs" / "demo.yaml"),
           f"output_dir={out}", "data.image_size=64", "data.phantom.size=64", "data.phantom.patients=4",
           "data.phantom.slices=8", "train.epochs=1", "schedule.name=joint", "train.progress=false"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model_final.pth").is_file()
    return out


@pytest.fixture(scope="session")
def weights(trained_run) -> Path:
    """model_final.pth with the background logit lowered by 6: an untrained model then paints bleeds."""
    state = torch.load(trained_run / "model_final.pth", weights_only=True)
    state["model"]["heads.seg.full_res.1.bias"][0] -= 6.0
    path = trained_run / "model_biased.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def phantom_scan(tmp_path_factory):
    """(path, volume HU, affine) of a 64x48x6 phantom crop: non-square slices exercise the pad/resize undo."""
    from hemo_mtl.data.phantom import make_phantom_case

    case = make_phantom_case(3, size=64, slices=6)
    volume = np.ascontiguousarray(case.volume[:, 8:56, :]).astype(np.float32)
    path = tmp_path_factory.mktemp("scan") / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume, case.affine), str(path))
    return path, volume, case.affine
