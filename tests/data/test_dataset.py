import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from hemo_mtl.data.dataset import HemorrhageDataset, collate_samples
from hemo_mtl.data.manifest import rows_to_frame
from hemo_mtl.data.sources import scan_source

AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


@pytest.fixture()
def tiny_nifti(tmp_path):
    """Two 64x64x3 volumes: a bright 'bleed' (70 HU) exactly where the mask says, two subtypes on slice 1."""
    (tmp_path / "volumes").mkdir()
    (tmp_path / "masks").mkdir()
    for pid in ("a", "b"):
        vol = np.full((64, 64, 3), 30.0, np.float32)
        vol[:4] = -1000.0
        mask = np.zeros((64, 64, 3), np.uint8)
        mask[10:20, 12:18, 1] = 2  # SDH block
        mask[40:42, 40:43, 1] = 2  # second SDH component
        mask[30:35, 50:60, 1] = 4  # IPH
        vol[mask > 0] = 70.0
        nib.save(nib.Nifti1Image(vol, AFFINE), tmp_path / "volumes" / f"{pid}.nii.gz")
        nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "masks" / f"{pid}.nii.gz")
    return rows_to_frame(scan_source("nifti", tmp_path).rows)


def test_sample_contract_and_windowing(tiny_nifti):
    ds = HemorrhageDataset(tiny_nifti, windows=("brain", "subdural"), image_size=64)
    s = ds[1]  # patient a, slice 1
    assert s["image"].shape == (2, 64, 64) and s["image"].dtype == torch.float32
    # brain window of 30 HU = (30 - 0) / 80; subdural of 70 HU = (70 + 20) / 200
    assert s["image"][0, 60, 5].item() == pytest.approx(30 / 80)
    assert s["image"][1, 12, 14].item() == pytest.approx(90 / 200)
    assert s["image"][0, 0, 0].item() == 0.0  # air
    assert s["cls"].tolist() == [1, 0, 1, 0, 1, 0] and s["cls_valid"].tolist() == [1] * 6
    assert s["mask"].dtype == torch.int64 and s["has"] == {"cls": True, "mask": True, "boxes": True}
    assert s["meta"]["patient_id"] == "a" and s["meta"]["slice_idx"] == 1
    assert s["meta"]["spacing"] == pytest.approx((0.9, 0.9, 5.0))


def test_instances_are_connected_components(tiny_nifti):
    s = HemorrhageDataset(tiny_nifti, image_size=64)[1]
    mask = s["mask"].numpy()
    expected = []
    for label in (1, 2, 3, 4, 5):
        comp, n = ndimage.label(mask == label, structure=np.ones((3, 3)))
        for sl in ndimage.find_objects(comp):
            expected.append((label, sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    got = sorted((int(l), *map(int, b)) for l, b in zip(s["labels"], s["boxes"]))
    assert got == sorted(expected) and len(got) == 3
    for m, b in zip(s["masks"], s["boxes"]):
        ys, xs = np.nonzero(m.numpy())
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in b)


def test_augmentation_keeps_mask_on_blood_and_is_reproducible(tiny_nifti):
    aug = {"rotate": 20.0, "translate": 0.1, "p_affine": 1.0, "hu_noise": 0.0, "hu_shift": 0.0, "hu_scale": 0.0}
    ds = HemorrhageDataset(tiny_nifti, image_size=64, train=True, augment=aug, windows=("subdural",), seed=5)
    s = ds[1]
    blood = s["image"][0][s["mask"] > 0]
    assert blood.numel() > 0 and blood.mean().item() > 0.4  # 70 HU in subdural window = 0.45
    again = ds[1]
    assert torch.equal(s["image"], again["image"]) and torch.equal(s["mask"], again["mask"])
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], s["image"])


def test_flip_lr_mirrors_the_patients_left_right_axis(tiny_nifti):
    """flip_lr=1: image, mask and boxes are the volume's slice mirrored along array axis 0 (nibabel's L/R)."""
    aug = {"p_affine": 0.0, "flip_lr": 1.0, "hu_noise": 0.0, "hu_shift": 0.0, "hu_scale": 0.0}
    plain = HemorrhageDataset(tiny_nifti, image_size=64, windows=("subdural",))[1]
    flipped = HemorrhageDataset(tiny_nifti, image_size=64, train=True, augment=aug, windows=("subdural",))[1]
    path, k = tiny_nifti.iloc[1]["mask"].split("#")  # "file#slice"
    truth = np.asarray(nib.load(path).dataobj)[:, :, int(k)][::-1]
    assert np.array_equal(flipped["mask"].numpy(), truth)
    assert torch.equal(flipped["image"], plain["image"].flip(-2))
    h = plain["image"].shape[-2]  # a box's rows [y0, y1) become [h - y1, h - y0)
    mirrored = sorted((int(l), int(x0), h - int(y1), int(x1), h - int(y0))
                      for l, (x0, y0, x1, y1) in zip(plain["labels"], plain["boxes"]))
    assert sorted((int(l), *map(int, b)) for l, b in zip(flipped["labels"], flipped["boxes"])) == mirrored


def test_flip_lr_of_a_display_image_mirrors_its_columns(tmp_path):
    """A JPG/PNG slice is stored as viewed (anterior up): the patient's left-right axis is the columns."""
    from PIL import Image

    from hemo_mtl.data.manifest import make_row, rows_to_frame

    img = np.zeros((64, 64), np.uint8)
    img[10:20, 5:15] = 200  # one bright square, top left
    Image.fromarray(img).save(tmp_path / "0.png")
    frame = rows_to_frame([make_row("p", 0, "physionet", str(tmp_path / "0.png"), "display", [0] * 6)])
    aug = {"p_affine": 0.0, "flip_lr": 1.0, "brightness_contrast": 0.0}
    plain = HemorrhageDataset(frame, image_size=64)[0]["image"]
    flipped = HemorrhageDataset(frame, image_size=64, train=True, augment=aug)[0]["image"]
    assert torch.equal(flipped, plain.flip(-1))
    from hemo_mtl.data.views import DatasetView

    base = HemorrhageDataset(frame, image_size=64)
    assert base.kind == "display" and DatasetView(base, [0]).kind == "display"  # what flip TTA mirrors by
    # the 8-bit slice / 255, mirrored (no resize at 64 px: exact up to the float32 division)
    torch.testing.assert_close(flipped[0], torch.from_numpy(img[:, ::-1] / 255.0).float(), rtol=0, atol=1e-6)


def test_partial_labels_kaggle(kaggle_head_ct_dir):
    frame = rows_to_frame(scan_source("kaggle", kaggle_head_ct_dir).rows)
    ds = HemorrhageDataset(frame.iloc[:3], windows=("brain", "brain", "brain"), image_size=96)
    batch = collate_samples([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 96, 96)
    assert batch["cls_valid"][:, 0].eq(1).all() and batch["cls_valid"][:, 1:].eq(0).all()
    assert not batch["has"]["mask"].any() and not batch["has"]["boxes"].any()
    assert all(t["boxes"].shape == (0, 4) for t in batch["targets"])
    # grayscale repeated to 3 channels, letterboxed into a square; the resize runs in OpenCV, which may
    # process channels in separate chunks (OpenCV 5 does above 4 channels) with float32 rounding
    # differences ~1e-8 on these [0, 1] values: 1e-6 allows that, a channel resized differently is off by > 1e-2
    torch.testing.assert_close(batch["image"][:, 0], batch["image"][:, 2], rtol=0, atol=1e-6)


def test_patient_filter_and_unknown_patient(tiny_nifti):
    assert len(HemorrhageDataset(tiny_nifti, patients=["b"])) == 3
    with pytest.raises(ValueError, match="patients not in the manifest"):
        HemorrhageDataset(tiny_nifti, patients=["zzz"])
