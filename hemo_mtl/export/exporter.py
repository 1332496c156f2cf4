"""Export a checkpoint's exportable heads to ONNX or TorchScript, with its sidecar and a parity check."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..inference.predictor import load_model, sha256_file
from ..version import __version__
from .graph import ProbabilityModel, split_heads
from .sidecar import input_channels, sidecar_path, write_sidecar

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}


class ExportError(ValueError):
    """An export that cannot be done as asked (the message names the file)."""


@dataclass
class ExportResult:
    model_path: Path
    sidecar_path: Path
    heads: dict[str, list[str]]
    skipped: dict[str, str]
    parity: dict[str, float] = field(default_factory=dict)  # output -> max |exported - torch| on the example


def example_input(config: dict, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random (batch, C, S, S) input in the model's value range [0, 1] (windowed HU / 255)."""
    size = int(config["data"]["image_size"])
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, input_channels(config), size, size), generator=g)


def run_exported(fmt: str, path, image: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """Outputs of an exported file on ``image``, read back by the format's own runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(zip(names, session.run(names, {"image": image.numpy()})))
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return {n: v.numpy() for n, v in zip(names, loaded(image))}


def export_checkpoint(weights, fmt: str, out_dir, force: bool = False) -> ExportResult:
    """``weights`` (model_final.pth) -> ``out_dir``/model.onnx or model.torchscript.pt + sidecar."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401  (reads the file back for the parity check)
            import onnxscript  # noqa: F401  (the dynamo exporter's translator)
        except ImportError as exc:
            raise ExportError("ONNX export needs the 'onnx' extra: pip install 'hemo-mtl[onnx]'") from exc
    out_dir = Path(out_dir)
    path = out_dir / FORMATS[fmt]
    if not force and (path.exists() or sidecar_path(path).exists()):
        raise ExportError(f"{path}: already exists; pass --force to replace it")
    model, state = load_model(weights, "cpu")
    if getattr(model, "input_prior", None) is not None:
        raise ExportError(f"{weights}: the model computes its model.input_prior channel with SciPy, which no "
                          f"exported graph holds; predict with the checkpoint itself")
    config, cascade = state["config"], dict(state.get("cascade") or {})
    example = example_input(config)
    expected = int(model.cfg["backbone"]["in_chans"])
    if expected != example.shape[1]:
        raise ExportError(f"{weights}: backbone.in_chans={expected} but the config's windows/context give "
                          f"{example.shape[1]} input channels")
    heads, skipped = split_heads(model, example)
    graph = ProbabilityModel(model, heads).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export.", dir=out_dir))  # both files, then both renamed
    try:
        staged = staging / path.name
        if fmt == "onnx":
            from .onnx import OPSET, export_onnx

            export_onnx(graph, example, staged)
            runtime = {"opset": OPSET}
        else:
            from .torchscript import export_torchscript

            export_torchscript(graph, example, staged)
            runtime = {}
        with torch.inference_mode():
            reference = dict(zip(graph.output_names, graph(example)))
        got = run_exported(fmt, staged, example, graph.output_names)
        parity = {k: float(np.abs(got[k] - reference[k].numpy()).max()) for k in graph.output_names}
        info = {
            "format": fmt,
            "model_file": path.name,
            "model_sha256": sha256_file(staged),
            "source_weights": Path(weights).name,
            "source_sha256": sha256_file(weights),
            "input": {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": int(example.shape[1]),
                      "height": int(example.shape[2]), "width": int(example.shape[3])},
            "outputs": list(graph.output_names),
            "heads": {k: list(v) for k, v in heads.items()},
            "not_exported": skipped,
            "cascade": cascade,
            "calibration": dict(state.get("calibration") or {}),  # the predictor applies it after the graph
            "parity_max_abs_diff": parity,
            "versions": {"hemo_mtl": __version__, "torch": str(torch.__version__), **runtime},
            "config": config,
        }
        write_sidecar(staged, info)
        os.replace(staged, path)
        os.replace(sidecar_path(staged), sidecar_path(path))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(path, sidecar_path(path), heads, skipped, parity)
