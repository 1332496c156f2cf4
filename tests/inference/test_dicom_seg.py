"""tools/predict.py --dicom-seg: a DICOM Segmentation on the source CT series, read back by pydicom and
highdicom; NIfTI inputs and series that cannot carry a SEG get one clear line and no outputs."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from hemo_mtl.cli import predict as predict_tool
from hemo_mtl.categories import SUBTYPES
from hemo_mtl.data.io import DataError

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom", reason="the 'dicom' extra (highdicom) is not installed")

REPO = Path(__file__).resolve().parents[2]


def write_ct_series(volume_hu: np.ndarray, folder: Path, spacing=(0.8, 0.8, 5.0), tilt: int | None = None) -> list:
    """(X, Y, Z) HU -> a CT Image Storage series, one file per slice (names shuffled), axial LPS geometry;
    ``tilt``: that slice gets another ImageOrientationPatient. Returns the datasets in slice order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    out = []
    names = np.random.default_rng(1).permutation(volume_hu.shape[2])
    for k in range(volume_hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{names[k]:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Manufacturer = "CT", "phantom"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Head", "P001", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "", ""
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[2])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if k != tilt else [1.0, 0.0, 0.0, 0.0, 0.9, 0.43589]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        pixels = np.round(volume_hu[:, :, k].T + 1024).astype(np.uint16)  # rows = Y, columns = X
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = pixels.tobytes()
        ds.save_as(ds.filename, enforce_file_format=True)
        out.append(ds)
    return out


def _painting_checkpoint(folder: Path, *overrides: str) -> Path:
    """A random-init cls + seg demo model at 64 px whose seg background logit is lowered: it paints bleeds."""
    from hemo_mtl.config import load_config
    from hemo_mtl.models import build_model

    torch.manual_seed(0)
    cfg = load_config(REPO / "configs" / "demo.yaml", ["data.image_size=64", *overrides])
    del cfg["model"]["heads"]["det"]
    state = build_model(cfg["model"]).state_dict()
    state["heads.seg.full_res.1.bias"][0] -= 6.0
    path = folder / "model_final.pth"
    torch.save({"model": state, "config": cfg, "cascade": {}}, path)
    return path


@pytest.fixture(scope="module")
def seg_weights(tmp_path_factory) -> Path:
    return _painting_checkpoint(tmp_path_factory.mktemp("w"))


@pytest.fixture(scope="module")
def binary_seg_weights(tmp_path_factory) -> Path:
    """The same with a binary seg head (background + any bleed)."""
    return _painting_checkpoint(tmp_path_factory.mktemp("wb"), "model.heads.seg.mode=binary",
                                "model.heads.seg.class_weight=null")


@pytest.fixture(scope="module")
def phantom_volume():
    from hemo_mtl.data.phantom import make_phantom_case

    case = make_phantom_case(3, size=64, slices=6, normal=False)
    return np.ascontiguousarray(np.round(case.volume[:, 8:56, :])).astype(np.float32)  # 64 x 48: rows != columns


def _run(weights, inp, out, *extra):
    return predict_tool.main(["--weights", str(weights), "--input", str(inp), "--out", str(out), "--threads", "2", *extra])


def test_seg_frames_equal_the_mask_and_reference_the_source(seg_weights, phantom_volume, tmp_path):
    sources = write_ct_series(phantom_volume, tmp_path / "series")
    assert _run(seg_weights, tmp_path / "series", tmp_path / "out", "--dicom-seg") == 0
    mask = np.asarray(nib.load(str(tmp_path / "out" / "series" / "mask.nii.gz")).dataobj)  # (X, Y, Z)
    present = [int(v) for v in np.unique(mask) if v]
    assert present, "the biased model paints bleeds"

    seg = pydicom.dcmread(tmp_path / "out" / "series" / "seg.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert refs == {ds.SOPInstanceUID for ds in sources}
    # one segment per subtype present, SNOMED CT codes
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [s.SegmentLabel.split()[0] for s in segments.values()] == [SUBTYPES[v - 1] for v in present]
    for s in segments.values():
        assert s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "50960005"
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
    # every frame (pydicom's decoding of the 1-bit frames) equals the mask slice of its source instance
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    frames = seg.pixel_array
    assert len(frames) == len(present) * len(sources)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = slice_of[uid]
        expected = mask[:, :, k].T == present[number - 1]
        assert np.array_equal(frame.astype(bool), expected)
        position = group.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position], [float(v) for v in sources[k].ImagePositionPatient])
    # highdicom's own reader gives the same label map per source instance
    label = hd.seg.segread(tmp_path / "out" / "series" / "seg.dcm").get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sources], combine_segments=True)
    expected = np.zeros_like(label)
    for number, value in enumerate(present, start=1):
        expected[np.moveaxis(mask, 2, 0).transpose(0, 2, 1) == value] = number
    assert np.array_equal(label, expected)


def test_nifti_input_gets_a_clear_error(seg_weights, phantom_volume, tmp_path, capsys):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(phantom_volume, np.eye(4)), str(path))
    assert _run(seg_weights, path, tmp_path / "out", "--dicom-seg") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(path) in err[0] and "needs a DICOM series input (this is a NIfTI file)" in err[0]
    assert not (tmp_path / "out" / "scan").exists()
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["status"].tolist() == ["error"]


def test_inconsistent_orientation_gets_one_line_and_nothing_written(seg_weights, phantom_volume, tmp_path, capsys):
    write_ct_series(phantom_volume, tmp_path / "tilted", tilt=3)
    assert _run(seg_weights, tmp_path / "tilted", tmp_path / "out", "--dicom-seg") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(tmp_path / "tilted") in err[0] and "mixed orientations in one series" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.csv"]  # no scan folder, no temp


def test_scan_without_bleed_gets_one_empty_segment(phantom_volume, tmp_path):
    from hemo_mtl.inference import load_scan
    from hemo_mtl.inference.dicom_seg import build_dicom_seg

    write_ct_series(phantom_volume, tmp_path / "series")
    scan = load_scan(tmp_path / "series")
    seg = build_dicom_seg(scan, np.zeros(phantom_volume.shape, np.uint8))
    assert len(seg.SegmentSequence) == 1 and not seg.pixel_array.any()
    with pytest.raises(DataError, match="does not match the series"):
        build_dicom_seg(scan, np.zeros((4, 4, 6), np.uint8))


def test_binary_head_bleed_is_one_ich_segment_and_one_probability_channel(binary_seg_weights, phantom_volume, tmp_path):
    from hemo_mtl.categories import UNKNOWN_SUBTYPE

    sources = write_ct_series(phantom_volume, tmp_path / "series")
    assert _run(binary_seg_weights, tmp_path / "series", tmp_path / "out", "--dicom-seg", "--save-probabilities") == 0
    folder = tmp_path / "out" / "series"
    mask = np.asarray(nib.load(str(folder / "mask.nii.gz")).dataobj)
    assert set(np.unique(mask)) == {0, UNKNOWN_SUBTYPE}, "the biased binary model paints bleeds, valued 6 not 1"
    # probabilities.nii.gz: the one channel P(bleed), above 1/2 exactly where the mask is bleed (argmax of
    # two classes), up to the file's 1/255 steps
    prob = nib.load(str(folder / "probabilities.nii.gz"))
    assert prob.shape == (*phantom_volume.shape, 1)
    p = prob.get_fdata()[..., 0]
    clear = np.abs(p - 0.5) > 1 / 255
    assert np.array_equal((p > 0.5)[clear], (mask == UNKNOWN_SUBTYPE)[clear])
    table = pd.read_csv(folder / "lesions.csv")
    assert len(table) and set(table["subtype"]) == {"ICH"} and table["mean_probability"].notna().all()

    seg = pydicom.dcmread(folder / "seg.dcm")
    assert len(seg.SegmentSequence) == 1
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "ICH (intracranial hemorrhage, subtype unknown)"
    assert [(c.CodingSchemeDesignator, c.CodeValue) for c in segment.SegmentedPropertyTypeCodeSequence] == [("SCT", "50960005")]
    assert [(c.CodingSchemeDesignator, c.CodeValue) for c in segment.AnatomicRegionSequence] == [("SCT", "128319008")]
    label = hd.seg.segread(folder / "seg.dcm").get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sources], combine_segments=True)
    assert np.array_equal(label, (np.moveaxis(mask, 2, 0).transpose(0, 2, 1) == UNKNOWN_SUBTYPE).astype(label.dtype))
