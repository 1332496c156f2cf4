"""Mask R-CNN detection on the shared FPN, built from torchvision's detection components.

No second backbone and no ``GeneralizedRCNNTransform``: our slices arrive already sized and
normalised, so images go straight into an ``ImageList`` and boxes stay in input pixels. Anchors are
sized for head-CT lesions (8..128 px at 256 px, one size per level p2..p5 + pool).

Partial labels: only slices with ``has["boxes"]`` enter the RPN/RoI losses. A labelled slice with no
boxes is a negative and still trains the RPN and box classifier on background. Boxes thinner than
``min_box_size`` px (one-pixel lesions) are padded around their centre: torchvision's box coder
takes ``log`` of the width, so a zero-width box would give inf/NaN.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from hemo_mtl.categories import SUBTYPES
from hemo_mtl.config_schema import K, defaults_of
from hemo_mtl.registry import HEADS

from ..losses import boxed_slices

# torchvision's names -> ours (the contract's flat loss keys)
_LOSS_NAMES = {
    "loss_objectness": "loss_rpn_objectness",
    "loss_rpn_box_reg": "loss_rpn_box",
    "loss_classifier": "loss_box_cls",
    "loss_box_reg": "loss_box_reg",
    "loss_mask": "loss_mask",
}


def pad_small_boxes(boxes: torch.Tensor, min_size: float, image_size: tuple[int, int]) -> torch.Tensor:
    """Grow boxes narrower/shorter than ``min_size`` symmetrically, then clip to the image."""
    if boxes.numel() == 0 or min_size <= 0:
        return boxes
    limit = boxes.new_tensor([image_size[1], image_size[0]])
    size = torch.minimum((boxes[:, 2:] - boxes[:, :2]).clamp(min=min_size), limit)
    low = ((boxes[:, :2] + boxes[:, 2:]) / 2 - size / 2).clamp(min=0)
    low = torch.minimum(low, limit - size)
    return torch.cat([low, low + size], dim=1)


@HEADS.register("rcnn")
class MaskRCNNHead(nn.Module):
    task = "det"
    uses_fpn = True
    loss_names = tuple(_LOSS_NAMES.values())
    SCHEMA = {
        "type": K("rcnn"),
        "anchor_sizes": K([8, 16, 32, 64, 128], "px, one per level p2, p3, p4, p5, pool", items="int"),
        "aspect_ratios": K([0.5, 1.0, 2.0], items="float"),
        "rpn_fg_iou_thresh": K(0.7),
        "rpn_bg_iou_thresh": K(0.3),
        "rpn_batch_size_per_image": K(128),
        "rpn_pre_nms_top_n_train": K(1000),
        "rpn_post_nms_top_n_train": K(300),
        "rpn_pre_nms_top_n_test": K(500),
        "rpn_post_nms_top_n_test": K(100),
        "rpn_nms_thresh": K(0.7),
        "box_batch_size_per_image": K(128),
        "box_positive_fraction": K(0.25),
        "box_fg_iou_thresh": K(0.5),
        "box_bg_iou_thresh": K(0.5),
        "box_score_thresh": K(0.05),
        "box_nms_thresh": K(0.5),
        "box_detections_per_img": K(50),
        "representation_size": K(256),
        "mask": K(True, "Mask R-CNN's mask branch (false: Faster R-CNN)"),
        "mask_channels": K(128),
        "mask_layers": K(4),
        "min_box_size": K(2.0, "px: smaller ground-truth boxes are padded to this size"),
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, anchor_sizes=(8, 16, 32, 64, 128), aspect_ratios=(0.5, 1.0, 2.0),
                 rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3, rpn_batch_size_per_image=128,
                 rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=500,
                 rpn_post_nms_top_n_test=100, rpn_nms_thresh=0.7, box_batch_size_per_image=128,
                 box_positive_fraction=0.25, box_fg_iou_thresh=0.5, box_bg_iou_thresh=0.5,
                 box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=50,
                 representation_size=256, mask=True, mask_channels=128, mask_layers=4,
                 min_box_size=2.0, type: str = "rcnn"):
        super().__init__()
        levels = list(backbone.strides)  # p2..p5, pool
        if len(anchor_sizes) != len(levels):
            raise ValueError(f"heads.det.anchor_sizes needs one size per FPN level {levels}, got {list(anchor_sizes)}")
        c = backbone.out_channels
        num_classes = 1 + len(SUBTYPES)
        anchors = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), (tuple(aspect_ratios),) * len(levels))
        self.rpn = RegionProposalNetwork(
            anchors, RPNHead(c, anchors.num_anchors_per_location()[0]),
            rpn_fg_iou_thresh, rpn_bg_iou_thresh, rpn_batch_size_per_image, 0.5,
            dict(training=rpn_pre_nms_top_n_train, testing=rpn_pre_nms_top_n_test),
            dict(training=rpn_post_nms_top_n_train, testing=rpn_post_nms_top_n_test),
            rpn_nms_thresh,
        )
        roi_levels = [k for k in levels if k != "pool"]
        mask_parts = {}
        if mask:
            mask_parts = dict(
                mask_roi_pool=MultiScaleRoIAlign(roi_levels, 14, 2),
                mask_head=MaskRCNNHeads(c, [mask_channels] * mask_layers, 1),
                mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
            )
        self.roi_heads = RoIHeads(
            MultiScaleRoIAlign(roi_levels, 7, 2),
            TwoMLPHead(c * 7 * 7, representation_size),
            FastRCNNPredictor(representation_size, num_classes),
            box_fg_iou_thresh, box_bg_iou_thresh, box_batch_size_per_image, box_positive_fraction, None,
            box_score_thresh, box_nms_thresh, box_detections_per_img, **mask_parts,
        )
        self.min_box_size = float(min_box_size)
        self.loss_names = tuple(v for k, v in _LOSS_NAMES.items() if mask or k != "loss_mask")

    @property
    def nms_iou(self) -> float:
        """IoU from which NMS suppresses a box of the same subtype (also used to merge TTA passes)."""
        return float(self.roi_heads.nms_thresh)

    @property
    def max_det(self) -> int:
        return int(self.roi_heads.detections_per_img)

    def _targets(self, batch: dict, index: list[int], image_size: tuple[int, int], device) -> list[dict]:
        out = []
        for i in index:
            t = batch["targets"][i]
            boxes = pad_small_boxes(t["boxes"].to(device, torch.float32).reshape(-1, 4), self.min_box_size, image_size)
            target = {"boxes": boxes, "labels": t["labels"].to(device, torch.int64).reshape(-1)}
            if self.roi_heads.has_mask():
                target["masks"] = t["masks"].to(device, torch.uint8).reshape(-1, *image_size)
            out.append(target)
        return out

    def forward(self, feats, batch: dict) -> dict:
        """Train: RPN + RoI losses over ``has["boxes"]`` slices; eval: ``instances`` for every slice."""
        image = batch["image"]
        image_size = tuple(image.shape[-2:])
        if self.training:
            index, absent = boxed_slices(self, feats, batch)
            if absent is not None:
                return absent
            fpn = OrderedDict((k, v[index]) for k, v in feats.fpn.items())
            images = ImageList(image[index], [image_size] * len(index))
            targets = self._targets(batch, index, image_size, image.device)
            proposals, rpn_losses = self.rpn(images, fpn, targets)
            _, roi_losses = self.roi_heads(fpn, proposals, images.image_sizes, targets)
            return {_LOSS_NAMES[k]: v for k, v in {**rpn_losses, **roi_losses}.items()}
        if image.shape[0] == 0:  # every slice gated off (torchvision's RPN cannot take an empty batch)
            return {"instances": []}
        images = ImageList(image, [image_size] * image.shape[0])
        proposals, _ = self.rpn(images, feats.fpn)
        detections, _ = self.roi_heads(feats.fpn, proposals, images.image_sizes)
        instances = []
        for det in detections:
            inst = {"boxes": det["boxes"], "labels": det["labels"], "scores": det["scores"]}
            if "masks" in det:
                inst["masks"] = paste_masks_in_image(det["masks"], det["boxes"], image_size, padding=1)[:, 0]
            instances.append(inst)
        return {"instances": instances}
