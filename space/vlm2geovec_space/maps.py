"""Maps: a static matplotlib plot (works offline) and a Leaflet page that falls back to it; both can draw tile
footprints coloured by a value (few-shot class, change distance)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .settings import BOX_COLORS, LEAFLET_CSS, LEAFLET_JS


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


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


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
    return _png(fig)


def footprint_map_png(footprints: Sequence[Sequence[tuple[float, float]]], colors: Sequence[str],
                      title: str = "", legend: dict[str, str] | None = None, alphas: Sequence[float] | None = None,
                      labels: Sequence[str] | None = None, colorbar: tuple[str, float, float] | None = None) -> bytes:
    """PNG of tile footprints (closed ``(lon, lat)`` rings) filled with ``colors`` (opacity ``alphas``, e.g. a
    confidence); ``legend`` maps a colour to its meaning; ``labels`` are drawn at the tiles' centres;
    ``colorbar = (name, low, high)`` adds a heat scale (the colours then come from `heat_colors`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.1, 0.7 if colorbar else 0.83, 0.82))
    rings = [np.asarray(r, dtype=np.float64) for r in footprints]
    if rings:
        points = np.concatenate(rings)
        alphas = list(alphas) if alphas is not None else [0.75] * len(rings)
        import matplotlib.colors as mcolors

        faces = [mcolors.to_rgba(c, alpha=max(0.15, min(1.0, a))) for c, a in zip(colors, alphas, strict=True)]
        ax.add_collection(PolyCollection(rings, facecolors=faces, edgecolors="#333333", linewidths=0.4))
        lon0, lon1, lat0, lat1 = points[:, 0].min(), points[:, 0].max(), points[:, 1].min(), points[:, 1].max()
        pad_lon, pad_lat = (lon1 - lon0) * 0.03 or 1e-4, (lat1 - lat0) * 0.03 or 1e-4
        ax.set_xlim(lon0 - pad_lon, lon1 + pad_lon)
        ax.set_ylim(lat0 - pad_lat, lat1 + pad_lat)
        ax.set_aspect(1.0 / max(math.cos(math.radians((lat0 + lat1) / 2)), 0.1), adjustable="box")
        for ring, text in zip(rings, labels or [], strict=False):
            ax.annotate(text, (ring[:-1, 0].mean(), ring[:-1, 1].mean()), ha="center", va="center", fontsize=6)
    if legend:
        ax.legend(handles=[Patch(facecolor=c, edgecolor="#333333", label=name) for c, name in legend.items()],
                  fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0) if not colorbar else (0, 1))
    if colorbar:
        import matplotlib.cm as cm
        import matplotlib.colors as mcolors

        name, low, high = colorbar
        mappable = cm.ScalarMappable(norm=mcolors.Normalize(low, high), cmap="inferno")
        fig.colorbar(mappable, cax=fig.add_axes((0.86, 0.1, 0.03, 0.82)), label=name)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("longitude (°)", fontsize=8)
    ax.set_ylabel("latitude (°)", fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def heat_colors(values: Sequence[float], low: float, high: float) -> list[str]:
    """Hex colours of ``values`` on the 'inferno' scale between low and high (the colour bar's)."""
    import matplotlib
    import matplotlib.colors as mcolors

    span = (high - low) or 1.0
    cmap = matplotlib.colormaps["inferno"]
    return [mcolors.to_hex(cmap(min(1.0, max(0.0, (float(v) - low) / span)))) for v in values]


def leaflet_html(collection, results: Sequence[dict], query: dict | None, static_png: bytes, height: int = 380,
                 polygons: Sequence[dict] = ()) -> str:
    """An iframe with a Leaflet map (web tiles from the CDN) that shows the static PNG when offline.
    ``polygons``: ``{"ring": [[lon, lat], ...], "color", "label"}`` drawn as filled footprints."""
    data = {
        "gallery": [[round(t.lat, 6), round(t.lon, 6), t.id] for t in collection.tiles],
        "results": [{k: r[k] for k in ("rank", "id", "score", "lat", "lon", "source")} for r in results],
        "query": query,
        "colors": BOX_COLORS,
        "polygons": [{"ring": [[round(lat, 7), round(lon, 7)] for lon, lat in p["ring"]], "color": p["color"],
                      "label": p.get("label", "")} for p in polygons],
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
    {{maxZoom: 19, attribution: "Imagery &copy; Esri, Maxar, Earthstar Geographics, and the GIS User Community"}});
  var streets = L.tileLayer("https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png",
    {{maxZoom: 19, attribution: "&copy; OpenStreetMap contributors"}});
  var loaded = false;
  imagery.on("tileload", function () {{ loaded = true; }});
  streets.on("tileload", function () {{ loaded = true; }});
  imagery.addTo(map);
  L.control.layers({{"Imagery": imagery, "OpenStreetMap": streets}}).addTo(map);
  setTimeout(function () {{ if (!loaded) {{ showStatic(); }} }}, 6000);
  var bounds = [];
  DATA.polygons.forEach(function (p) {{
    L.polygon(p.ring, {{color: "#333", weight: 1, fillColor: p.color, fillOpacity: 0.55}})
      .bindTooltip(p.label).addTo(map);
    p.ring.forEach(function (c) {{ bounds.push(c); }});
  }});
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
  map.fitBounds(bounds, {{padding: [30, 30], maxZoom: 18}});
}})();
</script></body></html>"""
    return (
        f'<iframe title="Map of the results" sandbox="allow-scripts allow-popups" '
        f'style="width:100%;height:{height}px;border:0" srcdoc="{html.escape(doc, quote=True)}"></iframe>'
    )
