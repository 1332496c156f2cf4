"""Oversampling: hand-computed index lists and repeat factors."""
import numpy as np
import pytest

from hemo_mtl.data.sampling import balanced_indices, repeat_counts, repeat_factors


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


def test_repeat_factors_by_hand():
    # subtype 0 on 1 of 4 slices (f = 0.25), subtype 1 on 3 of 4 (f = 0.75), threshold 0.5:
    # r_0 = sqrt(0.5 / 0.25) = sqrt(2), r_1 = max(1, sqrt(0.5 / 0.75)) = 1; a slice takes its max
    presence = [[1, 0], [0, 1], [1, 1], [0, 0], [0, np.nan]]
    # with the 5th slice counted, f_0 = 2/5 and f_1 = 2/5 -> r = sqrt(0.5 / 0.4) for both
    r = repeat_factors(presence, 0.5)
    assert r == pytest.approx([np.sqrt(1.25)] * 3 + [1.0, 1.0])
    r = repeat_factors([[1, 0], [0, 1], [0, 1], [0, 1]], 0.5)
    assert r == pytest.approx([np.sqrt(2), 1, 1, 1])
    assert repeat_factors([[1, 0], [1, 0]], 0.5) == pytest.approx([1, 1])  # common or absent: no repeat
    with pytest.raises(ValueError, match="repeat_threshold must be > 0"):
        repeat_factors([[1]], 0.0)


def test_repeat_counts_stochastic_rounding_is_seeded_and_unbiased():
    factors = np.array([1.0, 2.0, 1.25, 3.5])
    a = repeat_counts(factors, np.random.default_rng(5))
    assert np.array_equal(a, repeat_counts(factors, np.random.default_rng(5)))
    counts = np.stack([repeat_counts(factors, np.random.default_rng(s)) for s in range(2000)])
    assert counts[:, 0].tolist() == [1] * 2000 and counts[:, 1].tolist() == [2] * 2000
    assert set(counts[:, 2]) == {1, 2} and set(counts[:, 3]) == {3, 4}
    assert counts.mean(0) == pytest.approx(factors, abs=0.05)
