"""Training schedules: which heads train, on which slices, with which weights, epoch by epoch.

A schedule is a list of stages (``Stage``); the trainer asks it which stage an epoch belongs to and
applies that stage: active heads (``model.set_active_heads``), loss multipliers, frozen parameter
prefixes, and the training slices (those that have the stage's label depth, positives plus a seeded
share of negatives). Registered in ``hemo_mtl.registry.SCHEDULES``:

- ``joint``: one stage, every head every step, the configured loss balancing (``schedule.joint`` may
  thin the negative slices or repeat rare subtypes, as a stage does).
- ``curriculum``: the configured stages (default: slice labels -> boxes -> masks, by label depth).
- ``cascade``: the classifier first, then det/seg on positives plus ``neg_fraction`` of the negative
  slices; at evaluation the classifier's ``any`` probability gates det/seg with a threshold chosen on
  the validation split for a target sensitivity, and gated-off slices get empty predictions.

A stage's ``repeat_threshold`` repeats the slices of rare subtypes within its selection (repeat-factor
sampling, ``hemo_mtl.data.sampling.repeat_factors``), redrawn each epoch.

A stage's ``hard_negatives`` takes that share of its kept negatives hardest-first: the normal slices
the current classifier scores highest for ``any`` (the trainer scores them at each epoch's start), the
rest at random as before. In a cascade these are the normal slices that pass the gate at inference, so
the localizers learn the mimics they will be shown (Viola-Jones' bootstrapping of a cascade stage on the
false positives of the stages before it; OHEM for detectors), not only random normal anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..categories import SUBTYPES
from ..config import STAGE
from ..config_schema import ConfigError, check, fill
from ..data.sampling import repeat_counts, repeat_factors
from ..models.gating import CascadeGate
from ..registry import SCHEDULES

HEAD_NAMES = ("cls", "seg", "det")
LABEL_DEPTHS = {"cls": "has_cls", "boxes": "has_boxes", "mask": "has_mask"}


def task_of_loss(name: str) -> str:
    """The head a loss belongs to: loss_cls -> cls, loss_seg* -> seg, loss_location -> location,
    RPN/RoI/mask/YOLO losses -> det."""
    key = name.removeprefix("loss_")
    if key.startswith("cls"):
        return "cls"
    if key.startswith("location"):
        return "location"
    if key.startswith(("seg", "dice")):
        return "seg"
    if key.startswith(("consistency", "aux")):
        return "aux"
    return "det"


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    heads: frozenset[str]
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    freeze: tuple[str, ...] = ()
    labels: str | None = None
    neg_fraction: float | None = None
    repeat_threshold: float | None = None
    hard_negatives: float | None = None

    def loss_weight(self, loss_name: str) -> float:
        """Multiplier of a raw loss: by its full name first, then by its task; 1 when not named."""
        if loss_name in self.loss_weights:
            return float(self.loss_weights[loss_name])
        return float(self.loss_weights.get(task_of_loss(loss_name), 1.0))

    def is_frozen(self, param_name: str) -> bool:
        return any(param_name == p or param_name.startswith(p + ".") for p in self.freeze)


@dataclass
class Schedule:
    name: str
    stages: list[Stage]
    gate: CascadeGate | None = None  # cascade only

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_index(self, epoch: int) -> int:
        """Stage of 0-based ``epoch`` (epochs past the end belong to the last stage)."""
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch < end:
                return i
        return len(self.stages) - 1

    def stage_start_epoch(self, index: int) -> int:
        return sum(s.epochs for s in self.stages[:index])

    def heads_trained_by(self, index: int) -> set[str]:
        """Heads that have trained in stages 0..index: the ones worth evaluating."""
        return set().union(*(s.heads for s in self.stages[: index + 1]))

    def select_indices(self, stage: Stage, has_table: pd.DataFrame, epoch: int, seed: int,
                       score_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dataset indices a stage trains on this epoch, and each one's importance weight.

        The weight undoes the selection's skew (1 / the share of negatives kept, 1 / a slice's repeat
        factor), so the classifier's loss, which uses it, still learns the data's share of bleeds while
        seg/det train on the enriched selection. ``score_fn(indices) -> p(any)`` ranks the negatives for
        ``stage.hard_negatives`` (required then). Raises when no slice is left."""
        keep = np.ones(len(has_table), dtype=bool)
        if stage.labels is not None:
            keep &= has_table[LABEL_DEPTHS[stage.labels]].fillna(False).astype(bool).to_numpy()
        idx = np.flatnonzero(keep)
        weight = np.ones(len(idx))
        if stage.neg_fraction is not None and stage.neg_fraction < 1:
            positive = (pd.to_numeric(has_table["any"], errors="coerce").fillna(0).to_numpy() > 0)[idx]
            neg = idx[~positive]
            rng = np.random.default_rng([seed, epoch, 7919])
            n_neg = int(round(stage.neg_fraction * len(neg)))
            hard = neg[:0]
            if stage.hard_negatives and n_neg:
                if score_fn is None:
                    raise ValueError(f"schedule stage {stage.name!r}: hard_negatives needs the classifier's scores")
                scores = np.asarray(score_fn(neg), dtype=np.float64)
                hard = neg[np.argsort(-scores, kind="stable")[:int(round(stage.hard_negatives * n_neg))]]
            rest = np.setdiff1d(neg, hard, assume_unique=True)
            drawn = rng.choice(rest, size=n_neg - len(hard), replace=False) if n_neg > len(hard) else neg[:0]
            idx = np.concatenate([idx[positive], hard, drawn])
            # Horvitz-Thompson: a hard negative is kept for sure (weight 1), a drawn one stands for the
            # len(rest) / len(drawn) it was drawn from; both sum to len(neg), so the classifier's loss
            # still estimates the full data's and is not taught that mimic-like slices are rarely bleeds
            weight = np.concatenate([np.ones(int(positive.sum()) + len(hard)),
                                     np.full(len(drawn), len(rest) / max(len(drawn), 1))])
            order = np.argsort(idx, kind="stable")
            idx, weight = idx[order], weight[order]
        if stage.repeat_threshold and len(idx):
            missing = [c for c in SUBTYPES if c not in has_table.columns]
            if missing:
                raise ConfigError(f"schedule stage {stage.name!r}: repeat_threshold needs the subtype columns "
                                  f"{missing} in the training set's has_table")
            presence = has_table[list(SUBTYPES)].apply(pd.to_numeric, errors="coerce").to_numpy()[idx]
            factors = repeat_factors(presence, stage.repeat_threshold)
            counts = repeat_counts(factors, np.random.default_rng([seed, epoch, 104729]))
            idx, weight = np.repeat(idx, counts), np.repeat(weight / factors, counts)
        if len(idx) == 0:
            raise ConfigError(
                f"schedule stage {stage.name!r}: no training slices left "
                f"(labels={stage.labels!r}, neg_fraction={stage.neg_fraction!r})"
            )
        return idx, weight


def build_schedule(schedule_cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> Schedule:
    """The schedule named by ``schedule_cfg["name"]`` for a model with ``model_heads``."""
    return SCHEDULES.build(schedule_cfg.get("name", "joint"), schedule_cfg, epochs, list(model_heads))


def _stage(spec: Mapping, index: int, model_heads: Sequence[str]) -> Stage:
    """A stage section (checked by the config's validator against ``STAGE``) as a ``Stage`` of this model."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"schedule.stages[{index}] must be a mapping, got {spec!r}")
    check(spec, STAGE, origin=f"schedule stage {spec.get('name') or index!r}", path=("schedule", "stages", str(index)))
    spec = fill(spec, STAGE)
    heads = frozenset(model_heads if spec["heads"] is None else spec["heads"])
    unknown = heads - set(model_heads)
    if unknown:
        raise ConfigError(
            f"schedule.stages[{index}] ({spec['name']}): heads {sorted(unknown)} are not in the model "
            f"(model heads: {sorted(model_heads)})"
        )
    labels, neg, hard = spec["labels"], spec["neg_fraction"], spec["hard_negatives"]
    if labels is not None and labels not in LABEL_DEPTHS:
        raise ConfigError(f"schedule.stages[{index}].labels must be one of {sorted(LABEL_DEPTHS)}, got {labels!r}")
    if hard and (neg is None or "cls" not in model_heads):
        raise ConfigError(f"schedule.stages[{index}].hard_negatives ranks the negatives that neg_fraction keeps by "
                          f"the classifier's p(any): it needs neg_fraction (got {neg}) and a cls head "
                          f"(model heads: {sorted(model_heads)})")
    return Stage(
        name=str(spec["name"] or f"stage{index}"),
        epochs=int(spec["epochs"]),
        heads=heads,
        loss_weights=dict(spec["loss_weights"]),
        freeze=tuple(spec["freeze"]),
        labels=labels,
        neg_fraction=neg,
        repeat_threshold=spec["repeat_threshold"],
        hard_negatives=hard or None,
    )


def stage_specs(cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> list[dict]:
    """The stage sections of a ``schedule:`` config: the one place where its shorthands become stages.

    ``schedule.stages`` is the one way to write a stage; without it each schedule has default stages:
    ``joint`` one stage of all ``train.epochs`` with the sampling keys of ``schedule.joint``,
    ``curriculum`` slice labels -> boxes -> masks (by label depth, ``train.epochs`` split evenly),
    ``cascade`` the classifier (``cls_epochs``, ``cls_neg_fraction``) then the localizers on the rest
    (``neg_fraction``, ``repeat_threshold``, ``hard_negatives`` of ``schedule.cascade``)."""
    name = cfg.get("name", "joint")
    written = [dict(s) if isinstance(s, Mapping) else s for s in cfg.get("stages") or []]
    if name == "joint":
        if written:
            raise ConfigError("schedule.stages is for curriculum and cascade; joint trains every head every epoch")
        return [{"name": "joint", "epochs": int(epochs), **dict(cfg.get("joint") or {})}]
    if written:
        return written
    if name == "curriculum":
        depth = [("cls", {"cls"}), ("boxes", {"cls", "det"}), ("mask", {"cls", "det", "seg"})]
        depth = [(lab, heads & set(model_heads)) for lab, heads in depth if heads & set(model_heads)]
        return [{"name": lab, "epochs": n, "heads": sorted(h), "labels": lab}
                for (lab, h), n in zip(depth, _split_epochs(int(epochs), len(depth)))]
    if name == "cascade":
        ccfg = dict(cfg.get("cascade") or {})
        gate_heads = _gate_heads(ccfg, model_heads)
        cls_epochs = ccfg.get("cls_epochs") or max(1, int(epochs) // 3)
        if int(epochs) - cls_epochs < 1:
            raise ConfigError(f"cascade: train.epochs={epochs} leaves no epochs after {cls_epochs} classifier epochs")
        return [
            {"name": "classifier", "epochs": cls_epochs, "heads": ["cls"], "labels": "cls",
             "neg_fraction": ccfg.get("cls_neg_fraction")},
            {"name": "localizers", "epochs": int(epochs) - cls_epochs, "heads": ["cls", *gate_heads],
             "labels": "boxes" if "det" in gate_heads else "mask",
             "neg_fraction": ccfg.get("neg_fraction", 0.25), "repeat_threshold": ccfg.get("repeat_threshold"),
             "hard_negatives": ccfg.get("hard_negatives")},
        ]
    return written


def _gate_heads(ccfg: Mapping, model_heads: Sequence[str]) -> list[str]:
    return [h for h in ccfg.get("gate", ["seg", "det"]) if h in model_heads]


def _split_epochs(epochs: int, parts: int) -> list[int]:
    base = [epochs // parts] * parts
    for i in range(epochs - sum(base)):
        base[-1 - i] += 1
    if min(base) < 1:
        raise ConfigError(f"train.epochs={epochs} is too few for {parts} stages")
    return base


def _stages(cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> list[Stage]:
    return [_stage(spec, i, model_heads) for i, spec in enumerate(stage_specs(cfg, epochs, model_heads))]


@SCHEDULES.register("joint")
def joint(cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> Schedule:
    return Schedule("joint", _stages(cfg, epochs, model_heads))


@SCHEDULES.register("curriculum")
def curriculum(cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> Schedule:
    return Schedule("curriculum", _stages(cfg, epochs, model_heads))


@SCHEDULES.register("cascade")
def cascade(cfg: Mapping, epochs: int, model_heads: Sequence[str]) -> Schedule:
    ccfg = dict(cfg.get("cascade") or {})
    if "cls" not in model_heads:
        raise ConfigError("schedule.name=cascade needs a classification head (model.heads.cls)")
    stages = _stages(cfg, epochs, model_heads)
    target = float(ccfg.get("target_sensitivity", 0.95))
    if not 0 < target <= 1:
        raise ConfigError(f"schedule.cascade.target_sensitivity must be in (0, 1], got {target}")
    threshold = ccfg.get("threshold")
    gate = CascadeGate(tuple(_gate_heads(ccfg, model_heads)), target, None if threshold is None else float(threshold))
    return Schedule("cascade", stages, gate=gate)
