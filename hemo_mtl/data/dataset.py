"""The torch Dataset over a manifest: every slice becomes one sample dict (DESIGN.md contract).

    image     float32 C x H x W, each channel one HU window in [0, 1] (display images: the 8-bit
              rendering / 255, repeated per channel); with ``context_slices`` c > 0 (2.5D) C =
              windows x (2c+1), ordered [window0 @ z-c..z+c, window1 @ z-c..z+c, ...], neighbours
              from the same study by slice_idx, the nearest existing slice where one is missing
    cls       float32 [6] any, EDH, SDH, SAH, IPH, IVH;  cls_valid float32 [6]: 1 where known
    mask      int64 H x W: 0 background, 1..5 subtype, 6 (``UNKNOWN_SUBTYPE``) bleed whose subtype is
              not known; zeros when has["mask"] is False
    boxes     float32 N x 4 xyxy (pixel edges), labels int64 N (1..5), masks uint8 N x H x W; a mask
              with unknown-subtype pixels gives no boxes (has["boxes"] False: a box needs its category)
    location  int64 scalar: index of the manifest ``location`` in ``location_classes``; -1 unknown
    roi       bool H x W, only with ``bleed_roi``: where a bleed may be on the augmented slice
              (``data.anatomy.bleed_roi``: inside the skull, or its hyperdense pixels); has["roi"]
              False and all False where no closed skull shows
    has       {"cls", "mask", "boxes"}: which labels the slice really has (+ "location" when the
              dataset maps locations)
    meta      patient_id, study_id, slice_idx, source, spacing, orig_size, image, index

A missing label is absent, not zero: losses skip samples whose ``has[task]`` is False.
Protocol options: ``cls_labels`` (e.g. ``["any"]``) keeps only those labels as known, so a binary
protocol never trains or scores subtypes; ``extra`` (``hemo_mtl.data.protocol_transforms``) adds a
center crop, sharpening and ImageNet normalisation after the resize/augmentation pipeline.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..categories import ANY, LABELS, SUBTYPES, UNKNOWN_SUBTYPE
from .instances import mask_to_instances
from .io import VolumeCache, read_slice
from .manifest import parse_spacing, read_manifest
from .anatomy import bleed_roi, check_bleed_roi
from .protocol_transforms import build_extra_transforms
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
        cls_labels=None,
        location_classes=None,
        extra: dict | None = None,
        context_slices: int = 0,
        lesion_insertion: dict | None = None,
        bleed_roi: str | None = None,
    ):
        frame = manifest if isinstance(manifest, pd.DataFrame) else read_manifest(manifest)
        if patients is not None:
            wanted = set(map(str, patients))
            frame = frame[frame["patient_id"].isin(wanted)]
            missing = wanted - set(frame["patient_id"])
            if missing:
                raise ValueError(f"patients not in the manifest: {sorted(missing)[:10]}")
        self.context_slices = int(context_slices)
        self.bleed_roi = check_bleed_roi(bleed_roi)
        if self.context_slices:  # neighbours from all the study's rows, before any label filter
            frame = with_context_refs(frame, self.context_slices)
        if label_depth is not None:
            column = {"cls": "has_cls", "boxes": "has_boxes", "mask": "has_mask"}[label_depth]
            frame = frame[frame[column]]
        self.frame = frame.reset_index(drop=True)
        self.windows = tuple([windows] if isinstance(windows, str) else windows)
        self.image_size = image_size
        self.train = train
        # "display" when any row is an 8-bit rendering (JPG/PNG): its augmentation and left-right axis differ
        self.kind = "display" if bool((self.frame["kind"] == "display").any()) else "hu"
        self.transform = transform or build_transforms(augment, train=train, image_size=image_size,
                                                       display=self.kind == "display")
        self.hu_jitter = HUJitter.from_config(augment) if train and (augment or {}).get("enabled", True) else None
        self.cache = VolumeCache(cache_bytes)
        self.seed = seed
        self.epoch = 0
        unknown = sorted(set(cls_labels or ()) - set(LABELS))
        if unknown:
            raise ValueError(f"data.cls_labels: unknown label(s) {unknown}; known: {list(LABELS)}")
        self.label_keep = np.asarray([1.0 if cls_labels is None or n in cls_labels else 0.0 for n in LABELS], np.float32)
        self.location_classes = tuple(location_classes or ())
        self.locations = self._location_codes()
        self.extra = build_extra_transforms(extra, train=train)
        # train only: draw a synthetic bleed into known-empty slices with this probability (data.lesion_insertion)
        ins = dict(lesion_insertion or {})
        self.insertion = ins if train and float(ins.get("p") or 0) > 0 else None
        if self.insertion is not None:
            from .lesion_insertion import SHAPES

            unknown = sorted(set(self.insertion.get("subtypes") or SHAPES) - set(SHAPES))
            if unknown:
                raise ValueError(f"data.lesion_insertion.subtypes: {unknown} cannot be drawn; one of {list(SHAPES)}")

    def _location_codes(self) -> np.ndarray:
        """Class index of each row's ``location`` (-1: unknown, or no ``location_classes`` given)."""
        codes = np.full(len(self.frame), -1, np.int64)
        if not self.location_classes or "location" not in self.frame.columns:
            return codes
        index = {name: i for i, name in enumerate(self.location_classes)}
        for row, value in enumerate(self.frame["location"].fillna("").astype(str)):
            if value == "":
                continue
            if value not in index:
                raise ValueError(f"manifest row {row} ({self.frame['image'].iloc[row]}): location {value!r} "
                                 f"is not in data.location_classes {list(self.location_classes)}")
            codes[row] = index[value]
        return codes

    def _context_stack(self, row, centre: np.ndarray) -> np.ndarray:
        """The slice and its ``context_slices`` neighbours each side, (2c+1, H, W), read like the slice."""
        refs = row[CONTEXT_COLUMN]
        stack = [centre if ref == row["image"] else read_slice(ref, row["kind"], self.cache) for ref in refs]
        for ref, arr in zip(refs, stack):
            if arr.shape != centre.shape:
                raise ValueError(f"{ref}: neighbour slice shape {arr.shape} differs from {row['image']} {centre.shape} "
                                 f"(data.context_slices={self.context_slices} stacks neighbours as channels)")
        return np.stack(stack)

    # ------------------------------------------------------------------ tables the samplers use
    @property
    def patient_ids(self) -> list[str]:
        return self.frame["patient_id"].tolist()

    @property
    def has_table(self) -> pd.DataFrame:
        return self.frame[["has_cls", "has_mask", "has_boxes", "any", *SUBTYPES]]

    def set_epoch(self, epoch: int) -> None:
        """Reseed the HU jitter per epoch so augmentation is reproducible and differs across epochs."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frame)

    def _insert_bleed(self, row, index: int, channels: np.ndarray, mask: np.ndarray, has_mask: bool):
        """(channels, mask, subtype) with a synthetic bleed drawn in (``data.lesion_insertion``), or None:
        only on training slices whose mask is known to be empty and whose every label is known negative."""
        if self.insertion is None or not has_mask or mask.any():
            return None
        if any(pd.isna(row[n]) or float(row[n]) != 0.0 for n in LABELS):
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        if rng.random() >= float(self.insertion["p"]):
            return None
        from .lesion_insertion import SHAPES, insert_bleed

        if row["kind"] == "hu":  # HU rows are windowed by now; bleeds are drawn on display rows
            return None
        return insert_bleed(channels, "display", rng, tuple(self.insertion.get("subtypes") or SHAPES))

    # ------------------------------------------------------------------ one sample
    def __getitem__(self, index: int) -> dict:
        row = self.frame.iloc[index]
        image = read_slice(row["image"], row["kind"], self.cache)
        orig_size = tuple(int(s) for s in image.shape)
        if self.context_slices:
            image = self._context_stack(row, image)  # (2c+1, H, W), slices z-c..z+c
        if row["kind"] == "hu":
            if self.hu_jitter is not None:
                image = self.hu_jitter(image, np.random.default_rng([self.seed, self.epoch, index]))
            channels = stack_windows(image, self.windows)
        else:
            channels = np.repeat((image.astype(np.float32) / 255.0)[None], len(self.windows), axis=0)
        channels = channels.reshape(-1, *orig_size)  # 2.5D: [window0 @ z-c..z+c, window1 @ z-c..z+c, ...]
        has_mask = bool(row["has_mask"])
        if has_mask and row["mask"] != f"{row['image']}@0":
            mask = read_slice(row["mask"], "mask", self.cache)
        else:  # no mask, or empty by a release's definition (the image itself stands for the file)
            mask = np.zeros(orig_size, np.uint8)
        if mask.shape != orig_size:
            raise ValueError(f"{row['mask']}: mask shape {mask.shape} differs from image {row['image']} {orig_size}")
        drawn = self._insert_bleed(row, index, channels, mask, has_mask)
        if drawn is not None:
            channels, mask, drawn = drawn
        unknown_subtype = bool((mask == UNKNOWN_SUBTYPE).any())  # before augmentation: the same for every draw
        if self.train:
            # per-sample seed: the same augmentation whatever worker or resume point draws it
            self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        out = self.transform(image=np.ascontiguousarray(channels.transpose(1, 2, 0)), mask=mask)
        if self.extra is not None:
            if self.train:
                self.extra.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index, 1]).generate_state(1)[0]))
            out = self.extra(image=out["image"], mask=out["mask"])
        image_t = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1), dtype=np.float32))
        mask_np = out["mask"].astype(np.int64)

        cls = np.zeros(len(LABELS), np.float32)
        valid = np.zeros(len(LABELS), np.float32)
        for i, name in enumerate(LABELS):
            value = row[name]
            if not pd.isna(value):
                cls[i], valid[i] = float(value), 1.0
        if drawn is not None:  # the drawn bleed is the slice's one finding
            cls[:] = 0.0
            cls[ANY] = cls[LABELS.index(drawn)] = 1.0
        cls, valid = cls * self.label_keep, valid * self.label_keep
        has_boxes = bool(row["has_boxes"]) and not unknown_subtype
        boxes, labels, inst = mask_to_instances(mask_np.astype(np.uint8)) if has_boxes and has_mask else mask_to_instances(np.zeros_like(mask_np, np.uint8))
        extra, has_extra = {}, {}
        if self.bleed_roi:  # on the first window's centre slice, after augmentation (aligned with the mask)
            roi = bleed_roi(out["image"][..., self.context_slices], self.bleed_roi)
            has_extra["roi"] = roi is not None
            extra["roi"] = torch.from_numpy(roi if roi is not None else np.zeros(mask_np.shape, bool))
        return {
            **extra,
            "image": image_t,
            "cls": torch.from_numpy(cls),
            "cls_valid": torch.from_numpy(valid),
            "mask": torch.from_numpy(mask_np),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(inst),
            "location": torch.tensor(int(self.locations[index]), dtype=torch.int64),
            "has": {"cls": bool(row["has_cls"]) and bool(valid.any()), "mask": has_mask, "boxes": has_boxes,
                    **has_extra, **({"location": bool(self.locations[index] >= 0)} if self.location_classes else {})},
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


CONTEXT_COLUMN = "context_refs"


def context_index(slice_idx, context: int) -> np.ndarray:
    """(n, 2c+1) positions into the sorted ``slice_idx`` of each slice's neighbours z-c..z+c.

    The wanted index z+d is taken when it exists, else the nearest existing one (ties go to the side
    of the centre slice), so the volume ends replicate the edge slice. The predictor calls this with
    ``arange(Z)`` and gathers the volume tensor with the result: both paths stack the same slices.
    """
    s = np.asarray(slice_idx, dtype=np.int64)
    if s.ndim != 1 or (len(s) > 1 and not (np.diff(s) > 0).all()):
        raise ValueError(f"slice indices must be strictly increasing, got {s.tolist()[:20]}")
    offsets = np.arange(-context, context + 1)
    target = s[:, None] + offsets[None, :]
    hi = np.searchsorted(s, target).clip(0, len(s) - 1)
    lo = (hi - 1).clip(0, len(s) - 1)
    d_lo, d_hi = np.abs(target - s[lo]), np.abs(s[hi] - target)
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (offsets[None, :] < 0))
    return np.where(take_hi, hi, lo)


def with_context_refs(frame: pd.DataFrame, context: int) -> pd.DataFrame:
    """``frame`` plus a column of each row's neighbour image refs (z-c..z+c) from the same
    patient/study ordered by ``slice_idx`` (NIfTI ``path#k`` slices and single-slice files alike)."""
    refs = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for (patient, study), group in frame.groupby(["patient_id", "study_id"], sort=False):
        group = group.sort_values("slice_idx")
        dup = group["slice_idx"][group["slice_idx"].duplicated()]
        if len(dup):
            raise ValueError(f"manifest: patient {patient} study {study} has slice_idx {int(dup.iloc[0])} more than "
                             f"once; data.context_slices needs one row per slice")
        images = group["image"].to_numpy()
        index = context_index(group["slice_idx"].to_numpy(), context)
        refs.loc[group.index] = [tuple(images[i]) for i in index]
    return frame.assign(**{CONTEXT_COLUMN: refs})


def collate_samples(samples: list[dict]) -> dict:
    """Stack what stacks; keep per-image instance targets and meta as lists (torchvision's detection habit)."""
    extra = {"roi": torch.stack([s["roi"] for s in samples])} if all("roi" in s for s in samples) else {}
    return {
        **extra,
        "image": torch.stack([s["image"] for s in samples]),
        "cls": torch.stack([s["cls"] for s in samples]),
        "cls_valid": torch.stack([s["cls_valid"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "location": torch.stack([s.get("location", torch.tensor(-1)) for s in samples]),
        "has": {k: torch.tensor([s["has"].get(k, False) for s in samples], dtype=torch.bool)
                for k in ("cls", "mask", "boxes", "location", "roi")},
        "targets": [{"boxes": s["boxes"], "labels": s["labels"], "masks": s["masks"]} for s in samples],
        "meta": [s["meta"] for s in samples],
        "weight": torch.tensor([float(s.get("weight", 1.0)) for s in samples]),
    }


def manifest_dir_dataset(root, split: str | None = None, **kwargs) -> HemorrhageDataset:
    """The dataset of a converted folder (``manifest.csv`` + ``splits.json``), optionally one split."""
    from .splits import load_splits

    root = Path(root)
    patients = load_splits(root / "splits.json")[split] if split else None
    return HemorrhageDataset(root / "manifest.csv", patients=patients, **kwargs)


def move_to_device(batch, device: torch.device, channels_last: bool = False):
    """A collated batch (tensors in dicts/lists) on ``device``; ``meta`` stays on the host. 4-D float
    tensors go channels-last when asked (the AMP/cuDNN path)."""
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, dict):
        return {k: (v if k == "meta" else move_to_device(v, device, channels_last)) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, channels_last) for v in batch)
    return batch
