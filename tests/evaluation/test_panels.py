"""Tensorboard panels colour each mask value as ``categories.LABEL_COLORS`` says, whatever head made it:
a binary head's bleed and a truth mask of unknown subtype in the ICH colour, never in EDH's."""
from __future__ import annotations

import torch
from torchvision.utils import draw_segmentation_masks

from hemo_mtl.categories import LABEL_COLORS, UNKNOWN_SUBTYPE
from hemo_mtl.evaluation.panels import draw_panel


def _slice():
    image = torch.linspace(0, 1, 32 * 32).reshape(1, 1, 32, 32).repeat(1, 3, 1, 1)[0]
    bleed = torch.zeros(32, 32, dtype=torch.bool)
    bleed[8:20, 10:24] = True
    gray = (image[0] * 255).round().to(torch.uint8).unsqueeze(0).repeat(3, 1, 1)
    return image, bleed, gray


def test_binary_head_and_unknown_truth_are_drawn_in_the_ich_colour():
    image, bleed, gray = _slice()
    p = bleed.float() * 0.9 + 0.05
    panel = draw_panel({"image": image, "mask": bleed.long() * UNKNOWN_SUBTYPE},
                       {"seg_prob": torch.stack([1 - p, p])})
    ref = draw_segmentation_masks(gray, bleed[None], alpha=0.45, colors=[LABEL_COLORS[UNKNOWN_SUBTYPE]])
    assert torch.equal(panel[:, :, :32], ref) and torch.equal(panel[:, :, 32:], ref)
    edh = draw_segmentation_masks(gray, bleed[None], alpha=0.45, colors=[LABEL_COLORS[1]])
    assert not torch.equal(panel[:, :, 32:], edh)


def test_multiclass_prediction_is_drawn_per_subtype():
    image, bleed, gray = _slice()
    prob = torch.zeros(6, 32, 32)
    prob[0] = 1.0
    prob[:, bleed] = torch.tensor([0.1, 0.0, 0.8, 0.1, 0.0, 0.0])[:, None]  # SDH
    panel = draw_panel({"image": image}, {"seg_prob": prob})
    ref = draw_segmentation_masks(gray, bleed[None], alpha=0.45, colors=[LABEL_COLORS[2]])
    assert torch.equal(panel[:, :, 32:], ref) and torch.equal(panel[:, :, :32], gray)
