"""Patient-wise, subtype-stratified, seeded splits written once to ``splits.json`` and reused.

Slices of one patient are strongly correlated, so every split is by patient (nnU-Net's
``splits_final.json`` habit). Stratification puts each patient in the stratum of the rarest subtype
it has (or "normal"), then deals each stratum out in proportion, so rare subtypes reach every split.
Hemorica's protocol is ``make_splits(frame, seed=32, val=0.0, test=0.2)``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_write_json
from ..categories import SUBTYPES
from .manifest import patient_table

SPLIT_NAMES = ("train", "val", "test")


class LeakageError(ValueError):
    """A patient appears in two splits (or folds): every metric would be optimistic."""


def patient_strata(frame: pd.DataFrame) -> pd.Series:
    """Stratum per patient: its rarest present subtype, "any" when only `any` is known, else "normal"."""
    table = patient_table(frame)
    prevalence = {s: table[s].fillna(0).sum() for s in SUBTYPES}
    rare_first = sorted(SUBTYPES, key=lambda s: (prevalence[s], s))

    def stratum(row) -> str:
        for s in rare_first:
            if row[s] == 1:
                return s
        return "any" if row["any"] == 1 else "normal"

    return table.apply(stratum, axis=1)


def _deal(strata: pd.Series, fractions: dict[str, float], rng: np.random.Generator) -> dict[str, list[str]]:
    """Split each stratum by largest remainder; carry rounding so totals track the fractions."""
    out = {name: [] for name in fractions}
    carry = {name: 0.0 for name in fractions}
    for _, members in sorted(strata.groupby(strata)):
        ids = sorted(members.index)
        rng.shuffle(ids)
        n = len(ids)
        want = {name: fractions[name] * n + carry[name] for name in fractions}
        # a negative carry can make a share negative: clamp at 0 (a negative count would re-deal patients
        # already dealt, i.e. put them in two parts), then take the excess back from the smallest remainders
        counts = {name: max(int(np.floor(w)), 0) for name, w in want.items()}
        left = n - sum(counts.values())
        for name in sorted(fractions, key=lambda k: want[k] - counts[k], reverse=True)[:max(left, 0)]:
            counts[name] += 1
        for name in sorted((k for k in fractions if counts[k] > 0), key=lambda k: want[k] - counts[k])[:max(-left, 0)]:
            counts[name] -= 1
        for name in fractions:
            carry[name] = want[name] - counts[name]
        start = 0
        for name in fractions:
            out[name].extend(ids[start : start + counts[name]])
            start += counts[name]
    return {name: sorted(ids) for name, ids in out.items()}


def make_splits(frame: pd.DataFrame, seed: int = 32, val: float = 0.1, test: float = 0.2, folds: int = 0) -> dict:
    """Train/val/test patient lists (and ``folds`` cross-validation folds of the non-test patients)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"split fractions must satisfy 0 <= val, test and val + test < 1; got val={val}, test={test}")
    strata = patient_strata(frame)
    rng = np.random.default_rng(seed)
    parts = _deal(strata, {"train": 1 - val - test, "val": val, "test": test}, rng)
    splits = {
        "seed": seed,
        "fractions": {"train": 1 - val - test, "val": val, "test": test},
        "stratified_by": "rarest subtype present per patient",
        **parts,
    }
    if folds:
        pool = strata.drop(parts["test"])
        if len(pool) < folds:
            raise ValueError(f"{folds}-fold cross-validation needs at least {folds} non-test patients, have {len(pool)}")
        dealt = _deal(pool, {f"fold{i}": 1.0 / folds for i in range(folds)}, rng)
        splits["folds"] = [dealt[f"fold{i}"] for i in range(folds)]
    check_leakage(splits)
    return splits


def check_leakage(splits: dict) -> None:
    """Fail loudly if any patient is in two of train/val/test, or in two folds."""
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for pid in splits.get(name, []):
            if pid in seen:
                raise LeakageError(f"patient {pid!r} is in both {seen[pid]!r} and {name!r}")
            seen[pid] = name
    fold_of: dict[str, int] = {}
    for i, fold in enumerate(splits.get("folds", []) or []):
        for pid in fold:
            if pid in fold_of:
                raise LeakageError(f"patient {pid!r} is in folds {fold_of[pid]} and {i}")
            if seen.get(pid) == "test":
                raise LeakageError(f"patient {pid!r} is in fold {i} and in 'test'")
            fold_of[pid] = i


def fold_split(splits: dict, fold: int, held_out_as: str = "val") -> dict[str, list[str]]:
    """Train/val(/test) patient lists for cross-validation fold ``fold``.

    ``held_out_as="val"``: that fold validates, the rest trains, the persisted test split tests.
    ``held_out_as="test"``: that fold tests and the next fold (cyclically) validates, so thresholds and
    epochs are chosen on patients the reported figures never see; over k runs every patient is tested
    exactly once (the protocol of ``tools/cross_validate.py``).
    """
    folds = splits.get("folds") or []
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} does not exist (splits have {len(folds)} folds)")
    if held_out_as not in ("val", "test"):
        raise ValueError(f"held_out_as must be 'val' or 'test', got {held_out_as!r}")
    if held_out_as == "val":
        train = sorted(p for i, f in enumerate(folds) if i != fold for p in f)
        return {"train": train, "val": sorted(folds[fold]), "test": list(splits.get("test", []))}
    if len(folds) < 3:
        raise ValueError(f"a test fold needs a separate validation fold and training folds: at least 3 folds, have {len(folds)}")
    val = (fold + 1) % len(folds)
    train = sorted(p for i, f in enumerate(folds) if i not in (fold, val) for p in f)
    return {"train": train, "val": sorted(folds[val]), "test": sorted(folds[fold])}


def save_splits(splits: dict, path) -> None:
    check_leakage(splits)
    atomic_write_json(path, splits)


def load_splits(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: splits file not found")
    splits = json.loads(path.read_text())
    missing = [n for n in SPLIT_NAMES if n not in splits]
    if missing:
        raise ValueError(f"{path}: splits file lacks {missing}")
    check_leakage(splits)
    return splits
