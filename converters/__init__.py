"""Export label masks to COCO and YOLO, the way back, and validation of any COCO json.

The CLI (tools/convert.py) is a thin loop over these: ``CocoBuilder.add_volume`` per patient,
``to_dict(make_info(...))`` per split, ``volume_instances`` for the lesion
list, ``write_yolo_tree`` for YOLO, ``validate_coco_file`` for ``--validate``.
"""
from .coco_to_masks import annotation_mask, coco_to_label_masks, coco_to_label_volume, load_coco
from .coco_to_yolo import (
    YoloExportReport,
    class_index,
    class_names,
    export_yolo_split,
    segment_polygon,
    write_data_yaml,
    write_yolo_tree,
    yolo_lines,
)
from .mask_to_coco import (
    CocoBuilder,
    ExportReport,
    MaskToCoco,
    SliceInstances,
    as_label_mask,
    make_info,
    volume_instances,
)
from .polygons import Outline, largest_outline, trace_outlines
from .rle import encode_crop
from .validation import Problem, ValidationReport, validate_coco, validate_coco_file

__all__ = [
    "CocoBuilder",
    "ExportReport",
    "MaskToCoco",
    "Outline",
    "Problem",
    "SliceInstances",
    "ValidationReport",
    "YoloExportReport",
    "annotation_mask",
    "as_label_mask",
    "class_index",
    "class_names",
    "coco_to_label_masks",
    "coco_to_label_volume",
    "encode_crop",
    "export_yolo_split",
    "largest_outline",
    "load_coco",
    "make_info",
    "segment_polygon",
    "trace_outlines",
    "validate_coco",
    "validate_coco_file",
    "volume_instances",
    "write_data_yaml",
    "write_yolo_tree",
    "yolo_lines",
]
