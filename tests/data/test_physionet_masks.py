"""CT-ICH JPG release masks: the per-patient empty-mask rule, on a hand-made release and on the real sample."""
import numpy as np
from PIL import Image

from hemo_mtl.categories import CATEGORY_IDS, UNKNOWN_SUBTYPE
from hemo_mtl.data.io import read_slice
from hemo_mtl.data.manifest import rows_to_frame
from hemo_mtl.data.sources import scan_source

HEADER = ("PatientNumber,SliceNumber,Intraventricular,Intraparenchymal,Subarachnoid,Epidural,Subdural,"
          "No_Hemorrhage,Fracture_Yes_No\n")
SIZE = 24


def _blob(y0, x0, n=6) -> np.ndarray:
    seg = np.zeros((SIZE, SIZE), np.uint8)
    seg[y0:y0 + n, x0:x0 + n] = 255
    return seg


def make_release(root) -> dict:
    """Patient 049 has masks (slices 2 SDH, 4 IVH+IPH masked; 3 IPH without a file; 1, 5 normal);
    patient 050 has none (slice 2 is a bleed, slice 1 normal); patient 051 has no bleed slice (and so no
    mask file). Returns the masks written."""
    rows = {
        49: [(1, "0,0,0,0,0,1"), (2, "0,0,0,0,1,0"), (3, "0,1,0,0,0,0"), (4, "1,1,0,0,0,0"), (5, "0,0,0,0,0,1")],
        50: [(1, "0,0,0,0,0,1"), (2, "0,0,0,1,0,0")],
        51: [(1, "0,0,0,0,0,1"), (2, "0,0,0,0,0,1")],
    }
    masks = {(49, 2): _blob(4, 4), (49, 4): _blob(10, 12)}
    lines = []
    for patient, slices in rows.items():
        folder = root / "Patients_CT" / f"{patient:03d}" / "brain"
        folder.mkdir(parents=True)
        for s, cells in slices:
            Image.fromarray(np.full((SIZE, SIZE), 30 + 20 * s, np.uint8)).save(folder / f"{s}.jpg", quality=95)
            lines.append(f"{patient},{s},{cells},0")
            if (patient, s) in masks:
                Image.fromarray(masks[patient, s]).save(folder / f"{s}_HGE_Seg.jpg", quality=95)
    (root / "hemorrhage_diagnosis.csv").write_text(HEADER + "\n".join(lines) + "\n")
    return masks


def test_empty_mask_rule_per_patient_folder(tmp_path):
    masks = make_release(tmp_path)
    scan = scan_source("physionet", tmp_path)
    frame = rows_to_frame(scan.rows).set_index(["patient_id", "slice_idx"])
    assert len(frame) == 9 and scan.skipped == []
    # masked patient: No_Hemorrhage slices have an empty mask (real supervision), read as all zeros
    for s in (1, 5):
        row = frame.loc[("049", s - 1)]
        assert row["has_mask"] and row["has_boxes"], s
        empty = read_slice(row["mask"], "mask")
        assert empty.shape == (SIZE, SIZE) and not empty.any()
    # the single-subtype masked slice: its mask, labelled SDH, where the file is white
    row = frame.loc[("049", 1)]
    assert row["has_mask"] and row["mask"].endswith(f"2_HGE_Seg.jpg@{CATEGORY_IDS['SDH']}")
    got = read_slice(row["mask"], "mask")
    assert np.array_equal(got, (masks[49, 2] > 0) * CATEGORY_IDS["SDH"])  # lossy JPEG, thresholded back exactly
    # a bleed slice without a mask file: no mask (absent, not empty)
    row = frame.loc[("049", 2)]
    assert row["any"] == 1 and not row["has_mask"] and row["mask"] == ""
    # several subtypes (IVH + IPH): the binary mask is kept as "bleed, subtype unknown", without boxes
    row = frame.loc[("049", 3)]
    assert row["has_mask"] and not row["has_boxes"] and row["mask"].endswith(f"4_HGE_Seg.jpg@{UNKNOWN_SUBTYPE}")
    assert np.array_equal(read_slice(row["mask"], "mask"), (masks[49, 4] > 0) * UNKNOWN_SUBTYPE)
    # a patient with a bleed but without any mask file: no masks at all, bleed or not
    assert not frame.loc["050"]["has_mask"].any()
    # a patient without a bleed slice, in a release that carries masks: empty masks throughout
    for s in (1, 2):
        row = frame.loc[("051", s - 1)]
        assert row["has_mask"] and not read_slice(row["mask"], "mask").any()
    notes = " ".join(scan.notes)
    assert "1 of 3 patient folders" in notes and "1 patients without a bleed slice" in notes
    assert "1 masks on slices with several subtypes" in notes


def test_release_without_mask_files_has_no_masks(tmp_path):
    """Empty-by-definition masks need a release that masks its bleeds: with no mask file anywhere,
    not even a patient without a bleed gets an (unfounded) empty mask."""
    make_release(tmp_path)
    for f in tmp_path.glob("Patients_CT/*/brain/*_HGE_Seg.jpg"):
        f.unlink()
    frame = rows_to_frame(scan_source("physionet", tmp_path).rows)
    assert not frame["has_mask"].any()


def test_unknown_subtype_mask_through_the_dataset(tmp_path):
    """Resize and augmentation carry the unknown-subtype value (nearest neighbour); no boxes come of it."""
    from hemo_mtl.data.dataset import HemorrhageDataset

    masks = make_release(tmp_path)
    frame = rows_to_frame(scan_source("physionet", tmp_path).rows)
    frame["has_boxes"] = True  # the dataset itself refuses boxes of unknown category, whatever the row says
    aug = {"rotate": 30.0, "p_affine": 1.0, "scale": (0.8, 1.2)}
    for train in (False, True):
        ds = HemorrhageDataset(frame, patients=["049"], image_size=48, train=train, augment=aug)
        row = int(ds.frame.index[ds.frame["slice_idx"] == 3][0])
        sample = ds[row]
        values = set(sample["mask"].unique().tolist())
        assert values == {0, UNKNOWN_SUBTYPE}, (train, values)
        assert sample["has"]["mask"] and not sample["has"]["boxes"] and len(sample["boxes"]) == 0
        if not train:  # 24 -> 48 px nearest: each pixel becomes 2x2
            assert int((sample["mask"] == UNKNOWN_SUBTYPE).sum()) == 4 * int((masks[49, 4] > 0).sum())


def test_mask_contradicting_its_label_is_reported_not_used(tmp_path):
    make_release(tmp_path)
    folder = tmp_path / "Patients_CT" / "049" / "brain"
    Image.fromarray(_blob(2, 2)).save(folder / "5_HGE_Seg.jpg", quality=95)  # bleed on a No_Hemorrhage slice
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / "3_HGE_Seg.jpg")  # empty on a bleed slice
    Image.fromarray(_blob(2, 2)).save(folder / "9_HGE_Seg.jpg")  # no such slice
    scan = scan_source("physionet", tmp_path)
    frame = rows_to_frame(scan.rows).set_index(["patient_id", "slice_idx"])
    assert not frame.loc[("049", 4), "has_mask"] and not frame.loc[("049", 2), "has_mask"]
    reasons = {s["item"].rsplit("/", 1)[-1]: s["reason"] for s in scan.skipped}
    assert "No_Hemorrhage" in reasons["5_HGE_Seg.jpg"]
    assert "empty mask" in reasons["3_HGE_Seg.jpg"]
    assert "no row" in reasons["9_HGE_Seg.jpg"]


def test_binary_mask_threshold_is_mid_grey(tmp_path):
    """JPEG masks are lossy: grey >= 128 is bleed, <= 127 is not (lossless PNG to pin the exact levels)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "m.png")
    got = read_slice(f"{tmp_path / 'm.png'}@3", "mask")
    assert np.array_equal(got, np.where(levels >= 128, 3, 0))


def test_real_sample_patient_081_masks(ctich_jpg_dir):
    scan = scan_source("physionet", ctich_jpg_dir)
    frame = rows_to_frame(scan.rows)
    normal_patients = {"054", "055", "056", "059", "060", "061", "062", "064"}  # PROVENANCE.md: no ICH
    others = frame[frame["patient_id"] != "081"]
    # bleeding patients without mask files: no masks; patients without a bleed: empty masks throughout
    assert set(others.loc[others["has_mask"], "patient_id"]) == normal_patients
    assert others.loc[others["patient_id"].isin(normal_patients), "has_mask"].all()
    p081 = frame[frame["patient_id"] == "081"].sort_values("slice_idx")
    assert p081["has_mask"].all()  # every 081 slice: 15 masked bleeds + empty-by-definition normals
    bleed = p081[p081["any"] == 1]
    assert (bleed["slice_idx"] + 1).tolist() == list(range(13, 28))
    for ref in bleed["mask"]:
        m = read_slice(ref, "mask")
        assert m.shape == (650, 650) and set(np.unique(m)) == {0, CATEGORY_IDS["SDH"]}, ref
        assert (m > 0).sum() > 1000  # the smallest of these masks (slice 27) has 1307 bleed pixels
    normal = p081[p081["any"] == 0]
    assert len(normal) == 14
    for ref in normal["mask"]:
        m = read_slice(ref, "mask")
        assert m.shape == (650, 650) and not m.any(), ref


def test_real_sample_dataset_yields_081_masks(ctich_jpg_dir):
    from hemo_mtl.data.dataset import HemorrhageDataset

    frame = rows_to_frame(scan_source("physionet", ctich_jpg_dir).rows)
    ds = HemorrhageDataset(frame, patients=["081"], image_size=128)
    by_slice = {int(r.slice_idx): i for i, r in ds.frame.iterrows()}
    bleed, normal = ds[by_slice[19]], ds[by_slice[5]]  # slice 20 (SDH, masked) and 6 (normal)
    assert bleed["has"]["mask"] and int((bleed["mask"] == CATEGORY_IDS["SDH"]).sum()) > 50
    assert len(bleed["boxes"]) >= 1 and set(bleed["labels"].tolist()) == {CATEGORY_IDS["SDH"]}
    assert normal["has"]["mask"] and not normal["mask"].any() and len(normal["boxes"]) == 0


def test_coco_export_of_the_release(tmp_path):
    """COCO from the release: the SDH mask annotated, the multi-subtype one flagged and reported."""
    import json

    from hemo_mtl.data.convert import convert_dataset

    masks = make_release(tmp_path / "src")
    report = convert_dataset("physionet", tmp_path / "src", tmp_path / "out", formats=("manifest", "coco"),
                             val=0.0, test=0.0, progress=False)
    coco = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
    images = {(i["patient_id"], i["slice_idx"]): i for i in coco["images"]}
    assert len(images) == 9  # every slice is an image entry
    sdh = [a for a in coco["annotations"] if a["image_id"] == images["049", 1]["id"]]
    assert [a["category_id"] for a in sdh] == [CATEGORY_IDS["SDH"]] and sdh[0]["area"] == (masks[49, 2] > 0).sum()
    multi = images["049", 3]
    assert multi["unknown_subtype_pixels"] == (masks[49, 4] > 0).sum()
    assert not [a for a in coco["annotations"] if a["image_id"] == multi["id"]]
    counts = report["exports"]["coco"]["train"]
    assert counts["unknown_subtype_images"] == 1 and counts["negative_images"] == 7  # + 051 slices 1, 2
