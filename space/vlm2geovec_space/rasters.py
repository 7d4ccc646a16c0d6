"""The analyst's own raster: tiled by ``vlm2geovec.geotiff.GeoTiffTiler`` (size, stride, bands), checked against
the Space's caps, with each tile's footprint in WGS84. Embedding and caching are `gallery.embed_collection`'s."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .gallery import Tile
from .settings import InputError, RASTER_VERSION, TILE_SIZES
from .uploads import check_file_size

# The bundled real scenes (vlm2geovec.data.assets.scene_rasters), as offered in the UI.
BUNDLED = {
    "Sentinel-2, Virginia coast (10 m, bands R G B NIR)": "sentinel2",
    "Landsat-8, Gulf coast (30 m, bands R G B NIR)": "landsat8",
    "NEON OSBS_029, Florida (0.1 m RGB)": "neon_OSBS_029",
}
UPLOAD = "upload"


def bundled_path(choice: str) -> Path:
    from vlm2geovec.data.assets import scene_rasters

    if choice not in BUNDLED:
        raise InputError(f"Bundled raster: unknown {choice!r}; choose from {list(BUNDLED)} or upload a GeoTIFF.")
    return scene_rasters()[BUNDLED[choice]]


def parse_bands(value) -> tuple[int, ...] | None:
    """``""``/None: the tiler's default (the bands marked red/green/blue, else 1, 2, 3 or 1); ``"4,3,2"`` or ``[4, 3, 2]``: those bands (1-based)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.replace(" ", ",").split(",") if isinstance(value, str) else value
    try:
        bands = tuple(int(str(p).strip()) for p in parts if str(p).strip())
    except ValueError:
        raise InputError(f"Bands: expected band numbers such as '4,3,2' (1-based), got {value!r}.") from None
    if len(bands) not in (1, 3):
        raise InputError(f"Bands: give 1 (grey) or 3 (red, green, blue) band numbers, got {len(bands)}: {list(bands)}.")
    return bands


@dataclass(frozen=True)
class Tiling:
    size: int
    stride: int
    bands: tuple[int, ...] | None

    @classmethod
    def checked(cls, size, stride, bands) -> "Tiling":
        low, high = TILE_SIZES
        for value, what in ((size, "Tile size"), (stride, "Stride")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
                raise InputError(f"{what}: expected a whole number of pixels, got {value!r}.")
        size, stride = int(size), int(stride) if stride else int(size)
        if not low <= size <= high:
            raise InputError(f"Tile size: must lie in [{low}, {high}] pixels, got {size}.")
        if not size // 8 <= stride <= size:
            raise InputError(f"Stride: must lie in [{size // 8}, {size}] pixels for {size} px tiles, got {stride}.")
        return cls(size, stride, parse_bands(bands))


def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_tiler(path: str | os.PathLike, label: str, tiling: Tiling, uploaded: bool):
    """A `GeoTiffTiler` over the raster, refused with a message naming ``label`` when it is not a georeferenced
    raster, lacks the bands, or is above the caps (file size for uploads, pixels, tiles per request)."""
    from vlm2geovec.geotiff import GeoTiffTiler

    if uploaded:
        check_file_size(path, label)
    try:
        tiler = GeoTiffTiler(path, size=tiling.size, stride=tiling.stride, bands=tiling.bands)
    except (ValueError, FileNotFoundError) as error:
        message = str(error).replace(str(path), label)
        if "no CRS" in message or "no geotransform" in message or "not a raster" in message:
            message += ". Upload a GeoTIFF with a coordinate reference system and geotransform."
        raise InputError(f"Raster {message}" if message.startswith(label) else f"Raster {label}: {message}") from None
    pixels = tiler.width * tiler.height
    if pixels > settings.MAX_IMAGE_PIXELS:
        tiler.close()
        raise InputError(f"Raster {label}: {tiler.width}x{tiler.height} = {pixels:,} pixels is above the limit of "
                         f"{settings.MAX_IMAGE_PIXELS:,}; crop it first.")
    if len(tiler) > settings.MAX_RASTER_TILES:
        tiler.close()
        raise InputError(f"Raster {label}: {tiler.columns}x{tiler.rows} = {len(tiler):,} tiles of {tiling.size} px "
                         f"(stride {tiling.stride}) is above the limit of {settings.MAX_RASTER_TILES:,}; use larger "
                         "tiles or a larger stride.")
    return tiler


def raster_tiles(tiler, label: str) -> list[Tile]:
    """Every kept tile of the tiler (nodata tiles skipped, as the tiler decides) with its WGS84 footprint."""
    kept = list(tiler)
    xs, ys = [], []
    for t in kept:
        x0, y0, x1, y1 = t.window
        # upper-left, lower-left, lower-right, upper-right: counter-clockwise on a north-up raster (RFC 7946),
        # the corner order of vlm2geovec.geoparquet's footprints
        xs += [x0, x0, x1, x1, x0]
        ys += [y0, y1, y1, y0, y0]
    lons, lats = tiler.pixel_to_lonlat(xs, ys) if kept else ([], [])
    tiles = []
    for n, t in enumerate(kept):
        ring = tuple(zip(lons[5 * n:5 * n + 5], lats[5 * n:5 * n + 5], strict=True))
        tiles.append(Tile(f"x{t.window[0]}_y{t.window[1]}", label, t.image, t.lat, t.lon,
                          f"window {list(t.window)}, nodata {t.nodata_fraction:.0%}", t.window, ring))
    return tiles


def raster_key(digest: str, tiling: Tiling) -> str:
    """Content key of a tiled raster: its bytes, the tiling and how tiles are embedded."""
    from vlm2geovec import INPUT_FORMAT_VERSION

    recipe = json.dumps([RASTER_VERSION, INPUT_FORMAT_VERSION, settings.INSTRUCTIONS["gallery"], digest,
                         tiling.size, tiling.stride, tiling.bands])
    return hashlib.sha256(recipe.encode()).hexdigest()


def describe_raster(path: str | os.PathLike, tiler) -> dict:
    """Grid, CRS and geotransform of the raster (what co-registration compares)."""
    import rasterio

    with rasterio.open(path) as ds:
        return {"width": tiler.width, "height": tiler.height, "crs": str(ds.crs), "bands": list(tiler.bands),
                "band_count": ds.count, "grid": [tiler.columns, tiler.rows],
                "transform": [round(v, 9) for v in list(ds.transform)[:6]]}


def grid_of(path: str | os.PathLike) -> dict | None:
    """Size, CRS and geotransform from the raster's header (None when it does not open: the tiler says why)."""
    import warnings

    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return {"width": ds.width, "height": ds.height, "crs": str(ds.crs),
                        "transform": [round(v, 9) for v in list(ds.transform)[:6]]}
    except (rasterio.errors.RasterioIOError, OSError):
        return None
