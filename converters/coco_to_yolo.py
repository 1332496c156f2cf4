"""COCO instances -> an ultralytics YOLO tree: ``images/<split>/``, ``labels/<split>/``, ``data.yaml``.

Label lines are ``class xc yc w h`` (detect) or ``class x1 y1 x2 y2 ...`` (segment), normalised to
[0, 1], classes contiguous from 0 in category-id order (0 EDH .. 4 IVH for our exports). Negative
slices get an empty label file, so YOLO trains on them as background.

YOLO-seg has one polygon per object and no holes. A polygon annotation with one part is copied
as is. For an RLE annotation (and a multi-part polygon) the mask is decoded and its largest outer
outline is used (pixel-exact, ``converters.polygons``): holes are filled and smaller disconnected
parts dropped; both are counted in the report.
"""
from __future__ import annotations

import os
import shutil
from functools import lru_cache
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import yaml

from hemo_mtl.atomic import atomic_write_text

from .coco_to_masks import load_coco
from .polygons import trace_outlines
from .rle import decode

TASKS = ("segment", "detect")
LINK_MODES = ("hardlink", "copy", "symlink")


@dataclass
class YoloExportReport:
    split: str
    images: int = 0
    label_files: int = 0
    negative_images: int = 0
    lines: int = 0
    from_mask: int = 0  # polygons derived from a decoded mask (RLE or multi-part polygon)
    holes_filled: list[int] = field(default_factory=list)  # annotation ids
    parts_dropped: list[int] = field(default_factory=list)  # annotation ids (kept the largest part)
    missing_images: list[str] = field(default_factory=list)  # skipped: source image not found

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.split}: {self.images} images ({self.negative_images} negatives), {self.lines} label lines "
                f"({self.from_mask} from decoded masks, {len(self.holes_filled)} with holes filled, "
                f"{len(self.parts_dropped)} with parts dropped); {len(self.missing_images)} images missing, skipped")


def class_index(coco: dict) -> dict[int, int]:
    """COCO category id -> YOLO class (0.. in category-id order)."""
    return {cat["id"]: i for i, cat in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}


def class_names(coco: dict) -> dict[int, str]:
    """YOLO class -> name, as data.yaml wants it."""
    return {i: cat["name"] for i, cat in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}


def _fmt(values: np.ndarray) -> str:
    """Coordinates clipped to [0, 1] with 6 decimals (one C-level format call per line)."""
    values = np.clip(np.asarray(values, dtype=np.float64).ravel(), 0.0, 1.0).tolist()
    return " ".join(("%.6f",) * len(values)) % tuple(values)


@lru_cache(maxsize=32)
def _fractions(n: int) -> np.ndarray:
    """``k / n`` formatted with 6 decimals for k = 0..n (object array for fancy indexing)."""
    return np.array([f"{k / n:.6f}" for k in range(n + 1)], dtype=object)


def _fmt_points(points: np.ndarray, width: int, height: int) -> str:
    """Normalised ``x1 y1 x2 y2 ...``; integer (pixel-corner) points are looked up, not formatted."""
    if points.dtype.kind not in "iu":
        return _fmt(points / np.array([width, height]))
    out = np.empty(2 * len(points), dtype=object)
    out[0::2] = _fractions(width)[np.clip(points[:, 0], 0, width)]
    out[1::2] = _fractions(height)[np.clip(points[:, 1], 0, height)]
    return " ".join(out.tolist())


def segment_polygon(annotation: dict, height: int, width: int, report: YoloExportReport | None = None) -> np.ndarray:
    """The one polygon (N, 2) in pixel coordinates YOLO-seg gets for an annotation (see module doc);
    integer for our exports and for traced masks, as given for a user's polygon."""
    seg = annotation["segmentation"]
    where = f"annotation {annotation.get('id')}"
    if isinstance(seg, list) and len(seg) == 1:
        if len(seg[0]) % 2 or len(seg[0]) < 6:
            raise ValueError(f"{where}: polygon needs an even number (>= 6) of coordinates, got {len(seg[0])}")
        return np.asarray(seg[0]).reshape(-1, 2)
    if not seg:
        raise ValueError(f"{where}: empty segmentation")
    if isinstance(seg, dict) and list(seg.get("size", [])) != [height, width]:
        raise ValueError(f"{where}: RLE size {seg.get('size')} != image [height, width] [{height}, {width}]")
    full = decode(seg, height, width)
    rows, cols = np.nonzero(full)
    if rows.size == 0:
        raise ValueError(f"{where}: segmentation decodes to an empty mask")
    y0, x0 = rows.min(), cols.min()
    crop = full[y0 : rows.max() + 1, x0 : cols.max() + 1]
    outlines = trace_outlines(crop)
    best = max(outlines, key=lambda o: o.area)
    if report is not None:
        report.from_mask += 1
        if best.holes:
            report.holes_filled.append(annotation.get("id"))
        if len(outlines) > 1:
            report.parts_dropped.append(annotation.get("id"))
    return best.points + np.array([x0, y0])


def yolo_lines(coco: dict, image: dict, annotations: list[dict], task: str = "segment",
               classes: Mapping[int, int] | None = None, report: YoloExportReport | None = None) -> list[str]:
    """Label lines of one image from its annotations (crowd annotations skipped, as ultralytics'
    own ``convert_coco`` does)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    classes = classes if classes is not None else class_index(coco)
    height, width = image["height"], image["width"]
    lines = []
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        cls = classes[ann["category_id"]]
        if task == "detect":
            x, y, w, h = ann["bbox"]
            lines.append(f"{cls} {_fmt([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height])}")
        else:
            lines.append(f"{cls} {_fmt_points(segment_polygon(ann, height, width, report), width, height)}")
    return lines


def _place_image(src: Path, dst: Path, link: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.resolve() == src.resolve():
        return  # the tree is the source folder itself
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link == "symlink":
        dst.symlink_to(src.resolve())
        return
    if link == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:  # other filesystem, or links not allowed: copy instead
            pass
    shutil.copy2(src, dst)


def export_yolo_split(coco: dict | str | Path, root: str | Path, split: str,
                      images: str | Path | Callable[[dict], str | Path], task: str = "segment",
                      link: str = "hardlink") -> YoloExportReport:
    """Write ``root/images/<split>/<file_name>`` and ``root/labels/<split>/<stem>.txt`` for every image.

    images: the folder holding the COCO ``file_name`` paths (the PNGs the CLI wrote), or a callable
        image dict -> source path. A missing source image is skipped and listed in the report.
    link: "hardlink" (falls back to copy across filesystems), "copy" or "symlink".
    """
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {LINK_MODES}, got {link!r}")
    coco = load_coco(coco)
    root = Path(root)
    locate = images if callable(images) else (lambda img, base=Path(images): base / img["file_name"])
    classes = class_index(coco)
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        if ann["image_id"] not in by_image:
            raise ValueError(f"annotation {ann['id']}: image_id {ann['image_id']} is not in 'images'")
        by_image[ann["image_id"]].append(ann)
    report = YoloExportReport(split=split)
    for img in coco["images"]:
        relative = PurePosixPath(img["file_name"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"image {img['id']}: file_name {img['file_name']!r} must be a relative path inside the split")
        src = Path(locate(img))
        if not src.is_file():
            report.missing_images.append(str(src))
            continue
        lines = yolo_lines(coco, img, by_image[img["id"]], task=task, classes=classes, report=report)
        _place_image(src, root / "images" / split / relative, link)
        atomic_write_text((root / "labels" / split / relative).with_suffix(".txt"), "".join(f"{ln}\n" for ln in lines))
        report.images += 1
        report.label_files += 1
        report.lines += len(lines)
        report.negative_images += not lines
    return report


def write_data_yaml(root: str | Path, splits: Iterable[str], names: Mapping[int, str] | Iterable[str]) -> Path:
    """``root/data.yaml`` with an absolute ``path`` (ultralytics otherwise resolves relative paths
    against its settings' ``datasets_dir``), one ``images/<split>`` entry per split (ultralytics needs
    ``train`` and ``val``), ``nc`` and ``names``."""
    root = Path(root).resolve()
    names = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    data: dict = {"path": str(root)}
    for split in splits:
        data["val" if split in ("val", "valid", "validation") else split] = f"images/{split}"
    data["nc"] = len(names)
    data["names"] = {int(i): str(n) for i, n in sorted(names.items())}
    path = root / "data.yaml"
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return path


def write_yolo_tree(splits: Mapping[str, tuple[dict | str | Path, str | Path | Callable[[dict], str | Path]]],
                    root: str | Path, task: str = "segment", link: str = "hardlink") -> dict:
    """The whole YOLO export: ``{split: (coco json or dict, source images)}`` -> ``root`` tree and
    ``root/data.yaml``; returns a json-ready report ``{"root", "data_yaml", "task", "splits": {split: ...}}``.
    Class names come from the first split's categories (all splits of one export share them)."""
    if not splits:
        raise ValueError("write_yolo_tree: no splits given")
    reports = {}
    names = None
    for split, (coco, images) in splits.items():
        coco = load_coco(coco)
        names = names or class_names(coco)
        reports[split] = export_yolo_split(coco, root, split, images, task=task, link=link).to_dict()
    data_yaml = write_data_yaml(root, list(splits), names)
    return {"root": str(Path(root).resolve()), "data_yaml": str(data_yaml), "task": task, "splits": reports}
