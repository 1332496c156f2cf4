"""engine/final.py: model_final.pth as its readers load it, the final metrics' extra keys, report notes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hemo_mtl.categories import LABELS
from hemo_mtl.config import load_config
from hemo_mtl.engine.final import (backbone_init, final_metrics, report_notes, save_final_model, summary_line,
                                   trained_model)
from hemo_mtl.models.gating import CascadeGate

REPO = Path(__file__).resolve().parents[2]


def _cfg(*opts: str) -> dict:
    return load_config(REPO / "configs" / "demo.yaml", ["data.image_size=32", "model.heads.det=null", *opts])


def test_model_final_is_read_back_by_the_predictor_with_its_gate_and_temperatures(tmp_path):
    from hemo_mtl.inference import Predictor
    from hemo_mtl.models import build_model

    cfg = _cfg()
    model = build_model(cfg["model"]).eval()
    temperature = [1.5, 0.8, 1.0, 1.2, 2.0, 0.9]
    path = save_final_model(tmp_path / "model_final.pth", model, cfg, CascadeGate(("seg",), 0.9, 0.25), temperature)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"model", "config", "cascade", "calibration"} and state["config"] == cfg
    assert state["model"].keys() == model.state_dict().keys()
    assert all(torch.equal(state["model"][k], v) if torch.is_tensor(v) else state["model"][k] == v
               for k, v in model.state_dict().items())  # a module's extra state is a plain dict
    predictor = Predictor.from_checkpoint(path)
    assert predictor.gate == CascadeGate(("seg",), 0.9, 0.25)
    assert predictor.temperature == pytest.approx(temperature)
    # no gate, no temperatures: empty records, which the predictor reads as none
    bare = Predictor.from_checkpoint(save_final_model(tmp_path / "bare.pth", model, cfg, None, None))
    assert bare.gate is None and bare.temperature is None


def test_final_metrics_carry_init_fold_and_selection_without_changing_the_evaluators_dict():
    metrics = {"cls/any/auc": 0.9}
    final = final_metrics(metrics, _cfg("model.backbone.weights=weights/resnet18-f37072fd.pth"),
                          {"train": [], "fold": 3}, {"selection": {"select/epochs": [4, 5]}})
    assert final == {"cls/any/auc": 0.9, "init": "imagenet:resnet18-f37072fd.pth", "fold": 3,
                     "select/epochs": [4, 5]}
    assert metrics == {"cls/any/auc": 0.9}
    assert backbone_init(_cfg()) == "random"
    assert "fold" not in final_metrics({}, _cfg(), {"train": []}, {})


class _Trainer:
    def __init__(self, extra_state):
        self.extra_state = extra_state

    def eval_model(self):
        return "weights"


class _Schedule:
    gate = CascadeGate(("seg",), 0.95, None)


def test_the_trained_model_keeps_the_gate_validation_chose():
    chosen = trained_model(_Trainer({"cascade_gate": CascadeGate(("seg",), 0.95, 0.4).state_dict()}), _Schedule())
    assert chosen.model == "weights" and chosen.gate.threshold == 0.4 and chosen.temperature is None
    assert trained_model(_Trainer({}), _Schedule()).gate is _Schedule.gate  # never validated: the schedule's


class _Split(list):
    patient_ids = ["p1", "p1", "p2"]


def test_report_notes_name_split_size_gate_cost_and_temperatures():
    cfg = _cfg("eval.final_split=val")
    metrics = {"init": "random", "cascade/gate/skipped_fraction": 0.5, "cascade/gate/sensitivity_lost": 0.125,
               "cascade/gate/lesions_lost": 0.0}
    notes = report_notes(metrics, cfg, CascadeGate(("seg",), 0.95, 0.3), {"val": _Split([1, 2, 3])},
                         {"cls": {"temperature": [2.0] * len(LABELS)}})
    assert notes[1] == "val split: 3 slices of 2 patients" and notes[2] == "backbone initialisation: random"
    assert "On val: 0.500 of slices skipped, slice sensitivity lost to gating 0.125" in notes[3]
    assert notes[4].endswith("T = any 2.000, EDH 2.000, SDH 2.000, SAH 2.000, IPH 2.000, IVH 2.000")
    assert len(report_notes({}, cfg, None, {"val": _Split()})) == 3


def test_summary_line():
    m = {"cls/any/f1": 0.5, "seg/any/dice": 0.25, "det/bbox/AP50": float("nan"), "other": 1.0}
    assert summary_line(m, 90.0, "val") == "val: cls/any/f1=0.5000 seg/any/dice=0.2500 det/bbox/AP50=nan (1.5 min)"
