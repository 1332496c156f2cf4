"""CT-ICH NIfTI release: binary masks on multi-subtype slices kept as "subtype unknown", and counted."""
import nibabel as nib
import numpy as np

from hemo_mtl.categories import CATEGORY_IDS, UNKNOWN_SUBTYPE
from hemo_mtl.data.io import read_slice
from hemo_mtl.data.manifest import rows_to_frame
from hemo_mtl.data.sources import scan_source
from hemo_mtl.data.statistics import HU_BINS, UNKNOWN_NAME, image_statistics

HEADER = ("PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,"
          "No_Hemorrhage,Fracture_Yes_No\n")
AFFINE = np.diag([0.5, 0.5, 4.0, 1.0])


def make_nifti_release(root):
    """Patient 049, 3 slices: 1 normal, 2 SDH (12 px), 3 IVH + IPH (one binary blob of 20 px)."""
    (root / "ct_scans").mkdir()
    (root / "masks").mkdir()
    hu = np.full((16, 16, 3), 30.0, np.float32)  # brain
    hu[0, :, :] = -1000.0  # air
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[2:5, 2:6, 1] = 1
    mask[8:12, 6:11, 2] = 1
    hu[mask > 0] = 70.0  # blood
    nib.save(nib.Nifti1Image(hu, AFFINE), root / "ct_scans" / "049.nii")
    nib.save(nib.Nifti1Image(mask, AFFINE), root / "masks" / "049.nii")
    rows = ["49,1,0,0,0,0,0,1,0", "49,2,0,0,0,0,1,0,0", "49,3,1,1,0,0,0,0,0"]
    (root / "hemorrhage_diagnosis_raw_ct.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return mask


def test_nifti_release_keeps_multi_subtype_masks_as_unknown_and_statistics_count_them(tmp_path):
    mask = make_nifti_release(tmp_path)
    scan = scan_source("physionet", tmp_path)
    frame = rows_to_frame(scan.rows).sort_values("slice_idx")
    assert frame["has_mask"].all() and frame["has_boxes"].tolist() == [True, True, False]
    assert np.array_equal(read_slice(frame["mask"].iloc[1], "mask"), mask[:, :, 1] * CATEGORY_IDS["SDH"])
    assert np.array_equal(read_slice(frame["mask"].iloc[2], "mask"), mask[:, :, 2] * UNKNOWN_SUBTYPE)
    assert "1 masks on slices with several subtypes" in " ".join(scan.notes)

    stats = image_statistics(frame, heatmap_size=16)
    assert stats["slices_with_mask"] == 3 and stats["slices_with_empty_mask"] == 1
    assert stats["slices_with_unknown_subtype_mask"] == 1
    blood_bin = np.searchsorted(HU_BINS, 70.0, side="right") - 1
    hist = {k: np.asarray(v) for k, v in stats["hu_hist"].items()}
    assert hist[UNKNOWN_NAME].sum() == hist[UNKNOWN_NAME][blood_bin] == 20  # its 20 pixels, at 70 HU
    assert hist["SDH"].sum() == 12 and hist["IPH"].sum() == hist["IVH"].sum() == 0  # no subtype guessed
    assert stats["areas_mm2"][UNKNOWN_NAME] == [20 * 0.25] and stats["areas_mm2"]["SDH"] == [12 * 0.25]
    assert stats["volumes_ml"][UNKNOWN_NAME] == [20 * 0.25 * 4.0 / 1000]
    assert stats["heatmaps"][UNKNOWN_NAME].sum() == 20 and stats["heatmaps"]["IPH"].sum() == 0
