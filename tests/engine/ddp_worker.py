"""Run by test_distributed.py under torchrun (or plainly): train the toy model, save its weights.

    python -m torch.distributed.run --nproc_per_node 2 tests/engine/ddp_worker.py OUT BATCH [straight|resume]

``straight`` / ``resume``: noisy data drawn from each rank's own random stream, 4 epochs in one go, or
2 epochs + checkpoint + a fresh trainer resumed for the last 2 (must give identical weights).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hemo_mtl.config import DEFAULTS  # noqa: E402
from hemo_mtl.data.dataset import collate_samples  # noqa: E402
from hemo_mtl.engine import (CheckpointHook, LRScheduleHook, Trainer, build_schedule, init_distributed,  # noqa: E402
                             latest_checkpoint)
from hemo_mtl.engine.distributed import cleanup  # noqa: E402
from tests.engine.toy import ToyDataset, ToyModel  # noqa: E402


def make_trainer(dist, batch_size: int, noise: float, output_dir=None) -> Trainer:
    torch.manual_seed(0)
    model = ToyModel()
    model.backbone[1] = torch.nn.Identity()  # BatchNorm and dropout depend on the local batch / rank
    model.backbone[3] = torch.nn.Identity()
    torch.manual_seed(100 + dist.rank)  # ranks draw different data noise, as train_net seeds seed + rank
    cfg = copy.deepcopy(DEFAULTS["train"])
    cfg.update(lr=0.02, lr_schedule={**cfg["lr_schedule"], "warmup_iters": 2})
    trainer = Trainer(model, ToyDataset(patients=6, noise=noise), schedule=build_schedule({"name": "joint"}, 4, ["cls", "seg"]),
                      train_cfg=cfg, batch_size=batch_size, collate_fn=collate_samples, seed=1, dist_info=dist,
                      output_dir=output_dir)
    trainer.register_hooks([LRScheduleHook()] + ([CheckpointHook(period=1, keep=10)] if output_dir else []))
    return trainer


def main(out: str, batch_size: int, mode: str = "plain") -> None:
    torch.set_num_threads(1)
    dist = init_distributed(torch.device("cpu"))
    if mode == "resume":
        ckpt_dir = Path(out).with_suffix(".ckpt")
        make_trainer(dist, batch_size, 0.05, ckpt_dir).train(until_epoch=2)
        trainer = make_trainer(dist, batch_size, 0.05, ckpt_dir)
        torch.manual_seed(12345)  # resume must overwrite this rank's random state
        trainer.resume(latest_checkpoint(ckpt_dir))
        trainer.train()
    else:
        trainer = make_trainer(dist, batch_size, 0.05 if mode == "straight" else 0.0)
        trainer.train()
    if dist.is_main:
        torch.save(trainer.model.module.state_dict() if dist.enabled else trainer.model.state_dict(), out)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
