"""Label CSVs read cell by cell: every value checked where it is read, every problem naming file and line.

Sources read their label tables through ``read_csv_rows`` (stdlib ``csv``, not pandas, because the
checks need the raw text of each cell and its CSV line number: pandas guesses types, turns ``0.5`` into
a float that ``int`` truncates and renumbers rows around blank lines). Header names and cells are
stripped of surrounding whitespace; a bad cell raises ``RowError`` (a ``DataError``) that the source
reports and skips, so one bad row never stops a conversion. ``unique_rows`` is the one duplicate
check: identical repeats are used once (noted), conflicting ones are all left out (reported).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Iterable

from .io import DataError


class RowError(DataError):
    """One unusable CSV row: ``item`` names file and line, ``reason`` says what is wrong."""

    def __init__(self, item: str, reason: str):
        super().__init__(f"{item}: {reason}")
        self.item, self.reason = item, reason


@dataclass
class CsvRow:
    path: Path
    line: int  # 1-based line of the CSV file where the row ends (the header is line 1)
    cells: dict[str, str]  # stripped text per (stripped) column name

    @property
    def where(self) -> str:
        return f"{self.path} line {self.line}"

    def error(self, reason: str) -> RowError:
        return RowError(self.where, reason)

    def text(self, column: str) -> str:
        return self.cells.get(column, "")


def read_csv_rows(path, required: Iterable[str] = ()) -> tuple[list[str], list[CsvRow], list[RowError]]:
    """(header, rows, malformed rows) of a CSV; a missing file or required column is a DataError.

    A UTF-8 byte-order mark is tolerated, blank lines are ignored, and a row whose field count differs
    from the header's is returned as a ``RowError`` (reported by the caller, never silently padded).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            if not any(header):
                raise DataError(f"{path}: empty CSV (no header line)")
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise DataError(f"{path}: column(s) {dupes} appear more than once in the header")
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; have {header}")
            rows, bad = [], []
            for fields in reader:
                line = reader.line_num
                if not any(v.strip() for v in fields):
                    continue
                if len(fields) != len(header):
                    bad.append(RowError(f"{path} line {line}", f"{len(fields)} fields, the header has {len(header)}"))
                    continue
                rows.append(CsvRow(path, line, {h: v.strip() for h, v in zip(header, fields)}))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    return header, rows, bad


def label_cell(row: CsvRow, column: str, allow_empty: bool = False) -> int | None:
    """A 0/1 label cell (``1.0`` accepted as 1); empty -> None where the layout means unknown.

    Anything else (``yes``, ``2``, ``0.5``, ``nan``) is a RowError: a label is never guessed or truncated.
    """
    text = row.text(column)
    if text == "":
        if allow_empty:
            return None
        raise row.error(f"column {column!r}: empty label cell (expected 0 or 1)")
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise row.error(f"column {column!r}: label must be 0 or 1, got {text!r}")
    return int(value)


def int_cell(row: CsvRow, column: str, minimum: int | None = None) -> int:
    """An integer cell (slice numbers, numeric ids); ``3.0`` is 3, ``3.5``, ``x`` or empty are RowErrors."""
    text = row.text(column)
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            f = float("nan")
        if not f.is_integer():
            raise row.error(f"column {column!r}: expected an integer, got {text!r}") from None
        value = int(f)
    if minimum is not None and value < minimum:
        raise row.error(f"column {column!r}: must be >= {minimum}, got {value}")
    return value


def id_cell(row: CsvRow, column: str) -> str:
    """An identifier cell, stripped; empty is a RowError (the row would belong to no one)."""
    text = row.text(column)
    if not text:
        raise row.error(f"column {column!r}: empty id")
    return text


def unique_rows(items: Iterable[tuple[Hashable, object, CsvRow]], what: str = "key"
                ) -> tuple[dict, list[str], list[RowError]]:
    """``{key: value}`` from (key, value, row) triples, plus notes and errors for repeated keys.

    Rows repeating a key with the same value are used once (a note names their lines); rows giving one
    key different values are all left out (a RowError names every line), because which one is right
    is not known.
    """
    groups: dict = {}
    for key, value, row in items:
        groups.setdefault(key, []).append((value, row))
    kept, notes, errors = {}, [], []
    for key, entries in groups.items():
        lines = ", ".join(str(r.line) for _, r in entries)
        path = entries[0][1].path
        values = [v for v, _ in entries]
        if all(v == values[0] for v in values):
            kept[key] = values[0]
            if len(entries) > 1:
                notes.append(f"{path} lines {lines}: {what} {key} repeated with identical values; used once")
        else:
            shown = " vs ".join(str(v) for v in dict.fromkeys(map(str, values)))
            errors.append(RowError(f"{path} lines {lines}", f"conflicting rows for {what} {key} ({shown}); left out"))
    return kept, notes, errors
