"""DICOM Segmentation output (highdicom): the predicted mask as a SEG instance on the source CT series.

One segment per label present in the mask (a subtype, or ICH: bleed of unknown subtype, the output of
a binary segmentation head), each a binary segment (segment numbers 1..n in label order), frames on
the source slices' own geometry: frame k of the SEG is derived from the source instance of slice k,
so viewers (OHIF, 3D Slicer) overlay it on the series without resampling.
Coding: every segment is category "Morphologically Abnormal Structure" (SCT 49755003), type
"Hemorrhage" (SCT 50960005) and the label's name is the segment label, plus the anatomic region where
the DICOM content-mapping resource codes it (subarachnoid space, brain ventricle, brain; for ICH
"Intracranial structure", SCT 128319008: a hemorrhage somewhere inside the skull). ICH keeps the
subtypes' morphology code rather than SNOMED's "Intracranial hemorrhage" (1386000), a disorder, not a
segmentable structure. Codes come from pydicom's DICOM code dictionary, scheme "SCT" (the retired
"SRT" is not used).
highdicom is an optional dependency (extra ``dicom``), imported when a SEG is asked for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..categories import LABEL_LONG_NAMES, LABEL_NAMES
from ..data.io import DataError
from ..version import __version__

# label name (categories.LABEL_NAMES) -> pydicom.sr.codedict name of its anatomic region (None: no DICOM
# code for the space)
ANATOMIC_REGIONS = {"EDH": None, "SDH": None, "SAH": "StructureOfSubarachnoidSpaceOfBrain",
                    "IPH": "Brain", "IVH": "BrainVentricleStructure", "ICH": "IntracranialStructure"}
ORIENTATION_ATOL = 1e-4  # direction cosines written with ~6 decimals by scanners


def _highdicom():
    try:
        import highdicom
    except ImportError as exc:
        raise DataError("--dicom-seg needs highdicom: pip install 'hemo-mtl[dicom]'") from exc
    return highdicom


def segment_descriptions(labels: list[int]) -> list:
    """highdicom SegmentDescriptions for the mask labels present (1..5 = EDH..IVH, 6 = ICH), numbered 1..n."""
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="hemo-mtl", version=__version__,
                                                   family=codes.DCM.ArtificialIntelligence)
    out = []
    for number, label in enumerate(labels, start=1):
        name = LABEL_NAMES[label]
        region = ANATOMIC_REGIONS[name]
        out.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{name} ({LABEL_LONG_NAMES[label]})",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Hemorrhage,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[getattr(codes.SCT, region)] if region else None,
        ))
    return out


def check_geometry(folder, sources: list) -> None:
    """A SEG frame inherits its source slice's plane: the series must share one orientation, pixel
    spacing and matrix size (else one line naming the folder and the first file that differs)."""
    first = sources[0]
    iop0 = np.array(first.ImageOrientationPatient, float)
    for ds in sources[1:]:
        where = Path(getattr(ds, "filename", "") or "").name or ds.SOPInstanceUID
        if not np.allclose(np.array(ds.ImageOrientationPatient, float), iop0, atol=ORIENTATION_ATOL):
            raise DataError(f"{folder}: inconsistent ImageOrientationPatient ({where}: "
                            f"{[round(float(v), 4) for v in ds.ImageOrientationPatient]} vs "
                            f"{[round(float(v), 4) for v in iop0]}); a DICOM SEG needs one slice orientation")
        if not np.allclose(np.array(ds.PixelSpacing, float), np.array(first.PixelSpacing, float), atol=1e-4):
            raise DataError(f"{folder}: inconsistent PixelSpacing ({where}); a DICOM SEG needs one pixel spacing")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise DataError(f"{folder}: slices of different sizes ({where}); a DICOM SEG needs one matrix size")


def dicom_sources(scan) -> list:
    """The source datasets of ``scan`` in slice order, checked to carry a SEG; call it before predicting
    so a scan that cannot get one fails before anything runs or is written."""
    if not scan.files:
        raise DataError(f"{scan.path}: --dicom-seg needs a DICOM series input (this is "
                        f"{'a NIfTI file' if scan.kind == 'hu' else 'a folder of display images'})")
    _highdicom()  # the extra is checked before the model runs
    import pydicom

    sources = [pydicom.dcmread(f) for f in scan.files]
    check_geometry(scan.path, sources)
    return sources


def build_dicom_seg(scan, mask: np.ndarray, sources: list | None = None, series_number: int = 900):
    """The SEG dataset of ``mask`` (X, Y, Z uint8: 0, subtypes 1..5, ICH 6) on ``scan``'s DICOM series
    (``scan.files``; ``sources``: those files read by ``dicom_sources``)."""
    sources = sources if sources is not None else dicom_sources(scan)
    hd = _highdicom()
    from pydicom.uid import generate_uid

    frames = np.ascontiguousarray(np.moveaxis(mask, 2, 0).transpose(0, 2, 1))  # (Z, rows = Y, columns = X)
    if frames.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)) or len(frames) != len(sources):
        raise DataError(f"{scan.path}: mask {mask.shape} does not match the series ({len(sources)} slices of "
                        f"{sources[0].Rows} x {sources[0].Columns})")
    labels = [int(v) for v in np.unique(frames) if v > 0]
    label_map = np.zeros(frames.shape, np.uint8)
    for number, label in enumerate(labels, start=1):
        label_map[frames == label] = number
    # a SEG needs at least one segment: a scan without bleed gets one empty "hemorrhage" segment
    descriptions = segment_descriptions(labels) if labels else [_empty_segment(hd)]
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=label_map, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=series_number,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="hemo-mtl",
            manufacturer_model_name="hemo-mtl predictor", software_versions=__version__, device_serial_number="0",
            series_description="hemo-mtl hemorrhage segmentation", omit_empty_frames=False)
    except (ValueError, AttributeError, TypeError) as exc:  # highdicom's checks of the source series
        raise DataError(f"{scan.path}: cannot make a DICOM SEG on this series ({' '.join(str(exc).split())})") from exc


def _empty_segment(hd):
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=1, segment_label="hemorrhage (none found)",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Hemorrhage, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(name="hemo-mtl", version=__version__,
                                                                    family=codes.DCM.ArtificialIntelligence))


def write_dicom_seg(seg, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path
