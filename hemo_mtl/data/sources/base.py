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
        item = str(item)
        if reason.startswith(f"{item}: "):  # a DataError already naming the item: say it once
            reason = reason[len(item) + 2:]
        self.skipped.append({"item": item, "reason": reason})

    def keep_unique(self, items: list, what: str) -> dict:
        """``cells.unique_rows`` with its notes and conflicting-duplicate errors reported here."""
        from ..cells import unique_rows

        kept, notes, errors = unique_rows(items, what=what)
        self.notes.extend(notes)
        for exc in errors:
            self.skip_error(exc)
        return kept

    def skip_error(self, exc: Exception, item=None) -> None:
        """Report a DataError: a RowError keeps its file+line item, others go under ``item``."""
        if hasattr(exc, "item") and hasattr(exc, "reason"):
            self.skip(exc.item, exc.reason)
        else:
            self.skip(item if item is not None else "", str(exc))
