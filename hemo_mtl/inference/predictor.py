"""Run a trained checkpoint on whole scans: NIfTI volumes, DICOM series, folders of PNG/JPG slices.

The input path is the training path in batch form: HU windows stacked as channels (``stack_windows``)
or 8-bit display slices / 255, then fit-longest-side + centre pad to ``data.image_size`` (the same
geometry as albumentations' LongestMaxSize + PadIfNeeded, done with ``F.interpolate`` on all slices at
once). Model outputs are mapped back (crop the pad, resize to the slice size) so masks line up with the
input voxels and write into NIfTI on the input's affine. Slices go through the model ``batch_size`` at a
time; ``batch_size=1`` is the per-slice loop kept for benchmarks and equivalence tests (same code).

2.5D checkpoints (``data.context_slices`` c > 0) see each slice with its c neighbours each side as
extra channels, [window0 @ z-c..z+c, window1 @ ...], edge slices replicated: the stack is one gather
of the windowed volume with ``hemo_mtl.data.dataset.context_index`` (the dataset's own neighbour rule).
``eval.slice_context`` (or ``PredictOptions.slice_context``) c > 0 lifts each slice's classifier
probabilities towards the mean of its scan's slices z-c..z+c after the model, its gate and temperature
(``evaluation.classification.slice_context_max``), as the run's evaluation scored it.

Speed: the model runs under ``torch.inference_mode`` in channels_last (CPU convolutions), Mask R-CNN
drops detections below ``score_threshold`` before its mask head and mask pasting (they would be
discarded afterwards anyway), and un-padding/resizing/argmax run on chunks of slices at once.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..categories import CATEGORY_NAMES, LABELS
from ..data.dataset import context_index
from ..data.io import DataError, list_slice_images, load_dicom_series, load_display_image, load_nifti
from ..data.patches import window_grid
from ..data.windowing import check_hu_range, stack_windows
from ..models.gating import CascadeGate
from ..models.tta import eval_forward, lr_axis, merge_detections
from .backends import Backend, TorchBackend, load_backend, load_model, score_floor  # noqa: F401 (re-exported)
from .geometry import Fit, class_labels, fit_to_square, label_map, label_volume, unfit  # noqa: F401 (re-exported)
from .postprocess import clean_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class PredictOptions:
    batch_size: int = 16
    gate: bool = True  # apply the checkpoint's cascade gate when it has one
    flip_tta: bool = False  # + the left-right mirrored pass (array axis 0 = patient L/R): probabilities
    #                          averaged, detections merged by the det head's NMS
    sliding_window: bool = False  # native resolution, patch x patch windows, overlap-averaged
    patch: int = 160
    stride: int = 80
    closing: int = 0  # iterations of a 3x3 in-plane closing, per subtype
    opening: int = 0
    min_voxels: int = 0  # drop 3D lesions smaller than this
    score_threshold: float = 0.5  # detections kept in detections.json
    mask_threshold: float = 0.5  # instance mask probability -> pixel
    subtype_threshold: float = 0.5  # patient-level p >= this -> subtype predicted
    channels_last: bool = True  # NHWC model + input: faster CPU convolutions (outputs equal to ~1e-6)
    calibrate: bool = True  # apply the checkpoint's temperature scaling (when it carries one) to cls_prob
    save_probabilities: bool = False  # keep per-class probability maps (+ entropy with TTA / an ensemble)
    saliency: bool = False  # Grad-CAM of the classifier's any logit per slice (saliency.py; extra 'explain')
    slice_context: int | None = None  # slice_context_max's c; None = the checkpoint's eval.slice_context
    patient_window: int | None = None  # adjacent slices a patient score averages; None = eval.patient_window


@dataclass
class Scan:
    """One scan ready for the model: HU volume (X, Y, Z) or a list of 2D display slices."""
    path: str
    kind: str  # "hu" or "display"
    slices: np.ndarray | list[np.ndarray]  # (X, Y, Z) float32 HU, or list of (H, W) uint8
    affine: np.ndarray | None = None
    names: list[str] | None = None  # slice file names (image folders)
    files: list[str] | None = None  # DICOM series: each slice's file, in z order (DICOM-SEG references them)

    @property
    def num_slices(self) -> int:
        return self.slices.shape[2] if isinstance(self.slices, np.ndarray) else len(self.slices)

    @property
    def spacing(self) -> tuple[float, float, float] | None:
        if self.affine is None:
            return None
        return tuple(float(s) for s in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))


@dataclass
class ScanPrediction:
    cls_prob: np.ndarray  # (Z, 6) any + subtypes
    mask: np.ndarray | list[np.ndarray]  # (X, Y, Z) uint8 for volumes; list of (H, W) for image folders;
    #                                     0, 1..5 subtypes, UNKNOWN_SUBTYPE (6) for a binary head's bleed
    instances: list[dict]  # per slice: boxes (N,4) xyxy, labels, scores, masks (N,H,W) bool, original size
    gate_passed: np.ndarray | None = None  # (Z,) bool where the cascade gate ran
    prob: np.ndarray | list[np.ndarray] | None = None  # (X, Y, Z, C) class probabilities; folders: (H, W, C) each;
    #                                                    channel c is P(mask value seg_labels[c])
    uncertainty: np.ndarray | list[np.ndarray] | None = None  # (X, Y, Z) normalised predictive entropy (maps.py)
    saliency: np.ndarray | list[np.ndarray] | None = None  # (X, Y, Z) Grad-CAM of p(any) in [0, 1]
    timings: dict[str, float] = field(default_factory=dict)
    # the bleed mask values the segmenter predicts, one per ``prob`` channel: EDH..IVH (1..5), or
    # (UNKNOWN_SUBTYPE,) for a binary head (its one channel is P(bleed))
    seg_labels: tuple[int, ...] = tuple(CATEGORY_NAMES)


# ----------------------------------------------------------------------------------------------- input
def load_scan(path) -> Scan:
    """A NIfTI file, a DICOM series folder or a folder of PNG/JPG slices; errors name the file."""
    path = Path(path)
    if path.is_file():
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            raise DataError(f"{path}: not a NIfTI file (.nii/.nii.gz), DICOM folder or image folder")
        vol = load_nifti(path)
        check_hu_range(vol.data, str(path))
        check_affine(vol.affine, str(path))
        return Scan(str(path), "hu", vol.data, vol.affine)
    if not path.is_dir():
        raise DataError(f"{path}: input not found")
    images = list_slice_images(path)  # natural order, mask files left out
    if images:
        return Scan(str(path), "display", [load_display_image(p) for p in images], None, [p.name for p in images])
    vol = load_dicom_series(path)
    check_hu_range(vol.data, str(path))
    check_affine(vol.affine, str(path))
    return Scan(str(path), "hu", vol.data, vol.affine, files=vol.files)


def check_affine(affine, path: str) -> None:
    """DataError unless the voxel -> mm affine is finite with three non-zero, independent axes: masks
    are written on it and volumes measured with it, so a degenerate one cannot be used."""
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.all(np.isfinite(affine)):
        raise DataError(f"{path}: the affine (voxel -> mm) holds NaN or infinite values")
    lengths = np.sqrt((m ** 2).sum(axis=0))
    if np.any(lengths == 0):
        axes = ", ".join(str(int(i)) for i in np.flatnonzero(lengths == 0))
        raise DataError(f"{path}: the affine's voxel axis {axes} has zero length (a zero column): no spacing "
                        f"to measure volumes or place masks")
    if abs(np.linalg.det(m / lengths)) < 1e-6:
        raise DataError(f"{path}: the affine's voxel axes are not independent (singular matrix)")


def find_scans(path) -> list[Path]:
    """The scans under ``path``: itself when it is one scan (a NIfTI file, an image folder, a DICOM
    folder), else every entry of a folder of scans. Files there that are not NIfTI stay in the list,
    so they are reported as bad scans rather than silently skipped; hidden files are ignored."""
    path = Path(path)
    if path.is_file() or not path.is_dir():
        return [path]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return [path]
    if any(p.is_dir() or p.name.lower().endswith(NIFTI_SUFFIXES) for p in entries):
        return entries
    return [path]  # only plain files: a DICOM series folder (or an error naming it)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_config(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def with_context(x: torch.Tensor, context: int) -> torch.Tensor:
    """(Z, C, H, W) slices in volume order -> (Z, C * (2c+1), H, W): channel order [c0 @ z-c..z+c,
    c1 @ z-c..z+c, ...], edge slices replicated; one gather, no per-slice loop."""
    if context <= 0:
        return x
    index = torch.from_numpy(context_index(np.arange(len(x)), context))  # (Z, 2c+1)
    return x[index].transpose(1, 2).reshape(len(x), -1, *x.shape[-2:])


def split_groups(groups, outs: list[dict]) -> list[dict]:
    """One batched pass over all groups of slices -> one output dict per group (already one each: as is)."""
    if len(outs) == len(groups):
        return outs
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [{k: v[a:b] for k, v in outs[0].items()} for a, b in zip(bounds[:-1], bounds[1:])]


class Predictor:
    """A checkpoint ready to predict scans with the training-time preprocessing of its config."""

    def __init__(self, model, config: dict, cascade: dict | None = None, options: PredictOptions | None = None,
                 device: str | torch.device = "cpu", weights_sha256: str | None = None,
                 temperature: list[float] | None = None):
        """``model``: an ``nn.Module`` (run by ``TorchBackend``) or any ``Backend`` (an exported graph)."""
        self.temperature = temperature  # per label, fitted on validation (hemo_mtl.evaluation.calibration)
        self.config = config
        self.gate = CascadeGate.from_state(cascade)  # the checkpoint's "cascade" state
        self.options = options or PredictOptions()
        self.device = torch.device(device)
        self.windows = tuple(config["data"]["windows"])
        self.image_size = int(config["data"]["image_size"])
        self.context_slices = int(config["data"].get("context_slices") or 0)
        self.slice_context = int(config.get("eval", {}).get("slice_context") or 0)
        self.patient_window = int(config.get("eval", {}).get("patient_window") or 1)
        self.backend = model if isinstance(model, Backend) else TorchBackend(model, device, self.options.channels_last)
        self.model = self.backend.module  # the torch model, None for an exported graph
        self.weights_sha256 = weights_sha256
        self.config_sha256 = sha256_config(config)
        if self.options.saliency:
            self.check_saliency()
        if self.options.sliding_window and ((self.config.get("model") or {}).get("input_prior") or {}).get("kind"):
            raise DataError("the sliding window's patches do not show the whole skull that model.input_prior's "
                            "channel is computed from: predict whole slices")

    def check_saliency(self) -> None:
        """Before any scan runs: Grad-CAM needs the installed extra, the torch model and whole slices."""
        from .saliency import classification_head, require_gradcam

        require_gradcam()
        if self.model is None:
            raise DataError(f"saliency needs the torch model's gradients: run a model_final.pth, not the exported "
                            f"{self.backend.name} graph")
        if self.options.sliding_window:
            raise DataError("saliency explains the classifier on the whole slice: it cannot run with the sliding window")
        classification_head(self.model)

    @classmethod
    def from_checkpoint(cls, weights, options: PredictOptions | None = None, device="cpu",
                        backend: str | None = None) -> "Predictor":
        """``weights``: a model_final.pth, or an exported model (``backend`` onnxruntime/torchscript, by
        default inferred from the file name) whose sidecar holds the config, cascade and calibration."""
        from ..evaluation.calibration import checkpoint_temperature

        options = options or PredictOptions()
        runner, config, cascade, state = load_backend(weights, backend, device, options.channels_last)
        return cls(runner, config, cascade, options, device, sha256_file(weights), checkpoint_temperature(state))

    num_members = 1  # models averaged per pass (an ensemble has more)

    @property
    def wants_uncertainty(self) -> bool:
        """An uncertainty map needs several averaged passes: flip TTA or an ensemble."""
        return self.options.save_probabilities and (self.options.flip_tta or self.num_members > 1)

    @property
    def active_gate(self) -> CascadeGate | None:
        """The gate predictions apply: the checkpoint's, unless ``options.gate`` is off."""
        gate = self.gate if self.options.gate else None
        return gate if gate is not None and gate.threshold is not None else None

    @property
    def gate_threshold(self) -> float | None:
        return None if self.active_gate is None else self.active_gate.threshold

    # ------------------------------------------------------------------ preprocessing
    def channels(self, scan: Scan) -> list[torch.Tensor]:
        """Windowed (N, C, H, W) float tensors, one per group of equal-size slices (volumes: one)."""
        if scan.kind == "hu":  # numpy windowing (in-place clip) is ~3x faster here than torch's
            vol = np.ascontiguousarray(np.moveaxis(scan.slices, 2, 0))  # (Z, X, Y): slice k = vol[:, :, k]
            return [torch.from_numpy(stack_windows(vol, self.windows, axis=1))]  # (Z, C, X, Y)
        c = len(self.windows)
        if len({s.shape for s in scan.slices}) == 1:  # one stack: one resize, and neighbours for 2.5D
            stack = torch.from_numpy(np.stack(scan.slices).astype(np.float32) / 255.0)[:, None]
            return [stack.expand(-1, c, -1, -1).contiguous()]
        if self.context_slices and self.options.sliding_window:
            raise DataError(f"{scan.path}: slices of different sizes cannot be stacked with their neighbours "
                            f"(2.5D checkpoint, data.context_slices={self.context_slices}) at native resolution")
        return [torch.from_numpy(s.astype(np.float32) / 255.0)[None, None].expand(1, c, *s.shape).contiguous()
                for s in scan.slices]

    # ------------------------------------------------------------------ model passes
    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, flip_axis: int = -2) -> dict:
        """Model outputs for (B, C, S, S), gated when the checkpoint says so (the gated heads then run only
        on the slices that pass), or with the pass mirrored along ``flip_axis`` (``flip_tta``: gated on the
        averaged p(any))."""
        out = eval_forward(self.backend, {"image": x}, self.active_gate, self.options.flip_tta, flip_axis)
        out = {k: (v.float().cpu() if torch.is_tensor(v) and v.is_floating_point() else
                   v.cpu() if torch.is_tensor(v) else v) for k, v in out.items()}
        if "instances" in out:
            out["instances"] = [{k: v.float().cpu() for k, v in inst.items()} for inst in out["instances"]]
        return out

    def _run_batches(self, x: torch.Tensor, flip_axis: int = -2) -> dict:
        """All of ``x`` through the model ``batch_size`` slices at a time; outputs concatenated."""
        with self.backend.predicting(self.options.score_threshold):
            parts = [self._forward(x[i:i + self.options.batch_size], flip_axis)
                     for i in range(0, len(x), self.options.batch_size)]
        out: dict = {}
        for key in parts[0]:
            if key == "instances":
                out[key] = [inst for p in parts for inst in p[key]]
            else:
                out[key] = torch.cat([p[key] for p in parts])
        return out

    def sliding_window(self, x: torch.Tensor, flip_axis: int = -2) -> dict:
        """Native-resolution patches (``patch``, ``stride``): seg probabilities averaged where windows
        overlap, p(slice) = max over windows, instances shifted to the slice and merged by NMS."""
        p, s = self.options.patch, self.options.stride
        n, _, h, w = x.shape
        ph, pw = max(h, p), max(w, p)
        x = F.pad(x, (0, pw - w, 0, ph - h))
        seg = cnt = cls = None
        boxes = [[] for _ in range(n)]
        for top, left in window_grid(ph, pw, p, s):
            out = self._run_batches(x[..., top:top + p, left:left + p], flip_axis)
            if "seg_prob" in out:
                if seg is None:
                    seg = torch.zeros(n, out["seg_prob"].shape[1], ph, pw)
                    cnt = torch.zeros(1, 1, ph, pw)
                seg[..., top:top + p, left:left + p] += out["seg_prob"]
                cnt[..., top:top + p, left:left + p] += 1
            if "cls_prob" in out:
                cls = out["cls_prob"] if cls is None else torch.maximum(cls, out["cls_prob"])
            for i, inst in enumerate(out.get("instances", [])):
                m = inst["masks"].reshape(len(inst["boxes"]), p, p) if len(inst["boxes"]) else torch.zeros(0, p, p)
                full = torch.zeros(len(m), ph, pw)
                full[:, top:top + p, left:left + p] = m
                shift = torch.tensor([left, top, left, top], dtype=torch.float32)
                boxes[i].append({"boxes": inst["boxes"] + shift, "labels": inst["labels"],
                                 "scores": inst["scores"], "masks": full})
        result: dict = {}
        if cls is not None:
            result["cls_prob"] = cls
        if seg is not None:
            result["seg_prob"] = (seg / cnt)[..., :h, :w]
        if any(boxes):
            merged = [merge_detections(self.model, parts) for parts in boxes]
            result["instances"] = [{**m, "masks": m["masks"][..., :h, :w]} for m in merged]
        return result

    @property
    def applied_temperature(self) -> list[float] | None:
        return self.temperature if (self.options.calibrate and self.temperature is not None) else None

    def calibrated(self, out: dict) -> dict:
        """``cls_prob`` temperature-scaled after the model (and its gate, which compares the raw p(any) to
        its threshold: scaling keeps p >= 0.5 decisions and rankings, not other thresholds)."""
        t = self.applied_temperature
        if t is None or "cls_prob" not in out:
            return out
        from ..evaluation.calibration import apply_temperature

        prob = apply_temperature(out["cls_prob"].double().numpy(), t)
        return {**out, "cls_prob": torch.from_numpy(prob).float()}

    def with_slice_context(self, cls_prob: np.ndarray) -> np.ndarray:
        """(Z, 6) one scan's slice probabilities, in slice order -> ``slice_context_max`` of them."""
        c = self.options.slice_context
        c = self.slice_context if c is None else c
        if c <= 0:
            return cls_prob.astype(np.float32)
        from ..evaluation.classification import slice_context_max

        z = np.arange(len(cls_prob))
        return slice_context_max(cls_prob, np.zeros(len(z), int), z, c).astype(np.float32)

    @property
    def patient_window_used(self) -> int:
        k = self.options.patient_window
        return self.patient_window if k is None else int(k)

    def patient_probabilities(self, cls_prob: np.ndarray) -> np.ndarray:
        """(Z, 6) one scan's slice probabilities, in slice order -> (6,) its patient-level probabilities: the
        highest mean of ``patient_window`` adjacent slices (``adjacent_mean``; 1 = the highest slice), NaN
        for a label the model has no output for."""
        from ..evaluation.classification import adjacent_mean

        z = np.arange(len(cls_prob))
        runs = adjacent_mean(cls_prob, np.zeros(len(z), int), z, self.patient_window_used)
        finite = np.isfinite(runs)
        return np.asarray([runs[finite[:, i], i].max() if finite[:, i].any() else np.nan
                           for i in range(runs.shape[1])])

    # ------------------------------------------------------------------ one scan
    def model_inputs(self, scan: Scan) -> tuple[list[torch.Tensor], list[torch.Tensor], list[Fit | None]]:
        """(windowed slice groups, model inputs, fits): the inputs are what the model sees, (N, C', S, S)
        in one tensor (sliding window: native-size groups), with 2.5D neighbours stacked as channels."""
        groups = self.channels(scan)
        if self.options.sliding_window:
            return groups, [with_context(g, self.context_slices) for g in groups], [None] * len(groups)
        fits = [Fit(g.shape[-2], g.shape[-1], self.image_size) for g in groups]
        inputs = torch.cat([fit_to_square(g, self.image_size) for g in groups])  # resize C, not C x (2c+1)
        return groups, [with_context(inputs, self.context_slices)], fits

    def predict(self, scan: Scan) -> ScanPrediction:
        timings = {"preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
        t0 = time.perf_counter()
        groups, inputs, fits = self.model_inputs(scan)
        t1 = time.perf_counter()
        axis = lr_axis(scan.kind)
        outs = ([self.sliding_window(g, axis) for g in inputs] if self.options.sliding_window
                else [self._run_batches(inputs[0], axis)])
        t2 = time.perf_counter()
        outs = [self.calibrated(o) for o in outs]
        pred = self._assemble(scan, groups, fits, outs)
        t3 = time.perf_counter()
        timings.update(preprocess=t1 - t0, model=t2 - t1, postprocess=t3 - t2)
        if self.options.saliency:
            from .saliency import scan_layout

            pred.saliency = scan_layout(scan, self.saliency_maps(groups, inputs, fits))
            timings["saliency"] = time.perf_counter() - t3
        pred.timings = timings
        return pred

    def saliency_maps(self, groups, inputs, fits) -> list[np.ndarray]:
        """Grad-CAM of p(any) on the slice grid, one (N, H, W) array per group (``model_inputs``' output)."""
        from .saliency import slice_saliency

        return slice_saliency(self.model, inputs[0], fits, [len(g) for g in groups], self.options.batch_size)

    def _assemble(self, scan: Scan, groups, fits, outs) -> ScanPrediction:
        """Back to slice geometry: per slice label masks (``class_labels`` of the head's K classes), instances
        in slice pixels, cleaned volumes; with ``save_probabilities`` the K - 1 bleed-class maps, channels
        in ``seg_labels`` order (five subtypes, or P(bleed) for a binary head)."""
        outs = split_groups(groups, outs)
        cls, gate, masks, instances, probs, ents = [], [], [], [], [], []
        o = self.options
        seg_labels = tuple(CATEGORY_NAMES)  # no seg head: an all-background mask, reported per subtype
        for g, fit, out in zip(groups, fits, outs):
            if "seg_prob" in out:
                seg_labels = class_labels(out["seg_prob"].shape[1])[1:]
            cls.append(out["cls_prob"].numpy() if "cls_prob" in out else np.full((len(g), len(LABELS)), np.nan))
            if "gate_passed" in out:
                gate.append(out["gate_passed"].numpy())
            if "seg_prob" in out and o.save_probabilities:
                from .maps import slice_maps

                m = slice_maps(out["seg_prob"], fit, probabilities=True, entropy=self.wants_uncertainty)
                masks.append(m.labels.numpy())
                probs.append(m.prob.numpy().transpose(0, 2, 3, 1))  # (N, H, W, K - 1)
                if m.entropy is not None:
                    ents.append(m.entropy.numpy())
            elif "seg_prob" in out:
                masks.append(label_volume(out["seg_prob"], fit).numpy())  # (N, H, W)
            else:
                masks.append(np.zeros((len(g), *g.shape[-2:]), np.uint8))
            if "slice_instances" in out:  # already on the slice grid (an ensemble's merged detections)
                instances.extend(out["slice_instances"])
            else:
                instances.extend(self._instances(out.get("instances", [{}] * len(g)), fit, tuple(g.shape[-2:])))
        prob = unc = None
        if scan.kind == "hu":
            mask = clean_mask(np.moveaxis(masks[0], 0, 2), o.closing, o.opening, o.min_voxels)  # -> (X, Y, Z)
            if probs:
                prob = np.ascontiguousarray(probs[0].transpose(1, 2, 0, 3))  # (X, Y, Z, K - 1)
            if ents:
                unc = np.ascontiguousarray(np.moveaxis(ents[0], 0, 2))
        else:
            mask = [clean_mask(m, o.closing, o.opening, o.min_voxels) for ms in masks for m in ms]
            prob = [p for ps in probs for p in ps] or None
            unc = [e for es in ents for e in es] or None
        return ScanPrediction(cls_prob=self.with_slice_context(np.concatenate(cls)), mask=mask, instances=instances,
                              gate_passed=np.concatenate(gate) if gate else None, prob=prob, uncertainty=unc,
                              seg_labels=seg_labels)

    def _instances(self, insts: list[dict], fit: Fit | None, size: tuple[int, int]) -> list[dict]:
        """Per slice, detections above ``score_threshold`` in slice pixels: boxes un-padded and un-scaled,
        masks resized to the slice and thresholded. All slices' kept detections are mapped back in one
        pass (one box transform, one mask resize) and split per slice afterwards."""
        kept = []
        for inst in insts:
            if not inst or len(inst.get("boxes", [])) == 0:
                kept.append(None)
                continue
            keep = inst["scores"] >= self.options.score_threshold
            kept.append({k: inst[k][keep] for k in ("boxes", "labels", "scores", "masks")} if bool(keep.any()) else None)
        counts = [0 if k is None else len(k["boxes"]) for k in kept]
        out = []
        if sum(counts):
            found = [k for k in kept if k is not None]
            boxes = torch.cat([k["boxes"] for k in found]).float()
            probs = torch.cat([k["masks"].reshape(len(k["boxes"]), 1, *k["masks"].shape[-2:]) for k in found])
            if fit is not None:
                top, left = fit.pad
                sy, sx = fit.scale
                boxes = (boxes - torch.tensor([left, top, left, top])) / torch.tensor([sx, sy, sx, sy])
                probs = unfit(probs, fit)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0])
            pixels = (probs[:, 0] >= self.options.mask_threshold).numpy()
            labels = torch.cat([k["labels"] for k in found]).long().numpy()
            scores = torch.cat([k["scores"] for k in found]).numpy()
            boxes = boxes.numpy()
        start = 0
        for n in counts:
            if n == 0:
                out.append({"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                            "scores": np.zeros(0, np.float32), "masks": np.zeros((0, *size), bool), "size": size})
                continue
            part = slice(start, start + n)
            out.append({"boxes": boxes[part], "labels": labels[part], "scores": scores[part],
                        "masks": pixels[part], "size": size})
            start += n
        return out
