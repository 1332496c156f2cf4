"""Patient-grouped distributed sampling, and DDP (torchrun, gloo) == one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hemo_mtl.engine import PatientGroupedSampler
from hemo_mtl.engine.distributed import threads_per_rank

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_sampler_gives_each_patient_to_one_rank_and_equal_lengths():
    rng = np.random.default_rng(0)
    pids = [f"p{p}" for p in range(9) for _ in range(int(rng.integers(2, 7)))]
    for epoch in range(3):
        per_rank = []
        for rank in range(2):
            s = PatientGroupedSampler(pids, seed=5, rank=rank, world_size=2)
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len(per_rank[0]) == len(per_rank[1])  # no rank waits for a batch that never comes
        owners = [{pids[i] for i in idx} for idx in per_rank]
        assert not owners[0] & owners[1]  # a patient's slices stay on one rank
        assert set().union(*map(set, per_rank)) == set(range(len(pids)))  # nothing dropped
    a, b = PatientGroupedSampler(pids, seed=5, rank=0, world_size=2), PatientGroupedSampler(pids, seed=5, rank=0, world_size=2)
    a.set_epoch(1), b.set_epoch(2)
    assert list(a) != list(b)


def test_single_process_sampler_is_a_seeded_permutation():
    pids = [f"p{i // 3}" for i in range(12)]
    s = PatientGroupedSampler(pids, seed=0, rank=0, world_size=1)
    assert sorted(s) == list(range(12)) and len(s) == 12
    with pytest.raises(ValueError, match="2 patients cannot be split between 3 ranks"):
        PatientGroupedSampler(["a", "a", "b"], rank=0, world_size=3)


@pytest.mark.parametrize("local_ranks, threads, expected", [(None, 2, 2), ("1", 2, 2), ("2", 2, 1), ("3", 8, 2), ("4", 2, 1)])
def test_cpu_threads_are_split_among_torchrun_local_ranks(monkeypatch, local_ranks, threads, expected):
    """train.num_threads is the machine's: 2 ranks on 2 cores get 1 thread each, never 0."""
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert threads_per_rank(threads) == expected


def _torchrun(args, env) -> None:
    """2-rank torchrun of WORKER; one at a time across pytest-xdist workers (two concurrent standalone
    launches on the same host have aborted a rank now and then)."""
    import fcntl
    import tempfile

    with open(Path(tempfile.gettempdir()) / "hemo_mtl_torchrun.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(WORKER), *map(str, args)], check=True, env=env, timeout=300,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_torchrun_gloo_matches_single_process(tmp_path):
    """Full-batch toy training: 2 ranks x 12 slices == 1 process x 24 slices (gradients are averaged)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the worker puts the repo on sys.path
    single, ddp = tmp_path / "single.pth", tmp_path / "ddp.pth"
    subprocess.run([sys.executable, str(WORKER), str(single), "24"], check=True, env=env, timeout=300)
    _torchrun([ddp, 12], env)
    a, b = torch.load(single, weights_only=True), torch.load(ddp, weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not torch.equal(a["heads.seg.weight"], torch.zeros_like(a["heads.seg.weight"]))


def test_torchrun_resume_is_exact_with_per_rank_random_streams(tmp_path):
    """2 ranks, noisy data from each rank's own generator: 4 epochs == 2 + checkpoint + resume 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the worker puts the repo on sys.path
    outs = {}
    for mode in ("straight", "resume"):
        outs[mode] = tmp_path / f"{mode}.pth"
        _torchrun([outs[mode], 6, mode], env)
    a, b = torch.load(outs["straight"], weights_only=True), torch.load(outs["resume"], weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt = torch.load(tmp_path / "resume.ckpt" / "checkpoints" / "model_0002.pth", weights_only=True)
    ranks = ckpt["rng_per_rank"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])
