"""Paths built from values read out of input files (patient ids, DICOM tags, file names).

A value read from an input may never choose where a file goes: ``safe_component`` turns it into one
harmless path component, and ``confined`` refuses any path that would leave the output folder.
"""
from __future__ import annotations

import re
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafePathError(ValueError):
    """A path built from input values would leave its output folder."""


def safe_component(value, fallback: str = "x") -> str:
    """One file-name component from an input value: separators, '..' and odd characters become '_'.

    Keeps letters, digits, '.', '_' and '-' (what patient ids and UIDs use), so ordinary ids are
    unchanged; a value that is empty or only dots after cleaning becomes ``fallback``.
    """
    text = _UNSAFE.sub("_", str(value).strip())
    text = text.replace("..", "_")
    if not text.strip("._"):
        return fallback
    return text


def confined(root, *parts) -> Path:
    """``root / parts...``, refused (UnsafePathError) unless it resolves inside ``root``."""
    base = Path(root).resolve()
    path = base.joinpath(*[str(p) for p in parts]).resolve()
    if path != base and base not in path.parents:
        raise UnsafePathError(f"{path}: outside the output folder {base}")
    return path
