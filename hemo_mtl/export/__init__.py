"""Model export for other runtimes: ONNX (onnxruntime) and TorchScript, each with a YAML sidecar."""
from .exporter import FORMATS, ExportError, ExportResult, example_input, export_checkpoint, run_exported
from .graph import ProbabilityModel, split_heads
from .sidecar import input_channels, read_sidecar, sidecar_path, write_sidecar

__all__ = [
    "FORMATS", "ExportError", "ExportResult", "ProbabilityModel", "example_input", "export_checkpoint",
    "input_channels", "read_sidecar", "run_exported", "sidecar_path", "split_heads", "write_sidecar",
]
