"""PhysioNet CT-ICH (Hssayeni et al. 2020), in both of its published layouts.

NIfTI release::    ROOT/ct_scans/<NNN>.nii, ROOT/masks/<NNN>.nii (binary), ROOT/hemorrhage_diagnosis_raw_ct.csv
JPG release::      ROOT/Patients_CT/<NNN>/brain/<s>.jpg (+ <s>_HGE_Seg.jpg masks), ROOT/hemorrhage_diagnosis.csv

The CSV uses its own column names and 1-based ``SliceNumber``; ``No_Hemorrhage`` is the negation of
``any``. Masks are binary (bleed / no bleed): a mask pixel gets the slice's subtype when the slice
has exactly one subtype. On a slice with several subtypes (or a bleed without a subtype) the mask is
still exact for "any bleed" and for which pixels are not bleed, so its pixels get
``UNKNOWN_SUBTYPE`` (the subtype split is left unknown, not guessed) and the row gets no boxes: a
box needs its category.

Which slices have a mask (JPG release, per patient folder): only bleed slices carry a
``<s>_HGE_Seg.jpg``. In a patient folder with at least one such file, a No_Hemorrhage slice has an
empty mask by the release's definition (real supervision: no pixel is bleed) and a bleed slice
without a file has no mask (absent, not empty). In a release that carries masks at all, a patient with
no bleed slice has an empty mask on every slice by the same definition (the release masks every bleed,
and this patient has none); a release without any mask file has no masks.
Every mask file is read once while scanning: a file that cannot be read, does not match its slice's
size, holds bleed on a No_Hemorrhage slice or is empty on a bleed slice is reported and not used.
The NIfTI release has one mask volume per patient covering every slice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ...categories import CATEGORY_IDS, LABELS, SUBTYPES, UNKNOWN_SUBTYPE
from ...registry import SOURCES
from ..cells import RowError, int_cell, label_cell, read_csv_rows, unique_rows
from ..io import DataError, load_nifti, load_nifti_mask, read_slice
from ..manifest import make_row
from ..windowing import check_hu_range
from .base import SourceScan

CSV_COLUMNS = {
    "Epidural": "EDH",
    "Subdural": "SDH",
    "Subarachnoid": "SAH",
    "Intraparenchymal": "IPH",
    "Intraventricular": "IVH",
}
MASK_SUFFIX = "_HGE_Seg.jpg"  # JPG release: <s>_HGE_Seg.jpg beside <s>.jpg
LICENSE = {"name": "CC BY 4.0 (CT-ICH v1.0.0-1.3.0); v1.3.1: PhysioNet Restricted Health Data License 1.5.0",
           "url": "https://doi.org/10.13026/w8q8-ky94"}


def read_diagnosis_csv(path: Path, scan: SourceScan | None = None) -> pd.DataFrame:
    """CSV -> columns patient (int), slice (1-based int) and our LABELS, every cell checked.

    A BOM and whitespace around names and cells are tolerated. A bad cell (``yes``, ``2``, ``0.5``,
    empty), No_Hemorrhage=1 with a subtype set, or conflicting duplicate rows are reported in ``scan``
    with file and line and left out (raised when no ``scan`` is given); identical duplicates are
    used once, with a note.
    """
    header, rows, bad = read_csv_rows(path, required=["PatientNumber", "SliceNumber", "No_Hemorrhage", *CSV_COLUMNS])

    def report(exc: RowError) -> None:
        if scan is None:
            raise exc
        scan.skip_error(exc)

    for exc in bad:
        report(exc)
    items = []
    for row in rows:
        try:
            key = (int_cell(row, "PatientNumber", minimum=0), int_cell(row, "SliceNumber", minimum=1))
            lab = [1 - label_cell(row, "No_Hemorrhage"), *(label_cell(row, col) for col in CSV_COLUMNS)]
            if lab[0] == 0 and any(lab[1:]):
                raise row.error(f"patient {key[0]} slice {key[1]}: No_Hemorrhage=1 but a subtype is set")
        except RowError as exc:
            report(exc)
            continue
        items.append((key, tuple(lab), row))
    kept, notes, errors = unique_rows(items, what="patient/slice")
    if scan is not None:
        scan.notes.extend(notes)
    for exc in errors:
        report(exc)
    names = ["any", *CSV_COLUMNS.values()]
    out = pd.DataFrame([(p, s, *lab) for (p, s), lab in kept.items()], columns=["patient", "slice", *names])
    return out[["patient", "slice", *LABELS]].astype(int)


def _mask_ref(ref: str, labels: list[int]) -> str:
    """Binary mask -> ``ref@n``: n the slice's one subtype, ``UNKNOWN_SUBTYPE`` for a bleed with
    several subtypes or none named, 0 on a negative slice (an all-background mask is real supervision)."""
    if not labels[0]:
        return f"{ref}@0"
    present = [s for s, v in zip(SUBTYPES, labels[1:]) if v]
    return f"{ref}@{CATEGORY_IDS[present[0]] if len(present) == 1 else UNKNOWN_SUBTYPE}"


def _mask_row(pid: str, k: int, image: str, kind: str, lab: list[int], mask: str | None, counts: dict,
              spacing=None) -> dict:
    """The manifest row; a mask whose subtype is unknown gives no boxes (counted for the notes)."""
    unknown = bool(mask) and mask.endswith(f"@{UNKNOWN_SUBTYPE}")
    counts["subtype unknown"] = counts.get("subtype unknown", 0) + unknown
    return make_row(pid, k, "physionet", image, kind, lab, mask=mask, spacing=spacing,
                    has_boxes=False if unknown else None)


def _unknown_note(counts: dict) -> str:
    return (f"{counts.get('subtype unknown', 0)} masks on slices with several subtypes (or none named): "
            "kept as 'any bleed' masks with the subtype unknown, no boxes")


@SOURCES.register("physionet")
def scan_physionet(root) -> SourceScan:
    root = Path(root)
    if (root / "Patients_CT").is_dir():
        return _scan_jpg(root)
    if (root / "ct_scans").is_dir():
        return _scan_nifti(root)
    raise DataError(f"{root}: neither Patients_CT/ (JPG release) nor ct_scans/ (NIfTI release) found")


def _scan_jpg(root: Path) -> SourceScan:
    scan = SourceScan(source="physionet", licenses=[LICENSE])
    scan.notes.append("CT-ICH JPG release: brain-window 8-bit JPEGs (display images, not HU)")
    labels = read_diagnosis_csv(root / "hemorrhage_diagnosis.csv", scan)
    seen = set()
    masked_patients: dict[Path, bool] = {}
    counts = {"mask files": 0, "empty by definition": 0, "bleed slices without mask": 0}
    release_masked = any((root / "Patients_CT").glob(f"*/brain/*{MASK_SUFFIX}"))
    bleeding = set(labels.loc[labels["any"] == 1, "patient"])
    no_bleed = sorted(set(labels["patient"]) - bleeding) if release_masked else []
    for r in labels.itertuples(index=False):
        pid = f"{r.patient:03d}"
        folder = root / "Patients_CT" / pid / "brain"
        image = folder / f"{r.slice}.jpg"
        if not image.is_file():
            scan.skip(f"hemorrhage_diagnosis.csv patient {r.patient} slice {r.slice}", f"image {image} missing")
            continue
        seen.add(image.resolve())
        lab = [int(getattr(r, name)) for name in LABELS]
        if folder not in masked_patients:
            masked_patients[folder] = any(folder.glob(f"*{MASK_SUFFIX}")) or r.patient in no_bleed
        mask = _jpg_mask(image, folder / f"{r.slice}{MASK_SUFFIX}", lab, masked_patients[folder], scan, counts)
        scan.rows.append(_mask_row(pid, r.slice - 1, str(image.resolve()), "display", lab, mask, counts))
    for image in sorted((root / "Patients_CT").glob("*/brain/*.jpg")):
        if image.name.endswith(MASK_SUFFIX):
            if (image.parent / image.name.replace(MASK_SUFFIX, ".jpg")).resolve() not in seen:
                scan.skip(image, "mask file whose slice image has no row in hemorrhage_diagnosis.csv (or no image)")
        elif image.resolve() not in seen:
            scan.skip(image, "image has no row in hemorrhage_diagnosis.csv")
    n_masked = sum(masked_patients.values()) - len(no_bleed)
    scan.notes.append(
        f"masks: {n_masked} of {len(masked_patients)} patient folders carry {MASK_SUFFIX} files "
        f"and {len(no_bleed)} patients without a bleed slice have empty masks throughout "
        f"({counts['mask files']} used); {counts['empty by definition']} No_Hemorrhage slices of those "
        f"patients have empty masks by definition; {counts['bleed slices without mask']} of their bleed "
        "slices have no mask file (no mask)")
    scan.notes.append(_unknown_note(counts))
    return scan


def _jpg_mask(image: Path, mask_file: Path, lab: list[int], patient_masked: bool, scan: SourceScan,
              counts: dict) -> str | None:
    """The manifest mask reference of one JPG-release slice by the release's per-patient rule."""
    if not patient_masked:
        return None
    if not mask_file.is_file():
        if lab[0] == 0:  # masked patient, No_Hemorrhage slice: empty by definition; the image gives its size
            counts["empty by definition"] += 1
            return f"{image.resolve()}@0"
        counts["bleed slices without mask"] += 1
        return None
    try:
        bleed = read_slice(f"{mask_file}@1", "mask")
        with Image.open(image) as img:
            size = (img.height, img.width)
    except (DataError, OSError) as exc:
        scan.skip(mask_file, f"mask not used: {exc}")
        return None
    if bleed.shape != size:
        scan.skip(mask_file, f"mask not used: its size {bleed.shape} differs from {image.name} {size}")
        return None
    if lab[0] == 0 and bleed.any():
        scan.skip(mask_file, f"mask not used: {int(bleed.sum())} bleed pixels on a slice labelled No_Hemorrhage")
        return None
    if lab[0] == 1 and not bleed.any():
        scan.skip(mask_file, "mask not used: empty mask on a slice labelled as a bleed")
        return None
    counts["mask files"] += 1
    return _mask_ref(str(mask_file.resolve()), lab)


def _scan_nifti(root: Path) -> SourceScan:
    scan = SourceScan(source="physionet", licenses=[LICENSE])
    labels = read_diagnosis_csv(root / "hemorrhage_diagnosis_raw_ct.csv", scan)
    counts: dict = {}
    for patient, group in labels.groupby("patient"):
        pid = f"{patient:03d}"
        vol_path = root / "ct_scans" / f"{pid}.nii"
        if not vol_path.is_file() and (root / "ct_scans" / f"{pid}.nii.gz").is_file():
            vol_path = root / "ct_scans" / f"{pid}.nii.gz"
        try:
            vol = load_nifti(vol_path)
            check_hu_range(vol.data, str(vol_path))
            mask_path = next((p for p in (root / "masks" / f"{pid}.nii", root / "masks" / f"{pid}.nii.gz") if p.is_file()), None)
            mask = load_nifti_mask(mask_path, like=vol) if mask_path else None
        except DataError as exc:
            scan.skip(vol_path, str(exc))
            continue
        n = vol.data.shape[2]
        for r in group.itertuples(index=False):
            k = r.slice - 1
            if not 0 <= k < n:
                scan.skip(f"hemorrhage_diagnosis_raw_ct.csv patient {patient} slice {r.slice}", f"{vol_path} has {n} slices")
                continue
            lab = [int(getattr(r, name)) for name in LABELS]
            mref = None
            if mask is not None:
                if lab[0] == 0 and np.any(mask.data[:, :, k]):
                    scan.skip(f"{mask_path} slice {r.slice}", "mask has bleed pixels on a slice labelled No_Hemorrhage; mask not used")
                else:
                    mref = _mask_ref(f"{mask_path.resolve()}#{k}", lab)
            scan.rows.append(_mask_row(pid, k, f"{vol_path.resolve()}#{k}", "hu", lab, mref, counts, spacing=vol.spacing))
    scan.notes.append(_unknown_note(counts))
    return scan
