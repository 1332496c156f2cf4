"""The cascade gate at inference: the classifier decides which slices the localizers look at.

A gated-off slice gets each gated task's empty prediction: segmentation probability 1 for background,
no detections. ``MultiTaskModel.forward(batch, gate=...)`` runs the gated heads only on the slices that
pass, so on a scan of mostly normal slices seg/det cost a fraction of their ungated time (most of a
Mask R-CNN forward is per-image work that batching does not amortise). ``gate_outputs`` blanks outputs
that were computed for every slice (flip TTA gates on the mirrored-and-averaged probability).

``CascadeGate`` is the one object for the gate: which heads it gates, the sensitivity its threshold
is chosen for, the threshold, the keep rule, what gating costs on a split, and its checkpoint state.
The schedule makes it, evaluation chooses its threshold on validation, the model and TTA apply it,
``model_final.pth`` carries it (``"cascade"``) and the predictor reads it back.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from .backbones import Features

GATED_OUTPUTS = {"seg_prob": "seg", "instances": "det"}  # eval output -> task


@dataclass(frozen=True)
class CascadeGate:
    """The classifier's p(any) decides which slices the ``heads`` (tasks) look at.

    ``threshold`` None means "not chosen yet": ``choose`` picks the highest threshold that keeps
    ``target_sensitivity`` of the positive slices of a split (call it on validation).
    """

    heads: tuple[str, ...] = ("seg", "det")
    target_sensitivity: float = 0.95
    threshold: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "heads", tuple(self.heads))
        if not 0 < float(self.target_sensitivity) <= 1:
            raise ValueError(f"cascade gate: target_sensitivity must be in (0, 1], got {self.target_sensitivity}")

    def keep(self, p_any):
        """The slices that pass: p(any) >= threshold (a tensor or an array)."""
        if self.threshold is None:
            raise ValueError("cascade gate: no threshold chosen yet (choose it on the validation split)")
        return p_any >= float(self.threshold)

    def with_threshold(self, threshold: float | None) -> "CascadeGate":
        return replace(self, threshold=None if threshold is None else float(threshold))

    def restricted_to(self, heads: Iterable[str]) -> "CascadeGate | None":
        """The gate over the gated tasks among ``heads``; None when none of them (or no cls) runs."""
        heads = set(heads)
        gated = tuple(h for h in self.heads if h in heads)
        return replace(self, heads=gated) if gated and "cls" in heads else None

    def choose(self, y_any: np.ndarray, p_any: np.ndarray) -> "CascadeGate":
        """This gate with the highest threshold whose slice sensitivity (p >= t among y == 1) reaches
        the target; with no positive slice there is nothing to protect and 0.5 is used."""
        y = np.asarray(y_any).astype(bool)
        pos = np.sort(np.asarray(p_any, dtype=np.float64)[y])[::-1]
        if len(pos) == 0:
            return self.with_threshold(0.5)
        need = max(1, math.ceil(float(self.target_sensitivity) * len(pos) - 1e-9))
        return self.with_threshold(float(pos[need - 1]))

    def summary(self, y_any: np.ndarray, p_any: np.ndarray,
                lesions_per_slice: np.ndarray | None = None) -> dict[str, float]:
        """What gating costs on a split: sensitivity lost, slices skipped, lesions on skipped slices."""
        y = np.asarray(y_any).astype(bool)
        passed = self.keep(np.asarray(p_any, dtype=np.float64))
        out = {
            "cascade/gate/threshold": float(self.threshold),
            "cascade/gate/skipped_fraction": float(1 - passed.mean()) if len(passed) else float("nan"),
            "cascade/gate/sensitivity": float(passed[y].mean()) if y.any() else float("nan"),
        }
        out["cascade/gate/sensitivity_lost"] = 1 - out["cascade/gate/sensitivity"]
        if lesions_per_slice is not None:
            n = np.asarray(lesions_per_slice, dtype=np.float64)
            out["cascade/gate/lesions_lost"] = float(n[~passed].sum() / n.sum()) if n.sum() else float("nan")
        return out

    def describe(self) -> str:
        """One line for reports."""
        return (f"the classifier gates {', '.join(self.heads)} at p(any) >= {self.threshold:.4f} (chosen on the "
                f"validation split for sensitivity >= {self.target_sensitivity}); gated-off slices get empty "
                "predictions")

    def with_saved(self, state: Mapping | None) -> "CascadeGate":
        """This (configured) gate with a checkpoint's threshold: a fixed configured threshold wins; a saved
        one is taken when it was chosen for the same target sensitivity; else it stays to be chosen."""
        if self.threshold is not None or not state or state.get("threshold") is None:
            return self
        if state.get("target_sensitivity") not in (None, self.target_sensitivity):
            return self
        return self.with_threshold(state["threshold"])

    def state_dict(self) -> dict:
        """What ``model_final.pth`` stores under ``"cascade"``."""
        return {"heads": list(self.heads), "target_sensitivity": float(self.target_sensitivity),
                "threshold": self.threshold}

    @classmethod
    def from_state(cls, state: Mapping | None) -> "CascadeGate | None":
        """The gate a checkpoint carries (None when it was not trained as a cascade)."""
        if not state:
            return None
        return cls(heads=tuple(state.get("heads", ("seg", "det"))),
                   target_sensitivity=float(state.get("target_sensitivity", 0.95)),
                   threshold=None if state.get("threshold") is None else float(state["threshold"]))


def select_features(feats: Features, index: torch.Tensor) -> Features:
    """The trunk's outputs for the slices ``index`` of the batch."""
    return Features(fpn=None if feats.fpn is None else OrderedDict((k, v[index]) for k, v in feats.fpn.items()),
                    top=feats.top[index], levels=None if feats.levels is None else [v[index] for v in feats.levels])


def empty_instances(image_size: Sequence[int], like: torch.Tensor) -> dict:
    return {"boxes": like.new_zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long, device=like.device),
            "scores": like.new_zeros(0), "masks": like.new_zeros((0, *image_size))}


def scatter_outputs(part: Mapping, keep: torch.Tensor, blank_instances: dict | None = None) -> dict:
    """Eval outputs of gated heads computed on the slices where ``keep`` is True -> outputs for the whole
    batch, the others holding the empty prediction: segmentation probability 1 for background, no
    detections (an instance dict with the kept ones' keys, else ``blank_instances``)."""
    n = len(keep)
    index = keep.nonzero().flatten().tolist()
    out: dict = {}
    for key, value in part.items():
        if key == "seg_prob":
            full = value.new_zeros((n, *value.shape[1:]))
            full[:, 0] = 1
            full[keep.to(value.device)] = value
        elif key == "instances":
            blank = {k: v[:0] for k, v in value[0].items()} if value else blank_instances
            full = [blank] * n
            for i, inst in zip(index, value):
                full[i] = inst
        else:
            raise ValueError(f"gated head output {key!r} has no empty prediction defined "
                             f"(gate only heads whose outputs are {sorted(GATED_OUTPUTS)})")
        out[key] = full
    return out


def gate_outputs(outputs: dict, keep: torch.Tensor, heads: Sequence[str]) -> dict:
    """``outputs`` computed for every slice, with the slices where ``keep`` is False given the empty
    predictions of the gated tasks ``heads`` (those ``scatter_outputs`` writes)."""
    keep = keep.to(torch.bool)
    part = {}
    for key, task in GATED_OUTPUTS.items():
        if task in heads and key in outputs:
            value = outputs[key]
            part[key] = (value[keep.to(value.device)] if torch.is_tensor(value)
                         else [v for v, k in zip(value, keep.tolist()) if k])
    instances = outputs.get("instances")
    blank = {k: v[:0] for k, v in instances[0].items()} if instances else None
    return {**outputs, **scatter_outputs(part, keep, blank)}
