"""GeoParquet 1.1 for embeddings: `vlm2geovec index export INDEX --to out.parquet` and back (``index build --input
out.parquet``). Needs ``pip install 'vlm2geovec[geoparquet]'`` (shapely, pyproj; geopandas to read it as a frame).

    from vlm2geovec.geoparquet import export_geoparquet, read_geoparquet
    export_geoparquet(VectorIndex.load("out/index"), "tiles.parquet", quantize="int8")
    geopandas.read_parquet("tiles.parquet")          # GeoDataFrame, CRS EPSG:4326, footprint polygons

One row per vector, in index order:

* ``geometry`` (WKB, EPSG:4326, longitude/latitude): the tile's **footprint polygon** when the row has a raster
  ``window`` and its raster can be opened — the window's four corners mapped by the raster's transform and CRS
  (`GeoTiffTiler.pixel_to_lonlat`, the tiler's own coordinates), ring upper-left, lower-left, lower-right,
  upper-right; a **point** where only ``lat``/``lon`` are known; null otherwise. ``bbox`` (xmin, ymin, xmax,
  ymax) is the GeoParquet 1.1 covering column, so readers can filter by area without decoding geometries.
* ``row`` (the index id), ``id``, ``source``, ``window``, ``lat``, ``lon``: the metadata columns; ``metadata``: each
  row's full metadata as JSON (exact types, extra keys), which is what reading the file back uses.
* ``embedding``: the vector as a fixed-size list — float32, or quantized: ``int8`` (``round(v * scale)``, one
  scale for the file, clipped to ±127; ``v ≈ q / scale``) or ``binary`` (sign bits ``v > 0`` packed 8 per uint8,
  first dimension in the highest bit, as `numpy.packbits`; compare with Hamming distance).

File metadata: ``geo`` (the GeoParquet 1.1 record: version, primary column, encoding, geometry types, CRS as
PROJJSON, bbox, covering) and ``vlm2geovec`` (JSON: dimensions, data type, quantization and its parameters,
model name and weights fingerprint, instruction, processor settings, source, metric), so a reader needs nothing
from this package.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

QUANTIZATIONS = ("int8", "binary")
VECTOR_COLUMN = "embedding"
GEOPARQUET_VERSION = "1.1.0"
FILE_KEY = b"vlm2geovec"
FORMAT_VERSION = 1
INT8_LIMIT = 127  # symmetric: -127..127, so 0 stays 0 and the scale is one number


def _geo_libraries():
    try:
        import pyproj
        import shapely
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("GeoParquet export needs shapely and pyproj: pip install 'vlm2geovec[geoparquet]' (or "
                          "export plain Parquet with --format parquet)") from error
    return shapely, pyproj


# --------------------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------------------

def quantize_vectors(vectors: np.ndarray, kind: str | None) -> tuple[np.ndarray, dict]:
    """(stored array, quantization record) for float32 `vectors` (n, d): None keeps float32; ``int8`` scales by
    ``127 / max|v|``; ``binary`` keeps the sign bits, packed."""
    vectors = np.asarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if kind is None:
        return vectors, {"type": "none", "data_type": "float32", "dimensions": dim}
    if kind == "int8":
        peak = float(np.abs(vectors).max()) if vectors.size else 1.0
        scale = INT8_LIMIT / peak if peak > 0 else 1.0
        stored = np.clip(np.rint(vectors * scale), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
        return stored, {"type": "int8", "data_type": "int8", "dimensions": dim, "scale": scale,
                        "dequantize": "value / scale"}
    if kind == "binary":
        return np.packbits(vectors > 0, axis=1), {
            "type": "binary", "data_type": "uint8", "dimensions": dim, "threshold": 0.0,
            "packing": "sign bits (value > 0) packed 8 per byte, first dimension in the highest bit (numpy.packbits)"}
    raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None; got {kind!r}")


def dequantize(stored: np.ndarray, record: dict) -> np.ndarray:
    """Float vectors from a stored array: exact for float32, ``q / scale`` for int8, ±1 per bit for binary."""
    kind = record.get("type")
    if kind == "none":
        return np.asarray(stored, dtype=np.float32)
    if kind == "int8":
        return np.asarray(stored, dtype=np.float32) / np.float32(record["scale"])
    if kind == "binary":
        bits = np.unpackbits(np.asarray(stored, dtype=np.uint8), axis=1)[:, : record["dimensions"]]
        return bits.astype(np.float32) * 2 - 1
    raise ValueError(f"unknown quantization type {kind!r}")


# --------------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------------

def _raster_corners(path: str, windows: list[Sequence[float]]) -> list[list[tuple[float, float]]]:
    """WGS84 (lon, lat) of each window's corners (upper-left, lower-left, lower-right, upper-right), from the
    tiler's own pixel-to-WGS84 mapping."""
    from vlm2geovec.geotiff import GeoTiffTiler

    # size 1, one band and a fixed scale: only the raster's transform and CRS are used, no pixels are read
    with GeoTiffTiler(path, size=1, bands=(1,), scale=(0.0, 1.0)) as tiler:
        xs, ys = [], []
        for x0, y0, x1, y1 in windows:
            xs += [x0, x0, x1, x1]
            ys += [y0, y1, y1, y0]
        lons, lats = tiler.pixel_to_lonlat(xs, ys)
    return [list(zip(lons[i : i + 4], lats[i : i + 4])) for i in range(0, len(lons), 4)]


def footprints(metadata: Sequence[dict], warn=None) -> list:
    """One shapely geometry (or None) per metadata row: the window's footprint polygon when its ``source`` raster
    opens, else the ``lat``/``lon`` point. A raster that cannot be opened (moved, deleted) is named once through
    `warn` and its rows fall back to points."""
    shapely, _ = _geo_libraries()
    from shapely.geometry import Point, Polygon

    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    geometries: list = [None] * len(metadata)
    by_raster: dict[str, list[int]] = {}
    for row, meta in enumerate(metadata):
        if meta.get("window") is not None and isinstance(meta.get("source"), str):
            by_raster.setdefault(meta["source"], []).append(row)
    for path, rows in by_raster.items():
        try:
            corners = _raster_corners(path, [metadata[row]["window"] for row in rows])
        except (OSError, ValueError) as error:
            warn(f"{path}: cannot open the raster of {len(rows)} tiles ({error}); their geometry is the centre point")
            continue
        for row, ring in zip(rows, corners):
            geometries[row] = Polygon(ring)
    for row, meta in enumerate(metadata):
        if geometries[row] is None and meta.get("lat") is not None and meta.get("lon") is not None:
            geometries[row] = Point(float(meta["lon"]), float(meta["lat"]))
    return geometries


def _geo_metadata(geometries: list) -> dict:
    shapely, pyproj = _geo_libraries()
    present = [g for g in geometries if g is not None]
    types = sorted({g.geom_type for g in present})
    bounds = shapely.total_bounds(np.array(present, dtype=object)).tolist() if present else []
    column = {"encoding": "WKB", "geometry_types": types, "crs": pyproj.CRS("EPSG:4326").to_json_dict(),
              "covering": {"bbox": {key: ["bbox", key] for key in ("xmin", "ymin", "xmax", "ymax")}}}
    if bounds and all(math.isfinite(b) for b in bounds):
        column["bbox"] = bounds
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}


# --------------------------------------------------------------------------------------------------------------
# Writing and reading
# --------------------------------------------------------------------------------------------------------------

def export_geoparquet(index, path: str | os.PathLike, *, quantize: str | None = None, batch_rows: int = 65_536,
                      warn=None) -> Path:
    """Write `index` (a `VectorIndex`) as GeoParquet 1.1 (see the module docstring); return the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shapely, _ = _geo_libraries()
    stored, quantization = quantize_vectors(index.vectors(), quantize)
    geometries = footprints(index.metadata, warn)
    width = stored.shape[1]
    vector_type = {"none": pa.float32(), "int8": pa.int8(), "binary": pa.uint8()}[quantization["type"]]
    bbox_type = pa.struct([(key, pa.float64()) for key in ("xmin", "ymin", "xmax", "ymax")])
    info = index.build_info or {}
    record = {"format_version": FORMAT_VERSION, "vector_column": VECTOR_COLUMN, "dimensions": index.dim,
              "count": len(index), "data_type": quantization["data_type"], "quantization": quantization,
              "metric": "cosine (unit-normalised vectors: inner product)", "model": info.get("model"),
              "model_fingerprint": index.fingerprint, "instruction": info.get("instruction"),
              "preprocessing": info.get("preprocessing"), "source": info.get("source"), "build": info}
    schema = pa.schema([
        ("row", pa.int64()), ("id", pa.string()), ("source", pa.string()), ("window", pa.list_(pa.float64(), 4)),
        ("lat", pa.float64()), ("lon", pa.float64()), ("metadata", pa.string()),
        (VECTOR_COLUMN, pa.list_(vector_type, width)), ("geometry", pa.binary()), ("bbox", bbox_type),
    ], metadata={b"geo": json.dumps(_geo_metadata(geometries)).encode(),
                 FILE_KEY: json.dumps(record, ensure_ascii=False).encode()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(index), batch_rows):
            metas = index.metadata[start : start + batch_rows]
            geoms = geometries[start : start + len(metas)]
            block = np.ascontiguousarray(stored[start : start + len(metas)])
            bounds = [None if g is None else dict(zip(("xmin", "ymin", "xmax", "ymax"), g.bounds)) for g in geoms]
            columns = {
                "row": pa.array(range(start, start + len(metas)), pa.int64()),
                "id": [None if m.get("id") is None else str(m["id"]) for m in metas],
                "source": [m.get("source") for m in metas],
                "window": [m.get("window") for m in metas],
                "lat": [m.get("lat") for m in metas],
                "lon": [m.get("lon") for m in metas],
                "metadata": [json.dumps(m, ensure_ascii=False) for m in metas],
                VECTOR_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), vector_type), width),
                "geometry": [None if g is None else shapely.to_wkb(g) for g in geoms],
                "bbox": pa.array(bounds, bbox_type),
            }
            writer.write_table(pa.table(columns, schema=schema))
    return path


def file_record(path: str | os.PathLike) -> dict | None:
    """The ``vlm2geovec`` file metadata of a parquet file, or None when it has none (not an export of ours).
    An unreadable file, or a record that is not a JSON object, is a ValueError naming the file."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for truncated or foreign files
        raise ValueError(f"{path}: not a readable parquet file ({str(error).strip()[:200]})") from None
    if FILE_KEY not in metadata:
        return None
    try:
        record = json.loads(metadata[FILE_KEY])
    except ValueError as error:
        raise ValueError(f"{path}: its 'vlm2geovec' file metadata is not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: its 'vlm2geovec' file metadata must be a JSON object; got {type(record).__name__}")
    return record


def read_geoparquet(path: str | os.PathLike) -> tuple[np.ndarray, list[dict], dict]:
    """(vectors as stored, metadata per row, the ``vlm2geovec`` record) of a file `export_geoparquet` wrote.
    Every inconsistency (missing column, other width or type than the record says, row counts, metadata that is
    not JSON) is a ValueError naming the file and the column or row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    record = file_record(path)
    if record is None:
        raise ValueError(f"{path}: no 'vlm2geovec' file metadata: not a file written by `vlm2geovec index export`")
    quantization = record.get("quantization")
    dim = record.get("dimensions")
    if not isinstance(quantization, dict) or quantization.get("type") not in ("none", *QUANTIZATIONS):
        raise ValueError(f"{path}: file metadata field 'quantization' must name none, int8 or binary; got "
                         f"{quantization!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"{path}: file metadata field 'dimensions' must be a positive integer; got {dim!r}")
    if quantization["type"] == "int8" and not (isinstance(quantization.get("scale"), (int, float))
                                               and quantization["scale"] > 0):
        raise ValueError(f"{path}: an int8 file needs a positive 'scale' in its quantization record; got "
                         f"{quantization.get('scale')!r}")
    try:
        table = pq.read_table(path, columns=[VECTOR_COLUMN, "metadata"])
    except Exception as error:  # a missing column or a damaged page
        raise ValueError(f"{path}: cannot read columns {VECTOR_COLUMN!r} and 'metadata' "
                         f"({str(error).strip().splitlines()[0][:200]})") from None
    column_type = table.schema.field(VECTOR_COLUMN).type
    width = dim if quantization["type"] != "binary" else (dim + 7) // 8
    want = {"none": pa.float32(), "int8": pa.int8(), "binary": pa.uint8()}[quantization["type"]]
    if not pa.types.is_fixed_size_list(column_type) or column_type.list_size != width or column_type.value_type != want:
        raise ValueError(f"{path}: column {VECTOR_COLUMN!r} is {column_type}, but the file metadata says "
                         f"{quantization['type']} vectors of {dim} dimensions (fixed_size_list<{want}>[{width}])")
    vectors_column = table.column(VECTOR_COLUMN).combine_chunks()
    if vectors_column.null_count:
        raise ValueError(f"{path}: column {VECTOR_COLUMN!r} has {vectors_column.null_count} empty rows")
    stored = vectors_column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), width)
    metadata = []
    for row, text in enumerate(table.column("metadata").to_pylist()):
        try:
            entry = json.loads(text) if text is not None else None
        except ValueError as error:
            raise ValueError(f"{path}: row {row}: column 'metadata' is not valid JSON ({error})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: row {row}: column 'metadata' must hold a JSON object; got {text!r}")
        metadata.append(entry)
    if isinstance(record.get("count"), int) and record["count"] != len(table):
        raise ValueError(f"{path}: {len(table)} rows, but the file metadata says {record['count']}")
    return stored, metadata, record


def index_from_geoparquet(path: str | os.PathLike, *, model_name: str | None = None, kind: str = "auto",
                          **params):
    """A `VectorIndex` of an exported file's vectors and metadata (its build record kept; ``build.model`` set to
    `model_name` when given). float32 files give back the exported index exactly; int8 files give the dequantized,
    re-normalised vectors; binary files are refused (sign bits are no cosine vectors)."""
    from vlm2geovec.index import VectorIndex

    stored, metadata, record = read_geoparquet(path)
    quantization = record["quantization"]
    if quantization["type"] == "binary":
        raise ValueError(f"{path} holds binary (sign-bit) vectors, which cannot be indexed for cosine search: "
                         "export the index without --quantize (or with --quantize int8)")
    vectors = dequantize(stored, quantization)
    if not np.isfinite(vectors).all():
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        raise ValueError(f"{path}: column {VECTOR_COLUMN!r} holds NaN or infinite values (rows {bad[:10].tolist()})")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if quantization["type"] == "int8":
        vectors = vectors / np.where(norms == 0, 1, norms)
    build = dict(record.get("build") or {})
    if model_name is not None:
        build["model"] = model_name
    return VectorIndex.build(vectors, metadata, kind=kind, fingerprint=record.get("model_fingerprint"),
                             build_info=build, **params)


def parse_quantize(value: str | None) -> str | None:
    """``--quantize`` -> None, ``int8`` or ``binary`` (``none``/``float32`` mean no quantization)."""
    if value is None or value.lower() in ("none", "float32"):
        return None
    if value.lower() not in QUANTIZATIONS:
        raise ValueError(f"--quantize must be int8, binary or none; got {value!r}")
    return value.lower()


__all__ = ["export_geoparquet", "read_geoparquet", "index_from_geoparquet", "file_record", "footprints", "quantize_vectors",
           "dequantize", "parse_quantize", "QUANTIZATIONS", "VECTOR_COLUMN"]
