"""Composed-retrieval triplets (PatternCom style): reference image + modification text -> target image.

A CSV with the header ``reference,text,target`` (extra columns allowed; an optional ``split`` column with
``train``/``val``/``test``) or a JSON Lines file with the same keys. Image paths are relative to
``image_root`` (default: the listing's folder) unless absolute.

Rows are data lines (numbered as lines of the file, the CSV header being line 1). Problems: a missing or
unreadable reference or target image, an empty modification text, a missing field, an unknown split, a JSONL
line that is not a JSON object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rsmeb_eval.formats.images import ImageChecker, resolve
from rsmeb_eval.formats.listing import listing_kind, read_csv, read_jsonl
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError

LISTING_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ComposedTriplet:
    """One triplet; ``reference``/``target`` are the paths as written (POSIX), stable keys for the images."""

    line: int
    reference: str
    reference_path: Path
    text: str
    target: str
    target_path: Path
    split: str | None = None


def _text_value(row: dict, name: str) -> str:
    value = row.get(name)
    if value is None:
        raise RowError(f"missing {name!r}")
    if not isinstance(value, str):
        raise RowError(f"{name!r} is not a string: {value!r}")
    return value.strip()


def parse_split_value(row: dict) -> str | None:
    """The optional ``split`` field of a listing row: None when absent or empty."""
    value = row.get("split")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if value not in LISTING_SPLITS:
        raise RowError(f"unknown split {value!r} (expected one of {list(LISTING_SPLITS)})")
    return value


def parse_composed(
    listing: str | Path,
    *,
    image_root: str | Path | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> tuple[list[ComposedTriplet], ParseReport]:
    """Read a ``.csv`` or ``.jsonl`` triplet listing; triplets in file order.

    Args:
        listing: the listing file.
        image_root (*optional*): what image paths are relative to (default: the listing's folder).
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.

    Returns:
        ``(triplets, report)``.
    """
    listing = Path(listing)
    kind = listing_kind(listing, {".csv": "csv", ".jsonl": "jsonl"})
    root = listing.parent if image_root is None else Path(image_root)
    rows = read_csv(listing, ("reference", "text", "target")) if kind == "csv" else read_jsonl(listing)
    collector = Collector(on_error, f"composed triplets {listing}")
    check = ImageChecker(decode=check_images)
    records: list[ComposedTriplet] = []
    for line, row in rows:
        with collector.row(listing, line):
            if isinstance(row, ValueError):
                raise RowError(str(row))
            if not isinstance(row, dict):
                raise RowError("not a JSON object")
            reference, target = _text_value(row, "reference"), _text_value(row, "target")
            text = _text_value(row, "text")
            if not reference or not target:
                raise RowError("empty image path")
            if not text:
                raise RowError("empty modification text")
            split = parse_split_value(row)
            reference_key, target_key = reference.replace("\\", "/"), target.replace("\\", "/")
            reference_path, target_path = resolve(root, reference), resolve(root, target)
            for path in (reference_path, target_path):
                check(path)
            records.append(ComposedTriplet(line, reference_key, reference_path, text, target_key, target_path, split))
    return records, collector.finish()
