"""Label-CSV cells: whitespace stripped, 0/1 labels only, file and line named, duplicates judged."""
import pytest

from hemo_mtl.data.cells import RowError, id_cell, int_cell, label_cell, read_csv_rows, unique_rows
from hemo_mtl.data.io import DataError


def _rows(tmp_path, text):
    path = tmp_path / "t.csv"
    path.write_text(text)
    return path, read_csv_rows(path, required=("id",))


def test_header_and_cells_are_stripped_and_lines_counted(tmp_path):
    # BOM, spaces around names and cells, a blank line: line numbers still count the file's lines
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeff id , label \n p1 , 1 \n\np2,0\n".encode("utf-8"))
    header, rows, bad = read_csv_rows(path, required=("id", "label"))
    assert header == ["id", "label"] and not bad
    assert [(r.line, r.cells) for r in rows] == [(2, {"id": "p1", "label": "1"}), (4, {"id": "p2", "label": "0"})]
    assert id_cell(rows[0], "id") == "p1" and label_cell(rows[0], "label") == 1


@pytest.mark.parametrize("cell", ["yes", "2", "0.5", "-1", "nan", "inf", "No_Hemorrhage=2"])
def test_bad_label_cells_name_file_line_and_value(tmp_path, cell):
    path, (_, rows, _) = _rows(tmp_path, f"id,label\na,{cell}\n")
    with pytest.raises(RowError) as err:
        label_cell(rows[0], "label")
    assert str(err.value) == f"{path} line 2: column 'label': label must be 0 or 1, got {cell!r}"
    assert isinstance(err.value, DataError)


def test_empty_cells_and_numbers(tmp_path):
    path, (_, rows, bad) = _rows(tmp_path, "id,label,n\n,,3.0\nb,1.0,3.5\nc,0\n")
    assert label_cell(rows[0], "label", allow_empty=True) is None
    with pytest.raises(RowError, match="line 2: column 'label': empty label cell"):
        label_cell(rows[0], "label")
    with pytest.raises(RowError, match="line 2: column 'id': empty id"):
        id_cell(rows[0], "id")
    assert int_cell(rows[0], "n") == 3 and label_cell(rows[1], "label") == 1
    with pytest.raises(RowError, match="line 3: column 'n': expected an integer, got '3.5'"):
        int_cell(rows[1], "n")
    with pytest.raises(RowError, match="must be >= 4, got 3"):
        int_cell(rows[0], "n", minimum=4)
    assert [str(e) for e in bad] == [f"{path} line 4: 2 fields, the header has 3"]


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="nope.csv: label CSV not found"):
        read_csv_rows(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"missing column\(s\) \['id'\]"):
        _rows(tmp_path, "ID,label\n1,1\n")
    with pytest.raises(DataError, match="appear more than once"):
        _rows(tmp_path, "id,id\n1,1\n")
    (tmp_path / "bin.csv").write_bytes(b"id\n\xff\xfe\x00")
    with pytest.raises(DataError, match="not a readable UTF-8 CSV"):
        read_csv_rows(tmp_path / "bin.csv")


def test_duplicates_identical_once_conflicting_refused(tmp_path):
    path, (_, rows, _) = _rows(tmp_path, "id,label\na,1\nb,0\na,1\nb,1\nc,0\n")
    kept, notes, errors = unique_rows(((r.cells["id"], r.cells["label"], r) for r in rows), what="id")
    assert kept == {"a": "1", "c": "0"}
    assert notes == [f"{path} lines 2, 4: id a repeated with identical values; used once"]
    assert [str(e) for e in errors] == [f"{path} lines 3, 5: conflicting rows for id b (0 vs 1); left out"]
