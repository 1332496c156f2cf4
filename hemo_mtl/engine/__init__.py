"""Training engine: the loop, its hooks, schedules, checkpoints and DDP helpers.

The evaluation loop the engine calls lives with evaluation (``hemo_mtl.evaluation.loop``), the cascade
gate with the model (``hemo_mtl.models.gating.CascadeGate``).
"""
from .checkpoint import (latest_checkpoint, load_checkpoint, preserved_rng, rng_state, save_checkpoint,
                         set_rng_state)
from .data import build_datasets, eval_loader, prepare_data_dir
from .distributed import DistInfo, PatientGroupedSampler, init_distributed, resolve_device
from .events import EventStorage
from .hooks import CheckpointHook, EvalHook, LRScheduleHook, ProgressHook, TensorboardHook
from .lr_schedule import WarmupLRScheduler, lr_factor
from .schedules import Schedule, Stage, build_schedule, task_of_loss
from .trainer import HookBase, NonFiniteLossError, Trainer, seed_everything

__all__ = [
    "build_datasets", "eval_loader", "prepare_data_dir",
    "CheckpointHook", "DistInfo", "EvalHook", "EventStorage", "HookBase", "LRScheduleHook", "NonFiniteLossError",
    "PatientGroupedSampler", "ProgressHook", "Schedule", "Stage", "TensorboardHook", "Trainer",
    "WarmupLRScheduler", "build_schedule", "init_distributed", "latest_checkpoint", "load_checkpoint", "lr_factor",
    "preserved_rng", "resolve_device", "rng_state", "save_checkpoint", "seed_everything", "set_rng_state",
    "task_of_loss",
]
