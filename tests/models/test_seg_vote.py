"""model.seg_vote: the segmenter's surest bleed pixel mixed into p(any), checked by hand and through the
model and the config checks (tests/inference/test_seg_vote_predict.py: through a checkpoint)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hemo_mtl.config import load_config
from hemo_mtl.config_schema import ConfigError
from hemo_mtl.models import build_model
from hemo_mtl.models.gating import CascadeGate
from hemo_mtl.models.seg_vote import vote_any

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "real" / "ctich_jpg.yaml"
SMALL = {"backbone": {"name": "resnet18", "in_chans": 1, "fpn_channels": 16},
         "heads": {"cls": {}, "seg": {"channels": 8}, "det": None}}


def test_hand_computed_binary_and_subtype_heads():
    cls = torch.tensor([[0.2, 0.1, 0.3, 0.0, 0.0, 0.9], [0.8, 0.0, 0.0, 0.0, 0.0, 0.0]])
    binary = torch.zeros(2, 2, 3, 3)
    binary[:, 0] = 1.0
    binary[0, :, 1, 2] = torch.tensor([0.1, 0.9])  # slice 0: one pixel at P(bleed) 0.9; slice 1: none
    got = vote_any(cls, binary, 0.5)
    torch.testing.assert_close(got[:, 0], torch.tensor([(0.2 + 0.9) / 2, (0.8 + 0.0) / 2]))
    torch.testing.assert_close(got[:, 1:], cls[:, 1:])  # the subtypes stay the classifier's
    subtype = torch.zeros(2, 6, 2, 2)
    subtype[:, 0] = 1.0
    subtype[1, :, 0, 0] = torch.tensor([0.4, 0.1, 0.1, 0.2, 0.1, 0.1])  # P(bleed) = 1 - P(background) = 0.6
    torch.testing.assert_close(vote_any(cls, subtype, 0.25)[:, 0], torch.tensor([0.75 * 0.2, 0.75 * 0.8 + 0.25 * 0.6]))
    torch.testing.assert_close(vote_any(cls, subtype, 0.0), cls)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vote_any(cls, subtype, 1.5)


def test_model_eval_mixes_p_any_and_training_losses_are_unchanged(batch_fn, mask_fn):
    torch.manual_seed(0)
    model = build_model({**SMALL, "seg_vote": 0.5})
    batch = batch_fn([mask_fn(64, 0), mask_fn(64, 1)], [True, True], [True, True], [False, False])
    voted_losses = model(batch)
    model.seg_vote = 0.0
    torch.testing.assert_close(model(batch), voted_losses)  # training: the vote is not in any loss
    model.eval()
    with torch.no_grad():
        plain = model(batch)
        model.seg_vote = 0.5
        voted = model(batch)
    bleed = (1 - plain["seg_prob"][:, 0]).amax(dim=(1, 2))
    torch.testing.assert_close(voted["cls_prob"][:, 0], (plain["cls_prob"][:, 0] + bleed) / 2)
    torch.testing.assert_close(voted["cls_prob"][:, 1:], plain["cls_prob"][:, 1:])
    torch.testing.assert_close(voted["seg_prob"], plain["seg_prob"])
    with pytest.raises(ValueError, match="seg_vote"), torch.no_grad():
        model(batch, gate=CascadeGate(("seg",), 0.95, 0.5))


@pytest.mark.parametrize("overrides, message", [
    (["model.heads.seg=null"], "needs a classification and a segmentation head"),
    (["schedule.name=cascade"], "schedule.cascade.gate"),
    (["model.seg_vote=1.5"], "seg_vote"),
])
def test_config_refuses_a_vote_without_a_segmenter_or_under_a_gate_on_it(overrides, message):
    base = ["data.root=/nonexistent", "model.seg_vote=0.5"]
    assert load_config(RECIPE, base)["model"]["seg_vote"] == 0.5
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPE, base + overrides)
    gated_det = load_config(RECIPE, base + ["schedule.name=cascade", "schedule.cascade.gate=[det]"])
    assert gated_det["model"]["seg_vote"] == 0.5


def test_temperature_is_fitted_on_the_voted_p_any(batch_fn, mask_fn, monkeypatch):
    """The validation pass that fits temperatures runs the segmenter too, so the temperature is fitted on
    the p(any) the predictor will scale: the probabilities handed to the fit are the model's voted ones."""
    import numpy as np

    from hemo_mtl.engine.run_eval import RunEvaluation
    from hemo_mtl.evaluation import calibration

    torch.manual_seed(0)
    model = build_model({**SMALL, "seg_vote": 0.5})
    empty = np.zeros((64, 64), np.uint8)
    batches = []
    for seed in range(2):
        b = batch_fn([mask_fn(64, 0), empty, mask_fn(64, 1), empty], [True] * 4, [True] * 4, [False] * 4, seed=seed)
        b["meta"] = [{"patient_id": f"p{seed}{i}", "study_id": f"s{seed}{i}", "slice_idx": 0} for i in range(4)]
        batches.append(b)
    seen = {}
    monkeypatch.setattr(calibration, "fit_temperature", lambda y, p, valid: seen.setdefault("p", np.array(p)))
    cfg = {"eval": {"tasks": ["cls", "seg"], "flip_tta": False, "slice_context": 0, "sliding_window": None},
           "data": {"batch_size": 4}}
    RunEvaluation(cfg, model, torch.device("cpu")).fit_temperature(model, batches)

    model.eval()
    with torch.no_grad():
        voted = torch.cat([model(b)["cls_prob"] for b in batches]).numpy()
        model.seg_vote = 0.0
        alone = torch.cat([model(b)["cls_prob"] for b in batches]).numpy()
    np.testing.assert_allclose(seen["p"][:, 0], voted[:, 0], rtol=0, atol=1e-6)  # same float32 forward
    assert np.abs(seen["p"][:, 0] - alone[:, 0]).max() > 1e-3  # not the classifier's alone
