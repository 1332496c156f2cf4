"""Classification metrics against sklearn, hand-computed patient aggregation and the Hemorica rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score, roc_curve)

from hemo_mtl.categories import LABELS
from hemo_mtl.evaluation.classification import (aggregate_by_patient, binary_metrics, bootstrap_ci,
                                                choose_threshold, classification_metrics,
                                                hemorica_summary, tune_thresholds)


def _random_case(seed: int, n: int = 300, patients: int = 30):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 6)) < 0.3).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, 6)), 0, 1)
    p[:20] = np.round(p[:20], 1)  # ties
    valid = rng.random((n, 6)) < 0.85
    pids = np.array([f"P{i:03d}" for i in rng.integers(0, patients, n)])
    return y, p, valid, pids


def _sk(y, p, thr=0.5):
    pred = (p >= thr).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "precision": precision_score(y, pred, zero_division=np.nan),
        "recall": recall_score(y, pred, zero_division=np.nan),
        "specificity": recall_score(1 - y, 1 - pred, zero_division=np.nan),
        "f1": f1_score(y, pred, zero_division=np.nan),
        "accuracy": accuracy_score(y, pred),
        "auc": roc_auc_score(y, p),
        "ap": average_precision_score(y, p),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slice_metrics_match_sklearn(seed):
    y, p, valid, pids = _random_case(seed)
    m = classification_metrics(y, p, valid, pids)
    for j, label in enumerate(LABELS):
        ref = _sk(y[valid[:, j], j], p[valid[:, j], j])
        for name, v in ref.items():
            assert m[f"cls/{label}/{name}"] == pytest.approx(v, abs=1e-12), (label, name)
        assert m[f"cls/{label}/n"] == valid[:, j].sum()


def test_patient_max_aggregation_matches_sklearn_on_hand_made_groups():
    # 3 patients: A has a positive slice (max prob 0.9), B negative (max 0.6), C positive (max 0.3)
    pids = ["A", "A", "A", "B", "B", "C", "C"]
    y = np.zeros((7, 6))
    y[1, 0] = y[5, 0] = 1
    p = np.zeros((7, 6))
    p[:, 0] = [0.1, 0.9, 0.2, 0.6, 0.4, 0.3, 0.05]
    m = classification_metrics(y, p, None, pids)
    yt, pp = np.array([1, 0, 1]), np.array([0.9, 0.6, 0.3])
    assert m["cls_patient/any/auc"] == pytest.approx(roc_auc_score(yt, pp))  # 0.5
    assert m["cls_patient/any/recall"] == pytest.approx(0.5)
    assert m["cls_patient/any/precision"] == pytest.approx(0.5)
    assert m["cls_patient/any/f1"] == pytest.approx(f1_score(yt, pp >= 0.5))
    assert m["cls_patient/any/n"] == 3
    # subtypes never positive: AUC undefined -> NaN, counted
    assert math.isnan(m["cls_patient/EDH/auc"]) and math.isnan(m["cls/EDH/ap"])
    assert m["cls/all/n_auc_undefined"] == 10


def test_patient_aggregation_modes_and_validity():
    y, p, valid, pids = _random_case(5, n=120, patients=12)
    for how, k in (("max", 3), ("mean", 3), ("topk", 2)):
        ids, pt, pp, pv = aggregate_by_patient(y, p, valid, pids, how, top_k=k)
        for i, pid in enumerate(ids):
            rows = pids == pid
            for j in range(6):
                known = rows & valid[:, j]
                assert pv[i, j] == known.any()
                if not known.any():
                    continue
                probs = np.sort(p[known, j])[::-1]
                ref = {"max": probs[0], "mean": probs.mean(), "topk": probs[:k].mean()}[how]
                assert pp[i, j] == pytest.approx(ref)
                assert pt[i, j] == y[known, j].max()
    m = classification_metrics(y, p, valid, pids, aggregation="mean")
    ids, pt, pp, pv = aggregate_by_patient(y, p, valid, pids, "mean")
    assert m["cls_patient/SDH/ap"] == pytest.approx(average_precision_score(pt[pv[:, 2], 2], pp[pv[:, 2], 2]))


def test_unknown_labels_are_excluded_not_negative():
    y = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], float)
    p = np.array([[0.9] * 6, [0.1] * 6, [0.8] * 6])
    valid = np.zeros((3, 6), bool)
    valid[:, 0] = True  # Kaggle-like: only `any` known
    m = classification_metrics(y, p, valid)
    assert m["cls/any/auc"] == 1.0 and m["cls/any/n"] == 3
    assert m["cls/SDH/n"] == 0 and math.isnan(m["cls/SDH/recall"]) and math.isnan(m["cls/SDH/auc"])


def test_choose_threshold_youden_and_target_sensitivity():
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.4).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    t = choose_threshold(y, p, "youden")
    assert (tpr - fpr).max() == pytest.approx(
        recall_score(y, p >= t) + recall_score(1 - y, p < t) - 1)
    t90 = choose_threshold(y, p, "sensitivity", target=0.9)
    assert recall_score(y, p >= t90) >= 0.9
    higher = np.unique(p[p > t90]).min()  # the next threshold up misses the target
    assert recall_score(y, p >= higher) < 0.9
    assert math.isnan(choose_threshold(np.zeros(5), np.linspace(0, 1, 5)))
    with pytest.raises(ValueError, match="target"):
        choose_threshold(y, p, "sensitivity")


def test_tuned_threshold_keys_follow_the_threshold():
    y, p, valid, pids = _random_case(7, patients=200)
    tuned = tune_thresholds(y, p, valid, pids, method="sensitivity", target=0.8)
    m = classification_metrics(y, p, valid, pids, tuned=tuned)
    t = tuned["cls"]["IPH"]
    ref = binary_metrics(y[valid[:, 4], 4], p[valid[:, 4], 4], t)
    assert m["cls/IPH/threshold@tuned"] == t and m["cls/IPH/recall@tuned"] == ref["recall"] >= 0.8
    assert "cls_patient/any/f1@tuned" in m


def test_bootstrap_is_seeded_patient_resampled_and_brackets_the_estimate():
    y, p, valid, pids = _random_case(11, n=400, patients=40)
    a = bootstrap_ci(y, p, valid, pids, n_bootstrap=200, seed=1)
    b = bootstrap_ci(y, p, valid, pids, n_bootstrap=200, seed=1)
    c = bootstrap_ci(y, p, valid, pids, n_bootstrap=200, seed=2)
    assert a == b and a != c
    m = classification_metrics(y, p, valid, pids)
    for key in ("cls/any/auc", "cls_patient/any/auc", "cls/SDH/f1"):
        assert a[f"{key}_ci95_low"] <= m[key] <= a[f"{key}_ci95_high"]
    # one patient, all slices: a patient resample can only draw that patient -> zero-width CI
    one = bootstrap_ci(y, p, valid, np.zeros(len(y)), n_bootstrap=20, seed=0, patient_level=False)
    assert one["cls/any/auc_ci95_low"] == pytest.approx(m["cls/any/auc"])
    assert one["cls/any/auc_ci95_high"] == pytest.approx(m["cls/any/auc"])


def test_hemorica_rule_hand_computed():
    losses = [5.0] * 10 + [1.0, 0.5, 2.0, 0.1, 0.3, 0.9, 0.8, 0.7, 3.0, 0.2, 0.6, 0.4]  # 22 epochs
    f1 = [0.0] * 10 + [float(i) for i in range(12)]
    res = hemorica_summary(losses, [{"cls/any/f1": v} for v in f1])
    chosen = np.argsort(losses[10:])[:10] + 10  # lowest 10 losses among epochs 11..22
    assert res["cls/any/f1"] == pytest.approx(np.mean(np.asarray(f1)[chosen]))
    assert res["hemorica/epoch_1"] == 14  # loss 0.1 at 1-based epoch 14
    assert hemorica_summary(losses, {"cls/any/f1": f1}) == res
    with pytest.raises(ValueError, match="10 epochs after epoch 10"):
        hemorica_summary(losses[:15], {"cls/any/f1": f1[:15]})


def test_bad_inputs_raise_with_location():
    y, p, valid, _ = _random_case(0, n=10)
    p[3, 2] = np.nan
    with pytest.raises(ValueError, match="row 3 label SDH"):
        classification_metrics(y, p, valid)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(y[:, :5], p[:, :5])
    y[1, 0] = 2
    with pytest.raises(ValueError, match="row 1 label any: expected 0 or 1"):
        classification_metrics(y, np.zeros_like(y), np.ones_like(valid))
