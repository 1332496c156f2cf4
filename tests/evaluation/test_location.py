"""Location metrics against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from hemo_mtl.evaluation.location import location_metrics

CLASSES = ["deep", "lobar", "subtentorial"]


def test_against_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    p = np.where(rng.random(50) < 0.6, y, rng.integers(0, 3, 50))
    out = location_metrics(y, p, CLASSES)
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=np.nan)
    cm = confusion_matrix(y, p, labels=[0, 1, 2])
    assert out["location/accuracy"] == pytest.approx(accuracy_score(y, p))
    for i, name in enumerate(CLASSES):
        assert out[f"location/{name}/precision"] == pytest.approx(prec[i])
        assert out[f"location/{name}/recall"] == pytest.approx(rec[i])
        assert out[f"location/{name}/f1"] == pytest.approx(f1[i])
        # specificity of class i = recall of "not i"
        spec = precision_recall_fscore_support(y != i, p != i, average="binary")[1]
        assert out[f"location/{name}/specificity"] == pytest.approx(spec)
        for j, other in enumerate(CLASSES):
            assert out[f"location/cm/{name}/{other}"] == cm[i, j]
    assert out["location/macro/f1"] == pytest.approx(np.mean(f1))


def test_never_predicted_class_has_nan_precision_and_is_left_out_of_macro():
    out = location_metrics([0, 1, 2], [0, 1, 1], CLASSES)
    assert np.isnan(out["location/subtentorial/precision"])
    assert out["location/macro/precision"] == pytest.approx((1.0 + 0.5) / 2)
