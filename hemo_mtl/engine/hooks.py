"""Hooks around the training loop: lr schedule, evaluation, checkpoints, tensorboard, progress.

Each hook does one job at the boundaries it cares about (detectron2's HookBase shape). Side effects
that write files happen on the main rank only.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping

from ..atomic import atomic_write_text, json_safe
from .checkpoint import CHECKPOINT_DIR, checkpoint_name, preserved_rng, prune_checkpoints, save_checkpoint
from .distributed import barrier
from .trainer import HookBase

__all__ = ["HookBase", "LRScheduleHook", "EvalHook", "CheckpointHook", "TensorboardHook", "ProgressHook", "EpochRecordHook",
           "append_metrics_line"]


def _last_epoch(trainer) -> bool:
    return trainer.epoch + 1 >= trainer.max_epochs


class LRScheduleHook(HookBase):
    """Warmup + cosine/step lr, restarted at every stage, set before each step."""

    def before_step(self) -> None:
        t = self.trainer
        t.lr_scheduler.step(t.stage_progress(), t.stage_iter)


class EvalHook(HookBase):
    """Every ``period`` epochs (and after the last), run ``evaluate(trainer) -> metrics`` on the main rank.

    Metrics go to the event storage (for tensorboard), to ``metrics.json`` (one json line per
    evaluation) and to ``trainer.last_metrics``. The evaluation runs inside ``preserved_rng`` so it
    never changes the training random streams.
    """

    def __init__(self, period: int, evaluate: Callable, metrics_path: str | Path | None = None):
        self.period, self.evaluate = int(period), evaluate
        self.metrics_path = Path(metrics_path) if metrics_path else None

    def after_epoch(self) -> None:
        t = self.trainer
        due = _last_epoch(t) or (self.period > 0 and (t.epoch + 1) % self.period == 0)
        if not due:
            return
        if t.dist.is_main:
            with preserved_rng():
                metrics = dict(self.evaluate(t))
            t.last_metrics = metrics
            t.storage.put_metrics(metrics)
            if self.metrics_path is not None:
                append_metrics_line(self.metrics_path, {"epoch": t.epoch + 1, "iter": t.iter,
                                                        "stage": t.stage.name, "split": "val", **metrics})
        barrier()


class CheckpointHook(HookBase):
    """Write the full training state every ``period`` epochs and after the last; keep the newest ``keep``."""

    def __init__(self, period: int, keep: int = 3):
        self.period, self.keep = int(period), int(keep)

    def after_epoch(self) -> None:
        t = self.trainer
        due = _last_epoch(t) or (self.period > 0 and (t.epoch + 1) % self.period == 0)
        if not due or t.output_dir is None:
            return
        state = t.state_dict()  # on every rank: it gathers the ranks' random states
        if t.dist.is_main:
            directory = t.output_dir / CHECKPOINT_DIR
            save_checkpoint(directory / checkpoint_name(t.epoch + 1), state)
            prune_checkpoints(directory, self.keep)


class TensorboardHook(HookBase):
    """Scalars (add_scalar per tag: add_scalars would split them into sub-runs), metrics and panels."""

    def __init__(self, log_dir: str | Path, period: int = 20):
        self.log_dir, self.period = Path(log_dir), max(int(period), 1)
        self.writer = None

    def before_train(self) -> None:
        if self.trainer.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.trainer.iter or None)

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self.period == 0:
            self.write()

    def after_epoch(self) -> None:
        self.write()

    def after_train(self) -> None:
        self.write()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def write(self) -> None:
        if self.writer is None:
            return
        storage, step = self.trainer.storage, self.trainer.iter
        for tag, value in storage.smoothed().items():
            self.writer.add_scalar(tag, value, step)
        for tag, (value, _) in storage.latest().items():
            if tag in ("train/lr", "train/stage"):
                self.writer.add_scalar(tag, value, step)
        metrics, images = storage.pop_pending()
        for values, it in metrics:
            for tag, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(tag, value, it)
        for tag, image, it in images:
            self.writer.add_image(tag, image, it)
        self.writer.flush()


class ProgressHook(HookBase):
    """A tqdm bar per epoch with the loss, the stage and the ETA of the whole run."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self._t0 = None
        self._iters_done = 0

    def before_epoch(self) -> None:
        t = self.trainer
        if not (self.enabled and t.dist.is_main):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=t.epoch_iters, desc=f"epoch {t.epoch + 1}/{t.max_epochs} [{t.stage.name}]",
                        leave=False, dynamic_ncols=True)
        self._t0 = self._t0 or time.perf_counter()

    def after_step(self) -> None:
        if self.bar is None:
            return
        t = self.trainer
        self._iters_done += 1
        per_iter = (time.perf_counter() - self._t0) / self._iters_done
        remaining = (t.epoch_iters - t.inner_iter - 1) + (t.max_epochs - t.epoch - 1) * t.epoch_iters
        self.bar.set_postfix(loss=f"{t.storage.median('train/total_loss'):.4f}",
                             eta=time.strftime("%H:%M:%S", time.gmtime(per_iter * remaining)), refresh=False)
        self.bar.update(1)

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    after_train = after_epoch


def append_metrics_line(path: str | Path, record: Mapping) -> None:
    """Add one json line to ``metrics.json``, rewriting the file atomically."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    line = json.dumps(json_safe(dict(record)), allow_nan=False)
    atomic_write_text(path, old + line + "\n")


class EpochRecordHook(HookBase):
    """Every epoch: the validation loss and the reporting split's metrics, one json line each in
    ``epochs.json``; after the last epoch, ``select(records)`` (e.g. ``evaluation.select_epochs``)
    gives the summary stored in ``trainer.extra_state["selection"]``. Records live in
    ``trainer.extra_state`` too, so a resumed run selects over all its epochs."""

    def __init__(self, val_loss: Callable, metrics: Callable, path: str | Path, select: Callable | None = None):
        self.val_loss, self.metrics, self.select = val_loss, metrics, select
        self.path = Path(path)

    def after_epoch(self) -> None:
        t = self.trainer
        if t.dist.is_main:
            with preserved_rng():
                losses = dict(self.val_loss(t))
                metrics = dict(self.metrics(t))
            record = {"epoch": t.epoch + 1, "val_loss": losses.get("loss"),
                      "val_losses": losses, "metrics": metrics}
            t.extra_state.setdefault("epoch_records", []).append(record)
            t.storage.put_metrics({f"val/{k}": v for k, v in losses.items()})
            append_metrics_line(self.path, {"epoch": record["epoch"], "val_loss": record["val_loss"],
                                            **{f"val/{k}": v for k, v in losses.items()}, **metrics})
            if _last_epoch(t) and self.select is not None:
                t.extra_state["selection"] = self.select(t.extra_state["epoch_records"])
        barrier()
