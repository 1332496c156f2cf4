"""SlidingWindowModel: overlap-averaged windows + closing/opening give back what a per-window model sees."""
import numpy as np
import torch
from torch import nn

from hemo_mtl.inference.postprocess import clean_mask
from hemo_mtl.inference.window_eval import SlidingWindowModel


class PixelModel(nn.Module):
    """Class 3 (SAH) where the pixel is bright, background elsewhere; records window sizes it sees."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, batch):
        x = batch["image"][:, 0]
        self.seen.append(tuple(x.shape[-2:]))
        prob = torch.zeros(x.shape[0], 6, *x.shape[-2:])
        prob[:, 0] = (x <= 0.5).float()
        prob[:, 3] = (x > 0.5).float()
        return {"seg_prob": prob}


def test_full_slice_prediction_from_windows_then_morphology():
    image = torch.zeros(2, 1, 40, 40)
    image[0, 0, 10:20, 22:35] = 1.0  # a bleed crossing window borders
    image[0, 0, 2, 2] = 1.0  # a speck: the opening removes it
    model = PixelModel()
    out = SlidingWindowModel(model, size=16, stride=8, closing=1, opening=1).eval()({"image": image})
    assert set(model.seen) == {(16, 16)}  # the model only ever sees windows
    labels = out["seg_prob"].argmax(1).numpy()
    raw = np.where(image[:, 0].numpy() > 0.5, 3, 0).astype(np.uint8)
    want = np.moveaxis(clean_mask(np.moveaxis(raw, 0, -1), closing=1, opening=1), -1, 0)
    assert np.array_equal(labels, want)
    assert labels[0, 2, 2] == 0 and labels[0, 15, 30] == 3
    # slice labels from the cleaned mask: slice 0 has SAH, slice 1 nothing
    assert out["cls_prob"][:, 0].tolist() == [1.0, 0.0] and out["cls_prob"][0, 3] == 1.0
