"""The synthetic head-CT phantom: seeding, HU ranges, files on disk, and bleed geometry.

References are independent of the generator: nibabel for the files, numpy/pandas for the labels,
skimage regionprops for shape, scipy.ndimage for distances, dilation and median filtering.
"""
from __future__ import annotations

import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.measure import regionprops

from hemo_mtl.categories import CATEGORY_IDS, LABELS, SUBTYPES
from hemo_mtl.data.phantom import (
    GENERATOR_VERSION,
    LOCATIONS,
    make_phantom_case,
    min_component_area,
    patient_seed,
    slice_labels,
    write_phantom_dataset,
)

REPO = Path(__file__).resolve().parents[2]
SEEDS = range(4)
IN_PLANE = np.ones((3, 3, 1), bool)  # 8-connected, slice by slice


@lru_cache(maxsize=None)
def forced(subtype: str, seed: int):
    """A 256x256x24 patient with exactly one bleed of ``subtype``."""
    return make_phantom_case(seed, subtypes=(subtype,))


@pytest.fixture(scope="module")
def cohort():
    return [make_phantom_case(patient_seed(0, k)) for k in range(6)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    ids = write_phantom_dataset(out, patients=12, seed=0, size=128, slices=16)
    return out, ids


def largest_slice_component(mask3d: np.ndarray):
    """regionprops of the biggest 8-connected component over all slices, and its slice index."""
    best = None
    for k in range(mask3d.shape[2]):
        for region in regionprops(cc_label(mask3d[:, :, k], connectivity=2)):
            if best is None or region.area > best[0].area:
                best = (region, k)
    return best


# ------------------------------------------------------------------------------------------ seeding
def test_same_seed_same_case_and_different_seed_differs():
    a = make_phantom_case(7, size=96, slices=12)
    b = make_phantom_case(7, size=96, slices=12)
    c = make_phantom_case(8, size=96, slices=12)
    np.testing.assert_array_equal(a.volume, b.volume)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.lesions == b.lesions
    assert not np.array_equal(a.volume, c.volume)


def test_patient_k_is_the_same_whatever_the_dataset_size(tmp_path):
    small = write_phantom_dataset(tmp_path / "two", patients=2, seed=5, size=64, slices=8)
    large = write_phantom_dataset(tmp_path / "three", patients=3, seed=5, size=64, slices=8)
    assert small == ["phantom_000", "phantom_001"] and large[:2] == small
    for kind in ("volumes", "masks"):
        a = nib.load(tmp_path / "two" / kind / "phantom_001.nii.gz").get_fdata()
        b = nib.load(tmp_path / "three" / kind / "phantom_001.nii.gz").get_fdata()
        np.testing.assert_array_equal(a, b)
    direct = make_phantom_case(patient_seed(5, 1), size=64, slices=8)
    on_disk = nib.load(tmp_path / "two" / "volumes" / "phantom_001.nii.gz").get_fdata()
    np.testing.assert_allclose(on_disk, direct.volume, atol=0.5 + 1e-4)  # stored as int16 HU
    other = nib.load(tmp_path / "two" / "volumes" / "phantom_000.nii.gz").get_fdata()
    assert not np.array_equal(other, on_disk)
    assert patient_seed(5, 1) != patient_seed(5, 0) != patient_seed(6, 0)


# ------------------------------------------------------------------------------------------ HU
def test_hu_ranges_of_air_bone_brain_csf_and_blood(cohort):
    for case in cohort:
        vol, anat = case.volume, case.anatomy
        assert abs(np.median(vol[:8, :8, :]) + 1000) < 5  # air in the corners
        bone = vol[ndi.binary_erosion(anat["skull"], structure=IN_PLANE)]
        assert np.mean((bone >= 700) & (bone <= 1500)) > 0.95
        smooth = ndi.uniform_filter(vol, size=(5, 5, 1))  # average the noise away
        brain = ndi.binary_erosion(anat["parenchyma"], structure=IN_PLANE, iterations=2) & (case.mask == 0)
        lo, mid, hi = np.percentile(smooth[brain], [5, 50, 95])
        assert 20 <= lo and hi <= 45 and 22 <= mid <= 40, (lo, mid, hi)
        csf = anat["ventricles"] & (case.mask == 0)
        if csf.sum() > 200:
            assert 0 <= np.median(vol[csf]) <= 15
        for i, lesion in enumerate(case.lesions, start=1):
            blood = vol[case.instances == i]
            assert 50 <= np.median(blood) <= 90, (lesion, np.median(blood))


def test_bright_is_not_bleed_in_normal_patients():
    """Hyperdense mimics (falx, calcifications, partial-volume bone) put blood-range HU in normal brain."""
    for seed in range(3):
        case = make_phantom_case(seed, normal=True)
        assert case.lesions == [] and not case.mask.any()
        smooth = ndi.median_filter(case.volume, size=(3, 3, 1))
        bright = (smooth >= 50) & (smooth <= 90) & case.anatomy["intracranial"]
        assert bright.any(axis=(0, 1)).mean() > 0.5


# ------------------------------------------------------------------------------------------ labels
def test_slice_labels_against_a_hand_made_mask():
    mask = np.zeros((4, 5, 3), np.uint8)
    mask[0, 0, 1] = CATEGORY_IDS["SDH"]
    mask[2, 3, 2] = CATEGORY_IDS["IVH"]
    mask[3, 4, 2] = CATEGORY_IDS["EDH"]
    expected = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]], np.uint8)
    np.testing.assert_array_equal(slice_labels(mask), expected)
    with pytest.raises(ValueError, match="3D"):
        slice_labels(mask[:, :, 0])
    with pytest.raises(ValueError, match="0..5"):
        slice_labels(np.full((2, 2, 2), 7, np.uint8))


def test_mask_and_instances_agree_when_bleeds_overlap():
    for seed in SEEDS:
        case = make_phantom_case(seed, size=128, slices=16, subtypes=("SDH", "EDH", "SAH", "IVH", "IPH"))
        np.testing.assert_array_equal(case.mask > 0, case.instances > 0)
        for i, lesion in enumerate(case.lesions, start=1):
            ks = np.flatnonzero((case.instances == i).any(axis=(0, 1)))
            assert set(np.unique(case.mask[case.instances == i])) == {lesion["label"]}
            assert lesion["slices"] == (ks[0], ks[-1]) and lesion["location"] in LOCATIONS


def test_files_on_disk_agree_with_slice_labels(dataset):
    out, ids = dataset
    table = pd.read_csv(out / "slice_labels.csv")
    assert list(table.columns) == ["patient_id", "slice_idx", *LABELS]
    assert sorted(table.patient_id.unique()) == ids
    for pid in ids:
        vol_img = nib.load(out / "volumes" / f"{pid}.nii.gz")
        mask_img = nib.load(out / "masks" / f"{pid}.nii.gz")
        assert vol_img.shape == mask_img.shape == (128, 128, 16)
        np.testing.assert_allclose(vol_img.affine, mask_img.affine)
        np.testing.assert_allclose(np.abs(np.diag(vol_img.affine)[:3]), vol_img.header.get_zooms())
        assert mask_img.get_data_dtype() == np.uint8
        mask = np.asarray(mask_img.dataobj)
        rows = table[table.patient_id == pid].sort_values("slice_idx")
        assert rows.slice_idx.tolist() == list(range(mask.shape[2]))
        for k, row in zip(range(mask.shape[2]), rows.itertuples(index=False)):
            present = set(np.unique(mask[:, :, k])) - {0}
            assert row.any == int(bool(present))
            for name in SUBTYPES:
                assert getattr(row, name) == int(CATEGORY_IDS[name] in present), (pid, k, name)


def test_dataset_has_every_subtype_normal_patients_and_normal_slices(dataset):
    out, ids = dataset
    table = pd.read_csv(out / "slice_labels.csv")
    assert (table[list(SUBTYPES)].sum() > 0).all(), table[list(SUBTYPES)].sum()
    per_patient = table.groupby("patient_id")["any"].agg(["sum", "count"])
    assert (per_patient["sum"] == 0).any()  # normal patients
    assert ((per_patient["sum"] > 0) & (per_patient["sum"] < per_patient["count"])).any()  # normal slices
    lesions = pd.read_csv(out / "lesions.csv")
    assert list(lesions.columns) == ["patient_id", "lesion", "subtype", "location", "first_slice", "last_slice"]
    assert set(lesions.location) <= set(LOCATIONS)
    for les in lesions.itertuples(index=False):
        rows = table[table.patient_id == les.patient_id].set_index("slice_idx")
        assert rows.loc[les.first_slice, les.subtype] == 1 and rows.loc[les.last_slice, les.subtype] == 1
    provenance = (out / "PROVENANCE.md").read_text()
    assert "seed 0" in provenance and f"version {GENERATOR_VERSION}" in provenance
    assert not [p for p in out.rglob(".*")]  # no temp files left behind


def test_affine_spacing_and_bad_arguments(tmp_path):
    case = make_phantom_case(1)
    assert case.affine.shape == (4, 4) and case.affine.dtype == np.float64
    np.testing.assert_allclose(np.abs(np.diag(case.affine)[:3]), case.spacing)
    assert np.count_nonzero(case.affine[:3, :3] - np.diag(np.diag(case.affine)[:3])) == 0
    assert 0.85 <= case.spacing[0] == case.spacing[1] <= 1.0 and case.spacing[2] == 5.0
    assert case.volume.dtype == np.float32 and case.mask.dtype == np.uint8
    with pytest.raises(ValueError, match="too small"):
        make_phantom_case(0, size=16)
    with pytest.raises(ValueError, match="unknown subtype"):
        make_phantom_case(0, subtypes=("XYZ",))
    with pytest.raises(ValueError, match="contradicts"):
        make_phantom_case(0, normal=True, subtypes=("EDH",))
    with pytest.raises(ValueError, match="patients"):
        write_phantom_dataset(tmp_path, patients=0, seed=0)


# ------------------------------------------------------------------------------------------ specks
@pytest.mark.parametrize("size", [128, 256])
def test_no_lesion_component_in_a_slice_is_smaller_than_the_minimum(size):
    """Annotators draw no specks: every per-slice 8-connected component of every subtype is big enough."""
    expected = max(6, round(2e-4 * size * size))  # the documented minimum: ~11 mm^2, at least 6 px
    assert min_component_area(size) == expected
    cases = [make_phantom_case(patient_seed(1, k), size=size, slices=24, normal=False) for k in range(8)]
    cases += [make_phantom_case(s, size=size, slices=24, subtypes=("SDH", "EDH", "SAH", "IVH", "IPH")) for s in SEEDS]
    areas = []
    for case in cases:
        for name in SUBTYPES:
            sub = case.mask == CATEGORY_IDS[name]
            for k in np.flatnonzero(sub.any(axis=(0, 1))):
                labels, n = ndi.label(sub[:, :, k], structure=np.ones((3, 3), bool))
                areas += [(name, k, a) for a in np.bincount(labels.ravel())[1:]]
    assert len(areas) > 50
    small = [a for a in areas if a[2] < expected]
    assert not small, small


@pytest.mark.parametrize("size", [128, 256])
def test_outside_the_masks_the_image_is_the_bleed_free_head(size):
    """No blood HU without a mask: unlabelled voxels equal the same patient drawn without bleeds
    (same anatomy and scanner noise), however the bleeds overlap. IPH is left out: its oedema halo is
    unlabelled by design."""
    for seed in SEEDS:
        bleed_free = make_phantom_case(seed, size=size, slices=24, normal=True)
        case = make_phantom_case(seed, size=size, slices=24, subtypes=("SDH", "EDH", "SAH", "IVH"))
        assert case.mask.any()
        outside = case.mask == 0
        np.testing.assert_array_equal(case.volume[outside], bleed_free.volume[outside])
        assert (case.volume[~outside] != bleed_free.volume[~outside]).mean() > 0.99


# ------------------------------------------------------------------------------------------ geometry
def test_edh_is_a_convex_lens_against_the_inner_table():
    for seed in SEEDS:
        case = forced("EDH", seed)
        region, k = largest_slice_component(case.mask == CATEGORY_IDS["EDH"])
        assert region.solidity > 0.85, (seed, region.solidity)
        blob = np.zeros(case.mask.shape[:2], bool)
        blob[tuple(region.coords.T)] = True
        assert (ndi.binary_dilation(blob) & case.anatomy["skull"][:, :, k]).any()


def test_sdh_is_a_long_thin_crescent_against_the_inner_table():
    edh_lengths = [largest_slice_component(forced("EDH", s).mask == 1)[0].axis_major_length for s in SEEDS]
    for seed in SEEDS:
        case = forced("SDH", seed)
        region, k = largest_slice_component(case.mask == CATEGORY_IDS["SDH"])
        assert region.solidity < 0.6, (seed, region.solidity)
        assert region.axis_major_length > 3 * region.axis_minor_length
        assert region.axis_major_length > max(edh_lengths)
        blob = np.zeros(case.mask.shape[:2], bool)
        blob[tuple(region.coords.T)] = True
        assert (ndi.binary_dilation(blob) & case.anatomy["skull"][:, :, k]).any()


def test_sah_is_thin():
    for seed in SEEDS:
        sah = forced("SAH", seed).mask == CATEGORY_IDS["SAH"]
        assert sah.any()
        widest = max(ndi.distance_transform_edt(sah[:, :, k]).max() for k in range(sah.shape[2]))
        assert widest <= 2.5, (seed, widest)  # half-width in pixels: streaks at most ~4 px wide


def test_sah_bands_are_not_dotted_at_128_px():
    """Bands ~1 px wide rasterise as specks one pixel apart: one bleed, a dozen COCO boxes. Bridging
    1-px gaps (a 3x3 dilation) must merge almost no SAH components (generator v2 merged 38%)."""
    components = bridged = 0
    for seed in range(30):
        sah = make_phantom_case(seed, size=128, slices=24, subtypes=("SAH",)).mask == CATEGORY_IDS["SAH"]
        for k in np.flatnonzero(sah.any(axis=(0, 1))):
            components += cc_label(sah[:, :, k], connectivity=2).max()
            bridged += cc_label(ndi.binary_dilation(sah[:, :, k], np.ones((3, 3), bool)), connectivity=2).max()
    assert components >= 30
    assert bridged >= 0.95 * components, (components, bridged)


def test_iph_sits_in_parenchyma_with_a_hypodense_halo():
    for seed in SEEDS:
        case = forced("IPH", seed)
        iph = case.mask == CATEGORY_IDS["IPH"]
        ring = ndi.binary_dilation(iph, structure=IN_PLANE, iterations=2) & ~iph
        assert not (ring & (case.anatomy["skull"] | ~case.anatomy["intracranial"])).any()
        assert case.anatomy["parenchyma"][ring].mean() > 0.9
        brain = np.median(case.volume[case.anatomy["parenchyma"] & (case.mask == 0)])
        assert np.median(case.volume[ring]) < brain - 5  # oedema, not labelled
        assert case.lesions[0]["location"] in ("lobar", "deep", "subtentorial")


def test_ivh_stays_inside_the_ventricles(cohort):
    cases = [forced("IVH", s) for s in SEEDS] + list(cohort)
    assert sum(any(les["subtype"] == "IVH" for les in c.lesions) for c in cases) >= len(SEEDS)
    for case in cases:
        ivh = case.mask == CATEGORY_IDS["IVH"]
        assert not (ivh & ~case.anatomy["ventricles"]).any()
        assert all(les["location"] == "deep" for les in case.lesions if les["subtype"] == "IVH")


# ------------------------------------------------------------------------------------------ tool
def test_make_phantom_tool_runs_from_the_repo_root(tmp_path):
    out = tmp_path / "ds"
    result = subprocess.run(
        [sys.executable, "tools/make_phantom.py", "--out", str(out), "--patients", "2", "--seed", "3",
         "--size", "64", "--slices", "8"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote 2 patients") and "EDH=" in result.stdout
    assert len(pd.read_csv(out / "slice_labels.csv")) == 16
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
