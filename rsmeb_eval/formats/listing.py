"""Row readers for CSV and JSON Lines listings, numbering rows by their line in the file."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def read_csv(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for every data row (the header is line 1); missing columns raise ValueError."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing} (found {columns})")
        reader.fieldnames = columns
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` per non-blank line; a line that is not JSON yields a `ValueError` as value."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                yield line_number, ValueError(f"not valid JSON: {error}")


def listing_kind(path: Path, kinds: dict[str, str]) -> str:
    """The kind of a listing file from its suffix (``kinds``: suffix -> kind)."""
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported listing suffix {path.suffix!r} (expected one of {sorted(kinds)})")
    return kind
