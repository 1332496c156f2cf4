import numpy as np
import pytest

from hemo_mtl.data.manifest import make_row, rows_to_frame
from hemo_mtl.data.splits import LeakageError, check_leakage, fold_split, load_splits, make_splits, save_splits


def _frame(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        sub = rng.integers(0, 6)  # 0 = normal, 1..5 = one subtype
        for k in range(5):
            lab = [0] * 6
            if sub and k == 2:
                lab[0] = lab[sub] = 1
            rows.append(make_row(f"p{p:02d}", k, "test", f"x.nii#{k}", "hu", lab))
    return rows_to_frame(rows)


def test_patient_wise_no_leakage_and_fractions():
    frame = _frame()
    splits = make_splits(frame, seed=32, val=0.1, test=0.2)
    sets = [set(splits[s]) for s in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(frame.patient_id)
    assert abs(len(splits["test"]) - 8) <= 1 and abs(len(splits["val"]) - 4) <= 1


def test_seeded_and_stratified():
    frame = _frame(60)
    a, b, c = make_splits(frame, seed=32), make_splits(frame, seed=32), make_splits(frame, seed=7)
    assert a["test"] == b["test"] and a["test"] != c["test"]
    # every subtype present in the data reaches the test split (stratification)
    patients = frame.groupby("patient_id")[["EDH", "SDH", "SAH", "IPH", "IVH"]].max()
    test_patients = patients.loc[a["test"]]
    assert (test_patients.sum() > 0).all()


def test_kfold_disjoint_and_covering():
    frame = _frame()
    splits = make_splits(frame, seed=1, val=0.0, test=0.2, folds=5)
    pool = set(frame.patient_id) - set(splits["test"])
    assert set().union(*map(set, splits["folds"])) == pool
    f = fold_split(splits, 2)
    assert set(f["val"]) == set(splits["folds"][2]) and set(f["train"]).isdisjoint(f["val"])


def test_nested_folds_test_every_patient_once():
    """held_out_as=test: over the k runs every patient is tested exactly once; within a run the test,
    validation and training patients are disjoint and together are every patient."""
    frame = _frame()
    splits = make_splits(frame, seed=4, val=0.0, test=0.0, folds=5)
    everyone = set(frame.patient_id)
    tested = []
    for k in range(5):
        f = fold_split(splits, k, held_out_as="test")
        check_leakage(f)
        assert set(f["test"]) == set(splits["folds"][k]) and set(f["val"]) == set(splits["folds"][(k + 1) % 5])
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == everyone
        tested += f["test"]
    assert sorted(tested) == sorted(everyone)
    with pytest.raises(ValueError, match="at least 3 folds"):
        fold_split(make_splits(frame, seed=4, val=0.0, test=0.0, folds=2), 0, held_out_as="test")
    with pytest.raises(ValueError, match="held_out_as"):
        fold_split(splits, 0, held_out_as="train")


def test_leakage_check_fails_loudly(tmp_path):
    with pytest.raises(LeakageError, match="'p1' is in both 'train' and 'test'"):
        check_leakage({"train": ["p0", "p1"], "val": [], "test": ["p1"]})
    with pytest.raises(LeakageError):
        save_splits({"train": ["a"], "val": ["a"], "test": []}, tmp_path / "s.json")
    (tmp_path / "bad.json").write_text('{"train": ["a"], "val": [], "test": ["a"]}')
    with pytest.raises(LeakageError):
        load_splits(tmp_path / "bad.json")


def test_roundtrip_file(tmp_path):
    splits = make_splits(_frame(), seed=3)
    save_splits(splits, tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json") == splits
