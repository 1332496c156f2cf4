import numpy as np
from scipy import ndimage
from skimage.measure import label as sk_label

from hemo_mtl.categories import SUBTYPES
import pytest

from hemo_mtl.inference.postprocess import clean_mask, contours, lesion_counts, nonzero_box, volumes_ml


def _mask():
    m = np.zeros((20, 20, 4), np.uint8)
    m[2:8, 2:8, 1:3] = 2  # 72-voxel SDH
    m[12, 12, 0] = 4  # 1-voxel IPH
    m[15:18, 3:6, 3] = 4  # 9-voxel IPH
    m[10:14, 15:19, 2] = 5
    m[11:13, 16:18, 2] = 0  # IVH ring with a hole
    return m


def test_lesion_counts_match_skimage_3d_labelling():
    m = _mask()
    ref = {s: int(sk_label(m == i + 1, connectivity=3).max()) for i, s in enumerate(SUBTYPES)}
    got = lesion_counts(m)
    assert {k: got[k] for k in SUBTYPES} == ref
    assert got["any"] == sum(ref.values())


def test_min_voxels_drops_only_small_lesions():
    m = _mask()
    out = clean_mask(m, min_voxels=5)
    assert out[12, 12, 0] == 0
    keep = m.copy()
    keep[12, 12, 0] = 0
    assert np.array_equal(out, keep)


def test_closing_fills_the_hole_in_plane_like_scipy():
    m = _mask()
    out = clean_mask(m, closing=1)
    ref = ndimage.binary_closing(m == 5, np.ones((3, 3, 1), bool), border_value=0)
    assert np.array_equal(out == 5, ref)
    assert (out[11:13, 16:18, 2] == 5).all()
    opened = clean_mask(m, opening=1)
    assert opened[12, 12, 0] == 0 and (opened[2:8, 2:8, 1:3] == 2).all()


def test_volumes_from_voxel_counts_and_spacing():
    m = _mask()
    spacing = (0.5, 0.8, 5.0)
    vol = volumes_ml(m, spacing)
    voxel_ml = 0.5 * 0.8 * 5.0 / 1000
    assert np.isclose(vol["SDH"], 72 * voxel_ml)
    assert np.isclose(vol["IPH"], 10 * voxel_ml)
    assert np.isclose(vol["any"], (m > 0).sum() * voxel_ml)
    assert volumes_ml(m, None) is None


def test_contours_are_region_boundaries():
    m = _mask()
    edge = contours(m)
    inner = m[3:7, 3:7, 1]
    assert (edge[3:7, 3:7, 1] == 0).all() and inner.all()
    assert (edge[2, 2:8, 1] == 2).all()


def _scattered(seed, shape=(40, 36, 5)):
    """Sparse random blobs of random subtypes, some touching the volume's faces."""
    rng = np.random.default_rng(seed)
    m = np.zeros(shape, np.uint8)
    for _ in range(6):
        x, y, z = (int(rng.integers(0, n)) for n in shape)
        m[max(x - 2, 0):x + 3, max(y - 3, 0):y + 2, z:z + 2] = rng.integers(1, len(SUBTYPES) + 1)
    return m


@pytest.mark.parametrize("seed", range(6))
def test_cropped_contours_and_counts_equal_the_whole_volume_computation(seed):
    m = _scattered(seed)
    same = ndimage.minimum_filter(m, footprint=np.ones((3, 3, 1), bool), mode="nearest") == ndimage.maximum_filter(
        m, footprint=np.ones((3, 3, 1), bool), mode="nearest")
    assert np.array_equal(contours(m), np.where(same, 0, m))
    assert np.array_equal(contours(m[:, :, 0]), np.where(same[:, :, 0], 0, m[:, :, 0]))  # one 2D slice
    ref = {s: int(sk_label(m == i + 1, connectivity=3).max()) for i, s in enumerate(SUBTYPES)}
    assert {k: lesion_counts(m)[k] for k in SUBTYPES} == ref


def test_nonzero_box_by_hand():
    m = np.zeros((10, 8, 6), np.uint8)
    assert nonzero_box(m) is None
    assert lesion_counts(m)["any"] == 0 and not contours(m).any()
    m[2, 3, 4] = 1
    m[5, 6, 1] = 3
    assert nonzero_box(m) == (slice(2, 6), slice(3, 7), slice(1, 5))
    assert nonzero_box(m, margin=2) == (slice(0, 8), slice(1, 8), slice(0, 6))
    assert nonzero_box(m[:, :, 4]) == (slice(2, 3), slice(3, 4))
