"""Hounsfield-unit windowing: how a radiologist's window setting becomes a network input.

A window (center L, width W) maps HU linearly to [0, 1] over [L - W/2, L + W/2] and clips outside,
the DICOM VOI LUT "linear exact" convention. Stacking several windows as channels (brain, subdural,
bone) is the usual RSNA-2019 input: each channel shows what one window setting shows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# (center, width) in HU
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "bone": (600.0, 2800.0),
    "stroke": (32.0, 8.0),
    "soft_tissue": (40.0, 350.0),
}

# HU range a CT volume can plausibly hold; values far outside suggest MR, display pixels or raw
# stored values whose rescale slope/intercept were not applied.
CT_HU_RANGE = (-1100.0, 4000.0)


def parse_window(spec: str | Sequence[float]) -> tuple[float, float]:
    """A window by name (``"brain"``), as ``"custom:L/W"`` / ``"custom:L,W"`` / ``"L,W"`` text, or as a
    (center, width) pair."""
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in WINDOWS:
            return WINDOWS[key]
        body = key.split(":", 1)[1] if key.startswith("custom:") else key
        parts = body.replace("/", ",").split(",")
        if len(parts) == 2:
            try:
                center, width = float(parts[0]), float(parts[1])
            except ValueError:
                parts = []
            else:
                return _checked(center, width, spec)
        raise ValueError(
            f"unknown window {spec!r}: use one of {', '.join(WINDOWS)} or 'custom:CENTER/WIDTH'"
        )
    center, width = (float(v) for v in spec)
    return _checked(center, width, spec)


def parse_window_list(spec: str | Sequence) -> list[str | Sequence[float]]:
    """Several windows from one command-line value, each checked by ``parse_window``.

    ``"brain,subdural,bone"``; a custom window is ``custom:L/W`` (``custom:40/80,bone``), and the
    comma form ``custom:L,W`` is taken too inside a list: a bare number after it can only be its width.
    """
    if not isinstance(spec, str):
        out = list(spec)
    else:
        tokens = [t.strip() for t in spec.split(",")]
        out, i = [], 0
        while i < len(tokens):
            token = tokens[i]
            if (token.lower().startswith("custom:") and "/" not in token and i + 1 < len(tokens)
                    and _is_number(tokens[i + 1])):
                token, i = f"{token},{tokens[i + 1]}", i + 1
            out.append(token)
            i += 1
    if not out or any(isinstance(w, str) and not w for w in out):
        raise ValueError(f"window list {spec!r} has an empty entry")
    for w in out:
        parse_window(w)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _checked(center: float, width: float, spec) -> tuple[float, float]:
    if not width > 0:
        raise ValueError(f"window {spec!r}: width must be > 0, got {width}")
    return center, width


def window_hu(hu, center: float, width: float, out: np.ndarray | None = None):
    """Map HU to [0, 1] for one window; numpy in -> float32 numpy out, tensor in -> float32 tensor out.
    ``out`` (numpy only): a float32 array of ``hu``'s shape to write into, e.g. one channel of a stack."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    low = center - width / 2.0
    if isinstance(hu, torch.Tensor):
        return ((hu.float() - low) / width).clamp_(0.0, 1.0)
    hu = np.asarray(hu, dtype=np.float32)
    out = np.subtract(hu, np.float32(low), out=out)
    np.divide(out, np.float32(width), out=out)
    return np.clip(out, 0.0, 1.0, out=out)


def stack_windows(hu, windows: Sequence[str | Sequence[float]] = ("brain",), axis: int = 0):
    """Window one slice or volume once per window and stack the results as channels at ``axis``
    (default leading: (C, ...)). Numpy writes each window straight into its channel of one array: a
    (Z, X, Y) volume stacked at axis 1 is the model's (Z, C, X, Y) batch without a transposing copy."""
    if isinstance(windows, (str, bytes)):
        windows = (windows,)
    params = [parse_window(w) for w in windows]
    if isinstance(hu, torch.Tensor):
        return torch.stack([window_hu(hu, c, w) for c, w in params], dim=axis)
    hu = np.asarray(hu, dtype=np.float32)
    axis = axis % (hu.ndim + 1)
    out = np.empty((*hu.shape[:axis], len(params), *hu.shape[axis:]), np.float32)
    for i, (c, w) in enumerate(params):
        window_hu(hu, c, w, out=out[(slice(None),) * axis + (i,)])
    return out


def check_hu_range(hu: np.ndarray, source: str) -> None:
    """Reject arrays that cannot be a head CT in HU (a DataError naming the file, so batch tools skip
    and report it): the mistake is silent otherwise. NaN/inf voxels are refused first (NaN compares
    false with every bound, so an all-NaN scan would otherwise pass and predict 0 mL).

    A head CT always shows air around the head (about -1000 HU); MR volumes, 8-bit display images and
    stored values whose rescale slope/intercept were never applied do not.
    """
    from .io import DataError

    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise DataError(f"{source}: {bad} of {finite.size} voxels are NaN or infinite: not a CT in HU")
    lo, hi = float(np.min(hu)), float(np.max(hu))
    if lo > -500.0:
        kind = "an 8-bit display image" if lo >= 0.0 and hi <= 255.0 else "MR or unrescaled stored values"
        raise DataError(
            f"{source}: intensities {lo:.0f}..{hi:.0f} have no air (< -500 HU): not a CT in HU, "
            f"looks like {kind}"
        )
    if lo < CT_HU_RANGE[0] - 3000 or hi > CT_HU_RANGE[1] * 4:
        raise DataError(
            f"{source}: intensities {lo:.0f}..{hi:.0f} are outside any CT range "
            f"({CT_HU_RANGE[0]:.0f}..{CT_HU_RANGE[1]:.0f} HU plus padding): rescale missing, or not a CT"
        )
