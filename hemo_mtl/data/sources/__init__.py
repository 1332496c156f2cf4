"""Dataset adapters, one per published layout, registered in ``hemo_mtl.registry.SOURCES``.

Each turns a dataset folder into manifest rows (``SourceScan``) and reports what it skipped.
"""
from ...registry import SOURCES
from . import kaggle, nifti, physionet, rsna  # noqa: F401  (registration)
from .base import SourceScan


def scan_source(name: str, root, **kwargs) -> SourceScan:
    return SOURCES.build(name, root, **kwargs)


__all__ = ["SOURCES", "SourceScan", "scan_source"]
