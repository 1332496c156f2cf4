"""Checkpoint files: atomic, weights_only-loadable, random states round-trip exactly."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hemo_mtl.engine import latest_checkpoint, load_checkpoint, preserved_rng, rng_state, save_checkpoint, set_rng_state
from hemo_mtl.engine.checkpoint import checkpoint_name, prune_checkpoints


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
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load checkpoint .*bad.pth"):
        load_checkpoint(tmp_path / "bad.pth")
    assert latest_checkpoint(tmp_path / "empty") is None
