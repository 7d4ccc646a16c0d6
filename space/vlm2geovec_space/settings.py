"""Settings, limits and shared constants of the Space (environment overrides where a host needs them)."""

from __future__ import annotations

import os
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parent.parent  # space/ (the Space repository's root once staged)
SAMPLES_DIR = SPACE_DIR / "samples"


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
# An indexed raster: the same size and pixel caps as any upload, and a bound on the tiles one request embeds.
MAX_RASTER_TILES = int(_env_number("VLM2GEOVEC_SPACE_MAX_TILES", 1024))
TILE_SIZES = (32, 1024)  # smallest and largest tile side in pixels
MAX_MARKED = 256  # tiles marked relevant / not relevant, or labelled for the few-shot map
MAX_CLASSES = 12
MAX_RASTERS_HELD = 8  # indexed rasters kept in memory as search targets (oldest dropped first)

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
RASTER_VERSION = 1  # the same for indexed rasters
S2_CHIP = 128
GALLERY = "gallery"  # the search target naming the built-in gallery (indexed rasters are named by their key)

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
