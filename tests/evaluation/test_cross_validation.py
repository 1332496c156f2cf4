"""Cross-validation figures from prediction tables, against sklearn and hand counts."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from hemo_mtl.evaluation import cross_validation as cv


def _table(rng, patients, role, n=6):
    rows = []
    for p, ich in patients:
        for s in range(n):
            y = float(ich and s in (2, 3, 4))
            rows.append({"patient_id": p, "slice_idx": s, "role": role, "any": y,
                         "p_any": float(np.clip(0.35 * y + rng.random() * 0.7, 0, 1)), "has_mask": False,
                         "gt_pixels": pd.NA, "pred_pixels": 0, "tp": pd.NA, "fp": pd.NA, "fn": pd.NA})
    return pd.DataFrame(rows)


def test_fold_figures_match_sklearn_and_hand_counts():
    rng = np.random.default_rng(0)
    val = _table(rng, [("v1", 1), ("v2", 0), ("v3", 1)], "val")
    test = _table(rng, [("t1", 1), ("t2", 0), ("t3", 0), ("t4", 1)], "test")
    got = cv.fold_figures(pd.concat([val, test], ignore_index=True))
    y, p = test["any"].to_numpy(), test["p_any"].to_numpy()
    assert got["slice/auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert got["slice/f1"] == pytest.approx(f1_score(y, p >= 0.5), abs=1e-12)
    tn, fp = ((y == 0) & (p < 0.5)).sum(), ((y == 0) & (p >= 0.5)).sum()
    assert got["slice/specificity"] == pytest.approx(tn / (tn + fp))
    # tuned on validation by Youden J: the threshold maximising tpr - fpr there (sklearn's ROC points)
    fpr, tpr, thr = roc_curve(val["any"], val["p_any"])
    best = thr[np.argmax(tpr - fpr)]
    assert got["slice/threshold@tuned"] == pytest.approx(best)
    assert got["slice/f1@tuned"] == pytest.approx(f1_score(y, p >= got["slice/threshold@tuned"]))
    # patient threshold: the highest one that finds every ICH validation patient = the lowest ICH max score
    vmax = val.groupby("patient_id")["p_any"].max()
    assert got["patient/threshold@tuned"] == pytest.approx(min(vmax["v1"], vmax["v3"]))
    # patient calls at 0.5: max over slices, counted by hand
    score = test.groupby("patient_id")["p_any"].max()
    truth = test.groupby("patient_id")["any"].max()
    assert got["patient/ich_patients"] == 2 and got["patient/normal_patients"] == 2
    assert got["patient/ich_found"] == ((score >= 0.5) & (truth == 1)).sum()
    assert got["patient/normal_flagged"] == ((score >= 0.5) & (truth == 0)).sum()


def test_pooled_figures_match_sklearn_over_slices_and_patient_maxima():
    rng = np.random.default_rng(1)
    test = _table(rng, [("t1", 1), ("t2", 0), ("t3", 0), ("t4", 1), ("t5", 1)], "test")
    val = _table(rng, [("v1", 1), ("v2", 0)], "val")  # left out: pooled figures are the test roles only
    got = cv.pooled_figures(pd.concat([test, val], ignore_index=True))
    assert got["pooled/slice/auc"] == pytest.approx(roc_auc_score(test["any"], test["p_any"]), abs=1e-12)
    patients = test.groupby("patient_id").agg(y=("any", "max"), p=("p_any", "max"))
    assert got["pooled/patient/auc"] == pytest.approx(roc_auc_score(patients["y"], patients["p"]), abs=1e-12)


def test_segmentation_figures_by_hand():
    rows = pd.DataFrame([
        # masked bleed slices: pooled Dice = 2*(8+2) / (2*10 + 2+1 + 0+3) = 20/26
        {"has_mask": True, "gt_pixels": 9, "tp": 8, "fp": 2, "fn": 1, "pred_pixels": 10},
        {"has_mask": True, "gt_pixels": 5, "tp": 2, "fp": 0, "fn": 3, "pred_pixels": 2},
        # empty masks: false-positive area
        {"has_mask": True, "gt_pixels": 0, "tp": 0, "fp": 4, "fn": 0, "pred_pixels": 4},
        {"has_mask": True, "gt_pixels": 0, "tp": 0, "fp": 0, "fn": 0, "pred_pixels": 0},
        {"has_mask": False, "gt_pixels": pd.NA, "tp": pd.NA, "fp": pd.NA, "fn": pd.NA, "pred_pixels": 50},
    ])
    for c in ("gt_pixels", "tp", "fp", "fn"):
        rows[c] = rows[c].astype("Int64")
    got = cv.segmentation_figures(rows)
    assert got["seg/dice"] == pytest.approx(20 / 26) and got["seg/iou"] == pytest.approx(10 / 16)
    assert got["seg/dice_per_slice"] == pytest.approx((16 / 19 + 4 / 7) / 2)
    assert got["seg/empty_fp_pixels_per_slice"] == 2.0 and got["seg/empty_fp_slice_share"] == 0.5
    assert got["seg/n_bleed_slices"] == 2 and got["seg/n_empty_slices"] == 2


def test_summary_is_mean_and_sample_sd_where_defined():
    folds = [{"slice/auc": 0.8, "patient/ich_found": 2.0}, {"slice/auc": 0.6, "patient/ich_found": 1.0},
             {"slice/auc": math.nan, "patient/ich_found": 0.0}]
    s = cv.summarise(folds)
    assert s["slice/auc"]["mean"] == pytest.approx(0.7) and s["slice/auc"]["n"] == 2
    assert s["slice/auc"]["sd"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert s["patient/ich_found"]["total"] == 3.0
