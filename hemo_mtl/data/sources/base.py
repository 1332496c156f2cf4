"""What every dataset adapter returns: manifest rows plus the items it had to skip, and why."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SourceScan:
    source: str
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"item": path/row, "reason": text}
    notes: list[str] = field(default_factory=list)  # dataset-level caveats for the report
    licenses: list[dict] = field(default_factory=list)
    # Optional per-patient 3D label masks the converters export from (pid -> mask path).
    mask_volumes: dict[str, str] = field(default_factory=dict)

    def skip(self, item, reason: str) -> None:
        self.skipped.append({"item": str(item), "reason": reason})
