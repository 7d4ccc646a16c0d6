"""The Space's workbench, driven through gradio_client on the nano model with real rasters: /index_raster,
search over the raster, /refine, /import_marks, /fewshot_map, /change, and bad rasters (battery)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.battery import record_correct
from tests.test_space import _expect_app_error, load_space_app

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
TILE = 100  # NEON OSBS_029 is 400x400 at 0.1 m: a 4x4 grid of 10 m tiles
# The documented synthetic change (README, Space section): a 60x60 px (6x6 m) patch of flat roof grey painted into
# the "after" copy of the NEON scene, inside the tile whose window is (200, 100, 300, 200) and nowhere else.
CHANGE_PATCH = (220, 120, 280, 180)
CHANGED_TILE = "x200_y100"
ROOF_GREY = (128, 128, 124)


@pytest.fixture(scope="module")
def app():
    return load_space_app()


@pytest.fixture(scope="module")
def neon_path():
    from vlm2geovec.data.assets import scene_rasters

    return scene_rasters()["neon_OSBS_029"]


@pytest.fixture(scope="module")
def workbench(app, tmp_path_factory):
    """The app with a small gallery (the workbench is about rasters; the full gallery is test_space's), launched."""
    from vlm2geovec_space.gallery import gallery_tiles

    cache = tmp_path_factory.mktemp("workbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VLM2GEOVEC_MODEL", raising=False)
        demo = app.build_app(None, cache_dir=cache, gallery=[t for t in gallery_tiles() if t.id.startswith("neon_")])
    _, url, _ = app.launch(demo, host="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(workbench, tmp_path_factory):
    from gradio_client import Client

    return Client(workbench[1], verbose=False, download_files=str(tmp_path_factory.mktemp("workbench-downloads")))


def _write_like(source: Path, target: Path, pixels: np.ndarray | None = None, **changes) -> Path:
    """A GeoTIFF with ``source``'s profile (georeferencing) and ``pixels`` (bands, rows, cols), or its own."""
    import rasterio

    with rasterio.open(source) as src:
        profile, data = src.profile, src.read()
    profile.update(changes)
    data = data if pixels is None else pixels
    profile.update(count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=str(data.dtype))
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


@pytest.fixture(scope="module")
def rasters(neon_path, tmp_path_factory):
    """Real NEON imagery and documented modifications of it."""
    import rasterio

    folder = tmp_path_factory.mktemp("rasters")
    with rasterio.open(neon_path) as src:
        data = src.read()
    changed = data.copy()
    x0, y0, x1, y1 = CHANGE_PATCH
    changed[:, y0:y1, x0:x1] = np.array(ROOF_GREY, dtype=np.uint8)[:, None, None]
    # near-duplicates: tile x0_y0 copied (2 DN brighter) into x300_y300, tile x300_y0 (1 DN darker) into x0_y300
    mosaic = data.astype(np.int16)
    mosaic[:, 300:400, 300:400] = mosaic[:, 0:100, 0:100] + 2
    mosaic[:, 300:400, 0:100] = mosaic[:, 0:100, 300:400] - 1
    mosaic = np.clip(mosaic, 0, 255).astype(np.uint8)
    plain = folder / "no_crs.tif"
    Image.fromarray(data.transpose(1, 2, 0)).save(plain)  # a TIFF without any georeferencing
    junk = folder / "junk.tif"
    junk.write_bytes(b"II*\x00 not really a tiff")
    bad_json = folder / "marks.json"
    bad_json.write_text("{not json")
    huge = folder / "huge.tif"  # 5000x5000 one-band zeros: tiny on disk, above the 4096^2 pixel cap
    _write_like(neon_path, huge, np.zeros((1, 5000, 5000), dtype=np.uint8), compress="deflate")
    return {
        "changed": _write_like(neon_path, folder / "OSBS_029_after.tif", changed),
        "mosaic": _write_like(neon_path, folder / "OSBS_029_mosaic.tif", mosaic),
        "cropped": _write_like(neon_path, folder / "OSBS_029_cropped.tif", data[:, :300, :300]),
        "copy": Path(shutil.copy2(neon_path, folder / "renamed_copy.tif")),
        "no_crs": plain, "junk": junk, "huge": huge, "bad_json": bad_json,
    }


def _neon_choice(app) -> str:
    return app.NEON_SCENE


def index(client, choice, upload=None, size=TILE, stride=TILE, bands=""):
    from gradio_client import handle_file

    return client.predict(choice, handle_file(str(upload)) if upload else None, size, stride, bands,
                          api_name="/index_raster")


# ----------------------------------------------------------------------------------------------------------
# /index_raster
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [TILE, 50])
def test_indexed_raster_has_the_tilers_tiles_and_footprints(workbench, client, app, neon_path, stride):
    from vlm2geovec.geotiff import GeoTiffTiler

    summary, html, static_png, target, fewshot_target = index(client, _neon_choice(app), stride=stride)
    with GeoTiffTiler(neon_path, size=TILE, stride=stride) as tiler:
        tiles = list(tiler)
        expected_rings = {}
        for t in tiles:
            x0, y0, x1, y1 = t.window
            lons, lats = tiler.pixel_to_lonlat([x0, x0, x1, x1, x0], [y0, y1, y1, y0, y0])
            expected_rings[f"x{x0}_y{y0}"] = (np.c_[lons, lats], (t.lat, t.lon), list(t.window))
    assert summary["tiles"] == len(tiles) == ((400 - TILE) // stride + 1) ** 2
    assert summary["grid"] == [(400 - TILE) // stride + 1] * 2 and summary["crs"] == "EPSG:32617"
    features = summary["footprints"]["features"]
    assert [f["properties"]["id"] for f in features] == list(expected_rings)
    for feature in features:
        ring, (lat, lon), window = expected_rings[feature["properties"]["id"]]
        assert feature["geometry"]["type"] == "Polygon"
        np.testing.assert_allclose(feature["geometry"]["coordinates"][0], ring, atol=1e-8)
        assert feature["properties"]["window"] == window
        assert abs(feature["properties"]["lat"] - lat) < 1e-8 and abs(feature["properties"]["lon"] - lon) < 1e-8
    # the footprints are on the map, and the raster became a search target
    for update in (target, fewshot_target):  # both target pickers now offer and show the raster
        assert update["value"] == summary["target"] and [summary["target"]] * 2 in update["choices"]
    assert all(f["properties"]["id"] in html for f in features)  # every footprint is drawn (tooltips)
    with Image.open(static_png) as png:
        assert png.format == "PNG"
    state = workbench[0].space
    assert len(state.collection(summary["target"])) == len(tiles)


def test_indexing_is_cached_by_content(workbench, client, app, rasters):
    state = workbench[0].space
    first, *_ = index(client, _neon_choice(app))
    before = state.encoded_items
    again, *_ = index(client, _neon_choice(app))
    assert again["target"] == first["target"] and state.encoded_items == before  # in memory: no forward pass
    # the same bytes under another name: the disk cache (keyed by content, tiling and model) serves the vectors
    renamed, *_ = index(client, "upload", rasters["copy"])
    assert renamed["embedded"] == "disk cache" and state.encoded_items == before
    np.testing.assert_array_equal(state.collection(renamed["target"]).vectors, state.collection(first["target"]).vectors)
    # another tiling is another key
    other, *_ = index(client, _neon_choice(app), size=200, stride=200)
    assert other["target"] != first["target"] and other["tiles"] == 4 and state.encoded_items == before + 4
    record_correct()


def test_every_search_kind_runs_over_the_raster(workbench, client, app, neon_path, tmp_path):
    from gradio_client import handle_file

    summary, *_ = index(client, _neon_choice(app))
    target = summary["target"]
    state = workbench[0].space
    collection = state.collection(target)
    tile_ids = [t.id for t in collection.tiles]
    crop = tmp_path / "crop.png"
    collection.tiles[5].image.save(crop)
    calls = {
        "/search_text": ("tree crowns", 5, target),
        "/search_image": ({"image": handle_file(str(crop)), "boxes": []}, "", 5, target),
        "/search_coords": (29.6925, -81.9898, 5, target),
        "/search_place": ("Gainesville, US", 5, target),
    }
    for endpoint, args in calls.items():
        outputs = client.predict(*args, api_name=endpoint)
        result = outputs[2]
        assert result["target"] == target and result["gallery_size"] == len(tile_ids), endpoint
        ids = [r["id"] for r in result["results"]]
        assert len(ids) == 5 and set(ids) <= set(tile_ids), endpoint
        scores = [r["score"] for r in result["results"]]
        assert scores == sorted(scores, reverse=True), endpoint
        assert outputs[5] == result["query_id"] and ids[0] in outputs[4]  # query id for /refine; footprints on map
    # the image query is a tile of the raster itself: that tile ranks first
    image_result = client.predict(*calls["/search_image"], api_name="/search_image")[2]
    assert image_result["results"][0]["id"] == collection.tiles[5].id
    record_correct()


# ----------------------------------------------------------------------------------------------------------
# /refine and the marked set
# ----------------------------------------------------------------------------------------------------------


def _rank(result, tile_id):
    return next(r["rank"] for r in result["results"] if r["id"] == tile_id)


def test_feedback_moves_near_duplicates(workbench, client, app, rasters, tmp_path):
    """Mosaic: x300_y300 is a near-copy of x0_y0 and x0_y300 of x300_y0. Querying with x300_y0's own pixels puts
    it and its near-copy on top; marking x0_y0 relevant and x300_y0 not relevant must move x300_y300 up and
    x0_y300 down."""
    from gradio_client import handle_file

    summary, *_ = index(client, "upload", rasters["mosaic"])
    target = summary["target"]
    state = workbench[0].space
    collection = state.collection(target)
    query = tmp_path / "query.png"
    collection.tiles[collection.positions(["x300_y0"], "q")[0]].image.save(query)
    k = len(collection)
    first = client.predict({"image": handle_file(str(query)), "boxes": []}, "", k, target, api_name="/search_image")[2]
    outputs = client.predict(target, first["query_id"], ["x0_y0"], ["x300_y0"], k, api_name="/refine")
    refined = outputs[2]
    assert refined["query"]["method"] == "rocchio" and refined["query"]["from_query"] == first["query_id"]
    assert _rank(refined, "x300_y300") < _rank(first, "x300_y300"), (first["results"], refined["results"])
    assert _rank(refined, "x0_y300") > _rank(first, "x0_y300"), (first["results"], refined["results"])
    assert _rank(refined, "x0_y0") <= 2 and _rank(refined, "x300_y300") <= 2  # the positive and its near-copy
    # the same update, computed directly from the vectors (the UI only calls analysis.rocchio)
    from vlm2geovec_space import analysis

    positions = collection.positions(["x0_y0", "x300_y0"], "marks")
    vector = analysis.rocchio(state.queries[first["query_id"]], collection.vectors, [positions[0]], [positions[1]])
    expected = collection.vectors @ vector
    shown = [expected[collection.positions([r["id"]], "r")[0]] for r in refined["results"]]
    np.testing.assert_allclose([r["score"] for r in refined["results"]], shown, atol=1e-5)
    assert np.all(np.diff(shown) <= 1e-6)  # in descending order of the updated query's cosine

    # the marked set: GeoJSON of footprints with labels, and back
    marks_path = Path(outputs[8])
    marks = json.loads(marks_path.read_text())
    assert [(f["properties"]["id"], f["properties"]["label"]) for f in marks["features"]] == [
        ("x0_y0", "relevant"), ("x300_y0", "not relevant")]
    footprint = {f["properties"]["id"]: f["geometry"]["coordinates"][0] for f in marks["features"]}
    tile = collection.tiles[positions[0]]
    np.testing.assert_allclose(footprint["x0_y0"], [list(c) for c in tile.footprint], atol=1e-8)
    relevant, not_relevant = client.predict(target, handle_file(str(marks_path)), api_name="/import_marks")
    assert (relevant, not_relevant) == (["x0_y0"], ["x300_y0"])
    # search by example: no query id, the relevant tile alone; it and its near-copy are the top two
    example = client.predict(target, "", ["x0_y0"], [], 3, api_name="/refine")[2]
    assert {r["id"] for r in example["results"][:2]} == {"x0_y0", "x300_y300"}
    record_correct()


# ----------------------------------------------------------------------------------------------------------
# /fewshot_map
# ----------------------------------------------------------------------------------------------------------


def test_fewshot_map_labels_every_tile(workbench, client, app):
    summary, *_ = index(client, _neon_choice(app))
    target = summary["target"]
    labelled = "canopy: x0_y0, x100_y100\nopen ground: x300_y300, x200_y300\nedge: x300_y0"
    counts, table, result, html, png, geojson_path, parquet_path = client.predict(
        target, labelled, "linear probe", api_name="/fewshot_map")
    training = {"x0_y0": "canopy", "x100_y100": "canopy", "x300_y300": "open ground", "x200_y300": "open ground",
                "x300_y0": "edge"}
    assert result["training"] == training and result["classes"] == ["canopy", "edge", "open ground"]
    rows = {row[0]: row for row in table["data"]}
    assert len(rows) == summary["tiles"] == 16
    for tile_id, name in training.items():  # the training tiles keep their own labels
        assert rows[tile_id][1] == name and rows[tile_id][3] is True
    assert all(0 < row[2] <= 1 for row in rows.values())  # per-tile confidence
    per_class = {row[0]: row[1] for row in counts["data"]}
    assert per_class == result["counts"] and sum(per_class.values()) == 16
    assert per_class == {c: sum(1 for row in rows.values() if row[1] == c) for c in result["classes"]}
    geojson = json.loads(Path(geojson_path).read_text())
    assert len(geojson["features"]) == 16
    assert {f["properties"]["id"]: f["properties"]["label"] for f in geojson["features"]} == {
        tile_id: row[1] for tile_id, row in rows.items()}
    # GeoParquet through the package's exporter (the geoparquet extra is installed in the test environment)
    import pyarrow.parquet as pq

    parquet = pq.read_table(parquet_path)
    assert parquet.num_rows == 16 and b"geo" in parquet.schema.metadata
    stored = [json.loads(m) for m in parquet.column("metadata").to_pylist()]
    assert {m["id"]: m["label"] for m in stored} == {tile_id: row[1] for tile_id, row in rows.items()}
    with Image.open(png) as image:
        assert image.format == "PNG"
    assert "canopy (" in html and "x0_y0" in html  # the Leaflet page carries the coloured footprints
    # nearest centroid: every tile labelled, counts consistent
    centroid = client.predict(target, labelled, "nearest centroid", api_name="/fewshot_map")[2]
    assert sum(centroid["counts"].values()) == 16 and centroid["method"] == "nearest centroid"
    record_correct()


# ----------------------------------------------------------------------------------------------------------
# /change
# ----------------------------------------------------------------------------------------------------------


def test_change_ranks_the_synthetic_change_first(workbench, client, app, rasters):
    from gradio_client import handle_file

    table, pairs, result, html, png = client.predict(
        _neon_choice(app), None, "upload", handle_file(str(rasters["changed"])), TILE, TILE, "", 5,
        api_name="/change")
    assert result["tiles"] == 16
    assert result["ranked"][0]["id"] == CHANGED_TILE and table["data"][0][1] == CHANGED_TILE
    distances = result["distance"]
    others = [d for tile_id, d in distances.items() if tile_id != CHANGED_TILE]
    # unchanged tiles have the same pixels on both dates, hence (almost exactly) the same embedding
    assert distances[CHANGED_TILE] > 0.001 and max(others) < distances[CHANGED_TILE] / 10
    assert [row[0] for row in table["data"]] == [1, 2, 3, 4, 5]
    assert len(pairs) == 5
    with Image.open(pairs[0]["image"]) as side_by_side:
        assert side_by_side.size == (2 * TILE + 8, TILE)
        before = np.asarray(side_by_side.convert("RGB"))[:, :TILE]
        after = np.asarray(side_by_side.convert("RGB"))[:, TILE + 8:]
    x0, y0, x1, y1 = CHANGE_PATCH  # the patch, in the tile's own pixels (tile origin 200, 100)
    assert (after[y0 - 100:y1 - 100, x0 - 200:x1 - 200] == ROOF_GREY).all()
    assert not (before[y0 - 100:y1 - 100, x0 - 200:x1 - 200] == ROOF_GREY).all()
    with Image.open(png) as image:
        assert image.format == "PNG"
    assert CHANGED_TILE in html
    record_correct()


# ----------------------------------------------------------------------------------------------------------
# Battery: bad rasters and marks get a clear message, and the app stays up
# ----------------------------------------------------------------------------------------------------------


def _bad_calls(app, rasters):
    from gradio_client import handle_file

    neon = _neon_choice(app)

    def idx(upload=None, choice="upload", size=TILE, stride=TILE, bands=""):
        return lambda client: client.predict(choice, handle_file(str(upload)) if upload else None, size, stride, bands,
                                             api_name="/index_raster")

    def change(after, before=None):
        return lambda client: client.predict(neon if before is None else "upload",
                                             handle_file(str(before)) if before else None, *(
            ("upload", handle_file(str(after))) if isinstance(after, Path) else (after, None)),
            TILE, TILE, "", 5, api_name="/change")

    return [
        ("not-georeferenced", idx(rasters["no_crs"]), "Raster no_crs.tif: the raster has no CRS"),
        ("not-a-raster", idx(rasters["junk"]), "Raster junk.tif: not a raster GDAL can read"),
        ("band-missing", idx(choice=neon, bands="4,3,2"), "band 4 does not exist"),
        ("two-bands", idx(choice=neon, bands="1,2"), "Bands: give 1 (grey) or 3 (red, green, blue) band numbers"),
        ("bands-text", idx(choice=neon, bands="red"), "Bands: expected band numbers such as '4,3,2'"),
        ("oversized-raster", idx(rasters["huge"], size=1000, stride=1000),
         "5000x5000 = 25,000,000 pixels is above the limit of 16,777,216"),
        ("too-many-tiles", idx(choice=neon, size=32, stride=4), "tiles of 32 px (stride 4) is above the limit of 1,024"),
        ("tile-too-small", idx(choice=neon, size=8, stride=8), "Tile size: must lie in [32, 1024]"),
        ("stride-too-small", idx(choice=neon, size=100, stride=5), "Stride: must lie in [12, 100]"),
        ("tile-larger-than-raster", idx(choice=neon, size=800, stride=800), "holds no full 800x800 tile"),
        ("no-upload", idx(), "Raster: upload a GeoTIFF first"),
        ("unknown-scene", idx(choice="Mars"), "Raster: expected one of ['Sentinel-2, Virginia coast"),
        ("change-other-place", change("Landsat-8, Gulf coast (30 m, bands R G B NIR)"), "are not co-registered"),
        ("change-other-grid", change(rasters["cropped"]), "width: 400 vs 300"),
        ("search-unknown-target", lambda client: client.predict("trees", 5, "nowhere", api_name="/search_text"),
         "Search over: expected one of ['gallery'"),
        ("fewshot-one-class", lambda client: client.predict("gallery", "trees: neon_OSBS_029", "linear probe",
                                                            api_name="/fewshot_map"),
         "label tiles of at least two classes"),
        ("fewshot-bad-line", lambda client: client.predict("gallery", "just words", "linear probe",
                                                           api_name="/fewshot_map"),
         "Labelled tiles, line 1: expected 'class: tile id, tile id'"),
        ("fewshot-unknown-tile", lambda client: client.predict("gallery", "a: nope\nb: neon_OSBS_029", "linear probe",
                                                               api_name="/fewshot_map"),
         "Labelled tiles, line 1: no tile 'nope' in the gallery"),
        ("refine-nothing-marked", lambda client: client.predict("gallery", "", [], [], 5, api_name="/refine"),
         "Marks: mark at least one tile"),
        ("refine-both", lambda client: client.predict("gallery", "", ["neon_OSBS_029"], ["neon_OSBS_029"], 5,
                                                      api_name="/refine"),
         "is marked both relevant and not relevant"),
        ("refine-unknown-query", lambda client: client.predict("gallery", "feedbeef", ["neon_OSBS_029"], [], 5,
                                                               api_name="/refine"),
         "Query: unknown query id 'feedbeef'"),
        ("marks-not-json", lambda client: client.predict("gallery", handle_file(str(rasters["bad_json"])),
                                                         api_name="/import_marks"),
         "Marked set marks.json: not a JSON file"),
    ]


@pytest.mark.battery
def test_battery_bad_rasters_and_marks(workbench, client, app, rasters):
    failures = []
    for name, call, needle in _bad_calls(app, rasters):
        try:
            message = _expect_app_error(lambda: call(client), needle)
            assert str(rasters["junk"].parent) not in message, message  # server paths stay private
        except AssertionError as error:
            failures.append(f"{name}: {str(error)[:300]}")
    assert not failures, "\n".join(failures)
    # the app is still up and answers
    summary, *_ = index(client, _neon_choice(app))
    assert summary["tiles"] == 16
    record_correct()


def test_indexing_reports_progress_per_batch(workbench, app):
    """The progress bar's feed: (done, total) after every batch of tiles, ending at the tile count."""
    state = workbench[0].space
    calls = []
    collection = state.index_raster(_neon_choice(app), None, 50, 50, "", progress=lambda done, total: calls.append(
        (done, total)))
    assert len(collection) == 64 and calls == [(16, 64), (32, 64), (48, 64), (64, 64)]
    record_correct()
