"""Sources against the datasets' own CSVs (real samples in ../shared/data) and hand-made bad inputs."""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from hemo_mtl.categories import LABELS, SUBTYPES
from hemo_mtl.data.io import write_dicom_series
from hemo_mtl.data.manifest import labels_from_mask, rows_to_frame
from hemo_mtl.data.sources import scan_source

AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


def test_physionet_jpg_counts_match_csv(ctich_jpg_dir):
    scan = scan_source("physionet", ctich_jpg_dir)
    frame = rows_to_frame(scan.rows)
    csv = pd.read_csv(ctich_jpg_dir / "hemorrhage_diagnosis.csv")
    missing = pd.read_csv(ctich_jpg_dir / "missing_slices.csv")
    present = csv.merge(missing, how="left", indicator=True).query("_merge == 'left_only'")
    assert len(frame) == len(present)
    assert frame["any"].sum() == (present["No_Hemorrhage"] == 0).sum()
    for ours, theirs in [("EDH", "Epidural"), ("SDH", "Subdural"), ("SAH", "Subarachnoid"),
                         ("IPH", "Intraparenchymal"), ("IVH", "Intraventricular")]:
        assert frame[ours].sum() == present[theirs].sum(), ours
    # the four CSV rows without a file are reported, not dropped silently
    reported = {s["item"] for s in scan.skipped}
    for r in missing.itertuples():
        assert f"hemorrhage_diagnosis.csv patient {r.PatientNumber} slice {r.SliceNumber}" in reported
    # 1-based SliceNumber -> 0-based slice_idx; ids keep their leading zeros
    row = frame[(frame.patient_id == "066")].sort_values("slice_idx").iloc[0]
    assert row.slice_idx == 0 and row.image.endswith("066/brain/1.jpg") and row.kind == "display"
    # only 081 carries mask files; the other patients have no masks: none, not empty ones
    assert set(frame.loc[frame["has_mask"], "patient_id"]) == {"081"}


def test_kaggle_counts_match_csv(kaggle_head_ct_dir):
    scan = scan_source("kaggle", kaggle_head_ct_dir)
    frame = rows_to_frame(scan.rows)
    csv = pd.read_csv(kaggle_head_ct_dir / "labels.csv", skipinitialspace=True)
    assert len(frame) == len(csv) and not scan.skipped
    assert frame["any"].sum() == csv["hemorrhage"].sum()
    assert frame[list(SUBTYPES)].isna().all().all()  # subtypes unknown, not negative


def _nifti_dataset(root, n=2, shape=(32, 32, 6)):
    (root / "volumes").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        vol = rng.integers(-1000, 100, shape).astype(np.float32)
        mask = np.zeros(shape, np.uint8)
        mask[5:9, 5:9, 2] = 2
        mask[20:22, 3:6, 3] = 5
        nib.save(nib.Nifti1Image(vol, AFFINE), root / "volumes" / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, AFFINE), root / "masks" / f"p{i}.nii.gz")
    return mask


def test_nifti_labels_from_masks(tmp_path):
    mask = _nifti_dataset(tmp_path)
    frame = rows_to_frame(scan_source("nifti", tmp_path).rows)
    p0 = frame[frame.patient_id == "p0"].sort_values("slice_idx")
    np.testing.assert_array_equal(p0[list(LABELS)].to_numpy(dtype=int), labels_from_mask(mask))
    assert p0["has_mask"].all() and p0["mask"].iloc[2].endswith("p0.nii.gz#2")


def test_nifti_bad_inputs_are_skipped_and_named(tmp_path):
    _nifti_dataset(tmp_path, n=3)
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 5), np.uint8), AFFINE), tmp_path / "masks" / "p1.nii.gz")
    raw = (tmp_path / "volumes" / "p2.nii.gz").read_bytes()
    (tmp_path / "volumes" / "p2.nii.gz").write_bytes(raw[:100])
    pd.DataFrame({"patient_id": ["p0"], "slice_idx": [99], "any": [1], "SDH": [1]}).to_csv(tmp_path / "slice_labels.csv", index=False)
    scan = scan_source("nifti", tmp_path)
    reasons = " | ".join(f"{s['item']}: {s['reason']}" for s in scan.skipped)
    assert "p1.nii.gz: mask shape (32, 32, 5) differs" in reasons
    assert "p2.nii.gz: cannot read NIfTI" in reasons
    assert "patient p0 slice 99: slice does not exist" in reasons
    assert {r["patient_id"] for r in scan.rows} == {"p0"}


def test_nifti_unknown_subtype_column_and_label(tmp_path):
    _nifti_dataset(tmp_path, n=1)
    pd.DataFrame({"patient_id": ["p0"], "slice_idx": [0], "chronic_SDH": [1]}).to_csv(tmp_path / "slice_labels.csv", index=False)
    with pytest.raises(ValueError, match="slice_labels.csv: column 'chronic_SDH': unknown subtype"):
        scan_source("nifti", tmp_path)
    (tmp_path / "slice_labels.csv").unlink()
    bad = np.zeros((32, 32, 6), np.uint8)
    bad[1, 1, 1] = 7
    nib.save(nib.Nifti1Image(bad, AFFINE), tmp_path / "masks" / "p0.nii.gz")
    scan = scan_source("nifti", tmp_path)
    assert "unknown subtype label(s) [7]" in scan.skipped[0]["reason"]


def test_physionet_jpg_layout_with_masks_and_bad_rows(tmp_path):
    from PIL import Image

    folder = tmp_path / "Patients_CT" / "049" / "brain"
    folder.mkdir(parents=True)
    for s in (1, 2, 3):
        Image.fromarray(np.full((16, 16), 40 * s, np.uint8)).save(folder / f"{s}.jpg")
    seg = np.zeros((16, 16), np.uint8)
    seg[4:8, 4:8] = 255
    Image.fromarray(seg).save(folder / "2_HGE_Seg.jpg")
    Image.fromarray(seg).save(folder / "3_HGE_Seg.jpg")
    header = "PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No\n"
    rows = ["49,1,0,0,0,0,0,1,0", "49,2,0,1,0,0,0,0,0", "49,3,1,1,0,0,0,0,0", "49,4,0,0,0,0,0,1,0"]
    (tmp_path / "hemorrhage_diagnosis.csv").write_text(header + "\n".join(rows) + "\n")
    scan = scan_source("physionet", tmp_path)
    frame = rows_to_frame(scan.rows).set_index("slice_idx")
    assert frame.loc[1, "mask"].endswith("2_HGE_Seg.jpg@4")  # single subtype IPH -> label 4
    # two subtypes: the mask is "any bleed" with the subtype unknown (6), no boxes; labels kept
    assert frame.loc[2, "mask"].endswith("3_HGE_Seg.jpg@6") and not frame.loc[2, "has_boxes"] and frame.loc[2, "IVH"] == 1
    assert frame.loc[0, "mask"].endswith("1.jpg@0")  # No_Hemorrhage slice of a masked patient: empty mask
    reasons = [s["reason"] for s in scan.skipped]
    assert any("4.jpg missing" in r for r in reasons)


def test_rsna_groups_by_dicom_tags(tmp_path):
    vol = np.random.default_rng(0).integers(-1000, 80, (16, 16, 4)).astype(np.float32)
    paths = write_dicom_series(vol, AFFINE, tmp_path / "stage_2_train", patient_id="ID_pat1", shuffle_names=True)
    import pydicom

    lines = ["ID,Label"]
    by_z = {}
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sop = f"ID_{p.stem}"
        p.rename(p.with_name(f"{sop}.dcm"))
        by_z[float(ds.ImagePositionPatient[2])] = sop
    for z, sop in by_z.items():
        positive = int(z == max(by_z))
        for name in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"):
            lines.append(f"{sop}_{name},{positive if name in ('subdural', 'any') else 0}")
    lines.append("ID_missing_any,1")
    (tmp_path / "stage_2_train.csv").write_text("\n".join(lines) + "\n")
    scan = scan_source("rsna", tmp_path)
    frame = rows_to_frame(scan.rows).sort_values("slice_idx")
    assert frame["patient_id"].unique().tolist() == ["ID_pat1"]
    assert frame["slice_idx"].tolist() == [0, 1, 2, 3]
    top = frame.iloc[-1]  # highest z is the last slice
    assert top["any"] == 1 and top["SDH"] == 1 and top["image"].endswith(f"{by_z[max(by_z)]}.dcm")
    assert any("ID_missing" in s["item"] for s in scan.skipped)
