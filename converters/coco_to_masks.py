"""COCO instances -> subtype label masks (the way back), to prove the export round-trips.

Each annotation is decoded as ``pycocotools.COCO.annToMask`` does and painted with its category id.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .rle import decode


def load_coco(coco: dict | str | Path) -> dict:
    """A COCO dict from a dict or a json path (FileNotFoundError / ValueError naming the file)."""
    if isinstance(coco, dict):
        return coco
    path = Path(coco)
    if not path.is_file():
        raise FileNotFoundError(f"COCO json not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid json ({err})") from err


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """uint8 (height, width) 0/1 mask of one annotation (polygon parts or RLE)."""
    return decode(annotation["segmentation"], height, width)


def coco_to_label_masks(coco: dict | str | Path, image_ids=None, strict: bool = False) -> dict[int, np.ndarray]:
    """``{image_id: uint8 (height, width)}`` label masks (0 background, category ids elsewhere) for
    every image (or ``image_ids``), negatives included as zeros.

    Where annotations of different categories overlap the later one wins; ``strict`` raises a
    ValueError naming both annotation ids instead (our exports never overlap).
    """
    coco = load_coco(coco)
    images = {img["id"]: img for img in coco["images"]}
    wanted = list(images) if image_ids is None else list(image_ids)
    missing = [i for i in wanted if i not in images]
    if missing:
        raise KeyError(f"image ids not in the COCO json: {missing[:10]}")
    masks = {i: np.zeros((images[i]["height"], images[i]["width"]), dtype=np.uint8) for i in wanted}
    owner: dict[int, np.ndarray] = {}
    for ann in coco["annotations"]:
        label = masks.get(ann["image_id"])
        if label is None:
            continue
        inside = annotation_mask(ann, *label.shape).astype(bool)
        if strict:
            ids = owner.setdefault(ann["image_id"], np.zeros(label.shape, dtype=np.int64))
            clash = inside & (label != 0) & (label != ann["category_id"])
            if clash.any():
                other = int(ids[clash][0])
                raise ValueError(f"image {ann['image_id']}: annotation {ann['id']} overlaps annotation {other} "
                                 f"of another category on {int(clash.sum())} pixels")
            ids[inside] = ann["id"]
        label[inside] = ann["category_id"]
    return masks


def coco_to_label_volume(coco: dict | str | Path, patient_id: str, strict: bool = False) -> np.ndarray:
    """The (X, Y, Z) label volume of one patient from the images' ``patient_id``/``slice_idx``
    (slice ``k`` is ``vol[:, :, k]``, as exported); raises ValueError for missing or repeated slices."""
    coco = load_coco(coco)
    slices = {}
    for img in coco["images"]:
        if img.get("patient_id") == patient_id:
            k = img.get("slice_idx")
            if k in slices:
                raise ValueError(f"patient {patient_id}: slice_idx {k} appears in images {slices[k]} and {img['id']}")
            slices[k] = img["id"]
    if not slices:
        raise KeyError(f"no images with patient_id {patient_id!r}")
    depth = max(slices) + 1
    gaps = sorted(set(range(depth)) - set(slices))
    if gaps:
        raise ValueError(f"patient {patient_id}: slices {gaps[:10]} have no image entry")
    masks = coco_to_label_masks(coco, [slices[k] for k in range(depth)], strict=strict)
    return np.stack([masks[slices[k]] for k in range(depth)], axis=-1)
