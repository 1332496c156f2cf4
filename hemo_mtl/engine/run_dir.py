"""A training run's directory (``output_dir``): which folder a run writes, refusing a used one, replacing
it, resuming from its checkpoints.

A run directory that already holds a run is refused unless ``resume`` continues it or ``overwrite``
replaces it; an evaluation of given weights (``--eval-only``) writes into its own sub-folder and leaves
the run's files alone.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Mapping

from torch import nn

from ..atomic import atomic_write_json, atomic_write_text
from ..config import ConfigError, save_config
from ..paths import safe_component
from .checkpoint import (CHECKPOINT_DIR, CheckpointError, config_differences, describe_differences,
                         list_checkpoints, load_checkpoint, load_model_weights, newest_intact_checkpoint)
from .distributed import DistInfo, barrier

# what a training run writes into its output_dir (data/ and phantom/ are the generated dataset, kept and reused)
RUN_FILES = ("config.yaml", "splits.json", "model_final.pth", "metrics.json", "final_metrics.json",
             "report.md", "epochs.json", "events.out.tfevents.*")
RUN_DIRS = (CHECKPOINT_DIR, "report", "eval")


def eval_dir(run_dir: Path, weights: str | None, split: str) -> Path:
    """Where --eval-only writes: its own folder per weights file and split, inside the run dir."""
    if not weights:
        raise ConfigError("--eval-only needs --weights PATH")
    name = Path(weights).name
    stem = name[: -len(".pth")] if name.endswith(".pth") else name
    return run_dir / "eval" / f"{safe_component(stem, 'weights')}-{split}"


def used_run_files(run_dir: Path) -> list[str]:
    """The files of an earlier run in ``run_dir`` (final weights, checkpoints, metrics)."""
    used = [n for n in ("model_final.pth", "metrics.json", "final_metrics.json") if (run_dir / n).is_file()]
    if list_checkpoints(run_dir / CHECKPOINT_DIR):
        used.append(f"{CHECKPOINT_DIR}/")
    return used


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a run dir that holds another run, unless told to continue or replace it:
    training over it would mix metrics.json and leave old weights for a later --resume."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in output_dir and --overwrite replaces it: give one")
    used = used_run_files(run_dir)
    if used and not (resume or overwrite):
        raise ConfigError(f"output_dir {run_dir} already holds a run ({', '.join(used)}): pass --resume to "
                          f"continue it, --overwrite to replace it, or set another output_dir=DIR")


def clear_run_dir(run_dir: Path) -> None:
    """Delete the files a run wrote (RUN_FILES, RUN_DIRS); the generated data/ and anything else stay."""
    if not run_dir.is_dir():
        return
    for pattern in RUN_FILES:
        for p in run_dir.glob(pattern):
            p.unlink()
    for name in RUN_DIRS:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)


def open_run_dir(cfg: Mapping, dist: DistInfo, *, resume: bool = False, overwrite: bool = False,
                 eval_only: bool = False, weights: str | None = None) -> Path:
    """The folder this run writes (the run dir, or for ``eval_only`` the sub-folder of ``weights``), checked,
    cleared on ``overwrite`` and holding the resolved config.yaml; every rank returns once it exists."""
    run_dir = Path(cfg["output_dir"])
    if eval_only:
        out = eval_dir(run_dir, weights, cfg["eval"]["final_split"])
    else:
        out = run_dir
        check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if dist.is_main:
        if overwrite and not eval_only:
            clear_run_dir(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier()
    return out


def write_run_splits(cfg: Mapping, data_dir: Path, splits: Mapping, out: Path) -> None:
    """The run's splits.json: this fold's train/val with the fold lists, or the data folder's own file."""
    if cfg["data"]["split"].get("folds"):
        atomic_write_json(out / "splits.json", splits)
    elif (data_dir / "splits.json").resolve() != (out / "splits.json").resolve():
        shutil.copyfile(data_dir / "splits.json", out / "splits.json")


def resume_state(run_dir: Path, resume: str, device) -> tuple[Path, dict]:
    """(path, state) to resume from: the given checkpoint, or the newest intact one in the run dir
    (a newer one that is cut short is skipped, and said so)."""
    if resume != "latest":
        return Path(resume), load_checkpoint(resume, map_location=device)
    found = newest_intact_checkpoint(run_dir, map_location=device)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {run_dir / CHECKPOINT_DIR}")
    path, state, skipped = found
    for reason in skipped:
        print(f"warning: skipped {reason}; resuming from the newest intact checkpoint {path.name}", file=sys.stderr)
    return path, state


def resume_training(trainer, model: nn.Module, out: Path, resume: str, device, cfg: Mapping) -> None:
    """Load the checkpoint ``resume`` names (or the newest intact one) into ``model`` and ``trainer``;
    metrics.json keeps only the epochs the checkpoint covers."""
    path, state = resume_state(out, resume, device)
    load_model_weights(model, state.get("model") or {}, path)  # one line naming keys if it does not fit
    warn_config_differs(cfg, state.get("config"), path, ignore=("output_dir",))
    trainer.load_state_dict(state)
    if trainer.dist.is_main:
        trim_metrics(out / "metrics.json", trainer.start_epoch)
    print(f"resumed from {path} at epoch {trainer.start_epoch}", file=sys.stderr)


def warn_config_differs(cfg: Mapping, saved: Mapping | None, path, ignore: tuple[str, ...] = ()) -> None:
    """Say which keys of the config differ from the one the checkpoint was trained with (a warning,
    not a refusal: more epochs or another eval setting are ordinary reasons to differ)."""
    if not isinstance(saved, Mapping):
        return
    diffs = [d for d in config_differences(dict(cfg), dict(saved)) if not d.startswith(ignore)]
    if diffs:
        print(f"warning: the config differs from {path}'s in {len(diffs)} key(s): {describe_differences(diffs)}",
              file=sys.stderr)


def trim_metrics(path: Path, epoch: int) -> None:
    """Keep only metrics.json lines of the epochs a resumed run keeps (evaluations after the
    checkpoint and the last final-split line are written again)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("split") == "val" and int(json.loads(line).get("epoch", 0)) <= epoch]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
