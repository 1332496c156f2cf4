"""The one input geometry (SquareFit): the dataset's numpy step is albumentations' LongestMaxSize +
PadIfNeeded exactly, the predictor's torch step agrees with it, and the inverse puts maps back."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hemo_mtl.data.fit import SquareFit  # noqa: E402
from hemo_mtl.data.transforms import build_transforms  # noqa: E402
from hemo_mtl.inference import fit_to_square, unfit  # noqa: E402

SHAPES = [(100, 60), (37, 91), (64, 64), (13, 200), (300, 3)]


def _albumentations(size):
    """The reference: albumentations' own longest-side resize and centred zero pad."""
    return A.Compose([
        A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
        A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [1, 3, 9])
def test_numpy_step_is_albumentations_resize_and_pad(shape, channels):
    rng = np.random.default_rng(channels)
    img = rng.random((*shape, channels), dtype=np.float32)
    mask = rng.integers(0, 7, shape).astype(np.uint8)
    ref = _albumentations(64)(image=img, mask=mask)
    got = A.Compose(SquareFit(64).albumentations())(image=img, mask=mask)
    assert np.array_equal(got["image"], ref["image"]) and got["image"].shape == (64, 64, channels)
    assert np.array_equal(got["mask"], ref["mask"]) and got["mask"].dtype == np.uint8
    evaluation = build_transforms({"enabled": False}, train=False, image_size=64)(image=img, mask=mask)
    assert np.array_equal(evaluation["image"], ref["image"])  # the dataset's pipeline starts with it


@pytest.mark.parametrize("shape", SHAPES)
def test_predictor_step_matches_the_dataset_step(shape):
    img = np.random.default_rng(0).random((*shape, 2), dtype=np.float32)
    ref = SquareFit(64).image(img)
    got = fit_to_square(torch.from_numpy(img.transpose(2, 0, 1))[None], 64)[0].numpy().transpose(1, 2, 0)
    # cv2 and torch bilinear kernels, both half-pixel centred: equal up to float32 rounding
    assert np.allclose(got, ref, atol=1e-5)


def test_inverse_puts_maps_back_on_the_slice_grid():
    fit = SquareFit(64)
    x = torch.rand(2, 3, 64, 40)  # pad only: the inverse is exact
    assert torch.equal(unfit(fit.tensor(x), fit.fit(64, 40)), x)
    smooth = torch.linspace(0, 1, 90).view(1, 1, 90, 1).expand(1, 1, 90, 30).contiguous()  # a ramp survives resampling
    back = fit.invert(fit.tensor(smooth), fit.fit(90, 30))
    assert back.shape == smooth.shape and torch.allclose(back, smooth, atol=0.02)  # two bilinear resamplings
    assert fit.fit(90, 30).resized == (64, 21) and fit.fit(90, 30).pad == (0, 21)  # 30 * 64 / 90 = 21.3 -> 21
