"""A random-init checkpoint of the demo model at 64 px (cls + seg + Mask R-CNN, a cascade gate) and its
ONNX and TorchScript exports, made once per session; a phantom scan to run them on."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """model_final.pth as the trainer writes it; the seg background logit lowered by 6 so an untrained
    model paints bleeds (masks are not all empty), and a gate at p(any) >= 0.5."""
    from hemo_mtl.config import load_config
    from hemo_mtl.models import build_model

    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.image_size=64"])
    model = build_model(cfg["model"])
    state = model.state_dict()
    state["heads.seg.full_res.1.bias"][0] -= 6.0
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    torch.save({"model": state, "config": cfg, "cascade": {"threshold": 0.5, "heads": ["seg", "det"]}}, path)
    return path


@pytest.fixture(scope="session")
def onnx_export(checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="the 'onnx' extra (onnx, onnxruntime, onnxscript) is not installed")
    pytest.importorskip("onnxscript", reason="the 'onnx' extra (onnx, onnxruntime, onnxscript) is not installed")
    from hemo_mtl.export import export_checkpoint

    return export_checkpoint(checkpoint, "onnx", tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def torchscript_export(checkpoint, tmp_path_factory):
    from hemo_mtl.export import export_checkpoint

    return export_checkpoint(checkpoint, "torchscript", tmp_path_factory.mktemp("torchscript"))


@pytest.fixture(scope="session")
def phantom_nifti(tmp_path_factory):
    """(path, volume) of a 64 x 48 x 6 phantom crop with bleeds (non-square: exercises the pad undo)."""
    from hemo_mtl.data.phantom import make_phantom_case

    case = make_phantom_case(3, size=64, slices=6, normal=False)
    volume = np.ascontiguousarray(case.volume[:, 8:56, :]).astype(np.float32)
    path = tmp_path_factory.mktemp("scan") / "case.nii.gz"
    nib.save(nib.Nifti1Image(volume, case.affine), str(path))
    return path, volume


@pytest.fixture(scope="session")
def phantom_inputs(checkpoint, phantom_nifti):
    """The model inputs the predictor builds from the phantom scan (windowed, resized, padded)."""
    from hemo_mtl.inference import Predictor, load_scan

    predictor = Predictor.from_checkpoint(checkpoint)
    _, inputs, _ = predictor.model_inputs(load_scan(phantom_nifti[0]))
    return inputs[0]
