"""Model backends for the predictor: one object per runtime with ``forward(batch, gate=None) -> dict``.

The predictor does its preprocessing, batching, TTA and postprocessing the same way for every
backend; only this call differs. ``batch["image"]`` is (B, C, S, S) float32 on the CPU; the dict holds
the model's eval outputs (``cls_prob``, ``seg_prob``, ``instances`` where the model has a detection
head, ``gate_passed`` when gated). A backend is called like a model (``backend(batch, gate=...)``),
so ``hemo_mtl.models.tta.eval_forward`` drives any of them.

- ``TorchBackend``: the checkpoint's ``nn.Module`` (channels_last on CPU, gated heads run only on the
  slices that pass).
- ``OnnxRuntimeBackend`` / ``TorchScriptBackend``: an exported graph (``tools/export.py``) and its
  sidecar; the gate blanks the rejected slices after the graph ran on all of them.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..data.io import DataError
from ..models.gating import CascadeGate, gate_outputs

BACKENDS = ("torch", "onnxruntime", "torchscript")


class Backend:
    """What the predictor calls. ``module`` is the torch model where there is one (detection merging)."""

    name = "backend"
    module: torch.nn.Module | None = None

    def forward(self, batch: Mapping, gate: CascadeGate | None = None) -> dict:
        raise NotImplementedError

    def __call__(self, batch: Mapping, gate: CascadeGate | None = None) -> dict:
        return self.forward(batch, gate)

    def predicting(self, score_threshold: float):
        """Context for a predict call (the torch backend raises Mask R-CNN's score floor)."""
        return contextlib.nullcontext()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, device="cpu", channels_last: bool = True):
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.module = model.eval()
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    def forward(self, batch: Mapping, gate: CascadeGate | None = None) -> dict:
        x = batch["image"].to(self.device)
        batch = {**batch, "image": x.contiguous(memory_format=torch.channels_last) if self.channels_last else x}
        return dict(self.module(batch) if gate is None else self.module(batch, gate=gate))

    def predicting(self, score_threshold: float):

        return score_floor(self.module, score_threshold)


class ExportedBackend(Backend):
    """An exported graph: fixed input (C, H, W), outputs named in the sidecar, gate applied afterwards."""

    def __init__(self, path, sidecar: dict):
        self.path = Path(path)
        self.sidecar = sidecar
        spec = sidecar["input"]
        self.input_shape = (int(spec["channels"]), int(spec["height"]), int(spec["width"]))
        self.output_names = list(sidecar["outputs"])

    def run(self, image: torch.Tensor) -> list:
        raise NotImplementedError

    def forward(self, batch: Mapping, gate: CascadeGate | None = None) -> dict:
        x = batch["image"]
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(f"{self.path}: exported for inputs of shape {self.input_shape} (C, H, W), got "
                            f"{tuple(x.shape[1:])} (sliding windows and other input sizes need the torch backend)")
        out = {name: torch.as_tensor(v) for name, v in zip(self.output_names, self.run(x))}
        if gate is None:
            return out
        if "cls_prob" not in out:
            raise DataError(f"{self.path}: the cascade gate needs cls_prob, the graph outputs {self.output_names}")
        keep = gate.keep(out["cls_prob"][:, 0])
        return {**gate_outputs(out, keep, gate.heads), "gate_passed": keep}


class OnnxRuntimeBackend(ExportedBackend):
    name = "onnxruntime"

    def __init__(self, path, sidecar: dict, threads: int | None = None):
        super().__init__(path, sidecar)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DataError("the onnxruntime backend needs the 'onnx' extra: pip install 'hemo-mtl[onnx]'") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the one-line message below says what is wrong
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            reason = " ".join(str(exc).split())
            raise DataError(f"{self.path}: not a readable ONNX model ({reason[:200]})") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise DataError(f"{self.path}: expected one input (image), the model has {[i.name for i in inputs]}")
        shape = inputs[0].shape  # [batch, C, H, W]; the batch axis is symbolic
        if len(shape) != 4 or tuple(shape[1:]) != self.input_shape:
            raise DataError(f"{self.path}: ONNX input {inputs[0].name} has shape {shape}, the sidecar config needs "
                            f"[batch, {', '.join(map(str, self.input_shape))}] (C = windows x (2 x context + 1))")
        names = [o.name for o in self.session.get_outputs()]
        if names != self.output_names:
            raise DataError(f"{self.path}: ONNX outputs {names} differ from the sidecar's {self.output_names}")
        self.input_name = inputs[0].name

    def run(self, image: torch.Tensor) -> list:
        x = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(self.output_names, {self.input_name: x})


class TorchScriptBackend(ExportedBackend):
    name = "torchscript"

    def __init__(self, path, sidecar: dict, device="cpu"):
        super().__init__(path, sidecar)
        self.device = torch.device(device)
        try:
            self.graph = torch.jit.load(str(self.path), map_location=self.device).eval()
        except Exception as exc:  # noqa: BLE001 - torch.jit raises several types for a bad file
            reason = " ".join(str(exc).split())
            raise DataError(f"{self.path}: not a readable TorchScript model ({reason[:200]})") from exc

    @torch.inference_mode()
    def run(self, image: torch.Tensor) -> list:
        return [v.float().cpu() for v in self.graph(image.to(self.device))]


def infer_backend(weights) -> str:
    """The backend a weights file implies by its name: ``.onnx`` -> onnxruntime, a TorchScript export's
    ``.torchscript.pt`` -> torchscript, anything else (model_final.pth) -> torch."""
    name = Path(weights).name.lower()
    if name.endswith(".onnx"):
        return "onnxruntime"
    if name.endswith(".torchscript.pt"):
        return "torchscript"
    return "torch"


def load_backend(weights, backend: str | None = None, device="cpu", channels_last: bool = True
                 ) -> tuple[Backend, dict, dict, dict]:
    """(backend, config, cascade, state) for ``weights``: a model_final.pth for ``torch`` (state: the
    checkpoint), an exported file and its sidecar (state) for the others. Errors name the file."""
    backend = backend or infer_backend(weights)
    if backend not in BACKENDS:
        raise DataError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "torch":
        model, state = load_model(weights, device)
        return TorchBackend(model, device, channels_last), state["config"], dict(state.get("cascade") or {}), state
    from ..export.sidecar import input_channels, read_sidecar

    path = Path(weights)
    if not path.is_file():
        raise DataError(f"{path}: exported model not found")
    sidecar = read_sidecar(path)
    fmt = {"onnxruntime": "onnx", "torchscript": "torchscript"}[backend]
    if sidecar["format"] != fmt:
        raise DataError(f"{path}: the sidecar says format {sidecar['format']!r}; the {backend} backend runs {fmt!r}")
    config = sidecar["config"]
    channels = input_channels(config)
    if int(sidecar["input"]["channels"]) != channels:
        raise DataError(f"{path}: exported for {sidecar['input']['channels']} input channels, its sidecar config "
                        f"gives {channels} (windows {list(config['data']['windows'])})")
    if backend == "onnxruntime":
        runner: Backend = OnnxRuntimeBackend(path, sidecar)
    else:
        runner = TorchScriptBackend(path, sidecar, device)
    return runner, config, dict(sidecar.get("cascade") or {}), sidecar


@contextlib.contextmanager
def score_floor(model: torch.nn.Module, threshold: float):
    """Raise torchvision RoIHeads' score threshold to ``threshold`` while predicting: boxes below it are
    dropped before the mask head and pasting instead of after (the kept detections are the same)."""
    from torchvision.models.detection.roi_heads import RoIHeads

    heads = [m for m in model.modules() if isinstance(m, RoIHeads)]
    saved = [h.score_thresh for h in heads]
    for h in heads:
        h.score_thresh = max(h.score_thresh, threshold)
    try:
        yield
    finally:
        for h, value in zip(heads, saved):
            h.score_thresh = value


def load_model(weights, device: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint dict) from a model_final.pth (``weights_only`` loading)."""
    from ..engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights
    from ..models import build_model

    state = load_checkpoint(weights, map_location=device)
    for key in ("model", "config"):
        if key not in state:
            raise CheckpointError(f"{weights}: checkpoint has no {key!r} entry (expected model_final.pth)")
    model = build_model(state["config"]["model"])
    load_model_weights(model, state["model"], weights)
    return model.to(device).eval(), state
