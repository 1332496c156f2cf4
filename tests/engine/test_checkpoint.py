"""Checkpoint files: atomic, weights_only-loadable, random states round-trip exactly."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hemo_mtl.engine import latest_checkpoint, load_checkpoint, preserved_rng, rng_state, save_checkpoint, set_rng_state
from hemo_mtl.engine.checkpoint import (CheckpointError, checkpoint_name, config_differences, load_model_weights,
                                        newest_intact_checkpoint, prune_checkpoints)


def draw():
    return random.random(), float(np.random.rand()), float(np.random.randn()), float(torch.rand(1))


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = save_checkpoint(tmp_path / "c.pth", {"rng": rng_state()})
    expected = draw()
    set_rng_state(load_checkpoint(path)["rng"])  # torch.load(weights_only=True) inside
    assert draw() == expected


def test_preserved_rng_leaves_streams_untouched():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = draw()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    with preserved_rng():
        draw(), draw()
    assert draw() == expected


def test_latest_prune_and_errors(tmp_path):
    d = tmp_path / "checkpoints"
    for e in (1, 2, 10):
        save_checkpoint(d / checkpoint_name(e), {"epoch": e})
    assert latest_checkpoint(tmp_path).name == "model_0010.pth"
    prune_checkpoints(d, keep=2)
    assert sorted(p.name for p in d.iterdir()) == ["model_0002.pth", "model_0010.pth"]
    with pytest.raises(CheckpointError, match="not found.*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load checkpoint .*bad.pth"):
        load_checkpoint(tmp_path / "bad.pth")
    assert latest_checkpoint(tmp_path / "empty") is None


class Pickled:
    """An arbitrary Python object: what a weights-only load must refuse."""


def test_unreadable_checkpoints_are_one_line_without_the_unsafe_advice(tmp_path):
    good = save_checkpoint(tmp_path / "good.pth", {"model": {"w": torch.zeros(3)}})
    cases = {
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "truncated or corrupted"),
        "random": (bytes(range(256)) * 8, "not a torch checkpoint"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / f"{name}.pth").write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / f"{name}.pth")
        assert reason in str(info.value) and f"{name}.pth" in str(info.value)
        assert "\n" not in str(info.value) and "weights_only" not in str(info.value).replace("weights-only", "")
    torch.save({"x": Pickled()}, tmp_path / "object.pth")
    with pytest.raises(CheckpointError, match=r"object.pth.*Pickled.*refused") as info:
        load_checkpoint(tmp_path / "object.pth")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pth")


def test_newest_intact_checkpoint_skips_a_truncated_one(tmp_path):
    d = tmp_path / "checkpoints"
    for e in (1, 2, 3):
        save_checkpoint(d / checkpoint_name(e), {"epoch": e})
    last = d / checkpoint_name(3)
    last.write_bytes(last.read_bytes()[:100])  # a copy or a full disk cut it short
    path, state, skipped = newest_intact_checkpoint(tmp_path)
    assert path.name == "model_0002.pth" and state["epoch"] == 2
    assert len(skipped) == 1 and "model_0003.pth" in skipped[0] and "truncated" in skipped[0]
    for p in d.iterdir():
        p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        newest_intact_checkpoint(tmp_path)
    assert newest_intact_checkpoint(tmp_path / "none") is None


def test_weights_mismatch_names_only_the_first_keys():
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(20)])
    other = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(10)], torch.nn.Linear(4, 2))
    with pytest.raises(CheckpointError) as info:
        load_model_weights(model, other.state_dict(), "run/model_final.pth")
    msg = str(info.value)
    # model 40 keys, checkpoint 22: 18 missing (11.bias .. 19.weight), 10.weight/10.bias with another shape
    assert msg.startswith("run/model_final.pth: weights do not fit") and len(msg) < 400
    assert "18 missing (11.weight, 11.bias, 12.weight, ... (15 more))" in msg
    assert "2 with another shape" in msg and "10.weight (2, 4) vs (4, 4)" in msg
    load_model_weights(other, other.state_dict(), "same.pth")  # a fitting state dict loads


def test_config_differences_in_config_order():
    old = {"train": {"lr": 0.1, "epochs": 2}, "data": {"windows": ["brain"]}, "seed": 0}
    new = {"train": {"lr": 0.1, "epochs": 4}, "data": {"windows": ["brain", "bone"]}, "seed": 0, "extra": 1}
    assert config_differences(new, old) == ["train.epochs: 2 -> 4", "data.windows: ['brain'] -> ['brain', 'bone']",
                                            "extra (new)"]
    assert config_differences(old, old) == []
