"""Build RSMEB tasks from the public releases of the datasets behind each family.

``build_source(source, raw)`` parses one downloaded release with its `rsmeb_eval.formats` parser and turns it
into ``{task: {split: TaskData}}`` following `rsmeb_eval.schema`. Nothing is downloaded here: `SOURCES`
says where each release lives and under which licence, `RAW_LAYOUTS` what ``raw`` must point at.

Decisions every builder shares:

* **Splits.** RSMEB has ``train`` and ``test``. A source's official split is used where it has one; its
  ``val`` part is left out (it stays free for model selection). Where there is none (scene folders; DIOR-RSVG
  without split lists; triplet and tile listings without a ``split`` column) `hash_split` puts a stable key
  (the path relative to the release, or the image id) in ``test`` when the first 8 bytes of its SHA-256, read
  as a fraction of 2**64, fall below 0.2, else in ``train``: an 80/20 split that never changes with the seed,
  the machine or the order of files.
* **Candidates.** Where a task samples distractors (`draw_candidates`), every query gets its own
  ``random.Random(f"{seed}|{task}|{query_id}")``: the positives (at most 50 are kept when a query has more),
  then distractors drawn from the split's corpus until the list holds 100 (fewer when the corpus is small),
  shuffled, so the positive's position is random but fixed. Items equal to a positive (the same caption
  text, the same coordinates) are merged into one corpus item first, so a distractor is never a hidden
  positive.
* **Ids** are derived from the release (relative paths, file names, annotation stems, source ids), never from
  row order after filtering, so a rebuild gives equal tasks.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rsmeb_eval.dataset_io import IfExists, TaskData, check_out_dir, write_dataset_folder
from rsmeb_eval.formats import (
    ParseReport,
    parse_composed,
    parse_dior_rsvg,
    parse_geo_tiles,
    parse_karpathy,
    parse_rsvqa,
    parse_scene_folders,
)
from rsmeb_eval.formats.report import OnError, check_on_error

logger = logging.getLogger("rsmeb_eval.builders")

CANDIDATES = 100  # MMEB-style candidate list size
TEST_FRACTION = 0.2  # share of `hash_split` keys that land in test
CLASS_TEMPLATE = "a satellite image of {}"
OFFICIAL_SPLITS = {"train": "train", "test": "test"}  # val (and anything else) is left out


class SourceInfo(NamedTuple):
    """What `build_source` knows about a source: its raw ``format`` (a `rsmeb_eval.formats` module), the
    ``tasks`` it produces, where users ``download`` the originals, and the ``license`` of the originals."""

    format: str
    tasks: tuple[str, ...]
    download: str
    license: str


_RESEARCH = "not stated by the authors (academic research use; check before redistributing)"
SOURCES: dict[str, SourceInfo] = {
    "eurosat": SourceInfo(
        "scene_folders", ("EuroSAT-SceneCls",),
        "https://github.com/phelber/EuroSAT (RGB release, EuroSAT.zip -> 2750/); Helber et al., IEEE JSTARS 2019, "
        "DOI 10.1109/JSTARS.2019.2918242", "MIT"),
    "ucmerced": SourceInfo(
        "scene_folders", ("UCMerced-SceneCls",),
        "http://weegee.vision.ucmerced.edu/datasets/landuse.html (UCMerced_LandUse.zip -> Images/); "
        "Yang & Newsam, ACM SIGSPATIAL GIS 2010, DOI 10.1145/1869790.1869829",
        "not stated by the authors (USGS National Map imagery, public domain); cite Yang & Newsam 2010"),
    "aid": SourceInfo(
        "scene_folders", ("AID-SceneCls",),
        "https://captain-whu.github.io/AID/; Xia et al., IEEE TGRS 2017, DOI 10.1109/TGRS.2017.2685945", _RESEARCH),
    "resisc45": SourceInfo(
        "scene_folders", ("RESISC45-SceneCls",),
        "NWPU-RESISC45, https://gcheng-nwpu.github.io/#Datasets; Cheng et al., Proc. IEEE 2017, "
        "DOI 10.1109/JPROC.2017.2675998", _RESEARCH),
    "rsicd": SourceInfo(
        "karpathy", ("RSICD-T2I", "RSICD-I2T"),
        "https://github.com/201528014227051/RSICD_optimal (dataset_rsicd.json + RSICD_images/); Lu et al., "
        "IEEE TGRS 2018, DOI 10.1109/TGRS.2017.2776321", _RESEARCH),
    "rsitmd": SourceInfo(
        "karpathy", ("RSITMD-T2I", "RSITMD-I2T"),
        "https://github.com/xiaoyuan1996/AMFMN (RSITMD: dataset_RSITMD.json + images/); Yuan et al., IEEE TGRS "
        "2022, DOI 10.1109/TGRS.2021.3078451", _RESEARCH),
    "ucm-captions": SourceInfo(
        "karpathy", ("UCMCaptions-T2I",),
        "UCM-Captions (dataset.json + imgs/), Qu et al., CITS 2016, DOI 10.1109/CITS.2016.7546397; copies are "
        "linked from https://github.com/201528014227051/RSICD_optimal", _RESEARCH),
    "dior-rsvg": SourceInfo(
        "dior_rsvg", ("DIOR-RSVG-RefExp", "DIOR-RSVG-RegionCaption"),
        "https://github.com/ZhanYang-nwpu/RSVG-pytorch (DIOR-RSVG); Zhan et al., IEEE TGRS 2023, "
        "DOI 10.1109/TGRS.2023.3250471", _RESEARCH),
    "rsvqa-lr": SourceInfo(
        "rsvqa", ("RSVQA-LR-VQA",),
        "https://rsvqa.sylvainlobry.com/ (Zenodo, DOI 10.5281/zenodo.6344334); Lobry et al., IEEE TGRS 2020, "
        "DOI 10.1109/TGRS.2020.2988782", "CC-BY-4.0"),
    "patterncom": SourceInfo(
        "composed", ("PatternCom-Composed",),
        "https://github.com/billpsomas/rscir (PatternCom, over PatternNet images); Psomas et al., SIGIR 2024, "
        "arXiv:2405.15587; export its queries as reference,text,target CSV/JSONL", _RESEARCH),
    "geo-tiles": SourceInfo(
        "geo_tiles", ("GeoTiles-Img2Coords", "GeoTiles-Coords2Img"),
        "any geo-tagged tile set exported as image,lat,lon[,caption] CSV or GeoJSON Points, e.g. fMoW "
        "(https://github.com/fMoW/dataset) or SkyScript metadata", "that of the tiles"),
}

RAW_LAYOUTS: dict[str, str] = {
    "eurosat": "the folder of class folders (2750/ in EuroSAT.zip)",
    "ucmerced": "the folder of class folders (UCMerced_LandUse/Images/)",
    "aid": "the folder of class folders (AID/)",
    "resisc45": "the folder of class folders (NWPU-RESISC45/)",
    "rsicd": "a folder with dataset_rsicd.json (or a single *.json) and RSICD_images/ (or a single sub-folder)",
    "rsitmd": "a folder with dataset_RSITMD.json (or a single *.json) and images/ (or a single sub-folder)",
    "ucm-captions": "a folder with dataset.json (or a single *.json) and imgs/ (or a single sub-folder)",
    "dior-rsvg": "the folder with Annotations/, JPEGImages/ and train.txt/val.txt/test.txt",
    "rsvqa-lr": "the folder with LR_split_{train,test}_{questions,answers,images}.json and Images_LR/",
    "patterncom": "a reference,text,target .csv/.jsonl listing (or a folder holding exactly one)",
    "geo-tiles": "an image,lat,lon .csv or .geojson listing (or a folder holding exactly one)",
}

# Canonical class folder names: a folder outside the list is a problem (wrong root, stray folder).
SCENE_CLASSES: dict[str, tuple[str, ...]] = {
    "eurosat": ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                "PermanentCrop", "Residential", "River", "SeaLake"),
    "ucmerced": ("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
                 "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
                 "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
                 "sparseresidential", "storagetanks", "tenniscourt"),
    "aid": ("Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center", "Church", "Commercial",
            "DenseResidential", "Desert", "Farmland", "Forest", "Industrial", "Meadow", "MediumResidential",
            "Mountain", "Park", "Parking", "Playground", "Pond", "Port", "RailwayStation", "Resort", "River",
            "School", "SparseResidential", "Square", "Stadium", "StorageTanks", "Viaduct"),
    "resisc45": ("airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral",
                 "church", "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert",
                 "forest", "freeway", "golf_course", "ground_track_field", "harbor", "industrial_area",
                 "intersection", "island", "lake", "meadow", "medium_residential", "mobile_home_park",
                 "mountain", "overpass", "palace", "parking_lot", "railway", "railway_station",
                 "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
                 "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
                 "thermal_power_station", "wetland"),
}
_SCENE_NAMES = {"eurosat": "EuroSAT", "ucmerced": "UCMerced", "aid": "AID", "resisc45": "RESISC45"}
# Folder names that are run-together words (UC Merced) or need a word the name leaves out (EuroSAT).
_CLASS_WORDS = {
    "SeaLake": "sea or lake",
    "baseballdiamond": "baseball diamond",
    "denseresidential": "dense residential",
    "golfcourse": "golf course",
    "mediumresidential": "medium residential",
    "mobilehomepark": "mobile home park",
    "parkinglot": "parking lot",
    "sparseresidential": "sparse residential",
    "storagetanks": "storage tanks",
    "tenniscourt": "tennis court",
}
_CAPTIONS = {  # source -> (task prefix, JSON names, image folder names, directions)
    "rsicd": ("RSICD", ("dataset_rsicd.json",), ("RSICD_images", "images"), ("T2I", "I2T")),
    "rsitmd": ("RSITMD", ("dataset_RSITMD.json", "dataset_rsitmd.json"), ("images", "RSITMD_images"), ("T2I", "I2T")),
    "ucm-captions": ("UCMCaptions", ("dataset.json", "dataset_ucm.json"), ("imgs", "images"), ("T2I",)),
}


@dataclass
class BuildResult:
    """``tasks``: ``{task: {split: TaskData}}`` (empty splits and tasks left out); ``report``: rows the parser
    skipped; ``skipped``: items left out by design (e.g. single-object DIOR-RSVG images), counted by reason."""

    tasks: dict[str, dict[str, TaskData]]
    report: ParseReport
    skipped: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- helpers


def hash_split(key: str, test_fraction: float = TEST_FRACTION) -> str:
    """``"test"`` for about ``test_fraction`` of keys, else ``"train"``; depends on nothing but ``key``."""
    fraction = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if fraction < test_fraction else "train"


def class_words(name: str) -> str:
    """A class folder name in words: ``"AnnualCrop"`` -> ``"annual crop"``, ``"storage_tanks"`` ->
    ``"storage tanks"``, ``"mobilehomepark"`` -> ``"mobile home park"``."""
    if name in _CLASS_WORDS:
        return _CLASS_WORDS[name]
    words = re.sub(r"[_\-]+", " ", name)
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", words)
    return " ".join(words.lower().split())


def _normalize(text: str) -> str:
    """Caption identity: case, spacing and a trailing full stop do not make a different caption."""
    return re.sub(r"[\s.]+$", "", " ".join(text.lower().split()))


def _rng(seed: int, task: str, query_id: str) -> random.Random:
    return random.Random(f"{seed}|{task}|{query_id}")


def _random_order(n: int, rng: random.Random) -> Iterator[int]:
    """A lazy random permutation of ``range(n)``: cheap when only a few of many items are needed."""
    seen: set[int] = set()
    while len(seen) < n // 2:
        index = rng.randrange(n)
        if index not in seen:
            seen.add(index)
            yield index
    rest = [i for i in range(n) if i not in seen]
    rng.shuffle(rest)
    yield from rest


def draw_candidates(
    positives: Sequence[str],
    pool: Sequence[str],
    rng: random.Random,
    size: int = CANDIDATES,
    pick: Callable[[str, random.Random], str | None] | None = None,
) -> tuple[list[str], list[str]]:
    """``(candidate_ids, positive_ids)`` for one query.

    Args:
        positives: the query's relevant corpus ids; at most ``size // 2`` are kept (sampled) when there are more.
        pool: what distractors are drawn from, in a fixed order (positives in it are passed over).
        rng: the query's generator (see `_rng`).
        size: the longest candidate list.
        pick (*optional*): maps a drawn pool item to a candidate id (or None to pass it over), e.g. an image to
            one of its captions; the identity by default.
    """
    positives = list(dict.fromkeys(positives))
    if len(positives) > size // 2:
        sample = set(rng.sample(positives, size // 2))
        kept = [p for p in positives if p in sample]
    else:
        kept = positives
    seen = set(positives)
    chosen: list[str] = []
    if len(kept) < size:
        for index in _random_order(len(pool), rng):
            candidate = pool[index] if pick is None else pick(pool[index], rng)
            if candidate is None or candidate in seen:
                continue
            seen.add(candidate)
            chosen.append(candidate)
            if len(kept) + len(chosen) >= size:
                break
    candidates = kept + chosen
    rng.shuffle(candidates)
    return candidates, kept


def _query(query_id: str, candidates: list[str], positives: list[str], **item: Any) -> dict[str, Any]:
    return {"query_id": query_id, "image": None, "text": None, "bbox": None, "lat": None, "lon": None, **item,
            "candidate_ids": candidates, "positive_ids": positives}


def _doc(doc_id: str, **item: Any) -> dict[str, Any]:
    return {"id": doc_id, "image": None, "text": None, "bbox": None, "lat": None, "lon": None, **item}


def _official(split: str | None, key: str) -> str | None:
    """The RSMEB split of an item: its official split (val -> None), or `hash_split` when it has none."""
    return hash_split(key) if split is None else OFFICIAL_SPLITS.get(split)


def _find(raw: Path, names: Sequence[str], want_dir: bool, suffixes: Sequence[str] = ()) -> Path:
    """``raw`` itself (a file, when a file is wanted), else ``raw/<first existing name>``, else the single
    entry of ``raw`` of the wanted kind (and suffix)."""
    if not want_dir and raw.is_file():
        return raw
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: not found")
    for name in names:
        if (raw / name).exists() and (raw / name).is_dir() == want_dir:
            return raw / name
    found = sorted(
        p for p in raw.iterdir()
        if p.is_dir() == want_dir and not p.name.startswith(".") and (not suffixes or p.suffix.lower() in suffixes)
    )
    if len(found) != 1:
        what = "folder" if want_dir else f"{'/'.join(suffixes)} file"
        raise FileNotFoundError(
            f"{raw}: expected one of {list(names)} or a single {what}, found {[p.name for p in found]}")
    return found[0]


def _finish(
    tasks: dict[str, dict[str, list[dict]]], corpora: dict[str, dict[str, list[dict]]]
) -> dict[str, dict[str, TaskData]]:
    """Pair queries with corpora, drop empty splits/tasks (logged), validate what is left."""
    built: dict[str, dict[str, TaskData]] = {}
    for task, splits in tasks.items():
        for split, queries in splits.items():
            if not queries:
                logger.warning("%s/%s: no queries, split left out", task, split)
                continue
            data = TaskData(queries=queries, corpus=corpora[task][split])
            data.validate(task, split)
            built.setdefault(task, {})[split] = data
        if task not in built:
            logger.warning("%s: no queries in any split, task left out", task)
    return built


def _splits() -> dict[str, list]:
    return {"train": [], "test": []}


# ---------------------------------------------------------------------------------------------- builders


def _build_scene(source: str, raw: Path, on_error: OnError, seed: int):
    task = f"{_SCENE_NAMES[source]}-SceneCls"
    classes = SCENE_CLASSES[source]
    images, report = parse_scene_folders(raw, classes=classes, on_error=on_error)
    corpus = [_doc(label, text=CLASS_TEMPLATE.format(class_words(label))) for label in classes]
    queries = _splits()
    for image in images:
        queries[hash_split(image.key)].append(_query(image.key, list(classes), [image.label], image=str(image.path)))
    return _finish({task: queries}, {task: {s: list(corpus) for s in queries}}), report, {}


def _build_captions(source: str, raw: Path, on_error: OnError, seed: int):
    prefix, json_names, dir_names, directions = _CAPTIONS[source]
    json_path = _find(raw, json_names, want_dir=False, suffixes=(".json",))
    image_dir = _find(json_path.parent, dir_names, want_dir=True)
    images, report = parse_karpathy(json_path, image_dir, on_error=on_error)
    t2i, i2t = f"{prefix}-T2I", f"{prefix}-I2T"
    tasks: dict[str, dict[str, list]] = {f"{prefix}-{d}": _splits() for d in directions}
    corpora: dict[str, dict[str, list]] = {name: {} for name in tasks}
    skipped: Counter = Counter()
    for split in ("train", "test"):
        members = [image for image in images if OFFICIAL_SPLITS.get(image.split) == split]
        # One caption id per distinct caption text in the split (the first occurrence names it).
        text_id: dict[str, str] = {}
        texts: dict[str, str] = {}
        image_texts: dict[str, list[str]] = {}
        text_images: dict[str, list[str]] = {}
        for image in members:
            ids = image_texts.setdefault(image.filename, [])
            for caption in image.captions:
                norm = _normalize(caption.text)
                if norm not in text_id:
                    text_id[norm] = f"{image.filename}#{caption.index}"
                    texts[text_id[norm]] = caption.text
                else:
                    skipped["duplicate caption merged"] += 1
                caption_id = text_id[norm]
                if caption_id not in ids:
                    ids.append(caption_id)
                owners = text_images.setdefault(caption_id, [])
                if image.filename not in owners:
                    owners.append(image.filename)
        image_ids = [image.filename for image in members]
        if t2i in tasks:
            for caption_id, text in texts.items():
                candidates, positives = draw_candidates(text_images[caption_id], image_ids, _rng(seed, t2i, caption_id))
                tasks[t2i][split].append(_query(caption_id, candidates, positives, text=text))
            corpora[t2i][split] = [_doc(image.filename, image=str(image.path)) for image in members]
        if i2t in tasks:
            for image in members:
                own = set(image_texts[image.filename])

                def one_caption(other: str, rng: random.Random, own: set = own, texts_of: dict = image_texts):
                    choices = [c for c in texts_of[other] if c not in own]
                    return rng.choice(choices) if choices else None

                candidates, positives = draw_candidates(
                    image_texts[image.filename], image_ids, _rng(seed, i2t, image.filename), pick=one_caption)
                tasks[i2t][split].append(_query(image.filename, candidates, positives, image=str(image.path)))
            corpora[i2t][split] = [_doc(caption_id, text=text) for caption_id, text in texts.items()]
    return _finish(tasks, corpora), report, dict(skipped)


def _build_dior(source: str, raw: Path, on_error: OnError, seed: int):
    images, report = parse_dior_rsvg(raw, on_error=on_error)
    has_lists = any((raw / f"{s}.txt").is_file() for s in ("train", "val", "test"))
    refexp, region = "DIOR-RSVG-RefExp", "DIOR-RSVG-RegionCaption"
    tasks = {refexp: _splits(), region: _splits()}
    corpora: dict[str, dict[str, list]] = {refexp: _splits(), region: _splits()}
    skipped: Counter = Counter()
    for image in images:
        def split_of(obj, image_id: str = image.image_id) -> str | None:
            return OFFICIAL_SPLITS.get(obj.split) if has_lists else hash_split(image_id)

        box_id: dict[tuple, str] = {}
        for obj in image.objects:
            box_id.setdefault(obj.bbox, f"{image.image_id}#box{obj.index}")
        boxes_of_text: dict[str, set] = {}
        for obj in image.objects:
            boxes_of_text.setdefault(_normalize(obj.description), set()).add(obj.bbox)
        # An expression that also describes another box of the image cannot have one right answer.
        clear = [obj for obj in image.objects if len(boxes_of_text[_normalize(obj.description)]) == 1]
        skipped["ambiguous expression"] += len(image.objects) - len(clear)
        if len(box_id) < 2:
            skipped["single-object image"] += 1
            continue
        path = str(image.path)
        boxes = list(box_id.values())
        # RefExp: expression (+ image) -> one of the image's boxes.
        used = set()
        for obj in clear:
            split = split_of(obj)
            if split is not None:
                query_id = f"{image.image_id}#{obj.index}"
                tasks[refexp][split].append(
                    _query(query_id, boxes, [box_id[obj.bbox]], image=path, text=obj.description))
                used.add(split)
        for split in used:
            corpora[refexp][split].extend(_doc(box_id[bbox], image=path, bbox=[list(bbox)]) for bbox in box_id)
        # RegionCaption: image + box -> one of the image's expressions.
        described = {}
        for obj in clear:
            described.setdefault(obj.bbox, []).append(obj)
        if len(described) < 2:
            skipped["region caption: fewer than two described boxes"] += 1
            continue
        expressions = [f"{image.image_id}#{obj.index}" for obj in clear]
        used = set()
        for bbox, objs in described.items():
            split = split_of(objs[0])
            if split is not None:
                tasks[region][split].append(_query(
                    box_id[bbox], expressions, [f"{image.image_id}#{obj.index}" for obj in objs], image=path,
                    bbox=[list(bbox)]))
                used.add(split)
        for split in used:
            corpora[region][split].extend(_doc(f"{image.image_id}#{obj.index}", text=obj.description) for obj in clear)
    return _finish(tasks, corpora), report, dict(skipped)


def _build_rsvqa(source: str, raw: Path, on_error: OnError, seed: int):
    task = "RSVQA-LR-VQA"
    report = ParseReport()
    parsed = {}
    for split in ("train", "test"):
        parsed[split], part = parse_rsvqa(raw, f"LR_split_{split}", image_dir=raw / "Images_LR", on_error=on_error)
        report.extend(part)
    # Candidates: every answer seen for the question type in either split (yes/no, rural/urban, count bins).
    answers_by_type: dict[str, set[str]] = {}
    for questions in parsed.values():
        for question in questions:
            answers_by_type.setdefault(question.type, set()).update(question.answers)
    every_answer = sorted(set().union(*answers_by_type.values())) if answers_by_type else []
    corpus = [_doc(answer, text=answer) for answer in every_answer]
    queries = _splits()
    for split, questions in parsed.items():
        for question in questions:
            queries[split].append(_query(
                question.question_id, sorted(answers_by_type[question.type]), sorted(set(question.answers)),
                image=str(question.image_path), text=question.question))
    return _finish({task: queries}, {task: {s: list(corpus) for s in queries}}), report, {}


def _build_composed(source: str, raw: Path, on_error: OnError, seed: int):
    task = "PatternCom-Composed"
    listing = _find(raw, (), want_dir=False, suffixes=(".csv", ".jsonl"))
    triplets, report = parse_composed(listing, on_error=on_error)
    skipped: Counter = Counter()
    # One query per (reference, modification text); every target named for it is a positive.
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for triplet in triplets:
        key = (triplet.reference, _normalize(triplet.text))
        group = groups.setdefault(key, {"first": triplet, "targets": {}})
        group["targets"].setdefault(triplet.target, triplet.target_path)
        if triplet.split != group["first"].split:
            skipped["triplet split differs from its query's first triplet (first kept)"] += 1
    queries, corpora = _splits(), _splits()
    by_split: dict[str, list] = {"train": [], "test": []}
    for (reference, norm), group in groups.items():
        split = _official(group["first"].split, reference)
        if split is None:
            skipped["val triplet group"] += 1
            continue
        by_split[split].append((reference, norm, group))
    for split, members in by_split.items():
        targets: dict[str, Path] = {}
        for _, _, group in members:
            for target, path in group["targets"].items():
                targets.setdefault(target, path)
        pool = sorted(targets)
        corpora[split] = [_doc(target, image=str(targets[target])) for target in pool]
        for reference, norm, group in members:
            first = group["first"]
            query_id = f"{reference}#{hashlib.sha1(norm.encode('utf-8')).hexdigest()[:10]}"
            candidates, positives = draw_candidates(
                sorted(group["targets"]), pool, _rng(seed, task, query_id),
                pick=lambda target, rng, reference=reference: None if target == reference else target)
            queries[split].append(
                _query(query_id, candidates, positives, image=str(first.reference_path), text=first.text))
    return _finish({task: queries}, {task: corpora}), report, dict(skipped)


def _build_geo(source: str, raw: Path, on_error: OnError, seed: int):
    img2coords, coords2img = "GeoTiles-Img2Coords", "GeoTiles-Coords2Img"
    listing = _find(raw, (), want_dir=False, suffixes=(".csv", ".geojson", ".json"))
    tiles, report = parse_geo_tiles(listing, on_error=on_error)
    skipped: Counter = Counter()
    tasks = {img2coords: _splits(), coords2img: _splits()}
    corpora = {img2coords: _splits(), coords2img: _splits()}
    members: dict[str, list] = {"train": [], "test": []}
    for tile in tiles:
        split = _official(tile.split, tile.image)
        if split is None:
            skipped["val tile"] += 1
        else:
            members[split].append(tile)
    for split, split_tiles in members.items():
        # Tiles at the same coordinates share one coordinate item (named by the first such tile).
        coord_id: dict[tuple[float, float], str] = {}
        at: dict[str, list] = {}
        for tile in split_tiles:
            cid = coord_id.setdefault((round(tile.lat, 6), round(tile.lon, 6)), tile.image)
            at.setdefault(cid, []).append(tile)
        coord_pool = list(at)
        image_pool = [tile.image for tile in split_tiles]
        corpora[img2coords][split] = [_doc(cid, lat=ts[0].lat, lon=ts[0].lon) for cid, ts in at.items()]
        corpora[coords2img][split] = [_doc(tile.image, image=str(tile.path)) for tile in split_tiles]
        for tile in split_tiles:
            cid = coord_id[(round(tile.lat, 6), round(tile.lon, 6))]
            candidates, positives = draw_candidates([cid], coord_pool, _rng(seed, img2coords, tile.image))
            tasks[img2coords][split].append(_query(tile.image, candidates, positives, image=str(tile.path)))
        for cid, same in at.items():
            candidates, positives = draw_candidates([t.image for t in same], image_pool, _rng(seed, coords2img, cid))
            tasks[coords2img][split].append(_query(cid, candidates, positives, lat=same[0].lat, lon=same[0].lon))
    return _finish(tasks, corpora), report, dict(skipped)


_BUILDERS = {
    "scene_folders": _build_scene,
    "karpathy": _build_captions,
    "dior_rsvg": _build_dior,
    "rsvqa": _build_rsvqa,
    "composed": _build_composed,
    "geo_tiles": _build_geo,
}


def build_source(source: str, raw: str | Path, on_error: OnError = "raise", seed: int = 0) -> BuildResult:
    """Build every task of one source from its downloaded release.

    Args:
        source: a key of `SOURCES` (``"eurosat"``, ``"rsicd"``, ``"dior-rsvg"``...).
        raw: the release on disk, as `RAW_LAYOUTS` describes it.
        on_error (`"raise"` or `"skip"`, defaults to `"raise"`): what the parser does with a bad row
            (`rsmeb_eval.formats.report`).
        seed (`int`, defaults to 0): seeds the candidate draws (never the splits).

    Returns:
        `BuildResult`; every split in it passed `TaskData.validate`.

    Example:
        >>> result = build_source("eurosat", "EuroSAT/2750", on_error="skip")  # doctest: +SKIP
        >>> entries = write_task("out/rsmeb", "EuroSAT-SceneCls", result.tasks["EuroSAT-SceneCls"])  # doctest: +SKIP
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {sorted(SOURCES)}")
    check_on_error(on_error)
    info = SOURCES[source]
    tasks, report, skipped = _BUILDERS[info.format](source, Path(raw), on_error, seed)
    for reason, count in sorted(skipped.items()):
        logger.info("%s: %d left out by design: %s", source, count, reason)
    unexpected = set(tasks) - set(info.tasks)
    assert not unexpected, f"{source} built undeclared tasks {unexpected}"
    return BuildResult(tasks=tasks, report=report, skipped=skipped)


def build_source_folder(source: str, raw: str | Path, out_dir: str | Path, *, on_error: OnError = "raise",
                        seed: int = 0, if_exists: IfExists = "error", title: str | None = None):
    """`build_source` written to an RSMEB folder (with the source's licence in the card): what both
    `vlm2geovec rsmeb build --source` and the training converters run. Returns ``(BuildResult, tasks as
    written)`` — merged ones included with ``if_exists="merge"`` (see `write_dataset_folder`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {sorted(SOURCES)}")
    check_on_error(on_error)
    check_out_dir(Path(out_dir), if_exists)  # before a long parse
    built = build_source(source, raw, on_error=on_error, seed=seed)
    notes = (f"Built from the `{source}` release ({SOURCES[source].download}); licence of the originals: "
             f"{SOURCES[source].license}.\n")
    written = write_dataset_folder(out_dir, built.tasks, title=title or f"RSMEB — {source}", notes=notes,
                                   if_exists=if_exists)
    return built, written
