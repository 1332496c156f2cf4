"""2.5D input (``context_slices``): neighbours stacked as channels, checked against hand indexing."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from hemo_mtl.categories import LABELS  # noqa: E402
from hemo_mtl.data.dataset import HemorrhageDataset, context_index  # noqa: E402
from hemo_mtl.data.windowing import window_hu  # noqa: E402

WINDOWS = {"brain": (40, 80), "subdural": (80, 200)}


def _rows(images, kind, slice_idx, patient="p1"):
    rows = []
    for image, k in zip(images, slice_idx):
        rows.append({"patient_id": patient, "study_id": patient, "slice_idx": k, "source": "test", "image": image,
                     "kind": kind, **{name: pd.NA for name in LABELS}, "mask": "", "has_cls": False,
                     "has_mask": False, "has_boxes": False, "spacing": "1 1 5"})
    frame = pd.DataFrame(rows)
    for name in LABELS:
        frame[name] = frame[name].astype("Int8")
    return frame


@pytest.fixture()
def volume(tmp_path):
    """8 x 8 x 5 HU volume: every slice differs (10 HU apart) and varies in-plane."""
    x, y = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    vol = np.stack([5.0 + 10 * k + 3 * x + y for k in range(5)], axis=2).astype(np.float32)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path, vol


def _expected(vol, z_list, windows):
    return np.concatenate([np.stack([window_hu(vol[:, :, z], *WINDOWS[w]) for z in z_list]) for w in windows])


@pytest.mark.parametrize("context", [1, 2])
def test_volume_stack_is_the_hand_indexed_neighbours_with_replicated_ends(volume, context):
    path, vol = volume
    frame = _rows([f"{path}#{k}" for k in range(5)], "hu", range(5))
    ds = HemorrhageDataset(frame, windows=("brain", "subdural"), image_size=8, context_slices=context)
    for z in range(5):
        wanted = [min(max(z + d, 0), 4) for d in range(-context, context + 1)]
        image = ds[z]["image"].numpy()
        assert image.shape == (2 * (2 * context + 1), 8, 8)
        assert np.allclose(image, _expected(vol, wanted, ("brain", "subdural")), atol=1e-6), (z, wanted)


def test_missing_neighbour_takes_the_nearest_existing_slice(volume):
    path, vol = volume
    # slice 2 absent from the manifest; rows deliberately out of order
    order = [4, 0, 3, 1]
    frame = _rows([f"{path}#{k}" for k in order], "hu", order)
    ds = HemorrhageDataset(frame, windows=("brain",), image_size=8, context_slices=1)
    got = {int(s["meta"]["slice_idx"]): s["image"].numpy() for s in (ds[i] for i in range(len(ds)))}
    # slice 1: wanted 2 is missing, 1 and 3 are equally near -> the centre side (1)
    for z, wanted in {0: [0, 0, 1], 1: [0, 1, 1], 3: [3, 3, 4], 4: [3, 4, 4]}.items():
        assert np.allclose(got[z], _expected(vol, wanted, ("brain",)), atol=1e-6), (z, wanted)


def test_context_index_against_a_hand_computed_case():
    s = np.array([2, 3, 6, 7, 20])
    got = s[context_index(s, 2)]
    assert got.tolist() == [[2, 2, 2, 3, 3], [2, 2, 3, 3, 6], [3, 6, 6, 7, 7], [6, 6, 7, 7, 7], [20, 20, 20, 20, 20]]  # 18, 19 nearest: 20, not 7
    with pytest.raises(ValueError, match="strictly increasing"):
        context_index(np.array([1, 1, 2]), 1)


def test_png_slices_are_read_in_slice_idx_order(tmp_path):
    pictures = {k: (np.full((6, 6), 30 * k + 10) + np.arange(6)[None]).astype(np.uint8) for k in range(4)}
    files = {}
    for k, pic in pictures.items():
        files[k] = str(tmp_path / f"z_{3 - k}.png")  # file names sort against slice order
        Image.fromarray(pic).save(files[k])
    order = [2, 0, 3, 1]
    frame = _rows([files[k] for k in order], "display", order)
    ds = HemorrhageDataset(frame, windows=("brain", "subdural"), image_size=6, context_slices=1)
    for i, z in enumerate(order):
        stack = np.stack([pictures[min(max(z + d, 0), 3)] / 255.0 for d in (-1, 0, 1)]).astype(np.float32)
        assert np.allclose(ds[i]["image"].numpy(), np.concatenate([stack, stack]), atol=1e-6)


def test_augmentation_moves_every_channel_alike(tmp_path):
    # identical slices: after the (shared) geometric transform all channels must still be identical
    x, y = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    plane = np.where((x - 12) ** 2 + (y - 18) ** 2 < 40, 70.0, 10.0 + x)
    vol = np.repeat(plane[..., None], 3, axis=2).astype(np.float32)
    path = tmp_path / "same.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    frame = _rows([f"{path}#{k}" for k in range(3)], "hu", range(3))
    augment = {"p_affine": 1.0, "rotate": 20.0, "translate": 0.1, "hu_shift": 0.0, "hu_scale": 0.0, "hu_noise": 0.0}
    ds = HemorrhageDataset(frame, windows=("brain", "subdural"), image_size=32, train=True, augment=augment,
                           context_slices=1)
    image = ds[1]["image"].numpy()
    assert image.shape == (6, 32, 32)
    assert not np.allclose(image[0], window_hu(plane, 40, 80), atol=1e-3)  # it was transformed
    # OpenCV >= 5 warps an image of more than 4 channels in chunks, and channels of different chunks come
    # out of the same warp with float32 rounding differences (~1.5e-8 on these [0, 1] values): 1e-6 allows
    # that and nothing more; a channel warped differently (another angle or shift) is off by > 1e-2
    for c in (1, 2):
        np.testing.assert_allclose(image[c], image[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(image[3 + c], image[3], rtol=0, atol=1e-6)


def test_neighbour_of_another_size_is_refused(tmp_path):
    files = []
    for k, shape in enumerate([(6, 6), (6, 6), (5, 6)]):
        files.append(str(tmp_path / f"s{k}.png"))
        Image.fromarray(np.zeros(shape, np.uint8)).save(files[-1])
    ds = HemorrhageDataset(_rows(files, "display", range(3)), windows=("brain",), image_size=6, context_slices=1)
    with pytest.raises(ValueError, match=r"s2\.png.*neighbour slice shape"):
        ds[1]
