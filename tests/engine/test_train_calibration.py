"""eval.temperature_scaling end to end: fitted on val, carried in model_final.pth, reported, applied by the predictor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hemo_mtl.categories import LABELS
from hemo_mtl.evaluation.calibration import apply_temperature

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.image_size=64", "data.phantom={patients: 16, seed: 2, size: 64, slices: 8}",
        "data.split={seed: 5, val: 0.25, test: 0.25}", "data.batch_size=8", "train.progress=false",
        "train.epochs=1", "schedule.name=joint", "train.lr_schedule.warmup_iters=2", "eval.image_panels=0",
        "eval.tasks=[cls]", "eval.temperature_scaling=true"]


def _train_net():
    from hemo_mtl.cli import train

    return train


@pytest.mark.slow
def test_temperature_fitted_on_val_lowers_val_nll_and_travels_to_the_predictor(tmp_path):
    tool = _train_net()
    out = tmp_path / "run"
    opts = [f"output_dir={out}", *TINY]
    final = tool.main(tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts]))
    state = torch.load(out / "model_final.pth", weights_only=True)
    t = state["calibration"]["temperature"]
    assert len(t) == len(LABELS) and t[0] != 1.0  # `any` has both classes on val: a temperature was fitted
    assert [final[f"cls/{l}/temperature"] for l in LABELS] == pytest.approx(t)
    assert (out / "report" / "reliability_cls.png").is_file() and (out / "report" / "reliability_cls_patient.png").is_file()
    assert "ece@calibrated" in (out / "report.md").read_text()

    # scored on the split it was fitted on, the checkpoint's temperature cannot raise the NLL
    val = tool.main(tool.parse_args(["--config", str(REPO / "configs" / "demo.yaml"), *opts, "eval.final_split=val",
                                     f"output_dir={tmp_path / 'val'}", "--eval-only", "--weights",
                                     str(out / "model_final.pth")]))
    for label, temp in zip(LABELS, t):
        if temp != 1.0:
            assert val[f"cls/{label}/nll@calibrated"] <= val[f"cls/{label}/nll"] + 1e-9, label
    evaluated = tmp_path / "val" / "eval" / "model_final-val"  # --eval-only writes its own folder in the run dir
    assert json.loads((evaluated / "final_metrics.json").read_text())["cls/any/temperature"] == pytest.approx(t[0])

    from hemo_mtl.data.phantom import make_phantom_case
    from hemo_mtl.inference import PredictOptions, Predictor, Scan

    case = make_phantom_case(1, size=64, slices=6)
    scan = Scan("x", "hu", case.volume.astype(np.float32), case.affine)
    calibrated = Predictor.from_checkpoint(out / "model_final.pth").predict(scan).cls_prob
    raw = Predictor.from_checkpoint(out / "model_final.pth", PredictOptions(calibrate=False)).predict(scan).cls_prob
    # float32 model output through float64 logit/sigmoid and back to float32
    assert np.allclose(calibrated, apply_temperature(raw, t), atol=1e-6)
    assert not np.allclose(calibrated[:, 0], raw[:, 0], atol=1e-4)
