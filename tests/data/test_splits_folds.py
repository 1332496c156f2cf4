"""k-fold splits with many small strata (the negative-carry case): every patient in exactly one fold."""
import pytest

from hemo_mtl.categories import LABELS
from hemo_mtl.data.manifest import make_row, rows_to_frame
from hemo_mtl.data.splits import make_splits

# the phantom_010 layout that used to put a patient in two folds: strata normal 3, SDH 2, IPH 2, SAH/IVH/EDH 1
STRATA = ["normal", "normal", "normal", "SDH", "SDH", "IPH", "IPH", "SAH", "IVH", "EDH"]


def _frame(strata):
    rows = []
    for i, stratum in enumerate(strata):
        labels = [0] * len(LABELS)
        if stratum != "normal":
            labels[0] = 1
            labels[LABELS.index(stratum)] = 1
        rows.append(make_row(f"p{i:02d}", 0, "test", f"p{i}.png", "display", labels))
    return rows_to_frame(rows)


@pytest.mark.parametrize("seed", [32, 0, 1, 7])
@pytest.mark.parametrize("folds", [2, 3, 5])
def test_each_patient_in_exactly_one_fold_and_sizes_balanced(seed, folds):
    frame = _frame(STRATA)
    splits = make_splits(frame, seed=seed, val=0.0, test=0.0, folds=folds)
    members = [p for fold in splits["folds"] for p in fold]
    assert sorted(members) == sorted(frame["patient_id"])  # each exactly once
    sizes = [len(f) for f in splits["folds"]]
    assert max(sizes) - min(sizes) <= 2


def test_three_way_split_unchanged_for_the_common_case():
    frame = _frame(STRATA * 3)
    splits = make_splits(frame, seed=32, val=0.2, test=0.2)
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(frame["patient_id"])
    assert (len(splits["val"]), len(splits["test"])) == (6, 6)
