"""2.5D checkpoints: the predictor stacks the same neighbours, in the same channel order and geometry,
as the training dataset; a tiny 2.5D model trains and predicts a NIfTI end to end."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hemo_mtl.categories import LABELS  # noqa: E402
from hemo_mtl.data.dataset import HemorrhageDataset  # noqa: E402
from hemo_mtl.inference import Predictor, load_scan  # noqa: E402
from hemo_mtl.inference.predictor import with_context  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WINDOWS = ["brain", "subdural"]


def _manifest(images, kind):
    frame = pd.DataFrame([{"patient_id": "p", "study_id": "p", "slice_idx": k, "source": "test", "image": image,
                           "kind": kind, **{n: pd.NA for n in LABELS}, "mask": "", "has_cls": False,
                           "has_mask": False, "has_boxes": False, "spacing": ""} for k, image in enumerate(images)])
    for name in LABELS:
        frame[name] = frame[name].astype("Int8")
    return frame


def _predictor(size, context):
    cfg = {"data": {"windows": WINDOWS, "image_size": size, "context_slices": context}, "model": {}}
    return Predictor(torch.nn.Identity(), cfg)


@pytest.mark.parametrize("context", [1, 2])
def test_predictor_stack_equals_the_dataset_stack_for_a_volume(phantom_scan, context):
    path, volume, _ = phantom_scan  # 64 x 48 x 6: resize to 32 plus pad, neighbours past both ends
    ds = HemorrhageDataset(_manifest([f"{path}#{k}" for k in range(volume.shape[2])], "hu"), windows=WINDOWS,
                           image_size=32, context_slices=context)
    _, inputs, _ = _predictor(32, context).model_inputs(load_scan(path))
    assert inputs[0].shape == (volume.shape[2], len(WINDOWS) * (2 * context + 1), 32, 32)
    for k in range(volume.shape[2]):
        assert torch.allclose(inputs[0][k], ds[k]["image"], atol=1e-5), k


def test_predictor_stack_equals_the_dataset_stack_for_a_png_folder(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for k in range(4):
        files.append(str(tmp_path / f"{k:03d}.png"))
        Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8)).save(files[-1])
    ds = HemorrhageDataset(_manifest(files, "display"), windows=WINDOWS, image_size=20, context_slices=1)
    _, inputs, _ = _predictor(20, 1).model_inputs(load_scan(tmp_path))
    for k in range(4):
        assert torch.allclose(inputs[0][k], ds[k]["image"], atol=1e-5), k


def test_with_context_orders_channels_window_major():
    x = torch.arange(3 * 2, dtype=torch.float32).reshape(3, 2, 1, 1)  # (Z=3, C=2): value = 2z + c
    got = with_context(x, 1)[:, :, 0, 0]
    z = [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert got.tolist() == [[2 * a for a in row] + [2 * a + 1 for a in row] for row in z]


def test_a_tiny_2p5d_model_trains_and_predicts_a_volume(tmp_path, phantom_scan):
    run = tmp_path / "run"
    train = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config", str(REPO / "configs" / "demo.yaml"),
             f"output_dir={run}", "data.windows=[brain]", "data.context_slices=1", "model.backbone.in_chans=3",
             "data.image_size=64", "data.phantom.size=64", "data.phantom.patients=4", "data.phantom.slices=6",
             "train.epochs=1", "schedule.name=joint", "train.progress=false", "data.batch_size=8"]
    done = subprocess.run(train, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    state = torch.load(run / "model_final.pth", weights_only=True)
    assert state["config"]["data"]["context_slices"] == 1
    path, volume, affine = phantom_scan
    out = tmp_path / "pred"
    predict = [sys.executable, str(REPO / "tools" / "predict.py"), "--weights", str(run / "model_final.pth"),
               "--input", str(path), "--out", str(out), "--threads", "2"]
    done = subprocess.run(predict, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    mask = nib.load(str(out / "case" / "mask.nii.gz"))
    assert mask.shape == volume.shape and np.allclose(mask.affine, affine)
    assert np.asarray(mask.dataobj).max() <= 5
    summary = json.loads((out / "case" / "summary.json").read_text())
    assert summary["num_slices"] == volume.shape[2]
