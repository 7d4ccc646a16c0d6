"""One-time conversion: Natural Earth 1:110m countries (shapefile in the geopandas==0.14.4 wheel) -> the vendored
``naturalearth_110m_countries.geojson`` next to this file. Not used at run time.

Recipe (reproducible: ``python -m vlm2geovec.data.build_naturalearth`` rewrites the same bytes):

1. obtain ``geopandas-0.14.4-py3-none-any.whl`` via :mod:`vlm2geovec.data.assets` (``pip download``, sha256-pinned)
   and read ``geopandas/datasets/naturalearth_lowres/naturalearth_lowres.{shp,dbf}`` (177 countries, polygon
   shapes, WGS84 lon/lat; DBF in ISO-8859-1 per the ``.cpg``) with the small reader below (plain ``struct``;
   checked once against pyshp 3.1.6, which gives identical rings and records);
2. keep the attributes ``name``, ``iso_a3``, ``continent``; group rings into polygons -- in a shapefile outer
   rings run clockwise and holes counter-clockwise; each hole goes to the smallest outer ring containing its
   first vertex (the only hole at this scale is Lesotho inside South Africa);
3. round coordinates to 3 decimals (~100 m, far below the 1:110m generalisation), drop consecutive
   duplicates, and write RFC 7946 GeoJSON: every geometry a MultiPolygon, outer rings counter-clockwise, holes
   clockwise, features in the shapefile's order.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

SHAPEFILE = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
OUTPUT = Path(__file__).resolve().parent / "naturalearth_110m_countries.geojson"


def read_dbf(data: bytes, encoding: str = "latin-1") -> list[dict[str, str]]:
    """Records of a dBASE III table as ``{field: stripped text}``."""
    count, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields, offset = [], 32
    while data[offset] != 0x0D:
        name = data[offset : offset + 11].split(b"\0", 1)[0].decode("ascii")
        fields.append((name, data[offset + 16]))
        offset += 32
    records = []
    for k in range(count):
        pos = header_len + k * record_len + 1  # skip the deletion flag
        record = {}
        for name, length in fields:
            record[name] = data[pos : pos + length].decode(encoding).strip()
            pos += length
        records.append(record)
    return records


def read_polygons(data: bytes) -> list[list[list[tuple[float, float]]]]:
    """Rings (lists of (x, y)) of each record of a polygon (type 5) shapefile."""
    shapes, pos = [], 100
    while pos < len(data):
        _, words = struct.unpack(">ii", data[pos : pos + 8])
        content = data[pos + 8 : pos + 8 + 2 * words]
        pos += 8 + 2 * words
        (shape_type,) = struct.unpack("<i", content[:4])
        if shape_type != 5:
            raise ValueError(f"expected polygon shapes, got type {shape_type}")
        n_parts, n_points = struct.unpack("<ii", content[36:44])
        parts = list(struct.unpack(f"<{n_parts}i", content[44 : 44 + 4 * n_parts])) + [n_points]
        xy = struct.unpack(f"<{2 * n_points}d", content[44 + 4 * n_parts : 44 + 4 * n_parts + 16 * n_points])
        points = list(zip(xy[0::2], xy[1::2]))
        shapes.append([points[parts[i] : parts[i + 1]] for i in range(n_parts)])
    return shapes


def _signed_area(ring) -> float:
    return sum(ring[i][0] * ring[i + 1][1] - ring[i + 1][0] * ring[i][1] for i in range(len(ring) - 1)) / 2


def _inside(x: float, y: float, ring) -> bool:
    inside = False
    for (xa, ya), (xb, yb) in zip(ring[:-1], ring[1:]):
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def _rounded(ring) -> list[list[float]]:
    out: list[list[float]] = []
    for x, y in ring:
        point = [round(x, 3), round(y, 3)]
        if not out or out[-1] != point:
            out.append(point)
    if out[0] != out[-1]:
        out.append(out[0])
    return out


def build_geojson(shp: bytes, dbf: bytes) -> str:
    features = []
    for rings, record in zip(read_polygons(shp), read_dbf(dbf)):
        outers = [r for r in rings if _signed_area(r) < 0]
        holes = [r for r in rings if _signed_area(r) >= 0]
        polygons = [[outer] for outer in outers]
        for hole in holes:
            owners = [k for k, outer in enumerate(outers) if _inside(*hole[0], outer)]
            if not owners:
                raise ValueError(f"hole of {record['name']} lies in no outer ring")
            polygons[min(owners, key=lambda k: abs(_signed_area(outers[k])))].append(hole)
        coordinates = [
            [_rounded(ring[::-1]) for ring in polygon]
            for polygon in polygons
        ]
        features.append({
            "type": "Feature",
            "properties": {"name": record["name"], "iso_a3": record["iso_a3"], "continent": record["continent"]},
            "geometry": {"type": "MultiPolygon", "coordinates": coordinates},
        })
    collection = {
        "type": "FeatureCollection",
        "name": "naturalearth_110m_countries",
        "source": "Natural Earth 1:110m Admin 0 Countries (public domain), from geopandas==0.14.4 "
        "naturalearth_lowres; coordinates rounded to 3 decimals",
        "features": features,
    }
    return json.dumps(collection, ensure_ascii=False, separators=(",", ":")) + "\n"


def build_from_wheel() -> str:
    from vlm2geovec.data.assets import GEOPANDAS, _archive

    with zipfile.ZipFile(_archive(GEOPANDAS)) as zf:
        return build_geojson(zf.read(SHAPEFILE + ".shp"), zf.read(SHAPEFILE + ".dbf"))


if __name__ == "__main__":
    OUTPUT.write_text(build_from_wheel(), encoding="utf-8")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
