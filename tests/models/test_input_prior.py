"""model.input_prior: the bleed region appended as an input channel, computed by the model itself."""
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from hemo_mtl.config import load_config
from hemo_mtl.config_schema import ConfigError
from hemo_mtl.models import build_model
from hemo_mtl.models.input_prior import InputPrior

REPO = Path(__file__).resolve().parents[2]


def _head_with_blob(size=64):
    """Air, a saturated skull ring, brain at 0.4 and a dense blob at 0.75 well off the bone."""
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.zeros((size, size), np.float32)
    img[r < 30] = 0.3
    img[r < 27] = 1.0
    img[r < 24] = 0.4
    blob = np.hypot(yy - 26, xx - 38) < 4
    img[blob] = 0.75
    return img, blob, r < 24


def test_channel_is_the_dense_region_of_the_chosen_slice_and_zero_without_a_skull():
    img, blob, brain = _head_with_blob()
    other = np.random.default_rng(0).random(img.shape).astype(np.float32)  # no skull at all
    x = torch.from_numpy(np.stack([np.stack([other, img]), np.stack([img, other])]))  # (2, 2, H, W)
    out = InputPrior("hyperdense", channel=1)(x)
    assert out.shape == (2, 3, 64, 64) and torch.equal(out[:, :2], x)
    expected = ndimage.binary_dilation(blob, iterations=1) & brain  # the blob grown by a pixel, inside the skull
    assert np.array_equal(out[0, 2].numpy(), expected.astype(np.float32))
    assert not out[1, 2].any()  # channel 1 of the second slice is noise: no skull, an empty channel
    assert np.array_equal(InputPrior("skull", channel=1)(x)[0, 2].numpy(), brain.astype(np.float32))


PRIOR_OFF = ["model.input_prior.kind=null", "model.backbone.in_chans=3", "model.heads.seg.pseudo_weight=0.0",
             "data.bleed_roi=null"]


def _config(tmp_path, *overrides):
    """The real-CT recipe with its input prior and pseudo-masks off, then ``overrides``."""
    return load_config(REPO / "configs" / "real" / "ctich_jpg.yaml", ["data.root=null", *PRIOR_OFF, *overrides])


def test_model_sees_the_extra_channel_in_training_and_eval(tmp_path, batch_fn):
    cfg = _config(tmp_path, "model.input_prior.kind=hyperdense", "model.backbone.in_chans=4", "data.image_size=64")
    torch.manual_seed(0)
    model = build_model(cfg["model"])
    img, blob, _ = _head_with_blob()
    image = torch.from_numpy(img)[None, None].repeat(2, 3, 1, 1)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model.eval()
    with torch.no_grad():
        out = model({"image": image})
    assert seen[0].shape == (2, 4, 64, 64) and torch.equal(seen[0][:, :3], image)
    assert seen[0][0, 3, 26, 38] == 1 and seen[0][0, 3, 32, 20] == 0  # the blob, the brain beside it
    assert out["cls_prob"].shape == (2, 6) and out["seg_prob"].shape[-2:] == (64, 64)
    model.train()
    batch = batch_fn([blob.astype(np.uint8) * 2, np.zeros((64, 64), np.uint8)], [True, True], [True, True],
                     [False, False], images=image)
    losses = model(batch)
    sum(losses.values()).backward()
    assert seen[-1].shape == (2, 4, 64, 64) and all(torch.isfinite(v) for v in losses.values())
    stem = next(w for w in model.backbone.parameters() if w.dim() == 4 and w.shape[1] == 4)
    assert stem.grad[:, 3].abs().sum() > 0  # the channel reaches the stem's weights


@pytest.mark.parametrize("overrides, message", [
    (["model.input_prior.kind=hyperdense"], r"in_chans=3 .* \+ 1 for model.input_prior"),
    (["model.input_prior.kind=brain", "model.backbone.in_chans=4"], "model.input_prior.kind must be one of"),
    (["model.input_prior.kind=skull", "model.backbone.in_chans=4", "data.windows=[subdural,brain,brain]"],
     "put brain first"),
    (["model.input_prior.kind=skull", "model.backbone.in_chans=4", "model.input_prior.channel=1"],
     r"channel=1 but the brain window's centre slice is channel 0"),
])
def test_config_errors_name_the_key(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, *overrides)


def test_export_and_sliding_window_refuse_it(tmp_path):
    from hemo_mtl.data.io import DataError
    from hemo_mtl.export import ExportError, export_checkpoint
    from hemo_mtl.inference.predictor import PredictOptions, Predictor

    cfg = _config(tmp_path, "model.input_prior.kind=hyperdense", "model.backbone.in_chans=4", "data.image_size=64")
    path = tmp_path / "model_final.pth"
    torch.save({"model": build_model(cfg["model"]).state_dict(), "config": cfg}, path)
    with pytest.raises(ExportError, match="input_prior"):
        export_checkpoint(path, "torchscript", tmp_path / "out")
    with pytest.raises(DataError, match="input_prior"):
        Predictor.from_checkpoint(path, PredictOptions(sliding_window=True))
