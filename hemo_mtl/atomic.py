"""Atomic writes: a crashed run never leaves a half-written file under its final name.

The temp file is created with mode 0666 filtered by the process umask, so an output gets the
permissions any ordinary ``open(path, "w")`` would give it (``tempfile.mkstemp`` would make it 0600).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def _create_temp_beside(path: Path) -> Path:
    suffix = "".join(path.suffixes) or ".tmp"
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path`` (same suffix, same filesystem); rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_csv(path, header: list[str], rows) -> None:
    """A CSV with ``header`` and ``rows`` (csv module quoting, ``\n`` line ends), written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def json_safe(v: Any) -> Any:
    """``v`` with NaN/inf as None and numpy scalars/arrays as Python values: strict JSON (undefined -> null)."""
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [json_safe(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def atomic_write_json(path, obj, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Strict JSON (NaN/inf written as null, never the invalid bare ``NaN``), written atomically."""
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return Path(path)
