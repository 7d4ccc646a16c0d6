"""Geo-tagged image tiles: a CSV ``image,lat,lon[,caption][,split]`` or a GeoJSON FeatureCollection.

GeoJSON features are ``{"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
"properties": {"image": ..., "caption": ..., "split": ...}}``; note the GeoJSON order, longitude first
(RFC 7946). Image paths are relative to ``image_root`` (default: the listing's folder) unless absolute.

Rows are CSV data lines (the header is line 1) or ``features[i]``. Problems: latitude outside [-90, 90],
longitude outside [-180, 180], a coordinate that is NaN, infinite or not a number, a geometry that is not a
Point, a missing or unreadable image, an image listed twice, an unknown split.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsmeb_eval.formats.composed import parse_split_value
from rsmeb_eval.formats.images import ImageChecker, resolve
from rsmeb_eval.formats.listing import listing_kind, read_csv
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError


@dataclass(frozen=True)
class GeoTile:
    """One tile; ``image`` is the path as written (POSIX), unique in the listing: a stable key."""

    row: int | str
    image: str
    path: Path
    lat: float
    lon: float
    caption: str | None = None
    split: str | None = None


def coordinate(value: Any, name: str, limit: float) -> float:
    """A latitude (``limit=90``) or longitude (``limit=180``) as a float, or `RowError`."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"{name} is missing")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RowError(f"{name} is not a number: {value!r}") from None
    if math.isnan(number):
        raise RowError(f"{name} is NaN")
    if not -limit <= number <= limit:
        raise RowError(f"{name} {number} outside [-{limit:g}, {limit:g}]")
    return number


def _geojson_rows(path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    features = data.get("features") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(features, list):
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection")
    return [(f"features[{i}]", feature) for i, feature in enumerate(data["features"])]


def _from_feature(feature: Any) -> dict[str, Any]:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise RowError("not a GeoJSON Feature")
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        kind = geometry.get("type") if isinstance(geometry, dict) else geometry
        raise RowError(f"geometry is not a Point: {kind!r}")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise RowError(f"Point coordinates must be [lon, lat]: {coordinates!r}")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise RowError("properties is not an object")
    return {**properties, "lon": coordinates[0], "lat": coordinates[1]}


def parse_geo_tiles(
    listing: str | Path,
    *,
    image_root: str | Path | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> tuple[list[GeoTile], ParseReport]:
    """Read a ``.csv`` or ``.geojson`` tile listing; tiles in file order.

    Args:
        listing: the listing file (``.geojson`` or ``.json`` holding a FeatureCollection, or ``.csv``).
        image_root (*optional*): what image paths are relative to (default: the listing's folder).
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.

    Returns:
        ``(tiles, report)``.
    """
    listing = Path(listing)
    kind = listing_kind(listing, {".csv": "csv", ".geojson": "geojson", ".json": "geojson"})
    root = listing.parent if image_root is None else Path(image_root)
    rows = read_csv(listing, ("image", "lat", "lon")) if kind == "csv" else _geojson_rows(listing)
    collector = Collector(on_error, f"geo tiles {listing}")
    check = ImageChecker(decode=check_images)
    first_row: dict[str, int | str] = {}
    records: list[GeoTile] = []
    for row_id, row in rows:
        with collector.row(listing, row_id):
            values = _from_feature(row) if kind == "geojson" else row
            image = values.get("image")
            if not isinstance(image, str) or not image.strip():
                raise RowError("missing 'image'")
            key = image.strip().replace("\\", "/")
            lat = coordinate(values.get("lat"), "latitude", 90.0)
            lon = coordinate(values.get("lon"), "longitude", 180.0)
            caption = values.get("caption")
            caption = (caption.strip() or None) if isinstance(caption, str) else None
            split = parse_split_value(values)
            if key in first_row:
                raise RowError(f"image {key!r} listed twice (first at row {first_row[key]})")
            path = resolve(root, key)
            check(path)
            first_row[key] = row_id
            records.append(GeoTile(row_id, key, path, lat, lon, caption, split))
    return records, collector.finish()
