"""Kaggle "Head CT - hemorrhage" (head_ct/NNN.png + labels.csv): binary slice labels only.

``labels.csv``'s header is literally ``id, hemorrhage`` (a space before the second name). Images are
already-windowed 8-bit renderings of varying size, RGB or RGBA with equal channels. There are no
patient ids: each image is its own "patient", so splits cannot prevent two slices of one real
patient from landing in different splits (said in the report).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...registry import SOURCES
from ..io import DataError, load_display_image
from ..manifest import make_row
from .base import SourceScan


@SOURCES.register("kaggle")
def scan_kaggle(root, check_images: bool = True) -> SourceScan:
    root = Path(root)
    csv_path = root / "labels.csv"
    image_dir = root / "head_ct"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels.csv not found (expected head_ct/*.png + labels.csv)")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder head_ct/ not found")
    frame = pd.read_csv(csv_path, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    if list(frame.columns[:2]) != ["id", "hemorrhage"]:
        raise DataError(f"{csv_path}: expected columns 'id, hemorrhage', got {list(frame.columns)}")
    scan = SourceScan(source="kaggle", licenses=[{"name": "unverified (Kaggle head_ct); research use with attribution", "url": ""}])
    scan.notes.append("Kaggle head_ct has no patient ids: each image is treated as its own patient")
    listed = set()
    for line, r in enumerate(frame.itertuples(index=False), start=2):
        try:
            ident, label = int(r.id), int(r.hemorrhage)
        except (TypeError, ValueError):
            scan.skip(f"{csv_path} line {line}", f"unparsable row {tuple(r)}")
            continue
        if label not in (0, 1):
            scan.skip(f"{csv_path} line {line}", f"hemorrhage must be 0 or 1, got {label}")
            continue
        image = image_dir / f"{ident:03d}.png"
        listed.add(image.name)
        if not image.is_file():
            scan.skip(f"{csv_path} line {line}", f"image {image} missing")
            continue
        if check_images:
            try:
                load_display_image(image)
            except DataError as exc:
                scan.skip(image, str(exc))
                continue
        labels = [label, None, None, None, None, None]  # subtypes unknown, not negative
        scan.rows.append(make_row(f"{ident:03d}", 0, "kaggle", str(image.resolve()), "display", labels))
    for image in sorted(image_dir.glob("*.png")):
        if image.name not in listed:
            scan.skip(image, "image has no row in labels.csv")
    return scan
