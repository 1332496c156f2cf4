"""Ensembles: several checkpoints (cross-validation folds, seeds) predicting a scan as one model.

Each member runs with its own preprocessing (windows, image size, 2.5D context), temperature and flip
TTA; their outputs are averaged on the slice grid: classifier probabilities (each member's own
calibration applied first), segmentation class probabilities (softmax; on the model grid when every
member fits the slices the same way, which is the same as averaging on the slice grid since un-padding
and resizing are linear), and detections in slice pixels pooled and merged by the detection head's
NMS, as flip TTA does (``models.tta``). The averaged probabilities give the mask, the maps and the
predictive-entropy uncertainty (``maps.py``), exactly as one model's do. The averaged classifier
probabilities then take the largest ``eval.slice_context`` of the members (``Predictor.with_slice_context``), and
patient scores the largest ``eval.patient_window`` (``Predictor.patient_probabilities``).

Cascade gate: the ensemble's p(any) (the mean of the members' uncalibrated p(any)) against the mean of
the members' thresholds. Each member's threshold was chosen on its own validation split for the same
target sensitivity, and fold models have no validation split in common to choose one for the
ensemble; the mean keeps every slice that all members pass (p_i >= t_i for all i gives
mean p >= mean t) and reduces to the member's rule when members agree. Members run every head on every
slice; the gate then empties the slices it rejects.

Members must agree on what they predict: the tasks of their heads and each head's classes (``signature``);
the first member that differs is named in one line with the differing key.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..categories import LABELS
from ..data.io import DataError
from ..models.gating import CascadeGate, gate_outputs
from ..models.tta import detection_head, lr_axis, merge_instances
from .geometry import unfit
from .predictor import PredictOptions, Predictor, Scan, ScanPrediction, split_groups

MEMBERS_FILE = "members.txt"  # tools/run_grid.py writes one beside its table: a checkpoint per line


# ----------------------------------------------------------------------------------------- members
def _read_members(path: Path) -> list[Path]:
    """The checkpoints a members file lists: one per line (relative to the file's folder; '#' comments)."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        member = Path(line) if Path(line).is_absolute() else path.parent / line
        if not member.is_file():
            raise DataError(f"{path}: line {number}: checkpoint {line} not found")
        out.append(member)
    if not out:
        raise DataError(f"{path}: lists no checkpoint")
    return out


def write_members(folder: Path, checkpoints: Sequence[Path]) -> Path | None:
    """``folder/members.txt`` listing ``checkpoints`` relative to ``folder`` (so the folder can move);
    None (and no file) when there are none."""
    from ..atomic import atomic_write_text

    if not checkpoints:
        return None
    folder = Path(folder)
    lines = [Path(os.path.relpath(Path(c).resolve(), folder.resolve())).as_posix() for c in checkpoints]
    atomic_write_text(folder / MEMBERS_FILE, "# ensemble members (tools/predict.py --weights this file or its folder)\n"
                      + "\n".join(lines) + "\n")
    return folder / MEMBERS_FILE


def member_paths(weights: Sequence[str | Path]) -> list[Path]:
    """The checkpoints ``--weights`` names: files as given; a text file (.txt) lists them; a folder holds a
    ``members.txt`` (a run_grid output, or one config's folds in it) or is one run (its model_final.pth)."""
    out: list[Path] = []
    for item in weights:
        path = Path(item)
        if path.is_dir():
            if (path / MEMBERS_FILE).is_file():
                out.extend(_read_members(path / MEMBERS_FILE))
            elif (path / "model_final.pth").is_file():
                out.append(path / "model_final.pth")
            else:
                raise DataError(f"{path}: a folder without {MEMBERS_FILE} or model_final.pth")
        elif path.suffix.lower() == ".txt" and path.is_file():
            out.extend(_read_members(path))
        else:
            out.append(path)  # a checkpoint or an exported model; its loader names it when it is unusable
    return out


def signature(predictor: Predictor) -> dict:
    """What a member predicts, key by key: its tasks and each task head's classes (config keys)."""
    from ..models.defaults import resolve_model_cfg
    from ..registry import HEADS

    heads = resolve_model_cfg(predictor.config["model"])["heads"]
    sidecar = getattr(predictor.backend, "sidecar", None)  # an exported graph holds some of the heads
    if sidecar is not None:
        heads = {k: v for k, v in heads.items() if k in set(sidecar.get("heads") or heads)}
    tasks = {key: HEADS.get(section["type"]).task for key, section in heads.items()}
    sig: dict = {"tasks (model.heads)": sorted(tasks.values())}
    for key, section in heads.items():
        for field in ("mode", "num_classes"):  # seg: multiclass (6) or binary (2); location: its classes
            if field in section:
                sig[f"model.heads.{key}.{field}"] = section[field]
    if "location" in tasks.values():
        sig["data.location_classes"] = predictor.config["data"].get("location_classes")
    return sig


def check_members(members: Sequence[Predictor], names: Sequence[str]) -> None:
    """DataError naming the first member (and key) whose predictions differ in kind from member 1's."""
    first = signature(members[0])
    for i, (member, name) in enumerate(zip(members[1:], names[1:]), start=2):
        sig = signature(member)
        for key in [*first, *(k for k in sig if k not in first)]:
            if first.get(key) != sig.get(key):
                raise DataError(f"{name}: ensemble member {i} differs from member 1 ({names[0]}) in {key}: "
                                f"{sig.get(key)!r} vs {first.get(key)!r}; members must predict the same "
                                f"tasks and classes")


# ----------------------------------------------------------------------------------------- ensemble
def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    total = values[0].clone()
    for v in values[1:]:
        total += v
    return total / len(values)


class EnsemblePredictor(Predictor):
    """Several ``Predictor``s as one (see the module docstring); ``predict`` returns one ScanPrediction.

    It reuses the predictor's assembly (masks, maps, instances, volumes) on the averaged outputs; the
    members run ungated (``options.gate`` off for them) and the ensemble gates."""

    def __init__(self, members: Sequence[Predictor], options: PredictOptions | None = None,
                 names: Sequence[str] | None = None):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.options = options or PredictOptions()
        self.names = list(names or [f"member {i + 1}" for i in range(len(members))])
        check_members(members, self.names)
        self.members = list(members)
        for m in self.members:
            m.options = dataclasses.replace(self.options, gate=False)
        first = self.members[0]
        self.config, self.device = first.config, first.device
        self.backend, self.model = first.backend, first.model  # detection merging reads its head's NMS rule
        self.context_slices = max(m.context_slices for m in self.members)
        self.slice_context = max(m.slice_context for m in self.members)
        self.patient_window = max(m.patient_window for m in self.members)
        self.windows = [list(m.windows) for m in self.members]
        self.image_size = [m.image_size for m in self.members]
        self.weights_sha256 = [m.weights_sha256 for m in self.members]
        self.config_sha256 = [m.config_sha256 for m in self.members]
        self.temperature = None
        self.gate = self._gate()
        if self.options.saliency:
            for m in self.members:
                m.check_saliency()

    @classmethod
    def from_checkpoints(cls, weights: Sequence[str | Path], options: PredictOptions | None = None, device="cpu",
                         backend: str | None = None) -> "EnsemblePredictor":
        options = options or PredictOptions()
        members = [Predictor.from_checkpoint(w, options, device, backend) for w in weights]
        return cls(members, options, [str(w) for w in weights])

    @property
    def num_members(self) -> int:  # type: ignore[override]
        return len(self.members)

    def _gate(self) -> CascadeGate | None:
        """The mean of the members' thresholds over the first member's gated heads; None when no member
        has one; DataError when some have and some not (unless ``options.gate`` is off)."""
        gates = [m.gate if m.gate is not None and m.gate.threshold is not None else None for m in self.members]
        if all(g is None for g in gates):
            return None
        if self.options.gate and any(g is None for g in gates):
            i = next(i for i, g in enumerate(gates) if (g is None) != (gates[0] is None))
            raise DataError(f"{self.names[i]}: ensemble member {i + 1} differs from member 1 ({self.names[0]}) in "
                            f"cascade.threshold: one has a cascade gate, the other none (or predict with --no-gate)")
        present = [g for g in gates if g is not None]
        return present[0].with_threshold(float(np.mean([g.threshold for g in present])))

    @property
    def applied_temperature(self):
        temps = [m.applied_temperature for m in self.members]
        return None if all(t is None for t in temps) else temps

    def predict(self, scan: Scan) -> ScanPrediction:
        timings = {"preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
        runs = []
        for member in self.members:
            t0 = time.perf_counter()
            groups, inputs, fits = member.model_inputs(scan)
            t1 = time.perf_counter()
            axis = lr_axis(scan.kind)
            if self.options.sliding_window:
                outs = [member.sliding_window(g, axis) for g in inputs]
            else:
                outs = [member._run_batches(inputs[0], axis)]
            t2 = time.perf_counter()
            timings["preprocess"] += t1 - t0
            timings["model"] += t2 - t1
            runs.append((groups, inputs, fits, split_groups(groups, outs)))
        t2 = time.perf_counter()
        groups = runs[0][0]
        combined, fits = [], []
        for g_index, group in enumerate(groups):
            out, fit = self._combine([(m, r[2][g_index], r[3][g_index]) for m, r in zip(self.members, runs)],
                                     tuple(group.shape[-2:]))
            combined.append(out)
            fits.append(fit)
        pred = self._assemble(scan, groups, fits, combined)
        t3 = time.perf_counter()
        timings["postprocess"] = t3 - t2
        if self.options.saliency:
            from .saliency import scan_layout

            per_member = [m.saliency_maps(r[0], r[1], r[2]) for m, r in zip(self.members, runs)]
            pred.saliency = scan_layout(scan, [np.mean(maps, axis=0) for maps in zip(*per_member)])
            timings["saliency"] = time.perf_counter() - t3
        pred.timings = timings
        return pred

    def _combine(self, parts, size: tuple[int, int]) -> tuple[dict, object]:
        """One group's member outputs [(member, fit, out)] -> (averaged outputs, the fit they are on:
        the members' common fit, or None when they are already on the slice grid)."""
        out: dict = {}
        if all("cls_prob" in o for _, _, o in parts):
            raw = _mean([o["cls_prob"] for _, _, o in parts])
            out["cls_prob"] = _mean([m.calibrated(o)["cls_prob"] for m, _, o in parts])
        n = len(next(iter(parts[0][2].values())))
        fits = [f for _, f, _ in parts]
        same = all(f == fits[0] for f in fits)  # one model grid (or all already on the slice grid)
        fit = fits[0] if same else None
        if all("seg_prob" in o for _, _, o in parts):
            if same:
                out["seg_prob"] = _mean([o["seg_prob"] for _, _, o in parts])
            else:  # members of different input sizes: average on the slice grid
                out["seg_prob"] = _mean([unfit(o["seg_prob"], f) if f is not None else o["seg_prob"] for _, f, o in parts])
        elif any("seg_prob" in o for _, _, o in parts):
            raise DataError("ensemble members differ in their segmentation outputs")
        if any("instances" in o for _, _, o in parts) and fit is not None:  # one grid: merged on it, as flip TTA
            det = detection_head(self.model)
            per_member = [o["instances"] for _, _, o in parts if "instances" in o]
            out["instances"] = [merge_instances(slice_parts, det.nms_iou, getattr(det, "max_det", None))
                                for slice_parts in zip(*per_member)]
        elif any("instances" in o for _, _, o in parts):  # mapped to slice pixels first, then merged
            per_member = [m._instances(o.get("instances", [{}] * n), f, size) for m, f, o in parts]
            out["slice_instances"] = [self._merge(slice_parts) for slice_parts in zip(*per_member)]
        gate = self.active_gate
        if gate is not None and "cls_prob" in out:
            keep = gate.keep(raw[:, 0])
            out = gate_outputs(out, keep, gate.heads)
            if "slice_instances" in out and "det" in gate.heads:
                out["slice_instances"] = [inst if k else _no_instances(inst) for inst, k
                                          in zip(out["slice_instances"], keep.tolist())]
            out["gate_passed"] = keep
        if "cls_prob" not in out:
            out["cls_prob"] = torch.full((n, len(LABELS)), float("nan"))
        return out, fit

    def _merge(self, parts: Sequence[dict]) -> dict:
        """One slice's member detections (slice pixels, numpy) -> their union suppressed by the det head's NMS."""
        size = parts[0]["size"]
        if sum(len(p["boxes"]) for p in parts) == 0:
            return parts[0]
        det = detection_head(self.model)
        keys = ("boxes", "labels", "scores", "masks")
        merged = merge_instances([{k: torch.from_numpy(np.asarray(p[k])) for k in keys} for p in parts],
                                 det.nms_iou, getattr(det, "max_det", None))
        return {**{k: v.numpy() for k, v in merged.items()}, "size": size}


def _no_instances(inst: dict) -> dict:
    return {**{k: v[:0] for k, v in inst.items() if k != "size"}, "size": inst["size"]}


def load_predictor(weights: Sequence[str | Path], options: PredictOptions | None = None, device="cpu",
                   backend: str | None = None) -> Predictor:
    """One checkpoint: its ``Predictor`` (the single-model path as is); several (or a members file /
    run_grid folder listing several): an ``EnsemblePredictor``."""
    paths = member_paths(weights)
    if len(paths) == 1:
        return Predictor.from_checkpoint(paths[0], options, device, backend)
    return EnsemblePredictor.from_checkpoints(paths, options, device, backend)
