"""U-Net / PSPNet (smp decoders) and location heads on the shared trunk."""
import pytest
import torch
import torch.nn.functional as F

from hemo_mtl.models import build_model


def _batch(n=2, size=64):
    mask = torch.zeros(n, size, size, dtype=torch.int64)
    mask[0, 10:20, 12:30] = 4
    return {"image": torch.rand(n, 3, size, size), "cls": torch.zeros(n, 6), "cls_valid": torch.ones(n, 6),
            "mask": mask, "location": torch.tensor([2, -1][:n]),
            "has": {"cls": torch.ones(n, dtype=torch.bool), "mask": torch.tensor([True, False][:n]),
                    "boxes": torch.zeros(n, dtype=torch.bool), "location": torch.tensor([True, False][:n])}}


@pytest.mark.parametrize("head", ["unet", "pspnet"])
@pytest.mark.parametrize("mode,k", [("binary", 2), ("multiclass", 6)])
def test_smp_decoder_heads_shapes_loss_and_grad(head, mode, k):
    torch.manual_seed(0)
    model = build_model({"backbone": {"name": "resnet18", "in_chans": 3}, "heads": {"seg": {"type": head, "mode": mode}}})
    batch = _batch()
    losses = model(batch)
    assert set(losses) == {"loss_seg"} and torch.isfinite(losses["loss_seg"])
    losses["loss_seg"].backward()
    assert model.backbone.encoder.stages[0][0].weight.grad.abs().sum() > 0  # gradient reaches the encoder
    model.eval()
    prob = model(batch)["seg_prob"]
    assert prob.shape == (2, k, 64, 64)
    assert torch.allclose(prob.sum(1), torch.ones(2, 64, 64), atol=1e-5)


def test_seg_loss_is_a_connected_zero_without_masks():
    model = build_model({"backbone": {"name": "resnet18", "in_chans": 3}, "heads": {"seg": {"type": "unet"}}})
    batch = _batch()
    batch["has"]["mask"][:] = False
    loss = model(batch)["loss_seg"]
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert model.heads["seg"].predictor.weight.grad is not None


def test_location_loss_is_cross_entropy_on_known_slices_only():
    torch.manual_seed(0)
    model = build_model({"backbone": {"name": "resnet18", "in_chans": 3},
                         "heads": {"cls": {"type": "classification"}, "location": {"type": "location"}}})
    model.eval()  # deterministic features (BN running stats) for the reference computation
    batch = _batch()
    head = model.heads["location"]
    feats = model.backbone(batch["image"], with_fpn=False)
    logits = head.mlp(F.adaptive_avg_pool2d(feats.top, 1).flatten(1)).detach()
    head.train()
    got = head(feats, batch)["loss_location"].detach()
    assert float(got) == pytest.approx(float(F.cross_entropy(logits[:1], torch.tensor([2]))), rel=1e-5)
    batch["has"]["location"][:] = False
    assert float(head(feats, batch)["loss_location"].detach()) == 0.0
    head.eval()
    prob = head(feats, batch)["location_prob"]
    assert prob.shape == (2, 3) and torch.allclose(prob.sum(1), torch.ones(2))
