"""Class-balancing oversampling: hand-computed index lists."""
import numpy as np

from hemo_mtl.data.sampling import balanced_indices


def test_minority_repeated_to_the_majority_count():
    y = [1, 0, 0, 0, 0]  # 1 positive, 4 negatives -> positive 3 extra times
    idx = balanced_indices(y)
    assert sorted(idx.tolist()) == [0, 0, 0, 0, 1, 2, 3, 4]


def test_remainder_drawn_without_replacement_and_unknown_kept_once():
    y = [1, 1, 0, 0, 0, 0, 0, np.nan]  # 2 pos, 5 neg: 3 extra = 1 whole copy + 1 drawn
    idx = balanced_indices(y, seed=3)
    counts = np.bincount(idx, minlength=len(y))
    labels = np.asarray(y)
    assert counts[labels == 0].tolist() == [1] * 5
    assert counts[7] == 1
    assert sorted(counts[:2].tolist()) == [2, 3]
    assert np.array_equal(idx, balanced_indices(y, seed=3))
    n_pos = sum(counts[i] for i in range(2))
    assert n_pos == 5  # balanced with the 5 negatives


def test_balanced_or_one_class_is_untouched():
    assert balanced_indices([1, 0]).tolist() == [0, 1]
    assert balanced_indices([0, 0, 0]).tolist() == [0, 1, 2]
