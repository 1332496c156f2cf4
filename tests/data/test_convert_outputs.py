"""convert_dataset: output names unique per patient/study/series, never a path outside --out."""
import numpy as np
import pydicom

from hemo_mtl.data.convert import convert_dataset, slice_file_name
from hemo_mtl.data.io import write_dicom_series
from hemo_mtl.data.manifest import read_manifest

AFFINE = np.diag([0.9, 0.9, 5.0, 1.0])


def _rsna(root, studies):
    """RSNA layout: one DICOM per slice named ID_<sop>.dcm, and the long label CSV."""
    lines = ["ID,Label"]
    for i, (patient_id, n) in enumerate(studies):
        vol = np.random.default_rng(i).integers(-1000, 80, (8, 8, n)).astype(np.float32)
        for p in write_dicom_series(vol, AFFINE, root / "stage_2_train" / f"s{i}", patient_id=patient_id):
            sop = f"ID_{pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID.replace('.', '')}"
            p.rename(p.with_name(f"{sop}.dcm"))
            lines += [f"{sop}_{name},0" for name in ("epidural", "intraparenchymal", "intraventricular",
                                                      "subarachnoid", "subdural", "any")]
    (root / "stage_2_train.csv").write_text("\n".join(lines) + "\n")


def test_rsna_two_studies_of_one_patient_keep_their_pngs(tmp_path):
    _rsna(tmp_path / "src", [("ID_pat", 3), ("ID_pat", 4)])
    out = tmp_path / "out"
    report = convert_dataset("rsna", tmp_path / "src", out, formats=("manifest", "png"), progress=False)
    frame = read_manifest(out / "manifest.csv")
    assert len(frame) == 7 and frame["study_id"].nunique() == 2 and report["n_skipped"] == 0
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 7  # one per slice: the second study no longer overwrites the first
    expected = {slice_file_name(r.patient_id, r.slice_idx, r.study_id) for r in frame.itertuples()}
    assert {p.name for p in pngs} == expected


def test_patient_id_cannot_write_outside_out(tmp_path):
    _rsna(tmp_path / "src", [("../../../../x", 2), ("a/b", 2), ("a_b", 2)])
    out = tmp_path / "deep" / "out"
    convert_dataset("rsna", tmp_path / "src", out, formats=("png",), progress=False)
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "src" not in p.relative_to(tmp_path).parts)
    assert written and all(out in p.parents for p in written), [str(p) for p in written if out not in p.parents]
    pngs = sorted(p.name for p in out.rglob("*.png"))
    assert len(pngs) == 6  # 'a/b' and 'a_b' clean alike but keep separate files
    assert all("/" not in n and not n.startswith(".") for n in pngs)
    assert slice_file_name("a_b", 0) == "a_b_0000.png" and slice_file_name("a/b", 0).startswith("a_b-")
