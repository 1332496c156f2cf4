"""hemo-mtl: convert, train and evaluate multi-task models for intracranial hemorrhage on head CT."""
from . import _env  # noqa: F401  (environment defaults, before torch, albumentations or ultralytics load)
from .version import __version__

__all__ = ["__version__"]
