"""data.synthetic and data.train_also join the training split only; ids that repeat are renamed."""
import json

from hemo_mtl.config import load_config
from hemo_mtl.data.phantom_display import write_ctich_phantom
from hemo_mtl.data.splits import load_splits
from hemo_mtl.engine.data import build_datasets, prepare_data_dir, run_splits


def test_joined_datasets_train_only(tmp_path):
    write_ctich_phantom(tmp_path / "real", patients=6, seed=1, size=32, slices=4, canvas=40, first_number=100)
    write_ctich_phantom(tmp_path / "other", patients=2, seed=2, size=32, slices=4, canvas=40, first_number=100)
    cfg = load_config("configs/real/ctich_jpg.yaml", [
        f"output_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'real'}", "data.image_size=32",
        "data.synthetic={patients: 2, seed: 0, size: 32, slices: 4, canvas: 40}",
        f"data.train_also=[{{root: {tmp_path / 'other'}, source: physionet}}]",
        "data.split={seed: 1, val: 0.2, test: 0.2}"])
    data_dir = prepare_data_dir(cfg)
    splits = run_splits(cfg, data_dir, load_splits(data_dir / "splits.json"))
    sets = build_datasets(cfg, data_dir, splits)
    train = set(sets["train"].patient_ids)
    real = {f"{100 + i}" for i in range(6)}
    assert train & real == set(splits["train"])
    assert {"900", "901"} <= train  # synthetic patients
    assert {"train_also0-100", "train_also0-101"} <= train  # renamed: "100" and "101" are real patients too
    for name in ("val", "test"):
        assert set(sets[name].patient_ids) == set(splits[name]) and set(splits[name]) <= real
    report = json.loads((tmp_path / "run" / "train_also0" / "conversion_report.json").read_text())
    assert report  # converted once into the run folder
