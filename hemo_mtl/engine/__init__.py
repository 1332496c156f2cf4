"""Training engine: the loop, its hooks, schedules, checkpoints and DDP helpers."""
from .checkpoint import (latest_checkpoint, load_checkpoint, preserved_rng, rng_state, save_checkpoint,
                         set_rng_state)
from .data import build_datasets, eval_loader, prepare_data_dir
from .distributed import DistInfo, PatientGroupedSampler, init_distributed, resolve_device
from .events import EventStorage
from .hooks import CheckpointHook, EvalHook, LRScheduleHook, ProgressHook, TensorboardHook
from .inference import evaluate, run_inference
from .lr_schedule import WarmupLRScheduler, lr_factor
from ..models.gating import gate_outputs
from .schedules import (Schedule, Stage, build_schedule, choose_gate_threshold, gate_summary,
                        task_of_loss)
from .trainer import HookBase, NonFiniteLossError, Trainer, seed_everything, set_active_heads

__all__ = [
    "build_datasets", "eval_loader", "prepare_data_dir",
    "CheckpointHook", "DistInfo", "EvalHook", "EventStorage", "HookBase", "LRScheduleHook", "NonFiniteLossError",
    "PatientGroupedSampler", "ProgressHook", "Schedule", "Stage", "TensorboardHook", "Trainer",
    "WarmupLRScheduler", "build_schedule", "choose_gate_threshold", "evaluate", "gate_outputs", "gate_summary",
    "init_distributed", "latest_checkpoint", "load_checkpoint", "lr_factor", "preserved_rng", "resolve_device",
    "rng_state", "run_inference", "save_checkpoint", "seed_everything", "set_active_heads", "set_rng_state",
    "task_of_loss",
]
