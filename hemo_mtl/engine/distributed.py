"""DDP under torchrun, and a sampler that splits the training set between ranks by patient.

``torchrun --nproc_per_node N tools/train_net.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; the
process group uses gloo on CPU and nccl on CUDA. Without those variables everything runs as a single
process and every helper here is a no-op.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is present, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def threads_per_rank(num_threads: int) -> int:
    """CPU threads for this process when ``num_threads`` is the machine's share: split among torchrun's
    local ranks (LOCAL_WORLD_SIZE), since more compute threads than cores only wait on each other."""
    return max(1, int(num_threads) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group if the environment asks for one (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def get_dist_info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop together)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    box = [None] * dist.get_world_size()
    dist.all_gather_object(box, obj)
    return box


def cleanup() -> None:
    """Leave the process group with no stray DDP wrapper left for interpreter shutdown.

    A DDP wrapper (and its gloo work threads) torn down during interpreter finalization aborts the
    process with ``terminate called without an active exception``. Hooks hold their trainer weakly, but
    a caller's closures can still tie a trainer into a cycle (an evaluation function that holds the
    trainer), which only the cycle collector frees: collect before leaving.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class PatientGroupedSampler(Sampler[int]):
    """Shuffled sample indices where every patient's slices go to one rank only.

    Each epoch (``set_epoch``) the patients are shuffled with a generator seeded by (seed, epoch) and
    dealt to ranks greedily by slice count, so ranks see disjoint patients and similar workloads;
    slices are then shuffled within the rank. Every rank yields ``len(self)`` indices, the largest
    rank's count (shorter ranks repeat some of their own slices; nothing is dropped), so no rank waits
    for a batch that never comes. With one process it is a seeded shuffle of all indices.
    """

    def __init__(self, patient_ids: Sequence[str], shuffle: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None):
        info = get_dist_info()
        self.rank = info.rank if rank is None else rank
        self.world_size = info.world_size if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world size {self.world_size}")
        if len(patient_ids) == 0:
            raise ValueError("PatientGroupedSampler: the dataset is empty")
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        groups: dict[str, list[int]] = {}
        for i, pid in enumerate(patient_ids):
            groups.setdefault(str(pid), []).append(i)
        self.groups = [np.asarray(v, dtype=np.int64) for _, v in sorted(groups.items())]
        if len(self.groups) < self.world_size:
            raise ValueError(
                f"{len(self.groups)} patients cannot be split between {self.world_size} ranks"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _deal(self) -> list[list[np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups)) if self.shuffle else np.arange(len(self.groups))
        loads = np.zeros(self.world_size, dtype=np.int64)
        owned: list[list[np.ndarray]] = [[] for _ in range(self.world_size)]
        for g in order:
            r = int(np.argmin(loads))  # lowest load, lowest rank on ties: deterministic
            owned[r].append(self.groups[g])
            loads[r] += len(self.groups[g])
        return owned

    def rank_indices(self, rank: int) -> np.ndarray:
        """This epoch's indices of ``rank`` (before shuffling within the rank and padding)."""
        return np.concatenate(self._deal()[rank])

    def __iter__(self) -> Iterator[int]:
        idx = self.rank_indices(self.rank)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank + 1])
            idx = idx[rng.permutation(len(idx))]
        n = len(self)
        if len(idx) < n:  # pad by repeating this rank's own slices
            idx = np.concatenate([idx, np.resize(idx, n - len(idx))])
        return iter(idx.tolist())

    def __len__(self) -> int:
        return max(sum(len(g) for g in owned) for owned in self._deal())
