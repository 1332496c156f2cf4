"""How a training run scores its model: the config's tasks and protocol (sliding windows, flip TTA, the
cascade gate), the evaluators, the hooks that evaluate during training, and the final evaluation.

The final evaluation follows the protocol the predictor applies: a cascade gate without a fixed
threshold is chosen on the validation split, temperatures (``eval.temperature_scaling``) are fitted on
it, and only then is ``eval.final_split`` scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from ..config import ConfigError
from ..evaluation.loop import InferenceResult, evaluate
from ..models.gating import CascadeGate
from ..models.multitask import unwrap
from ..models.seg_vote import p_any_heads
from .hooks import CheckpointHook, EpochRecordHook, EvalHook, LRScheduleHook, ProgressHook, TensorboardHook

FINAL_SPLITS = ("val", "test")


def check_eval_settings(cfg: Mapping) -> None:
    """Refuse eval settings a run cannot carry out, before anything is written."""
    final_split = cfg["eval"]["final_split"]
    if final_split not in FINAL_SPLITS:
        raise ConfigError(f"eval.final_split must be val or test, got {final_split!r}")
    select, epochs = cfg["eval"].get("select") or {}, int(cfg["train"]["epochs"])
    if select.get("rule") and epochs < int(select["after_epoch"]) + int(select["k"]):
        raise ConfigError(f"eval.select needs train.epochs >= after_epoch + k = {int(select['after_epoch']) + int(select['k'])}"
                          f", got {epochs} (lower eval.select.k / eval.select.after_epoch for short runs)")


def sliding_window(cfg: Mapping) -> dict:
    """``eval.sliding_window`` when it is on (a size), else {}."""
    window = cfg["eval"].get("sliding_window") or {}
    return dict(window) if int(window.get("size") or 0) else {}


def eval_tasks(cfg: Mapping, heads: Iterable[str]) -> list[str]:
    """The ``eval.tasks`` the model can be scored on. Sliding windows over a seg head derive slice labels
    from the cleaned mask, so cls is scored without a cls head."""
    heads = set(heads)
    derived = {"cls"} if sliding_window(cfg) and "seg" in heads else set()
    return [t for t in cfg["eval"]["tasks"] if t in heads or t in derived]


@dataclass
class FinalScore:
    """The final evaluation: its result, the gate and temperatures it used, the evaluator's details."""
    result: InferenceResult
    gate: CascadeGate | None
    temperature: list[float] | None
    details: dict | None


class RunEvaluation:
    """The run's evaluation protocol for one model's heads, with the trainer's numerics (AMP, channels-last)."""

    def __init__(self, cfg: Mapping, model: nn.Module, device: torch.device, *, amp: bool = False,
                 channels_last: bool = False):
        self.cfg, self.device = cfg, device
        self.heads = list(model.heads)
        self.tasks = eval_tasks(cfg, self.heads)
        self.location_classes = None
        if "location" in self.heads:
            self.location_classes = (cfg["data"].get("location_classes")
                                     or [str(i) for i in range(model.heads["location"].num_classes)])
        self.options = {"amp": amp, "channels_last": channels_last, "flip_tta": bool(cfg["eval"]["flip_tta"])}

    def evaluator(self, temperature: list[float] | None = None):
        """The multi-task evaluator of the run's tasks (and the location head's, when there is one)."""
        from ..evaluation import MultiTaskEvaluator

        evaluator = MultiTaskEvaluator(self.tasks, temperature=temperature,
                                       slice_context=int(self.cfg["eval"].get("slice_context") or 0),
                                       patient_window=int(self.cfg["eval"].get("patient_window") or 1))
        if self.location_classes is not None:
            from ..evaluation.location import CombinedEvaluator, LocationEvaluator

            evaluator = CombinedEvaluator([evaluator, LocationEvaluator(self.location_classes)])
        return evaluator

    def protocol_model(self, model: nn.Module) -> nn.Module:
        """The model as the protocol predicts full slices (overlap-averaged windows + morphology)."""
        window = sliding_window(self.cfg)
        if not window:
            return model
        from ..inference.window_eval import SlidingWindowModel

        return SlidingWindowModel(model, int(window["size"]), int(window.get("stride") or window["size"]),
                                  int(window.get("closing") or 0), int(window.get("opening") or 0),
                                  batch_size=int(self.cfg["eval"].get("batch_size") or self.cfg["data"]["batch_size"]))

    def run(self, model: nn.Module, loader, heads: Iterable[str], gate: CascadeGate | None, *, panels: int = 0,
            evaluator=None) -> InferenceResult:
        """Score ``heads`` on ``loader``; a gate without a threshold is chosen on this split first."""
        return evaluate(self.protocol_model(model), loader, evaluator or self.evaluator(), self.device,
                        heads=heads, gate=gate, panels=panels, **self.options)

    def fit_temperature(self, model: nn.Module, loader) -> list[float] | None:
        """Per-label temperatures fitted on ``loader``'s slice probabilities (a pass of the heads p(any) is
        made of: the classifier, and the segmenter when it votes)."""
        from ..evaluation import MultiTaskEvaluator
        from ..evaluation.calibration import fit_temperature

        evaluator = MultiTaskEvaluator(["cls"])
        self.run(model, loader, p_any_heads(unwrap(model)), None, evaluator=evaluator)
        d = evaluator.details.get("cls")
        return None if d is None else fit_temperature(d["y_true"], d["y_prob"], d["valid"])

    def final(self, model: nn.Module, gate: CascadeGate | None, temperature: list[float] | None, val_loader,
              final_loader) -> FinalScore:
        """Choose what validation decides (an open gate threshold, temperatures on request), then score
        the final split with them."""
        heads = set(self.heads)
        if gate is not None and gate.threshold is None:
            gate = self.run(model, val_loader, heads, gate).gate
        if temperature is None and self.cfg["eval"].get("temperature_scaling") and "cls" in heads:
            temperature = self.fit_temperature(model, val_loader)
        evaluator = self.evaluator(temperature)
        result = self.run(model, final_loader, heads, gate, panels=int(self.cfg["eval"]["image_panels"]),
                          evaluator=evaluator)
        return FinalScore(result, result.gate, temperature, getattr(evaluator, "details", None))


def validate(trainer, evaluation: RunEvaluation, schedule, loader) -> dict:
    """EvalHook's evaluation: the heads trained so far on validation; the chosen gate is kept for
    model_final.pth and the image panels go to tensorboard."""
    result = evaluation.run(trainer.eval_model(), loader, schedule.heads_trained_by(trainer.stage_index or 0),
                            schedule.gate, panels=int(evaluation.cfg["eval"]["image_panels"]))
    if result.gate is not None:
        trainer.extra_state["cascade_gate"] = result.gate.state_dict()
    for i, panel in enumerate(result.panels):
        trainer.storage.put_image(f"val/panel_{i}", panel)
    return result.metrics


def training_hooks(cfg: Mapping, out: Path, evaluation: RunEvaluation, schedule, val_loader, final_loader) -> list:
    """The hooks of a training run: LR schedule, periodic validation, checkpoints, tensorboard, progress,
    and with ``eval.select`` the per-epoch records the reported epochs are selected from."""
    tcfg = cfg["train"]
    hooks = [
        LRScheduleHook(),
        EvalHook(int(tcfg["eval_period"]), partial(validate, evaluation=evaluation, schedule=schedule,
                                                   loader=val_loader), out / "metrics.json"),
        CheckpointHook(int(tcfg["checkpoint_period"]), int(tcfg["checkpoint_keep"])),
        TensorboardHook(out, int(tcfg["log_period"])),
        ProgressHook(bool(tcfg["progress"])),
    ]
    select = cfg["eval"].get("select") or {}
    if select.get("rule"):  # record val loss + reporting-split metrics per epoch, select at the end
        from ..evaluation.epoch_selection import select_epochs
        from .validation_loss import validation_loss

        hooks.append(EpochRecordHook(
            val_loss=lambda t: validation_loss(t.eval_model(), val_loader, evaluation.device),
            metrics=lambda t: evaluation.run(t.eval_model(), final_loader, set(evaluation.heads), schedule.gate).metrics,
            path=out / "epochs.json",
            select=partial(select_epochs, rule=select["rule"], k=int(select["k"]), after_epoch=int(select["after_epoch"])),
        ))
    return hooks
