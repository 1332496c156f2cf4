"""Oversampling as index lists: ``data.balance`` (minority class repeated until classes match) and
repeat-factor sampling of rare subtypes (a schedule stage's ``repeat_threshold``).

Done as index lists (a ``DatasetView``, or the stage's slice selection), not samplers, so the
trainer's seeded, patient-grouped sampler and resume logic stay untouched; repeated slices still get
fresh augmentation each draw.
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


def repeat_factors(presence, threshold: float) -> np.ndarray:
    """Per-slice repeat factor of LVIS repeat-factor sampling (Gupta et al. 2019; detectron2's
    ``RepeatFactorTrainingSampler``): subtype c seen on a fraction f_c of the slices gets
    r_c = max(1, sqrt(threshold / f_c)), and a slice the largest r_c of the subtypes it shows.

    Why: EDH and SAH each mark ~2-3% of the phantom's slices, SDH ~11%; in a short run the rare
    subtypes' scores collapse to background. ``presence``: (N, C) 0/1 (NaN = unknown, not counted)."""
    if not threshold > 0:
        raise ValueError(f"repeat_threshold must be > 0, got {threshold}")
    present = np.nan_to_num(np.asarray(presence, dtype=np.float64), nan=0.0) > 0
    if present.ndim != 2:
        raise ValueError(f"presence must be (slices, subtypes), got shape {present.shape}")
    freq = present.mean(axis=0) if len(present) else np.zeros(present.shape[1])
    per_class = np.where(freq > 0, np.sqrt(threshold / np.maximum(freq, 1e-12)), 1.0).clip(min=1.0)
    return np.where(present, per_class, 1.0).max(axis=1, initial=1.0)


def repeat_counts(factors, rng: np.random.Generator) -> np.ndarray:
    """Copies of each slice: floor(r), plus one more with probability frac(r) (stochastic rounding,
    redrawn per epoch by the caller's seeded ``rng``), so a slice is seen r times on average."""
    factors = np.asarray(factors, dtype=np.float64)
    whole = np.floor(factors)
    return (whole + (rng.random(len(factors)) < factors - whole)).astype(np.int64)
