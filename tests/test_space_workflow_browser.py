"""The Space driven like an analyst drives it: headless Chromium (Playwright) clicks through the real page.

One workflow: upload a GeoTIFF -> index it (tile footprints on the map, tile count) -> search the raster by example
(an image) -> mark hits relevant / not relevant -> refine (the ranking moves as the feedback implies) -> few-shot
map of every tile (per-class counts). Then bad input through the same page: a non-georeferenced file, a band the
raster lacks, an oversized raster and two rasters that are not co-registered each get a clear message, and the
next valid action works.

Every value asserted is read from the page's DOM (tables, JSON viewer, map data, toasts), never from the server.
Screenshots of each step are kept as test artifacts in ``out/test-artifacts/space-workflow/`` (CI keeps ``out/``);
a wait that times out saves ``failed-<step>.png`` and ``failed-<step>.html`` there and names the step.

The raster is the bundled NEON OSBS_029 tile (real 0.1 m RGB, 4x4 tiles of 100 px) with a documented edit so the
feedback has a known answer: tile x0_y0 copied 2 DN brighter into x300_y300 and tile x300_y0 copied 1 DN darker
into x0_y300 (tests/test_space_workbench.py's mosaic). Chromium is Debian's (``/usr/bin/chromium``): Playwright
cannot download browsers here, so it launches that binary; a missing browser fails the test, never skips it.
External requests (the Leaflet CDN, web map tiles) are blocked, so the maps show their offline static image.
"""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.test_space_browser import ensure_chromium
from tests.test_space_workbench import _write_like

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]
ARTIFACTS = REPO_ROOT / "out" / "test-artifacts" / "space-workflow"
TILE = 100
# Headless, offline-friendly flags (shared/notes/platform.md, trap 11); Playwright adds --headless itself.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WAIT_MS = 60_000  # any one step: indexing 16 tiles on the nano model takes well under a second here
# Rows of a gradio Dataframe as rendered: every body cell carries data-row / data-col.
TABLE_ROWS = """el => {
  const rows = {};
  for (const cell of el.querySelectorAll('[role=gridcell][data-row][data-col]'))
    (rows[cell.dataset.row] ??= [])[Number(cell.dataset.col)] = cell.innerText.trim();
  return Object.keys(rows).sort((a, b) => a - b).map(key => rows[key]);
}"""
TABLE_ROW_COUNT = """([selector, n]) => {
  const el = document.querySelector(selector);
  return !!el && el.querySelectorAll('[role=gridcell][data-col="0"]').length === n;
}"""
TOAST = """needle => [...document.querySelectorAll('[data-testid=toast-text]')]
  .some(text => text.innerText.includes(needle))"""
JSON_HAS = """([selector, needle]) => {
  const el = document.querySelector(selector);
  return !!el && el.textContent.replace(/\\s+/g, '').includes(needle);
}"""


# ----------------------------------------------------------------------------------------------------------
# Fixtures: the app (nano model, a small gallery), rasters, the browser
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def space_url(tmp_path_factory):
    """The app on 127.0.0.1 with the nano model and the NEON tiles as gallery (the workflow is about rasters)."""
    from tests.test_space import load_space_app

    app = load_space_app()
    from vlm2geovec_space.gallery import gallery_tiles

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VLM2GEOVEC_MODEL", raising=False)
        demo = app.build_app(None, cache_dir=tmp_path_factory.mktemp("workflow-cache"),
                             gallery=[t for t in gallery_tiles() if t.id.startswith("neon_")])
    _, url, _ = app.launch(demo, host="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/")
    demo.close()


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    import rasterio

    from vlm2geovec.data.assets import scene_rasters

    neon = scene_rasters()["neon_OSBS_029"]
    folder = tmp_path_factory.mktemp("workflow-rasters")
    with rasterio.open(neon) as src:
        data = src.read()
    mosaic = data.astype(np.int16)
    mosaic[:, 300:400, 300:400] = mosaic[:, 0:100, 0:100] + 2
    mosaic[:, 300:400, 0:100] = mosaic[:, 0:100, 300:400] - 1
    mosaic = np.clip(mosaic, 0, 255).astype(np.uint8)
    query = folder / "query_x300_y0.png"  # the search-by-example image: tile x300_y0's own pixels
    Image.fromarray(mosaic[:, 0:100, 300:400].transpose(1, 2, 0)).save(query)
    plain = folder / "no_crs.tif"
    Image.fromarray(data.transpose(1, 2, 0)).save(plain)  # a TIFF without any georeferencing
    return {
        "mosaic": _write_like(neon, folder / "OSBS_029_mosaic.tif", mosaic),
        "query": query,
        "no_crs": plain,
        # 5000x5000 one-band zeros: 50 KB on disk (under the upload cap), above the 4096^2 pixel cap
        "huge": _write_like(neon, folder / "huge.tif", np.zeros((1, 5000, 5000), dtype=np.uint8), compress="deflate"),
        # the same place on a smaller grid: not co-registered with the NEON scene
        "cropped": _write_like(neon, folder / "OSBS_029_cropped.tif", data[:, :300, :300]),
    }


@pytest.fixture(scope="module")
def browser():
    binary = ensure_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: install the test extra (pip install -e '.[test]'; bash .ci/setup does).")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=binary, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def ui(browser, space_url, artifacts):
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    # Only the app itself: no CDN, no web map tiles (offline CI; deterministic screenshots).
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield Page(page, space_url, artifacts)
    context.close()


# ----------------------------------------------------------------------------------------------------------
# The page, as a tester's driver: waits on DOM conditions, names the step on failure
# ----------------------------------------------------------------------------------------------------------


class Page:
    def __init__(self, page, url: str, artifacts: Path):
        self.page, self.url, self.artifacts, self.shots = page, url, artifacts, []

    @contextmanager
    def step(self, name: str):
        """A step of the workflow: a timeout or a failed check saves ``failed-<name>.png/.html`` and says which."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            yield
        except (PlaywrightError, AssertionError) as error:
            saved = self._dump(f"failed-{name}")
            kind = "timed out / browser error" if isinstance(error, PlaywrightError) else "check failed"
            pytest.fail(f"step '{name}' {kind}: {str(error)[:1500]}\n(page saved: {saved})", pytrace=False)

    def _dump(self, stem: str) -> str:
        try:
            self.page.screenshot(path=self.artifacts / f"{stem}.png", full_page=True)
            (self.artifacts / f"{stem}.html").write_text(self.page.content())
        except Exception as error:  # noqa: BLE001 - the browser itself may be gone; the failure message matters
            return f"could not save the page ({error})"
        return str(self.artifacts / f"{stem}.*")

    def shot(self, name: str) -> None:
        for frame in self.page.frames[1:]:  # the map frames (re-rendered when their tab shows) loaded first
            frame.wait_for_load_state()
        # from the top: headless Chromium leaves out-of-process frames (the sandboxed maps) blank in a full-page
        # shot when they were off screen; two animation frames let it paint them
        self.page.evaluate("() => new Promise(done => { window.scrollTo(0, 0); "
                           "requestAnimationFrame(() => requestAnimationFrame(done)); })")
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=path, full_page=True)
        self.shots.append(path)

    def open(self, tab: str) -> None:
        self.page.goto(f"{self.url}/?tab={tab}")
        self.page.wait_for_selector(f'[role=tab][aria-selected=true][data-tab-id="{tab}"]')

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def until(self, script: str, arg=None, what: str = "") -> None:
        """Wait (up to WAIT_MS) until ``script(arg)`` is true in the page."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(script, arg=arg, timeout=WAIT_MS)
        except PlaywrightTimeout:
            raise AssertionError(f"waited {WAIT_MS // 1000} s for: {what or script}") from None

    def upload(self, component: str, path: Path) -> None:
        """A file into a gr.File (clearing the one it holds), then wait until the page lists it."""
        clear = self.page.locator(f"{component} button[aria-label=Clear]")
        if clear.count():
            clear.first.click()
        self.page.locator(f"{component} input[type=file]").set_input_files(str(path))
        self.until("([sel, stem]) => document.querySelector(sel)?.innerText.includes(stem)",
                   [component, path.stem], f"{path.name} listed in {component}")

    def number(self, component: str, value: int) -> None:
        """A slider's number box (gradio applies it on Enter / blur)."""
        box = self.page.locator(f"{component} input[type=number]")
        box.fill(str(value))
        box.press("Enter")

    def rows(self, component: str, n: int) -> list[list[str]]:
        """The table's rows once it shows ``n`` of them."""
        self.until(TABLE_ROW_COUNT, [component, n], f"{n} rows in {component}")
        return self.page.locator(component).evaluate(TABLE_ROWS)

    def json_text(self, component: str) -> str:
        """A gr.JSON's rendered text without whitespace (its accordion opened first)."""
        return re.sub(r"\s+", "", self.page.locator(component).text_content())

    def mark(self, component: str, tile_ids: list[str]) -> list[str]:
        box = self.page.locator(f"{component} input")
        for tile_id in tile_ids:
            box.click()
            box.fill(tile_id)
            box.press("Enter")
        box.press("Escape")
        return [t.strip() for t in self.page.locator(f"{component} .token").all_inner_texts()]

    def error_toast(self, needle: str) -> str:
        """The text of the error message (a gradio toast) that the page shows containing ``needle``."""
        self.until(TOAST, needle, f"an error message containing {needle!r}")
        toast = self.page.locator("[data-testid=toast-body]", has_text=needle).first
        assert "error" in (toast.get_attribute("class") or ""), "the message is not shown as an error"
        return toast.locator("[data-testid=toast-text]").inner_text()

    def close_toasts(self) -> None:
        for button in self.page.locator("[data-testid=toast-close]").all():
            if button.is_visible():
                button.click()
        self.until("() => !document.querySelector('[data-testid=toast-text]')", what="the messages closed")

    def map_data(self, component: str) -> dict:
        """What a map frame draws (the Leaflet page's data: tiles, ranked results, footprint polygons)."""
        self.until("sel => !!document.querySelector(sel + ' iframe')", component, f"a map in {component}")
        frame = self.page.locator(f"{component} iframe").element_handle().content_frame()
        frame.wait_for_function("() => typeof DATA !== 'undefined'")
        return frame.evaluate("DATA")

    def map_polygons(self, component: str) -> list[str]:
        return [polygon["label"] for polygon in self.map_data(component)["polygons"]]

    def expect_up(self) -> None:
        text = self.page.locator("body").inner_text()
        assert "Connection errored out" not in text and "upstream app has raised" not in text, text[-500:]


def _tiler_ids(path: Path, size: int, stride: int) -> list[str]:
    from vlm2geovec.geotiff import GeoTiffTiler

    with GeoTiffTiler(path, size=size, stride=stride) as tiler:
        return [f"x{t.window[0]}_y{t.window[1]}" for t in tiler]


def _ranks(rows: list[list[str]]) -> dict[str, int]:
    """tile id -> rank from the Results table (columns: rank, tile, score, ...)."""
    return {row[1]: int(row[0]) for row in rows}


def _index(ui: Page, size: int, stride: int, expected_tiles: int) -> str:
    """Click 'Index the raster' and wait until the indexed-raster JSON reports the tiling; returns its target."""
    ui.number("#vg-tile-size", size)
    ui.number("#vg-stride", stride)
    ui.page.locator("#vg-index").click()
    ui.until(JSON_HAS, ["#vg-raster-json", f'"tiles":{expected_tiles},'], f"{expected_tiles} tiles indexed")
    ui.until(JSON_HAS, ["#vg-raster-json", f'"size":{size},"stride":{stride},'], f"the {size}/{stride} tiling")
    return re.search(r'"target":"([^"]+)"', ui.json_text("#vg-raster-json")).group(1)


# ----------------------------------------------------------------------------------------------------------
# The workflow
# ----------------------------------------------------------------------------------------------------------


def test_analyst_workflow_upload_search_mark_refine_map(ui, rasters):
    page = ui.page
    tile_ids = _tiler_ids(rasters["mosaic"], TILE, TILE)
    assert len(tile_ids) == 16

    with ui.step("open"):
        ui.open("workbench")
        ui.expect_up()
        ui.page.get_by_text("Indexed raster (JSON: grid, CRS, footprints)").click()  # the JSON viewer, opened

    with ui.step("upload-and-index"):
        ui.upload("#vg-raster-file", rasters["mosaic"])
        target = _index(ui, TILE, TILE, len(tile_ids))
        summary = ui.json_text("#vg-raster-json")
        assert f'"raster":"{rasters["mosaic"].name}"' in summary and '"grid":[4,4]' in summary, summary[:600]
        assert '"crs":"EPSG:32617"' in summary, summary[:600]
        # the footprints drawn on the map: one per tile of the package's tiler, named by tile id
        drawn = ui.map_polygons("#vg-raster-map")
        assert sorted(label.split(":")[0] for label in drawn) == sorted(tile_ids), drawn
        ui.shot("01-indexed")

    with ui.step("search-by-example"):
        ui.tab("Geo-retrieval")
        assert page.locator("#vg-target input").input_value() == target  # the raster became the search target
        ui.tab("By image")
        page.locator("#vg-query-image input[type=file]").set_input_files(str(rasters["query"]))
        # uploaded once the annotator's download link is the query file (it showed a sample image before)
        ui.until("name => !!document.querySelector(`#vg-query-image a[href$='/${name}']`)", rasters["query"].name,
                 "the query image in the annotator")
        ui.number("#vg-k", len(tile_ids))
        page.locator("#vg-search-image").click()
        first = ui.rows("#vg-results", len(tile_ids))
        query_id = page.locator("#vg-query-id textarea").input_value()
        assert re.fullmatch(r"[0-9a-f]{8,}", query_id), query_id
        before = _ranks(first)
        assert sorted(before) == sorted(tile_ids) and sorted(before.values()) == list(range(1, 17)), first
        scores = [float(row[2]) for row in first]
        assert scores == sorted(scores, reverse=True), first
        assert first[0][1] == "x300_y0", first  # the query is that tile's own pixels
        ui.shot("02-search-by-example")

    with ui.step("mark"):
        assert ui.mark("#vg-relevant", ["x0_y0"]) == ["x0_y0"]
        assert ui.mark("#vg-not-relevant", ["x300_y0"]) == ["x300_y0"]
        ui.shot("03-marked")

    with ui.step("refine"):
        page.locator("#vg-refine").click()
        # done when the marked set is offered for download (only /refine fills it; the ranking comes with it)
        ui.until("() => !!document.querySelector('#vg-marks-file')?.innerText.includes('marked_tiles')",
                 what="the marked set (GeoJSON) offered after refining")
        refined = ui.rows("#vg-results", len(tile_ids))
        after = _ranks(refined)
        orders = f"before: {[row[1] for row in first]}\nafter:  {[row[1] for row in refined]}"
        # x300_y300 is a near-copy of the tile marked relevant, x0_y300 of the tile marked not relevant
        for tile_id, why, direction in (("x300_y300", "near-copy of the relevant tile", "up"),
                                        ("x300_y0", "marked not relevant", "down"),
                                        ("x0_y300", "near-copy of the not-relevant tile", "down")):
            moved = after[tile_id] < before[tile_id] if direction == "up" else after[tile_id] > before[tile_id]
            assert moved, (f"{tile_id} ({why}) did not move {direction}: rank {before[tile_id]} -> {after[tile_id]}"
                           f"\n{orders}")
        assert {row[1] for row in refined[:2]} == {"x0_y0", "x300_y300"}, (
            f"the tile marked relevant and its near-copy should lead\n{orders}")
        assert page.locator("#vg-query-id textarea").input_value() != query_id  # the refined query is a new one
        # the map shows the refined ranking: footprints labelled by their new rank
        drawn = {p["label"].split(":")[0]: p["label"].split(": ")[1] for p in ui.map_data("#vg-geo-map")["polygons"]}
        assert drawn == {tile_id: f"#{rank}" for tile_id, rank in after.items()}, drawn
        ui.shot("04-refined")

    with ui.step("few-shot-map"):
        ui.tab("Workbench")
        assert page.locator("#vg-fewshot-target input").input_value() == target
        training = {"x0_y0": "canopy", "x100_y100": "canopy", "x200_y200": "open", "x200_y300": "open",
                    "x300_y0": "edge"}
        labelled = "\n".join(f"{name}: {', '.join(t for t, c in training.items() if c == name)}"
                             for name in dict.fromkeys(training.values()))
        page.locator("#vg-labelled textarea").fill(labelled)
        page.locator("#vg-fewshot").click()
        counts = {row[0]: int(row[1]) for row in ui.rows("#vg-class-counts", 3)}
        every = ui.rows("#vg-fewshot-tiles", len(tile_ids))
        assert set(counts) == {"canopy", "open", "edge"} and sum(counts.values()) == len(tile_ids), counts
        labels = {row[0]: row[1] for row in every}
        assert sorted(labels) == sorted(tile_ids), every
        assert counts == {c: list(labels.values()).count(c) for c in counts}, (counts, every)
        for tile_id, name in training.items():  # the labelled tiles keep their labels, flagged as labelled
            row = next(r for r in every if r[0] == tile_id)
            assert row[1] == name and row[3].lower() == "true", row
        assert all(0 < float(row[2]) <= 1 for row in every), every  # per-tile confidence
        # the coloured map: every tile drawn with its class ("x0_y0: canopy (0.93)")
        drawn = {label.split(": ")[0]: label.split(": ", 1)[1].split(" (")[0]
                 for label in ui.map_polygons("#vg-fewshot-map")}
        assert drawn == labels, drawn
        ui.shot("05-fewshot-map")
        ui.expect_up()

    assert [p.name for p in ui.shots] == ["01-indexed.png", "02-search-by-example.png", "03-marked.png",
                                          "04-refined.png", "05-fewshot-map.png"]
    for path in ui.shots:
        with Image.open(path) as image:
            assert image.width == 1280 and np.asarray(image.convert("L"), dtype=np.float32).std() > 20, path.name


# ----------------------------------------------------------------------------------------------------------
# Bad input through the page: a clear message, and the app keeps serving
# ----------------------------------------------------------------------------------------------------------


def test_bad_input_shows_a_clear_message_and_the_app_stays_up(ui, rasters):
    page = ui.page
    mosaic = rasters["mosaic"]
    with ui.step("open-workbench"):
        ui.open("workbench")
        page.get_by_text("Indexed raster (JSON: grid, CRS, footprints)").click()

    # each bad input, its message, then a valid indexing with another tiling (a new tile count proves it ran)
    cases = [
        ("not-georeferenced", rasters["no_crs"], "",
         "Raster no_crs.tif: the raster has no CRS, so its tiles cannot be given coordinates. Upload a GeoTIFF "
         "with a coordinate reference system and geotransform.", 200),
        ("wrong-bands", mosaic, "4,3,2",
         f"Raster {mosaic.name}: band 4 does not exist: {mosaic.name} has bands 1..3", 100),
        ("oversized", rasters["huge"], "",
         "Raster huge.tif: 5000x5000 = 25,000,000 pixels is above the limit of 16,777,216; crop it first.", 80),
    ]
    for name, bad_file, bands, message, valid_size in cases:
        with ui.step(f"bad-{name}"):
            ui.upload("#vg-raster-file", bad_file)
            page.locator("#vg-bands textarea").fill(bands)
            ui.number("#vg-tile-size", TILE)
            ui.number("#vg-stride", TILE)
            page.locator("#vg-index").click()
            shown = ui.error_toast(message)
            assert str(bad_file.parent) not in shown, shown  # server paths stay private
            ui.shot(f"10-bad-{name}")
            ui.close_toasts()
            ui.expect_up()
        with ui.step(f"after-{name}"):
            page.locator("#vg-bands textarea").fill("")
            ui.upload("#vg-raster-file", mosaic)
            expected = len(_tiler_ids(mosaic, valid_size, valid_size))
            _index(ui, valid_size, valid_size, expected)

    with ui.step("bad-change-not-co-registered"):
        ui.upload("#vg-after-file", rasters["cropped"])  # "before" is the bundled NEON scene
        page.locator("#vg-change").click()
        shown = ui.error_toast("are not co-registered")
        assert "width: 400 vs 300" in shown and rasters["cropped"].name in shown, shown
        ui.shot("11-bad-change-not-co-registered")
        ui.close_toasts()
        ui.expect_up()
    with ui.step("after-change"):
        ui.upload("#vg-after-file", mosaic)  # co-registered with NEON: two tiles differ
        page.locator("#vg-change").click()
        ranked = ui.rows("#vg-change-table", 6)
        assert {row[1] for row in ranked[:2]} == {"x300_y300", "x0_y300"}, ranked  # the two edited tiles
        assert [int(row[0]) for row in ranked] == list(range(1, 7)), ranked
        assert float(ranked[1][2]) > 10 * float(ranked[2][2]), ranked  # unchanged tiles: ~zero distance
        ui.shot("12-change-after-bad-input")
