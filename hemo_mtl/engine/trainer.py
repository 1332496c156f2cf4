"""The training loop: stages, steps, and hooks around them.

``run_step`` only sums the model's (stage- and balancer-weighted) loss dict and steps the optimizer;
everything else (lr, evaluation, checkpoints, tensorboard, progress) is a hook (``hooks.py``).
The trainer knows no head: it sees named losses, and asks the schedule which heads train, on which
slices, with which modules frozen.

Determinism: the sampler and the DataLoader generator are seeded by (seed, epoch, rank), dataloader
workers seed numpy/random from torch's per-worker seed, evaluation never touches the training random
streams, and checkpoints carry every random state. So on CPU, N epochs straight and N/2 + resume N/2
give identical weights.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.dataset import move_to_device
from ..data.views import DatasetView
from ..evaluation.loop import run_inference
from ..models.multitask import set_active_heads, unwrap
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .distributed import DistInfo, PatientGroupedSampler, all_gather_object, any_rank, get_dist_info
from .events import EventStorage
from .lr_schedule import WarmupLRScheduler
from .schedules import Schedule, Stage


def ramped_ema_fn(decay: float, tau: float) -> Callable:
    """EMA update for ``AveragedModel(multi_avg_fn=...)`` whose decay ramps up as in ultralytics' ModelEMA:
    ``decay * (1 - exp(-n / tau))`` at the n-th update (``tau <= 0``: a constant ``decay``).

    Why: a short run is a few hundred steps; with a constant 0.999 the averaged weights would still be
    45% the random init after 800 steps. Integer buffers (BatchNorm's batch counter) are copied."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"train.ema.decay must be in [0, 1), got {decay}")

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        d = decay * (1.0 - math.exp(-float(num_averaged) / tau)) if tau > 0 else decay
        if ema_params[0].is_floating_point():  # AveragedModel groups tensors by device and dtype
            torch._foreach_lerp_(ema_params, params, 1.0 - d)
        else:
            torch._foreach_copy_(ema_params, params)

    return update


class NonFiniteLossError(FloatingPointError):
    """A loss (or the gradient norm) became NaN/inf; the message names which, and where to resume."""


class HookBase:
    """Called by the trainer around training, epochs and steps; ``self.trainer`` is set on register."""

    trainer: "Trainer"

    def before_train(self) -> None: ...
    def after_train(self) -> None: ...
    def before_epoch(self) -> None: ...
    def after_epoch(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on request, deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace too: CUBLAS_WORKSPACE_CONFIG, set by hemo_mtl._env before its first use
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def worker_init(worker_id: int) -> None:
    """DataLoader workers: numpy/random seeded from torch's per-worker seed (itself seeded per epoch)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Epoch loop over a schedule's stages with AMP, accumulation, clipping, EMA, DDP and a NaN guard.

    ``train_cfg`` is the config's ``train`` section; ``balancer`` a callable ``losses -> (total,
    weights)`` (an ``nn.Module`` if it learns); ``model`` returns a dict of named losses in train mode.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        *,
        schedule: Schedule,
        train_cfg: Mapping,
        batch_size: int,
        collate_fn: Callable,
        seed: int = 0,
        num_workers: int = 0,
        balancer: Callable | None = None,
        pcgrad: Callable | None = None,
        device: torch.device | str = "cpu",
        output_dir: str | Path | None = None,
        config: Mapping | None = None,
        dist_info: DistInfo | None = None,
    ):
        self.cfg = dict(train_cfg)
        self.device = torch.device(device)
        self.dist = dist_info or get_dist_info()
        self.schedule, self.train_set, self.collate_fn = schedule, train_set, collate_fn
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.config = dict(config or {})
        self.max_epochs = schedule.total_epochs
        self.epoch, self.iter, self.stage_iter, self.start_epoch = 0, 0, 0, 0
        self.stage_index: int | None = None
        self.inner_iter, self.epoch_iters, self.epochs_done = 0, 0, 0
        self.storage = EventStorage(window=max(int(self.cfg.get("log_period", 20)), 1))
        self.hooks: list[HookBase] = []
        self.extra_state: dict[str, Any] = {}  # hooks keep resumable state here (e.g. the cascade gate)
        self.failed = False

        on_cuda = self.device.type == "cuda"
        self.amp = bool(self.cfg.get("amp", False)) and on_cuda
        self.channels_last = bool(self.cfg.get("channels_last", False)) and on_cuda
        self.accum_steps = max(int(self.cfg.get("accum_steps", 1)), 1)
        self.grad_clip = self.cfg.get("grad_clip")

        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.balancer = balancer
        if isinstance(balancer, nn.Module):
            balancer.to(self.device)
        self.pcgrad = pcgrad
        self.model: nn.Module = model
        if self.dist.enabled:  # wrap before any freezing: every parameter is registered with the reducer
            ids = [self.device.index] if on_cuda else None
            self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

        self._param_ids: set[int] = set()
        self.optimizer = self._build_optimizer()
        self.lr_scheduler = WarmupLRScheduler(self.optimizer, self.cfg.get("lr_schedule", {}))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        ema = self.cfg.get("ema") or {}
        self.ema = None
        if ema.get("enabled"):
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(unwrap(self.model), use_buffers=True,
                                     multi_avg_fn=ramped_ema_fn(float(ema["decay"]), float(ema["tau"])))
        self.train_loader: DataLoader | None = None

    # -- setup ---------------------------------------------------------------------------------------

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Hooks see the trainer through a weak proxy (as in detectron2): a trainer and its hooks owning
        each other would outlive their last use until the cycle collector runs, and a DDP wrapper torn
        down during interpreter shutdown aborts the process."""
        for h in hooks:
            if h is not None:
                h.trainer = weakref.proxy(self)
                self.hooks.append(h)

    @property
    def stage(self) -> Stage:
        return self.schedule.stages[self.stage_index or 0]

    def _build_optimizer(self) -> torch.optim.Optimizer:
        name = str(self.cfg.get("optimizer", "adamw")).lower()
        lr, wd = float(self.cfg.get("lr", 1e-3)), float(self.cfg.get("weight_decay", 0.0))
        first = self.schedule.stages[0]
        params = [p for n, p in unwrap(self.model).named_parameters() if not first.is_frozen(n)]
        if not params:
            raise ValueError(f"schedule stage {first.name!r} freezes every parameter of the model")
        self._param_ids = {id(p) for p in params}
        no_decay = self._balancer_param_ids()
        groups = [{"params": [p for p in params if id(p) not in no_decay], "name": f"stage:{first.name}"}]
        # The balancer's learnable task weights (log-variances) are never decayed: decay would pull every
        # task's weight towards exp(0) = 1, which is the balancing the balancer is there to replace.
        balancer = [p for p in params if id(p) in no_decay]
        known = {id(p) for p in unwrap(self.model).parameters()}
        if isinstance(self.balancer, nn.Module):  # a balancer outside the model
            balancer += [p for p in self.balancer.parameters() if id(p) not in known]
        if balancer:
            self._param_ids |= {id(p) for p in balancer}
            groups.append({"params": balancer, "weight_decay": 0.0, "name": "balancer"})
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
        if name == "adam":
            return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
        if name == "sgd":
            return torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=float(self.cfg.get("momentum", 0.9)))
        raise ValueError(f"train.optimizer must be adamw, adam or sgd, got {name!r}")

    def _balancer_param_ids(self) -> set[int]:
        """ids of the loss balancer's learnable parameters, wherever the balancer lives."""
        owners = [self.balancer, getattr(unwrap(self.model), "balancer", None)]
        return {id(p) for m in owners if isinstance(m, nn.Module) for p in m.parameters()}

    def _enter_stage(self, index: int) -> None:
        """Apply a stage: active heads, frozen prefixes, a param group for newly trained parameters."""
        stage = self.schedule.stages[index]
        set_active_heads(self.model, stage.heads)
        if self.ema is not None:
            set_active_heads(self.ema.module, stage.heads)
        new = []
        for name, p in unwrap(self.model).named_parameters():
            p.requires_grad_(not stage.is_frozen(name))
            if p.requires_grad and id(p) not in self._param_ids:
                new.append(p)
                self._param_ids.add(id(p))
        no_decay = self._balancer_param_ids()
        lr = float(self.cfg.get("lr", 1e-3))
        decayed = [p for p in new if id(p) not in no_decay]
        if decayed:
            self.optimizer.add_param_group({"params": decayed, "name": f"stage:{stage.name}", "lr": lr})
        if len(decayed) < len(new):
            self.optimizer.add_param_group({"params": [p for p in new if id(p) in no_decay], "lr": lr,
                                            "weight_decay": 0.0, "name": f"balancer:{stage.name}"})
        if self.stage_index != index:
            self.stage_index, self.stage_iter = index, 0

    def _train_mode(self) -> None:
        """train() everywhere except frozen modules, whose norm statistics stay fixed."""
        self.model.train()
        for name, module in unwrap(self.model).named_modules():
            if name and self.stage.is_frozen(name):
                module.eval()

    def build_train_loader(self, epoch: int) -> DataLoader:
        """This epoch's loader over the stage's slices, seeded by (seed, epoch, rank)."""
        stage = self.stage
        dataset, pids = self.train_set, list(getattr(self.train_set, "patient_ids", range(len(self.train_set))))
        if hasattr(self.train_set, "set_epoch"):  # per-epoch augmentation seeds (hard negatives are scored as seen)
            self.train_set.set_epoch(epoch)
        if stage.labels is not None or stage.neg_fraction is not None or stage.repeat_threshold:
            table = getattr(self.train_set, "has_table", None)
            if table is None:
                raise ValueError(f"stage {stage.name!r} filters slices but the dataset has no has_table")
            idx, weight = self.schedule.select_indices(stage, table, epoch, self.seed,
                                                       score_fn=self.classifier_scores if stage.hard_negatives else None)
            dataset, pids = DatasetView(self.train_set, idx, weight=weight), [pids[i] for i in idx]
        sampler = PatientGroupedSampler(pids, shuffle=True, seed=self.seed, rank=self.dist.rank,
                                        world_size=self.dist.world_size)
        sampler.set_epoch(epoch)
        seed = int(np.random.SeedSequence([self.seed, epoch, self.dist.rank]).generate_state(1)[0])
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=self.collate_fn, drop_last=len(sampler) > self.batch_size,
            worker_init_fn=worker_init, generator=torch.Generator().manual_seed(seed),
            pin_memory=self.device.type == "cuda",
        )

    def classifier_scores(self, indices: np.ndarray) -> np.ndarray:
        """The current classifier's p(any) on training slices ``indices``, as this epoch augments them:
        what ``Stage.hard_negatives`` ranks by. The evaluation's cls-only pass (``run_inference``, as the
        cascade gate's probe); the loader has its own generator, and the scores depend only on the
        weights at the epoch's start, which a checkpoint restores, so resuming stays exact. Every rank
        scores all of them and so picks the same slices."""
        loader = DataLoader(DatasetView(self.train_set, np.asarray(indices)), batch_size=4 * self.batch_size,
                            num_workers=self.num_workers, collate_fn=self.collate_fn,
                            generator=torch.Generator().manual_seed(0))
        model = unwrap(self.model)
        try:
            return run_inference(model, loader, None, self.device, heads={"cls"}, amp=self.amp,
                                 channels_last=self.channels_last).p_any
        finally:
            set_active_heads(model, self.stage.heads)

    # -- loop ----------------------------------------------------------------------------------------

    def train(self, until_epoch: int | None = None) -> None:
        """Run epochs ``start_epoch`` .. ``until_epoch`` (default: the schedule's end); hooks see every
        boundary. Stopping early keeps the full run's lr schedule, so a later resume continues it."""
        end = self.max_epochs if until_epoch is None else min(int(until_epoch), self.max_epochs)
        try:
            for h in self.hooks:
                h.before_train()
            for self.epoch in range(self.start_epoch, end):
                self._enter_stage(self.schedule.stage_index(self.epoch))
                self.train_loader = self.build_train_loader(self.epoch)
                self.epoch_iters = n_iters = len(self.train_loader)  # before the hooks: the progress bar's total
                if n_iters == 0:
                    raise ValueError(f"epoch {self.epoch}: the training loader is empty")
                self._train_mode()
                for h in self.hooks:
                    h.before_epoch()
                sums: dict[str, float] = {}
                t_data = time.perf_counter()
                for self.inner_iter, batch in enumerate(self.train_loader):
                    self.storage.iter = self.iter
                    self.storage.put_scalar("train/data_time", time.perf_counter() - t_data)
                    for h in self.hooks:
                        h.before_step()
                    t_step = time.perf_counter()
                    raw = self.run_step(batch, last_in_epoch=self.inner_iter == n_iters - 1)
                    self.storage.put_scalar("train/step_time", time.perf_counter() - t_step)
                    for k, v in raw.items():
                        sums[k] = sums.get(k, 0.0) + v
                    for h in self.hooks:
                        h.after_step()
                    self.iter += 1
                    self.stage_iter += 1
                    t_data = time.perf_counter()
                self.epochs_done = self.epoch + 1
                if hasattr(self.balancer, "update_epoch"):
                    self.balancer.update_epoch({k: v / n_iters for k, v in sums.items()})
                for h in self.hooks:
                    h.after_epoch()
            self.epoch = self.start_epoch = end
        except BaseException:
            self.failed = True
            raise
        finally:
            for h in self.hooks:
                h.after_train()

    def run_step(self, batch: Mapping, last_in_epoch: bool = False) -> dict[str, float]:
        """Forward, weighted sum of named losses, backward; an optimizer step every ``accum_steps``."""
        batch = move_to_device(batch, self.device, self.channels_last)
        boundary = (self.inner_iter + 1) % self.accum_steps == 0 or last_in_epoch
        sync = contextlib.nullcontext()
        if self.dist.enabled and not boundary:
            sync = self.model.no_sync()
        with sync:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                losses = self.model(batch)
            if not isinstance(losses, Mapping) or not losses:
                raise TypeError("in train mode the model must return a non-empty dict of named losses")
            losses = {k: v.float() for k, v in losses.items()}
            weighted = {k: v * self.stage.loss_weight(k) for k, v in losses.items()}
            if self.balancer is not None:
                total, weights = self.balancer(weighted)
            else:
                total, weights = sum(weighted.values()), {}
            self._guard(losses, total)
            if self.pcgrad is not None:
                scale = self.scaler.get_scale() if self.amp else 1.0
                # PCGrad projects task against task (Yu et al.), not loss term against loss term
                per_task = self.balancer.per_task(weighted) if hasattr(self.balancer, "per_task") else weighted
                self.pcgrad({k: v * (scale / self.accum_steps) for k, v in per_task.items()},
                            [p for p in self.model.parameters() if p.requires_grad])
            else:
                self.scaler.scale(total / self.accum_steps).backward()
        if boundary:
            self._optimizer_step()

        raw = {k: float(v.detach()) for k, v in losses.items()}
        self.storage.put_scalars({f"train/{k}": v for k, v in raw.items()})
        self.storage.put_scalars({f"train/weighted/{k}": float(v.detach()) for k, v in weighted.items()})
        self.storage.put_scalars({f"train/weight/{k}": float(w) for k, w in weights.items()})
        self.storage.put_scalar("train/total_loss", float(total.detach()))
        self.storage.put_scalar("train/lr", self.optimizer.param_groups[0]["lr"], smooth=False)
        self.storage.put_scalar("train/stage", float(self.stage_index or 0), smooth=False)
        return raw

    def _optimizer_step(self) -> None:
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip))
            self.storage.put_scalar("train/grad_norm", float(norm))
            if not self.amp and any_rank(not math.isfinite(float(norm)), self.device):
                self._fail("the gradient norm", float(norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(unwrap(self.model))

    def _guard(self, losses: Mapping[str, torch.Tensor], total: torch.Tensor) -> None:
        """Stop every rank together when any loss is NaN/inf, naming the loss and its task."""
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()] + [total.detach().float()])
        bad = ~torch.isfinite(values)
        if any_rank(bool(bad.any()), self.device):
            names = list(losses) + ["total (after balancing)"]
            if bad.any():
                i = int(bad.nonzero()[0])
                self._fail(names[i], float(values[i]))
            self._fail("a loss on another rank", float("nan"))

    def _fail(self, what: str, value: float) -> None:
        from .checkpoint import latest_checkpoint
        from .schedules import task_of_loss

        task = f" (task {task_of_loss(what)})" if what.startswith("loss_") else ""
        last = latest_checkpoint(self.output_dir) if self.output_dir is not None else None
        keep = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"{what}{task} is {value} at epoch {self.epoch} iteration {self.iter} (stage "
            f"{self.stage.name!r}); training stopped, {keep}. Lower train.lr, set train.grad_clip, or "
            f"check that task's labels."
        )

    def stage_progress(self) -> float:
        """Fraction of the current stage done at this step (what the lr schedule follows)."""
        start = self.schedule.stage_start_epoch(self.stage_index or 0)
        return (self.epoch - start + self.inner_iter / max(self.epoch_iters, 1)) / self.stage.epochs

    # -- state ---------------------------------------------------------------------------------------

    def eval_model(self) -> nn.Module:
        """The weights to evaluate and ship: the EMA copy when enabled, else the trained model."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def state_dict(self) -> dict:
        """Everything resume needs, as weights_only-loadable plain data (epoch = epochs completed).

        Under DDP this is a collective (every rank's random state is gathered): call it on all ranks.
        """
        rng = all_gather_object(rng_state())
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epochs_done,
            "iter": self.iter,
            "stage_index": self.stage_index or 0,
            "stage_iter": self.stage_iter,
            "rng": rng[0],
            "rng_per_rank": rng,  # each rank resumes its own augmentation / dropout streams
            "extra": dict(self.extra_state),
            "config": self.config,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if hasattr(self.balancer, "state_dict"):
            state["balancer"] = self.balancer.state_dict()  # also inside "model" when it is a submodule
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a ``state_dict()``: training continues exactly where it stopped."""
        unwrap(self.model).load_state_dict(state["model"])
        for i in range(int(state["stage_index"]) + 1):  # rebuild param groups in the order they were made
            self._enter_stage(i)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if "ema" not in state:
                raise KeyError("train.ema.enabled is true but the checkpoint holds no EMA weights")
            self.ema.load_state_dict(state["ema"])
        if "balancer" in state and hasattr(self.balancer, "load_state_dict") and not self._balancer_in_model():
            self.balancer.load_state_dict(state["balancer"])
        self.start_epoch = self.epoch = self.epochs_done = int(state["epoch"])
        self.iter, self.stage_iter = int(state["iter"]), int(state["stage_iter"])
        self.extra_state = dict(state.get("extra", {}))
        per_rank = state.get("rng_per_rank") or []
        same_world = len(per_rank) == self.dist.world_size
        set_rng_state(per_rank[self.dist.rank] if same_world else state["rng"])

    def _balancer_in_model(self) -> bool:
        return any(m is self.balancer for m in unwrap(self.model).modules())

    def resume(self, path: str | Path) -> None:
        self.load_state_dict(load_checkpoint(path, map_location=self.device))
