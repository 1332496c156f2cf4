"""Checkpoints: one dict per file, written atomically, loadable with ``torch.load(weights_only=True)``.

The training checkpoint holds everything resume needs to continue exactly: model, optimizer,
lr_scheduler, scaler, ema, balancer, epoch, iter, the random states of python / numpy / torch / cuda
(as tensors and lists, because ``weights_only`` loading refuses arbitrary objects), the schedule's
state and the resolved config. ``model_final.pth`` holds the weights to predict with (the EMA weights
when EMA is on), the config and the cascade gate.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..atomic import atomic_path

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^model_(\d+)\.pth$")


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint written after ``epoch`` epochs (1-based count)."""
    return f"model_{epoch:04d}.pth"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temp file beside ``path``, then rename: a crash never leaves half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"cannot load checkpoint {path}: {exc}") from exc


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Periodic checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(Path(output_dir) / CHECKPOINT_DIR)
    return found[-1] if found else None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)


def rng_state() -> dict:
    """The random states of python, numpy, torch and cuda as tensors / lists (weights_only-safe)."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    out = {
        "python": [version, list(state), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: Mapping) -> None:
    version, values, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class preserved_rng:
    """Context manager: whatever runs inside (evaluation, drawing) leaves every random state as it was.

    So the training stream after an evaluation is the same whether or not it ran, and a resumed run
    matches a straight one.
    """

    def __enter__(self):
        self._state = rng_state()
        return self

    def __exit__(self, *exc) -> None:
        set_rng_state(self._state)
