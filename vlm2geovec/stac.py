"""A STAC record of exported embeddings: `vlm2geovec index export INDEX --to out.parquet --stac DIR` (``pip install
'vlm2geovec[geoparquet]'``, which brings pystac and jsonschema).

    from vlm2geovec.stac import write_stac, validate_offline
    collection = write_stac("tiles.parquet", "stac/")        # Collection + one Item per source, validated

One Item per source of the vectors (a raster, a JSONL file ...): its geometry is the convex hull of its rows'
footprints (the GeoParquet ``geometry`` column), its ``embeddings`` asset is the GeoParquet file, and a raster
source is linked as a ``source`` asset. The Collection's spatial extent is the union of the Items' boxes, its
temporal extent their dates. A date is the raster's acquisition time (``TIFFTAG_DATETIME``) when it has one;
otherwise the time the embeddings were exported, and ``embeddings:datetime_source`` says which.

Embedding fields (Items: in ``properties``; the Collection: top level), under the extension identifier
`EXTENSION` whose JSON schema ships with this package (``vlm2geovec/schemas``): ``embeddings:model`` (name or
path), ``embeddings:model_fingerprint`` (sha256 over every weight), ``embeddings:instruction``,
``embeddings:dimensions``, ``embeddings:data_type`` (float32, int8, uint8), ``embeddings:quantization`` (type and
parameters, as in the GeoParquet file metadata), ``embeddings:metric``, ``embeddings:vector_column``,
``embeddings:count`` and, for raster tiles, ``embeddings:chip_layout`` (size, stride, bands, edge).

Validation is offline: `validate_offline` checks every object against pystac's bundled STAC 1.1.0 core and GeoJSON
schemas and this package's extension schema, and refuses to fetch any other schema from the network.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

EXTENSION = "urn:vlm2geovec:stac-extension:embeddings:v0.1.0"
SCHEMA_FILE = "stac-embeddings-v0.1.0.json"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def _pystac():
    try:
        import pystac
        import pystac.validation  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the STAC record needs pystac: pip install 'vlm2geovec[geoparquet]'") from error
    return pystac


def extension_schema() -> dict:
    return json.loads(resources.files("vlm2geovec").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8"))


def offline_validator():
    """A pystac JSON-schema validator that knows the bundled core schemas and our extension schema, and raises
    instead of downloading anything else."""
    pystac = _pystac()
    from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator

    class OfflineValidator(JsonSchemaSTACValidator):
        def _get_schema(self, schema_uri: str) -> dict:
            if schema_uri not in self.schema_cache:
                raise GetSchemaError(schema_uri, LookupError(f"schema {schema_uri} is not bundled (offline validation)"))
            return self.schema_cache[schema_uri]

    validator = OfflineValidator()
    validator.schema_cache[EXTENSION] = extension_schema()
    del pystac
    return validator


def validate_offline(stac_object) -> None:
    """Validate a pystac object (and, for a Collection, every Item in it) offline; a failure is a ValueError
    naming the object and the first schema error."""
    pystac = _pystac()
    validator = offline_validator()
    objects = [stac_object]
    if isinstance(stac_object, pystac.Collection):
        objects += list(stac_object.get_items(recursive=True))
    for obj in objects:
        try:
            obj.validate(validator=validator)
        except pystac.errors.STACValidationError as error:
            detail = getattr(error, "source", None)  # jsonschema errors: the field and what is wrong with it
            if isinstance(detail, list) and detail:
                import jsonschema

                detail = jsonschema.exceptions.best_match(detail)
            reason = getattr(detail, "message", None) or str(error).splitlines()[0]
            where = "/".join(str(part) for part in getattr(detail, "absolute_path", ()))
            raise ValueError(f"STAC {type(obj).__name__} {obj.id!r} does not validate: "
                             f"{where + ': ' if where else ''}{reason}") from None


def _raster_datetime(path: str) -> dt.datetime | None:
    """A raster's acquisition time from its TIFFTAG_DATETIME (``YYYY:MM:DD HH:MM:SS``), or None."""
    try:
        import rasterio

        with rasterio.open(path) as dataset:
            stamp = dataset.tags().get("TIFFTAG_DATETIME")
    except Exception:  # noqa: BLE001 - no readable raster, no date: the export time is used instead
        return None
    try:
        return dt.datetime.strptime(stamp.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    except (AttributeError, ValueError):
        return None


def _item_id(source: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem or "vectors").strip("-") or "vectors"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def embedding_fields(record: dict) -> dict:
    """The ``embeddings:*`` fields of a GeoParquet file's ``vlm2geovec`` record."""
    source = record.get("source") or {}
    fields = {
        "embeddings:model": record.get("model"),
        "embeddings:model_fingerprint": record.get("model_fingerprint"),
        "embeddings:instruction": record.get("instruction"),
        "embeddings:dimensions": record["dimensions"],
        "embeddings:data_type": record["data_type"],
        "embeddings:quantization": record["quantization"],
        "embeddings:metric": record.get("metric"),
        "embeddings:vector_column": record.get("vector_column"),
    }
    if source.get("type") == "raster":
        fields["embeddings:chip_layout"] = {"size": source["size"], "stride": source["stride"],
                                            "bands": source.get("bands"), "edge": source.get("edge")}
    return fields


def write_stac(geoparquet: str | os.PathLike, out: str | os.PathLike, *, collection_id: str | None = None,
               description: str | None = None):
    """Write a STAC Collection with one Item per source of `geoparquet` (a file `export_geoparquet` wrote) into the
    folder `out` (self-contained: relative links, the asset href relative to each Item), validate it offline, and
    return the `pystac.Collection`."""
    import pyarrow.parquet as pq
    import shapely

    pystac = _pystac()
    from vlm2geovec.geoparquet import file_record

    geoparquet = Path(geoparquet).resolve()
    record = file_record(geoparquet)
    if record is None:
        raise ValueError(f"{geoparquet}: no 'vlm2geovec' file metadata: write it with `vlm2geovec index export`")
    if not record.get("model_fingerprint"):
        raise ValueError(f"{geoparquet}: records no model weights fingerprint; the STAC record needs one")
    table = pq.read_table(geoparquet, columns=["source", "geometry"])
    sources = table.column("source").to_pylist()
    geometries = shapely.from_wkb(np.array(table.column("geometry").to_pylist(), dtype=object))
    exported = dt.datetime.fromtimestamp(geoparquet.stat().st_mtime, tz=dt.timezone.utc).replace(microsecond=0)
    fields = embedding_fields(record)

    by_source: dict[str, list[int]] = {}
    for row, source in enumerate(sources):
        by_source.setdefault(source or "", []).append(row)
    items, taken = [], set()
    for source, rows in by_source.items():
        shapes = [g for g in geometries[rows] if g is not None]
        if not shapes:
            raise ValueError(f"{geoparquet}: the {len(rows)} rows of source {source or '(none)'!r} have no geometry "
                             "(no raster window, no lat/lon): STAC Items need a footprint")
        hull = shapely.MultiPoint(shapely.get_coordinates(shapes)).convex_hull
        acquired = _raster_datetime(source) if source else None
        properties = {**fields, "embeddings:count": len(rows),
                      "embeddings:datetime_source": "acquisition" if acquired else "processing"}
        item = pystac.Item(id=_item_id(source, taken), geometry=shapely.geometry.mapping(hull),
                           bbox=list(hull.bounds), datetime=acquired or exported, properties=properties,
                           stac_extensions=[EXTENSION])
        item.add_asset("embeddings", pystac.Asset(href=str(geoparquet), media_type=PARQUET_MEDIA_TYPE,
                                                  roles=["data", "embeddings"],
                                                  title=f"{fields['embeddings:dimensions']}-d embeddings (GeoParquet)"))
        if source and os.path.isfile(source):
            item.add_asset("source", pystac.Asset(href=os.path.abspath(source), roles=["source"],
                                                  title="the imagery the embeddings were computed from"))
        items.append(item)

    boxes = np.array([item.bbox for item in items])
    dates = sorted(item.datetime for item in items)
    extent = pystac.Extent(
        pystac.SpatialExtent([[float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                               float(boxes[:, 3].max())]]),
        pystac.TemporalExtent([[dates[0], dates[-1]]]))
    collection = pystac.Collection(
        id=collection_id or _item_id(geoparquet.name, set()), extent=extent, license="other",
        description=description or (f"{record.get('count', len(sources))} embeddings by {fields['embeddings:model']} "
                                    f"({fields['embeddings:dimensions']}-d, {fields['embeddings:data_type']})"),
        stac_extensions=[EXTENSION], extra_fields=fields)
    collection.add_items(items)
    out = Path(out).resolve()
    collection.normalize_hrefs(str(out))
    collection.make_all_asset_hrefs_relative()
    validate_offline(collection)
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return collection
