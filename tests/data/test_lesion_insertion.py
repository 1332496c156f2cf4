"""Synthetic bleeds drawn into known-empty slices: inside the skull, hyperdense, labelled as drawn."""
import numpy as np
import pytest

from hemo_mtl.categories import CATEGORY_IDS, LABELS
from hemo_mtl.data.lesion_insertion import intracranial_region, insert_bleed


def _head(size=96):
    """A brain-window slice: air, a saturated skull ring, brain at 0.4."""
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.zeros((size, size), np.float32)
    img[r < 40] = 1.0
    img[r < 36] = 0.4
    return img, r < 36


@pytest.mark.parametrize("subtype", ["SDH", "EDH", "IPH"])
def test_bleed_inside_the_skull_and_labelled(subtype):
    img, brain = _head()
    for seed in range(5):
        got = insert_bleed(img[None], "display", np.random.default_rng(seed), subtypes=(subtype,))
        if got is not None:
            break
    out, mask, drawn = got
    assert drawn == subtype and set(np.unique(mask)) == {0, CATEGORY_IDS[subtype]}
    assert (mask > 0).sum() >= 12 and not (mask > 0)[~brain].any()  # only inside the skull
    assert out[0][mask > 0].mean() > 0.5  # hyperdense against brain at 0.4 (edges blurred over a pixel)
    changed = np.abs(out[0] - img) > 1e-6
    assert not changed[~brain].any()  # skull and air untouched
    if subtype != "IPH":  # along the inner table: touches the skull's inner ring
        assert (mask > 0)[np.hypot(*np.indices(img.shape) - 48) > 32].any()


def test_no_closed_skull_no_bleed():
    assert intracranial_region(np.full((64, 64), 0.4, np.float32)) is None
    assert insert_bleed(np.zeros((1, 64, 64), np.float32), "display", np.random.default_rng(0)) is None


def test_dataset_draws_only_on_known_empty_training_slices(tmp_path):
    from PIL import Image

    from hemo_mtl.data.dataset import HemorrhageDataset
    from hemo_mtl.data.manifest import make_row, rows_to_frame

    img, _ = _head()
    rows = []
    for k, (lab, masked) in enumerate([([0] * 6, True), ([0] * 6, False), ([1, 0, 1, 0, 0, 0], False)]):
        path = tmp_path / f"{k}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(path)
        rows.append(make_row("p", k, "physionet", str(path), "display", lab, mask=f"{path}@0" if masked else None))
    frame = rows_to_frame(rows)
    ds = HemorrhageDataset(frame, image_size=96, train=True, augment={"enabled": False},
                           lesion_insertion={"p": 1.0, "subtypes": ["EDH"]})
    empty, unmasked, bleed = ds[0], ds[1], ds[2]
    assert empty["mask"].max() == CATEGORY_IDS["EDH"] and empty["cls"][LABELS.index("any")] == 1
    assert empty["cls"][LABELS.index("EDH")] == 1 and empty["cls"].sum() == 2 and len(empty["boxes"]) >= 1
    assert unmasked["mask"].max() == 0 and unmasked["cls"].sum() == 0  # no known-empty mask: left alone
    assert bleed["mask"].max() == 0 and bleed["cls"][LABELS.index("any")] == 1
    evaluation = HemorrhageDataset(frame, image_size=96, train=False, lesion_insertion={"p": 1.0})
    assert evaluation[0]["mask"].max() == 0  # never at evaluation
    with pytest.raises(ValueError, match="cannot be drawn"):
        HemorrhageDataset(frame, train=True, lesion_insertion={"p": 0.5, "subtypes": ["IVH"]})
