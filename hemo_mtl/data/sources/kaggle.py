"""Kaggle "Head CT - hemorrhage" (head_ct/NNN.png + labels.csv): binary slice labels only.

``labels.csv``'s header is literally ``id, hemorrhage`` (a space before the second name). Images are
already-windowed 8-bit renderings of varying size, RGB or RGBA with equal channels; some carry coloured
burned-in text, read as grey and counted in the report's notes (``io.read_display_image``). There are no
patient ids: each image is its own "patient", so splits cannot prevent two slices of one real
patient from landing in different splits (said in the report).
"""
from __future__ import annotations

from pathlib import Path

from ...registry import SOURCES
from ..cells import RowError, int_cell, label_cell, read_csv_rows
from ..io import DataError, read_display_image
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
    header, rows, bad = read_csv_rows(csv_path)
    if header[:2] != ["id", "hemorrhage"]:
        raise DataError(f"{csv_path}: expected columns 'id, hemorrhage', got {header}")
    scan = SourceScan(source="kaggle", licenses=[{"name": "unverified (Kaggle head_ct); research use with attribution", "url": ""}])
    scan.notes.append("Kaggle head_ct has no patient ids: each image is treated as its own patient")
    for exc in bad:
        scan.skip_error(exc)
    items, listed = [], set()  # images whose row was bad are reported by that row, not again as unlisted
    for row in rows:
        try:
            ident = int_cell(row, "id", minimum=0)
            listed.add(f"{ident:03d}.png")
            items.append((ident, label_cell(row, "hemorrhage"), row))
        except RowError as exc:
            scan.skip_error(exc)
    labels = scan.keep_unique(items, "id")
    first_row = {}
    for ident, _, row in items:
        first_row.setdefault(ident, row)
    for ident, label in sorted(labels.items()):
        image = image_dir / f"{ident:03d}.png"
        if not image.is_file():
            scan.skip(first_row[ident].where, f"image {image} missing")
            continue
        if check_images:
            try:
                coloured = read_display_image(image).coloured
            except DataError as exc:
                scan.skip(image, str(exc))
                continue
            if coloured:
                scan.notes.append(f"{image}: {coloured} coloured pixel(s) (burned-in text or markers) read as grey")
        labels_row = [label, None, None, None, None, None]  # subtypes unknown, not negative
        scan.rows.append(make_row(f"{ident:03d}", 0, "kaggle", str(image.resolve()), "display", labels_row))
    for image in sorted(image_dir.glob("*.png")):
        if image.name not in listed:
            scan.skip(image, "image has no row in labels.csv")
    return scan
