"""GeoTIFF tiling on the real georeferenced rasters: Landsat-8 (EPSG:32616, uint16) and NEON OSBS_029 (EPSG:32617)."""

from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

from vlm2geovec.data.assets import georeferenced_rasters, scene_rasters, utm_to_lonlat  # noqa: E402
from vlm2geovec.geotiff import GeoTiffTiler  # noqa: E402

# Corner coordinates (lon, lat) of the two rasters as `gdalinfo` reports them (GDAL 3.10 / PROJ, the rasters' own
# transform and CRS reprojected to WGS84). Landsat: bounds E 452475..471285 m, N 3390555..3408645 m (30 m, zone 16N);
# NEON: E 404211.9..404251.9, N 3285102.9..3285142.9 (0.1 m, zone 17N).
KNOWN_CORNERS = {
    "landsat_B4": {
        "upper_left": (-87.49683528307224, 30.809945746747857),
        "lower_left": (-87.49599876053347, 30.64671489320107),
        "upper_right": (-87.30019503156093, 30.81055041759324),
        "lower_right": (-87.29968957655186, 30.647315674862067),
        "center": (-87.39817971851977, 30.728669372083004),
    },
    "neon_OSBS_029": {
        "upper_left": (-81.99009944919113, 29.69268277386576),
        "lower_left": (-81.99009591020068, 29.692321826712224),
        "upper_right": (-81.9896860465189, 29.69268586318692),
        "lower_right": (-81.98968250900552, 29.692324915988383),
        "center": (-81.98989097872905, 29.69250384510206),
    },
}
UTM_ZONES = {"landsat_B4": 16, "neon_OSBS_029": 17}
DEG_TOL = 1e-7  # ~1 cm


@pytest.fixture(scope="module")
def rasters():
    return georeferenced_rasters()


@pytest.fixture(scope="module")
def landsat_stack(rasters, tmp_path_factory):
    """A 4-band GeoTIFF (B2, B3, B4, B5) of the Landsat subset with the original transform and CRS."""
    path = tmp_path_factory.mktemp("raster") / "landsat_b2345.tif"
    bands = []
    for name in ("landsat_B2", "landsat_B3", "landsat_B4", "landsat_B5"):
        with rasterio.open(rasters[name]) as ds:
            bands.append(ds.read(1))
            profile = ds.profile
    profile.update(count=4, compress="deflate")
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.stack(bands))
    return path


@pytest.mark.parametrize("name", sorted(KNOWN_CORNERS))
def test_corner_coordinates_match_the_known_values(rasters, name):
    with GeoTiffTiler(rasters[name], size=64) as tiler:
        corners = tiler.corners()
        transform = tiler._dataset.transform
        width, height = tiler.width, tiler.height
    for key, (lon, lat) in KNOWN_CORNERS[name].items():
        assert corners[key] == pytest.approx((lon, lat), abs=DEG_TOL), key
    # An independent implementation (Krüger series in vlm2geovec.data.assets) agrees with GDAL/PROJ to ~1 mm.
    for key, (x, y) in {"upper_left": (0, 0), "lower_right": (width, height)}.items():
        own = utm_to_lonlat(*(transform @ (x, y)), UTM_ZONES[name])
        assert own == pytest.approx(KNOWN_CORNERS[name][key], abs=DEG_TOL)


def test_tile_centres_on_the_neon_grid(rasters):
    """400x400 px cut into 100 px tiles: 16 tiles whose centres sit 50 px inside the corners."""
    corners = KNOWN_CORNERS["neon_OSBS_029"]
    with GeoTiffTiler(rasters["neon_OSBS_029"], size=100, max_nodata=1.0) as tiler:
        tiles = list(tiler)
        assert len(tiler) == 16 and [t.position for t in tiles] == list(range(16))
        assert [t.window for t in tiles[:5]] == [(0, 0, 100, 100), (100, 0, 200, 100), (200, 0, 300, 100),
                                                 (300, 0, 400, 100), (0, 100, 100, 200)]
        (lon, lat), = zip(*tiler.pixel_to_lonlat([50], [50]))
    assert (tiles[0].lon, tiles[0].lat) == pytest.approx((lon, lat), abs=1e-12)
    # The four corner tiles: each centre is 1/8 of the raster in from its corner, so their mean is the centre.
    ul, ur, ll, lr = (tiles[i] for i in (0, 3, 12, 15))
    assert np.mean([t.lon for t in (ul, ur, ll, lr)]) == pytest.approx(corners["center"][0], abs=DEG_TOL)
    assert np.mean([t.lat for t in (ul, ur, ll, lr)]) == pytest.approx(corners["center"][1], abs=DEG_TOL)
    for tile, corner in ((ul, "upper_left"), (lr, "lower_right")):
        expected = [c + (corners["center"][i] - c) / 4 for i, c in enumerate(corners[corner])]
        assert (tile.lon, tile.lat) == pytest.approx(expected, abs=1e-8)
    assert ul.lat > ll.lat and ul.lon < ur.lon  # north up, east right
    meta = ul.metadata()
    assert meta["id"] == "OSBS_029:0_0" and meta["window"] == [0, 0, 100, 100]
    assert meta["lat"] == pytest.approx(ul.lat, abs=1e-7) and meta["source"] == str(rasters["neon_OSBS_029"])
    # uint8 RGB passes through unchanged (except nodata pixels, which are blacked out)
    with rasterio.open(rasters["neon_OSBS_029"]) as ds:
        raw = ds.read(window=rasterio.windows.Window(0, 0, 100, 100)).transpose(1, 2, 0)
    got = np.asarray(ul.image)
    valid = (raw != 255).all(axis=2)  # the file's nodata value is 255
    assert ul.image.size == (100, 100) and (got[valid] == raw[valid]).all() and (got[~valid] == 0).all()
    assert ul.nodata_fraction == pytest.approx(1 - valid.mean())


def test_bands_stride_and_stretch_on_a_multiband_landsat_raster(landsat_stack, rasters):
    with GeoTiffTiler(landsat_stack, size=64, stride=32, bands=(3, 2, 1)) as tiler:
        assert (tiler.columns, tiler.rows) == ((627 - 64) // 32 + 1, (603 - 64) // 32 + 1) == (18, 17)
        assert tiler.window(19) == (32, 32, 96, 96)
        true_colour = tiler.tile(19)
        low, high = tiler.scale[0]
    with rasterio.open(rasters["landsat_B4"]) as ds:
        red = ds.read(1).astype(np.float64)
    # auto stretch: the red band's 2nd..98th percentile (the raster is small enough to be read whole)
    assert (low, high) == pytest.approx(tuple(np.percentile(red, [2, 98])))
    expected_red = np.clip(np.floor((red[32:96, 32:96] - low) / (high - low) * 255 + 0.5), 0, 255)
    assert (np.asarray(true_colour.image)[:, :, 0] == expected_red).all()
    with GeoTiffTiler(landsat_stack, size=64, stride=32, bands=(1, 2, 3)) as tiler:
        reversed_order = np.asarray(tiler.tile(19).image)
    # same band stretched alike in both orders: channel 0 of one is channel 2 of the other
    assert (reversed_order[:, :, 2] == np.asarray(true_colour.image)[:, :, 0]).all()
    with GeoTiffTiler(landsat_stack, size=64, bands=(4,), scale=(0, 30000)) as grey:
        image = np.asarray(grey.tile(0).image)
        assert image.shape == (64, 64, 3) and (image[:, :, 0] == image[:, :, 1]).all()


def test_nodata_tiles_are_skipped_and_padding_counts_as_nodata(landsat_stack, tmp_path):
    path = tmp_path / "with_nodata.tif"
    with rasterio.open(landsat_stack) as ds:
        data, profile = ds.read(), ds.profile
    data[:, :128, :128] = 0  # the top-left 2x2 tiles of 64 px become nodata
    data[:, 128:160, 0:64] = 0  # half of the tile below them
    profile.update(nodata=0)
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    with GeoTiffTiler(path, size=64, bands=(3, 2, 1)) as tiler:
        positions = [t.position for t in tiler]
        columns = tiler.columns
        half = tiler.tile(2 * columns)
    assert 0 not in positions and 1 not in positions and columns not in positions and columns + 1 not in positions
    assert 2 in positions and half is not None and half.nodata_fraction == pytest.approx(0.5)
    with GeoTiffTiler(path, size=64, bands=(3, 2, 1), max_nodata=0.0) as strict:
        assert strict.tile(2 * columns) is None
    with GeoTiffTiler(landsat_stack, size=64, bands=(3, 2, 1), edge="pad", max_nodata=1.0) as padded:
        assert (padded.columns, padded.rows) == (10, 10)  # 627 = 9*64 + 51, 603 = 9*64 + 27
        last = padded.tile(len(padded) - 1)
        assert last.window == (576, 576, 640, 640)
        assert last.nodata_fraction == pytest.approx(1 - (51 * 27) / 64**2)
        assert (np.asarray(last.image)[27:, :, :] == 0).all()
    with GeoTiffTiler(landsat_stack, size=64, bands=(3, 2, 1), edge="pad") as default_padded:  # >50% padding: skipped
        assert default_padded.tile(len(default_padded) - 1) is None


def test_tiles_stream_in_slices(landsat_stack):
    with GeoTiffTiler(landsat_stack, size=96, stride=48, bands=(3, 2, 1)) as tiler:
        everything = [(t.position, t.window, t.lat, t.lon) for t in tiler]
        sliced = [(t.position, t.window, t.lat, t.lon) for s in range(0, len(tiler), 7) for t in tiler.tiles(s, s + 7)]
    assert sliced == everything and len(everything) == len(tiler) == 12 * 11


def _copy_with_colours(source, path, colours, count=None):
    """`source`'s first `count` bands written to `path` with GDAL colour interpretations `colours`."""
    from rasterio.enums import ColorInterp

    with rasterio.open(source) as ds:
        data, profile = ds.read(), ds.profile
    data = data[: count or len(data)]
    profile.update(count=len(data), **({"alpha": "YES"} if "alpha" in colours else {}))  # GeoTIFF ExtraSamples
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
        out.colorinterp = [getattr(ColorInterp, colour) for colour in colours]
    return path


def test_default_bands_follow_the_files_colours_and_are_never_guessed(landsat_stack, tmp_path):
    """Landsat numbers blue before red (the stack is B2, B3, B4, B5): without colour marks, bands 1-3 would be
    false colours. Such a raster must name its bands; one whose file marks red/green/blue gets them by default."""
    with pytest.raises(ValueError, match=r"4 bands \(gray, undefined, undefined, undefined\) and none marked red, "
                                         "green and blue: choose the bands"):
        GeoTiffTiler(landsat_stack, size=64)
    marked = _copy_with_colours(landsat_stack, tmp_path / "marked.tif", ["blue", "green", "red", "undefined"])
    with GeoTiffTiler(marked, size=64) as by_colour, GeoTiffTiler(landsat_stack, size=64, bands=(3, 2, 1)) as named:
        assert by_colour.bands == (3, 2, 1)
        assert np.array_equal(np.asarray(by_colour.tile(5).image), np.asarray(named.tile(5).image))
    grey_alpha = _copy_with_colours(landsat_stack, tmp_path / "grey_alpha.tif", ["gray", "alpha"], count=2)
    with GeoTiffTiler(grey_alpha, size=64) as tiler:
        assert tiler.bands == (1,)
    two = _copy_with_colours(landsat_stack, tmp_path / "two.tif", ["gray", "undefined"], count=2)
    with pytest.raises(ValueError, match="two.tif has 2 bands .* choose the bands"):
        GeoTiffTiler(two, size=64)
    three = _copy_with_colours(landsat_stack, tmp_path / "three.tif", ["gray", "undefined", "undefined"], count=3)
    with GeoTiffTiler(three, size=64) as tiler:  # a 3-band raster is shown as it is stored (the usual convention)
        assert tiler.bands == (1, 2, 3)
    for name, path in scene_rasters().items():  # the bundled scenes mark their colours
        with GeoTiffTiler(path, size=200) as tiler:
            assert tiler.bands == (1, 2, 3), name


def test_bad_rasters_and_settings_get_clear_errors(landsat_stack, tmp_path):
    with pytest.raises(ValueError, match="band 5 does not exist.*bands 1..4"):
        GeoTiffTiler(landsat_stack, bands=(5, 2, 1))
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) bands; got 2"):
        GeoTiffTiler(landsat_stack, bands=(1, 2))
    with pytest.raises(ValueError, match="size must be a positive integer"):
        GeoTiffTiler(landsat_stack, size=0)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        GeoTiffTiler(landsat_stack, stride=-3)
    with pytest.raises(ValueError, match="max_nodata must be a fraction"):
        GeoTiffTiler(landsat_stack, max_nodata=1.5)
    with pytest.raises(ValueError, match="edge must be one of"):
        GeoTiffTiler(landsat_stack, edge="wrap")
    with pytest.raises(ValueError, match="holds no full 1024x1024 tile"):
        GeoTiffTiler(landsat_stack, bands=(3, 2, 1), size=1024)
    with pytest.raises(ValueError, match="holds \\['uint16'\\] data: give scale"):
        GeoTiffTiler(landsat_stack, bands=(3, 2, 1), scale=None)
    with pytest.raises(ValueError, match="scale must be 'auto', None or \\(low, high\\)"):
        GeoTiffTiler(landsat_stack, bands=(3, 2, 1), scale=(5, 5))
    with pytest.raises(FileNotFoundError, match="raster not found"):
        GeoTiffTiler(tmp_path / "missing.tif")
    not_a_raster = tmp_path / "notes.tif"
    not_a_raster.write_text("not a tiff")
    with pytest.raises(ValueError, match="not a raster GDAL can read"):
        GeoTiffTiler(not_a_raster)
    plain = tmp_path / "plain.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(plain, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8") as out:
            out.write(np.zeros((1, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="has no CRS"):
        GeoTiffTiler(plain, size=32)
    with GeoTiffTiler(landsat_stack, size=64, bands=(3, 2, 1)) as tiler, pytest.raises(IndexError, match="out of range"):
        tiler.window(len(tiler))


@pytest.mark.battery
def test_index_build_of_an_unmarked_multiband_raster_asks_for_bands(landsat_stack, nano_dir, tmp_path):
    """The CLI says which bands to choose instead of embedding bands 1-3 (blue, green, red here) as RGB."""
    from tests.battery import expect_cli_error, run_cli

    expect_cli_error(run_cli(["index", "build", "--model", nano_dir, "--input", landsat_stack, "--out", tmp_path / "i",
                              "--tile-size", "200"]),
                     r"landsat_b2345\.tif has 4 bands", "none marked red, green and blue", r"--bands 4,3,2")
