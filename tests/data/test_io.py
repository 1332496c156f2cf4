
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from hemo_mtl.data.io import (
    DataError, load_dicom_series, load_dicom_slice, load_display_image, load_nifti, load_nifti_mask,
    read_slice, split_ref, write_dicom_series,
)

AFFINE = np.array([[0.8, 0, 0, -90.0], [0, 0.9, 0, -100.0], [0, 0, 5.0, -40.0], [0, 0, 0, 1]])


def _volume(shape=(24, 20, 6), seed=0):
    return np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.float32)


def test_nifti_roundtrip_keeps_affine_and_spacing(tmp_path):
    vol = _volume()
    nib.save(nib.Nifti1Image(vol, AFFINE), tmp_path / "a.nii.gz")
    loaded = load_nifti(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(loaded.data, vol)
    np.testing.assert_allclose(loaded.affine, AFFINE)
    assert loaded.spacing == pytest.approx((0.8, 0.9, 5.0))
    assert loaded.orientation == "".join(nib.aff2axcodes(AFFINE))


def test_nifti_missing_truncated_and_4d(tmp_path):
    with pytest.raises(DataError, match="nope.nii.gz: file not found"):
        load_nifti(tmp_path / "nope.nii.gz")
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "a.nii.gz")
    raw = (tmp_path / "a.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.nii.gz: cannot read NIfTI"):
        load_nifti(tmp_path / "cut.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), AFFINE), tmp_path / "4d.nii.gz")
    with pytest.raises(DataError, match="4d.nii.gz: expected a 3D volume"):
        load_nifti(tmp_path / "4d.nii.gz")


def test_mask_shape_and_affine_mismatch(tmp_path):
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "ct.nii.gz")
    ct = load_nifti(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 5), np.uint8), AFFINE), tmp_path / "short.nii.gz")
    with pytest.raises(DataError, match="short.nii.gz: mask shape"):
        load_nifti_mask(tmp_path / "short.nii.gz", like=ct)
    shifted = AFFINE.copy()
    shifted[0, 3] += 3
    nib.save(nib.Nifti1Image(np.zeros((24, 20, 6), np.uint8), shifted), tmp_path / "moved.nii.gz")
    with pytest.raises(DataError, match="moved.nii.gz: mask affine differs"):
        load_nifti_mask(tmp_path / "moved.nii.gz", like=ct)


def test_dicom_rescale_and_ordering(tmp_path):
    vol = _volume()
    # slope 2 / intercept -2048 exercise the rescale; shuffled names check sorting by position
    write_dicom_series(vol, AFFINE, tmp_path / "s", slope=2.0, intercept=-2048.0, shuffle_names=True)
    loaded = load_dicom_series(tmp_path / "s")
    expected = np.round((vol + 2048.0) / 2.0) * 2.0 - 2048.0
    np.testing.assert_array_equal(loaded.data, expected)
    np.testing.assert_allclose(loaded.affine, AFFINE, atol=1e-6)
    # a single slice file through pydicom directly: stored * slope + intercept
    import pydicom

    f = sorted((tmp_path / "s").iterdir())[0]
    ds = pydicom.dcmread(f)
    hand = ds.pixel_array.astype(np.float32).T * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(load_dicom_slice(f), hand)


def test_dicom_gap_duplicate_and_mixed_series(tmp_path):
    vol = _volume()
    paths = write_dicom_series(vol, AFFINE, tmp_path / "gap")
    paths[3].unlink()
    with pytest.raises(DataError, match="gap: missing slices, 1 gap"):
        load_dicom_series(tmp_path / "gap")
    write_dicom_series(vol[:, :, :3], AFFINE, tmp_path / "mixed" , series_uid="1.2.3")
    write_dicom_series(vol[:, :, :3], AFFINE, tmp_path / "mixed" / "b", series_uid="1.2.4")
    with pytest.raises(DataError, match="mixes 2 DICOM series"):
        load_dicom_series(tmp_path / "mixed")
    assert load_dicom_series(tmp_path / "mixed", series_uid="1.2.4").data.shape == (24, 20, 3)
    paths = write_dicom_series(vol[:, :, :3], AFFINE, tmp_path / "dup")
    import shutil

    shutil.copy(paths[1], tmp_path / "dup" / "copy.dcm")
    with pytest.raises(DataError, match="duplicate slice positions"):
        load_dicom_series(tmp_path / "dup")


def test_display_images(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (30, 40)).astype(np.uint8)
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "rgb.png")
    rgba = np.concatenate([np.stack([gray] * 3, -1), np.full((30, 40, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_display_image(tmp_path / "rgb.png"), gray)
    np.testing.assert_array_equal(load_display_image(tmp_path / "rgba.png"), gray)
    colour = np.stack([gray, gray // 2, np.zeros_like(gray)], -1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour.png: colour image whose channels differ"):
        load_display_image(tmp_path / "colour.png")


def test_slice_refs_and_binary_masks(tmp_path):
    assert split_ref("/a/b.nii.gz#3@4") == ("/a/b.nii.gz", 3, 4)
    assert split_ref("/x/1.jpg") == ("/x/1.jpg", None, None)
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 3:7] = 250  # lossy JPEG-like values near 255
    m[0, 0] = 20  # compression noise must not become foreground
    Image.fromarray(m).save(tmp_path / "m.png")
    out = read_slice(f"{tmp_path / 'm.png'}@4", "mask")
    assert set(np.unique(out)) == {0, 4} and (out == 4).sum() == 12
    vol = _volume()
    nib.save(nib.Nifti1Image(vol, AFFINE), tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_slice(f"{tmp_path / 'v.nii.gz'}#2", "hu"), vol[:, :, 2])
    with pytest.raises(DataError, match="slice 9 out of range"):
        read_slice(f"{tmp_path / 'v.nii.gz'}#9", "hu")


def _annotated(share, spread=160, size=(100, 100), seed=2):
    """A grey picture whose first ``share`` of pixels (raster order) carry coloured text-like marks."""
    gray = np.random.default_rng(seed).integers(0, 256, size).astype(np.uint8)
    rgb = np.stack([gray] * 3, -1).astype(np.int16)
    n = int(round(share * gray.size))
    flat = rgb.reshape(-1, 3)
    flat[:n] = [spread + 40, 40, 40 + spread // 2]  # red-magenta marks: channels differ by `spread`
    return rgb.astype(np.uint8), n


def test_display_image_with_burned_in_colour_text_is_grey(tmp_path):
    from hemo_mtl.data.io import MAX_COLOURED_SHARE, read_display_image

    rgb, n = _annotated(0.02)
    Image.fromarray(rgb).save(tmp_path / "text.png")
    got = read_display_image(tmp_path / "text.png")
    assert got.coloured == n == 200
    # independent reference: PIL's own ITU-R 601 luma conversion of the same RGB picture
    np.testing.assert_array_equal(got.pixels, np.asarray(Image.fromarray(rgb).convert("L")))
    masked = read_display_image(tmp_path / "text.png", mask_colour=True).pixels
    assert (masked.reshape(-1)[:n] == 0).all()
    np.testing.assert_array_equal(masked.reshape(-1)[n:], got.pixels.reshape(-1)[n:])
    # both sides of the share threshold (5%), with the same marks
    for share, ok in ((MAX_COLOURED_SHARE - 0.01, True), (MAX_COLOURED_SHARE + 0.01, False)):
        rgb, n = _annotated(share)
        Image.fromarray(rgb).save(tmp_path / "s.png")
        if ok:
            assert read_display_image(tmp_path / "s.png").coloured == n
        else:
            with pytest.raises(DataError, match=r"s.png: colour image whose channels differ on 6.0% of its pixels"):
                read_display_image(tmp_path / "s.png")
    # a faint tint on every pixel (scanned figure) is still grey, with nothing counted as coloured
    rgb, _ = _annotated(1.0, spread=60)
    Image.fromarray(rgb).save(tmp_path / "tint.png")
    assert read_display_image(tmp_path / "tint.png").coloured == 0


def test_colour_overlay_is_still_refused(tmp_path):
    gray = np.random.default_rng(3).integers(0, 256, (64, 64)).astype(np.uint8)
    rgb = np.stack([gray] * 3, -1)
    rgb[16:48, 16:48] = [255, 0, 0]  # a red overlay on 25% of the picture
    Image.fromarray(rgb).save(tmp_path / "overlay.png")
    with pytest.raises(DataError, match="overlay.png: colour image whose channels differ on 25.0%.*colour overlay or photo"):
        load_display_image(tmp_path / "overlay.png")


def test_nan_and_non_hu_volumes_are_data_errors():
    from hemo_mtl.data.windowing import check_hu_range

    with pytest.raises(DataError, match=r"scan.nii: 8 of 8 voxels are NaN or infinite"):
        check_hu_range(np.full((2, 2, 2), np.nan, np.float32), "scan.nii")
    vol = _volume()
    vol[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="1 of 2880 voxels are NaN or infinite"):
        check_hu_range(vol, "scan.nii")
    with pytest.raises(DataError, match="have no air.*8-bit display image"):
        check_hu_range(np.full((4, 4, 2), 100.0, np.float32), "scan.nii")


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_mask_labels_beyond_uint8_are_refused_not_wrapped(tmp_path, dtype):
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "ct.nii.gz")
    ct = load_nifti(tmp_path / "ct.nii.gz")
    mask = np.zeros((24, 20, 6), dtype)
    mask[3, 3, 3] = 257  # would wrap to 1 (EDH) in uint8
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "m.nii.gz")
    with pytest.raises(DataError, match=r"m.nii.gz: unknown subtype label\(s\) \[257\] \(expected 0..255\)"):
        load_nifti_mask(tmp_path / "m.nii.gz", like=ct)
    mask[3, 3, 3] = 6
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "m.nii.gz")
    with pytest.raises(DataError, match=r"\[6\] \(expected 0..5\)"):
        load_nifti_mask(tmp_path / "m.nii.gz", like=ct, max_label=5)
    mask[3, 3, 3] = 300
    nib.save(nib.Nifti1Image(mask, AFFINE), tmp_path / "m.nii.gz")
    with pytest.raises(DataError, match="mask labels outside 0..255"):
        read_slice(f"{tmp_path / 'm.nii.gz'}#3", "mask")


def test_image_folder_natural_order_and_masks_left_out(tmp_path):
    from hemo_mtl.data.io import DataWarning, list_slice_images

    for s in range(1, 12):
        Image.fromarray(np.full((8, 8), s * 20, np.uint8)).save(tmp_path / f"{s}.jpg")
    for name in ("2_HGE_Seg.jpg", "3_mask.png", "4_seg.PNG"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".thumb.png").write_bytes(b"")
    with pytest.warns(DataWarning, match=r"3 mask file\(s\) left out of the slices \(2_HGE_Seg.jpg, ...\)"):
        images = list_slice_images(tmp_path)
    assert [p.name for p in images] == [f"{s}.jpg" for s in sorted(range(1, 12))]  # by number, not text
    # the predictor reads image folders through the same listing
    from hemo_mtl.inference import load_scan

    with pytest.warns(DataWarning):
        scan = load_scan(tmp_path)
    assert scan.names == [f"{s}.jpg" for s in range(1, 12)]
    assert [int(sl[0, 0]) for sl in scan.slices] == [s * 20 for s in range(1, 12)]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "1.png")
    with pytest.raises(DataError, match="1.jpg and 1.png are both slice '1'"):
        list_slice_images(tmp_path)


def _edit_dicom(path, **tags):
    import pydicom

    ds = pydicom.dcmread(path)
    for name, value in tags.items():
        if value is None:
            del ds[name]
        else:
            setattr(ds, name, value)
    ds.save_as(path)


def test_dicom_gantry_tilt_resampled_to_true_geometry(tmp_path):
    import pydicom

    from hemo_mtl.data.io import DataWarning

    vol = np.full((24, 20, 6), -1000.0, np.float32)
    vol[5, 6, :] = 1000.0  # one bright voxel per slice, at the same stored pixel (column 5, row 6)
    paths = write_dicom_series(vol, AFFINE, tmp_path / "tilt")
    for p in paths:  # tilt the gantry: each slice origin moves one row (0.9 mm) along the column direction
        ds = pydicom.dcmread(p)
        k = int(ds.InstanceNumber) - 1
        col = np.array(ds.ImageOrientationPatient[3:], float)
        _edit_dicom(p, ImagePositionPatient=[float(v) for v in np.array(ds.ImagePositionPatient, float) + k * 0.9 * col])
    with pytest.warns(DataWarning, match=r"gantry tilt 10.2 deg"):  # atan(0.9 / 5)
        loaded = load_dicom_series(tmp_path / "tilt")
    # hand computation from the tags: LPS position of stored pixel (c, r) = IPP + c*dc*row + r*dr*col
    first = pydicom.dcmread(min(paths, key=lambda p: pydicom.dcmread(p).ImagePositionPatient[2]))
    row, col = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    ras = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(loaded.affine[:3, 2], ras @ (normal * 5.0), atol=1e-6)  # orthogonal, 5 mm apart
    np.testing.assert_allclose(loaded.affine[:3, 3], ras @ np.array(first.ImagePositionPatient, float), atol=1e-6)
    for p in paths:
        ds = pydicom.dcmread(p)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        world = ras @ (np.array(ds.ImagePositionPatient, float) + 5 * dc * row + 6 * dr * col)
        k = int(ds.InstanceNumber) - 1
        i, j = np.unravel_index(np.argmax(loaded.data[:, :, k]), loaded.data.shape[:2])
        assert loaded.data[i, j, k] == pytest.approx(1000.0, abs=1e-3)  # integer shifts: no blur
        np.testing.assert_allclose(loaded.affine @ [i, j, k, 1], [*world, 1], atol=1e-6)


def test_dicom_mixed_orientation_and_missing_tags(tmp_path):
    vol = _volume()
    paths = write_dicom_series(vol, AFFINE, tmp_path / "rot")
    a = np.radians(15)
    _edit_dicom(paths[2], ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(-np.sin(a))])
    with pytest.raises(DataError, match=f"{paths[2]}: oriented differently.*mixed orientations"):
        load_dicom_series(tmp_path / "rot")
    paths = write_dicom_series(vol, AFFINE, tmp_path / "nops")
    _edit_dicom(paths[3], PixelSpacing=None)
    with pytest.raises(DataError, match=f"{paths[3]}: DICOM tag PixelSpacing missing"):
        load_dicom_series(tmp_path / "nops")
    paths = write_dicom_series(vol, AFFINE, tmp_path / "badpos")
    _edit_dicom(paths[1], ImagePositionPatient=[0.0, 0.0])
    with pytest.raises(DataError, match="DICOM tag ImagePositionPatient has 2 value"):
        load_dicom_series(tmp_path / "badpos")


def test_nifti_with_a_degenerate_affine_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(_volume(), AFFINE), tmp_path / "ok.nii.gz")
    hdr = nib.load(tmp_path / "ok.nii.gz").header.copy()
    hdr["srow_y"] = [0, 0, 0, -100]  # a damaged sform: zero Y column (nibabel reads it as written)
    hdr["qform_code"] = 0
    nib.save(nib.Nifti1Image(_volume(), None, hdr), tmp_path / "flat.nii.gz")
    assert np.allclose(nib.load(tmp_path / "flat.nii.gz").affine[:3, 1], 0)
    with pytest.raises(DataError, match=r"flat.nii.gz: unusable NIfTI affine \(voxel sizes \[0.8, 0.0, 5.0\]"):
        load_nifti(tmp_path / "flat.nii.gz")
