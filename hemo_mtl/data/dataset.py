"""The torch Dataset over a manifest: every slice becomes one sample dict (DESIGN.md contract).

    image     float32 C x H x W, each channel one HU window in [0, 1] (display images: the 8-bit
              rendering / 255, repeated per channel)
    cls       float32 [6] any, EDH, SDH, SAH, IPH, IVH;  cls_valid float32 [6]: 1 where known
    mask      int64 H x W (0..5), zeros when has["mask"] is False
    boxes     float32 N x 4 xyxy (pixel edges), labels int64 N (1..5), masks uint8 N x H x W
    has       {"cls", "mask", "boxes"}: which labels the slice really has
    meta      patient_id, study_id, slice_idx, source, spacing, orig_size, image, index

A missing label is absent, not zero: losses skip samples whose ``has[task]`` is False.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..categories import LABELS
from .instances import mask_to_instances
from .io import VolumeCache, read_slice
from .manifest import parse_spacing, read_manifest
from .transforms import HUJitter, build_transforms
from .windowing import stack_windows


class HemorrhageDataset(Dataset):
    def __init__(
        self,
        manifest,
        patients=None,
        windows=("brain",),
        image_size: int = 256,
        transform=None,
        train: bool = False,
        augment: dict | None = None,
        cache_bytes: float = 2e9,
        seed: int = 0,
        label_depth: str | None = None,
    ):
        frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        if patients is not None:
            wanted = set(map(str, patients))
            frame = frame[frame["patient_id"].isin(wanted)]
            missing = wanted - set(frame["patient_id"])
            if missing:
                raise ValueError(f"patients not in the manifest: {sorted(missing)[:10]}")
        if label_depth is not None:
            column = {"cls": "has_cls", "boxes": "has_boxes", "mask": "has_mask"}[label_depth]
            frame = frame[frame[column]]
        self.frame = frame.reset_index(drop=True)
        self.windows = tuple([windows] if isinstance(windows, str) else windows)
        self.image_size = image_size
        self.train = train
        display = bool((self.frame["kind"] == "display").any())
        self.transform = transform or build_transforms(augment, train=train, image_size=image_size, display=display)
        self.hu_jitter = HUJitter.from_config(augment) if train and (augment or {}).get("enabled", True) else None
        self.cache = VolumeCache(cache_bytes)
        self.seed = seed
        self.epoch = 0

    # ------------------------------------------------------------------ tables the samplers use
    @property
    def patient_ids(self) -> list[str]:
        return self.frame["patient_id"].tolist()

    @property
    def has_table(self) -> pd.DataFrame:
        return self.frame[["has_cls", "has_mask", "has_boxes", "any"]]

    def set_epoch(self, epoch: int) -> None:
        """Reseed the HU jitter per epoch so augmentation is reproducible and differs across epochs."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frame)

    # ------------------------------------------------------------------ one sample
    def __getitem__(self, index: int) -> dict:
        row = self.frame.iloc[index]
        image = read_slice(row["image"], row["kind"], self.cache)
        orig_size = tuple(int(s) for s in image.shape)
        if row["kind"] == "hu":
            if self.hu_jitter is not None:
                image = self.hu_jitter(image, np.random.default_rng([self.seed, self.epoch, index]))
            channels = stack_windows(image, self.windows)
        else:
            channels = np.repeat((image.astype(np.float32) / 255.0)[None], len(self.windows), axis=0)
        has_mask = bool(row["has_mask"])
        mask = read_slice(row["mask"], "mask", self.cache) if has_mask else np.zeros(orig_size, np.uint8)
        if mask.shape != orig_size:
            raise ValueError(f"{row['mask']}: mask shape {mask.shape} differs from image {row['image']} {orig_size}")
        if self.train:
            # per-sample seed: the same augmentation whatever worker or resume point draws it
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        out = self.transform(image=np.ascontiguousarray(channels.transpose(1, 2, 0)), mask=mask)
        image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        mask_np = out["mask"].astype(np.int64)

        cls = np.zeros(len(LABELS), np.float32)
        valid = np.zeros(len(LABELS), np.float32)
        for i, name in enumerate(LABELS):
            value = row[name]
            if not pd.isna(value):
                cls[i], valid[i] = float(value), 1.0
        has_boxes = bool(row["has_boxes"])
        boxes, labels, inst = mask_to_instances(mask_np.astype(np.uint8)) if has_boxes and has_mask else mask_to_instances(np.zeros_like(mask_np, np.uint8))
        return {
            "image": image_t,
            "cls": torch.from_numpy(cls),
            "cls_valid": torch.from_numpy(valid),
            "mask": torch.from_numpy(mask_np),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(inst),
            "has": {"cls": bool(row["has_cls"]), "mask": has_mask, "boxes": has_boxes},
            "meta": {
                "patient_id": row["patient_id"],
                "study_id": row["study_id"],
                "slice_idx": int(row["slice_idx"]),
                "source": row["source"],
                "spacing": parse_spacing(row["spacing"]),
                "orig_size": orig_size,
                "image": row["image"],
                "index": int(index),
            },
        }


def collate_samples(samples: list[dict]) -> dict:
    """Stack what stacks; keep per-image instance targets and meta as lists (torchvision's detection habit)."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "cls": torch.stack([s["cls"] for s in samples]),
        "cls_valid": torch.stack([s["cls_valid"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "has": {k: torch.tensor([s["has"][k] for s in samples], dtype=torch.bool) for k in ("cls", "mask", "boxes")},
        "targets": [{"boxes": s["boxes"], "labels": s["labels"], "masks": s["masks"]} for s in samples],
        "meta": [s["meta"] for s in samples],
    }


def manifest_dir_dataset(root, split: str | None = None, **kwargs) -> HemorrhageDataset:
    """The dataset of a converted folder (``manifest.csv`` + ``splits.json``), optionally one split."""
    from .splits import load_splits

    root = Path(root)
    patients = load_splits(root / "splits.json")[split] if split else None
    return HemorrhageDataset(root / "manifest.csv", patients=patients, **kwargs)
