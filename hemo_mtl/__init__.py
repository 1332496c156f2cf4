"""hemo-mtl: convert, train and evaluate multi-task models for intracranial hemorrhage on head CT."""
from .version import __version__

__all__ = ["__version__"]
