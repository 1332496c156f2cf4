"""Run by test_distributed.py under torchrun (or plainly): train the toy model, save its weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/engine/ddp_worker.py OUT BATCH
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hemo_mtl.config import DEFAULTS  # noqa: E402
from hemo_mtl.data.dataset import collate_samples  # noqa: E402
from hemo_mtl.engine import LRScheduleHook, Trainer, build_schedule, init_distributed  # noqa: E402
from hemo_mtl.engine.distributed import cleanup  # noqa: E402
from tests.engine.toy import ToyDataset, ToyModel  # noqa: E402


def main(out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    dist = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    model = ToyModel()
    model.backbone[1] = torch.nn.Identity()  # BatchNorm and dropout depend on the local batch / rank
    model.backbone[3] = torch.nn.Identity()
    cfg = copy.deepcopy(DEFAULTS["train"])
    cfg.update(lr=0.02, lr_schedule={**cfg["lr_schedule"], "warmup_iters": 2})
    trainer = Trainer(model, ToyDataset(patients=6, noise=0.0), schedule=build_schedule({"name": "joint"}, 4, ["cls", "seg"]),
                      train_cfg=cfg, batch_size=batch_size, collate_fn=collate_samples, seed=1, dist_info=dist)
    trainer.register_hooks([LRScheduleHook()])
    trainer.train()
    if dist.is_main:
        torch.save(model.state_dict(), out)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
