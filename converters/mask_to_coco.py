"""Subtype label masks (0 background, 1 EDH .. 5 IVH) -> COCO instances, slice by slice.

One annotation per 8-connected component per subtype. Polygons trace the pixel corners
(``converters.polygons``), so a polygon decodes back to its component exactly; a component is
written as RLE instead when a polygon cannot carry it: it has holes, its outline touches itself at a
corner (invalid for shapely-style consumers), it would be degenerate, or the polygon covers it with
IoU < ``min_polygon_iou`` (a guard: a hole-free corner-traced outline has IoU 1). Every slice
becomes an image entry, negatives included, because detectors must see normal brain. Components
smaller than ``min_area`` are left out *and reported*.

Pixels of unknown subtype (``UNKNOWN_SUBTYPE``: a binary mask on a slice with several subtypes)
give no annotation, since the five category ids are fixed and a box needs its category; the image
entry keeps ``unknown_subtype_pixels`` (their count) so a consumer can leave that image out of
detector training (without it the slice would look bleed-free), and the report lists it.

Speed: the slice is cropped to its bleed, each subtype to its own box, and each subtype is traced
once for all its components; pixels are labelled (``cv2.connectedComponents``) only when a
component needs them (RLE, ``with_mask``), empty slices return at once.

``volume_instances`` groups a 3D mask into lesions (3D components) for lesion-level metrics.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from hemo_mtl import __version__
from hemo_mtl.categories import CATEGORY_NAMES, SUBTYPES, UNKNOWN_SUBTYPE, coco_categories
from hemo_mtl.lesions import connected_lesions, nonzero_box, structure

from .polygons import Outline, trace_outlines
from .rle import encode_crop

SEG_FORMATS = ("auto", "polygon", "rle")
NUM_CLASSES = len(SUBTYPES)

# why a component was written as RLE (keys of ExportReport.rle_reasons entries)
RLE_FORCED = "rle_requested"
RLE_HOLES = "holes"
RLE_SELF_TOUCHING = "self_touching"
RLE_DEGENERATE = "degenerate_polygon"
RLE_LOW_IOU = "polygon_iou_below_min"


def as_label_mask(mask: np.ndarray, where: str = "mask", ndim: int | None = None,
                  unknown_ok: bool = False) -> np.ndarray:
    """Check a subtype label mask and return it as uint8.

    Accepts integer/bool arrays and float arrays holding whole numbers (``nibabel.get_fdata``);
    raises ValueError naming ``where`` for other dimensions, dtypes or values outside 0..5
    (0..``UNKNOWN_SUBTYPE`` with ``unknown_ok``).
    """
    mask = np.asarray(mask)
    if ndim is not None and mask.ndim != ndim:
        raise ValueError(f"{where}: expected a {ndim}D label mask, got shape {mask.shape}")
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or np.any(mask != np.round(mask)):
            raise ValueError(f"{where}: label mask holds non-integer values")
    elif mask.dtype.kind not in "biu":
        raise ValueError(f"{where}: label mask has dtype {mask.dtype}, expected integers")
    if mask.size:
        lo = 0 if mask.dtype.kind in "bu" else mask.min()  # one pass fewer for unsigned masks
        hi = mask.max()
        top = UNKNOWN_SUBTYPE if unknown_ok else NUM_CLASSES
        if lo < 0 or hi > top:
            raise ValueError(f"{where}: label values must be 0..{top}, found {lo}..{hi}")
    return mask.astype(np.uint8, copy=False)


@dataclass
class SliceInstances:
    """What one slice gave: the exported instances and the components below ``min_area``."""

    instances: list[dict]
    below_min_area: list[dict]
    unknown_subtype_pixels: int = 0  # bleed pixels of unknown subtype: no instance


@dataclass
class ExportReport:
    """Plain counts and lists for the CLI summary; nothing is dropped without an entry here."""

    images: int = 0
    negative_images: int = 0
    annotations: int = 0
    polygons: int = 0
    rles: int = 0
    below_min_area: list[dict] = field(default_factory=list)  # image_id, category_id, area, bbox
    rle_reasons: list[dict] = field(default_factory=list)  # image_id, annotation_id, category_id, reason
    holes_filled: list[dict] = field(default_factory=list)  # seg_format="polygon" only
    unknown_subtype: list[dict] = field(default_factory=list)  # image_id, pixels: bleed without annotation

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for entry in self.rle_reasons:
            reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
        why = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
        text = (
            f"{self.images} images ({self.negative_images} without bleed), {self.annotations} annotations "
            f"({self.polygons} polygons, {self.rles} RLE: {why}); "
            f"{len(self.below_min_area)} components below min_area left out"
        )
        if self.holes_filled:
            text += f"; {len(self.holes_filled)} polygons with holes filled"
        if self.unknown_subtype:
            text += (f"; {len(self.unknown_subtype)} images with bleed of unknown subtype "
                     f"({sum(e['pixels'] for e in self.unknown_subtype)} pixels, not annotated)")
        return text


class MaskToCoco:
    """Per-slice converter: label mask (H, W) -> COCO instance dicts (no ids).

    min_area: components with fewer pixels are left out and listed in ``below_min_area``.
    seg_format: "auto" (polygon when exact enough, else RLE), "polygon" (always the outer polygon;
        holes are filled and reported), "rle" (always RLE).
    min_polygon_iou: in "auto", the IoU the decoded polygon must reach against the component.
    """

    def __init__(self, min_area: int = 1, seg_format: str = "auto", min_polygon_iou: float = 0.95):
        if seg_format not in SEG_FORMATS:
            raise ValueError(f"seg_format must be one of {SEG_FORMATS}, got {seg_format!r}")
        if min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {min_area}")
        if not 0.0 <= min_polygon_iou <= 1.0:
            raise ValueError(f"min_polygon_iou must be in [0, 1], got {min_polygon_iou}")
        self.min_area = int(min_area)
        self.seg_format = seg_format
        self.min_polygon_iou = float(min_polygon_iou)

    def instances(self, mask2d: np.ndarray, with_mask: bool = False) -> list[dict]:
        """The exported instances of one slice (see ``convert``)."""
        return self.convert(mask2d, with_mask=with_mask).instances

    def convert(self, mask2d: np.ndarray, with_mask: bool = False, checked: bool = False) -> SliceInstances:
        """Components of one slice, each a dict with ``category_id``, ``bbox`` [x, y, w, h] (tight,
        pixels), ``area`` (pixels), ``segmentation`` (one polygon part or a compressed RLE),
        ``format`` ("polygon"/"rle"), ``rle_reason`` (None or why RLE), ``polygon_iou`` (pixels /
        area enclosed by the outer outline; None with seg_format "rle"), with seg_format "polygon"
        ``holes`` (filled holes) and, with ``with_mask``, ``mask`` (bool (H, W)).
        Order: by category id, then by each component's first pixel in raster order. Pixels of
        unknown subtype give no instance; ``unknown_subtype_pixels`` counts them."""
        mask = mask2d if checked else as_label_mask(mask2d, ndim=2, unknown_ok=True)
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        height, width = mask.shape
        rx, ry, rw, rh = cv2.boundingRect(mask)
        if rw == 0:
            return SliceInstances([], [])
        roi = mask[ry : ry + rh, rx : rx + rw]
        kept: list[dict] = []
        small: list[dict] = []
        unknown = int(np.count_nonzero(roi == UNKNOWN_SUBTYPE))
        for category_id in range(1, NUM_CLASSES + 1):
            binary = (roi == category_id).view(np.uint8)
            bx, by, bw, bh = cv2.boundingRect(binary)  # work only where this subtype is
            if bw == 0:
                continue
            binary = binary[by : by + bh, bx : bx + bw]
            component = _ComponentCrops(binary)
            for outline in trace_outlines(binary):  # one outer outline per 8-connected component
                x0, y0, x1, y1 = outline.box
                bbox = [rx + bx + x0, ry + by + y0, x1 - x0, y1 - y0]
                needs_pixels = with_mask or outline.holes or self.seg_format == "rle" or \
                    (outline.self_touching and self.seg_format == "auto")
                crop = component.crop(outline) if needs_pixels else None
                # without holes the corner-traced outline encloses exactly the component's pixels
                area = int(np.count_nonzero(crop)) if crop is not None else int(round(outline.area))
                if area < self.min_area:
                    small.append({"category_id": category_id, "area": area, "bbox": bbox})
                    continue
                pixels = (lambda c=crop, o=outline: c if c is not None else component.crop(o))
                instance = self._encode(outline, (rx + bx, ry + by), pixels, area, bbox, height, width)
                instance.update(category_id=category_id, bbox=bbox, area=area)
                if with_mask:
                    full = np.zeros((height, width), dtype=bool)
                    full[bbox[1] : bbox[1] + bbox[3], bbox[0] : bbox[0] + bbox[2]] = crop
                    instance["mask"] = full
                kept.append(instance)
        return SliceInstances(kept, small, unknown)

    def _encode(self, outline: Outline, offset: tuple[int, int], pixels: Callable[[], np.ndarray], area: int,
                bbox: list[int], height: int, width: int) -> dict:
        """Polygon or RLE for one component; ``pixels()`` gives its bool crop (bbox-sized)."""
        if self.seg_format == "rle":
            return self._rle(pixels, bbox, height, width, RLE_FORCED, None)
        # the outline encloses the component plus its holes, so IoU = pixels / enclosed area
        # (tests check outlines against pycocotools' decoder on thousands of components)
        iou = area / outline.area if outline.area > 0 else 0.0
        polygon = {"segmentation": [outline.flat(*offset)], "format": "polygon", "rle_reason": None,
                   "polygon_iou": iou}
        if self.seg_format == "polygon":
            return {**polygon, "holes": outline.holes}
        if outline.holes:
            return self._rle(pixels, bbox, height, width, RLE_HOLES, iou)
        if len(outline.points) < 3 or outline.area <= 0:
            return self._rle(pixels, bbox, height, width, RLE_DEGENERATE, iou)
        if outline.self_touching:
            return self._rle(pixels, bbox, height, width, RLE_SELF_TOUCHING, iou)
        if iou < self.min_polygon_iou:
            return self._rle(pixels, bbox, height, width, RLE_LOW_IOU, iou)
        return polygon

    @staticmethod
    def _rle(pixels, bbox, height, width, reason, iou) -> dict:
        return {"segmentation": encode_crop(pixels(), bbox[0], bbox[1], height, width), "format": "rle",
                "rle_reason": reason, "polygon_iou": iou}


class _ComponentCrops:
    """Pixel crops of single components of one binary array, labelled once and only if needed
    (most components are polygons that never need their pixels)."""

    def __init__(self, binary: np.ndarray):
        self.binary = binary
        self.labels: np.ndarray | None = None

    def crop(self, outline: Outline) -> np.ndarray:
        """bool (h, w) pixels of the component of ``outline`` inside its box (other components of
        the same subtype that reach into the box, e.g. an island in a hole, left out)."""
        if self.labels is None:
            _, self.labels = cv2.connectedComponents(self.binary, connectivity=8, ltype=cv2.CV_32S)
        sx, sy = outline.start
        label = self.labels[sy, sx]
        if label == 0:
            raise RuntimeError(f"outline start ({sx}, {sy}) is background: contour/label mismatch")
        x0, y0, x1, y1 = outline.box
        return self.labels[y0:y1, x0:x1] == label


def make_info(source: str, window: str | Sequence[str] | None = None, split_seed: int | None = None,
              split: str | None = None, description: str | None = None, **extra) -> dict:
    """The COCO ``info`` block: where the export came from and how to reproduce it."""
    info = {
        "description": description or f"hemo-mtl export of {source}",
        "version": __version__,
        "hemo_mtl_version": __version__,
        "source": source,
        "window": window if isinstance(window, (str, type(None))) else list(window),
        "split": split,
        "split_seed": split_seed,
    }
    info.update(extra)
    return info


class CocoBuilder:
    """Accumulates images and annotations with ids from 1; ``to_dict`` gives the COCO json.

    Typical use (the CLI): for each volume, ``add_volume(mask, file_names, patient_id=..., source=...)``;
    or per slice ``image_id = add_image(...)`` then ``add_slice(image_id, mask2d)``.
    """

    def __init__(self, converter: MaskToCoco | None = None):
        self.converter = converter or MaskToCoco()
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.report = ExportReport()
        self._sizes: dict[int, tuple[int, int]] = {}
        self._annotated: set[int] = set()

    def add_image(self, file_name: str, height: int, width: int, **extra) -> int:
        """Register one slice image; extra keys (patient_id, slice_idx, source, ...) are kept."""
        if not file_name:
            raise ValueError("add_image: file_name is empty")
        if int(height) <= 0 or int(width) <= 0:
            raise ValueError(f"add_image {file_name!r}: height and width must be positive, got {height}x{width}")
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": str(file_name), "height": int(height),
                            "width": int(width), **extra})
        self._sizes[image_id] = (int(height), int(width))
        self.report.images += 1
        self.report.negative_images += 1
        return image_id

    def add_slice(self, image_id: int, mask2d: np.ndarray, checked: bool = False) -> list[int]:
        """Annotate a registered image from its label mask; returns the new annotation ids."""
        if image_id not in self._sizes:
            raise KeyError(f"add_slice: image id {image_id} was not added with add_image")
        if image_id in self._annotated:
            raise ValueError(f"add_slice: image id {image_id} already has its slice")
        where = f"image {image_id} ({self.images[image_id - 1]['file_name']})"
        mask = mask2d if checked else as_label_mask(mask2d, where=where, ndim=2, unknown_ok=True)
        if mask.shape != self._sizes[image_id]:
            raise ValueError(f"{where}: mask shape {mask.shape} != image (height, width) {self._sizes[image_id]}")
        self._annotated.add(image_id)
        result = self.converter.convert(mask, checked=True)
        report = self.report
        for entry in result.below_min_area:
            report.below_min_area.append({"image_id": image_id, **entry})
        ids = []
        for inst in result.instances:
            ann_id = len(self.annotations) + 1
            self.annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": inst["category_id"],
                "segmentation": inst["segmentation"], "area": inst["area"], "bbox": inst["bbox"], "iscrowd": 0,
            })
            ids.append(ann_id)
            if inst["format"] == "rle":
                report.rles += 1
                report.rle_reasons.append({"image_id": image_id, "annotation_id": ann_id,
                                           "category_id": inst["category_id"], "reason": inst["rle_reason"]})
            else:
                report.polygons += 1
                if inst.get("holes"):
                    report.holes_filled.append({"image_id": image_id, "annotation_id": ann_id,
                                                "holes": inst["holes"], "polygon_iou": inst["polygon_iou"]})
        report.annotations += len(ids)
        if result.unknown_subtype_pixels:
            self.images[image_id - 1]["unknown_subtype_pixels"] = result.unknown_subtype_pixels
            report.unknown_subtype.append({"image_id": image_id, "pixels": result.unknown_subtype_pixels})
        if ids or result.unknown_subtype_pixels:
            report.negative_images -= 1
        return ids

    def add_volume(self, mask3d: np.ndarray, file_names: Sequence[str] | Callable[[int], str],
                   patient_id: str, source: str, slices: Sequence[int] | None = None, **extra) -> list[int]:
        """Add every axial slice ``mask3d[:, :, k]`` (nibabel (X, Y, Z) layout, used as is as an
        (H, W) image) with ``file_name``, ``patient_id``, ``slice_idx`` and ``source``; returns the
        image ids. ``file_names`` is a list (one per slice) or a callable ``k -> file_name``."""
        where = f"patient {patient_id}"
        mask3d = as_label_mask(mask3d, where=where, ndim=3, unknown_ok=True)
        depth = mask3d.shape[2]
        ks = range(depth) if slices is None else list(slices)
        if not callable(file_names) and len(file_names) != len(ks):
            raise ValueError(f"{where}: {len(file_names)} file names for {len(ks)} slices")
        stack = np.ascontiguousarray(np.moveaxis(mask3d, -1, 0))  # (Z, H, W), one copy
        height, width = stack.shape[1:]
        ids = []
        for i, k in enumerate(ks):
            if not 0 <= k < depth:
                raise ValueError(f"{where}: slice index {k} outside 0..{depth - 1}")
            name = file_names(k) if callable(file_names) else file_names[i]
            image_id = self.add_image(name, height, width, patient_id=patient_id, slice_idx=int(k),
                                      source=source, **extra)
            self.add_slice(image_id, stack[k], checked=True)
            ids.append(image_id)
        return ids

    def to_dict(self, info: dict | None = None, licenses: list[dict] | None = None) -> dict:
        """The COCO dataset dict (plain json types)."""
        return {
            "info": dict(info or {}),
            "licenses": list(licenses or []),
            "categories": coco_categories(),
            "images": list(self.images),
            "annotations": list(self.annotations),
        }


def volume_instances(mask3d: np.ndarray, spacing: Sequence[float], connectivity: int = 26) -> list[dict]:
    """3D lesions of a (X, Y, Z) label mask: one per 3D connected component per subtype.

    connectivity (``hemo_mtl.lesions``): 26 (faces, edges and corners; the default, the 3D analogue of
    the 8-connected slice components, so a lesion never splits into pieces a slice view would join),
    18 (faces and edges) or 6 (faces). Each lesion: ``lesion_id`` (from 1), ``category_id``, ``subtype``,
    ``slices`` [first, last] (inclusive), ``voxels``, ``volume_ml``, ``bbox3d``
    [x0, y0, z0, x1, y1, z1] (voxel indices, end exclusive) and ``centroid`` (voxel coordinates).
    Voxels of unknown subtype form no lesion (a lesion needs its category).
    """
    structure(3, connectivity)  # a clear error before any work
    if len(spacing) != 3 or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (sx, sy, sz) in mm, got {spacing}")
    mask3d = as_label_mask(mask3d, where="volume_instances", ndim=3, unknown_ok=True)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    region = nonzero_box(mask3d)  # label only inside the bounding box of all bleed
    if region is None:
        return []
    origin = np.array([s.start for s in region])
    ids, subtypes = connected_lesions(mask3d[region], connectivity)
    voxels = np.bincount(ids.ravel(), minlength=len(subtypes) + 1)
    centroids = ndimage.center_of_mass(ids > 0, ids, range(1, len(subtypes) + 1))
    lesions = []
    for i, (box, category_id) in enumerate(zip(ndimage.find_objects(ids), subtypes), start=1):
        start = origin + [s.start for s in box]
        stop = origin + [s.stop for s in box]
        lesions.append({
            "lesion_id": i,
            "category_id": category_id,
            "subtype": CATEGORY_NAMES[category_id],
            "slices": [int(start[2]), int(stop[2]) - 1],
            "voxels": int(voxels[i]),
            "volume_ml": float(voxels[i]) * voxel_ml,
            "bbox3d": [int(v) for v in (*start, *stop)],
            "centroid": [round(float(c + o), 3) for c, o in zip(centroids[i - 1], origin)],
        })
    return lesions
