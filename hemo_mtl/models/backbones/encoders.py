"""Encoders: CNN/transformer trunks that return one feature map per stride 4, 8, 16, 32.

Every encoder here is random-initialised unless the config names a *local* weights file; no code path
downloads anything. Getting weights onto an offline machine:

- torchvision: on a machine with network, ``torchvision.models.get_model("resnet50",
  weights="DEFAULT")`` fills ``~/.cache/torch/hub/checkpoints/resnet50-*.pth`` (or download the URL
  listed by ``torchvision.models.get_model_weights("resnet50").DEFAULT.url``); copy that file over and
  set ``backbone.weights: /path/resnet50-0676ba61.pth``. It is a plain state dict, loaded with
  ``torch.load(weights_only=True)``; a checkpoint dict holding it under ``state_dict``/``model`` works too.
- timm: ``timm.create_model("convnext_tiny", pretrained=True)`` on a machine with network caches
  ``model.safetensors`` under ``~/.cache/huggingface/hub/models--timm--convnext_tiny.*``; copy that
  file and set ``backbone.weights: /path/model.safetensors``. It is handed to timm as
  ``pretrained_cfg_overlay=dict(file=...)``, which loads the file and never goes online.

Weights are loaded into the 3-channel model first; a 1- or 2-channel input then gets its first conv
adapted from the pretrained kernel (timm's ``adapt_input_conv``: summed for 1 channel), so a single HU
window still benefits from ImageNet features.

Norms stay trainable BatchNorm: torchvision's FrozenBatchNorm with random init does not normalise at
all, and Mask R-CNN losses blow up to NaN within a few steps.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torch import nn

from hemo_mtl.registry import BACKBONES

FPN_STRIDES = (4, 8, 16, 32)


class Encoder(nn.Module):
    """A trunk split into stages; ``forward`` returns one map per stride in ``strides``."""

    def __init__(self, stages: nn.ModuleList, in_chans: int):
        super().__init__()
        self.stages = stages
        self.in_chans = in_chans
        self.channels, self.strides = _probe(self, in_chans)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model reduced to the stride 4/8/16/32 maps, always NCHW."""

    def __init__(self, model: nn.Module, name: str, in_chans: int):
        super().__init__()
        self.in_chans = in_chans
        info = model.feature_info
        reductions = info.reduction()
        keep = [max(i for i, r in enumerate(reductions) if r == s) for s in FPN_STRIDES if s in reductions]
        if len(keep) != len(FPN_STRIDES):
            raise ValueError(
                f"timm model {name!r} gives feature strides {reductions}; the FPN needs {list(FPN_STRIDES)}"
            )
        self.model = model
        self.keep = keep
        self.nhwc = str(getattr(model, "output_fmt", "NCHW")).endswith("NHWC")
        self.channels = [info.channels()[i] for i in keep]
        self.strides = list(FPN_STRIDES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(x)
        feats = [feats[i] for i in self.keep]
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats


@torch.no_grad()
def _probe(encoder: nn.Module, in_chans: int, size: int = 64) -> tuple[list[int], list[int]]:
    """Channels and strides of each stage, measured once on a dummy input (no per-model tables)."""
    was_training = encoder.training
    encoder.eval()
    feats = encoder(torch.zeros(1, in_chans, size, size))
    encoder.train(was_training)
    channels = [f.shape[1] for f in feats]
    strides = [size // f.shape[-1] for f in feats]
    return channels, strides


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.pth`` (``weights_only=True``); unwraps ``state_dict``/``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or one under 'state_dict'/'model')")
    return state


def _load_torchvision_weights(model: nn.Module, path: str | Path, classifier: tuple[str, ...]) -> None:
    """Load a local torchvision checkpoint; only the ImageNet classifier may be missing/extra."""
    state = load_state_dict_file(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: weights do not fit {type(model).__name__}: {str(err)[:300]}") from err
    bad = [k for k in list(missing) + list(unexpected) if not k.startswith(classifier)]
    if bad:
        raise ValueError(f"{path}: weights do not match the architecture; mismatched keys: {bad[:5]}")


def adapt_first_conv(module: nn.Module, in_chans: int) -> None:
    """Replace the first 3-channel conv by an ``in_chans`` one, keeping (adapted) kernel weights."""
    from timm.models import adapt_input_conv

    if in_chans == 3:
        return
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                new = nn.Conv2d(
                    in_chans, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None, child.padding_mode,
                )
                with torch.no_grad():
                    new.weight.copy_(adapt_input_conv(in_chans, child.weight))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, name, new)
                return
    raise ValueError(f"{type(module).__name__}: no 3-channel input conv found to adapt")


def _check_in_chans(in_chans: int) -> int:
    """Any positive count: HU windows x (2 * data.context_slices + 1) neighbouring slices (2.5D)."""
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"backbone.in_chans must be a positive int (windows x 2.5D slices), got {in_chans!r}")
    return in_chans


def _torchvision_model(name: str, weights: str | None, classifier: tuple[str, ...], **kwargs) -> nn.Module:
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if weights:
        _load_torchvision_weights(model, weights, classifier)
    return model


def _resnet_stages(m: nn.Module) -> nn.ModuleList:
    return nn.ModuleList([
        nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1), m.layer2, m.layer3, m.layer4,
    ])


def _densenet_stages(m: nn.Module) -> nn.ModuleList:
    f = m.features
    return nn.ModuleList([
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1),
        nn.Sequential(f.transition1, f.denseblock2),
        nn.Sequential(f.transition2, f.denseblock3),
        nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=True)),
    ])


def _efficientnet_stages(m: nn.Module) -> nn.ModuleList:
    # features: stem(s2), blocks..., final 1x1 conv; stage boundaries at strides 4, 8, 16, 32
    f = m.features
    return nn.ModuleList([f[0:3], f[3:4], f[4:6], f[6:]])


def _vgg_stages(m: nn.Module) -> nn.ModuleList:
    # features: conv blocks each closed by a max-pool; cut after the 2nd..5th pool (strides 4..32)
    f = m.features
    pools = [i for i, layer in enumerate(f) if isinstance(layer, nn.MaxPool2d)]
    return nn.ModuleList([f[: pools[1] + 1], f[pools[1] + 1: pools[2] + 1], f[pools[2] + 1: pools[3] + 1],
                          f[pools[3] + 1: pools[4] + 1]])


_TORCHVISION = {
    "resnet18": (_resnet_stages, ("fc.",)),
    "resnet34": (_resnet_stages, ("fc.",)),
    "resnet50": (_resnet_stages, ("fc.",)),
    "densenet121": (_densenet_stages, ("classifier.",)),
    "densenet161": (_densenet_stages, ("classifier.",)),
    "efficientnet_b0": (_efficientnet_stages, ("classifier.",)),
    "efficientnet_b5": (_efficientnet_stages, ("classifier.",)),
    "efficientnet_v2_s": (_efficientnet_stages, ("classifier.",)),
    "efficientnet_v2_l": (_efficientnet_stages, ("classifier.",)),
    "vgg16": (_vgg_stages, ("classifier.",)),
    "vgg16_bn": (_vgg_stages, ("classifier.",)),
}


def build_torchvision_encoder(name: str, in_chans: int = 3, weights: str | None = None, **kwargs) -> Encoder:
    """A torchvision classifier from ``_TORCHVISION`` split at strides 4/8/16/32."""
    split, classifier = _TORCHVISION[name]
    model = _torchvision_model(name, weights, classifier, **kwargs)
    adapt_first_conv(model, _check_in_chans(in_chans))
    return Encoder(split(model), in_chans)


def _timm_weights(weights: str | None) -> dict:
    """timm's arguments for a local weights file (``pretrained_cfg_overlay`` never goes online)."""
    if weights and not Path(weights).is_file():
        raise FileNotFoundError(f"backbone weights file not found: {weights}")
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))) if weights else {}


def build_timm_encoder(name: str, in_chans: int = 3, weights: str | None = None, **kwargs) -> TimmEncoder:
    """Any timm model that supports ``features_only``; weights only from a local file."""
    import timm

    model = timm.create_model(
        name, features_only=True, in_chans=_check_in_chans(in_chans), **_timm_weights(weights), **kwargs
    )
    return TimmEncoder(model, name, in_chans)


class ViTEncoder(nn.Module):
    """A plain ViT (timm) as a 4-level trunk: patch tokens reshaped to the stride-16 grid, resampled to
    strides 4 and 8 (bilinear) and 32 (max-pool), as ViTDet's simple pyramid without learned layers.

    ``dynamic_img_size`` lets one model take any multiple of the patch size (the probe runs at 64)."""

    def __init__(self, name: str, in_chans: int = 3, weights: str | None = None, **kwargs):
        super().__init__()
        import timm

        kwargs.setdefault("dynamic_img_size", True)
        self.model = timm.create_model(name, num_classes=0, in_chans=_check_in_chans(in_chans),
                                       **_timm_weights(weights), **kwargs)
        self.in_chans = in_chans
        self.patch = int(self.model.patch_embed.patch_size[0])
        if self.patch != 16:
            raise ValueError(f"ViT {name!r} has patch size {self.patch}; the trunk expects 16 (stride-16 tokens)")
        dim = int(self.model.embed_dim)
        self.channels, self.strides = [dim] * 4, list(FPN_STRIDES)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens:]
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        grid = tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        up = lambda f: nn.functional.interpolate(grid, scale_factor=f, mode="bilinear", align_corners=False)  # noqa: E731
        return [up(4), up(2), grid, nn.functional.max_pool2d(grid, 2, ceil_mode=True)]


def _register(name: str, factory, doc: str) -> None:
    """``BACKBONES[name]`` = ``factory(name, in_chans, weights, **kwargs)``."""
    def build(in_chans: int = 3, weights: str | None = None, **kwargs) -> nn.Module:
        return factory(name, in_chans, weights, **kwargs)

    build.__name__ = name
    build.__doc__ = doc
    BACKBONES.register(name, build)


VIT_NAMES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")

TIMM_NAMES = ("mobilevit_s", "mobilevit_xs", "convnext_tiny", "swinv2_tiny_window8_256", "swinv2_cr_tiny_ns_224")
TIMM_PREFIX = "timm/"  # ``timm/<model>`` builds any other timm model with features_only

for _name in _TORCHVISION:
    _register(_name, build_torchvision_encoder, f"torchvision {_name} split at strides 4/8/16/32.")
for _name in TIMM_NAMES:
    _register(_name, build_timm_encoder, f"timm {_name} (features_only).")
for _name in VIT_NAMES:
    _register(_name, ViTEncoder, f"timm {_name} as a stride 4/8/16/32 trunk.")


def build_encoder(name: str, in_chans: int = 3, weights: str | None = None, **kwargs) -> nn.Module:
    """An encoder by registry name, or ``timm/<model>`` for any timm model with ``features_only``."""
    if name.startswith(TIMM_PREFIX):
        return build_timm_encoder(name[len(TIMM_PREFIX):], in_chans, weights, **kwargs)
    encoder = BACKBONES.build(name, in_chans=in_chans, weights=weights, **kwargs)
    if list(encoder.strides) != list(FPN_STRIDES):
        raise ValueError(f"backbone {name!r} gives strides {encoder.strides}, expected {list(FPN_STRIDES)}")
    return encoder


def level_name(stride: int) -> str:
    """FPN level name of a stride: 4 -> 'p2' (log2 of the stride, as in detectron2)."""
    return f"p{int(math.log2(stride))}"
