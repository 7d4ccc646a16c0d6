"""The Gradio Space (space/app.py), launched in-process and called through gradio_client like a user would."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.battery import expect_error, record_correct
from tests.conftest import REPO_ROOT

SPACE = REPO_ROOT / "space"
SAMPLE = SPACE / "samples" / "neon_OSBS_029.png"  # 400x400
# gradio's own queue code trips pandas 4 deprecation warnings; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
ENDPOINTS = {"/ground", "/caption_regions", "/search_text", "/search_image", "/search_coords", "/search_place",
             "/refine", "/import_marks", "/index_raster", "/fewshot_map", "/change"}


def load_space_app():
    """space/app.py as a module (space/ is not a package); one copy per process so its model cache is shared."""
    name = "vlm2geovec_space_app"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SPACE / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def launch_space(cache_dir: Path, model_path=None):
    """Build the app with the nano default (no model given) and launch it on 127.0.0.1; returns (demo, url)."""
    app = load_space_app()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VLM2GEOVEC_MODEL", raising=False)
        demo = app.build_app(model_path, cache_dir=cache_dir)
    _, url, _ = app.launch(demo, host="127.0.0.1", prevent_thread_lock=True, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def app():
    return load_space_app()


@pytest.fixture(scope="module")
def space_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("space-cache")


@pytest.fixture(scope="module")
def space(space_cache):
    demo, url = launch_space(space_cache)
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(space, tmp_path_factory):
    from gradio_client import Client

    return Client(space[1], verbose=False, download_files=str(tmp_path_factory.mktemp("client-downloads")))


def annotated(path=SAMPLE, boxes=()):
    from gradio_client import handle_file

    return {"image": handle_file(str(path)),
            "boxes": [dict(zip(("xmin", "ymin", "xmax", "ymax"), b, strict=True)) for b in boxes]}


def app_error(call):
    """Run a call that must fail; return the message the user sees (checked to be no traceback)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        call()
    message = str(info.value)
    assert "Traceback" not in message and 'File "' not in message, message
    return message


# ----------------------------------------------------------------------------------------------------------
# Start-up, endpoints, README, requirements, samples
# ----------------------------------------------------------------------------------------------------------


def test_starts_with_the_nano_default_on_localhost(space, space_cache, client):
    demo, url = space
    info = demo.space.info()
    assert url.startswith("http://127.0.0.1:")
    assert Path(info["model"]) == space_cache / "nano" and (space_cache / "nano" / "modules.json").is_file()
    assert info["gallery_size"] > 200 and info["gallery_source"] == "computed"
    assert Path(info["gallery_cache"]).is_file() and info["fingerprint"][:20] in Path(info["gallery_cache"]).name
    assert os.environ.get("GRADIO_ANALYTICS_ENABLED") == "False" and demo.analytics_enabled is False
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == ENDPOINTS


def test_instructions_are_rsmebs():
    from rsmeb_eval.tasks import compositional, cross_modal, geospatial, grounding

    app = load_space_app()
    assert app.INSTRUCTIONS["refexp"] == grounding.REFEXP and app.INSTRUCTIONS["region"] == grounding.REGION
    assert app.INSTRUCTIONS["region_caption"] == grounding.CAPTION
    assert app.INSTRUCTIONS["region_text"] == grounding.TEXT_SIDE
    assert app.INSTRUCTIONS["gallery"] == cross_modal.IMAGE_SIDE == compositional.TARGET_SIDE
    assert app.INSTRUCTIONS["text_to_image"] == cross_modal.T2I
    assert app.INSTRUCTIONS["composed"] == compositional.INSTRUCTION
    assert app.INSTRUCTIONS["coords_to_image"] == geospatial.GeoTilesCoords2Img.metadata.query_instruction


def test_readme_header_requirements_and_attribution():
    import gradio
    import gradio_image_annotation  # noqa: F401
    from importlib.metadata import version

    readme = (SPACE / "README.md").read_text(encoding="utf-8")
    header = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
    assert header, "README.md must start with the Space YAML header"
    fields = dict(line.split(": ", 1) for line in header.group(1).splitlines() if ": " in line)
    assert fields["sdk"] == "gradio" and fields["app_file"] == "app.py"
    assert fields["sdk_version"] == gradio.__version__ == "6.31.0"
    for needed in ("python space/app.py", "--model", "VLM2GEOVEC_MODEL", "push.py", "127.0.0.1"):
        assert needed in readme, needed
    requirements = (SPACE / "requirements.txt").read_text(encoding="utf-8")
    assert "gradio==6.31.0" in requirements and "gradio_image_annotation==0.5.6" in requirements
    assert version("gradio_image_annotation") == "0.5.6" and version("gradio_client") == "2.7.2"
    assert "torchvision" not in requirements.lower()
    attribution = (SPACE / "ATTRIBUTION.md").read_text(encoding="utf-8")
    samples = sorted(p.name for p in (SPACE / "samples").glob("*.png"))
    assert len(samples) >= 4 and all(name in attribution for name in samples)
    for credit in ("NEON", "Copernicus Sentinel", "GeoNames", "Natural Earth", "CC BY 4.0"):
        assert credit in attribution


def test_gradio_pulls_no_torchvision():
    from importlib.metadata import PackageNotFoundError, requires

    seen, todo = set(), ["gradio", "gradio_image_annotation", "gradio_client"]
    while todo:
        name = re.split(r"[<>=!~;\[ ]", todo.pop())[0].strip().lower().replace("_", "-")
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            deps = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [d for d in deps if "extra ==" not in d]
    assert "gradio" in seen and not {"torchvision", "timm", "open-clip-torch"} & seen


def test_samples_are_the_vendored_real_imagery():
    spec = importlib.util.spec_from_file_location("vlm2geovec_space_samples", SPACE / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.sample_images()
    shipped = {p.name for p in (SPACE / "samples").glob("*.png")}
    assert shipped == set(expected)
    for name, (image, _meta) in expected.items():
        with Image.open(SPACE / "samples" / name) as f:
            assert np.array_equal(np.asarray(f.convert("RGB")), np.asarray(image)), name
    assert np.array_equal(np.asarray(Image.open(SPACE / "samples" / "neon_OSBS_029.png").convert("RGB")),
                          np.asarray(Image.open(REPO_ROOT / "examples" / "images" / "OSBS_029.png").convert("RGB")))


# ----------------------------------------------------------------------------------------------------------
# Grounding
# ----------------------------------------------------------------------------------------------------------


def _inside(box, size):
    x1, y1, x2, y2 = box
    return 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]


def test_windows_cover_the_image_at_every_scale(app):
    for width, height in ((400, 400), (384, 250), (37, 90)):
        for scale in app.SCALES:
            boxes = [box for _, box in app.window_boxes(width, height, [scale])]
            assert boxes and all(_inside(b, (width, height)) for b in boxes)
            covered = np.zeros((height, width), dtype=bool)
            for x1, y1, x2, y2 in boxes:
                covered[y1:y2, x1:x2] = True
            assert covered.all(), (width, height, scale)
    assert len(app.window_boxes(400, 400, app.DEFAULT_SCALES)) == 9 + 36 + 49


def test_ground_by_text_returns_boxes_inside_the_image_sorted_by_score(space, client, app):
    drawn = (150, 240, 240, 320)
    # (How long this takes is measured by space/bench_space.py, not asserted here.)
    shown, table, result = client.predict(annotated(boxes=[drawn]), "a dead pine crown", ["1/2", "1/3", "1/4"], 6,
                                          api_name="/ground")
    assert result["image_size"] == [400, 400] and result["expression"] == "a dead pine crown"
    assert result["candidates"] == 1 + len(app.window_boxes(400, 400, ["1/2", "1/3", "1/4"]))  # drawn + windows
    regions = result["regions"]
    assert len(regions) == 6 and [r["rank"] for r in regions] == list(range(1, 7))
    scores = [r["score"] for r in regions]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    assert all(_inside(r["box"], (400, 400)) for r in regions)
    for i, a in enumerate(regions):  # non-maximum suppression
        assert all(app.iou(a["box"], b["box"]) <= app.NMS_IOU for b in regions[i + 1:])
    # The drawn box is a candidate: restricted to it (no windows) it is the single answer.
    _, _, only = client.predict(annotated(boxes=[drawn]), "a dead pine crown", [], 3, api_name="/ground")
    assert [r["box"] for r in only["regions"]] == [list(map(float, drawn))]
    assert only["regions"][0]["source"] == "drawn box 1"
    # The annotated image and the table show the same regions.
    assert Path(shown["image"]).is_file()
    assert [[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in shown["boxes"]] == [r["box"] for r in regions]
    assert all(b["label"].startswith(f"#{r['rank']} ") and re.fullmatch(r"#[0-9a-f]{6}", b["color"])
               for b, r in zip(shown["boxes"], regions, strict=True))
    assert [row[0] for row in table["data"]] == list(range(1, 7))
    # Scores are what the model says: cosine of region vs image + expression, with RSMEB's instructions.
    model = space[0].space.loaded.model
    image = Image.open(SAMPLE).convert("RGB")
    best = regions[0]["box"]
    region = model.encode([{"image": image, "bbox": best}], prompt=app.INSTRUCTIONS["region"])
    query = model.encode([{"image": image, "text": "a dead pine crown"}], prompt=app.INSTRUCTIONS["refexp"])
    assert math.isclose(float(region[0] @ query[0]), regions[0]["score"], abs_tol=1e-4)


def test_reverse_grounding_ranks_the_labels_for_a_drawn_box(space, client, app):
    labels = "a tree crown\nbare sand\na road\n\na tree crown\nwater"
    boxes = [(150, 240, 240, 320), (10, 10, 110, 90)]
    shown, table, result = client.predict(annotated(boxes=boxes), labels, api_name="/caption_regions")
    assert len(result["boxes"]) == 2
    model = space[0].space.loaded.model
    image = Image.open(SAMPLE).convert("RGB")
    unique = ["a tree crown", "bare sand", "a road", "water"]  # blank lines and duplicates dropped
    label_vectors = model.encode(unique, prompt=app.INSTRUCTIONS["region_text"])
    for entry, box in zip(result["boxes"], boxes, strict=True):
        assert entry["box"] == list(map(float, box))
        ranking = entry["ranking"]
        assert sorted(r["label"] for r in ranking) == sorted(unique)
        assert [r["rank"] for r in ranking] == [1, 2, 3, 4]
        scores = [r["score"] for r in ranking]
        assert scores == sorted(scores, reverse=True)
        query = model.encode([{"image": image, "bbox": list(box)}], prompt=app.INSTRUCTIONS["region_caption"])[0]
        expected = {label: float(v @ query) for label, v in zip(unique, label_vectors, strict=True)}
        assert all(math.isclose(r["score"], expected[r["label"]], abs_tol=1e-4) for r in ranking)
    assert [b["label"].split(": ", 1)[1] for b in shown["boxes"]] == [e["ranking"][0]["label"] for e in result["boxes"]]
    assert len(table["data"]) == 8


# ----------------------------------------------------------------------------------------------------------
# Geo-retrieval
# ----------------------------------------------------------------------------------------------------------


def _check_geo(space, outputs, k):
    gallery_files, table, result, static_map, html, query_id, relevant, not_relevant, marks = outputs
    assert query_id == result["query_id"] and marks is None
    tiles = {t.id: t for t in space[0].space.gallery.tiles}
    results = result["results"]
    assert result["k"] == k and len(results) == k and [r["rank"] for r in results] == list(range(1, k + 1))
    assert len({r["id"] for r in results}) == k
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r in results:
        assert -90 <= r["lat"] <= 90 and -180 <= r["lon"] <= 180
        assert (r["lat"], r["lon"]) == (tiles[r["id"]].lat, tiles[r["id"]].lon)
    assert len(gallery_files) == k and all(Path(g["image"]).is_file() for g in gallery_files)
    assert [row[1] for row in table["data"]] == [r["id"] for r in results]
    with Image.open(static_map) as png:
        assert png.format == "PNG" and png.size[0] >= 800
    assert "<iframe" in html and "leaflet" in html and "data:image/png;base64," in html
    for r in results:
        assert r["id"] in html  # the markers' data
    return result


def test_search_by_text_returns_k_tiles_with_coordinates(space, client, app):
    result = _check_geo(space, client.predict("a barrier island beach", 7, api_name="/search_text"), 7)
    state = space[0].space
    query = state.loaded.model.encode(["a barrier island beach"], prompt=app.INSTRUCTIONS["text_to_image"])[0]
    expected = np.argsort(-(state.gallery.vectors @ query), kind="stable")[:7]
    assert [r["id"] for r in result["results"]] == [state.gallery.tiles[i].id for i in expected]


def test_search_by_image_with_box_and_text(space, client):
    sample = SPACE / "samples" / "s2_barrier_island.png"
    plain = _check_geo(space, client.predict(annotated(sample), "", 5, api_name="/search_image"), 5)
    assert plain["query"] == {"kind": "image", "image_size": [384, 384]}
    boxed = _check_geo(space, client.predict(annotated(sample, [(100, 100, 260, 300)]), "", 5,
                                             api_name="/search_image"), 5)
    assert boxed["query"]["box"] == [100.0, 100.0, 260.0, 300.0]
    composed = _check_geo(space, client.predict(annotated(sample, [(100, 100, 260, 300)]), "with more farmland", 4,
                                                api_name="/search_image"), 4)
    assert composed["query"]["text"] == "with more farmland"


def test_search_by_coordinates_and_place_name(space, client):
    coords = _check_geo(space, client.predict(37.69, -75.61, 6, api_name="/search_coords"), 6)
    assert (coords["query"]["lat"], coords["query"]["lon"]) == (37.69, -75.61)
    place = _check_geo(space, client.predict("Norfolk, US", 5, api_name="/search_place"), 5)
    resolved = place["query"]["resolved"]
    assert resolved["name"] == "Norfolk" and resolved["country"] == "United States" and resolved["admin1"] == "VA"
    assert abs(place["query"]["lat"] - 36.85) < 0.05 and abs(place["query"]["lon"] + 76.29) < 0.05
    accents = client.predict("sao paulo", 3, api_name="/search_place")[2]
    assert accents["query"]["resolved"]["name"] == "São Paulo" and len(accents["results"]) == 3


# ----------------------------------------------------------------------------------------------------------
# Bad input: friendly messages, no tracebacks
# ----------------------------------------------------------------------------------------------------------


def test_box_outside_the_image_is_refused_with_the_processors_message(client):
    outside = annotated(boxes=[(350, 10, 500, 90)])
    for call in (lambda: client.predict(outside, "a tree", ["1/2"], 3, api_name="/ground"),
                 lambda: client.predict(outside, "a tree\nwater", api_name="/caption_regions"),
                 lambda: client.predict(outside, "", 3, api_name="/search_image")):
        message = app_error(call)
        assert "box (350, 10, 500, 90) lies outside the 400x400 image" in message, message
    assert "x2 (10) must be greater than x1 (50)" in app_error(
        lambda: client.predict(annotated(boxes=[(50, 10, 10, 90)]), "a tree", [], 3, api_name="/ground"))


def test_invalid_coordinates_and_unknown_places(client):
    message = app_error(lambda: client.predict(95, 10, 5, api_name="/search_coords"))
    assert "latitude must lie in [-90, 90], got 95" in message
    assert "longitude must lie in [-180, 180], got 200" in app_error(
        lambda: client.predict(10, 200, 5, api_name="/search_coords"))
    assert "enter both a latitude and a longitude" in app_error(
        lambda: client.predict(None, 10, 5, api_name="/search_coords"))
    message = app_error(lambda: client.predict("Xyzzyville", 5, api_name="/search_place"))
    assert "unknown place 'Xyzzyville'" in message
    assert "Did you mean 'Norfolk'" in app_error(lambda: client.predict("Norfok", 5, api_name="/search_place"))


def test_missing_or_empty_inputs(client):
    assert "enter some text" in app_error(lambda: client.predict(annotated(), "   ", ["1/2"], 3, api_name="/ground"))
    assert "upload an image" in app_error(lambda: client.predict(None, "a tree", ["1/2"], 3, api_name="/ground"))
    assert "draw at least one box" in app_error(
        lambda: client.predict(annotated(), "a\nb", api_name="/caption_regions"))
    assert "at least one caption or label" in app_error(
        lambda: client.predict(annotated(boxes=[(0, 0, 50, 50)]), "\n \n", api_name="/caption_regions"))
    assert "enter some text" in app_error(lambda: client.predict("", 5, api_name="/search_text"))
    assert "choose at least one window scale or draw a box" in app_error(
        lambda: client.predict(annotated(), "a tree", [], 3, api_name="/ground"))
    assert "Top-k tiles: must lie in [1, 24], got 0" in app_error(lambda: client.predict("beach", 0,
                                                                                         api_name="/search_text"))


def test_oversized_and_unreadable_uploads(client, space, app, tmp_path, monkeypatch):
    from gradio_client import handle_file

    # Pixel count: a 5000x5000 PNG is small on disk but above the 4096^2 limit; refused from its header.
    big = tmp_path / "big.png"
    Image.new("RGB", (5000, 5000), (20, 110, 40)).save(big)
    message = app_error(lambda: client.predict(annotated(big), "a field", ["1/2"], 3, api_name="/ground"))
    assert "5000x5000 = 25,000,000 pixels is above the limit of 16,777,216" in message
    # Not an image at all.
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not a PNG")
    assert "not an image format Pillow can read" in app_error(
        lambda: client.predict(annotated(junk), "", 3, api_name="/search_image"))
    # File size: the server refuses uploads above the limit (HTTP 413) and gradio_client refuses to send them...
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (700, 700, 3), dtype=np.uint8)).save(noise)
    assert noise.stat().st_size > 1024 * 1024
    import httpx

    url = space[1].rstrip("/") + "/gradio_api/upload"
    over = tmp_path / "over.png"
    over.write_bytes(os.urandom(int(app.settings.MAX_UPLOAD_MB * 1024 * 1024) + 1))
    with open(over, "rb") as handle:
        response = httpx.post(url, files={"files": ("over.png", handle, "image/png")}, timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict({"image": handle_file(str(over)), "boxes": []}, "x", ["1/2"], 3, api_name="/ground")
    # ...and the app's own check (used when it is launched without the server limit) gives a readable message.
    monkeypatch.setattr(app.settings, "MAX_UPLOAD_MB", 1)
    assert "MB is above the limit of 1 MB" in app_error(
        lambda: client.predict(annotated(noise), "a field", ["1/2"], 3, api_name="/ground"))


# ----------------------------------------------------------------------------------------------------------
# Battery: every endpoint called as an attacker would (tests/battery.py). Each case ends in a message naming
# the field (checked on the client's AppError) or in a result checked against the model itself.
# ----------------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit RGB pixels (a decompression-bomb probe)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def battery_files(tmp_path_factory):
    """Crafted uploads, written once per module."""
    folder = tmp_path_factory.mktemp("battery-files")
    rng = np.random.default_rng(7)
    files = {}
    files["bomb"] = folder / "bomb.png"
    files["bomb"].write_bytes(_png_claiming(30000, 30000))
    files["junk"] = folder / "junk.png"
    files["junk"].write_bytes(b"definitely not an image, just text")
    files["empty"] = folder / "empty.png"
    files["empty"].write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, format="PNG")
    files["truncated"] = folder / "truncated.png"
    files["truncated"].write_bytes(good.getvalue()[: len(good.getvalue()) // 2])  # valid header, half the data
    files["wide"] = folder / "wide.png"
    Image.new("RGB", (1000, 1), (90, 120, 60)).save(files["wide"])
    files["gray16"] = folder / "gray16.png"
    ramp = (np.linspace(0, 65535, 96 * 96).reshape(96, 96)).astype(np.uint16)
    Image.fromarray(ramp).save(files["gray16"])  # mode I;16
    files["rgba"] = folder / "rgba.png"
    rgba = rng.integers(0, 255, (120, 160, 4), dtype=np.uint8)
    rgba[:, :80, 3] = 0  # half of it fully transparent
    Image.fromarray(rgba, mode="RGBA").save(files["rgba"])
    files["palette"] = folder / "palette.png"
    Image.open(SPACE / "samples" / "s2_barrier_island.png").convert("RGB").quantize(16).save(files["palette"])
    files["tiny"] = folder / "tiny.png"
    Image.new("RGB", (1, 1), (10, 200, 30)).save(files["tiny"])
    files["rotated"] = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 300, 200)).save(files["rotated"], exif=exif, quality=95)
    return files


def upload(client_url: str, path: Path) -> dict:
    """Upload a file the way the browser does; returns its FileData for a raw call."""
    import httpx

    with open(path, "rb") as handle:
        response = httpx.post(client_url.rstrip("/") + "/gradio_api/upload",
                              files={"files": (path.name, handle, "application/octet-stream")}, timeout=60)
    response.raise_for_status()
    return {"path": response.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


class StreamedError(ValueError):
    """The error event of a raw call, as the user's client receives it."""


def raw_call(client_url: str, api_name: str, body: str) -> None:
    """POST a JSON body as text (NaN, Infinity and 1e400 literals that gradio_client refuses to send); raise the
    error message the server streams back as :class:`StreamedError`; fails if no error comes back."""
    import httpx

    base = client_url.rstrip("/") + f"/gradio_api/call/{api_name.lstrip('/')}"
    response = httpx.post(base, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    event_id = response.json()["event_id"]
    stream = httpx.get(f"{base}/{event_id}", timeout=120).text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, re.M)
    assert events and events[-1][0] == "error", f"expected an error event, got:\n{stream[:2000]}"
    data = events[-1][1]
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        message = data
    raise StreamedError(message if isinstance(message, str) else json.dumps(message))


def _box(**values):
    box = {"xmin": 150, "ymin": 240, "xmax": 240, "ymax": 320}
    box.update(values)
    return {key: value for key, value in box.items() if value is not ...}


def _with_boxes(boxes):
    from gradio_client import handle_file

    return {"image": handle_file(str(SAMPLE)), "boxes": boxes}


# (id, endpoint, arguments after the client's defaults are filled in, text the message must contain)
_GROUND = ("a tree", ["1/2"], 3)
BATTERY_ERRORS = [
    # Boxes from the annotator, malformed.
    ("box-xmin-text", "/ground", lambda f: (_with_boxes([_box(xmin="a")]), *_GROUND),
     "Image: box 1 'xmin': expected a number, got str 'a'"),
    ("box-missing-key", "/ground", lambda f: (_with_boxes([_box(ymax=...)]), *_GROUND),
     "Image: box 1 has no 'ymax'"),
    ("box-missing-keys", "/caption_regions", lambda f: (_with_boxes([{"xmin": 1}]), "a\nb"),
     "Image: box 1 has no 'ymin', 'xmax', 'ymax'"),
    ("boxes-as-string", "/ground", lambda f: (_with_boxes("150,240,240,320"), *_GROUND),
     "Image: 'boxes' must be a list"),
    ("box-as-list", "/search_image", lambda f: (_with_boxes([[150, 240, 240, 320]]), "", 3),
     "Query image: box 1 must be {'xmin', 'ymin', 'xmax', 'ymax'} in pixels, got list"),
    ("box-bool", "/ground", lambda f: (_with_boxes([_box(xmax=True)]), *_GROUND),
     "Image: box 1 'xmax': expected a number, got bool True"),
    ("box-10**400", "/ground", lambda f: (_with_boxes([_box(xmax=10**400)]), *_GROUND),
     "Image: box 1 'xmax': 1000000000"),
    ("box-1e300", "/ground", lambda f: (_with_boxes([_box(xmax=1e300)]), *_GROUND),
     "Drawn box 1 (bbox): box (150, 240, 1e+300, 320) lies outside the 400x400 image"),
    ("box-negative", "/ground", lambda f: (_with_boxes([_box(xmin=-5)]), *_GROUND),
     "Drawn box 1 (bbox): box (-5, 240, 240, 320) lies outside the 400x400 image"),
    ("box-x2-before-x1", "/caption_regions", lambda f: (_with_boxes([_box(xmin=300)]), "a\nb"),
     "Drawn box 1 (bbox): x2 (240) must be greater than x1 (300)"),
    ("box-empty", "/search_image", lambda f: (_with_boxes([_box(xmax=150)]), "", 3),
     "Query image (bbox): x2 (150) must be greater than x1 (150)"),
    ("box-colour-number", "/ground", lambda f: (_with_boxes([_box(color=255)]), *_GROUND),
     "Image: box 1 'color' must be text"),
    ("box-scale-zero", "/ground", lambda f: (_with_boxes([_box(scaleFactor=0)]), *_GROUND),
     "Image: box 1 'scaleFactor': must lie in"),
    ("too-many-boxes", "/caption_regions", lambda f: (_with_boxes([_box()] * 9), "a\nb"),
     "Boxes: at most 8 boxes at a time, got 9"),
    # The annotator's payload itself.
    ("annotation-as-string", "/ground", lambda f: ("a picture", *_GROUND),
     "Image: expected {'image': <file>, 'boxes': [...]}, got str 'a picture'"),
    ("image-as-plain-path", "/search_image", lambda f: ({"image": str(SAMPLE), "boxes": []}, "", 3),
     "Query image: 'image' must be an uploaded file"),
    ("image-missing", "/caption_regions", lambda f: (None, "a\nb"), "Image: upload an image or pick a sample"),
    # Regions to show / top-k.
    ("top-k-text", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2"], "five"),
     "Regions to show: expected a number, got str 'five'"),
    ("top-k-zero", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2"], 0),
     "Regions to show: must lie in [1, 20], got 0"),
    ("top-k-negative", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2"], -3),
     "Regions to show: must lie in [1, 20], got -3"),
    ("top-k-1e9", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2"], 1e9),
     "Regions to show: must lie in [1, 20], got 1000000000"),
    ("top-k-fraction", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2"], 2.5),
     "Regions to show: expected a whole number, got 2.5"),
    ("k-text", "/search_text", lambda f: ("a beach", "eight"), "Top-k tiles: expected a number, got str 'eight'"),
    ("k-bool", "/search_place", lambda f: ("Norfolk, US", True), "Top-k tiles: expected a number, got bool True"),
    ("k-zero", "/search_coords", lambda f: (37.69, -75.61, 0), "Top-k tiles: must lie in [1, 24], got 0"),
    ("k-negative", "/search_image", lambda f: (annotated(), "", -3), "Top-k tiles: must lie in [1, 24], got -3"),
    ("k-1e9", "/search_text", lambda f: ("a beach", 1e9), "Top-k tiles: must lie in [1, 24], got 1000000000"),
    ("k-list", "/search_text", lambda f: ("a beach", [5]), "Top-k tiles: expected a number, got list [5]"),
    # Window scales.
    ("scales-as-string", "/ground", lambda f: (_with_boxes([]), "a tree", "1/2", 3),
     "Window scales: expected a list such as ['1/2', '1/3'], got str '1/2'"),
    ("scales-unknown", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/5"], 3),
     "Window scales: unknown ['1/5']; choose from ['1/2', '1/3', '1/4', '1/6']"),
    ("too-many-windows", "/ground", lambda f: (_with_boxes([]), "a tree", ["1/2", "1/3", "1/4", "1/6"], 3),
     "regions (drawn boxes + windows) exceed the limit of 160"),
    # Text fields.
    ("expression-number", "/ground", lambda f: (_with_boxes([]), 42, ["1/2"], 3),
     "Referring expression: expected text, got int 42"),
    ("labels-as-list", "/caption_regions", lambda f: (_with_boxes([_box()]), ["a tree", "water"]),
     "Labels: expected text, got list"),
    ("labels-too-many", "/caption_regions", lambda f: (_with_boxes([_box()]), "\n".join(map(str, range(65)))),
     "Labels: at most 64, got 65"),
    ("query-text-too-long", "/search_text", lambda f: ("x" * 2000, 5),
     "Query text: at most 1000 characters, got 2000"),
    ("query-text-dict", "/search_text", lambda f: ({"text": "a beach"}, 5), "Query text: expected text, got dict"),
    ("modification-number", "/search_image", lambda f: (annotated(), 3.5, 5),
     "Modification text: expected text, got float 3.5"),
    # Places.
    ("place-unknown", "/search_place", lambda f: ("Atlantis, Mars", 5), "Place name: unknown place 'Atlantis, Mars'"),
    ("place-wrong-country", "/search_place", lambda f: ("Norfolk, France", 5), "unknown place 'Norfolk, France'"),
    ("place-blank", "/search_place", lambda f: ("  ", 5), "Place name: enter a city"),
    ("place-number", "/search_place", lambda f: (12345, 5), "Place name: expected text, got int 12345"),
    ("place-too-long", "/search_place", lambda f: ("Paris" * 50, 5), "Place name: at most 200 characters, got 250"),
    # Coordinates.
    ("lat-text", "/search_coords", lambda f: ("north", -75.61, 5), "Latitude: expected a number, got str 'north'"),
    ("lat-numeric-text", "/search_coords", lambda f: ("37.69", -75.61, 5),
     "Latitude: expected a number, got str '37.69'"),
    ("lon-list", "/search_coords", lambda f: (37.69, [1, 2], 5), "Longitude: expected a number, got list [1, 2]"),
    ("lat-10**400", "/search_coords", lambda f: (10**400, -75.61, 5), "Latitude: 1000000000"),
    ("lat-out-of-range", "/search_coords", lambda f: (-90.5, -75.61, 5),
     "Query (coords.lat): latitude must lie in [-90, 90], got -90.5"),
    ("lon-out-of-range", "/search_coords", lambda f: (37.69, 180.01, 5),
     "Query (coords.lon): longitude must lie in [-180, 180], got 180.01"),
    ("lon-missing", "/search_coords", lambda f: (37.69, None, 5), "Coordinates: enter both a latitude and a longitude"),
    # Uploads.
    ("upload-bomb-30000x30000", "/ground", lambda f: (annotated(f["bomb"]), *_GROUND),
     "Upload bomb.png: its header claims 900,000,000 pixels, above the limit of 16,777,216"),
    ("upload-not-an-image", "/search_image", lambda f: (annotated(f["junk"]), "", 3),
     "Upload junk.png: not an image format Pillow can read"),
    ("upload-empty-file", "/caption_regions", lambda f: (annotated(f["empty"], [(0, 0, 1, 1)]), "a"),
     "Upload empty.png: not an image format Pillow can read"),
    ("upload-truncated", "/ground", lambda f: (annotated(f["truncated"]), *_GROUND),
     "Upload truncated.png: cannot decode image from 'truncated.png' (corrupt or truncated)"),
    ("upload-1000x1", "/search_image", lambda f: (annotated(f["wide"]), "", 3),
     "Upload wide.png: image 'wide.png' is 1000x1, an aspect ratio above 200"),
]

# Bodies gradio_client cannot send (JSON has no NaN or infinity; 1e400 parses as infinity on the server).
# "IMAGE" stands for an uploaded sample; "BOX" for a box on it whose one coordinate is replaced.
BATTERY_RAW = [
    ("box-nan", "/ground", '[{"image": IMAGE, "boxes": [BOX xmin NaN]}, "a tree", ["1/2"], 3]',
     "Image: box 1 'xmin': expected a finite number, got nan"),
    ("box-1e400", "/caption_regions", '[{"image": IMAGE, "boxes": [BOX xmax 1e400]}, "a"]',
     "Image: box 1 'xmax': expected a finite number, got inf"),
    ("box-minus-infinity", "/search_image", '[{"image": IMAGE, "boxes": [BOX ymin -Infinity]}, "", 3, "gallery"]',
     "Query image: box 1 'ymin': expected a finite number, got -inf"),
    ("top-k-nan", "/ground", '[{"image": IMAGE, "boxes": []}, "a tree", ["1/2"], NaN]',
     "Regions to show: expected a finite number, got nan"),
    ("k-nan", "/search_text", '["a beach", NaN, "gallery"]', "Top-k tiles: expected a finite number, got nan"),
    ("k-infinity", "/search_place", '["Norfolk, US", Infinity, "gallery"]', "Top-k tiles: expected a finite number, got inf"),
    ("lat-nan", "/search_coords", '[NaN, -75.61, 5, "gallery"]', "Latitude: expected a finite number, got nan"),
    ("lon-1e400", "/search_coords", '[37.69, 1e400, 5, "gallery"]', "Longitude: expected a finite number, got inf"),
]


def _raw_body(template: str, image: str) -> str:
    def box(match):
        values = {"xmin": "150", "ymin": "240", "xmax": "240", "ymax": "320", match.group(1): match.group(2)}
        return "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"

    return '{"data": ' + re.sub(r"BOX (\w+) (\S+?)\]", lambda m: box(m) + "]", template).replace("IMAGE", image) + "}"


def _expect_app_error(call, needle: str, kind=None) -> str:
    """The call fails with ``needle`` in the message the client shows (gradio's AppError), no traceback, and not
    gradio's generic "upstream app has raised an exception"."""
    from gradio_client.exceptions import AppError

    message = str(expect_error(call, exceptions=kind or AppError, match=re.escape(needle)))
    assert not any(marker in message for marker in ("Traceback", 'File "', "KeyError", "upstream")), message
    return message


@pytest.mark.battery
@pytest.mark.parametrize("endpoint, make_args, needle", [c[1:] for c in BATTERY_ERRORS],
                         ids=[c[0] for c in BATTERY_ERRORS])
def test_battery_clear_error(client, battery_files, endpoint, make_args, needle):
    args = make_args(battery_files)
    _expect_app_error(lambda: client.predict(*args, api_name=endpoint), needle)


@pytest.mark.battery
@pytest.mark.parametrize("endpoint, body, needle", [c[1:] for c in BATTERY_RAW], ids=[c[0] for c in BATTERY_RAW])
def test_battery_raw_json_clear_error(space, endpoint, body, needle):
    url = space[1]
    data = _raw_body(body, json.dumps(upload(url, SAMPLE)))
    _expect_app_error(lambda: raw_call(url, endpoint, data), needle, kind=StreamedError)


def _gallery_ranking(space, item, instruction, k):
    state = space[0].space
    query = state.loaded.model.encode([item], prompt=instruction)[0]
    return [state.gallery.tiles[i].id for i in np.argsort(-(state.gallery.vectors @ query), kind="stable")[:k]]


@pytest.mark.battery
@pytest.mark.parametrize("name", ["gray16", "rgba", "palette", "tiny", "rotated"])
def test_battery_unusual_images_are_read_as_encode_reads_them(space, client, app, battery_files, name):
    """16-bit, RGBA, palette, 1x1 and EXIF-rotated uploads: the Space ranks the gallery exactly as the model ranks
    it for the same file given to ``encode`` (the processor's rules: alpha onto white, 16-bit stretched,
    EXIF orientation applied), or refuses the file with the processor's own message."""
    path = battery_files[name]
    try:
        expected = _gallery_ranking(space, {"image": str(path)}, app.INSTRUCTIONS["image_to_image"], 5)
    except ValueError as error:  # the processor refuses it: the Space must say the same
        _expect_app_error(lambda: client.predict(annotated(path), "", 5, api_name="/search_image"),
                          str(error).split(": ", 1)[1][:60])
        return
    result = _check_geo(space, client.predict(annotated(path), "", 5, api_name="/search_image"), 5)
    assert [r["id"] for r in result["results"]] == expected
    with Image.open(path) as original:
        upright = (original.size[1], original.size[0]) if name == "rotated" else original.size
    assert result["query"]["image_size"] == list(upright)
    record_correct()


@pytest.mark.battery
def test_battery_grounding_on_a_1x1_image(client, battery_files):
    """The smallest image: every window is the whole pixel, so one candidate comes back, covering it."""
    _, _, result = client.predict(annotated(battery_files["tiny"]), "a field", ["1/2", "1/3"], 5, api_name="/ground")
    assert result["image_size"] == [1, 1] and result["candidates"] == 1
    assert [r["box"] for r in result["regions"]] == [[0.0, 0.0, 1.0, 1.0]]
    record_correct()


@pytest.mark.battery
@pytest.mark.parametrize("place, resolved", [("  zurich ,  switzerland ", "Zürich"), ("SÃO PAULO", "São Paulo"),
                                             ("Paris, FR", "Paris")])
def test_battery_place_names_fold_case_accents_and_spaces(space, client, app, place, resolved):
    result = client.predict(place, 4, api_name="/search_place")[2]
    query = result["query"]
    assert query["resolved"]["name"] == resolved
    expected = _gallery_ranking(space, {"coords": (query["lat"], query["lon"])}, app.INSTRUCTIONS["coords_to_image"], 4)
    assert [r["id"] for r in result["results"]] == expected
    record_correct()


@pytest.mark.battery
@pytest.mark.parametrize("lat, lon", [(90, 180), (-90, -180), (0, 0), ("whole-number", 5)])
def test_battery_coordinate_edges_give_the_models_ranking(space, client, app, lat, lon):
    """The poles, the antimeridian, null island, and integers: valid coordinates, ranked as encode ranks them."""
    if lat == "whole-number":
        lat, lon = 37, -76  # ints, not floats
    result = _check_geo(space, client.predict(lat, lon, 6, api_name="/search_coords"), 6)
    expected = _gallery_ranking(space, {"coords": (lat, lon)}, app.INSTRUCTIONS["coords_to_image"], 6)
    assert [r["id"] for r in result["results"]] == expected
    record_correct()


@pytest.mark.battery
def test_battery_a_server_file_outside_the_uploads_is_refused(space):
    """An attacker naming a server file as the image: gradio's own upload-folder check refuses it, by name."""
    body = json.dumps({"data": [{"image": {"path": "/etc/passwd", "orig_name": "passwd",
                                           "meta": {"_type": "gradio.FileData"}}, "boxes": []}, "", 3, "gallery"]})
    message = _expect_app_error(lambda: raw_call(space[1], "/search_image", body),
                                "Upload: refused a file path that was not uploaded to this app", kind=StreamedError)
    assert "root:" not in message and "/etc/passwd" not in message


def test_page_loads_print_nothing(space, capfd):
    """gradio prints a line for every custom-component file a browser fetches; the Space keeps them at debug."""
    import httpx
    from gradio_image_annotation import image_annotator

    capfd.readouterr()
    url = space[1].rstrip("/") + f"/gradio_api/custom_component/{image_annotator.get_component_class_id()}"
    assert httpx.get(f"{url}/client/component/index.js", timeout=30).status_code == 200  # the route that printed
    out, err = capfd.readouterr()
    assert "environment=client" not in out + err, out + err


# ----------------------------------------------------------------------------------------------------------
# Caching, model selection, main()
# ----------------------------------------------------------------------------------------------------------


def test_gallery_cache_is_reused_by_a_second_build(space, space_cache, app, nano_dir):
    first = space[0].space
    nano_mtime = (space_cache / "nano" / "modules.json").stat().st_mtime_ns
    cache_file = first.gallery.cache_file
    cache_mtime = cache_file.stat().st_mtime_ns
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VLM2GEOVEC_MODEL", raising=False)
        again = app.build_app(cache_dir=space_cache).space
    assert again.loaded is first.loaded  # one model load per process
    assert again.gallery.source == "disk cache" and again.encoded_items == 0  # nothing re-embedded
    assert np.array_equal(again.gallery.vectors, first.gallery.vectors)
    assert cache_file.stat().st_mtime_ns == cache_mtime
    assert (space_cache / "nano" / "modules.json").stat().st_mtime_ns == nano_mtime  # nano built once
    # --model with another folder holding the same weights: a new load, same fingerprint, same cache file.
    other = app.build_app(str(nano_dir), cache_dir=space_cache).space
    assert other.loaded is not first.loaded and other.loaded.source == str(nano_dir)
    assert other.loaded.fingerprint == first.loaded.fingerprint
    assert other.gallery.source == "disk cache" and other.encoded_items == 0
    # VLM2GEOVEC_MODEL selects the model when no path is given.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLM2GEOVEC_MODEL", str(nano_dir))
        assert app.get_model(None, space_cache) is other.loaded


def test_main_parses_model_host_and_port(app, monkeypatch, space_cache, nano_dir):
    calls = []
    monkeypatch.setattr(app, "launch", lambda demo, host, port, **kw: calls.append((demo, host, port)))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    assert app.main(["--model", str(nano_dir), "--cache-dir", str(space_cache)]) == 0
    demo, host, port = calls[-1]
    assert (host, port) == ("127.0.0.1", 7860) and demo.space.loaded.source == str(nano_dir)
    assert app.main(["--model", str(nano_dir), "--cache-dir", str(space_cache), "--host", "0.0.0.0",
                     "--port", "7999"]) == 0
    assert calls[-1][1:] == ("0.0.0.0", 7999)


def test_push_stages_a_self_contained_space(tmp_path):
    spec = importlib.util.spec_from_file_location("vlm2geovec_space_push", SPACE / "push.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = {p.relative_to(tmp_path / "s").as_posix() for p in module.stage(tmp_path / "s")}
    for needed in ("app.py", "requirements.txt", "README.md", "ATTRIBUTION.md", "samples/neon_OSBS_029.png",
                   "vlm2geovec/__init__.py", "vlm2geovec/data/assets.py", "vlm2geovec_space/state.py",
                   "vlm2geovec_space/analysis.py", "vlm2geovec_space/rasters.py",
                   "vlm2geovec/data/naturalearth_110m_countries.geojson",
                   "modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py"):
        assert needed in files, needed
    assert not any("__pycache__" in f for f in files)
    # the Space runs on the package alone: the benchmark's sources are not shipped
    assert not any(f.startswith("rsmeb_eval/") for f in files), sorted(f for f in files if f.startswith("rsmeb"))
    # every module of the Space's own package is staged
    own = {p.relative_to(SPACE).as_posix() for p in (SPACE / "vlm2geovec_space").glob("*.py")}
    assert own and own <= files, sorted(own - files)


def test_push_dry_run_lists_the_files():
    import subprocess

    result = subprocess.run([sys.executable, str(SPACE / "push.py"), "--dry-run"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"\d+ files, [\d.]+ MB \(dry run: nothing staged or pushed\)", lines[-1]), lines[-1]
    listed = set(lines[:-1])
    assert int(lines[-1].split()[0]) == len(listed)
    assert {"app.py", "vlm2geovec_space/state.py", "vlm2geovec/geotiff.py", "vlm2geovec/data/assets.py",
            "processing_vlm2geovec.py"} <= listed


def test_static_map_and_leaflet_fallback(app, space):
    gallery = space[0].space.gallery
    results = [{"rank": 1, "id": gallery.tiles[0].id, "score": 0.5, "lat": gallery.tiles[0].lat,
                "lon": gallery.tiles[0].lon, "source": "s"}]
    png = app.static_map_png(gallery.latlon, results, {"lat": 36.85, "lon": -76.29, "label": "Norfolk"}, "t")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1000, 440)
    html = app.leaflet_html(gallery, results, None, png)
    assert 'sandbox="allow-scripts allow-popups"' in html
    doc = __import__("html").unescape(re.search(r'srcdoc="(.*)"', html, re.S).group(1))
    assert app.LEAFLET_JS[1] in doc and "showStatic()" in doc and 'onerror="showStatic()"' in doc
    data = json.loads(re.search(r"var DATA = (.*?);\n", doc).group(1))
    assert data["results"][0]["id"] == gallery.tiles[0].id and len(data["gallery"]) == len(gallery.tiles)
