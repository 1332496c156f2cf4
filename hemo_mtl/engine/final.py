"""The end of a training run: the model to score, model_final.pth, and the final evaluation's files.

``model_final.pth`` is what the predictor and the exporters read: ``model`` (the weights to predict with,
the EMA weights when EMA is on), ``config`` (the resolved config), ``cascade`` (the gate's state, {}
without a gate) and ``calibration`` (the temperature record, {} when none was fitted).
The final evaluation writes final_metrics.json, one ``split`` line in metrics.json, the final split's
tensorboard scalars and panels, report/ and report.md at the top of the output folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from torch import nn

from ..atomic import atomic_write_json, atomic_write_text
from ..models.gating import CascadeGate
from .checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from .hooks import append_metrics_line
from .run_dir import warn_config_differs
from .run_eval import FinalScore

SUMMARY_KEYS = ("cls/any/f1", "seg/any/dice", "det/bbox/AP50", "det/segm/AP50", "cascade/gate/skipped_fraction")


@dataclass
class ModelToScore:
    """What the final evaluation scores: the model, its cascade gate, its temperatures (None: fit on val
    when the config asks for it)."""
    model: nn.Module
    gate: CascadeGate | None
    temperature: list[float] | None = None


def trained_model(trainer, schedule) -> ModelToScore:
    """After training: the evaluation weights and the gate last chosen on validation (else the schedule's)."""
    gate = CascadeGate.from_state(trainer.extra_state.get("cascade_gate")) or schedule.gate
    return ModelToScore(trainer.eval_model(), gate)


def saved_model(model: nn.Module, schedule, cfg: Mapping, weights: str, device) -> ModelToScore:
    """``model`` with the weights of ``weights`` (model_final.pth or a training checkpoint), for --eval-only.

    The config's gate settings win over the checkpoint's: its fixed threshold, or a new target
    sensitivity, which chooses the threshold on validation again. Temperatures come from the checkpoint.
    """
    from ..evaluation.calibration import checkpoint_temperature

    state = load_checkpoint(weights, map_location=device)
    load_model_weights(model, state.get("model") or {}, weights)
    warn_config_differs(cfg, state.get("config"), weights, ignore=("output_dir", "train.", "eval."))
    gate = schedule.gate.with_saved(state.get("cascade")) if schedule.gate is not None else None
    return ModelToScore(model, gate, checkpoint_temperature(state))


def final_model_state(model: nn.Module, cfg: Mapping, gate: CascadeGate | None,
                      temperature: Sequence[float] | None) -> dict:
    """The contents of model_final.pth (module docstring)."""
    from ..evaluation.calibration import temperature_record

    return {"model": model.state_dict(), "config": cfg, "cascade": gate.state_dict() if gate else {},
            "calibration": temperature_record(temperature) if temperature else {}}


def save_final_model(path: Path, model: nn.Module, cfg: Mapping, gate: CascadeGate | None,
                     temperature: Sequence[float] | None) -> Path:
    """Write model_final.pth atomically."""
    return save_checkpoint(path, final_model_state(model, cfg, gate, temperature))


def backbone_init(cfg: Mapping) -> str:
    """How the backbone started: ``imagenet:<local weights file>`` or ``random``."""
    weights = cfg["model"].get("backbone", {}).get("weights")
    return f"imagenet:{Path(weights).name}" if weights else "random"


def final_metrics(metrics: Mapping, cfg: Mapping, splits: Mapping, extra_state: Mapping) -> dict:
    """The final split's metrics with what a results table needs beside them: the backbone's
    initialisation, the fold, and the epoch selection's select/* summary."""
    final = dict(metrics)
    final["init"] = backbone_init(cfg)
    if "fold" in splits:
        final["fold"] = int(splits["fold"])
    final.update(extra_state.get("selection") or {})
    return final


def write_final_outputs(out: Path, final: Mapping, score: FinalScore, cfg: Mapping, datasets: Mapping, *,
                        epoch: int, step: int, weights: str | None = None) -> None:
    """final_metrics.json, the final line of metrics.json, tensorboard and the report. An evaluation of
    given ``weights`` is alone in its folder: a rerun replaces its metrics.json, never appends."""
    split = cfg["eval"]["final_split"]
    atomic_write_json(out / "final_metrics.json", dict(final))
    record = {"epoch": epoch, "iter": step, "split": split, **final}
    if weights is not None:
        (out / "metrics.json").unlink(missing_ok=True)
        record["weights"] = str(weights)
    append_metrics_line(out / "metrics.json", record)
    write_final_logs(out, final, score.result.panels, step, split)
    write_run_report(out, final, cfg, score.gate, datasets, score.details)


def write_final_logs(out: Path, metrics: Mapping, panels, step: int, split: str = "test") -> None:
    """The final split's finite scalars and image panels as tensorboard events, under ``<split>/``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out)) as writer:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value == value:
                writer.add_scalar(f"{split}/{key}", value, step)
        for i, panel in enumerate(panels):
            writer.add_image(f"{split}/panel_{i}", panel, step)


def report_notes(metrics: Mapping, cfg: Mapping, gate: CascadeGate | None, datasets: Mapping,
                 details: Mapping | None = None) -> list[str]:
    """The report's notes on how the figures came about: config, split size, initialisation, epoch
    selection, the cascade gate's cost, fitted temperatures."""
    from ..categories import LABELS

    split = cfg["eval"]["final_split"]
    notes = [
        f"config: {cfg['output_dir']}/config.yaml (schedule {cfg['schedule']['name']}, backbone "
        f"{cfg['model'].get('backbone', {}).get('name')}, image_size {cfg['data']['image_size']})",
        f"{split} split: {len(datasets[split])} slices of {len(set(datasets[split].patient_ids))} patients",
        f"backbone initialisation: {metrics.get('init', 'random')}",
    ]
    if "select/epochs" in metrics:
        sel = cfg["eval"]["select"]
        notes.append(f"select/* = mean over the {sel['k']} epochs with the lowest validation loss after epoch "
                     f"{sel['after_epoch']} (rule {sel['rule']}): epochs {metrics['select/epochs']}; per-epoch "
                     f"records in epochs.json")
    if gate:
        notes.append(
            f"cascade: {gate.describe()}. On {split}: "
            f"{metrics.get('cascade/gate/skipped_fraction', float('nan')):.3f} "
            f"of slices skipped, slice sensitivity lost to gating {metrics.get('cascade/gate/sensitivity_lost', float('nan')):.3f}, "
            f"lesions on gated-off slices {metrics.get('cascade/gate/lesions_lost', float('nan')):.3f}."
        )
    if (details or {}).get("cls", {}).get("temperature") is not None:
        t = details["cls"]["temperature"]
        notes.append("temperature scaling (fitted on the validation split, carried in model_final.pth and applied "
                     "by tools/predict.py): T = " + ", ".join(f"{l} {v:.3f}" for l, v in zip(LABELS, t)))
    return notes


def write_run_report(out: Path, metrics: Mapping, cfg: Mapping, gate: CascadeGate | None, datasets: Mapping,
                     details: Mapping | None = None) -> None:
    """report/ (metrics.json, report.md, plots from the evaluation package) + report.md at the top."""
    from ..evaluation import CONVENTIONS, write_report

    conventions = [c for task in ("cls", "seg", "det") for c in CONVENTIONS.get(task, ())]
    paths = write_report(out / "report", metrics, details=details, conventions=conventions,
                         notes=report_notes(metrics, cfg, gate, datasets, details),
                         title=f"hemo-mtl {cfg['eval']['final_split']} report: {Path(cfg['output_dir']).name}")
    text = Path(paths["report"]).read_text(encoding="utf-8")
    for key, p in paths.items():
        if key not in ("metrics", "report"):
            text = text.replace(f"]({Path(p).name})", f"](report/{Path(p).name})")
    atomic_write_text(out / "report.md", text)


def summary_line(metrics: Mapping, seconds: float, split: str = "test") -> str:
    """One line for the console: the headline metric of each task and the run's minutes."""
    parts = [f"{k}={metrics[k]:.4f}" for k in SUMMARY_KEYS if isinstance(metrics.get(k), (int, float))]
    return f"{split}: {' '.join(parts)} ({seconds / 60:.1f} min)"
