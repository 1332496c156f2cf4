"""slice_context_max against scipy's moving mean, in the evaluator and in the predictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter1d
from sklearn.metrics import roc_auc_score
from torch import nn

from hemo_mtl.evaluation import MultiTaskEvaluator
from hemo_mtl.evaluation.classification import aggregate_by_patient, slice_context_max
from hemo_mtl.inference import PredictOptions, Predictor, Scan


def _reference(p: np.ndarray, c: int) -> np.ndarray:
    """One scan in slice order: max(p, mean over z-c..z+c), ends replicated (scipy mode 'nearest')."""
    return np.maximum(p, uniform_filter1d(p, size=2 * c + 1, axis=0, mode="nearest"))


@pytest.mark.parametrize("context", [1, 2])
def test_equals_scipy_moving_mean_per_scan_in_any_row_order(context):
    rng = np.random.default_rng(0)
    scans = {"a": rng.random((9, 6)), "b": rng.random((5, 6)), "c": rng.random((1, 6))}
    ids = np.concatenate([[k] * len(v) for k, v in scans.items()])
    z = np.concatenate([np.arange(len(v)) for v in scans.values()])
    p = np.concatenate(list(scans.values()))
    order = rng.permutation(len(p))  # rows shuffled: neighbours come from slice_idx, not from row order
    got = slice_context_max(p[order], ids[order], z[order], context)
    want = np.concatenate([_reference(v, context) for v in scans.values()])[order]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert not np.allclose(got, p[order])  # it does something
    # a scan's max - the patient score - is the model's own maximum
    y = np.zeros_like(p)
    assert np.array_equal(aggregate_by_patient(y, got, None, ids[order])[2], aggregate_by_patient(y, p[order], None, ids[order])[2])


def test_hand_computed_ends_nan_and_off():
    p = np.array([[0.1, np.nan], [0.9, np.nan], [0.2, np.nan]])
    got = slice_context_max(p, ["s"] * 3, [4, 5, 6], 1)
    np.testing.assert_allclose(got[:, 0], [(0.1 + 0.1 + 0.9) / 3, 0.9, (0.9 + 0.2 + 0.2) / 3])
    assert np.isnan(got[:, 1]).all()
    np.testing.assert_array_equal(slice_context_max(p, ["s"] * 3, [4, 5, 6], 0), p)
    with pytest.raises(ValueError, match="strictly increasing"):
        slice_context_max(p, ["s"] * 3, [4, 4, 6], 1)


def _batch(pid: str, p_any: np.ndarray, y_any: np.ndarray):
    n = len(p_any)
    cls = torch.zeros(n, 6)
    cls[:, 0] = torch.as_tensor(y_any)
    valid = torch.zeros(n, 6)
    valid[:, 0] = 1
    prob = torch.zeros(n, 6, dtype=torch.float64)
    prob[:, 0] = torch.as_tensor(p_any)
    meta = [{"patient_id": pid, "study_id": "S", "slice_idx": k} for k in range(n)]
    return {"cls": cls, "cls_valid": valid, "has": {"cls": torch.ones(n, dtype=torch.bool)}, "meta": meta}, {"cls_prob": prob}


def test_evaluator_scores_the_context_probabilities_against_sklearn():
    rng = np.random.default_rng(1)
    scans = []
    for i in range(4):
        y = np.zeros(12)
        y[3 + i:7 + i] = 1  # a bleed over four neighbouring slices
        scans.append((f"P{i}", np.clip(0.35 * y + 0.65 * rng.random(12), 0, 1), y))
    raw, ctx = MultiTaskEvaluator(["cls"]), MultiTaskEvaluator(["cls"], slice_context=1)
    for pid, p, y in scans:
        for ev in (raw, ctx):
            # each scan in two batches, the second half first: the evaluator orders by slice_idx
            b, o = _batch(pid, p, y)
            half = {"cls": b["cls"][6:], "cls_valid": b["cls_valid"][6:], "has": {"cls": b["has"]["cls"][6:]},
                    "meta": b["meta"][6:]}
            ev.process(half, {"cls_prob": o["cls_prob"][6:]})
            ev.process({**half, "cls": b["cls"][:6], "cls_valid": b["cls_valid"][:6],
                        "has": {"cls": b["has"]["cls"][:6]}, "meta": b["meta"][:6]}, {"cls_prob": o["cls_prob"][:6]})
    y_all = np.concatenate([s[2] for s in scans])
    got, base = ctx.evaluate()["cls/any/auc"], raw.evaluate()["cls/any/auc"]
    assert got == pytest.approx(roc_auc_score(y_all, np.concatenate([_reference(s[1], 1) for s in scans])), abs=1e-12)
    assert base == pytest.approx(roc_auc_score(y_all, np.concatenate([s[1] for s in scans])), abs=1e-12)
    assert got != base


class SliceMeanModel(nn.Module):
    """p(any) .. p(IVH) = the slice's mean pixel, so the predictor's raw p is known per slice."""

    def forward(self, batch, gate=None):
        return {"cls_prob": batch["image"][:, :1].mean((2, 3)).repeat(1, 6)}


def test_predictor_applies_the_config_context_and_the_option_overrides_it():
    levels = np.array([0.1, 0.8, 0.3, 0.3, 0.9, 0.2], np.float32)
    slices = [np.full((16, 16), round(v * 255), np.uint8) for v in levels]
    raw = np.array([round(v * 255) / 255 for v in levels])
    cfg = {"data": {"windows": ["brain"], "image_size": 16}, "model": {}, "eval": {"slice_context": 1}}
    scan = Scan("folder", "display", slices, None)
    got = Predictor(SliceMeanModel(), cfg).predict(scan).cls_prob
    np.testing.assert_allclose(got[:, 0], _reference(raw, 1), atol=1e-6)  # float32 model path
    off = Predictor(SliceMeanModel(), cfg, options=PredictOptions(slice_context=0)).predict(scan).cls_prob
    np.testing.assert_allclose(off[:, 0], raw, atol=1e-6)
    assert off[:, 0].max() == pytest.approx(got[:, 0].max(), abs=1e-6)  # scan p(any) unchanged
