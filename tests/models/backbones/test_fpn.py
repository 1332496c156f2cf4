from __future__ import annotations

import torch

from hemo_mtl.models.backbones import build_backbone


def test_fpn_levels_shapes_and_raw_top_feature():
    backbone = build_backbone({"name": "resnet18", "in_chans": 1, "fpn_channels": 32}).eval()
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        out = backbone(x)
        top = backbone.encoder(x)[-1]
    assert list(out.fpn) == ["p2", "p3", "p4", "p5", "pool"]
    assert dict(backbone.strides) == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "pool": 64}
    for name, fmap in out.fpn.items():
        s = backbone.strides[name]
        assert fmap.shape == (2, 32, -(-96 // s), -(-64 // s))
    assert torch.equal(out.top, top) and backbone.top_channels == 512


def test_fpn_is_skipped_when_not_needed():
    backbone = build_backbone({"name": "resnet18", "in_chans": 3})
    calls = []
    backbone.fpn.register_forward_hook(lambda *a: calls.append(1))
    out = backbone(torch.randn(1, 3, 64, 64), with_fpn=False)
    assert out.fpn is None and calls == []
