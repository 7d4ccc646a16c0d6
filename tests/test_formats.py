"""`rsmeb_eval.formats`: every parser on a tiny release in its exact raw format, then one damaged row at a
time: ``on_error="raise"`` names file and row, ``on_error="skip"`` leaves the row out and reports it."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import warnings

import pytest

from rsmeb_eval.formats import (
    ParseReport,
    ParseWarning,
    Problem,
    parse_composed,
    parse_dior_rsvg,
    parse_geo_tiles,
    parse_karpathy,
    parse_rsvqa,
    parse_scene_folders,
)
from tests.fixtures.raw.writers import (
    COMPOSED_ROWS,
    DIOR_OBJECTS,
    GEO_ROWS,
    RSVQA_ANSWERS,
    SHARED_CAPTION,
    dior_xml,
    save,
    tile,
    truncate,
    write_composed,
    write_dior_rsvg,
    write_geo_tiles,
    write_karpathy,
    write_rsvqa,
    write_scene_folders,
)


def check_policy(parse, file, row, reason: str):
    """``parse(on_error)`` raises ``<file>:<row>: <reason...>`` and, with "skip", reports exactly that row."""
    with pytest.raises(ValueError, match="^" + re.escape(f"{file}:{row}: ") + reason):
        parse("raise")
    with pytest.warns(ParseWarning, match="skipped"):
        records, report = parse("skip")
    assert isinstance(report, ParseReport)
    assert [(p.file, p.row) for p in report.problems] == [(str(file), row)]
    assert re.match(reason, report.problems[0].reason)
    return records


def no_warnings(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


def test_problem_text_and_bad_policy(tmp_path):
    assert str(Problem("a.csv", 3, "bad")) == "a.csv:3: bad"
    assert str(Problem("a.csv", None, "bad")) == "a.csv: bad"
    write_scene_folders(tmp_path, ["A"], 1)
    with pytest.raises(ValueError, match="on_error"):
        parse_scene_folders(tmp_path, on_error="ignore")


# ----------------------------------------------------------------------------------- scene folders

CLASSES = ["AnnualCrop", "Forest", "storage_tanks"]


@pytest.fixture
def scene_root(tmp_path):
    return write_scene_folders(tmp_path / "scenes", CLASSES, per_class=3, suffix=".jpg")


def test_scene_folders_records(scene_root):
    images, report = no_warnings(lambda: parse_scene_folders(scene_root, classes=CLASSES))
    assert not report
    assert [image.key for image in images][:3] == ["AnnualCrop/AnnualCrop_0.jpg", "AnnualCrop/AnnualCrop_1.jpg",
                                                   "AnnualCrop/AnnualCrop_2.jpg"]
    assert [image.label for image in images] == [c for c in CLASSES for _ in range(3)]
    assert all((image.width, image.height) == (24, 24) and image.path.is_file() for image in images)


@pytest.mark.parametrize("damage, row, reason, kept", [
    ("truncated", "Forest/Forest_1.jpg", "unreadable image", 8),
    ("unknown class", "Mystery", "unknown class folder", 9),
    ("empty class", "Empty", "empty class folder", 9),
    ("not an image", "Forest/notes.txt", "not an image file", 9),
    ("loose file", "README.txt", "a file outside any class folder", 9),
])
def test_scene_folders_bad_rows(scene_root, damage, row, reason, kept):
    if damage == "truncated":
        truncate(scene_root / row)
    elif damage == "unknown class":
        save(tile(0), scene_root / "Mystery" / "m.png")
    elif damage == "empty class":
        (scene_root / "Empty").mkdir()
    else:
        (scene_root / row).write_text("not an image")
    known = CLASSES + ["Empty"] if damage == "empty class" else CLASSES
    images = check_policy(lambda on_error: parse_scene_folders(scene_root, classes=known, on_error=on_error),
                          scene_root, row, reason)
    assert len(images) == kept
    assert row not in {image.key for image in images}


def test_scene_folders_missing_class_and_header_only_check(scene_root):
    images = check_policy(
        lambda on_error: parse_scene_folders(scene_root, classes=CLASSES + ["River"], on_error=on_error),
        scene_root, "River", "class folder missing")
    assert len(images) == 9
    damaged = scene_root / "Forest" / "Forest_0.jpg"
    damaged.write_bytes(damaged.read_bytes()[:-40])  # the header survives: only decoding notices
    with pytest.raises(ValueError, match="unreadable image"):
        parse_scene_folders(scene_root)
    images, report = parse_scene_folders(scene_root, check_images=False)
    assert len(images) == 9 and not report


# ------------------------------------------------------------------------------------------ Karpathy


@pytest.fixture
def karpathy(tmp_path):
    return write_karpathy(tmp_path / "rsicd")


def test_karpathy_records(karpathy):
    images, report = no_warnings(lambda: parse_karpathy(karpathy["json"], karpathy["images"]))
    assert not report and len(images) == 12
    first = images[0]
    assert first.filename == "airport_0.jpg" and first.split == "train" and first.imgid == 0
    assert [c.text for c in first.captions] == ["a airport scene number 0 .", "the airport 0 is seen from above",
                                                "image 0 shows some airport", "A  airport scene number 0"]
    assert [c.sentid for c in first.captions] == [0, 1, 2, 3]
    assert [image.split for image in images[:4]] == ["train", "train", "val", "test"]
    assert images[3].captions[-1].text == SHARED_CAPTION.strip()
    assert (first.width, first.height) == (32, 32)


def test_karpathy_tokens_stand_in_for_missing_raw(karpathy):
    data = json.loads(karpathy["json"].read_text())
    del data["images"][1]["sentences"][0]["raw"]
    karpathy["json"].write_text(json.dumps(data))
    images, _ = parse_karpathy(karpathy["json"], karpathy["images"])
    assert images[1].captions[0].text == "a beach scene number 1"


@pytest.mark.parametrize("damage, row, reason", [
    ("missing image", "images[5]", "missing image file"),
    ("truncated image", "images[5]", "unreadable image"),
    ("no sentences", "images[5]", "no sentences"),
    ("unknown split", "images[5]", "unknown split 'restval'"),
    ("duplicate filename", "images[5]", "duplicate filename"),
])
def test_karpathy_bad_rows(karpathy, damage, row, reason):
    data = json.loads(karpathy["json"].read_text())
    entry = data["images"][5]
    if damage == "missing image":
        (karpathy["images"] / entry["filename"]).unlink()
    elif damage == "truncated image":
        truncate(karpathy["images"] / entry["filename"])
    elif damage == "no sentences":
        entry["sentences"] = []
    elif damage == "unknown split":
        entry["split"] = "restval"
    else:
        entry["filename"] = data["images"][4]["filename"]
    karpathy["json"].write_text(json.dumps(data))
    images = check_policy(lambda on_error: parse_karpathy(karpathy["json"], karpathy["images"], on_error=on_error),
                          karpathy["json"], row, reason)
    assert len(images) == 11 and 5 not in {image.imgid for image in images}


def test_karpathy_empty_caption_drops_only_that_caption(karpathy):
    data = json.loads(karpathy["json"].read_text())
    data["images"][4]["sentences"][1].update(raw="  ", tokens=[])
    karpathy["json"].write_text(json.dumps(data))
    images = check_policy(lambda on_error: parse_karpathy(karpathy["json"], karpathy["images"], on_error=on_error),
                          karpathy["json"], "images[4].sentences[1]", "empty caption")
    assert len(images) == 12 and [c.index for c in images[4].captions] == [0, 2]


def test_karpathy_not_json(karpathy):
    karpathy["json"].write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_karpathy(karpathy["json"], karpathy["images"], on_error="skip")


# ----------------------------------------------------------------------------------------- DIOR-RSVG


@pytest.fixture
def dior(tmp_path):
    return write_dior_rsvg(tmp_path / "dior")


def rewrite_object(root, image_id, k, box=None, description="keep"):
    objects = [list(o) for o in DIOR_OBJECTS[image_id]]
    if box is not None:
        objects[k][1] = box
    if description != "keep":
        objects[k][2] = description
    (root / "Annotations" / f"{image_id}.xml").write_text(dior_xml(f"{image_id}.jpg", (64, 64), objects))


def test_dior_records(dior):
    images, report = no_warnings(lambda: parse_dior_rsvg(dior))
    assert not report
    assert [image.image_id for image in images] == list(DIOR_OBJECTS)
    first = images[0]
    assert first.filename == "00001.jpg" and (first.width, first.height) == (64, 64)
    assert [(o.index, o.global_index, o.name, o.bbox, o.description, o.split) for o in first.objects][1] == (
        1, 1, "vehicle", (40.0, 40.0, 60.0, 62.0), "the vehicle on the lower right", "train")
    splits = {image.image_id: {o.split for o in image.objects} for image in images}
    assert splits == {"00001": {"train"}, "00002": {"val"}, "00003": {"test"}, "00004": {"train"},
                      "00005": {"train"}, "00006": {"test"}}
    assert images[-1].objects[-1].global_index == sum(len(v) for v in DIOR_OBJECTS.values()) - 1


def test_dior_object_index_split_lists_match_image_id_lists(dior, tmp_path):
    by_object = write_dior_rsvg(tmp_path / "dior-objects", split_ids="object")
    assert (by_object / "train.txt").read_text().splitlines()[:3] == ["0", "1", "2"]
    from_images, _ = parse_dior_rsvg(dior)
    from_objects, _ = parse_dior_rsvg(by_object)
    strip = lambda images: [(i.image_id, i.objects) for i in images]  # noqa: E731
    assert strip(from_objects) == strip(from_images)


def test_dior_without_split_lists(dior):
    for split in ("train", "val", "test"):
        (dior / f"{split}.txt").unlink()
    images, _ = parse_dior_rsvg(dior)
    assert {o.split for image in images for o in image.objects} == {None}


@pytest.mark.parametrize("damage, file, row, reason, objects_left", [
    ("box outside", "Annotations/00002.xml", "object[1]", r"box \[10.0, 35.0, 80.0, 64.0\] outside the 64x64 image",
     14),
    ("degenerate box", "Annotations/00001.xml", "object[0]", "degenerate box", 14),
    ("missing description", "Annotations/00006.xml", "object[2]", "missing <description>", 14),
    ("missing image", "Annotations/00004.xml", "annotation", "missing image file", 12),
    ("size disagrees", "Annotations/00004.xml", "annotation", "<size> 800x800 disagrees", 12),
    ("unknown split id", "train.txt", 4, "no annotation file for image id '99999'", 15),
])
def test_dior_bad_rows(dior, damage, file, row, reason, objects_left):
    if damage == "box outside":
        rewrite_object(dior, "00002", 1, box=(10, 35, 80, 64))
    elif damage == "degenerate box":
        rewrite_object(dior, "00001", 0, box=(20, 3, 20, 18))
    elif damage == "missing description":
        rewrite_object(dior, "00006", 2, description=None)
    elif damage == "missing image":
        (dior / "JPEGImages" / "00004.jpg").unlink()
    elif damage == "size disagrees":
        (dior / "Annotations" / "00004.xml").write_text(dior_xml("00004.jpg", (800, 800), DIOR_OBJECTS["00004"]))
    else:
        with (dior / "train.txt").open("a") as handle:
            handle.write("99999\n")
    images = check_policy(lambda on_error: parse_dior_rsvg(dior, on_error=on_error), dior / file, row, reason)
    assert sum(len(image.objects) for image in images) == objects_left


def test_dior_malformed_xml_is_a_problem(dior, tmp_path):
    (dior / "Annotations" / "00003.xml").write_text("<annotation><object>")
    images = check_policy(lambda on_error: parse_dior_rsvg(dior, on_error=on_error),
                          dior / "Annotations" / "00003.xml", "annotation", "not valid XML")
    assert "00003" not in {image.image_id for image in images}
    # With object-index split lists, one unreadable file would shift every later index: refuse.
    by_object = write_dior_rsvg(tmp_path / "dior-objects", split_ids="object")
    (by_object / "Annotations" / "00003.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="object indices cannot be mapped"):
        parse_dior_rsvg(by_object, on_error="skip")


# -------------------------------------------------------------------------------------------- RSVQA


@pytest.fixture
def rsvqa(tmp_path):
    return write_rsvqa(tmp_path / "rsvqa")


def edit_json(path, key, edit):
    data = json.loads(path.read_text())
    edit(data[key])
    path.write_text(json.dumps(data))


def test_rsvqa_records(rsvqa):
    root, expected = rsvqa["root"], rsvqa["expected"]
    questions, report = no_warnings(lambda: parse_rsvqa(root, "LR_split_test"))
    assert not report
    assert len(questions) == 8  # 2 images x 4 types; the inactive question is not there
    for question in questions:
        split, image_id, kind, answer = expected[question.question_id]
        assert (split, question.image_id, question.type, question.answers) == ("test", image_id, kind, (answer,))
        assert question.image_path == root / "Images_LR" / f"{image_id}.tif"
    assert questions[0].question == "Is there a road?"


def test_rsvqa_png_images(tmp_path):
    root = write_rsvqa(tmp_path / "png", image_suffix=".png")["root"]
    questions, _ = parse_rsvqa(root, "LR_split_train")
    assert len(questions) == 12 and questions[0].image_path.suffix == ".png"


@pytest.mark.parametrize("damage, kind, row, reason, left", [
    ("missing image", "images", "images[0]", "missing image file", 4),
    ("dangling img_id", "questions", "questions[0]", "dangling img_id '999'", 7),
    ("dangling answer", "questions", "questions[1]", "dangling answers_ids", 7),
    ("no active answer", "questions", "questions[2]", "no active answer", 7),
    ("dangling question of image", "images", "images[1]", "dangling questions_ids", 4),
])
def test_rsvqa_bad_rows(rsvqa, damage, kind, row, reason, left):
    root = rsvqa["root"]
    files = {k: root / f"LR_split_test_{k}.json" for k in ("questions", "answers", "images")}
    if damage == "missing image":
        (root / "Images_LR" / "4.tif").unlink()
    elif damage == "dangling img_id":
        edit_json(files["questions"], "questions", lambda qs: qs[0].update(img_id=999))
    elif damage == "dangling answer":
        edit_json(files["questions"], "questions", lambda qs: qs[1].update(answers_ids=[12345]))
    elif damage == "no active answer":
        question_id = json.loads(files["questions"].read_text())["questions"][2]["id"]
        edit_json(files["answers"], "answers",
                  lambda answers: [a.update(active=False) for a in answers if a["question_id"] == question_id])
    else:
        edit_json(files["images"], "images", lambda images: images[1]["questions_ids"].append(54321))
    questions = check_policy(lambda on_error: parse_rsvqa(root, "LR_split_test", on_error=on_error),
                             files[kind], row, reason)
    assert len(questions) == left


def test_rsvqa_answers_cover_both_test_images(rsvqa):
    questions, _ = parse_rsvqa(rsvqa["root"], "LR_split_test")
    assert sorted({q.answers[0] for q in questions if q.type == "count"}) == sorted(
        {RSVQA_ANSWERS[i][2] for i in (4, 5)})


# ---------------------------------------------------------------------------------- composed triplets


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_composed_records(tmp_path, kind):
    listing = write_composed(tmp_path, kind)
    triplets, report = no_warnings(lambda: parse_composed(listing))
    assert not report
    assert [(t.reference, t.text, t.target, t.split) for t in triplets] == COMPOSED_ROWS
    assert triplets[0].reference_path == tmp_path / "images" / "a.png"
    assert triplets[0].line == (2 if kind == "csv" else 1)


def test_composed_without_split_column_and_image_root(tmp_path):
    listing = write_composed(tmp_path / "data", "csv", with_split=False)
    moved = tmp_path / "elsewhere" / "triplets.csv"
    moved.parent.mkdir()
    shutil.move(listing, moved)
    triplets, _ = parse_composed(moved, image_root=tmp_path / "data")
    assert len(triplets) == len(COMPOSED_ROWS) and {t.split for t in triplets} == {None}


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("damage, reason", [
    ("missing target", "missing image file"),
    ("empty text", "empty modification text"),
    ("unknown split", "unknown split 'dev'"),
    ("truncated reference", "unreadable image"),
])
def test_composed_bad_rows(tmp_path, kind, damage, reason):
    rows = [list(row) for row in COMPOSED_ROWS]
    if damage == "missing target":
        rows[3][2] = "images/zz.png"
    elif damage == "empty text":
        rows[3][1] = "   "
    elif damage == "unknown split":
        rows[3][3] = "dev"
    listing = write_composed(tmp_path, kind)
    if damage == "truncated reference":
        save(tile(0), tmp_path / "images" / "broken.png")
        truncate(tmp_path / "images" / "broken.png")
        rows[3][0] = "images/broken.png"
    if kind == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([["reference", "text", "target", "split"]] + rows)
        listing.write_text(out.getvalue())
        row = 5
    else:
        keys = ("reference", "text", "target", "split")
        listing.write_text("".join(json.dumps(dict(zip(keys, r))) + "\n" for r in rows))
        row = 4
    triplets = check_policy(lambda on_error: parse_composed(listing, on_error=on_error), listing, row, reason)
    assert len(triplets) == len(COMPOSED_ROWS) - 1


def test_composed_bad_json_line_and_missing_column(tmp_path):
    listing = write_composed(tmp_path, "jsonl")
    listing.write_text(listing.read_text() + "{oops\n")
    triplets = check_policy(lambda on_error: parse_composed(listing, on_error=on_error), listing,
                            len(COMPOSED_ROWS) + 1, "not valid JSON")
    assert len(triplets) == len(COMPOSED_ROWS)
    bad = tmp_path / "bad.csv"
    bad.write_text("reference,target\nimages/a.png,images/b.png\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: missing column\(s\) \['text'\]"):
        parse_composed(bad, on_error="skip")


# ----------------------------------------------------------------------------------------- geo tiles


@pytest.mark.parametrize("kind", ["csv", "geojson"])
def test_geo_tiles_records(tmp_path, kind):
    listing = write_geo_tiles(tmp_path, kind)
    tiles, report = no_warnings(lambda: parse_geo_tiles(listing))
    assert not report
    assert [(t.image, t.lat, t.lon) for t in tiles] == [(r[0], r[1], r[2]) for r in GEO_ROWS]
    sydney = tiles[2]  # GeoJSON stores [lon, lat]: lon 151.21 could never be read as a latitude
    assert (sydney.lat, sydney.lon, sydney.caption, sydney.split) == (-33.87, 151.21, "harbour city", "train")
    assert tiles[5].caption is None
    assert tiles[0].row == (2 if kind == "csv" else "features[0]")


@pytest.mark.parametrize("kind", ["csv", "geojson"])
@pytest.mark.parametrize("damage, reason", [
    ("nan latitude", "latitude is NaN"),
    ("latitude out of range", r"latitude 95.0 outside \[-90, 90\]"),
    ("longitude out of range", r"longitude 200.0 outside \[-180, 180\]"),
    ("missing image", "missing image file"),
    ("duplicate image", "image 'tiles/t2.png' listed twice"),
])
def test_geo_tiles_bad_rows(tmp_path, kind, damage, reason):
    rows = [list(r) for r in GEO_ROWS]
    listing = write_geo_tiles(tmp_path, kind)
    if damage == "nan latitude":
        rows[3][1] = float("nan")
    elif damage == "latitude out of range":
        rows[3][1] = 95.0
    elif damage == "longitude out of range":
        rows[3][2] = 200.0
    elif damage == "missing image":
        (tmp_path / rows[3][0]).unlink()
    else:
        rows[3][0] = "tiles/t2.png"
    if damage != "missing image":
        listing = write_geo_tiles(tmp_path, kind, rows=[tuple(r) for r in rows])
    row = 5 if kind == "csv" else "features[3]"
    tiles = check_policy(lambda on_error: parse_geo_tiles(listing, on_error=on_error), listing, row, reason)
    assert len(tiles) == len(GEO_ROWS) - 1


def test_geo_tiles_geometry_must_be_a_point(tmp_path):
    listing = write_geo_tiles(tmp_path, "geojson")
    data = json.loads(listing.read_text())
    data["features"][1]["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    listing.write_text(json.dumps(data))
    tiles = check_policy(lambda on_error: parse_geo_tiles(listing, on_error=on_error), listing, "features[1]",
                         "geometry is not a Point")
    assert "tiles/t1.png" not in {t.image for t in tiles}
