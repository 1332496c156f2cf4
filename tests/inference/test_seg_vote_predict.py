"""A checkpoint whose config sets model.seg_vote predicts the voted p(any): the predictor rebuilds the
model from the checkpoint's config, and its p(any) is the hand mix of the same model's two heads."""
from __future__ import annotations

import numpy as np
import torch

from hemo_mtl.inference import PredictOptions, Predictor, Scan


def test_checkpoint_with_seg_vote_predicts_the_mix_of_its_heads(weights, phantom_scan, tmp_path):
    _, volume, affine = phantom_scan
    state = torch.load(weights, weights_only=True)
    state["config"]["model"]["seg_vote"] = 0.5
    state["config"]["model"]["heads"]["det"] = None  # cls + seg only (the demo's detector is not needed)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("heads.det.")}
    state.pop("cascade", None)
    voted_path = tmp_path / "voted.pth"
    torch.save(state, voted_path)
    scan = Scan("case", "hu", volume, affine)
    voted = Predictor.from_checkpoint(voted_path, PredictOptions(slice_context=0))
    _, inputs, _ = voted.model_inputs(scan)
    model = voted.model
    model.seg_vote = 0.0  # the same weights without the vote: the reference heads
    with torch.no_grad():
        plain = model({"image": inputs[0]})
    bleed = (1 - plain["seg_prob"][:, 0]).flatten(1).amax(dim=1)
    model.seg_vote = 0.5
    got = voted.predict(scan).cls_prob
    # float32 through the same kernels, batched the same way: equal to rounding
    np.testing.assert_allclose(got[:, 0], ((plain["cls_prob"][:, 0] + bleed) / 2).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got[:, 1:], plain["cls_prob"][:, 1:].numpy(), rtol=0, atol=1e-6)
    assert np.abs(got[:, 0] - plain["cls_prob"][:, 0].numpy()).max() > 1e-3  # the vote moved p(any)
