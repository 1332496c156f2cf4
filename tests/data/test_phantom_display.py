"""Phantom patients written as a CT-ICH JPG release: read back by the physionet source with their masks."""
import numpy as np
import pandas as pd

from hemo_mtl.categories import LABELS, UNKNOWN_SUBTYPE
from hemo_mtl.data.io import read_slice
from hemo_mtl.data.manifest import rows_to_frame
from hemo_mtl.data.phantom import make_phantom_case, patient_seed, slice_labels
from hemo_mtl.data.phantom_display import write_ctich_phantom
from hemo_mtl.data.sources import scan_source


def test_release_reads_back_with_exact_labels_and_masks(tmp_path):
    names = write_ctich_phantom(tmp_path, patients=3, seed=5, size=48, slices=6, canvas=64, first_number=200)
    assert names == ["200", "201", "202"]
    scan = scan_source("physionet", tmp_path)
    assert scan.skipped == []
    frame = rows_to_frame(scan.rows)
    assert len(frame) == 3 * 6 and frame["has_mask"].all()  # bleed slices masked, the rest empty by definition
    for index, pid in enumerate(names):
        case = make_phantom_case(patient_seed(5, index), size=48, slices=6)
        truth = slice_labels(case.mask)
        rows = frame[frame["patient_id"] == pid].sort_values("slice_idx")
        assert np.array_equal(rows[list(LABELS)].to_numpy(int), truth.astype(int)), pid
        for k, row in enumerate(rows.itertuples()):
            mask = read_slice(row.mask, "mask")
            assert mask.shape == (64, 64)
            bleed = int((mask > 0).sum())
            # resized from 48 px to a share of 64 px by nearest neighbour: the area scales by (side / 48)^2
            # within the JPEG + resampling slack of a pixel ring
            if truth[k, 0]:
                assert bleed > 0
                present = [i for i in range(1, 6) if truth[k, i]]
                assert set(np.unique(mask[mask > 0])) == ({present[0]} if len(present) == 1 else {UNKNOWN_SUBTYPE})
            else:
                assert bleed == 0


def test_csv_has_the_release_columns(tmp_path):
    write_ctich_phantom(tmp_path, patients=1, seed=0, size=32, slices=4, canvas=40)
    csv = pd.read_csv(tmp_path / "hemorrhage_diagnosis.csv")
    assert list(csv.columns) == ["PatientNumber", "SliceNumber", "Epidural", "Subdural", "Subarachnoid",
                                 "Intraparenchymal", "Intraventricular", "No_Hemorrhage", "Fracture_Yes_No"]
    assert csv["PatientNumber"].tolist() == [900] * 4 and csv["SliceNumber"].tolist() == [1, 2, 3, 4]
