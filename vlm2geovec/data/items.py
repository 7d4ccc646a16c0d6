"""The stored item layout: one row holds an item as plain columns ``image`` (encoded bytes), ``text``, ``bbox``
(pixel ``[x1, y1, x2, y2]`` boxes on that row's image), ``lat``/``lon``; never placeholder tokens or instructions
(only the model's processor renders markup). Corpora (`vlm2geovec.corpus`) and the RSMEB benchmark
(`rsmeb_eval.schema`, which adds its query/corpus configs on top) store and read items this way."""

from __future__ import annotations

from typing import Any

__all__ = ["ITEM_COLUMNS", "empty_item", "item_features", "item_modalities", "row_to_item"]

ITEM_COLUMNS = ("image", "text", "bbox", "lat", "lon")


def item_features() -> dict[str, Any]:
    """The HF `datasets` features of the item columns (explicit, so a nested image keeps its `Image` type)."""
    from datasets import Image, List, Value

    return {
        "image": Image(),
        "text": Value("string"),
        "bbox": List(List(Value("float32"), length=4)),
        "lat": Value("float64"),
        "lon": Value("float64"),
    }


def empty_item() -> dict[str, Any]:
    return {"image": None, "text": None, "bbox": None, "lat": None, "lon": None}


def row_to_item(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row -> a VLM2GeoVec item dict (image, text, bbox, coords), absent fields dropped."""
    item: dict[str, Any] = {}
    image = row.get("image")
    if image is not None:
        # `Image(decode=False)` rows hold {"bytes", "path"}: pass the encoded bytes on (the processor decodes).
        item["image"] = (image["bytes"] or image["path"]) if isinstance(image, dict) else image
    if row.get("bbox"):
        item["bbox"] = [list(box) for box in row["bbox"]]
    if row.get("lat") is not None or row.get("lon") is not None:
        item["coords"] = (row.get("lat"), row.get("lon"))
    if row.get("text") is not None:
        item["text"] = row["text"]
    return item


def item_modalities(row: dict[str, Any]) -> tuple[str, ...]:
    """Which modalities a stored row holds, in the order image, text, bbox, coords."""
    present = []
    if row.get("image") is not None:
        present.append("image")
    if row.get("text") is not None:
        present.append("text")
    if row.get("bbox"):
        present.append("bbox")
    if row.get("lat") is not None:
        present.append("coords")
    return tuple(present)
