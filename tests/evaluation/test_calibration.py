"""ECE against a hand computation, reliability bins against sklearn, temperature scaling on an over-confident model."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from hemo_mtl.categories import LABELS
from hemo_mtl.evaluation import classification_metrics, write_report
from hemo_mtl.evaluation.calibration import (N_BINS, apply_temperature, binary_nll, checkpoint_temperature,
                                             expected_calibration_error, fit_temperature, fit_temperature_1d,
                                             reliability_bins, temperature_record)


def test_ece_by_hand():
    # 4 bins (0, .25], (.25, .5], (.5, .75], (.75, 1]; 0.5 sits on an edge and belongs to the lower bin
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 0.9, 1.0])
    y = np.array([0, 1, 0, 1, 1, 1, 0, 1])
    # bin 1: mean .15, 1/2 positive; bin 2: mean .4, 2/3; bin 3 empty; bin 4: mean .9, 2/3
    hand = (2 * abs(0.5 - 0.15) + 3 * abs(2 / 3 - 0.4) + 3 * abs(2 / 3 - 0.9)) / 8  # = 0.275
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(hand, abs=1e-12)
    assert hand == pytest.approx(0.275)
    # a perfectly calibrated bin structure: every bin's fraction equals its mean probability
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], n_bins=N_BINS) == 0.0
    assert math.isnan(expected_calibration_error([], []))


@pytest.mark.parametrize("n_bins", [5, N_BINS])
def test_reliability_bins_equal_sklearn_calibration_curve(n_bins):
    rng = np.random.default_rng(3)
    p = rng.random(500)
    p[:40] = np.round(p[:40] * n_bins) / n_bins  # values on the bin edges, and 0 and 1
    y = (rng.random(500) < p ** 1.5).astype(int)
    ref_true, ref_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    b = reliability_bins(y, p, n_bins)
    full = b["count"] > 0
    # same bincount sums in the same order: equal to float rounding
    assert np.allclose(b["frac_pos"][full], ref_true, rtol=0, atol=1e-12)
    assert np.allclose(b["mean_prob"][full], ref_pred, rtol=0, atol=1e-12)
    assert b["count"].sum() == 500


def test_nll_matches_sklearn_log_loss():
    rng = np.random.default_rng(0)
    p, y = rng.uniform(0.01, 0.99, 200), rng.integers(0, 2, 200)
    assert binary_nll(y, p) == pytest.approx(log_loss(y, p), rel=1e-12)


def _overconfident(seed: int, n: int = 4000, sharpen: float = 3.0):
    """Labels drawn from sigmoid(z); the model reports sigmoid(3 z): right ranking, too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, len(LABELS)))
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    return y, 1 / (1 + np.exp(-sharpen * z))


def test_temperature_scaling_fixes_an_overconfident_model():
    y_val, p_val = _overconfident(0)
    y_test, p_test = _overconfident(1)
    t = fit_temperature(y_val, p_val)
    assert len(t) == len(LABELS)
    assert all(2.5 < v < 3.5 for v in t), t  # the sharpening factor, recovered
    cal_val = apply_temperature(p_val, t)
    for j in range(len(LABELS)):
        assert log_loss(y_val[:, j], cal_val[:, j]) < log_loss(y_val[:, j], p_val[:, j]) - 0.05
    m = classification_metrics(y_test, p_test, temperature=t)
    for label in LABELS:
        assert m[f"cls/{label}/ece@calibrated"] < 0.5 * m[f"cls/{label}/ece"]
        assert m[f"cls/{label}/nll@calibrated"] < m[f"cls/{label}/nll"]
    # the sign of the logit is kept: every decision at 0.5 is the same
    assert np.array_equal(apply_temperature(p_test, t) >= 0.5, p_test >= 0.5)


def test_well_calibrated_model_keeps_temperature_near_one_and_single_class_is_left_alone():
    y, p = _overconfident(2, sharpen=1.0)
    assert fit_temperature_1d(y[:, 0], p[:, 0]) == pytest.approx(1.0, abs=0.15)
    assert fit_temperature_1d(np.zeros(50), np.full(50, 0.2)) == 1.0


def test_patient_level_calibration_uses_calibrated_slices():
    y, p = _overconfident(4, n=600)
    pids = np.repeat(np.arange(60), 10).astype(str)
    t = [2.0] * 6
    m = classification_metrics(y, p, None, pids, temperature=t)
    pt = y.reshape(60, 10, 6).max(1)
    pc = apply_temperature(p, t).reshape(60, 10, 6).max(1)  # max of the calibrated slices
    assert m["cls_patient/any/ece@calibrated"] == pytest.approx(expected_calibration_error(pt[:, 0], pc[:, 0]))
    assert m["cls_patient/any/ece"] == pytest.approx(expected_calibration_error(pt[:, 0], p.reshape(60, 10, 6).max(1)[:, 0]))
    assert m["cls_patient/SDH/temperature"] == 2.0


def test_report_shows_reliability_diagrams_and_before_after(tmp_path):
    y, p = _overconfident(5, n=400)
    pids = np.repeat(np.arange(40), 10).astype(str)
    t = fit_temperature(y, p)
    m = classification_metrics(y, p, None, pids, temperature=t)
    details = {"cls": {"y_true": y, "y_prob": p, "valid": np.ones_like(y, bool), "patient_ids": pids,
                       "temperature": t}}
    paths = write_report(tmp_path, m, details=details)
    for name in ("reliability_cls", "reliability_cls_patient"):
        assert paths[name].is_file() and paths[name].stat().st_size > 10_000
    md = paths["report"].read_text().splitlines()
    header = [c.strip() for c in md[md.index("## cls") + 2].strip("|").split("|")]
    row = next([c.strip() for c in line.strip("|").split("|")] for line in md if line.startswith("| any |"))
    assert row[header.index("ece")] == f"{m['cls/any/ece']:.4f}"
    assert row[header.index("ece@calibrated")] == f"{m['cls/any/ece@calibrated']:.4f}"
    assert float(row[header.index("temperature")]) == pytest.approx(t[0], abs=1e-4)


def test_checkpoint_record_round_trip_and_bad_values():
    rec = temperature_record([1.0, 2.0, 3.0, 1.5, 1.2, 0.9])
    assert checkpoint_temperature({"calibration": rec}) == [1.0, 2.0, 3.0, 1.5, 1.2, 0.9]
    assert checkpoint_temperature({}) is None and checkpoint_temperature({"calibration": {}}) is None
    with pytest.raises(ValueError, match="6 positive temperatures"):
        checkpoint_temperature({"calibration": {"temperature": [1.0, -1.0, 1, 1, 1, 1]}})
    with pytest.raises(ValueError):
        temperature_record([1.0, 2.0])
