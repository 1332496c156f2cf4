from __future__ import annotations

import math

import pytest
import torch

from hemo_mtl.models.losses import (
    LossBalancer,
    consistency_loss,
    pcgrad_backward,
    soft_dice_loss,
    subtype_partial_cross_entropy,
    zero_loss,
)

TASKS = {"loss_cls": "cls", "loss_seg": "seg", "loss_rpn_box": "det", "loss_mask": "det"}


def _losses(**values):
    return {k: torch.tensor(float(v), requires_grad=True) for k, v in values.items()}


def test_static_weights_by_task_and_by_key():
    bal = LossBalancer(TASKS, "static", weights={"det": 2.0, "loss_mask": 0.5, "cls": 3.0})
    total, w = bal(_losses(loss_cls=1.0, loss_seg=2.0, loss_rpn_box=4.0, loss_mask=8.0))
    assert total.item() == pytest.approx(3 * 1 + 2 + 2 * 4 + 0.5 * 8)
    assert w == {"loss_cls": 3.0, "loss_seg": 1.0, "loss_rpn_box": 2.0, "loss_mask": 0.5}


def test_uncertainty_weighting_kendall_form_and_can_go_negative():
    bal = LossBalancer(TASKS, "uncertainty")
    with torch.no_grad():
        bal.log_vars["cls"].fill_(1.0)
        bal.log_vars["seg"].fill_(-0.5)
        bal.log_vars["det"].fill_(2.0)
    losses = _losses(loss_cls=0.2, loss_seg=0.4, loss_rpn_box=0.0, loss_mask=0.0)
    total, w = bal(losses)
    # det's loss is exactly 0 (labels absent): its +s term is skipped
    expected = math.exp(-1) * 0.2 + 1 + math.exp(0.5) * 0.4 - 0.5
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert w["loss_cls"] == pytest.approx(math.exp(-1.0))
    total.backward()
    assert bal.log_vars["cls"].grad.item() == pytest.approx(1 - math.exp(-1) * 0.2, rel=1e-6)
    assert bal.log_vars["det"].grad.item() == 0.0
    with torch.no_grad():
        bal.log_vars["cls"].fill_(-3.0)
    assert bal(_losses(loss_cls=0.001))[0].item() < 0


def test_dwa_weights_follow_loss_ratios():
    bal = LossBalancer(TASKS, "dwa", temperature=2.0)
    losses = _losses(loss_cls=1.0, loss_seg=1.0, loss_rpn_box=1.0)
    assert bal(losses)[0].item() == pytest.approx(3.0)  # first epochs: weight 1
    bal.update_epoch({"loss_cls": 1.0, "loss_seg": 2.0, "loss_rpn_box": 1.0, "loss_mask": 1.0})
    bal.update_epoch({"loss_cls": 0.5, "loss_seg": 2.0, "loss_rpn_box": 1.5, "loss_mask": 1.5})
    ratios = {"cls": 0.5, "seg": 1.0, "det": 1.5}
    denom = sum(math.exp(r / 2) for r in ratios.values())
    expected = {t: 3 * math.exp(r / 2) / denom for t, r in ratios.items()}
    total, w = bal(losses)
    assert w["loss_cls"] == pytest.approx(expected["cls"]) and w["loss_rpn_box"] == pytest.approx(expected["det"])
    assert total.item() == pytest.approx(sum(expected.values()))
    state = bal.state_dict()
    fresh = LossBalancer(TASKS, "dwa")
    fresh.load_state_dict(state)
    assert fresh(losses)[1] == w  # history survives a checkpoint


def test_pcgrad_projects_conflicting_gradients_hand_case():
    w = torch.zeros(2, requires_grad=True)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # a.b = -1 < 0: conflict
    pcgrad_backward({"t1": (w * a).sum(), "t2": (w * b).sum()}, [w])
    g1 = a - (a @ b) / (b @ b) * b  # [0.5, 0.5]
    g2 = b - (b @ a) / (a @ a) * a  # [0, 1]
    assert torch.allclose(w.grad, g1 + g2)


def test_pcgrad_leaves_agreeing_and_zero_gradients_alone():
    w = torch.zeros(2, requires_grad=True)
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    pcgrad_backward({"t1": (w * a).sum(), "t2": (w * b).sum(), "absent": zero_loss(w)}, [w])
    assert torch.allclose(w.grad, a + b)


def test_soft_dice_hand_case():
    prob = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]]]])  # (1, 2 classes, 1, 2)
    target = torch.tensor([[[0, 1]]])
    dice1 = (2 * 0.8 + 1) / (0.9 + 1 + 1)
    dice0 = (2 * 0.9 + 1) / (1.1 + 1 + 1)
    assert soft_dice_loss(prob, target).item() == pytest.approx(1 - dice1)
    assert soft_dice_loss(prob, target, include_background=True).item() == pytest.approx(1 - (dice0 + dice1) / 2)


def test_soft_dice_ignores_classes_absent_from_the_target():
    # class 2 is absent: it must not enter the mean (its "Dice" would only push it to zero everywhere)
    prob = torch.tensor([[[[0.7, 0.1]], [[0.2, 0.6]], [[0.1, 0.3]]]], requires_grad=True)
    target = torch.tensor([[[0, 1]]])
    dice1 = (2 * 0.6 + 1) / (0.8 + 1 + 1)
    loss = soft_dice_loss(prob, target)
    assert loss.item() == pytest.approx(1 - dice1)
    loss.backward()
    assert torch.all(prob.grad[0, 2] == 0)
    empty = soft_dice_loss(prob, torch.zeros(1, 1, 2, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad


def test_soft_dice_valid_leaves_pixels_out():
    # pixel 2 is left out: its probabilities count neither as hits nor as false positives
    prob = torch.tensor([[[[0.9, 0.2, 0.3]], [[0.1, 0.8, 0.7]]]])
    target = torch.tensor([[[0, 1, 0]]])
    valid = torch.tensor([[[True, True, False]]])
    dice1 = (2 * 0.8 + 1) / (0.9 + 1 + 1)  # the hand case above
    assert soft_dice_loss(prob, target, valid=valid).item() == pytest.approx(1 - dice1)
    assert soft_dice_loss(prob, target).item() != pytest.approx(1 - dice1)


UNKNOWN = 6


def test_partial_cross_entropy_hand_case():
    # (1, 6 classes, 1, 2): pixel 0 is bleed of unknown subtype, pixel 1 background
    logits = torch.zeros(1, 6, 1, 2)
    logits[0, 0, 0, 1] = math.log(3.0)
    target = torch.tensor([[[UNKNOWN, 0]]])
    # pixel 0: p0 = 1/6, -log(1 - p0) = -log(5/6); pixel 1: p0 = 3/8, -log(3/8)
    expected = (-math.log(5 / 6) - math.log(3 / 8)) / 2
    assert subtype_partial_cross_entropy(logits, target, UNKNOWN).item() == pytest.approx(expected, rel=1e-6)
    # class weights: the unknown pixel weighs the mean subtype weight (2 + 1 + 1 + 1 + 5) / 5 = 2
    w = torch.tensor([0.5, 2.0, 1.0, 1.0, 1.0, 5.0])
    weighted = (2.0 * -math.log(5 / 6) + 0.5 * -math.log(3 / 8)) / (2.0 + 0.5)
    assert subtype_partial_cross_entropy(logits, target, UNKNOWN, w).item() == pytest.approx(weighted, rel=1e-6)


def test_partial_cross_entropy_is_plain_cross_entropy_without_unknown_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 5, 4, generator=gen)
    target = torch.randint(0, 6, (2, 5, 4), generator=gen)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 1.0, 5.0])
    for weight in (None, w):
        ours = subtype_partial_cross_entropy(logits, target, UNKNOWN, weight)
        assert torch.equal(ours, torch.nn.functional.cross_entropy(logits, target, weight=weight))


def test_partial_cross_entropy_does_not_guess_the_subtype_split():
    # on an unknown pixel the loss is -log(1 - p0): any split of the bleed among subtypes scores the
    # same; its gradient (hand-derived) is p0 on the background logit and -p_k p0 / (1 - p0) on subtype k
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 6, 1, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[UNKNOWN]]])
    loss = subtype_partial_cross_entropy(logits, target, UNKNOWN)
    shuffled = logits.detach()[:, [0, 3, 5, 1, 2, 4]]
    assert subtype_partial_cross_entropy(shuffled, target, UNKNOWN).item() == pytest.approx(loss.item(), rel=1e-12)
    loss.backward()
    p = logits.detach().softmax(1)[0, :, 0, 0]
    g = logits.grad[0, :, 0, 0]
    assert g[0].item() == pytest.approx(p[0].item(), rel=1e-10)
    assert torch.allclose(g[1:], -p[1:] * p[0] / (1 - p[0]), rtol=1e-10)


def test_consistency_penalises_subtype_above_any_and_bleed_without_any():
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    cls = torch.tensor([[logit(0.2), logit(0.7), logit(0.1), 0, 0, 0], [logit(0.9), logit(0.5), -9, -9, -9, -9]])
    assert consistency_loss(cls).item() == pytest.approx(((0.7 - 0.2) + 0.0) / 2, rel=1e-5)
    seg = torch.zeros(2, 6, 1, 2)
    seg[:, 0] = 10.0  # background everywhere
    seg[0, 3, 0, 1] = 20.0  # one confident SAH pixel on slice 0
    bleed0 = 1 - torch.softmax(seg[0, :, 0, 1], 0)[0].item()
    expected = ((0.7 - 0.2) + (bleed0 - 0.2)) / 2
    assert consistency_loss(cls, seg).item() == pytest.approx(expected, rel=1e-4)


def test_zero_loss_is_exact_and_reaches_every_parameter():
    net = torch.nn.Linear(3, 2)
    z = zero_loss(net)
    assert z.item() == 0.0
    z.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net.parameters())


def test_unknown_balancing_raises():
    with pytest.raises(ValueError, match="balancing"):
        LossBalancer(TASKS, "gradnorm")
