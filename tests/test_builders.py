"""`rsmeb_eval.builders.public`: every source built from a tiny release in its raw format; tasks valid,
ids and positives right, builds deterministic, written and read back through `dataset_io`, and bad rows
raised or skipped-and-reported."""

from __future__ import annotations

import random
import re

import pytest
from PIL import Image

from rsmeb_eval.builders import SOURCES, BuildResult, build_source, class_words, draw_candidates, hash_split
from rsmeb_eval.builders.public import RAW_LAYOUTS, SCENE_CLASSES
from rsmeb_eval.dataset_io import TaskData, configs_yaml, load_task, write_task
from rsmeb_eval.formats import ParseWarning
from tests.fixtures.raw.writers import (
    RSVQA_ANSWERS,
    RSVQA_QUESTIONS,
    RSVQA_SPLITS,
    SHARED_CAPTION,
    truncate,
    write_composed,
    write_dior_rsvg,
    write_geo_tiles,
    write_karpathy,
    write_rsvqa,
    write_scene_folders,
)

SCENE_SUFFIX = {"eurosat": ".jpg", "ucmerced": ".tif", "aid": ".jpg", "resisc45": ".png"}


def write_release(source: str, root):
    """The raw release of ``source`` under ``root``; returns what `build_source` takes."""
    if source in SCENE_CLASSES:
        return write_scene_folders(root, list(SCENE_CLASSES[source]), per_class=3, suffix=SCENE_SUFFIX[source], size=16)
    if source == "rsicd":
        return write_karpathy(root)["json"].parent
    if source == "rsitmd":
        return write_karpathy(root, "dataset_RSITMD.json", "images")["json"].parent
    if source == "ucm-captions":
        return write_karpathy(root, "dataset.json", "imgs", suffix=".tif")["json"].parent
    if source == "dior-rsvg":
        return write_dior_rsvg(root, split_ids="object")
    if source == "rsvqa-lr":
        return write_rsvqa(root)["root"]
    if source == "patterncom":
        return write_composed(root, "jsonl").parent
    if source == "geo-tiles":
        return write_geo_tiles(root, "geojson")
    raise AssertionError(source)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return {source: write_release(source, root / source) for source in SOURCES}


@pytest.fixture(scope="module")
def builds(releases):
    return {source: build_source(source, raw) for source, raw in releases.items()}


def queries(result: BuildResult, task: str, split: str) -> dict[str, dict]:
    return {row["query_id"]: row for row in result.tasks[task][split].queries}


def corpus(result: BuildResult, task: str, split: str) -> dict[str, dict]:
    return {row["id"]: row for row in result.tasks[task][split].corpus}


def without_root(tasks: dict, root) -> dict:
    """Tasks with image paths made relative to ``root``, to compare builds of copies of a release."""
    prefix = str(root) + "/"

    def strip(row):
        return {**row, "image": row["image"].removeprefix(prefix) if isinstance(row["image"], str) else row["image"]}

    return {task: {split: TaskData([strip(r) for r in data.queries], [strip(r) for r in data.corpus])
                   for split, data in splits.items()} for task, splits in tasks.items()}


# ------------------------------------------------------------------------------------------ generic


def test_sources_table():
    assert set(SOURCES) == {"eurosat", "ucmerced", "aid", "resisc45", "rsicd", "rsitmd", "ucm-captions", "dior-rsvg",
                            "rsvqa-lr", "patterncom", "geo-tiles"}
    assert set(RAW_LAYOUTS) == set(SOURCES)
    for fmt, tasks, download, license in SOURCES.values():
        assert fmt in {"scene_folders", "karpathy", "dior_rsvg", "rsvqa", "composed", "geo_tiles"}
        assert tasks and all(isinstance(t, str) for t in tasks)
        assert download.strip() and license.strip()
    assert SOURCES["eurosat"].license == "MIT" and SOURCES["rsvqa-lr"].license == "CC-BY-4.0"
    with pytest.raises(ValueError, match="unknown source"):
        build_source("imagenet", ".")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_build_is_valid_and_deterministic(source, releases, builds):
    result = builds[source]
    assert set(result.tasks) == set(SOURCES[source].tasks)
    assert not result.report
    for task, splits in result.tasks.items():
        assert set(splits) == {"train", "test"}, task
        for split, data in splits.items():
            data.validate(task, split)
            for row in data.queries:
                assert set(row) == {"query_id", "image", "text", "bbox", "lat", "lon", "candidate_ids", "positive_ids"}
                assert 2 <= len(row["candidate_ids"]) <= 100
                assert set(row["positive_ids"]) <= set(row["candidate_ids"])
            for row in data.corpus:
                assert set(row) == {"id", "image", "text", "bbox", "lat", "lon"}
    assert build_source(source, releases[source]) == result


def test_rows_carry_the_registered_modalities(builds):
    from rsmeb_eval.registry import get_task
    from rsmeb_eval.schema import item_modalities

    for result in builds.values():
        for task, splits in result.tasks.items():
            meta = get_task(task).metadata
            for data in splits.values():
                assert {frozenset(item_modalities(r)) for r in data.queries} == {frozenset(meta.query_modalities)}
                assert {frozenset(item_modalities(r)) for r in data.corpus} == {frozenset(meta.candidate_modalities)}


def test_seed_changes_draws_not_ids(releases, builds):
    other = build_source("rsicd", releases["rsicd"], seed=1)
    for task in ("RSICD-T2I", "RSICD-I2T"):
        a, b = queries(builds["rsicd"], task, "test"), queries(other, task, "test")
        assert a.keys() == b.keys()
        assert all(a[q]["positive_ids"] == b[q]["positive_ids"] for q in a)
        assert any(a[q]["candidate_ids"] != b[q]["candidate_ids"] for q in a)
        # The test split is small, so every image takes part whatever the seed (T2I: all three images; I2T:
        # one caption of each other image, which one is up to the seed).
        assert all(len(a[q]["candidate_ids"]) == len(b[q]["candidate_ids"]) for q in a)
        if task == "RSICD-T2I":
            assert all(sorted(a[q]["candidate_ids"]) == sorted(b[q]["candidate_ids"]) for q in a)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_round_trip_through_dataset_io(source, builds, tmp_path):
    result = builds[source]
    entries = []
    for task, splits in result.tasks.items():
        entries += write_task(tmp_path, task, splits)
    (tmp_path / "README.md").write_text("---\n" + configs_yaml(entries) + "---\n")
    for task, splits in result.tasks.items():
        for split, data in splits.items():
            loaded_queries, loaded_corpus = load_task(tmp_path, task, split)
            assert loaded_queries["query_id"] == [row["query_id"] for row in data.queries]
            assert loaded_queries["candidate_ids"] == [row["candidate_ids"] for row in data.queries]
            assert loaded_queries["positive_ids"] == [row["positive_ids"] for row in data.queries]
            assert loaded_queries["text"] == [row["text"] for row in data.queries]
            assert loaded_corpus["id"] == [row["id"] for row in data.corpus]
            assert loaded_corpus["text"] == [row["text"] for row in data.corpus]
            for loaded, rows in ((loaded_queries, data.queries), (loaded_corpus, data.corpus)):
                assert loaded["lat"] == [row["lat"] for row in rows]
                assert loaded["bbox"] == [row["bbox"] for row in rows]
                first = next((i for i, row in enumerate(rows) if row["image"] is not None), None)
                if first is not None:
                    with Image.open(rows[first]["image"]) as original:
                        assert loaded[first]["image"].size == original.size


# ------------------------------------------------------------------------------------------ helpers


def test_hash_split_is_stable_and_80_20():
    keys = [f"Class/img_{i}.jpg" for i in range(5000)]
    splits = [hash_split(key) for key in keys]
    assert splits == [hash_split(key) for key in keys]
    assert 0.18 < splits.count("test") / len(keys) < 0.22
    assert hash_split("Forest/Forest_1.jpg") == hash_split("Forest/Forest_1.jpg")


def test_class_words():
    assert class_words("AnnualCrop") == "annual crop"
    assert class_words("storage_tanks") == "storage tanks"
    assert class_words("HerbaceousVegetation") == "herbaceous vegetation"
    assert class_words("mobilehomepark") == "mobile home park"
    assert class_words("SeaLake") == "sea or lake"
    assert class_words("ground_track_field") == "ground track field"


def test_draw_candidates():
    pool = [f"d{i}" for i in range(500)]
    candidates, positives = draw_candidates(["d7"], pool, random.Random("q"))
    assert len(candidates) == 100 == len(set(candidates)) and positives == ["d7"] and "d7" in candidates
    assert draw_candidates(["d7"], pool, random.Random("q")) == (candidates, positives)
    small, _ = draw_candidates(["d1", "d2"], pool[:10], random.Random("q"))
    assert sorted(small) == sorted(pool[:10])
    many, kept = draw_candidates(pool[:300], pool, random.Random("q"))
    assert len(many) == 100 and len(kept) == 50 and set(kept) <= set(many)
    odd_only, _ = draw_candidates(["d1"], pool, random.Random("q"), pick=lambda d, rng: d if int(d[1:]) % 2 else None)
    assert all(int(d[1:]) % 2 for d in odd_only)


# ----------------------------------------------------------------------------------- per source


@pytest.mark.parametrize("source", ["eurosat", "ucmerced", "aid", "resisc45"])
def test_scene_classification(source, releases, builds):
    task = {"eurosat": "EuroSAT", "ucmerced": "UCMerced", "aid": "AID", "resisc45": "RESISC45"}[source] + "-SceneCls"
    result = builds[source]
    classes = list(SCENE_CLASSES[source])
    seen = set()
    for split in ("train", "test"):
        docs = corpus(result, task, split)
        assert list(docs) == classes
        for query_id, row in queries(result, task, split).items():
            label = query_id.split("/")[0]
            assert hash_split(query_id) == split and query_id.endswith(SCENE_SUFFIX[source])
            assert row["candidate_ids"] == classes and row["positive_ids"] == [label]
            assert row["image"] == str(releases[source] / query_id)
            seen.add(query_id)
    assert len(seen) == 3 * len(classes)
    if source == "eurosat":
        docs = corpus(result, task, "test")
        assert docs["AnnualCrop"]["text"] == "a satellite image of annual crop"
        assert docs["SeaLake"]["text"] == "a satellite image of sea or lake"


def test_caption_retrieval(builds):
    result = builds["rsicd"]
    t2i, i2t = queries(result, "RSICD-T2I", "test"), queries(result, "RSICD-I2T", "test")
    test_images = ["forest_3.jpg", "forest_7.jpg", "forest_11.jpg"]
    assert list(corpus(result, "RSICD-T2I", "test")) == test_images
    assert set(i2t) == set(test_images)
    shared = [row for row in t2i.values() if row["text"] == SHARED_CAPTION.strip()]
    assert len(shared) == 1 and shared[0]["query_id"] == "forest_3.jpg#3"
    assert shared[0]["positive_ids"] == ["forest_3.jpg", "forest_7.jpg"]
    assert t2i["forest_11.jpg#0"]["positive_ids"] == ["forest_11.jpg"]
    # I2T: all of an image's captions are positives; the shared caption counts for both images.
    assert sorted(i2t["forest_7.jpg"]["positive_ids"]) == ["forest_3.jpg#3", "forest_7.jpg#0", "forest_7.jpg#1",
                                                           "forest_7.jpg#2"]
    candidates = i2t["forest_7.jpg"]["candidate_ids"]
    assert len(candidates) == 4 + 2  # one distractor caption from each other test image
    assert {c.split("#")[0] for c in candidates} == {"forest_3.jpg", "forest_7.jpg", "forest_11.jpg"}
    # Train: image 0's repeated caption is merged; val images appear nowhere.
    train = queries(result, "RSICD-I2T", "train")
    assert train["airport_0.jpg"]["positive_ids"] == ["airport_0.jpg#0", "airport_0.jpg#1", "airport_0.jpg#2"]
    assert result.skipped["duplicate caption merged"] == 2
    everything = {q for task in result.tasks.values() for data in task.values() for q in
                  [r["query_id"] for r in data.queries] + [r["id"] for r in data.corpus]}
    assert not any(name.startswith(("farmland_2.", "farmland_6.", "farmland_10.")) for name in everything)
    assert set(builds["ucm-captions"].tasks) == {"UCMCaptions-T2I"}
    assert set(builds["rsitmd"].tasks) == {"RSITMD-T2I", "RSITMD-I2T"}


def test_dior_rsvg_tasks(releases, builds, tmp_path):
    result = builds["dior-rsvg"]
    refexp = queries(result, "DIOR-RSVG-RefExp", "test")
    assert sorted(refexp) == ["00006#0", "00006#1", "00006#2"]  # 00003 has a single object
    row = refexp["00006#1"]
    assert row["text"] == "the windmill on the right" and row["bbox"] is None
    assert row["candidate_ids"] == ["00006#box0", "00006#box1", "00006#box2"] and row["positive_ids"] == ["00006#box1"]
    assert corpus(result, "DIOR-RSVG-RefExp", "test")["00006#box1"]["bbox"] == [[44.0, 4.0, 56.0, 16.0]]
    train = queries(result, "DIOR-RSVG-RefExp", "train")
    assert train["00004#1"]["positive_ids"] == ["00004#box0"]  # two expressions of one box share it
    assert train["00004#0"]["candidate_ids"] == ["00004#box0", "00004#box2"]
    assert "00005#0" not in train and "00005#2" in train  # "an airplane" names two boxes: left out
    for split in ("train", "test"):  # 00002 is val
        assert not any(q.startswith("00002") for q in queries(result, "DIOR-RSVG-RefExp", split))
    region = queries(result, "DIOR-RSVG-RegionCaption", "train")
    assert region["00004#box0"]["bbox"] == [[8.0, 20.0, 56.0, 36.0]]
    assert region["00004#box0"]["positive_ids"] == ["00004#0", "00004#1"]
    assert region["00004#box0"]["candidate_ids"] == ["00004#0", "00004#1", "00004#2"]
    assert "00005#box2" not in region  # only one box keeps an unambiguous expression
    assert result.skipped["single-object image"] == 1 and result.skipped["ambiguous expression"] == 2
    # Image-id split lists give the same tasks as the official object-index lists.
    by_image = build_source("dior-rsvg", write_dior_rsvg(tmp_path / "by-image", split_ids="image"))
    assert without_root(by_image.tasks, tmp_path / "by-image") == without_root(result.tasks, releases["dior-rsvg"])


def test_rsvqa_tasks(builds):
    result = builds["rsvqa-lr"]
    test = queries(result, "RSVQA-LR-VQA", "test")
    assert len(test) == 4 * len(RSVQA_SPLITS["test"])  # four question types per image; inactive ones left out
    # Candidates: every answer seen for the type (the count bins are the data's own strings); val is left out.
    seen_counts = sorted({RSVQA_ANSWERS[i][2] for split in ("train", "test") for i in RSVQA_SPLITS[split]})
    by_question = {"Is there a road?": ["no", "yes"], "Are there more buildings than roads?": ["no", "yes"],
                   "Is it a rural or an urban area?": ["rural", "urban"], "How many buildings are there?": seen_counts}
    for row in test.values():
        assert row["candidate_ids"] == by_question[row["text"]]
        image_id = int(row["image"].rsplit("/", 1)[1].removesuffix(".tif"))
        assert image_id in RSVQA_SPLITS["test"]
        kind = [text for _, text in RSVQA_QUESTIONS].index(row["text"])
        assert row["positive_ids"] == [RSVQA_ANSWERS[image_id][kind]]
    assert "between 101 and 1000" in seen_counts and "0" in seen_counts
    docs = corpus(result, "RSVQA-LR-VQA", "test")
    assert docs["between 1 and 10"]["text"] == "between 1 and 10" and "yes" in docs and "rural" in docs
    first = test[min(test, key=int)]
    assert first["text"] == "Is there a road?" and first["positive_ids"] == [RSVQA_ANSWERS[4][0]]


def test_patterncom_tasks(builds):
    result = builds["patterncom"]
    test = queries(result, "PatternCom-Composed", "test")
    assert len(test) == 3  # e+"with buildings" is one query with two targets
    group = [row for row in test.values() if row["text"] == "with buildings"]
    assert len(group) == 1 and group[0]["positive_ids"] == ["images/f.png", "images/g.png"]
    assert group[0]["query_id"].startswith("images/e.png#")
    assert list(corpus(result, "PatternCom-Composed", "test")) == ["images/e.png", "images/f.png", "images/g.png",
                                                                   "images/h.png"]
    for row in queries(result, "PatternCom-Composed", "train").values():
        reference = row["query_id"].split("#")[0]
        assert reference not in row["candidate_ids"]  # the reference image is never a distractor
    train = queries(result, "PatternCom-Composed", "train")
    a_road = next(row for row in train.values() if row["text"] == "with a road")
    assert a_road["positive_ids"] == ["images/b.png", "images/c.png"]
    assert result.skipped == {"val triplet group": 1}


def test_geo_tasks(builds):
    result = builds["geo-tiles"]
    img2coords = queries(result, "GeoTiles-Img2Coords", "train")
    coords2img = queries(result, "GeoTiles-Coords2Img", "train")
    assert img2coords["tiles/t4.png"]["positive_ids"] == ["tiles/t3.png"]  # same place, one coordinate item
    assert coords2img["tiles/t3.png"]["positive_ids"] == ["tiles/t3.png", "tiles/t4.png"]
    assert (coords2img["tiles/t3.png"]["lat"], coords2img["tiles/t3.png"]["lon"]) == (51.5, -0.12)
    docs = corpus(result, "GeoTiles-Img2Coords", "train")
    assert list(docs) == ["tiles/t0.png", "tiles/t1.png", "tiles/t2.png", "tiles/t3.png"]
    sydney = docs["tiles/t2.png"]
    assert (sydney["lat"], sydney["lon"], sydney["image"]) == (-33.87, 151.21, None)
    assert "tiles/t9.png" not in queries(result, "GeoTiles-Img2Coords", "test")  # val
    assert len(queries(result, "GeoTiles-Coords2Img", "test")) == 4


def test_hash_split_when_a_listing_has_no_split(tmp_path):
    listing = write_composed(tmp_path, "csv", with_split=False)
    result = build_source("patterncom", listing)
    for split, data in result.tasks["PatternCom-Composed"].items():
        assert all(hash_split(row["query_id"].split("#")[0]) == split for row in data.queries)


# ------------------------------------------------------------------------------------ bad rows


def damage(source: str, raw):
    """Damage one row of a release; returns (file, row) the problem must name and what must be missing."""
    if source == "eurosat":
        truncate(raw / "Forest" / "Forest_1.jpg")
        return raw, "Forest/Forest_1.jpg", ("EuroSAT-SceneCls", "Forest/Forest_1.jpg")
    if source == "ucmerced":
        (raw / "golf_course").mkdir()
        (raw / "golf_course" / "x.tif").write_bytes((raw / "forest" / "forest_0.tif").read_bytes())
        return raw, "golf_course", ("UCMerced-SceneCls", "golf_course/x.tif")
    if source == "rsicd":
        (raw / "RSICD_images" / "forest_7.jpg").unlink()
        return raw / "dataset_rsicd.json", "images[7]", ("RSICD-I2T", "forest_7.jpg")
    if source == "dior-rsvg":
        xml = raw / "Annotations" / "00006.xml"
        xml.write_text(xml.read_text().replace("<xmax>56</xmax><ymax>16</ymax>", "<xmax>70</xmax><ymax>16</ymax>"))
        return xml, "object[1]", ("DIOR-RSVG-RefExp", "00006#1")
    if source == "rsvqa-lr":
        (raw / "Images_LR" / "5.tif").unlink()
        return raw / "LR_split_test_images.json", "images[1]", ("RSVQA-LR-VQA", None)
    if source == "patterncom":
        listing = raw / "triplets.jsonl"
        lines = listing.read_text().splitlines(keepends=True)
        lines[6] = lines[6].replace("images/g.png", "images/missing.png")
        listing.write_text("".join(lines))
        return listing, 7, ("PatternCom-Composed", None)
    if source == "geo-tiles":
        listing = raw
        listing.write_text(listing.read_text().replace("[139.69, 35.68]", '[139.69, NaN]'))
        return listing, "features[7]", ("GeoTiles-Img2Coords", "tiles/t7.png")
    raise AssertionError(source)


@pytest.mark.parametrize("source", ["eurosat", "ucmerced", "rsicd", "dior-rsvg", "rsvqa-lr", "patterncom", "geo-tiles"])
def test_bad_rows_raise_or_are_skipped_and_reported(source, tmp_path):
    raw = write_release(source, tmp_path / source)
    file, row, (task, gone) = damage(source, raw)
    with pytest.raises(ValueError, match="^" + re.escape(f"{file}:{row}: ")):
        build_source(source, raw)
    with pytest.warns(ParseWarning):
        result = build_source(source, raw, on_error="skip")
    assert [(p.file, p.row) for p in result.report.problems] == [(str(file), row)]
    for split, data in result.tasks[task].items():
        data.validate(task, split)
        if gone is not None:
            assert gone not in {r["query_id"] for r in data.queries}
    if source == "rsvqa-lr":  # image 5's questions went with it
        assert len(result.tasks[task]["test"].queries) == 4
    if source == "patterncom":  # the missing target's row is gone; e keeps its other target
        e = next(r for r in result.tasks[task]["test"].queries if r["text"] == "with buildings")
        assert e["positive_ids"] == ["images/f.png"]
