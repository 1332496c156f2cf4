"""Class-balancing oversampling (``data.balance``): minority-class slices repeated until classes match.

Done as an index list (a ``DatasetView``), not a sampler, so the trainer's seeded, patient-grouped
sampler and resume logic stay untouched; repeated slices still get fresh augmentation each draw.
"""
from __future__ import annotations

import numpy as np

from ..categories import LABELS
from .views import DatasetView


def balanced_indices(labels, seed: int = 0) -> np.ndarray:
    """Every index once, plus minority-class indices repeated so both classes have the majority's count.

    ``labels``: 1/0 per item, NaN/-1 for unknown (kept once, not counted). The minority is repeated
    ``majority // minority - 1`` extra times whole, the remainder drawn without replacement (seeded)."""
    y = np.asarray(labels, dtype=np.float64)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    out = [np.arange(len(y))]
    if len(pos) and len(neg) and len(pos) != len(neg):
        small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
        extra = len(big) - len(small)
        out += [small] * (extra // len(small))
        rest = extra % len(small)
        if rest:
            out.append(np.sort(np.random.default_rng(seed).choice(small, size=rest, replace=False)))
    return np.concatenate(out)


def balanced_view(dataset, label: str = "any", seed: int = 0) -> DatasetView:
    """``dataset`` oversampled on one slice label of its manifest (default ``any``)."""
    if label not in LABELS:
        raise ValueError(f"data.balance: unknown label {label!r}; one of {list(LABELS)}")
    values = dataset.frame[label].astype("float").fillna(-1).to_numpy()
    return DatasetView(dataset, balanced_indices(values, seed))
