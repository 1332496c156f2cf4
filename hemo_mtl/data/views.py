"""A dataset seen through an index list: repeated slices (oversampling) or slice windows (patches).

The trainer reads ``patient_ids``, ``has_table`` and ``set_epoch`` from its training set; a view
forwards them for the items it yields, so samplers, stage filters and seeded augmentation keep working.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .instances import mask_to_instances


def crop_sample(sample: dict, top: int, left: int, size: int) -> dict:
    """The ``size`` x ``size`` window at (top, left) of a sample dict (zero-padded past the edge);
    instances are re-derived from the cropped mask, so a cut lesion gets its cut box."""
    image, mask = sample["image"], sample["mask"]
    h, w = image.shape[-2:]
    pad_h, pad_w = max(top + size - h, 0), max(left + size - w, 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h))
    image = image[:, top:top + size, left:left + size].contiguous()
    mask = mask[top:top + size, left:left + size].contiguous()
    out = dict(sample, image=image, mask=mask, meta={**sample["meta"], "window": (int(top), int(left), int(size))})
    if "roi" in sample:  # padding is outside the head: no bleed there
        roi = F.pad(sample["roi"], (0, pad_w, 0, pad_h)) if pad_h or pad_w else sample["roi"]
        out["roi"] = roi[top:top + size, left:left + size].contiguous()
    if sample["has"].get("boxes") and sample["has"].get("mask"):
        boxes, labels, inst = mask_to_instances(mask.numpy().astype(np.uint8))
    else:
        boxes, labels, inst = mask_to_instances(np.zeros(tuple(mask.shape), np.uint8))
    out.update(boxes=torch.from_numpy(boxes), labels=torch.from_numpy(labels), masks=torch.from_numpy(inst))
    return out


class DatasetView(Dataset):
    """Items ``base[index[i]]``, optionally cropped to ``windows[i]`` = (top, left) of ``size`` pixels
    and carrying ``weight[i]`` (the sample's importance weight, see ``Schedule.select_indices``)."""

    def __init__(self, base, index: Sequence[int], windows: Sequence[tuple[int, int]] | None = None,
                 size: int | None = None, weight: Sequence[float] | None = None):
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        if self.weight is not None and len(self.weight) != len(self.index):
            raise ValueError("DatasetView: weight needs one value per index")
        self.windows = None if windows is None else [tuple(map(int, w)) for w in windows]
        if self.windows is not None and (len(self.windows) != len(self.index) or not size):
            raise ValueError("DatasetView: windows need one (top, left) per index and a window size")
        self.size = size

    def __len__(self) -> int:
        return len(self.index)

    @property
    def patient_ids(self) -> list[str]:
        base = self.base.patient_ids
        return [base[i] for i in self.index]

    @property
    def has_table(self) -> pd.DataFrame:
        return self.base.has_table.iloc[self.index].reset_index(drop=True)

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def frame(self) -> pd.DataFrame:
        return self.base.frame.iloc[self.index].reset_index(drop=True)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        sample = self.base[int(self.index[i])]
        if self.weight is not None:
            sample = dict(sample, weight=float(sample.get("weight", 1.0)) * float(self.weight[i]))
        if self.windows is None:
            return sample
        top, left = self.windows[i]
        return crop_sample(sample, top, left, self.size)
