"""YOLOv8-style instance segmentation on the shared FPN: ultralytics' ``Segment`` head and its loss.

Optional: needs the ``yolo`` extra (``pip install hemo-mtl[yolo]``; ultralytics is AGPL-3.0), imported
only when this head is built. Wiring (what ultralytics expects of its host model): ``head.stride`` is set and ``bias_init()`` called
*before* ``v8SegmentationLoss`` is built (it copies the stride); the loss reads ``.args`` (box, cls,
dfl, overlap_mask), ``.model[-1]`` and ``.parameters()`` from a small host object; targets go in as
``batch_idx`` (N,), ``cls`` (N,1) 0-based, ``bboxes`` normalised xywh, ``masks`` (N,H,W) 0/1 with
``overlap_mask=False``. Only slices with ``has["boxes"]`` enter the loss.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from hemo_mtl.categories import SUBTYPES
from hemo_mtl.config_schema import K, defaults_of
from hemo_mtl.registry import HEADS

from ..losses import boxed_slices

YOLO_EXTRA_HINT = "pip install hemo-mtl[yolo]"


def import_ultralytics():
    """The ultralytics pieces we use, offline; a clear error naming the extra when it is missing."""
    try:
        from ultralytics.nn.modules.head import Segment
        from ultralytics.utils.loss import v8SegmentationLoss
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import crop_mask
    except ImportError as err:
        raise ImportError(
            f"heads.det.type 'yolo' needs the optional ultralytics extra: {YOLO_EXTRA_HINT} ({err})"
        ) from err
    return SimpleNamespace(Segment=Segment, v8SegmentationLoss=v8SegmentationLoss,
                           non_max_suppression=non_max_suppression, crop_mask=crop_mask)


class _LossHost:
    """What ``v8SegmentationLoss`` reads from a model, without registering the head twice."""

    def __init__(self, head: nn.Module, args: SimpleNamespace, class_weights: torch.Tensor | None = None):
        self.args = args
        self.model = [head]
        self._head = head
        self.class_weights = class_weights  # ultralytics scales its per-class BCE by these (its cls_pw)

    def parameters(self):
        return self._head.parameters()


@HEADS.register("yolo")
class YoloSegmentHead(nn.Module):
    task = "det"
    uses_fpn = True
    loss_names = ("loss_yolo_box", "loss_yolo_seg", "loss_yolo_cls", "loss_yolo_dfl")
    SCHEMA = {
        "type": K("yolo"),
        "levels": K(["p3", "p4", "p5"], "FPN levels the head predicts on", items="str"),
        "num_masks": K(32),
        "num_protos": K(64),
        "reg_max": K(16),
        "box_gain": K(7.5),
        "cls_gain": K(0.5),
        "dfl_gain": K(1.5),
        "conf_thresh": K(0.05),
        "iou_thresh": K(0.5),
        "max_det": K(50),
        "class_weight": K(None, "classification-loss weight per subtype (EDH..IVH); null = 1", "list", items="float"),
    }
    DEFAULTS = defaults_of(SCHEMA)

    def __init__(self, backbone, levels=("p3", "p4", "p5"), num_masks=32, num_protos=64, reg_max=16,
                 box_gain=7.5, cls_gain=0.5, dfl_gain=1.5, conf_thresh=0.05, iou_thresh=0.5, max_det=50,
                 class_weight=None, type: str = "yolo"):
        super().__init__()
        self._ul = import_ultralytics()
        unknown = [lv for lv in levels if lv not in backbone.strides or lv == "pool"]
        if unknown:
            raise ValueError(f"heads.det.levels: unknown FPN levels {unknown}; have {list(backbone.strides)[:-1]}")
        self.levels = list(levels)
        c = backbone.out_channels
        self.head = self._ul.Segment(nc=len(SUBTYPES), nm=num_masks, npr=num_protos, reg_max=reg_max,
                                     ch=(c,) * len(self.levels))
        self.head.stride = torch.tensor([float(backbone.strides[lv]) for lv in self.levels])
        self.head.bias_init()  # needs the stride; must precede the loss, which copies it
        if class_weight is not None and (len(class_weight) != len(SUBTYPES) or min(class_weight) <= 0):
            raise ValueError(f"heads.det.class_weight needs {len(SUBTYPES)} positive values "
                             f"({', '.join(SUBTYPES)}), got {list(class_weight)}")
        self.class_weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
        self.hyp = SimpleNamespace(box=box_gain, cls=cls_gain, dfl=dfl_gain, overlap_mask=False)
        self.conf_thresh, self.iou_thresh, self.max_det = conf_thresh, iou_thresh, max_det
        self._criterion = None

    @property
    def nms_iou(self) -> float:
        """IoU from which NMS suppresses a box of the same subtype (also used to merge TTA passes)."""
        return float(self.iou_thresh)

    def criterion(self, device: torch.device):
        if self._criterion is None or self._criterion.device != device:
            self._criterion = self._ul.v8SegmentationLoss(_LossHost(self.head, self.hyp, self.class_weight))
            if self.class_weight is not None and getattr(self._criterion, "class_weights", None) is None:
                raise RuntimeError("heads.det.class_weight needs an ultralytics whose loss reads class_weights "
                                   "(8.4 does); upgrade ultralytics or drop the option")
        return self._criterion

    @staticmethod
    def yolo_targets(batch: dict, index: list[int], image_size: tuple[int, int], device) -> dict:
        """Our per-image targets -> ultralytics' flat batch (normalised xywh, 0-based classes)."""
        h, w = image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
        idx, cls, boxes, masks = [], [], [], []
        for j, i in enumerate(index):
            t = batch["targets"][i]
            b = t["boxes"].to(device, torch.float32).reshape(-1, 4)
            xywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], dim=1) / scale
            idx.append(torch.full((len(b),), float(j), device=device))
            cls.append(t["labels"].to(device, torch.float32).reshape(-1, 1) - 1)
            boxes.append(xywh)
            masks.append(t["masks"].to(device).reshape(-1, h, w).float())
        return {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes),
                "masks": torch.cat(masks)}

    def forward(self, feats, batch: dict) -> dict:
        image = batch["image"]
        image_size = tuple(image.shape[-2:])
        if self.training:
            index, absent = boxed_slices(self, feats, batch)
            if absent is not None:
                return absent
            preds = self.head([feats.fpn[lv][index] for lv in self.levels])
            targets = self.yolo_targets(batch, index, image_size, image.device)
            loss, _ = self.criterion(image.device)(preds, targets)
            loss = loss / len(index)  # ultralytics scales by batch size; we report per-slice means
            return dict(zip(self.loss_names, (loss[0], loss[1], loss[2], loss[3])))
        if image.shape[0] == 0:  # every slice gated off
            return {"instances": []}
        (pred, proto), _ = self.head([feats.fpn[lv] for lv in self.levels])
        dets = self._ul.non_max_suppression(pred, self.conf_thresh, self.iou_thresh, nc=len(SUBTYPES),
                                            max_det=self.max_det)
        instances = []
        for det, protos in zip(dets, proto):
            boxes, scores = det[:, :4], det[:, 4]
            coeffs = det[:, 6:]
            if len(det):
                logits = (coeffs @ protos.flatten(1)).view(-1, *protos.shape[1:])
                masks = F.interpolate(logits[None], image_size, mode="bilinear", align_corners=False)[0].sigmoid()
                masks = self._ul.crop_mask(masks, boxes)
            else:
                masks = image.new_zeros((0, *image_size))
            instances.append({"boxes": boxes, "labels": det[:, 5].long() + 1, "scores": scores, "masks": masks})
        return {"instances": instances}
