"""Validate any COCO instances json (ours or a user's) before a consumer trips on it.

Errors are what breaks pycocotools, detectron2, mmdetection or ultralytics (some of them silently:
detectron2 drops polygon parts with < 6 or an odd number of coordinates, asserts on duplicate
annotation ids, crashes on an empty segmentation); warnings are what is legal but suspicious (a bbox
that does not match its segmentation, which is what an xyxy bbox looks like).
Nothing is decoded with pycocotools before its size and run lengths are checked here, because its C
decoder writes past the buffer on a bad RLE.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from .rle import string_counts

ERROR = "error"
WARNING = "warning"
BBOX_TOLERANCE = 1.0  # pixels: bbox vs image bounds and vs segmentation extent


@dataclass(frozen=True)
class Problem:
    """One finding: ``where`` names the image / annotation / category id (or the file section)."""

    level: str
    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message} [{self.code}]"


@dataclass
class ValidationReport:
    source: str
    problems: list[Problem] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def to_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "counts": self.counts,
                "problems": [asdict(p) for p in self.problems]}

    def summary(self) -> str:
        c = self.counts
        head = (f"{self.source}: {c.get('images', 0)} images ({c.get('negative_images', 0)} without annotations), "
                f"{c.get('annotations', 0)} annotations ({c.get('polygons', 0)} polygon, {c.get('rles', 0)} RLE), "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join([head, *(str(p) for p in self.problems)])


class _Collector:
    def __init__(self):
        self.problems: list[Problem] = []

    def error(self, code: str, where: str, message: str) -> None:
        self.problems.append(Problem(ERROR, code, where, message))

    def warn(self, code: str, where: str, message: str) -> None:
        self.problems.append(Problem(WARNING, code, where, message))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_coco_file(path: str | Path) -> ValidationReport:
    """Validate a json file (the CLI's ``--validate FILE``); unreadable json is reported, a missing
    file raises FileNotFoundError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO json not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        report = ValidationReport(str(path))
        report.problems.append(Problem(ERROR, "invalid_json", "file", f"not valid json: {err}"))
        return report
    except RecursionError:
        report = ValidationReport(str(path))
        report.problems.append(Problem(ERROR, "invalid_json", "file", "json nested too deeply to read"))
        return report
    return validate_coco(data, source=str(path))


def validate_coco(data, source: str = "<dict>", require_segmentation: bool = True) -> ValidationReport:
    """All problems of a COCO instances dict, each naming the image/annotation id, plus counts.

    ``require_segmentation=False`` accepts box-only annotations (no ``segmentation`` key at all), as
    bbox evaluation does; an empty or malformed segmentation is still an error."""
    out = _Collector()
    report = ValidationReport(source)
    if not isinstance(data, dict):
        out.error("schema", "file", f"top level must be an object, got {type(data).__name__}")
        report.problems = out.problems
        return report
    sections = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            out.error("schema", key, f"'{key}' must be a list, got {'nothing' if value is None else type(value).__name__}")
            value = []
        sections[key] = value
    for key, kind in (("info", dict), ("licenses", list)):
        if key in data and not isinstance(data[key], kind):
            out.warn("schema", key, f"'{key}' should be a {kind.__name__}")

    categories = _check_categories(sections["categories"], out)
    images = _check_images(sections["images"], out)
    kinds = _check_annotations(sections["annotations"], images, categories, out, require_segmentation)

    annotated = {a.get("image_id") for a in sections["annotations"] if isinstance(a, dict)}
    per_category = Counter(a.get("category_id") for a in sections["annotations"] if isinstance(a, dict))
    report.problems = out.problems
    report.counts = {
        "images": len(sections["images"]),
        "annotations": len(sections["annotations"]),
        "categories": len(sections["categories"]),
        "negative_images": sum(1 for i in images if i not in annotated),
        "polygons": kinds["polygon"],
        "rles": kinds["rle"],
        "annotations_per_category": {str(k): v for k, v in sorted(per_category.items(), key=lambda kv: str(kv[0]))},
        "errors": len(report.errors),
        "warnings": len(report.warnings),
    }
    return report


def _check_categories(categories: list, out: _Collector) -> set:
    seen: set = set()
    for i, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            out.error("category_id_invalid", f"categories[{i}]", "category needs an integer 'id'")
            continue
        where = f"category {cat['id']}"
        if cat["id"] in seen:
            out.error("duplicate_category_id", where, "category id appears more than once")
        seen.add(cat["id"])
        if not isinstance(cat.get("name"), str) or not cat["name"]:
            out.error("schema", where, "category needs a non-empty 'name'")
        if cat["id"] < 1:
            out.warn("category_id_zero", where, "category ids should start at 1 (0 is background in most consumers)")
    if not categories:
        out.error("schema", "categories", "no categories")
    return seen


def _leaves_root(file_name: str) -> bool:
    """True for a file_name that points outside the image folder: absolute, a drive, or '..'."""
    posix = PurePosixPath(file_name.replace("\\", "/"))
    return posix.is_absolute() or ".." in posix.parts or bool(re.match(r"^[A-Za-z]:", file_name))


def _check_images(images: list, out: _Collector) -> dict:
    sizes: dict = {}
    names: dict = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            out.error("image_id_invalid", f"images[{i}]", "image needs an integer 'id'")
            continue
        where = f"image {img['id']}"
        if img["id"] in sizes:
            out.error("duplicate_image_id", where, "image id appears more than once")
            continue
        h, w = img.get("height"), img.get("width")
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
            out.error("image_size_invalid", where, f"height and width must be positive integers, got {h!r} x {w!r}")
            h = w = None
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            out.error("schema", where, "image needs a non-empty 'file_name'")
        elif _leaves_root(name):
            out.error("file_name_outside_root", where, f"file_name {name!r} leaves the image folder")
        elif name in names:
            out.error("duplicate_file_name", where, f"file_name {name!r} is also image {names[name]}'s "
                      f"(one file, two images: one overwrote the other)")
        else:
            names[name] = img["id"]
        sizes[img["id"]] = (h, w)
    return sizes


def _check_annotations(annotations: list, images: dict, categories: set, out: _Collector,
                       require_segmentation: bool = True) -> Counter:
    seen: set = set()
    contents: dict = {}  # (image, category, bbox, segmentation) -> first annotation id
    kinds: Counter = Counter(polygon=0, rle=0)
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            out.error("annotation_id_invalid", f"annotations[{i}]", "annotation needs an integer 'id'")
            continue
        where = f"annotation {ann['id']}"
        if ann["id"] in seen:
            out.error("duplicate_annotation_id", where, "annotation id appears more than once (detectron2 asserts)")
        seen.add(ann["id"])
        image_id = ann.get("image_id")
        if image_id not in images:
            out.error("missing_image", where, f"image_id {image_id!r} is not in 'images'")
            size = (None, None)
        else:
            size = images[image_id]
            where = f"annotation {ann['id']} (image {image_id})"
        if ann.get("category_id") not in categories:
            out.error("unknown_category", where, f"category_id {ann.get('category_id')!r} is not in 'categories'")
        if ann.get("iscrowd", 0) not in (0, 1):
            out.error("iscrowd_invalid", where, f"iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}")
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            out.error("area_invalid", where, f"area must be a number >= 0, got {ann['area']!r}")
        elif "area" not in ann:
            out.warn("area_missing", where, "no 'area' (COCOeval's area ranges need it)")
        bbox = _check_bbox(ann.get("bbox"), size, where, out)
        key = json.dumps([image_id, ann.get("category_id"), ann.get("bbox"), ann.get("segmentation")],
                         sort_keys=True, default=str)
        if key in contents:
            out.error("duplicate_annotation", where, f"same image, category, bbox and segmentation as annotation "
                      f"{contents[key]} (one lesion annotated twice: a detection can match only one, AP drops)")
        contents.setdefault(key, ann["id"])
        if not require_segmentation and "segmentation" not in ann:
            continue
        kind, extent = _check_segmentation(ann, size, where, out)
        if kind:
            kinds[kind] += 1
        if bbox is not None and extent is not None:
            if max(abs(a - b) for a, b in zip(bbox, extent)) > BBOX_TOLERANCE:
                out.warn("bbox_mismatch", where, f"bbox {bbox} does not match the segmentation's extent "
                         f"{[round(v, 2) for v in extent]} (xyxy instead of xywh?)")
    return kinds


def _check_bbox(bbox, size, where: str, out: _Collector):
    if bbox is None:
        out.error("bbox_missing", where, "no 'bbox'")
        return None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        out.error("bbox_invalid", where, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        return None
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        out.error("bbox_empty", where, f"bbox {bbox} has no width or height (bbox is xywh)")
        return None
    height, width = size
    if height is not None and (x < -BBOX_TOLERANCE or y < -BBOX_TOLERANCE or x + w > width + BBOX_TOLERANCE
                               or y + h > height + BBOX_TOLERANCE):
        out.error("bbox_outside_image", where, f"bbox {bbox} (xywh) leaves the {width}x{height} image")
    return [float(v) for v in bbox]


def _check_segmentation(ann: dict, size, where: str, out: _Collector):
    """Returns (kind, extent xywh or None)."""
    seg = ann.get("segmentation")
    if seg is None or seg == [] or seg == {}:
        out.error("segmentation_empty", where, "empty or missing segmentation (crashes detectron2's mapper)")
        return None, None
    if isinstance(seg, list):
        return "polygon", _check_polygon(seg, size, where, out)
    if isinstance(seg, dict):
        return "rle", _check_rle(seg, size, where, out)
    out.error("segmentation_invalid", where, f"segmentation must be a polygon list or an RLE dict, got {type(seg).__name__}")
    return None, None


def _check_polygon(parts: list, size, where: str, out: _Collector):
    xs: list[float] = []
    ys: list[float] = []
    for j, part in enumerate(parts):
        if not isinstance(part, list) or not all(_is_number(v) for v in part):
            out.error("polygon_invalid", where, f"polygon part {j} must be a flat list of finite numbers")
            continue
        if len(part) % 2:
            out.error("polygon_odd", where, f"polygon part {j} has an odd number of coordinates ({len(part)})")
            continue
        points = {(part[k], part[k + 1]) for k in range(0, len(part), 2)}
        if len(part) < 6 or len(points) < 3:
            out.error("polygon_too_few_points", where,
                      f"polygon part {j} has {len(points)} distinct points (needs >= 3; detectron2 drops it silently)")
            continue
        xs.extend(part[0::2])
        ys.extend(part[1::2])
    if not xs:
        return None
    height, width = size
    if height is not None and (min(xs) < -BBOX_TOLERANCE or min(ys) < -BBOX_TOLERANCE
                               or max(xs) > width + BBOX_TOLERANCE or max(ys) > height + BBOX_TOLERANCE):
        out.warn("polygon_outside_image", where, f"polygon leaves the {width}x{height} image")
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _check_rle(seg: dict, size, where: str, out: _Collector):
    rle_size, counts = seg.get("size"), seg.get("counts")
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(_is_int(v) for v in rle_size)):
        out.error("rle_invalid", where, f"RLE 'size' must be [height, width], got {rle_size!r}")
        return None
    height, width = size
    if height is not None and rle_size != [height, width]:
        out.error("rle_size_mismatch", where, f"RLE size {rle_size} != image [height, width] [{height}, {width}]")
        return None
    if isinstance(counts, str):
        try:
            runs = string_counts(counts)
        except ValueError as err:
            out.error("rle_invalid", where, str(err))
            return None
    elif isinstance(counts, list) and all(_is_int(v) for v in counts):
        runs = counts
    else:
        out.error("rle_invalid", where, "RLE 'counts' must be a string or a list of integers")
        return None
    if any(v < 0 for v in runs) or sum(runs) != rle_size[0] * rle_size[1]:
        out.error("rle_counts_mismatch", where,
                  f"RLE runs sum to {sum(runs)} (negative runs: {any(v < 0 for v in runs)}), expected {rle_size[0] * rle_size[1]}")
        return None
    if sum(runs[1::2]) == 0:
        out.error("segmentation_empty", where, "RLE has no foreground pixels")
        return None
    rle = mask_utils.frPyObjects(seg, *rle_size) if isinstance(counts, list) else \
        {"size": rle_size, "counts": counts.encode("ascii")}
    return [float(v) for v in np.asarray(mask_utils.toBbox(rle)).ravel()]
