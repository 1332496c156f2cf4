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
_SHOWN = 3  # differing keys named in a message: enough to see the cause, short enough to read


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit the config; the message names the file."""


def _why_unreadable(exc: Exception) -> str:
    """torch.load's failure as a short reason, without its advice to retry with weights_only=False
    (a checkpoint that needs it can run arbitrary code: it is refused, never retried)."""
    text = str(exc)
    if "zip archive" in text or "central directory" in text or isinstance(exc, EOFError):
        return "truncated or corrupted (not a complete torch archive)"
    refused = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if refused:
        return (f"it holds a Python object ({refused.group(1)}), refused by the weights-only load; a "
                f"checkpoint holds only tensors and plain data")
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\n", text)
    if unpickler or "Weights only load failed" in text:
        detail = f": {unpickler.group(1).strip()}" if unpickler else ""
        return f"not a torch checkpoint (unreadable data{detail})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


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
    """The checkpoint dict at ``path`` (``weights_only=True``); CheckpointError in one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise CheckpointError(f"cannot load checkpoint {path}: {_why_unreadable(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot load checkpoint {path}: it holds a {type(state).__name__}, not a checkpoint dict")
    return state


def newest_intact_checkpoint(output_dir: str | Path, map_location: str | torch.device = "cpu",
                             ) -> tuple[Path, dict, list[str]] | None:
    """(path, state, skipped) of the newest periodic checkpoint that loads; ``skipped`` says why each
    newer one was passed over (a run killed while the disk was full, a file cut short in a copy).
    None when there is no checkpoint; CheckpointError when none of them loads."""
    found = list_checkpoints(Path(output_dir) / CHECKPOINT_DIR)
    skipped: list[str] = []
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, map_location), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {Path(output_dir) / CHECKPOINT_DIR}: {skipped[0]}"
                              + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""))
    return None


def _listed(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def weights_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """What differs between a model's state dict and a checkpoint's (first few keys of each kind),
    or None when every key and shape matches."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(v)} {what} ({_listed(v)})" for v, what in
             ((missing, "missing"), (unexpected, "unexpected"), (shapes, "with another shape (checkpoint vs model)"))
             if v]
    return "; ".join(parts) or None


def load_model_weights(model: torch.nn.Module, weights: Mapping[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(weights)``, or CheckpointError naming the first differing keys."""
    problem = weights_mismatch(model.state_dict(), weights)
    if problem:
        raise CheckpointError(f"{path}: weights do not fit the model of this config: {problem}; was it "
                              f"trained with another model config?")
    model.load_state_dict(weights)


def config_differences(current: Any, saved: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (``a.b: old -> new``), in config order."""
    if isinstance(current, Mapping) and isinstance(saved, Mapping):
        out: list[str] = []
        for key in list(current) + [k for k in saved if k not in current]:
            dotted = f"{prefix}{key}"
            if key not in saved or key not in current:
                out.append(f"{dotted} ({'new' if key not in saved else 'gone'})")
            else:
                out += config_differences(current[key], saved[key], dotted + ".")
        return out
    return [] if current == saved else [f"{prefix.rstrip('.')}: {_short(saved)} -> {_short(current)}"]


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def describe_differences(diffs: list[str]) -> str:
    return _listed(diffs)


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
