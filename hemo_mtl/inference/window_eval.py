"""Evaluate a segmentation model the way the PhysioNet CT-ICH protocol predicts (``eval.sliding_window``).

Full-slice prediction = the predictor's overlap-averaged sliding window (``Predictor.sliding_window``) +
closing and opening of the label map (``postprocess.clean_mask``). Wrapping the model keeps the engine
protocol-free: evaluation calls ``wrapper(batch)`` like any model. When the model has no classifier,
``cls_prob`` is derived from the cleaned mask (1 where a label has any pixel), so slice-level
sensitivity/specificity come out of the classification metrics (``cls/any/recall``, ``specificity``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .postprocess import clean_mask
from .predictor import PredictOptions, Predictor


class SlidingWindowModel(nn.Module):
    def __init__(self, model: nn.Module, size: int, stride: int, closing: int = 0, opening: int = 0,
                 batch_size: int = 16):
        super().__init__()
        if size <= 0 or stride <= 0:
            raise ValueError(f"eval.sliding_window needs size > 0 and stride > 0, got {size}, {stride}")
        self.model = model
        options = dict(batch_size=batch_size, gate=False, sliding_window=True, patch=int(size), stride=int(stride),
                       closing=int(closing), opening=int(opening))
        if "channels_last" in PredictOptions.__dataclass_fields__:
            options["channels_last"] = False  # never change the memory format of a model still in training
        self.options = PredictOptions(**options)

    @torch.no_grad()
    def forward(self, batch: dict) -> dict:
        if self.training:
            raise RuntimeError("SlidingWindowModel is for evaluation only; train the wrapped model")
        device = next(self.model.parameters()).device
        image = batch["image"]
        config = {"data": {"windows": ["brain"] * image.shape[1], "image_size": int(image.shape[-1])}}
        predictor = Predictor(self.model, config, options=self.options, device=device)
        out = predictor.sliding_window(image.float().cpu())
        if "seg_prob" in out:
            prob = out["seg_prob"]
            labels = prob.argmax(1).permute(1, 2, 0).numpy()  # (H, W, B): closing/opening act in-plane
            labels = clean_mask(labels, closing=self.options.closing, opening=self.options.opening)
            labels = torch.from_numpy(labels).permute(2, 0, 1).long()
            out["seg_prob"] = F.one_hot(labels, prob.shape[1]).permute(0, 3, 1, 2).float()
            if "cls_prob" not in out:
                present = out["seg_prob"][:, 1:].amax(dim=(2, 3))  # (B, K-1)
                cls = torch.zeros(len(labels), 6)
                cls[:, 0] = present.amax(1)
                if present.shape[1] == 5:
                    cls[:, 1:] = present
                out["cls_prob"] = cls
        return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in out.items()}
