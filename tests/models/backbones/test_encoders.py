from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from hemo_mtl.models.backbones import FPN_STRIDES, adapt_first_conv, build_encoder, load_state_dict_file
from hemo_mtl.registry import BACKBONES

SLOW = {"densenet161", "efficientnet_b5"}
EXTRA = {"swinv2_tiny_window8_256": {"img_size": 64}, "swinv2_cr_tiny_ns_224": {"img_size": 64}}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BACKBONES.names()]


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_gives_four_maps_at_strides_4_to_32(name, in_chans, no_network):
    encoder = build_encoder(name, in_chans=in_chans, **EXTRA.get(name, {})).eval()
    with torch.no_grad():
        feats = encoder(torch.randn(2, in_chans, 64, 64))
    assert encoder.strides == list(FPN_STRIDES)
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 64 // s) for c, s in zip(encoder.channels, FPN_STRIDES)]
    assert all(torch.isfinite(f).all() for f in feats)


def test_required_backbones_are_registered():
    required = {"resnet18", "resnet34", "resnet50", "densenet121", "densenet161", "efficientnet_b0",
                "efficientnet_b5", "efficientnet_v2_s", "mobilevit_s", "mobilevit_xs", "convnext_tiny"}
    assert required <= set(BACKBONES.names())
    assert any(n.startswith("swinv2") for n in BACKBONES.names())


def test_norms_are_trainable_batchnorm_not_frozen():
    encoder = build_encoder("resnet50", in_chans=1)
    norms = [m for m in encoder.modules() if "Norm" in type(m).__name__]
    assert norms and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
    assert all(p.requires_grad for m in norms for p in m.parameters())


def test_any_timm_features_only_model_by_prefix_and_clear_error_for_wrong_strides():
    encoder = build_encoder("timm/resnet18", in_chans=1)
    assert encoder.channels == [64, 128, 256, 512]  # timm resnet18 features_only: strides 4..32
    with pytest.raises(ValueError, match="strides"):
        build_encoder("timm/vit_tiny_patch16_224", in_chans=1)


def test_torchvision_local_weights_are_loaded_and_first_conv_summed_for_one_channel(tmp_path, no_network):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    rgb = build_encoder("resnet18", in_chans=3, weights=str(path))
    assert torch.equal(rgb.stages[3][1].conv2.weight, reference.layer4[1].conv2.weight)
    gray = build_encoder("resnet18", in_chans=1, weights=str(path))
    # ImageNet kernels folded onto one channel: the sum over RGB (timm's adapt_input_conv rule)
    assert torch.allclose(gray.stages[0][0].weight, reference.conv1.weight.sum(dim=1, keepdim=True))


def test_checkpoint_dict_is_unwrapped(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert torch.equal(load_state_dict_file(path)["w"], torch.ones(2))


def test_timm_local_weights_via_pretrained_cfg_overlay(tmp_path, no_network):
    reference = timm.create_model("mobilevit_xs", pretrained=False)
    path = tmp_path / "mobilevit_xs.pth"
    torch.save(reference.state_dict(), path)
    encoder = build_encoder("mobilevit_xs", in_chans=1, weights=str(path))
    stem = dict(encoder.named_parameters())["model.stem.conv.weight"]
    assert torch.allclose(stem, reference.stem.conv.weight.sum(dim=1, keepdim=True))


def test_bad_weights_raise_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_encoder("resnet18", weights=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="resnet50.pth"):
        build_encoder("resnet18", weights=str(wrong))
    with pytest.raises(ValueError, match="in_chans"):
        build_encoder("resnet18", in_chans=0)


def test_many_input_channels_for_2p5d_stacks():
    """3 windows x 3 neighbouring slices = 9 channels: the stem is widened (timm's adapt_input_conv)."""
    encoder = build_encoder("resnet18", in_chans=9)
    feats = encoder(torch.randn(1, 9, 64, 64))
    assert len(feats) == 4 and feats[0].shape[0] == 1


def test_adapt_first_conv_keeps_output_for_replicated_gray_input():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    ref = net[0].weight.detach().clone()
    adapt_first_conv(net, 1)
    x = torch.randn(1, 1, 8, 8)
    expected = torch.nn.functional.conv2d(x.expand(1, 3, 8, 8), ref, net[0].bias)
    assert torch.allclose(net(x), expected, atol=1e-5)
