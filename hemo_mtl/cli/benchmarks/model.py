"""Benchmark: is one shared trunk cheaper than three single-task models?

For each backbone, times forward+backward of one batch (default 8x1x256x256, CPU) for the multi-task
model (cls + seg + Mask R-CNN) and for the three single-task models on the same backbone, and reports
parameters and peak memory. Each model runs in its own process so its peak RSS
(``resource.getrusage``) is its own; "step MB" is the rise of that high-water mark over the
process's RSS after building the model and batch. The four models of a backbone are alive together
and their timed steps interleave (multi, cls, seg, det, multi, ...): a ratio of medians taken one
configuration after another would mostly measure how the machine's load changed in between.
Target: multi-task step <= 0.6 x the sum of the three single-task steps.

    python tools/benchmark.py model --backbones resnet18 resnet50 mobilevit_s --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]  # where hemo_mtl is imported from: the worker imports it too

VARIANTS = {
    "multi": ("cls", "seg", "det"),
    "cls": ("cls",),
    "seg": ("seg",),
    "det": ("det",),
}


def synthetic_batch(batch: int, size: int, in_chans: int, seed: int = 0) -> dict:
    """Random images with one or two rectangular lesions per slice and every label present."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    masks = np.zeros((batch, size, size), np.int64)
    targets = []
    for i in range(batch):
        boxes, labels, inst = [], [], []
        for _ in range(1 + i % 2):
            cls = int(rng.integers(1, 6))
            h, w = rng.integers(size // 32, size // 6, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            masks[i, y:y + h, x:x + w] = cls
            m = np.zeros((size, size), np.uint8)
            m[y:y + h, x:x + w] = 1
            boxes.append([x, y, x + w, y + h])
            labels.append(cls)
            inst.append(m)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "masks": torch.from_numpy(np.stack(inst))})
    cls = torch.zeros(batch, 6)
    for i in range(batch):
        cls[i, 0] = 1.0
        for c in np.unique(masks[i])[1:]:
            cls[i, c] = 1.0
    return {
        "image": torch.from_numpy(rng.random((batch, in_chans, size, size), dtype=np.float32)),
        "cls": cls, "cls_valid": torch.ones(batch, 6), "mask": torch.from_numpy(masks),
        "has": {k: torch.ones(batch, dtype=torch.bool) for k in ("cls", "mask", "boxes")},
        "targets": targets,
    }


def model_cfg(backbone: str, heads: tuple[str, ...], in_chans: int, fpn_channels: int) -> dict:
    from hemo_mtl.models import MODEL_DEFAULTS

    return {
        "backbone": {"name": backbone, "in_chans": in_chans, "fpn_channels": fpn_channels},
        "heads": {h: MODEL_DEFAULTS["heads"][h] for h in heads},
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args: dict) -> None:
    """One model in its own process (``--worker``): build, warm up, then time one forward+backward step per
    ``step`` line on stdin, answering one json line each; ``done`` answers with the model's figures."""
    import torch

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    from hemo_mtl.models import build_model, count_parameters

    model = build_model(model_cfg(args["backbone"], tuple(args["heads"]), args["in_chans"], args["fpn_channels"]))
    model.train()
    batch = synthetic_batch(args["batch"], args["size"], args["in_chans"])
    before = _current_rss_mb()

    def step():
        model.zero_grad(set_to_none=True)
        losses = model(batch)
        total, _ = model.balancer(losses)
        total.backward()

    for _ in range(args["warmup"]):
        step()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            t0 = time.perf_counter()
            step()
            print(json.dumps({"step_s": time.perf_counter() - t0}), flush=True)
        elif line.strip() == "done":
            peak = _rss_mb()
            print(json.dumps({"params_m": count_parameters(model) / 1e6, "peak_rss_mb": peak,
                              "step_mb": max(peak - before, 0.0)}), flush=True)
            return


class Worker:
    """A ``worker`` process driven over pipes: each model keeps its own peak RSS, and the parent decides the
    order of the timed steps."""

    def __init__(self, args: dict):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", "hemo_mtl.cli.benchmarks.model", "--worker", json.dumps(args)],
                                     cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command: str | None = None) -> dict:
        if command:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with status {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> dict:
        info = self.ask("done")
        self.proc.stdin.close()
        self.proc.wait()
        return info


def run(backbones, batch=8, size=256, in_chans=1, fpn_channels=128, repeats=3, warmup=1, threads=2) -> list[dict]:
    """Per backbone, the four models live side by side (one process each) and their timed steps alternate
    multi, cls, seg, det, multi, cls, ... so load from other processes hits every term of the ratio alike;
    each model's median and min over its ``repeats`` steps are reported."""
    rows = []
    for backbone in backbones:
        workers = {}
        try:
            for variant, heads in VARIANTS.items():
                workers[variant] = Worker(dict(backbone=backbone, variant=variant, heads=heads, batch=batch, size=size,
                                               in_chans=in_chans, fpn_channels=fpn_channels, warmup=warmup,
                                               threads=threads))
            for w in workers.values():
                w.ask()  # ready: built and warmed up
            times = {variant: [] for variant in workers}
            for _ in range(repeats):
                for variant, w in workers.items():
                    times[variant].append(w.ask("step")["step_s"])
            for variant, w in workers.items():
                info = w.close()
                t = sorted(times[variant])
                rows.append({"backbone": backbone, "variant": variant, **info, "step_s": float(np.median(t)),
                             "step_min_s": t[0], "repeats": len(t)})
                print(f"{backbone:>14} {variant:>5}: {rows[-1]['step_s']:.2f} s/step (median of {len(t)})", flush=True)
        finally:
            for w in workers.values():
                if w.proc.poll() is None:
                    w.proc.kill()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| backbone | model | params (M) | fwd+bwd s/step (median) | min | peak RSS MB | step MB | "
             "multi / sum(single), median (min) |", "|---|---|---|---|---|---|---|---|"]
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        group = {r["variant"]: r for r in rows if r["backbone"] == backbone}
        single = sum(group[v]["step_s"] for v in ("cls", "seg", "det") if v in group)
        single_min = sum(group[v]["step_min_s"] for v in ("cls", "seg", "det") if v in group)
        for variant, r in group.items():
            ratio = (f"{r['step_s'] / single:.2f} ({r['step_min_s'] / single_min:.2f})"
                     if variant == "multi" and single else "")
            lines.append(f"| {backbone} | {variant} | {r['params_m']:.1f} | {r['step_s']:.2f} | {r['step_min_s']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['step_mb']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50", "mobilevit_s"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--fpn-channels", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the rows as json here")
    a = p.parse_args(argv)
    load = os.getloadavg()[0]
    rows = run(a.backbones, a.batch, a.size, a.in_chans, a.fpn_channels, a.repeats, a.warmup, a.threads)
    print(f"{a.threads} threads, steps interleaved across the four models; load average (1 min) {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(table(rows))
    if a.out:
        sys.path.insert(0, str(REPO))  # the parent process imports the package only to write
        from hemo_mtl.atomic import atomic_write_text

        atomic_write_text(a.out, json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
