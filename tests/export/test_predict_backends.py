"""tools/predict.py on an exported model: the same pipeline (preprocessing, gate, postprocessing from the
sidecar) gives the torch backend's masks voxel for voxel; bad exported files get one line naming them."""
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from hemo_mtl.cli import predict as predict_tool
from hemo_mtl.data.io import DataError
from hemo_mtl.inference import PredictOptions, Predictor, load_scan

REPO = Path(__file__).resolve().parents[2]


def _predict(weights, scan, out, *extra):
    return predict_tool.main(["--weights", str(weights), "--input", str(scan), "--out", str(out), "--threads", "2",
                              *extra])


def _outputs(out):
    mask = np.asarray(nib.load(str(out / "case" / "mask.nii.gz")).dataobj)
    return mask, pd.read_csv(out / "case" / "slices.csv")


@pytest.mark.parametrize("fixture,backend", [("onnx_export", "onnxruntime"), ("torchscript_export", "torchscript")])
def test_exported_backend_masks_equal_torch_voxel_for_voxel(fixture, backend, request, checkpoint, phantom_nifti,
                                                             tmp_path):
    exported = request.getfixturevalue(fixture)
    scan, volume = phantom_nifti
    assert _predict(checkpoint, scan, tmp_path / "torch") == 0
    assert _predict(exported.model_path, scan, tmp_path / backend, "--backend", backend) == 0
    ref_mask, ref_table = _outputs(tmp_path / "torch")
    mask, table = _outputs(tmp_path / backend)
    assert mask.shape == volume.shape and ref_mask.any()
    assert np.array_equal(mask, ref_mask)
    # the gate is the checkpoint's, read from the sidecar: the same slices pass
    assert table["gate_passed"].tolist() == ref_table["gate_passed"].tolist()
    probs = [c for c in table.columns if c.startswith("p_")]
    assert np.allclose(table[probs].to_numpy(), ref_table[probs].to_numpy(), atol=1e-4)  # see test_parity.ATOL


def test_backend_is_inferred_from_the_file_name(onnx_export, phantom_nifti):
    predictor = Predictor.from_checkpoint(onnx_export.model_path, PredictOptions())
    assert predictor.backend.name == "onnxruntime" and predictor.model is None
    assert predictor.gate_threshold == 0.5 and predictor.windows == ("brain", "subdural", "bone")
    pred = predictor.predict(load_scan(phantom_nifti[0]))
    assert pred.mask.shape == phantom_nifti[1].shape and pred.instances[0]["boxes"].shape == (0, 4)


def _copy_export(result, folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(result.model_path, folder / result.model_path.name)
    shutil.copy(result.sidecar_path, folder / result.sidecar_path.name)
    return folder / result.model_path.name


def test_truncated_onnx_file_is_one_line_naming_it(onnx_export, phantom_nifti, tmp_path, capsys):
    path = _copy_export(onnx_export, tmp_path / "bad")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"model\.onnx: not a readable ONNX model"):
        Predictor.from_checkpoint(path)
    argv = ["--weights", str(path), "--input", str(phantom_nifti[0]), "--out", str(tmp_path / "out")]
    assert predict_tool.run_main(predict_tool.main, argv) == 2  # a bad model file: a user error, exit 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "not a readable ONNX model" in err[0]
    assert not (tmp_path / "out").exists()


def test_onnx_whose_input_channels_differ_from_the_config(onnx_export, tmp_path):
    path = _copy_export(onnx_export, tmp_path / "one_window")
    side = path.with_name(path.name + ".yaml")
    info = yaml.safe_load(side.read_text())
    info["config"]["data"]["windows"] = ["brain"]  # a 1-channel config for a 3-channel graph
    side.write_text(yaml.safe_dump(info))
    with pytest.raises(DataError, match=r"model\.onnx: exported for 3 input channels, its sidecar config gives 1"):
        Predictor.from_checkpoint(path)
    info["input"]["channels"] = 1  # a sidecar that agrees with that config, but not with the graph
    side.write_text(yaml.safe_dump(info))
    with pytest.raises(DataError, match=r"model\.onnx: ONNX input image has shape \['batch', 3, 64, 64\]"):
        Predictor.from_checkpoint(path)


def test_missing_sidecar_and_sliding_window(onnx_export, phantom_nifti, tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(onnx_export.model_path, path)
    with pytest.raises(DataError, match=r"model\.onnx: no sidecar model\.onnx\.yaml"):
        Predictor.from_checkpoint(path)
    predictor = Predictor.from_checkpoint(onnx_export.model_path, PredictOptions(sliding_window=True, patch=32, stride=16))
    with pytest.raises(DataError, match=r"model\.onnx: exported for inputs of shape \(3, 64, 64\)"):
        predictor.predict(load_scan(phantom_nifti[0]))
