"""Sources against the datasets' own CSVs (the real samples named by HEMO_MTL_SHARED_DATA) and hand-made bad inputs."""
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
    # only 081 carries mask files; the other bleeding patients have no masks (none, not empty ones), the
    # patients without ICH (PROVENANCE.md) have empty masks by the release's definition
    no_ich = {"054", "055", "056", "059", "060", "061", "062", "064"}
    assert set(frame.loc[frame["has_mask"], "patient_id"]) == {"081"} | no_ich
    assert frame.loc[frame["patient_id"].isin(no_ich), "has_mask"].all()


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


def _reasons(scan) -> str:
    return " | ".join(f"{s['item']}: {s['reason']}" for s in scan.skipped)


def test_nifti_csv_whitespace_bad_cells_and_duplicates(tmp_path):
    """No masks, so every label comes from slice_labels.csv: stray spaces must not lose them, a bad
    cell loses only its row (named by line), conflicting duplicates are refused, identical ones used."""
    _nifti_dataset(tmp_path, n=1)
    for f in (tmp_path / "masks").iterdir():
        f.unlink()
    (tmp_path / "slice_labels.csv").write_text(
        " patient_id , slice_idx ,any, SDH \n"
        " p0 , 0 , 1 , 1 \n"       # line 2: spaces everywhere
        "p0,1,yes,0\n"             # line 3: bad label
        "p0,2,0.5,0\n"             # line 4: truncated to 0 by int() before
        "p0,3,1,1\n"               # line 5
        "p0,3,0,0\n"               # line 6: conflicts with line 5
        "p0,4,0,0\n"               # line 7
        "p0,4,0.0,0\n"             # line 8: identical to line 7
        "p0,5,,\n"                 # line 9: empty = unknown in this layout
    )
    scan = scan_source("nifti", tmp_path)
    frame = rows_to_frame(scan.rows).set_index("slice_idx")
    assert frame.loc[0, "any"] == 1 and frame.loc[0, "SDH"] == 1 and frame.loc[0, "has_cls"]
    assert frame.loc[4, "any"] == 0 and frame.loc[4, "SDH"] == 0
    for k in (1, 2, 3, 5):  # left out (1-3) or unknown (5): no label at all, never a guessed one
        assert not frame.loc[k, "has_cls"] and pd.isna(frame.loc[k, "any"]), k
    csv = tmp_path / "slice_labels.csv"
    reasons = _reasons(scan)
    assert f"{csv} line 3: column 'any': label must be 0 or 1, got 'yes'" in reasons
    assert f"{csv} line 4: column 'any': label must be 0 or 1, got '0.5'" in reasons
    assert f"{csv} lines 5, 6: conflicting rows for patient/slice ('p0', 3)" in reasons
    assert any(f"{csv} lines 7, 8" in n and "identical" in n for n in scan.notes)
    assert len(scan.skipped) == 3


def test_nifti_csv_rows_without_volume_and_bad_lesion_rows(tmp_path):
    mask = _nifti_dataset(tmp_path, n=1)
    (tmp_path / "slice_labels.csv").write_text("patient_id,slice_idx,any\nghost,0,1\n")
    (tmp_path / "lesions.csv").write_text(
        "patient_id,lesion,subtype,location,first_slice,last_slice\n"
        "p0,0,SDH,lobar,2,2\np0,1,chronic,deep,3,3\np0,2,IVH,deep,x,3\n"
    )
    scan = scan_source("nifti", tmp_path)
    reasons = _reasons(scan)
    assert "slice_labels.csv patient ghost: 1 row(s) for a patient without a volume" in reasons
    assert "lesions.csv line 3: column 'subtype': unknown subtype 'chronic'" in reasons
    assert "lesions.csv line 4: column 'first_slice': expected an integer, got 'x'" in reasons
    frame = rows_to_frame(scan.rows).set_index("slice_idx")
    assert frame.loc[2, "location"] == "lobar" and (mask[:, :, 2] == 2).any()


def test_kaggle_csv_cells_checked(tmp_path):
    from PIL import Image

    (tmp_path / "head_ct").mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(tmp_path / "head_ct" / f"{i:03d}.png")
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n 0 , 1 \n1,0.5\n2,\n3,1\n3,0\n4,0\n4,0\n5,2\n")
    scan = scan_source("kaggle", tmp_path)
    frame = rows_to_frame(scan.rows).set_index("patient_id")
    assert frame["any"].to_dict() == {"000": 1, "004": 0}
    csv = tmp_path / "labels.csv"
    reasons = _reasons(scan)
    assert f"{csv} line 3: column 'hemorrhage': label must be 0 or 1, got '0.5'" in reasons
    assert f"{csv} line 4: column 'hemorrhage': empty label cell" in reasons
    assert f"{csv} lines 5, 6: conflicting rows for id 3" in reasons
    assert f"{csv} line 9: column 'hemorrhage': label must be 0 or 1, got '2'" in reasons
    # images whose row was bad are reported by their row, not a second time as "no row in labels.csv"
    assert "no row" not in reasons and len(scan.skipped) == 4


def test_physionet_csv_cells_checked(tmp_path):
    from PIL import Image

    folder = tmp_path / "Patients_CT" / "049" / "brain"
    folder.mkdir(parents=True)
    for s in range(1, 7):
        Image.fromarray(np.full((16, 16), 20 * s, np.uint8)).save(folder / f"{s}.jpg")
    header = " PatientNumber , SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,No_Hemorrhage,Fracture_Yes_No\n"
    rows = [" 49 , 1 ,0,0,0,0,0,1,0",   # line 2: spaces
            "49,2,0,yes,0,0,0,0,0",      # line 3
            "49,3,0,0,0,0,0,No_Hemorrhage=2,0",  # line 4
            "49,4,0,1,0,0,0,1,0",        # line 5: No_Hemorrhage=1 with IPH
            "49,5,0,1,0,0,0,0,0",        # line 6
            "49,5,0,0,0,0,0,1,0",        # line 7: conflicts with line 6
            "49,6,0,,0,0,0,0,0"]         # line 8: empty
    (tmp_path / "hemorrhage_diagnosis.csv").write_text(header + "\n".join(rows) + "\n")
    scan = scan_source("physionet", tmp_path)
    frame = rows_to_frame(scan.rows)
    assert frame["slice_idx"].tolist() == [0] and frame["any"].tolist() == [0]
    csv = tmp_path / "hemorrhage_diagnosis.csv"
    reasons = _reasons(scan)
    assert f"{csv} line 3: column 'Intraparenchymal': label must be 0 or 1, got 'yes'" in reasons
    assert f"{csv} line 4: column 'No_Hemorrhage': label must be 0 or 1, got 'No_Hemorrhage=2'" in reasons
    assert f"{csv} line 5: patient 49 slice 4: No_Hemorrhage=1 but a subtype is set" in reasons
    assert f"{csv} lines 6, 7: conflicting rows for patient/slice (49, 5)" in reasons
    assert f"{csv} line 8: column 'Intraparenchymal': empty label cell" in reasons


def test_nifti_nan_non_hu_and_wrapping_mask_are_skipped_not_fatal(tmp_path):
    _nifti_dataset(tmp_path, n=4)
    nib.save(nib.Nifti1Image(np.full((32, 32, 6), np.nan, np.float32), AFFINE), tmp_path / "volumes" / "p1.nii.gz")
    nib.save(nib.Nifti1Image(np.full((32, 32, 6), 100.0, np.float32), AFFINE), tmp_path / "volumes" / "p2.nii.gz")
    wrap = np.zeros((32, 32, 6), np.int16)
    wrap[4, 4, 1] = 257
    nib.save(nib.Nifti1Image(wrap, AFFINE), tmp_path / "masks" / "p3.nii.gz")
    scan = scan_source("nifti", tmp_path)
    reasons = _reasons(scan)
    assert "p1.nii.gz: 6144 of 6144 voxels are NaN or infinite" in reasons
    assert "p2.nii.gz: intensities 100..100 have no air" in reasons
    assert "p3.nii.gz: unknown subtype label(s) [257] (expected 0..5)" in reasons
    assert {r["patient_id"] for r in scan.rows} == {"p0"}


def test_kaggle_accepts_burned_in_colour_text_and_says_so(tmp_path):
    from PIL import Image

    (tmp_path / "head_ct").mkdir()
    gray = np.random.default_rng(4).integers(0, 256, (40, 40)).astype(np.uint8)
    rgb = np.stack([gray] * 3, -1)
    rgb[2:6, 2:12] = [230, 40, 40]  # a red "L" marker: 40 of 1600 pixels (2.5%)
    Image.fromarray(rgb).save(tmp_path / "head_ct" / "000.png")
    rgb[10:30, 5:35] = [0, 0, 255]  # plus a blue overlay: 600 more pixels, 40% in all
    Image.fromarray(rgb).save(tmp_path / "head_ct" / "001.png")
    (tmp_path / "labels.csv").write_text("id, hemorrhage\n0,1\n1,0\n")
    scan = scan_source("kaggle", tmp_path)
    assert [r["patient_id"] for r in scan.rows] == ["000"]
    assert any("000.png: 40 coloured pixel(s)" in n for n in scan.notes)
    assert "001.png: colour image whose channels differ on 40.0%" in _reasons(scan)


def test_rsna_bad_label_rows_and_missing_pixel_spacing(tmp_path):
    import pydicom

    vol = np.random.default_rng(0).integers(-1000, 80, (8, 8, 2)).astype(np.float32)
    paths = write_dicom_series(vol, AFFINE, tmp_path / "stage_2_train", patient_id="P")
    sops = []
    for p in paths:
        sop = f"ID_{p.stem}"
        sops.append(p.rename(p.with_name(f"{sop}.dcm")))
    ds = pydicom.dcmread(sops[1])
    del ds["PixelSpacing"]
    ds.save_as(sops[1])
    a, b = sops[0].stem, sops[1].stem
    (tmp_path / "stage_2_train.csv").write_text(
        f"ID,Label\n{a}_any,yes\n{a}_subdural,1\n{a}_subdural,0\n{a}_epidural,0\n{a}_epidural,0\n{a}_chronic,1\n{b}_any,0\n")
    scan = scan_source("rsna", tmp_path)
    csv = tmp_path / "stage_2_train.csv"
    reasons = _reasons(scan)
    assert f"{csv} line 2: column 'Label': label must be 0 or 1, got 'yes'" in reasons
    assert f"{csv} lines 3, 4: conflicting rows for slice/label ('{a}', 2)" in reasons
    assert f"{csv} line 7: ID '{a}_chronic': unknown subtype" in reasons
    assert f"{sops[1]}: DICOM tag PixelSpacing missing" in reasons
    frame = rows_to_frame(scan.rows)
    assert frame["image"].tolist() == [str(sops[0].resolve())] and frame["EDH"].tolist() == [0]
    assert pd.isna(frame["any"].iloc[0]) and pd.isna(frame["SDH"].iloc[0])  # refused cells stay unknown
