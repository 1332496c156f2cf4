"""A non-learned input channel: where a bleed may be on the slice (``data.anatomy.bleed_roi``).

From random init and a dozen patients, a network does not find out that a bleed is the part of the
inside of the skull denser than brain, off the inner table: it learns where in the head bleeding
slices lie, and ranks the slices of one patient instead of telling bleeding patients from normal
ones. Handed that region as a channel, it learns which of its pixels are blood. The model computes
the channel from its own input, so training (after augmentation), prediction, flip TTA and the
cascade gate all see the channel of the image they run on, with no second copy of the
preprocessing. NumPy/SciPy per slice (``anatomy`` is hand-written, see there): it is not traced into
an ONNX or TorchScript graph.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hemo_mtl.config_schema import NONNEGATIVE, K
from hemo_mtl.data.anatomy import BLEED_ROIS, bleed_roi, check_bleed_roi

INPUT_PRIOR_SCHEMA = {
    "kind": K(None, f"append where a bleed may be as one more input channel: one of {BLEED_ROIS} "
                    "(data.bleed_roi's regions; in_chans counts it); null = off", "str"),
    "channel": K(0, "the input channel it is computed on: the brain window's centre slice, "
                    "= data.context_slices (the brain window first in data.windows)", range=NONNEGATIVE),
}


class InputPrior(nn.Module):
    """(B, C, H, W) -> (B, C + 1, H, W): the input with the region of its ``channel`` appended (1 inside,
    0 outside, all 0 where the slice shows no skull)."""

    def __init__(self, kind: str, channel: int = 0):
        super().__init__()
        if check_bleed_roi(kind) is None:
            raise ValueError("InputPrior needs a region name, got None")
        self.kind, self.channel = kind, int(channel)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        slices = image[:, self.channel].detach().float().cpu().numpy()
        prior = np.zeros(slices.shape, np.float32)
        for i, gray in enumerate(slices):
            region = bleed_roi(gray, self.kind)
            if region is not None:
                prior[i] = region
        return torch.cat([image, torch.from_numpy(prior)[:, None].to(image)], dim=1)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, channel={self.channel}"
