"""The sidecar beside an exported model (``model.onnx`` -> ``model.onnx.yaml``): what the runtime needs
to run the training-time pipeline without the checkpoint.

It holds the resolved training config (windows, image size, 2.5D context: the preprocessing), the
cascade gate, the input geometry and output names of the graph, which heads were left out and why,
the source checkpoint's sha256 and the export-time parity figures.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from ..config import save_config
from ..data.io import DataError

SIDECAR_SUFFIX = ".yaml"


def sidecar_path(model_path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def input_channels(config: dict) -> int:
    """Channels the model sees: one per HU window, times 2c+1 slices for a 2.5D (context c) config."""
    data = config["data"]
    return len(data["windows"]) * (2 * int(data.get("context_slices") or 0) + 1)


def write_sidecar(model_path, info: dict) -> Path:
    return save_config(info, sidecar_path(model_path))


def read_sidecar(model_path) -> dict:
    """The sidecar of ``model_path``; a missing or malformed one is a DataError naming it."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise DataError(f"{model_path}: no sidecar {path.name} beside it (written by tools/export.py; it holds "
                        f"the config the model needs)")
    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    missing = [k for k in ("format", "config", "input", "outputs") if not isinstance(info, dict) or k not in info]
    if missing:
        raise DataError(f"{path}: sidecar lacks {missing}")
    return info
