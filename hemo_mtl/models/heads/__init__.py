"""Task heads on the shared trunk, registered in ``hemo_mtl.registry.HEADS`` by type name.

Every head is called as ``head(features, batch)``. In training it returns its named losses
(``loss_*``) and may add raw outputs (``cls_logits``, ``seg_logits``) that cross-head terms use; the
model keeps only ``loss_*`` keys. In eval it returns its predictions (``cls_prob``, ``seg_prob``,
``instances``). ``task`` (cls/seg/det) groups losses for balancing; ``uses_fpn`` says whether the
trunk must run the FPN for it. ``DEFAULTS`` is the head's full config section.
"""
from .classification import ClassificationHead
from .detection_rcnn import MaskRCNNHead, pad_small_boxes
from .detection_yolo import YOLO_EXTRA_HINT, YoloSegmentHead, import_ultralytics
from .location import LocationHead
from .segmentation import SegmentationHead
from .smp_decoders import PSPNetHead, UnetHead

__all__ = [
    "YOLO_EXTRA_HINT",
    "ClassificationHead",
    "LocationHead",
    "PSPNetHead",
    "UnetHead",
    "MaskRCNNHead",
    "SegmentationHead",
    "YoloSegmentHead",
    "import_ultralytics",
    "pad_small_boxes",
]
