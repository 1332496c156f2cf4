"""Exported models read back by their own runtimes (onnxruntime, torch.jit.load) give the PyTorch
model's outputs on phantom slices."""
import numpy as np
import pytest
import torch

from hemo_mtl.export import ProbabilityModel, read_sidecar, split_heads
from hemo_mtl.inference import load_model

# Probabilities after ~25 float32 conv/norm layers: onnxruntime's MLAS and TorchScript's kernels sum in
# another order than eager oneDNN, each rounding ~1e-7 relative; measured max |diff| is ~1e-6. 1e-4 is
# far above that accumulation and far below any change of a 0.5-threshold or argmax decision but ties.
ATOL = 1e-4


def _reference(checkpoint, image):
    model, _ = load_model(checkpoint)
    heads, _ = split_heads(model, image[:1])
    graph = ProbabilityModel(model, heads).eval()
    with torch.inference_mode():
        return dict(zip(graph.output_names, graph(image)))


def test_onnxruntime_matches_torch_on_phantom_slices(checkpoint, onnx_export, phantom_inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_export.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["cls_prob", "seg_prob"]
    got = dict(zip(names, session.run(names, {"image": phantom_inputs.numpy()})))
    ref = _reference(checkpoint, phantom_inputs)
    for name in names:
        assert got[name].shape == tuple(ref[name].shape)
        assert np.abs(got[name] - ref[name].numpy()).max() <= ATOL
    # a batch size the export never saw: the batch axis is dynamic
    two = session.run(names, {"image": phantom_inputs[:2].numpy()})
    assert np.abs(two[1] - ref["seg_prob"][:2].numpy()).max() <= ATOL


def test_torchscript_matches_torch_on_phantom_slices(checkpoint, torchscript_export, phantom_inputs):
    loaded = torch.jit.load(str(torchscript_export.model_path))
    with torch.inference_mode():
        cls, seg = loaded(phantom_inputs)
        _, seg3 = loaded(phantom_inputs[:3])
    ref = _reference(checkpoint, phantom_inputs)
    assert (cls - ref["cls_prob"]).abs().max() <= ATOL
    assert (seg - ref["seg_prob"]).abs().max() <= ATOL
    assert (seg3 - ref["seg_prob"][:3]).abs().max() <= ATOL


@pytest.mark.parametrize("fixture", ["onnx_export", "torchscript_export"])
def test_sidecar_describes_the_graph_and_what_was_left_out(fixture, request, checkpoint):
    result = request.getfixturevalue(fixture)
    info = read_sidecar(result.model_path)
    state = torch.load(checkpoint, weights_only=True)
    assert info["config"] == state["config"] and info["cascade"] == state["cascade"]
    assert info["input"] == {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 3,
                             "height": 64, "width": 64}
    assert info["outputs"] == ["cls_prob", "seg_prob"] and set(info["heads"]) == {"cls", "seg"}
    assert set(info["not_exported"]) == {"det"} and "rcnn" in info["not_exported"]["det"]
    assert max(info["parity_max_abs_diff"].values()) <= ATOL


def test_existing_export_is_not_replaced(checkpoint, torchscript_export):
    from hemo_mtl.export import ExportError, export_checkpoint

    before = torchscript_export.model_path.read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        export_checkpoint(checkpoint, "torchscript", torchscript_export.model_path.parent)
    assert torchscript_export.model_path.read_bytes() == before
