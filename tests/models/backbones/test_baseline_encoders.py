"""Encoders the published baselines need: plain ViT as a 4-level trunk, VGG16, EfficientNetV2-L stages."""
import pytest
import torch

from hemo_mtl.models.backbones import FPN_STRIDES, build_encoder


def test_vit_tokens_reshaped_to_the_stride_16_grid():
    torch.manual_seed(0)
    enc = build_encoder("vit_tiny_patch16_224", in_chans=3)
    assert enc.strides == list(FPN_STRIDES) and enc.channels == [192] * 4
    x = torch.rand(1, 3, 96, 64)
    feats = enc(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(24, 16), (12, 8), (6, 4), (3, 2)]
    enc.eval()
    tokens = enc.model.forward_features(x)[:, 1:]  # reference: timm's own patch tokens, row-major
    assert torch.allclose(enc(x)[2][0, :, 1, 2], tokens[0, 1 * 4 + 2], atol=1e-6)


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_vgg_stages_at_strides_4_to_32(name):
    enc = build_encoder(name, in_chans=3)
    assert enc.strides == list(FPN_STRIDES) and enc.channels == [128, 256, 512, 512]
