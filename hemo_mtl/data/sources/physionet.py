"""PhysioNet CT-ICH (Hssayeni et al. 2020), in both of its published layouts.

NIfTI release::    ROOT/ct_scans/<NNN>.nii, ROOT/masks/<NNN>.nii (binary), ROOT/hemorrhage_diagnosis_raw_ct.csv
JPG release::      ROOT/Patients_CT/<NNN>/brain/<s>.jpg (+ <s>_HGE_Seg.jpg masks), ROOT/hemorrhage_diagnosis.csv

The CSV uses its own column names and 1-based ``SliceNumber``; ``No_Hemorrhage`` is the negation of
``any``. Masks are binary (bleed / no bleed): a mask pixel gets the slice's subtype when the slice
has exactly one subtype; slices with several subtypes keep their class labels but their mask is not
used (reported), because which pixel is which subtype is not known.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...categories import CATEGORY_IDS, LABELS, SUBTYPES
from ...registry import SOURCES
from ..cells import RowError, int_cell, label_cell, read_csv_rows, unique_rows
from ..io import DataError, load_nifti, load_nifti_mask
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


def _mask_ref(ref: str, labels: list[int], scan: SourceScan, item: str) -> str | None:
    """Binary mask -> ``ref@label`` when the slice has one subtype; None (reported) otherwise."""
    present = [s for s, v in zip(SUBTYPES, labels[1:]) if v]
    if len(present) == 1:
        return f"{ref}@{CATEGORY_IDS[present[0]]}"
    if len(present) > 1:
        scan.skip(item, f"binary mask on a slice with several subtypes {present}: mask not used, class labels kept")
        return None
    return f"{ref}@0"  # negative slice: an all-background mask is real supervision


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
    for r in labels.itertuples(index=False):
        pid = f"{r.patient:03d}"
        folder = root / "Patients_CT" / pid / "brain"
        image = folder / f"{r.slice}.jpg"
        if not image.is_file():
            scan.skip(f"hemorrhage_diagnosis.csv patient {r.patient} slice {r.slice}", f"image {image} missing")
            continue
        seen.add(image.resolve())
        lab = [int(getattr(r, name)) for name in LABELS]
        mask_file = folder / f"{r.slice}_HGE_Seg.jpg"
        mask = _mask_ref(str(mask_file.resolve()), lab, scan, mask_file) if mask_file.is_file() else None
        scan.rows.append(make_row(pid, r.slice - 1, "physionet", str(image.resolve()), "display", lab, mask=mask))
    for image in sorted((root / "Patients_CT").glob("*/brain/*.jpg")):
        if "_HGE_Seg" not in image.name and image.resolve() not in seen:
            scan.skip(image, "image has no row in hemorrhage_diagnosis.csv")
    return scan


def _scan_nifti(root: Path) -> SourceScan:
    scan = SourceScan(source="physionet", licenses=[LICENSE])
    labels = read_diagnosis_csv(root / "hemorrhage_diagnosis_raw_ct.csv", scan)
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
                    mref = _mask_ref(f"{mask_path.resolve()}#{k}", lab, scan, f"{mask_path} slice {r.slice}")
            scan.rows.append(make_row(pid, k, "physionet", f"{vol_path.resolve()}#{k}", "hu", lab, mask=mref, spacing=vol.spacing))
    return scan
