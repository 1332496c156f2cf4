import numpy as np
import pytest
import torch

from hemo_mtl.data.windowing import WINDOWS, check_hu_range, parse_window, stack_windows, window_hu


def test_brain_window_hand_computed():
    # brain W80/L40 spans 0..80 HU: 0 -> 0, 20 -> 0.25, 40 -> 0.5, 80 -> 1, outside clipped
    hu = np.array([-1000, 0, 20, 40, 60, 80, 1000], dtype=np.float32)
    np.testing.assert_allclose(window_hu(hu, 40, 80), [0, 0, 0.25, 0.5, 0.75, 1, 1], atol=1e-7)


def test_subdural_and_bone_windows_hand_computed():
    c, w = WINDOWS["subdural"]  # -20..180
    np.testing.assert_allclose(window_hu(np.array([-20.0, 80.0, 180.0]), c, w), [0, 0.5, 1])
    c, w = WINDOWS["bone"]  # -800..2000
    np.testing.assert_allclose(window_hu(np.array([-800.0, 600.0, 1300.0]), c, w), [0, 0.5, 0.75])


def test_tensor_and_numpy_agree():
    hu = np.random.default_rng(0).uniform(-1000, 2000, (8, 8)).astype(np.float32)
    np.testing.assert_allclose(window_hu(torch.from_numpy(hu), 40, 80).numpy(), window_hu(hu, 40, 80), atol=1e-6)


def test_stack_windows_channels():
    hu = np.full((4, 5), 80.0, dtype=np.float32)
    stacked = stack_windows(hu, ["brain", "subdural", "bone"])
    assert stacked.shape == (3, 4, 5)
    np.testing.assert_allclose(stacked[:, 0, 0], [1.0, 0.5, (80 + 800) / 2800], rtol=1e-6)



def test_stack_windows_at_an_inner_axis_is_the_moved_leading_stack():
    """The predictor stacks a (Z, X, Y) volume at axis 1 to get its (Z, C, X, Y) batch in one array."""
    hu = np.random.default_rng(1).uniform(-1100, 1500, (3, 6, 5)).astype(np.float32)
    windows = ["brain", "subdural", "bone"]
    leading = stack_windows(hu, windows)
    inner = stack_windows(hu, windows, axis=1)
    assert inner.shape == (3, 3, 6, 5) and inner.flags.c_contiguous
    np.testing.assert_array_equal(inner, np.moveaxis(leading, 0, 1))
    for i, w in enumerate(windows):  # each channel is that window alone, bit for bit
        np.testing.assert_array_equal(inner[:, i], window_hu(hu, *parse_window(w)))
    torch_inner = stack_windows(torch.from_numpy(hu), windows, axis=1)
    np.testing.assert_allclose(torch_inner.numpy(), inner, atol=1e-6)

def test_parse_custom_and_errors():
    assert parse_window("custom:50,100") == (50.0, 100.0)
    assert parse_window((30, 60)) == (30.0, 60.0)
    with pytest.raises(ValueError, match="unknown window"):
        parse_window("lung-ish")
    with pytest.raises(ValueError, match="width"):
        parse_window("custom:40,0")


def test_check_hu_range_refuses_display_and_mr():
    ct = np.array([-1000.0, 40.0, 1200.0])
    check_hu_range(ct, "ok.nii")
    with pytest.raises(ValueError, match="display.nii.*8-bit display"):
        check_hu_range(np.array([0.0, 128.0, 255.0]), "display.nii")
    with pytest.raises(ValueError, match="mr.nii.*no air"):
        check_hu_range(np.array([0.0, 900.0, 3000.0]), "mr.nii")


def test_window_lists_typed_on_a_command_line():
    from hemo_mtl.data.windowing import parse_window_list

    assert parse_window_list("brain, subdural ,bone") == ["brain", "subdural", "bone"]
    assert parse_window_list("custom:40/80") == ["custom:40/80"]
    assert parse_window_list("custom:40,80,bone,custom:-10/300") == ["custom:40,80", "bone", "custom:-10/300"]
    assert [parse_window(w) for w in parse_window_list("custom:40,80,custom:600/2800")] == [(40, 80), (600, 2800)]
    for bad in ("brain,", "custom:40", "brian", "custom:40/0"):
        with pytest.raises(ValueError):
            parse_window_list(bad)
