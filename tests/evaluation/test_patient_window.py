"""The patient window (highest mean of k adjacent slices) against pandas' rolling mean, in the
classification metrics, the evaluator, the cross-validation figures and the predictor's summary."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from hemo_mtl.evaluation import MultiTaskEvaluator
from hemo_mtl.evaluation import cross_validation as cv
from hemo_mtl.evaluation.classification import adjacent_mean, aggregate_by_patient
from hemo_mtl.inference import PredictOptions, Predictor, Scan
from hemo_mtl.inference.outputs import scan_summary

from .test_cross_validation import _table
from .test_slice_context import SliceMeanModel


def _best_run(p: np.ndarray, k: int) -> float:
    """One scan in slice order: the highest mean of k adjacent slices (the mean of all when shorter)."""
    s = pd.Series(p)
    return float(s.mean() if len(s) <= k else s.rolling(k).mean().max())


def test_hand_computed_runs_ends_short_scan_and_nan():
    p = np.array([[0.1, np.nan], [0.9, np.nan], [0.2, np.nan], [0.8, np.nan], [0.7, np.nan]])
    got = adjacent_mean(p, ["s"] * 5, [0, 1, 2, 3, 4], 2)
    # runs start at each slice; the last slice's run is moved back to end at the scan's end
    np.testing.assert_allclose(got[:, 0], [0.5, 0.55, 0.5, 0.75, 0.75], atol=1e-12)
    assert np.isnan(got[:, 1]).all()
    short = adjacent_mean(np.array([[0.2], [0.6]]), ["t", "t"], [7, 3], 3)
    np.testing.assert_allclose(short[:, 0], [0.4, 0.4], atol=1e-12)
    np.testing.assert_array_equal(adjacent_mean(p, ["s"] * 5, range(5), 1), p)
    with pytest.raises(ValueError, match="window"):
        adjacent_mean(p, ["s"] * 5, range(5), 0)


@pytest.mark.parametrize("window", [2, 3])
def test_patient_scores_equal_pandas_rolling_over_scans_in_any_row_order(window):
    rng = np.random.default_rng(0)
    scans = {("P1", "a"): rng.random(9), ("P1", "b"): rng.random(4), ("P2", "a"): rng.random(2),
             ("P3", "a"): rng.random(7)}
    pid = np.concatenate([[k[0]] * len(v) for k, v in scans.items()])
    scan = np.concatenate([[f"{k[0]}/{k[1]}"] * len(v) for k, v in scans.items()])
    z = np.concatenate([np.arange(len(v)) * 5 + 2 for v in scans.values()])  # gaps in slice numbers
    p = np.zeros((len(pid), 6))
    p[:, 0] = np.concatenate(list(scans.values()))
    valid = np.zeros_like(p, bool)
    valid[:, 0] = True
    shuffle = rng.permutation(len(pid))  # neighbours come from slice_idx, not from row order
    ids, _, score, pv = aggregate_by_patient(np.zeros_like(p)[shuffle], p[shuffle], valid[shuffle], pid[shuffle],
                                             window=window, order=(scan[shuffle], z[shuffle]))
    want = {q: max(_best_run(v, window) for k, v in scans.items() if k[0] == q) for q in ("P1", "P2", "P3")}
    np.testing.assert_allclose(score[:, 0], [want[q] for q in ids], atol=1e-12)
    assert pv[:, 0].all() and not pv[:, 1:].any()
    plain = aggregate_by_patient(np.zeros_like(p), p, valid, pid)[2][:, 0]
    assert (score[:, 0] <= plain + 1e-12).all() and (score[:, 0] < plain).any()
    with pytest.raises(ValueError, match="order"):
        aggregate_by_patient(np.zeros_like(p), p, valid, pid, window=window)


def _batch(pid: str, p_any: np.ndarray, y_any: np.ndarray, order: np.ndarray):
    n = len(order)
    cls, valid = torch.zeros(n, 6), torch.zeros(n, 6)
    cls[:, 0], valid[:, 0] = torch.as_tensor(y_any[order]), 1
    prob = torch.zeros(n, 6, dtype=torch.float64)
    prob[:, 0] = torch.as_tensor(p_any[order])
    meta = [{"patient_id": pid, "study_id": "S", "slice_idx": int(k)} for k in order]
    return ({"cls": cls, "cls_valid": valid, "has": {"cls": torch.ones(n, dtype=torch.bool)}, "meta": meta},
            {"cls_prob": prob})


def test_evaluator_patient_auc_is_sklearns_on_the_best_runs():
    rng = np.random.default_rng(1)
    scans = []
    for i in range(6):
        y = np.zeros(10)
        if i % 2:
            y[2 + i // 2:5 + i // 2] = 1
        p = np.clip(0.3 * y + 0.7 * rng.random(10), 0, 1)
        p[rng.integers(10)] = 0.97  # one sure slice in every patient
        scans.append((f"P{i}", p, y))
    ev, plain = MultiTaskEvaluator(["cls"], patient_window=2), MultiTaskEvaluator(["cls"])
    for pid, p, y in scans:
        for e in (ev, plain):
            e.process(*_batch(pid, p, y, rng.permutation(10)))
    truth = [s[2].max() for s in scans]
    got, base = ev.evaluate(), plain.evaluate()
    assert got["cls_patient/any/auc"] == pytest.approx(roc_auc_score(truth, [_best_run(s[1], 2) for s in scans]),
                                                       abs=1e-12)
    assert base["cls_patient/any/auc"] == pytest.approx(roc_auc_score(truth, [s[1].max() for s in scans]),
                                                        abs=1e-12)
    assert got["cls/any/auc"] == base["cls/any/auc"]  # slice figures are not the window's


def test_cross_validation_calls_threshold_and_pooled_ranking_by_hand():
    rng = np.random.default_rng(2)
    val = _table(rng, [("v1", 1), ("v2", 0), ("v3", 1)], "val").assign(study_id="1")
    test = _table(rng, [("t1", 1), ("t2", 0), ("t3", 0), ("t4", 1), ("t5", 0)], "test").assign(study_id="1")
    table = pd.concat([val, test], ignore_index=True).sample(frac=1.0, random_state=0)  # rows in any order
    got = cv.fold_figures(table, window=2)
    run = lambda rows: rows.sort_values("slice_idx").groupby("patient_id")["p_any"].apply(
        lambda s: _best_run(s.to_numpy(), 2))
    vrun, trun = run(val), run(test)
    truth = test.groupby("patient_id")["any"].max()
    assert got["patient/threshold@tuned"] == pytest.approx(min(vrun["v1"], vrun["v3"]), abs=1e-12)
    t = got["patient/threshold@tuned"]
    assert got["patient/ich_found@tuned"] == ((trun >= t) & (truth == 1)).sum()
    assert got["patient/normal_flagged@tuned"] == ((trun >= t) & (truth == 0)).sum()
    assert got["slice/auc"] == pytest.approx(roc_auc_score(test["any"], test["p_any"]), abs=1e-12)
    pooled = cv.pooled_figures(table, window=2)
    assert pooled["pooled/patient/auc"] == pytest.approx(roc_auc_score(truth, trun[truth.index]), abs=1e-12)
    # specificity at sensitivity 1: sklearn's first ROC point that finds every ICH patient
    fpr, tpr, _ = roc_curve(truth, trun[truth.index])
    assert pooled["pooled/patient/specificity@all_found"] == pytest.approx(1 - fpr[np.argmax(tpr >= 1)], abs=1e-12)
    assert cv.pooled_figures(table)["pooled/patient/auc"] == pytest.approx(
        roc_auc_score(truth, test.groupby("patient_id")["p_any"].max()[truth.index]), abs=1e-12)


def test_predictor_summary_takes_the_config_window_and_the_option_overrides_it():
    levels = np.array([0.1, 0.95, 0.3, 0.6, 0.7, 0.2], np.float32)
    slices = [np.full((16, 16), round(v * 255), np.uint8) for v in levels]
    raw = np.array([round(v * 255) / 255 for v in levels])
    cfg = {"data": {"windows": ["brain"], "image_size": 16}, "model": {}, "eval": {"patient_window": 2}}
    scan = Scan("folder", "display", slices, None)
    windowed = Predictor(SliceMeanModel(), cfg)
    pred = windowed.predict(scan)
    np.testing.assert_allclose(pred.cls_prob[:, 0], raw, atol=1e-6)  # slice p untouched
    summary = scan_summary(scan, pred, windowed)
    assert summary["probabilities"]["any"] == pytest.approx(_best_run(raw, 2), abs=1e-6)  # float32 model path
    assert summary["patient_window"] == 2
    single = Predictor(SliceMeanModel(), cfg, options=PredictOptions(patient_window=1))
    assert scan_summary(scan, pred, single)["probabilities"]["any"] == pytest.approx(raw.max(), abs=1e-6)
