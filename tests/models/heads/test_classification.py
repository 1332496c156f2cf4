from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hemo_mtl.models.backbones import build_backbone
from hemo_mtl.models.heads import ClassificationHead


@pytest.fixture(scope="module")
def feats():
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 16})
    return backbone, backbone(torch.randn(3, 1, 64, 64))


def _batch(cls, valid, has):
    return {"cls": torch.tensor(cls, dtype=torch.float32), "cls_valid": torch.tensor(valid, dtype=torch.float32),
            "has": {"cls": torch.tensor(has)}}


BATCH = _batch(
    cls=[[1, 0, 1, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
    valid=[[1] * 6, [1, 0, 0, 0, 0, 0], [1] * 6],  # full, Kaggle (any only), full negative
    has=[True, True, True],
)


@pytest.mark.parametrize("features", ["top", "fpn"])
def test_shapes_train_and_eval(feats, features):
    backbone, f = feats
    head = ClassificationHead(backbone, features=features)
    assert head.logits(f).shape == (3, 6)
    out = head(f, BATCH)
    assert set(out) == {"loss_cls", "cls_logits"} and torch.isfinite(out["loss_cls"])
    head.eval()
    prob = head(f, BATCH)["cls_prob"]
    assert prob.shape == (3, 6) and bool(((prob > 0) & (prob < 1)).all())


def test_masked_bce_matches_hand_computation_over_known_labels(feats):
    backbone, f = feats
    head = ClassificationHead(backbone, pos_weight=[2.0, 1, 3, 1, 1, 1], label_smoothing=0.1)
    logits = head.logits(f).detach().requires_grad_()
    loss = head.loss(logits, BATCH)["loss_cls"]
    target = BATCH["cls"] * 0.9 + 0.05
    terms = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor([2.0, 1, 3, 1, 1, 1]),
                                               reduction="none")
    known = [(0, j) for j in range(6)] + [(1, 0)] + [(2, j) for j in range(6)]
    expected = sum(terms[i, j] for i, j in known) / len(known)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[1, 1:] == 0)  # unknown subtypes of the Kaggle slice teach nothing
    assert torch.all(logits.grad[0] != 0)


def test_no_known_label_gives_exact_zero_with_zero_grad(feats):
    backbone, f = feats
    head = ClassificationHead(backbone)
    batch = _batch(cls=[[0] * 6] * 3, valid=[[1] * 6] * 3, has=[False, False, False])
    loss = head(f, batch)["loss_cls"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in head.parameters())


def test_bad_options_raise():
    backbone = build_backbone({"name": "resnet18", "in_chans": 1})
    with pytest.raises(ValueError, match="pos_weight"):
        ClassificationHead(backbone, pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="features"):
        ClassificationHead(backbone, features="middle")


def test_importance_weights_make_a_weighted_mean_over_known_labels(feats):
    # a stage that kept half of the negatives gives each kept one weight 2, a repeated slice 1 / r
    backbone, f = feats
    head = ClassificationHead(backbone)
    logits = head.logits(f).detach()
    batch = dict(BATCH, weight=torch.tensor([0.5, 1.0, 2.0]))
    terms = F.binary_cross_entropy_with_logits(logits, BATCH["cls"], reduction="none")
    known = [(0, j) for j in range(6)] + [(1, 0)] + [(2, j) for j in range(6)]
    w = [0.5, 1.0, 2.0]
    expected = sum(w[i] * terms[i, j] for i, j in known) / sum(w[i] for i, _ in known)
    assert torch.allclose(head.loss(logits, batch)["loss_cls"], expected)
    assert torch.allclose(head.loss(logits, dict(BATCH, weight=torch.ones(3)))["loss_cls"],
                          head.loss(logits, BATCH)["loss_cls"])
