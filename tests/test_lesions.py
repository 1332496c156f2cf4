"""One connected-lesion labelling: per subtype, 2D and 3D, connectivity by neighbour count; checked
against scipy.ndimage.label / skimage.measure.label, by hand, and against the COCO export's instances."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label as sk_label
from skimage.measure import regionprops

from converters.mask_to_coco import MaskToCoco
from hemo_mtl.categories import SUBTYPES, UNKNOWN_SUBTYPE
from hemo_mtl.data.instances import mask_to_instances
from hemo_mtl.lesions import connected_lesions

# neighbour count -> skimage's connectivity (number of orthogonal hops)
SKIMAGE = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}


def _partition(labels: np.ndarray) -> set[frozenset]:
    """The components of a label image as sets of flat voxel indices (numbering left out)."""
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.flatnonzero(np.diff(flat[order])) + 1
    return {frozenset(g.tolist()) for g in np.split(order, bounds) if flat[g[0]] != 0}


def _random_mask(shape, seed):
    rng = np.random.default_rng(seed)
    return ((rng.random(shape) < 0.2) * rng.integers(1, UNKNOWN_SUBTYPE + 1, shape)).astype(np.uint8)


@pytest.mark.parametrize("shape,connectivity", [((30, 26), 4), ((30, 26), 8), ((16, 14, 6), 6),
                                                ((16, 14, 6), 18), ((16, 14, 6), 26)])
@pytest.mark.parametrize("seed", [0, 1])
def test_components_per_subtype_match_skimage(shape, connectivity, seed):
    mask = _random_mask(shape, seed)
    ids, subtypes = connected_lesions(mask, connectivity)
    assert len(subtypes) == ids.max() and ids.dtype == np.int32
    for label in range(1, len(SUBTYPES) + 1):
        reference = sk_label(mask == label, connectivity=SKIMAGE[connectivity])
        mine = np.where(np.isin(ids, np.flatnonzero(np.array(subtypes) == label) + 1), ids, 0)
        assert _partition(mine) == _partition(reference)
        assert subtypes.count(label) == reference.max()
    assert not ids[mask == UNKNOWN_SUBTYPE].any()  # unknown subtype: no lesion


def test_numbering_is_subtype_by_subtype_in_scipy_raster_order():
    mask = _random_mask((20, 20, 4), 3)
    ids, subtypes = connected_lesions(mask, 26)
    assert subtypes == sorted(subtypes)
    start = 0
    for label in range(1, len(SUBTYPES) + 1):
        ref, n = ndimage.label(mask == label, ndimage.generate_binary_structure(3, 3))
        np.testing.assert_array_equal(np.where(ref > 0, ref + start, 0), np.where(mask == label, ids, 0))
        start += n


def test_connectivity_by_hand():
    diagonal = np.zeros((4, 4), np.uint8)
    diagonal[0, 0] = diagonal[1, 1] = 2
    assert len(connected_lesions(diagonal, 8)[1]) == 1 and len(connected_lesions(diagonal, 4)[1]) == 2
    corner, edge = np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 3), np.uint8)
    corner[0, 0, 0] = corner[1, 1, 1] = 1  # share a corner only
    edge[0, 0, 0] = edge[1, 1, 0] = 1  # share an edge
    assert [len(connected_lesions(corner, c)[1]) for c in (26, 18, 6)] == [1, 2, 2]
    assert [len(connected_lesions(edge, c)[1]) for c in (26, 18, 6)] == [1, 1, 2]
    touching = np.zeros((2, 4), np.uint8)
    touching[0, :2], touching[0, 2:] = 1, 3  # an EDH touching a SAH: two lesions
    ids, subtypes = connected_lesions(touching, 8)
    assert subtypes == [1, 3] and ids.tolist() == [[1, 1, 2, 2], [0, 0, 0, 0]]
    assert connected_lesions(np.zeros((3, 3)), 8)[1] == []


def test_connectivity_must_fit_the_dimensions():
    with pytest.raises(ValueError, match="connectivity must be 4 or 8 for a 2D mask, got 26"):
        connected_lesions(np.zeros((3, 3), np.uint8), 26)
    with pytest.raises(ValueError, match="connectivity must be 6, 18 or 26 for a 3D mask, got 8"):
        connected_lesions(np.zeros((3, 3, 3), np.uint8), 8)


def test_training_instances_are_the_coco_export_s_instances():
    mask = np.zeros((24, 24), np.uint8)
    mask[2:6, 2:5] = 1
    mask[6, 5] = 1  # corner-touching: the same 8-connected EDH
    mask[10:14, 10:20] = 2
    mask[12, 12:14] = 4  # an IPH inside the SDH splits nothing: other subtype
    mask[20, 1] = mask[20, 3] = 5  # two IVH pixels one apart: two instances
    mask[0, 20:23] = UNKNOWN_SUBTYPE  # no instance
    boxes, labels, masks = mask_to_instances(mask)
    coco = MaskToCoco().instances(mask, with_mask=True)
    assert labels.tolist() == [i["category_id"] for i in coco] == [1, 2, 4, 5, 5]
    assert boxes.tolist() == [[x, y, x + w, y + h] for x, y, w, h in (i["bbox"] for i in coco)]
    assert all(np.array_equal(m.astype(bool), i["mask"]) for m, i in zip(masks, coco))
    for label in range(1, 6):  # and skimage's tight boxes, (min_row, min_col, max_row, max_col)
        ref = sorted([r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regionprops(sk_label(mask == label, connectivity=2)))
        assert sorted(boxes[labels == label].tolist()) == ref
    assert masks.dtype == np.uint8 and boxes.dtype == np.float32 and labels.dtype == np.int64
    empty = mask_to_instances(np.full((5, 7), UNKNOWN_SUBTYPE, np.uint8))
    assert [a.shape for a in empty] == [(0, 4), (0,), (0, 5, 7)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_instances_come_in_the_export_s_order(seed):
    """Same instances and the same order (subtype, then first pixel in raster order) on a busy slice."""
    mask = _random_mask((24, 20), seed)
    boxes, labels, masks = mask_to_instances(mask)
    coco = MaskToCoco().instances(mask, with_mask=True)
    assert [(b, int(c)) for b, c in zip(boxes.tolist(), labels)] == \
        [([x, y, x + w, y + h], i["category_id"]) for (x, y, w, h), i in ((i["bbox"], i) for i in coco)]
    assert all(np.array_equal(m.astype(bool), i["mask"]) for m, i in zip(masks, coco))


def test_labels_choose_which_values_form_lesions():
    from hemo_mtl.categories import MASK_LABELS

    mask = _random_mask((16, 14, 6), 5)
    ids, found = connected_lesions(mask, 26, MASK_LABELS)
    default_ids, default_found = connected_lesions(mask, 26)
    assert found[:len(default_found)] == default_found  # the subtypes first, numbered as by default
    assert np.array_equal(np.where(mask == UNKNOWN_SUBTYPE, 0, ids), default_ids)
    reference = sk_label(mask == UNKNOWN_SUBTYPE, connectivity=3)
    mine = np.where(mask == UNKNOWN_SUBTYPE, ids, 0)
    assert _partition(mine) == _partition(reference) and found.count(UNKNOWN_SUBTYPE) == reference.max() > 0
