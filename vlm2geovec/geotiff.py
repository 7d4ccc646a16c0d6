"""Cut a georeferenced raster (GeoTIFF or anything GDAL reads) into image tiles with WGS84 centre coordinates.

    from vlm2geovec.geotiff import GeoTiffTiler

    tiler = GeoTiffTiler("scene.tif", size=256, stride=256, bands=(4, 3, 2), max_nodata=0.5)
    for tile in tiler:                      # streams: one windowed read per tile, bounded memory
        tile.image, tile.window, tile.lat, tile.lon

    tiler.tiles(start=1000, stop=2000)      # a slice of the tile grid (how sharded / resumed runs ask for work)

The grid is row-major over tile origins ``(x0, y0)`` = ``(col * stride, row * stride)``; `edge="drop"` keeps only
tiles that lie fully inside the raster, `edge="pad"` also keeps the partial ones at the right and bottom edges,
padded with nodata. A grid position is addressed by its number ``0 .. len(tiler) - 1`` whether or not its tile is
later skipped for nodata, so the same number always means the same window.

Pixel values become 8-bit RGB: uint8 rasters are kept as they are; other types are stretched linearly from
``scale=(low, high)`` to 0..255, by default (`scale="auto"`) each band's 2nd..98th percentile over the whole
raster, estimated from a decimated read (at most ~1 megapixel, so memory stays bounded on huge rasters). One band
gives a grey image. Without `bands`: the bands the file marks red/green/blue, else a 3-band raster's three or a
1-band raster's one; any other raster must name its bands (no guessed colours).

Nodata: a pixel is nodata when the raster's mask (nodata value, alpha band or internal mask) marks it in any
selected band, when it is NaN, or when it lies outside the raster (`edge="pad"`). Tiles whose nodata share is
above `max_nodata` are skipped.

Coordinates: a tile's centre is the centre of its window (in pixel-corner coordinates: ``(x0 + x1) / 2``), mapped
by the raster's affine transform to its CRS and reprojected to WGS84 (EPSG:4326) with GDAL/PROJ via rasterio.
Needs ``pip install vlm2geovec[geo]`` (rasterio).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from processing_vlm2geovec import STRETCH_PERCENTILES, stretch_to_uint8

EDGES = ("drop", "pad")
AUTO_SCALE_PIXELS = 1024 * 1024  # the decimated read that estimates the stretch


def _rasterio():
    try:
        import rasterio
        import rasterio.warp  # noqa: F401  (a submodule rasterio does not import by itself)
        import rasterio.windows  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("GeoTIFF tiling needs rasterio: pip install 'vlm2geovec[geo]' (or pip install rasterio)") from error
    return rasterio


def is_remote(path: str) -> bool:
    """A GDAL URL or virtual path (a COG over https:// or s3://, /vsicurl/...): read remotely, never checked on disk."""
    return "://" in path or path.startswith("/vsi")


@dataclass(frozen=True)
class Tile:
    """One tile: an RGB image, its pixel window ``[x0, y0, x1, y1]`` in the raster and its WGS84 centre."""

    position: int
    image: Image.Image
    window: tuple[int, int, int, int]
    lat: float
    lon: float
    nodata_fraction: float
    source: str

    def metadata(self) -> dict:
        """The index metadata of this tile (see `vlm2geovec.index`)."""
        return {"id": f"{Path(self.source).stem}:{self.window[0]}_{self.window[1]}", "source": self.source,
                "window": list(self.window), "lat": round(self.lat, 7), "lon": round(self.lon, 7)}


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class GeoTiffTiler:
    """Tiles of one georeferenced raster; see the module docstring. Open/close with `with`, or let it be collected."""

    def __init__(self, path: str | os.PathLike, size: int = 256, stride: int | None = None,
                 bands: Sequence[int] | None = None, max_nodata: float = 0.5,
                 scale: str | tuple[float, float] | None = "auto", edge: str = "drop"):
        rasterio = _rasterio()
        self.path = str(path)
        if not is_remote(self.path) and not Path(self.path).is_file():
            raise FileNotFoundError(f"raster not found: {self.path}")
        self.size = _positive_int(size, "size")
        self.stride = _positive_int(self.size if stride is None else stride, "stride")
        if isinstance(max_nodata, bool) or not isinstance(max_nodata, (int, float)) or not 0 <= max_nodata <= 1:
            raise ValueError(f"max_nodata must be a fraction in [0, 1]; got {max_nodata!r}")
        self.max_nodata = float(max_nodata)
        if edge not in EDGES:
            raise ValueError(f"edge must be one of {EDGES}; got {edge!r}")
        self.edge = edge
        try:
            with warnings.catch_warnings():  # an ungeoreferenced raster gets the clearer error below
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.path)
        except rasterio.errors.RasterioIOError as error:
            raise ValueError(f"{self.path}: not a raster GDAL can read ({error})") from None
        ds = self._dataset
        if ds.crs is None:
            raise ValueError(f"{self.path}: the raster has no CRS, so its tiles cannot be given coordinates")
        if ds.transform.is_identity:
            raise ValueError(f"{self.path}: the raster has no geotransform, so its tiles cannot be given coordinates")
        self.bands = self._check_bands(bands)
        self.scale = self._check_scale(scale)
        self.width, self.height = ds.width, ds.height
        self.columns, self.rows = self._grid_len(self.width), self._grid_len(self.height)
        if self.columns == 0 or self.rows == 0:
            raise ValueError(f"{self.path}: a {self.width}x{self.height} raster holds no full {self.size}x{self.size} "
                             "tile; use a smaller size or edge='pad'")

    # ---------------------------------------------------------------------------------------------- checks
    def _check_bands(self, bands: Sequence[int] | None) -> tuple[int, ...]:
        count = self._dataset.count
        if bands is None:
            return self._default_bands()
        if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence):
            raise ValueError(f"bands must be a list of 1 or 3 band numbers (1-based); got {bands!r}")
        bands = tuple(bands)
        if len(bands) not in (1, 3):
            raise ValueError(f"bands must name 1 (grey) or 3 (RGB) bands; got {len(bands)}: {list(bands)}")
        for band in bands:
            if isinstance(band, bool) or not isinstance(band, (int, np.integer)) or not 1 <= band <= count:
                raise ValueError(f"band {band!r} does not exist: {self.path} has bands 1..{count}")
        return tuple(int(b) for b in bands)

    def _default_bands(self) -> tuple[int, ...]:
        """The bands shown when none are asked for: those the file marks red, green and blue (GDAL colour
        interpretation); else all three of a 3-band raster, or the one band (beside an alpha band) of a grey one.
        Any other raster is refused: bands 1-3 of a multispectral stack are often not red, green and blue (Landsat
        and Sentinel-2 number blue before red, some stacks start with a coastal band), and a guess would embed
        false colours without a word."""
        ds = self._dataset
        interpretation = [c.name for c in ds.colorinterp]
        if all(colour in interpretation for colour in ("red", "green", "blue")):
            return tuple(interpretation.index(colour) + 1 for colour in ("red", "green", "blue"))
        data_bands = [i + 1 for i, name in enumerate(interpretation) if name != "alpha"]
        if len(data_bands) == 3 and ds.count == 3:
            return (1, 2, 3)
        if len(data_bands) == 1:
            return (data_bands[0],)
        raise ValueError(f"{self.path} has {ds.count} bands ({', '.join(interpretation)}) and none marked red, green "
                         "and blue: choose the bands to show, 3 for an RGB image or 1 for grey (e.g. bands=(4, 3, 2), "
                         "`--bands 4,3,2`)")

    def _check_scale(self, scale) -> np.ndarray | None:
        """(bands, 2) array of low/high per band, or None for uint8 pass-through."""
        dtypes = {self._dataset.dtypes[b - 1] for b in self.bands}
        if scale is None or (scale == "auto" and dtypes == {"uint8"}):
            if dtypes != {"uint8"}:
                raise ValueError(f"{self.path} holds {sorted(dtypes)} data: give scale=(low, high) or 'auto' to make "
                                 "8-bit images")
            return None
        if scale == "auto":
            return self._auto_scale()
        if (isinstance(scale, (str, bytes)) or not isinstance(scale, Sequence) or len(scale) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scale)
                or not scale[0] < scale[1]):
            raise ValueError(f"scale must be 'auto', None or (low, high) with low < high; got {scale!r}")
        return np.array([[float(scale[0]), float(scale[1])]] * len(self.bands))

    def _auto_scale(self) -> np.ndarray:
        ds = self._dataset
        factor = max(1, math.ceil(math.sqrt(ds.width * ds.height / AUTO_SCALE_PIXELS)))
        shape = (len(self.bands), max(1, ds.height // factor), max(1, ds.width // factor))
        data = ds.read(self.bands, out_shape=shape, masked=True).astype(np.float64)
        limits = []
        for band, values in zip(self.bands, data):
            valid = values.compressed()
            valid = valid[np.isfinite(valid)]
            if valid.size == 0:
                raise ValueError(f"{self.path}: band {band} has no valid pixels; cannot estimate its stretch")
            low, high = np.percentile(valid, STRETCH_PERCENTILES)
            limits.append((low, high if high > low else low + 1.0))
        return np.array(limits)

    def _grid_len(self, extent: int) -> int:
        if self.edge == "pad":
            return max(0, math.ceil((extent - self.size) / self.stride)) + 1 if extent > 0 else 0
        return (extent - self.size) // self.stride + 1 if extent >= self.size else 0

    # ---------------------------------------------------------------------------------------------- grid
    def __len__(self) -> int:
        """Number of grid positions (tiles before nodata skipping)."""
        return self.columns * self.rows

    def window(self, position: int) -> tuple[int, int, int, int]:
        """Pixel window ``(x0, y0, x1, y1)`` of grid position `position` (may extend past the raster when padding)."""
        if not 0 <= position < len(self):
            raise IndexError(f"grid position {position} out of range 0..{len(self) - 1}")
        row, col = divmod(position, self.columns)
        x0, y0 = col * self.stride, row * self.stride
        return x0, y0, x0 + self.size, y0 + self.size

    def pixel_to_lonlat(self, xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
        """WGS84 longitudes and latitudes of pixel-corner coordinates (``(0, 0)`` = top-left corner of the raster)."""
        rasterio = _rasterio()
        transform = self._dataset.transform
        eastings, northings = zip(*(transform @ (float(x), float(y)) for x, y in zip(xs, ys)))
        lons, lats = rasterio.warp.transform(self._dataset.crs, "EPSG:4326", list(eastings), list(northings))
        return list(lons), list(lats)

    def corners(self) -> dict[str, tuple[float, float]]:
        """WGS84 ``(lon, lat)`` of the raster's outer corners, as `gdalinfo` lists them (plus the centre)."""
        w, h = self.width, self.height
        names = ("upper_left", "lower_left", "upper_right", "lower_right", "center")
        lons, lats = self.pixel_to_lonlat([0, 0, w, w, w / 2], [0, h, 0, h, h / 2])
        return {name: (lon, lat) for name, lon, lat in zip(names, lons, lats)}

    # ---------------------------------------------------------------------------------------------- reading
    def _read(self, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(pixels (bands, h, w) float64, nodata mask (h, w) bool) of a window; outside the raster is nodata."""
        rasterio = _rasterio()
        x0, y0, x1, y1 = window
        win = rasterio.windows.Window(x0, y0, x1 - x0, y1 - y0)
        outside = x1 > self.width or y1 > self.height
        # boundless reads go through a warped VRT (slow): only for windows that leave the raster
        data = self._dataset.read(self.bands, window=win, masked=True, boundless=outside)
        pixels = np.ma.getdata(data).astype(np.float64)
        nodata = np.ma.getmaskarray(data).any(axis=0) | ~np.isfinite(pixels).all(axis=0)
        # GDAL's boundless masked read marks padding as nodata only when the raster declares one: do it ourselves.
        nodata[max(0, self.height - y0):, :] = True
        nodata[:, max(0, self.width - x0):] = True
        return pixels, nodata

    def _to_rgb(self, pixels: np.ndarray, nodata: np.ndarray) -> Image.Image:
        if self.scale is None:  # 8-bit data: as it is
            out = np.floor(np.nan_to_num(np.clip(pixels, 0, 255), nan=0.0) + 0.5).astype(np.uint8).transpose(1, 2, 0)
        else:  # the processor's stretch (one home), with this raster's per-band limits
            out = stretch_to_uint8(pixels.transpose(1, 2, 0), self.scale)
        out[nodata] = 0
        if out.shape[2] == 1:
            out = np.repeat(out, 3, axis=2)
        return Image.fromarray(np.ascontiguousarray(out), mode="RGB")

    def tile(self, position: int) -> Tile | None:
        """The tile at grid `position`, or None when its nodata share is above `max_nodata`."""
        window = self.window(position)
        pixels, nodata = self._read(window)
        fraction = float(nodata.mean())
        if fraction > self.max_nodata:
            return None
        x0, y0, x1, y1 = window
        (lon,), (lat,) = self.pixel_to_lonlat([(x0 + x1) / 2], [(y0 + y1) / 2])
        return Tile(position, self._to_rgb(pixels, nodata), window, lat, lon, fraction, self.path)

    def tiles(self, start: int = 0, stop: int | None = None) -> Iterator[Tile]:
        """Tiles of grid positions ``start .. stop - 1`` (nodata tiles skipped), read one at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for position in range(max(0, start), stop):
            tile = self.tile(position)
            if tile is not None:
                yield tile

    def __iter__(self) -> Iterator[Tile]:
        return self.tiles()

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> "GeoTiffTiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GeoTiffTiler({self.path!r}, {self.width}x{self.height} {self._dataset.crs}, size={self.size}, "
                f"stride={self.stride}, bands={self.bands}, grid={self.columns}x{self.rows})")
