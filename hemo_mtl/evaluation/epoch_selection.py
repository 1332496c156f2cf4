"""Reporting rules that pick epochs by validation loss and average their metrics (``eval.select``).

A published protocol often reports not the last epoch but an average over chosen epochs; Hemorica's
rule is "mean over the 10 epochs with the lowest validation loss after epoch 10"
(``{rule: lowest_val_loss, k: 10, after_epoch: 10}``). The engine only records, per epoch, the
validation loss and the metrics of the reporting split (``epochs.json``); this module decides.
Result keys: ``select/<metric key>`` (means over the chosen epochs) and ``select/epochs`` (the chosen
epoch numbers, 1-based, lowest loss first, as a list).
"""
from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np

from .classification import hemorica_summary

RULES = ("lowest_val_loss",)


def select_epochs(records: Sequence[Mapping], rule: str = "lowest_val_loss", k: int = 10,
                  after_epoch: int = 10) -> dict:
    """Mean metrics over the epochs chosen by ``rule`` from per-epoch ``records``.

    Each record: {"epoch": n (1-based), "val_loss": float, "metrics": {key: value}}; records are
    sorted by epoch and must be consecutive from 1. ``lowest_val_loss``: the ``k`` epochs with the
    lowest ``val_loss`` among epochs > ``after_epoch`` (ties: the earlier epoch)."""
    if rule not in RULES:
        raise ValueError(f"eval.select.rule: unknown rule {rule!r}; one of {list(RULES)}")
    records = sorted(records, key=lambda r: int(r["epoch"]))
    epochs = [int(r["epoch"]) for r in records]
    if epochs != list(range(1, len(records) + 1)):
        raise ValueError(f"epoch records must be consecutive from 1, got epochs {epochs}")
    losses = [float(r["val_loss"]) if r.get("val_loss") is not None else math.nan for r in records]
    metrics = [{key: float(v) for key, v in (r.get("metrics") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)} for r in records]
    with warnings.catch_warnings():  # a metric undefined in every chosen epoch stays NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        summary = hemorica_summary(losses, metrics, skip_epochs=int(after_epoch), top=int(k))
    chosen = [int(summary.pop(f"hemorica/epoch_{rank}")) for rank in range(1, int(k) + 1)]
    out: dict = {f"select/{key}": value for key, value in summary.items()}
    out["select/epochs"] = chosen
    out["select/val_loss"] = float(np.mean([losses[e - 1] for e in chosen]))
    return out
