"""eval.select rule: mean over the k lowest-validation-loss epochs after `after_epoch`, hand-computed."""
import math

import pytest

from hemo_mtl.evaluation.epoch_selection import select_epochs


def _records(losses, f1s):
    return [{"epoch": i + 1, "val_loss": loss, "metrics": {"cls/any/f1": f, "cls/any/auc": 1 - f}}
            for i, (loss, f) in enumerate(zip(losses, f1s))]


def test_mean_over_lowest_loss_epochs_after_the_skip():
    # epochs 1..8; epoch 1-2 skipped even though epoch 1 has the lowest loss of all
    losses = [0.1, 4.0, 3.0, 2.5, 1.0, 2.0, 0.5, 3.0]
    f1s = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    out = select_epochs(_records(losses, f1s), k=3, after_epoch=2)
    # eligible epochs 3..8 with losses 3.0, 2.5, 1.0, 2.0, 0.5, 3.0 -> lowest three: 7 (0.5), 5 (1.0), 6 (2.0)
    assert out["select/epochs"] == [7, 5, 6]
    assert out["select/cls/any/f1"] == pytest.approx((0.6 + 0.4 + 0.5) / 3)
    assert out["select/cls/any/auc"] == pytest.approx(1 - (0.6 + 0.4 + 0.5) / 3)
    assert out["select/val_loss"] == pytest.approx((0.5 + 1.0 + 2.0) / 3)


def test_ties_go_to_the_earlier_epoch_and_order_of_records_does_not_matter():
    losses = [9, 1.0, 1.0, 1.0]
    recs = _records(losses, [0, 0.1, 0.2, 0.3])[::-1]
    out = select_epochs(recs, k=2, after_epoch=1)
    assert out["select/epochs"] == [2, 3]
    assert out["select/cls/any/f1"] == pytest.approx(0.15)


def test_nan_metric_in_chosen_epochs_is_skipped_in_the_mean():
    recs = _records([5, 1, 2], [0.0, float("nan"), 0.4])
    out = select_epochs(recs, k=2, after_epoch=0)
    assert out["select/epochs"] == [2, 3]
    assert out["select/cls/any/f1"] == pytest.approx(0.4)


def test_too_few_epochs_and_bad_records_raise():
    with pytest.raises(ValueError, match="needs 3 epochs"):
        select_epochs(_records([1, 2, 3], [0, 0, 0]), k=3, after_epoch=1)
    with pytest.raises(ValueError, match="consecutive"):
        select_epochs([{"epoch": 2, "val_loss": 1.0, "metrics": {}}], k=1, after_epoch=0)
    with pytest.raises(ValueError, match="unknown rule"):
        select_epochs(_records([1], [0]), rule="best_f1", k=1, after_epoch=0)
    assert math.isnan(select_epochs([{"epoch": 1, "val_loss": 1.0, "metrics": {"m": float("nan")}}], k=1,
                                    after_epoch=0)["select/m"])
