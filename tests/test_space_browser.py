"""The Space's page in a real browser: headless Debian Chromium renders both demos (DOM + screenshots)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.test_space import launch_space

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas warnings
CHROMIUM = "/usr/bin/chromium"
# Debian chromium headless, offline-friendly (shared/notes/platform.md, trap 11).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1280,2000", "--virtual-time-budget=20000"]
ARTIFACTS = REPO_ROOT / "out"

# What a visitor must see: the components of both demos (labels and buttons as rendered text).
GROUNDING = ["Sample image", "Referring expression", "Window scales (fraction of the image side)", "Regions to show",
             "Find regions", "Candidate captions / labels (one per line)", "Rank labels for the drawn boxes",
             "Top regions (rank, score)", "Region scores", "Label ranking per drawn box"]
GEO = ["Geo-retrieval", "Top-k tiles", "By text", "Describe the scene", "Search by text", "By image",
       "Optional modification text", "Search by image", "By coordinates", "Latitude (°N)", "Longitude (°E)",
       "Search by coordinates", "By place name", "Place name (GeoNames)", "Search by place",
       "Static map (PNG, works offline)", "Results", "Search over (the gallery or an indexed raster)",
       "Mark hits and refine (relevance feedback)"]
WORKBENCH = ["Raster (a bundled scene; an uploaded file takes precedence)", "GeoTIFF upload", "Tile size (px)",
             "Stride (px)",
             "Index the raster", "Tiles to label", "Labelled tiles", "Map every tile", "Before", "After",
             "Compare the dates", "Most changed tiles"]


def ensure_chromium() -> str:
    """Debian's chromium, installed with apt if missing; fails (never skips) with a clear message otherwise."""
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found:
        return found
    if os.geteuid() == 0:
        prefix = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]
    else:
        pytest.fail("Debian chromium is missing and cannot be installed here (not root, no sudo): "
                    "run `apt-get install chromium` (bash .ci/run does).")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    logs = []
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        result = subprocess.run(prefix + command, capture_output=True, text=True, env=env, timeout=900)
        logs.append(f"$ {' '.join(prefix + command)} -> {result.returncode}\n{result.stderr[-1500:]}")
        if result.returncode != 0:
            pytest.fail("could not install Debian chromium with apt:\n" + "\n".join(logs))
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"apt installed chromium but {CHROMIUM} is missing:\n" + "\n".join(logs))
    return CHROMIUM


def chromium(binary: str, url: str, *mode: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *mode, url], capture_output=True,
                                text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    binary = ensure_chromium()
    demo, url = launch_space(tmp_path_factory.mktemp("space-browser-cache"))
    yield binary, url
    demo.close()


def _text(dom: str) -> str:
    import html

    return html.unescape(dom)


def test_both_demos_are_on_the_page(page):
    binary, url = page
    dom = chromium(binary, url, "--dump-dom").stdout
    text = _text(dom)
    assert "<gradio-app" in dom and "VLM2GeoVec" in text
    missing = [label for label in GROUNDING + GEO if label not in text]
    assert not missing, f"not rendered: {missing}"
    assert dom.count("<canvas") >= 2, "the image annotators (custom component) did not render"
    assert "Connection errored out" not in text
    assert re.search(r'aria-selected="true"[^>]*data-tab-id="grounding"', dom)


def test_deep_link_opens_the_geo_tab(page):
    binary, url = page
    dom = chromium(binary, url.rstrip("/") + "/?tab=geo", "--dump-dom").stdout
    assert re.search(r'aria-selected="true"[^>]*data-tab-id="geo"', dom)
    # The map frame (rendered once its tab is visible): Leaflet from the CDN, the static map as offline fallback.
    frame = re.search(r'<iframe title="Map of the results"[^>]*srcdoc="([^"]*)"', dom)
    assert frame, "the map frame is not on the geo tab"
    doc = _text(frame.group(1))
    assert "leaflet.js" in doc and "data:image/png;base64," in doc and "showStatic" in doc


def test_deep_link_opens_the_workbench(page):
    binary, url = page
    dom = chromium(binary, url.rstrip("/") + "/?tab=workbench", "--dump-dom").stdout
    assert re.search(r'aria-selected="true"[^>]*data-tab-id="workbench"', dom)
    text = _text(dom)
    missing = [label for label in WORKBENCH if label not in text]
    assert not missing, f"not rendered: {missing}"


def test_screenshots_are_kept(page, tmp_path):
    binary, url = page
    ARTIFACTS.mkdir(exist_ok=True)
    for name, target in (("space_screenshot.png", url), ("space_screenshot_geo.png", url.rstrip("/") + "/?tab=geo"),
                         ("space_screenshot_workbench.png", url.rstrip("/") + "/?tab=workbench")):
        shot = tmp_path / name
        chromium(binary, target, f"--screenshot={shot}")
        with Image.open(shot) as image:
            assert image.size == (1280, 2000)
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 20, f"{name} looks blank"  # the sample imagery / maps are on it
        shutil.copy2(shot, ARTIFACTS / name)
    assert (ARTIFACTS / "space_screenshot.png").stat().st_size > 50_000
