"""Semantic segmentation decoder on the FPN: background + 5 subtypes (or binary "any bleed").

Panoptic-FPN-style: each level p2..p5 is brought to stride 4 by conv + 2x upsampling steps and the
maps are summed. The stride-4 logits are upsampled to full
resolution; a light residual refinement (stride-4 features upsampled, concatenated with the input
image, two convs, last one zero-initialised) corrects the thin edges of SAH lines and small bleeds
that a x4 bilinear upsample blurs; ``refine: false`` drops it for speed. The classifier bias starts
at a ~1% bleed prior so early training is not spent unlearning uniform class scores.
Loss: cross-entropy + soft Dice computed per class, only on slices that really have a mask, plus
(multiclass) a soft Dice on the "any bleed" region: every subtype's pixels then teach the trunk what
blood looks like from the first steps, before the rarer subtypes are told apart.
Mask pixels of unknown subtype (``UNKNOWN_SUBTYPE``, a binary mask on a slice with several
subtypes) are bleed for the cross-entropy (-log(1 - P(background))) and the "any bleed" Dice, and
left out of the per-subtype Dice; a batch without them computes exactly what it did before.
Slices with slice labels but no mask (most of a real release) teach the segmenter too when
``weak_weight`` > 0: multiple-instance learning, the mean log-odds (bleed, and in multiclass mode each
subtype, against background) of the slice's top ``weak_topk`` share of pixels is scored by BCE against
its label, so a subdural slice must light up as subdural somewhere and a normal slice nowhere (top-k
pooling of a segmentation map as in weakly supervised segmentation from image labels).
``pseudo_weight`` > 0 gives those slices a mask instead: a no-bleed slice is all background (exact,
by its label), a bleed slice's ``roi`` (``data.bleed_roi: hyperdense``, the pixels inside the skull
denser than brain) is its bleed, of the slice's subtype when it has one, else of unknown subtype, and
the mask loss scores it. Acute blood is hyperdense, so this is an intensity prior turned into noisy
dense labels (as in self-training from thresholded pseudo-masks); calcifications and the falx are
hyperdense too, and the no-bleed slices, which carry them without a bleed, teach them apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hemo_mtl.categories import SUBTYPES, UNKNOWN_SUBTYPE
from hemo_mtl.config_schema import OPEN_FRACTION, K, defaults_of
from hemo_mtl.registry import HEADS

from ..losses import masked_bce_with_logits, soft_dice_loss, subtype_partial_cross_entropy, zero_loss


def _conv_gn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True)
    )


class _ScaleBranch(nn.Sequential):
    """Conv(s) + 2x upsampling from one FPN stride down to stride 4."""

    def __init__(self, cin: int, cout: int, n_up: int):
        layers: list[nn.Module] = []
        for i in range(max(n_up, 1)):
            layers.append(_conv_gn_relu(cin if i == 0 else cout, cout))
            if n_up:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        super().__init__(*layers)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Match the stride-4 grid when the input size is not a multiple of 32 (rounding differs)."""
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SemanticSegHead(nn.Module):
    """The loss and outputs every semantic-segmentation head shares; subclasses define ``logits``.

    Loss: CE (pixel mean) + per-subtype soft Dice + (multiclass) soft Dice on the "any bleed" region,
    over the slices with ``has["mask"]``; an exact, connected 0 when none has one.
    """

    task = "seg"
    # the loss keys of every segmentation head (``_init_loss``'s arguments), spread into each head's SCHEMA
    LOSS_SCHEMA = {
        "ce_weight": K(1.0),
        "dice_weight": K(1.0),
        "dice_include_background": K(False),
        "any_dice_weight": K(1.0, "multiclass: extra Dice on any bleed = 1 - P(background)"),
        "class_weight": K(None, "CE weight per class (background first); null = 1", "list", items="float"),
        "weak_weight": K(0.0, "slices with slice labels but no mask: BCE of the top-k pooled log-odds (bleed; "
                              "multiclass: and each subtype) against the labels (multiple-instance learning); 0 = off"),
        "weak_topk": K(0.01, "share of a slice's pixels the weak loss pools (about a small bleed's area)",
                       range=OPEN_FRACTION),
        "pseudo_weight": K(0.0, "slices with slice labels but no mask: a no-bleed slice all background, a bleed "
                                "slice's data.bleed_roi (hyperdense) its bleed, scored by the mask loss; 0 = off"),
    }

    def _init_loss(self, mode: str, ce_weight: float = 1.0, dice_weight: float = 1.0,
                   dice_include_background: bool = False, any_dice_weight: float = 1.0, class_weight=None,
                   weak_weight: float = 0.0, weak_topk: float = 0.01, pseudo_weight: float = 0.0) -> None:
        """The loss keys of ``LOSS_SCHEMA`` (each head passes them through as ``**loss``)."""
        if mode not in ("multiclass", "binary"):
            raise ValueError(f"heads.seg.mode must be 'multiclass' or 'binary', got {mode!r}")
        self.mode = mode
        self.num_classes = 1 + (len(SUBTYPES) if mode == "multiclass" else 1)
        if class_weight is not None:  # CE weight per class: lifts thin, rare subtypes (SAH) that argmax drowns
            if len(class_weight) != self.num_classes or min(class_weight) <= 0:
                names = ["background", *SUBTYPES] if mode == "multiclass" else ["background", "bleed"]
                raise ValueError(f"heads.seg.class_weight needs {self.num_classes} positive values "
                                 f"({', '.join(names)}), got {list(class_weight)}")
            self.register_buffer("class_weight", torch.as_tensor(class_weight, dtype=torch.float32), persistent=False)
        else:
            self.class_weight = None
        self.ce_weight, self.dice_weight = float(ce_weight), float(dice_weight)
        self.dice_include_background = bool(dice_include_background)
        self.any_dice_weight = float(any_dice_weight) if self.mode == "multiclass" else 0.0
        self.weak_weight, self.weak_topk = float(weak_weight), float(weak_topk)
        self.pseudo_weight = float(pseudo_weight)
        self.loss_names = ("loss_seg",) + (("loss_seg_weak",) if self.weak_weight else ()) \
            + (("loss_seg_pseudo",) if self.pseudo_weight else ())

    def logits(self, feats, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.long()
        return (mask > 0).long() if self.mode == "binary" else mask

    def loss(self, logits: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        out = {"loss_seg": self.mask_loss(logits, batch)}
        if self.weak_weight:
            out["loss_seg_weak"] = self.weak_weight * self.weak_loss(logits, batch)
        if self.pseudo_weight:
            out["loss_seg_pseudo"] = self.pseudo_weight * self.pseudo_loss(logits, batch)
        return out

    @staticmethod
    def bleed_log_odds(logits: torch.Tensor) -> torch.Tensor:
        """(B, H, W) log(P(bleed) / P(background)), P(bleed) = any subtype."""
        return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]

    def weak_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """Multiple-instance loss of the unmasked slices with known labels: per label the head can tell
        (``any``; multiclass: and each subtype), the top-k mean log-odds against background scored by BCE
        against the slice label (unknown labels left out). With ``batch["roi"]`` (``data.bleed_roi``)
        only slices with a skull inside count, the top k are taken inside it and every pixel outside is
        background (BCE of the bleed log-odds to 0, averaged over those pixels)."""
        device = logits.device
        roi = batch.get("roi")
        keep = (batch["has"]["cls"].to(device).bool() & batch["cls_valid"].to(device).bool().any(dim=1)
                & ~batch["has"]["mask"].to(device).bool())
        if roi is not None:
            keep = keep & batch["has"]["roi"].to(device).bool()
        if not bool(keep.any()):
            return zero_loss(logits)
        logits = logits[keep]
        bleed = self.bleed_log_odds(logits).flatten(1)  # (B, HW)
        z = bleed[:, None]
        if self.mode == "multiclass":  # LABELS = any + SUBTYPES: the seg classes' order after background
            z = torch.cat([z, (logits[:, 1:] - logits[:, :1]).flatten(2)], dim=1)  # (B, 6, HW)
        labels = z.shape[1]
        target = batch["cls"].to(device)[keep][:, :labels].to(z.dtype)
        valid = batch["cls_valid"].to(device)[keep][:, :labels].to(z.dtype)
        k = max(1, int(round(self.weak_topk * z.shape[2])))
        if roi is None:  # no region: the bleed may be anywhere, nothing is outside
            return masked_bce_with_logits(z.topk(k, dim=2).values.mean(dim=2), target, valid)
        roi = roi.to(device)[keep].flatten(1)
        top = z.masked_fill(~roi[:, None], float("-inf")).topk(k, dim=2).values
        found = torch.isfinite(top)  # a roi smaller than k pixels pools what it has
        pooled = top.masked_fill(~found, 0.0).sum(2) / found.sum(2).clamp(min=1)
        outside = ~roi  # (B, HW); not empty: a roi is the inside of a skull that leaves room around it
        background = (F.softplus(bleed) * outside).sum() / outside.sum().clamp(min=1)
        return masked_bce_with_logits(pooled, target, valid) + background

    def pseudo_masks(self, batch: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep (B,), masks (B, H, W)) of the unmasked slices with a known ``any`` label: all
        background without a bleed; with one, ``roi`` is bleed, of the slice's one positive subtype
        when all five labels are known and exactly one is positive, else ``UNKNOWN_SUBTYPE``. A bleed
        slice without a roi (no skull found) is left out."""
        roi = batch.get("roi")
        if roi is None:
            raise ValueError("heads.seg.pseudo_weight needs data.bleed_roi (hyperdense) for the bleed slices' masks")
        cls, valid = batch["cls"].to(device), batch["cls_valid"].to(device).bool()
        bleed = cls[:, 0] > 0.5
        keep = (batch["has"]["cls"].to(device).bool() & valid[:, 0] & ~batch["has"]["mask"].to(device).bool()
                & (~bleed | batch["has"]["roi"].to(device).bool()))
        subtypes = cls[:, 1:] > 0.5
        single = valid[:, 1:].all(dim=1) & (subtypes.sum(dim=1) == 1)
        unknown = torch.full_like(bleed, UNKNOWN_SUBTYPE, dtype=torch.long)
        code = torch.where(single, subtypes.float().argmax(dim=1) + 1, unknown) * bleed.long()
        masks = roi.to(device).long() * code[:, None, None]
        return keep, masks

    def pseudo_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        keep, masks = self.pseudo_masks(batch, logits.device)
        if not bool(keep.any()):
            return zero_loss(logits)
        return self.dense_loss(logits[keep], self.target(masks[keep]))

    def mask_loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        keep = batch["has"]["mask"].to(logits.device).bool()
        if not bool(keep.any()):
            return zero_loss(logits)
        return self.dense_loss(logits[keep], self.target(batch["mask"].to(logits.device)[keep]))

    def dense_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """CE + per-subtype soft Dice (+ the any-bleed Dice) of (N, K, H, W) logits against a mask."""
        unknown = target == UNKNOWN_SUBTYPE  # none in binary mode: there it is just bleed
        total = self.ce_weight * subtype_partial_cross_entropy(logits, target, UNKNOWN_SUBTYPE, self.class_weight)
        prob = logits.softmax(dim=1)
        if self.dice_weight:
            has_unknown = bool(unknown.any())
            subtype = target.masked_fill(unknown, 0) if has_unknown else target
            total = total + self.dice_weight * soft_dice_loss(
                prob, subtype, include_background=self.dice_include_background, valid=~unknown if has_unknown else None)
        if self.any_dice_weight:  # the bleed/no-bleed region all subtypes share (nnU-Net's region training)
            bleed = torch.stack([prob[:, 0], 1.0 - prob[:, 0]], dim=1)
            total = total + self.any_dice_weight * soft_dice_loss(bleed, (target > 0).long())
        return total

    def forward(self, feats, batch: dict) -> dict[str, torch.Tensor]:
        """Train: ``loss_seg`` (+ ``seg_logits``); eval: ``seg_prob`` (B, K, H, W) softmax, K = 6 or 2."""
        logits = self.logits(feats, batch["image"])
        if self.training:
            return {**self.loss(logits, batch), "seg_logits": logits}
        return {"seg_prob": logits.softmax(dim=1)}


@HEADS.register("segmentation")
class SegmentationHead(SemanticSegHead):
    task = "seg"
    uses_fpn = True
    SCHEMA = {
        "type": K("segmentation"),
        "mode": K("multiclass", "multiclass: background + 5 subtypes; binary: background + any bleed"),
        "channels": K(64),
        "refine": K(True),
        "refine_channels": K(16),
        **SemanticSegHead.LOSS_SCHEMA,
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, mode: str = "multiclass", channels: int = 64, refine: bool = True,
                 refine_channels: int = 16, type: str = "segmentation", **loss):
        super().__init__()
        self._init_loss(mode, **loss)
        self.levels = [k for k in backbone.strides if k != "pool"]
        base = backbone.strides[self.levels[0]]
        self.branches = nn.ModuleDict({
            k: _ScaleBranch(backbone.out_channels, channels, (backbone.strides[k] // base).bit_length() - 1)
            for k in self.levels
        })
        self.predictor = nn.Conv2d(channels, self.num_classes, 1)
        with torch.no_grad():  # start from "mostly background" (~1% bleed pixels), as RetinaNet's prior
            self.predictor.bias.copy_(torch.log(torch.tensor([0.99] + [0.01 / (self.num_classes - 1)] * (self.num_classes - 1))))
        self.refine = bool(refine)
        if self.refine:
            self.squeeze = nn.Conv2d(channels, refine_channels, 1)
            self.full_res = nn.Sequential(
                _conv_gn_relu(refine_channels + backbone.in_chans, refine_channels),
                nn.Conv2d(refine_channels, self.num_classes, 1),
            )
            nn.init.zeros_(self.full_res[-1].weight)  # a residual correction: starts as the coarse map
            nn.init.zeros_(self.full_res[-1].bias)

    def logits(self, feats, image: torch.Tensor) -> torch.Tensor:
        base = feats.fpn[self.levels[0]].shape[-2:]
        x = sum(_resize(self.branches[k](feats.fpn[k]), base) for k in self.levels)
        size = image.shape[-2:]
        logits = F.interpolate(self.predictor(x), size=size, mode="bilinear", align_corners=False)
        if self.refine:
            detail = F.interpolate(self.squeeze(x), size=size, mode="bilinear", align_corners=False)
            logits = logits + self.full_res(torch.cat([detail, image.to(detail.dtype)], dim=1))
        return logits
