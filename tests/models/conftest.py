"""Batches for model tests, built from tiny label masks the way the dataset contract describes."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from scipy import ndimage

torch.set_num_threads(2)


def instances_from_mask(mask: np.ndarray) -> dict[str, torch.Tensor]:
    """Contract instances: 8-connected components per subtype (scipy as the reference labeller)."""
    h, w = mask.shape
    boxes, labels, masks = [], [], []
    for cls in range(1, 6):
        comps, n = ndimage.label(mask == cls, structure=np.ones((3, 3)))
        for i in range(1, n + 1):
            ys, xs = np.nonzero(comps == i)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(cls)
            masks.append(comps == i)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.array(masks, dtype=np.uint8).reshape(-1, h, w)),
    }


def make_batch(masks: list[np.ndarray], has_cls, has_mask, has_boxes, images=None, cls_valid=None,
               in_chans: int = 1, seed: int = 0) -> dict:
    """A collated batch; ``cls`` follows from each mask (any + subtypes present)."""
    b = len(masks)
    h, w = masks[0].shape
    gen = torch.Generator().manual_seed(seed)
    if images is None:
        images = torch.rand(b, in_chans, h, w, generator=gen)
    cls = torch.zeros(b, 6)
    for i, m in enumerate(masks):
        for c in range(1, 6):
            cls[i, c] = float((m == c).any())
        cls[i, 0] = float((m > 0).any())
    has_cls_t = torch.tensor(has_cls, dtype=torch.bool)
    if cls_valid is None:
        cls_valid = has_cls_t[:, None].float().expand(b, 6).clone()
    cls_valid = torch.as_tensor(cls_valid, dtype=torch.float32)
    return {
        "image": images,
        "cls": cls * (cls_valid > 0),
        "cls_valid": cls_valid,
        "mask": torch.from_numpy(np.stack(masks).astype(np.int64)) * torch.tensor(has_mask)[:, None, None],
        "has": {"cls": has_cls_t, "mask": torch.tensor(has_mask, dtype=torch.bool),
                "boxes": torch.tensor(has_boxes, dtype=torch.bool)},
        "targets": [instances_from_mask(m) if hb else instances_from_mask(np.zeros_like(m))
                    for m, hb in zip(masks, has_boxes)],
        "meta": [{"slice_idx": i} for i in range(b)],
    }


def lesion_mask(size: int = 64, seed: int = 0) -> np.ndarray:
    """Two rectangles of different subtypes and one single-pixel lesion."""
    m = np.zeros((size, size), np.uint8)
    rng = np.random.default_rng(seed)
    y, x = rng.integers(4, size // 2 - 12, 2)
    m[y:y + 10, x:x + 14] = 2  # SDH
    m[size // 2 + 4:size // 2 + 14, size // 2:size // 2 + 5] = 4  # IPH
    m[size - 6, 3] = 1  # one-pixel EDH
    return m


@pytest.fixture
def batch_fn():
    return make_batch


@pytest.fixture
def mask_fn():
    return lesion_mask


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may download at run time."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
