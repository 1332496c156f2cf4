"""read_manifest: a hand-edited manifest fails at its row, not deep in training."""
import pytest

from hemo_mtl.data.io import DataError
from hemo_mtl.data.manifest import make_row, read_manifest, rows_to_frame, write_manifest


def _manifest(tmp_path, edit=None):
    rows = [make_row("p0", k, "nifti", f"/v.nii.gz#{k}", "hu", [1, 0, 1, 0, 0, 0]) for k in range(3)]
    path = tmp_path / "manifest.csv"
    write_manifest(rows_to_frame(rows), path)
    if edit:
        lines = path.read_text().splitlines()
        lines[2] = edit(lines[2])  # line 3 of the file
        path.write_text("\n".join(lines) + "\n")
    return path


def test_clean_manifest_roundtrips_and_ids_are_stripped(tmp_path):
    path = _manifest(tmp_path, edit=lambda l: l.replace("p0,p0", " p0 , p0 "))
    frame = read_manifest(path)
    assert frame["patient_id"].tolist() == ["p0"] * 3 and frame["SAH"].tolist() == [0, 0, 0]


@pytest.mark.parametrize("edit, what", [
    (lambda l: l.replace(",hu,1,", ",hu,0.5,"), "column 'any': label must be 0, 1 or empty"),
    (lambda l: l.replace(",hu,1,", ",hu,yes,"), "column 'any': label must be 0, 1 or empty"),
    (lambda l: l.replace("p0,p0,1,", "p0,p0,-1,"), "slice_idx must be a non-negative integer"),
    (lambda l: l.replace("p0,p0,1,", "p0,p0,0,"), "repeats the patient/study/slice of an earlier row"),
])
def test_bad_cells_name_their_line(tmp_path, edit, what):
    path = _manifest(tmp_path, edit)
    with pytest.raises(DataError, match=f"{path}: line 3: {what}"):
        read_manifest(path)
