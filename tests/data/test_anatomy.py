"""The inside of the skull on brain-window slices: where a bleed may be."""
import numpy as np
import pytest
from scipy import ndimage

from hemo_mtl.data.anatomy import bleed_roi, intracranial_region, intracranial_roi


def _head(size=96, gap=0):
    """Air, scalp at 0.3, a saturated skull ring (r 36..40) with an optional gap, brain at 0.4 inside."""
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.zeros((size, size), np.float32)
    img[r < 44] = 0.3
    img[r < 40] = 1.0
    img[r < 36] = 0.4
    if gap:
        img[(r >= 36) & (r < 40) & (np.abs(xx - size / 2) < gap / 2) & (yy < size / 2)] = 0.4
    return img, r < 36


def test_roi_is_the_inside_of_the_skull_and_survives_brightness_and_contrast():
    img, brain = _head()
    assert np.array_equal(intracranial_roi(img), brain)
    shifted = np.clip(0.8 * img - 0.05, 0, 1)  # a darker, flatter draw of the augmentation: bone no longer at 1
    assert np.array_equal(intracranial_roi(shifted), brain)


@pytest.mark.parametrize("gap", [1, 12])
def test_roi_bridges_a_gap_in_the_skull_and_leaves_the_scalp_out(gap):
    """One pixel: the closing bridges it; twelve (thin frontal bone, a skull-base foramen): the convex
    hull of the bone does, and the gap's own soft tissue (between the tables) joins the region."""
    img, brain = _head(gap=gap)
    roi = intracranial_roi(img)
    scalp = np.hypot(*(np.indices(img.shape) - 48)) >= 40
    assert roi is not None and (roi & brain).sum() / brain.sum() > 0.99 and not (roi & scalp).any()
    assert (roi & ~brain).sum() <= (img[~brain & ~scalp] < 1.0).sum()  # at most the gap itself


def test_no_skull_no_roi():
    assert intracranial_roi(np.full((64, 64), 0.4, np.float32)) is None
    assert intracranial_roi(np.zeros((64, 64), np.float32)) is None
    assert intracranial_region(np.full((64, 64), 0.4, np.float32)) is None


def test_region_for_drawing_keeps_a_pixel_off_the_bone():
    img, brain = _head()
    region = intracranial_region(img)
    assert region.sum() < brain.sum() and not (region & ~brain).any()


def test_dataset_roi_is_aligned_with_the_augmented_slice(tmp_path):
    from PIL import Image

    from hemo_mtl.data.dataset import HemorrhageDataset, collate_samples
    from hemo_mtl.data.manifest import make_row, rows_to_frame

    img, brain = _head()
    flat = np.full_like(img, 0.4)
    rows = []
    for k, (arr, lab) in enumerate([(img, [1, 0, 1, 0, 0, 0]), (flat, [0] * 6)]):
        path = tmp_path / f"{k}.png"
        Image.fromarray((arr * 255).astype(np.uint8)).save(path)
        rows.append(make_row("p", k, "physionet", str(path), "display", lab))
    frame = rows_to_frame(rows)
    augment = {"rotate": 0.0, "translate": 0.06, "scale": [1.0, 1.0], "p_affine": 1.0, "flip_lr": 0.0,
               "brightness_contrast": 0.0}
    ds = HemorrhageDataset(frame, image_size=96, train=True, augment=augment, bleed_roi="skull")
    head, plain = ds[0], ds[1]
    assert head["has"]["roi"] and not plain["has"]["roi"] and not plain["roi"].any()
    # the roi follows the translated slice: every brain pixel (0.4) in, no scalp (0.3) or air, about
    # the brain's area (plus the interpolated rim of the inner table, which is where a subdural lies)
    image, roi = head["image"][0].numpy(), head["roi"].numpy()
    assert not np.array_equal(roi, brain)  # moved with the slice
    labels, _ = ndimage.label(np.abs(image - 0.4) < 0.02)  # the brain: the largest 0.4 component
    inner = labels == np.bincount(labels[labels > 0]).argmax()
    assert roi[inner].all() and not roi[np.abs(image - 0.3) < 0.02].any()
    assert not roi[image < 0.05].any() and abs(roi.sum() / brain.sum() - 1) < 0.1
    batch = collate_samples([head, plain])
    assert batch["roi"].shape == (2, 96, 96) and batch["has"]["roi"].tolist() == [True, False]
    assert "roi" not in HemorrhageDataset(frame, image_size=96)[0]  # off by default


def test_hyperdense_roi_is_the_dense_pixels_off_the_bone_grown_by_one():
    img, brain = _head()
    blob = np.hypot(*(np.indices(img.shape) - np.array([40, 56])[:, None, None])) < 5
    img[blob] = 0.75  # blood against brain at 0.4
    edge = brain & ~ndimage.binary_erosion(brain, iterations=2)  # 96 px: a rim of 2 px off the bone
    img[edge & (np.indices(img.shape)[0] > 60)] = 0.75  # the inner table's partial-volume edge: as bright
    roi = bleed_roi(img, "hyperdense")
    # the blob grown by one is in; smoothing may add the odd pixel at its border, never the far edge
    assert roi[ndimage.binary_dilation(blob, iterations=1) & brain].all()
    assert not (roi & ~ndimage.binary_dilation(blob, iterations=2)).any()
    assert np.array_equal(bleed_roi(img, "skull"), brain)
    assert bleed_roi(np.full((64, 64), 0.4, np.float32), "hyperdense") is None
    with pytest.raises(ValueError, match="bleed_roi"):
        bleed_roi(img, "brain")


def test_hyperdense_reference_is_brain_tissue_not_the_fluid_of_an_atrophic_head():
    """Fluid (0.1) over most of the inside pulls the whole inside's median to the fluid's level, and
    grey matter (0.48, less than 10% of the range above the white matter's 0.4) would pass for blood
    against it; against the brighter half's median (brain tissue) only the blood (0.75) is dense."""
    img, brain = _head()
    yy, xx = np.indices(img.shape)
    r = np.hypot(yy - 48, xx - 48)
    img[r < 27] = 0.1  # enlarged ventricles and sulci: 56% of the inside
    grey = (r >= 29) & (r < 31)  # a cortical band in the white matter (0.4) ring, off the bone's rim
    img[grey] = 0.48
    blob = np.hypot(yy - 48, xx - 79) < 2.5  # a small bleed in the same ring
    img[blob] = 0.75
    whole_median = np.median(img[brain])
    assert whole_median + 0.1 * (img.max() - img.min()) < 0.48  # the whole inside's median: grey would pass
    roi = bleed_roi(img, "hyperdense")
    assert roi[blob].all()
    assert not roi[grey & ~ndimage.binary_dilation(blob, iterations=3)].any()


def test_hyperdense_leaves_out_single_noise_pixels_of_a_grainy_slice():
    """Isolated bright pixels (JPEG or quantum noise at blood's level) are not a bleed; a bleed is."""
    img, brain = _head()
    rng = np.random.default_rng(0)
    interior = ndimage.binary_erosion(brain, iterations=6)  # away from the core's border, where the
    speckle = interior & (rng.random(img.shape) < 0.01)  # smoothing has fewer neighbours to average
    img[speckle] = 0.75
    yy, xx = np.indices(img.shape)
    blob = np.hypot(yy - 40, xx - 56) < 5
    img[blob] = 0.75
    roi = bleed_roi(img, "hyperdense")
    isolated = speckle & ~ndimage.binary_dilation(blob, iterations=3)
    isolated &= ndimage.convolve(speckle.astype(int), np.ones((5, 5), int), mode="constant") == 1  # alone
    assert isolated.sum() > 10
    assert not roi[isolated].any()
    assert roi[blob].all()
