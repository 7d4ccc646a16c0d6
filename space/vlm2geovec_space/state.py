"""`SpaceState`: the model, the searchable collections and the logic of every demo, as plain Python (the gradio
handlers in ``space/app.py`` wrap these; tests call them directly too)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import analysis, rasters, settings
from .gallery import Collection, Tile, embed_collection, gallery_digest, gallery_tiles
from .models import LoadedModel
from .places import resolve_place
from .settings import (
    DEFAULT_SCALES,
    GALLERY,
    INSTRUCTIONS,
    MAX_CANDIDATES,
    MAX_K,
    MAX_LABELS,
    MAX_MARKED,
    MAX_QUERY_BOXES,
    MAX_TEXT_CHARS,
    NMS_IOU,
    SCALES,
    InputError,
)
from .uploads import check_pixels

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
        self.collections: OrderedDict[str, Collection] = OrderedDict({GALLERY: self.gallery})
        self.queries: OrderedDict[str, np.ndarray] = OrderedDict()  # query id -> vector, for /refine

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
    def _load_gallery(self, tiles: list[Tile]) -> Collection:
        digest = gallery_digest(tiles)
        fingerprint = self.loaded.fingerprint
        cache_file = self.cache_dir / "gallery" / f"{fingerprint[:20]}-{digest[:20]}.npz" if fingerprint else None
        return embed_collection(GALLERY, tiles, digest, self.encode, fingerprint, cache_file)

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
    def collection(self, target: Any) -> Collection:
        """The collection a search runs over: the gallery or an indexed raster (by its key)."""
        if target is None or target == "":
            return self.gallery
        with self._lock:
            found = self.collections.get(target) if isinstance(target, str) else None
            known = list(self.collections)
        if found is None:
            raise InputError(f"Search over: expected one of {known}, got {target!r} (index a raster to add it).")
        return found

    def _remember_query(self, vector: np.ndarray) -> str:
        query_id = hashlib.sha256(np.asarray(vector, dtype=np.float32).tobytes()).hexdigest()[:16]
        with self._lock:
            self.queries[query_id] = vector
            self.queries.move_to_end(query_id)
            while len(self.queries) > 256:
                self.queries.popitem(last=False)
        return query_id

    def rank(self, collection: Collection, vector: np.ndarray, k: int, query: dict) -> dict:
        results = []
        for rank, (i, score) in enumerate(collection.search(vector, k), start=1):
            tile = collection.tiles[i]
            results.append({"rank": rank, "id": tile.id, "score": round(score, 6), "lat": tile.lat, "lon": tile.lon,
                            "source": tile.source, "label": tile.label})
        return {"query": query, "query_id": self._remember_query(vector), "target": collection.name, "k": k,
                "gallery_size": len(collection), "results": results}

    def _search(self, item: Any, instruction: str, name: str, k: Any, query: dict, target: Any = None) -> dict:
        k = self._k(k)
        collection = self.collection(target)
        vector = self.encode([item], instruction, [name])[0]
        return self.rank(collection, vector, k, query)

    def search_text(self, text: Any, k: Any = 8, target: Any = None) -> dict:
        text = self._text(text, "Query text")
        return self._search(text, INSTRUCTIONS["text_to_image"], "Query text", k, {"kind": "text", "text": text},
                            target)

    def search_image(self, annotated: Any, text: Any = None, k: Any = 8, target: Any = None) -> dict:
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
        return self._search(item, instruction, "Query image", k, query, target)

    def search_coords(self, lat: Any, lon: Any, k: Any = 8, label: str | None = None, target: Any = None) -> dict:
        if lat is None or lon is None:
            raise InputError("Coordinates: enter both a latitude and a longitude (WGS84 degrees).")
        query = {"kind": "coords", "lat": lat, "lon": lon, "label": label or f"{lat}, {lon}"}
        return self._search({"coords": (lat, lon)}, INSTRUCTIONS["coords_to_image"], "Query", k, query, target)

    def search_place(self, place: Any, k: Any = 8, target: Any = None) -> dict:
        if not isinstance(place, str):
            raise InputError(f"Place name: expected text, got {type(place).__name__}.")
        city = resolve_place(place)
        self._k(k)
        result = self.search_coords(city.lat, city.lon, k, label=f"{city.name}, {city.country}", target=target)
        result["query"] = {"kind": "place", "place": place.strip(), "lat": city.lat, "lon": city.lon,
                           "label": f"{city.name}, {city.country}",
                           "resolved": {"name": city.name, "country": city.country, "admin1": city.admin1_code,
                                        "population": city.population, "geonameid": city.geonameid}}
        return result

    def info(self) -> dict:
        return {
            "model": self.loaded.source, "fingerprint": self.loaded.fingerprint,
            "gallery_size": len(self.gallery.tiles), "gallery_cache": str(self.gallery.cache_file or ""),
            "gallery_source": self.gallery.source, "targets": list(self.collections),
            "limits": {"max_upload_mb": settings.MAX_UPLOAD_MB, "max_image_pixels": settings.MAX_IMAGE_PIXELS,
                       "max_candidates": MAX_CANDIDATES, "max_k": MAX_K, "max_raster_tiles": settings.MAX_RASTER_TILES},
        }

    # -- the workbench: the analyst's own raster ----------------------------------------------------------
    def _raster_source(self, choice: Any, upload: Any, what: str) -> tuple[Path, str, bool]:
        """(path, name shown to the user, uploaded?) of an uploaded file (it takes precedence) or a bundled scene."""
        if upload:
            path = Path(upload)
            return path, path.name, True
        if choice == rasters.UPLOAD:
            raise InputError(f"{what}: upload a GeoTIFF first (or pick a bundled scene).")
        if choice in (None, ""):
            raise InputError(f"{what}: pick a bundled scene or upload a GeoTIFF.")
        return rasters.bundled_path(choice), str(choice), False

    def index_raster(self, choice: Any, upload: Any = None, size: Any = 128, stride: Any = None, bands: Any = "",
                     progress: Callable[[int, int], None] | None = None, what: str = "Raster") -> Collection:
        """Tile, embed (cached by the file's content, the tiling and the model) and register a raster as a search
        target named ``<file stem>-<key>``."""
        tiling = rasters.Tiling.checked(size, stride, bands)
        path, label, uploaded = self._raster_source(choice, upload, what)
        if uploaded:  # before hashing: an oversized upload is refused without reading it
            from .uploads import check_file_size

            check_file_size(path, label)
        key = rasters.raster_key(rasters.file_digest(path), tiling)
        name = f"{Path(label).stem.split(' (')[0].replace(' ', '_').replace(',', '')}-{key[:8]}"
        with self._lock:
            if name in self.collections:
                self.collections.move_to_end(name)
                return self.collections[name]
        with rasters.open_tiler(path, label, tiling, uploaded) as tiler:
            info = {"raster": label, "size": tiling.size, "stride": tiling.stride, "grid_positions": len(tiler),
                    **rasters.describe_raster(path, tiler)}
            tiles = rasters.raster_tiles(tiler, label)
        if not tiles:
            raise InputError(f"Raster {label}: every tile is more than half nodata; nothing to index.")
        fingerprint = self.loaded.fingerprint
        cache_file = self.cache_dir / "rasters" / f"{fingerprint[:20]}-{key[:20]}.npz" if fingerprint else None
        collection = embed_collection(name, tiles, key, self.encode, fingerprint, cache_file, info, progress, path)
        with self._lock:
            self.collections[name] = collection
            rasters_held = [n for n in self.collections if n != GALLERY]
            for old in rasters_held[:-settings.MAX_RASTERS_HELD]:
                del self.collections[old]
        return collection

    def _marked(self, collection: Collection, positives: Any, negatives: Any) -> tuple[list[int], list[int]]:
        positives, negatives = list(positives or []), list(negatives or [])
        both = sorted(set(positives) & set(negatives))
        if both:
            raise InputError(f"Marks: tile {both[0]!r} is marked both relevant and not relevant.")
        if len(positives) + len(negatives) > MAX_MARKED:
            raise InputError(f"Marks: at most {MAX_MARKED} marked tiles, got {len(positives) + len(negatives)}.")
        return collection.positions(positives, "Relevant"), collection.positions(negatives, "Not relevant")

    def refine(self, target: Any, query_id: Any, positives: Any, negatives: Any, k: Any = 8) -> dict:
        """Re-rank with relevance feedback (`analysis.rocchio`); without a query id, search by the examples."""
        k = self._k(k)
        collection = self.collection(target)
        pos, neg = self._marked(collection, positives, negatives)
        query = None
        if query_id:
            with self._lock:
                query = self.queries.get(query_id) if isinstance(query_id, str) else None
            if query is None:
                raise InputError(f"Query: unknown query id {query_id!r}; run a search first (its result names the id).")
        try:
            vector = analysis.rocchio(query, collection.vectors, pos, neg)
        except ValueError as error:
            raise InputError(f"Marks: {error}.") from None
        result = self.rank(collection, vector, k, {"kind": "refine", "from_query": query_id or None,
                                                   "relevant": list(positives or []),
                                                   "not_relevant": list(negatives or []), "method": "rocchio",
                                                   "weights": analysis.ROCCHIO})
        result["marks"] = self.marks_geojson(collection, positives, negatives)
        return result

    def marks_geojson(self, collection: Collection, positives: Any, negatives: Any) -> dict:
        pos, neg = self._marked(collection, positives, negatives)
        tiles = [collection.tiles[i] for i in pos + neg]
        labels = ["relevant"] * len(pos) + ["not relevant"] * len(neg)
        return analysis.footprints_geojson(tiles, [{"label": label, "target": collection.name} for label in labels])

    def import_marks(self, target: Any, path: Any) -> tuple[list[str], list[str]]:
        """(relevant, not relevant) tile ids of an exported marked set, checked against the target's tiles."""
        collection = self.collection(target)
        if not path:
            raise InputError("Marked set: upload a GeoJSON file exported by this Space.")
        name = Path(path).name
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"Marked set {name}: not a JSON file ({error}).") from None
        try:
            positives, negatives = analysis.read_marks(data, f"Marked set {name}")
        except ValueError as error:
            raise InputError(str(error)) from None
        self._marked(collection, positives, negatives)
        return positives, negatives

    def fewshot(self, target: Any, labelled: Any, method: Any = "linear probe") -> dict:
        """Label every tile of the target from ``labelled`` (text, one ``class: id, id, ...`` line per class)."""
        collection = self.collection(target)
        if method not in analysis.FEWSHOT_METHODS:
            raise InputError(f"Method: expected one of {list(analysis.FEWSHOT_METHODS)}, got {method!r}.")
        if not isinstance(labelled, str) or not labelled.strip():
            raise InputError("Labelled tiles: one line per class, 'class: tile id, tile id, ...'.")
        by_position: dict[int, str] = {}
        for number, line in enumerate(labelled.strip().splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, ids = line.partition(":")
            name = name.strip()
            if not sep or not name:
                raise InputError(f"Labelled tiles, line {number}: expected 'class: tile id, tile id', got {line.strip()!r}.")
            self._text(name, f"Labelled tiles, line {number} (class name)")
            ids = [i.strip() for i in ids.split(",") if i.strip()]
            if not ids:
                raise InputError(f"Labelled tiles, line {number}: class {name!r} has no tile ids.")
            for position, tile_id in zip(collection.positions(ids, f"Labelled tiles, line {number}"), ids, strict=True):
                if by_position.get(position, name) != name:
                    raise InputError(f"Labelled tiles, line {number}: tile {tile_id!r} is already labelled "
                                     f"{by_position[position]!r}.")
                by_position[position] = name
        classes = sorted(set(by_position.values()))
        if len(classes) > settings.MAX_CLASSES:
            raise InputError(f"Labelled tiles: at most {settings.MAX_CLASSES} classes, got {len(classes)}.")
        if len(by_position) > MAX_MARKED:
            raise InputError(f"Labelled tiles: at most {MAX_MARKED} tiles, got {len(by_position)}.")
        try:
            result = analysis.fewshot_map(collection.vectors, by_position, method)
        except ValueError as error:
            raise InputError(f"Labelled tiles: {error}.") from None
        tiles = [{"id": t.id, "label": label, "confidence": round(float(c), 4), "lat": t.lat, "lon": t.lon,
                  "training": i in by_position}
                 for i, (t, label, c) in enumerate(zip(collection.tiles, result.labels, result.confidence, strict=True))]
        geojson = analysis.footprints_geojson(
            collection.tiles, [{"label": t["label"], "confidence": t["confidence"], "training": t["training"]}
                               for t in tiles])
        return {"target": collection.name, "method": method, "classes": classes, "counts": result.counts(),
                "training": {collection.tiles[i].id: name for i, name in by_position.items()}, "tiles": tiles,
                "geojson": geojson}

    def change(self, before: tuple, after: tuple, size: Any = 128, stride: Any = None, bands: Any = "",
               top: Any = 8, progress: Callable[[int, int], None] | None = None) -> dict:
        """Per-tile embedding distance between two co-registered rasters (``(choice, upload)`` each)."""
        top = self._k(top)
        # co-registration first (from the headers): a mismatch is refused before anything is embedded
        grids = [rasters.grid_of(self._raster_source(*side, what)[0]) for side, what in ((before, "Before"),
                                                                                           (after, "After"))]
        if None not in grids and grids[0] != grids[1]:
            names = [self._raster_source(*side, what)[1] for side, what in ((before, "Before"), (after, "After"))]
            detail = "; ".join(f"{k}: {grids[0][k]} vs {grids[1][k]}" for k in grids[0] if grids[0][k] != grids[1][k])
            raise InputError(f"Change: the rasters {names[0]!r} and {names[1]!r} are not co-registered (same grid, CRS "
                             f"and geotransform needed): {detail}.")
        first = self.index_raster(*before, size=size, stride=stride, bands=bands, progress=progress, what="Before")
        second = self.index_raster(*after, size=size, stride=stride, bands=bands, progress=progress, what="After")
        keys = ("width", "height", "crs", "transform", "band_count")
        differ = [k for k in keys if first.info[k] != second.info[k]]
        if differ:
            detail = "; ".join(f"{k}: {first.info[k]} vs {second.info[k]}" for k in differ)
            raise InputError(f"Change: the rasters {first.info['raster']!r} and {second.info['raster']!r} are not "
                             f"co-registered (same grid, CRS and geotransform needed): {detail}.")
        common = [t.id for t in first.tiles if t.id in set(t.id for t in second.tiles)]
        a, b = first.positions(common, "Before"), second.positions(common, "After")
        distance = analysis.change_distance(first.vectors[a], second.vectors[b])
        order = np.argsort(-distance, kind="stable")
        ranked = [{"rank": r, "id": common[i], "distance": round(float(distance[i]), 6),
                   "lat": first.tiles[a[i]].lat, "lon": first.tiles[a[i]].lon}
                  for r, i in enumerate(order[:top], start=1)]
        return {"before": first.name, "after": second.name, "tiles": len(common), "ranked": ranked,
                "distance": {common[i]: round(float(distance[i]), 6) for i in range(len(common))},
                "_pairs": [(first.tiles[a[i]], second.tiles[b[i]]) for i in order[:top]],
                "_collections": (first, second)}
