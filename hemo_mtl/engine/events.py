"""A small metric store the loop writes to and hooks read from (detectron2's EventStorage, trimmed)."""
from __future__ import annotations

from collections import defaultdict, deque
from typing import Iterable


class EventStorage:
    """Scalars by name with the iteration they belong to, and a window for smoothed values."""

    def __init__(self, window: int = 20):
        self.iter = 0
        self._history: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self._latest: dict[str, tuple[float, int]] = {}
        self.images: list[tuple[str, object, int]] = []
        self.metrics: list[tuple[dict, int]] = []

    def put_scalar(self, name: str, value: float, smooth: bool = True) -> None:
        value = float(value)
        self._latest[name] = (value, self.iter)
        if smooth:
            self._history[name].append(value)

    def put_scalars(self, values: dict, smooth: bool = True) -> None:
        for k, v in values.items():
            self.put_scalar(k, v, smooth)

    def put_image(self, name: str, image) -> None:
        """A (3, H, W) uint8 tensor for the writers to pick up (and clear)."""
        self.images.append((name, image, self.iter))

    def put_metrics(self, metrics: dict) -> None:
        """Evaluation results (flat keys) for the writers to pick up (and clear)."""
        self.metrics.append((dict(metrics), self.iter))

    def pop_pending(self) -> tuple[list, list]:
        """Metrics and images queued since the last call."""
        metrics, images = self.metrics, self.images
        self.metrics, self.images = [], []
        return metrics, images

    def latest(self) -> dict[str, tuple[float, int]]:
        return dict(self._latest)

    def median(self, name: str) -> float:
        values = sorted(self._history[name])
        return values[len(values) // 2] if values else float("nan")

    def smoothed(self, names: Iterable[str] | None = None) -> dict[str, float]:
        keys = self._history.keys() if names is None else names
        return {k: sum(self._history[k]) / len(self._history[k]) for k in keys if self._history[k]}
