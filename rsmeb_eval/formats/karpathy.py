"""Karpathy-style caption JSON, as distributed for RSICD, RSITMD and UCM-Captions.

``{"images": [{"filename": "airport_1.jpg", "imgid": 0, "split": "train", "sentences": [{"raw": "...",
"tokens": [...], "sentid": 0, ...}, ...], ...}, ...], "dataset": "rsicd"}`` next to an image folder
(``RSICD_images/``, ``images/``, ``imgs/``...). An optional ``filepath`` field is honoured (COCO style).

Rows are ``images[i]`` entries (and ``images[i].sentences[j]`` for a single caption). Problems: a missing or
unreadable image file, an entry without a usable caption, an unknown split, a duplicate file name, an empty
caption (only that caption is left out).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsmeb_eval.formats.images import image_size, resolve
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError

KARPATHY_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Caption:
    """One caption: ``index`` in its entry's ``sentences`` list, ``text`` (``raw``, stripped; the joined
    ``tokens`` when ``raw`` is missing), and the source's ``sentid`` when present."""

    index: int
    text: str
    sentid: int | str | None = None


@dataclass(frozen=True)
class CaptionedImage:
    """One ``images[i]`` entry. ``filename`` is unique within a file: use it as the image id."""

    filename: str
    path: Path
    split: str
    imgid: int | str | None
    captions: tuple[Caption, ...]
    width: int
    height: int


def _caption(sentence: Any, index: int) -> Caption:
    if not isinstance(sentence, dict):
        raise RowError("a sentence is not an object")
    raw = sentence.get("raw")
    text = raw.strip() if isinstance(raw, str) else ""
    if not text and isinstance(sentence.get("tokens"), list):
        text = " ".join(str(token) for token in sentence["tokens"]).strip()
    if not text:
        raise RowError("empty caption (no 'raw' text and no 'tokens')")
    return Caption(index, text, sentence.get("sentid"))


def parse_karpathy(
    json_path: str | Path,
    image_dir: str | Path,
    *,
    splits: Sequence[str] = KARPATHY_SPLITS,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> tuple[list[CaptionedImage], ParseReport]:
    """Read a Karpathy caption file; entries in file order.

    Args:
        json_path: the caption JSON (``dataset_rsicd.json``...).
        image_dir: the folder the ``filename`` fields are relative to.
        splits: the accepted ``split`` values (defaults to train/val/test); others are problems.
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.

    Returns:
        ``(images, report)``.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}: not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{json_path}: expected an object with an 'images' list")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    collector = Collector(on_error, f"Karpathy captions {json_path}")
    records: list[CaptionedImage] = []
    first_row: dict[str, int] = {}
    for i, entry in enumerate(data["images"]):
        row = f"images[{i}]"
        with collector.row(json_path, row):
            if not isinstance(entry, dict):
                raise RowError("entry is not an object")
            filename = entry.get("filename")
            if not isinstance(filename, str) or not filename.strip():
                raise RowError("no 'filename'")
            if filename in first_row:
                raise RowError(f"duplicate filename {filename!r} (first at images[{first_row[filename]}])")
            first_row[filename] = i
            split = entry.get("split")
            if split not in splits:
                raise RowError(f"unknown split {split!r} (expected one of {list(splits)})")
            sentences = entry.get("sentences")
            if not isinstance(sentences, list) or not sentences:
                raise RowError("no sentences")
            captions = []
            for j, sentence in enumerate(sentences):
                with collector.row(json_path, f"{row}.sentences[{j}]"):
                    captions.append(_caption(sentence, j))
            if not captions:
                raise RowError("no usable sentences")
            folder = image_dir / entry["filepath"] if isinstance(entry.get("filepath"), str) else image_dir
            path = resolve(folder, filename)
            width, height = image_size(path, decode=check_images)
            records.append(CaptionedImage(filename, path, split, entry.get("imgid"), tuple(captions), width, height))
    return records, collector.finish()
