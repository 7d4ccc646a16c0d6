"""`vlm2geovec_train.converters` and `rsmeb_eval.formats.geochat`: GeoChat-Instruct parsed from its raw format
(percent boxes -> exact pixels), reshaped into registered task shapes, written as an RSMEB folder that
`training_datasets` reads into rows the processor accepts; public sources converted through their builders;
bad rows raised or skipped-and-reported with file and row; conversions deterministic."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from processing_vlm2geovec import normalize_item
from rsmeb_eval.dataset_io import load_task
from rsmeb_eval.formats import GeoChatSample, ParseWarning, parse_geochat_instruct
from rsmeb_eval.formats.geochat import parse_boxes, strip_markup, turn_kind
from tests.fixtures.raw.geochat import EXPECTED_PIXELS, SAMPLES, write_geochat
from tests.fixtures.raw.writers import truncate, write_dior_rsvg, write_geo_tiles, write_rsvqa
from vlm2geovec_train.converters import (
    GEOCHAT_TASKS,
    convert_geochat,
    convert_public,
    geochat_tasks,
)
from vlm2geovec_train.data import training_datasets

REFEXP, REGION, VQA, CAPTION = (GEOCHAT_TASKS[k] for k in ("refexp", "region_caption", "vqa", "caption"))


@pytest.fixture(scope="module")
def geochat(tmp_path_factory):
    return write_geochat(tmp_path_factory.mktemp("geochat"))


@pytest.fixture(scope="module")
def geochat_bad(tmp_path_factory):
    return write_geochat(tmp_path_factory.mktemp("geochat-bad"), bad=True)


@pytest.fixture(scope="module")
def samples(geochat) -> list[GeoChatSample]:
    records, report = parse_geochat_instruct(geochat["json"], geochat["images"])
    assert not report
    return records


@pytest.fixture(scope="module")
def converted(geochat, tmp_path_factory):
    out = tmp_path_factory.mktemp("geochat-out") / "rsmeb"
    return convert_geochat(geochat["json"], geochat["images"], out)


def queries(result, task: str) -> dict[str, dict]:
    return {row["query_id"]: row for row in result.tasks[task]["train"].queries}


def check_training_rows(dataset_dict, n_negatives: int = 1) -> int:
    """Every item of every row passes the processor's validation (boxes inside their image); returns rows."""
    total = 0
    for name, dataset in dataset_dict.items():
        for i, row in enumerate(dataset):
            for column in ["anchor", "positive"] + [f"negative_{k + 1}" for k in range(n_negatives)]:
                parts = normalize_item(row[column], f"{name}[{i}].{column}")
                assert parts, (name, i, column)
            assert len(row["label"]) == 1 + n_negatives
            total += 1
    return total


# ----------------------------------------------------------------------------------------------- parsing


def test_parse_records_and_exact_pixel_boxes(samples):
    assert [s.index for s in samples] == list(range(len(SAMPLES)))
    assert [s.id for s in samples][:3] == ["P0001_0000", "P0001_0000", "harbor_01"]
    airport = samples[0]
    assert (airport.image, airport.width, airport.height) == ("airport.png", 120, 80)
    assert [t.kind for t in airport.turns] == ["refer", "refer", "refer"]
    assert [[b.bbox for b in t.answer_boxes] for t in airport.turns] == EXPECTED_PIXELS
    assert [b.percent for b in airport.turns[0].answer_boxes] == [(10, 5, 30, 20), (40, 5, 60, 20)]
    assert [[b.angle for b in t.answer_boxes] for t in airport.turns] == [[0, 0], [45], [90]]
    assert [t.expression for t in airport.turns] == [
        "the two white planes at the top", "the large hangar on the right", "the small vehicle at the bottom left"]
    question, answer = airport.turns[1]
    assert question == "[refer] where is <p>the large hangar on the right</p> ?"
    assert answer == "{<70><40><95><90>|<45>}"
    assert airport.turns[0].index == 0 and airport.turns[2].index == 4

    identify = samples[1].turns
    assert [t.kind for t in identify] == ["identify", "identify"]
    assert identify[0].question_boxes[0].bbox == (84.0, 32.0, 114.0, 72.0)
    assert identify[1].question_boxes[0].angle is None  # "|<angle>" is optional
    assert identify[0].answer_text == "a large hangar on the right"

    grounding = samples[2].turns[0]
    assert (samples[2].width, samples[2].height, grounding.kind) == (80, 60, "grounding")
    assert [(p.text, [b.bbox for b in p.boxes]) for p in grounding.phrases] == [
        ("a ship", [(8.0, 6.0, 32.0, 18.0)]), ("the harbor", [(0.0, 30.0, 80.0, 60.0)])]
    assert grounding.answer_text == "The image shows a ship anchored at the harbor."

    vqa = [t for s in samples for t in s.turns if t.kind == "vqa"]
    assert [(t.question_text, t.answer) for t in vqa][:3] == [
        ("Is there a road?", "Yes"), ("Is it a rural or an urban area?", "rural"), ("Is there a road?", "no")]
    assert vqa[-1].question_text.startswith("Classify the given image") and vqa[-1].answer == "forest"
    kinds = [t.kind for s in samples for t in s.turns]
    assert kinds.count("caption") == 2 and kinds.count("conversation") == 2
    antenna = samples[10].turns[0].answer_boxes[0]
    assert antenna.degenerate and antenna.bbox == (60.0, 40.0, 60.0, 48.0)


def test_box_text_and_kinds():
    boxes = parse_boxes("<p>cars</p> {<0><0><50><100>|<-30>}, { <25> <50> <100> <75> }", 200, 40)
    assert [(b.percent, b.angle, b.bbox) for _, b in boxes] == [
        ((0, 0, 50, 100), -30, (0.0, 0.0, 100.0, 40.0)), ((25, 50, 100, 75), None, (50.0, 20.0, 200.0, 30.0))]
    assert parse_boxes("no box here {not a box}", 10, 10) == []
    for text, reason in (("{<1><2><3>|<0>}", "malformed box"), ("{<1><2><3><4>|0}", "malformed box"),
                         ("{<1><2><3><4.5>}", "malformed box"), ("{<1><2><101><4>}", "outside 0-100"),
                         ("{<-1><2><10><4>}", "outside 0-100"), ("{<50><2><10><4>}", "inverted box"),
                         ("{<1><2><3><4>", "malformed box text"), ("at <10><20>", "malformed box text")):
        with pytest.raises(ValueError, match=reason):
            parse_boxes(text, 100, 100)
    assert strip_markup("<image>\n[refer] where is <p>the ship</p> {<1><2><3><4>|<5>} ?") == "where is the ship?"
    assert turn_kind("<image>\n[identify] {<1><2><3><4>}") == ("identify", "identify")
    assert turn_kind("[VQA] is there a ship?") == ("vqa", "vqa")  # MiniGPT-v2 tags are accepted too
    assert turn_kind("[caption] a short caption please") == ("caption", "caption")
    assert turn_kind("Is there a ship? Answer in one word or a short phrase.") == ("vqa", None)
    assert turn_kind("Describe the image in detail.\n<image>") == ("caption", None)
    assert turn_kind("[detection] find every car") == ("conversation", "detection")
    assert turn_kind("What is happening in this scene?") == ("conversation", None)


def test_bad_rows_raise_or_are_skipped_with_file_and_row(geochat_bad):
    json_path, images = geochat_bad["json"], geochat_bad["images"]
    first_row, first_reason = geochat_bad["bad_rows"][0]
    with pytest.raises(ValueError, match="malformed box") as error:
        parse_geochat_instruct(json_path, images)
    assert str(error.value).startswith(f"{json_path}:{first_row}: ")
    with pytest.warns(ParseWarning, match=f"{len(geochat_bad['bad_rows'])} row"):
        records, report = parse_geochat_instruct(json_path, images, on_error="skip")
    assert [(p.file, p.row) for p in report.problems] == [(str(json_path), row) for row, _ in geochat_bad["bad_rows"]]
    for problem, (_, reason) in zip(report.problems, geochat_bad["bad_rows"]):
        assert reason in problem.reason, (problem, reason)
    # Good samples all kept; of the broken ones only the good turn of the partly broken sample survives.
    extra = [r for r in records if r.index >= len(SAMPLES)]
    assert [(r.id, [t.kind for t in r.turns]) for r in extra] == [("bad_partial", ["vqa"])]
    assert len(records) == len(SAMPLES) + 1


def test_not_a_list_and_missing_image_folder(tmp_path, geochat):
    listing = tmp_path / "GeoChat_Instruct.json"
    listing.write_text('{"conversations": []}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        parse_geochat_instruct(listing, geochat["images"])
    with pytest.raises(FileNotFoundError):
        parse_geochat_instruct(geochat["json"], tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------- GeoChat


def test_geochat_task_shapes(converted, geochat):
    assert converted.rows == {f"{REFEXP}/train": 7, f"{REGION}/train": 6, f"{VQA}/train": 5, f"{CAPTION}/train": 3}
    assert converted.turns == {"refer": 4, "grounding": 1, "identify": 2, "vqa": 5, "caption": 2, "conversation": 2}
    # The degenerate antenna box is the only refer turn left out; conversations have no shape.
    assert converted.converted == {"refer": 3, "grounding": 1, "identify": 2, "vqa": 5, "caption": 2, "conversation": 0}
    assert converted.skipped == {"conversation turn: free-form, no task shape": 2,
                                 "box: zero width or height (rounded to whole percents)": 1}
    assert not converted.report

    airport = str(geochat["images"] / "airport.png")
    refexp = {row["text"]: row for row in converted.tasks[REFEXP]["train"].queries}
    planes = refexp["the two white planes at the top"]
    assert planes["image"] == airport and planes["bbox"] is None
    assert sorted(planes["positive_ids"]) == ["geochat/airport.png#box:10,5,30,20",
                                              "geochat/airport.png#box:40,5,60,20"]
    assert len(planes["candidate_ids"]) == 4 and set(planes["positive_ids"]) < set(planes["candidate_ids"])
    corpus = {row["id"]: row for row in converted.tasks[REFEXP]["train"].corpus}
    assert corpus["geochat/airport.png#box:70,40,95,90"]["bbox"] == [[84.0, 32.0, 114.0, 72.0]]
    assert refexp["a ship"]["positive_ids"] == ["geochat/harbor.png#box:10,10,40,30"]  # from [grounding] phrases

    region = queries(converted, REGION)
    hangar = region["geochat/airport.png#box:70,40,95,90"]
    texts = {row["id"]: row["text"] for row in converted.tasks[REGION]["train"].corpus}
    assert hangar["bbox"] == [[84.0, 32.0, 114.0, 72.0]] and hangar["text"] is None
    assert sorted(texts[i] for i in hangar["positive_ids"]) == ["a large hangar on the right",
                                                                 "the large hangar on the right"]
    assert len(hangar["candidate_ids"]) == 5

    vqa = queries(converted, VQA)
    answers = {row["id"]: row["text"] for row in converted.tasks[VQA]["train"].corpus}
    assert vqa["geochat/3/t0"]["text"] == "Is there a road?"
    assert sorted(answers[i] for i in vqa["geochat/3/t0"]["candidate_ids"]) == ["no", "yes"]
    assert [answers[i] for i in vqa["geochat/3/t0"]["positive_ids"]] == ["yes"]  # "Yes" normalised
    assert sorted(answers[i] for i in vqa["geochat/4/t0"]["candidate_ids"]) == ["rural", "urban"]
    # The only classification answer competes with the other open answers.
    assert sorted(answers[i] for i in vqa["geochat/6/t0"]["candidate_ids"]) == ["forest", "rural", "urban"]

    captions = {row["text"]: row for row in converted.tasks[CAPTION]["train"].queries}
    river = captions["A winding river passes between patches of dense forest."]
    assert river["positive_ids"] == ["geochat/image:river.png"] and len(river["candidate_ids"]) == 6
    assert "The image shows a ship anchored at the harbor." in captions

    for task, splits in converted.tasks.items():
        assert list(splits) == ["train"]
        stored, _ = load_task(converted.out_dir, task, "train")
        assert len(stored) == len(splits["train"].queries)
    assert "GeoChat-Instruct" in (converted.out_dir / "README.md").read_text()


def test_geochat_folder_gives_valid_training_rows(converted):
    datasets, prompts = training_datasets(converted.out_dir, n_negatives=1)
    assert sorted(datasets) == sorted([REFEXP, REGION, VQA, CAPTION])
    assert check_training_rows(datasets) == 21
    assert prompts[REFEXP]["anchor"].startswith("Find the region")
    row = datasets[REFEXP][0]
    assert row["anchor"]["text"] and row["anchor"]["bbox"] is None
    assert row["positive"]["bbox"] and not row["positive"]["text"]
    row = datasets[CAPTION][0]
    assert row["anchor"]["image"] is None and row["positive"]["image"] is not None


def test_geochat_raise_vs_skip(geochat_bad, tmp_path):
    with pytest.raises(ValueError, match=r"GeoChat_Instruct\.json:\[11\]\.conversations\[1\]: malformed box"):
        convert_geochat(geochat_bad["json"], geochat_bad["images"], tmp_path / "raise")
    assert not (tmp_path / "raise").exists()
    with pytest.warns(ParseWarning):
        result = convert_geochat(geochat_bad["json"], geochat_bad["images"], tmp_path / "skip", on_error="skip")
    assert [p.row for p in result.report.problems] == [row for row, _ in geochat_bad["bad_rows"]]
    assert all(p.file == str(geochat_bad["json"]) for p in result.report.problems)
    assert "geochat/16/t0" in queries(result, VQA)  # the good turn of the partly broken sample


def test_geochat_is_deterministic(geochat, converted, tmp_path):
    again = convert_geochat(geochat["json"], geochat["images"], tmp_path / "again")
    assert again.tasks == converted.tasks
    for task in converted.tasks:
        for config in (task, task + "-corpus"):
            first = pq.read_table(converted.out_dir / "data" / config / "train.parquet").to_pylist()
            assert pq.read_table(tmp_path / "again" / "data" / config / "train.parquet").to_pylist() == first
    samples, _ = parse_geochat_instruct(geochat["json"], geochat["images"])
    other = geochat_tasks(samples, seed=1)
    assert other.rows == converted.rows
    orders = [(q["candidate_ids"], r["candidate_ids"]) for task in converted.tasks
              for q, r in zip(converted.tasks[task]["train"].queries, other.tasks[task]["train"].queries)]
    assert all(sorted(a) == sorted(b) for a, b in orders) and any(a != b for a, b in orders)


def test_geochat_task_mapping(samples):
    result = geochat_tasks(samples, task_names={"vqa": "S2Lite-VQA", "caption": None})
    assert sorted(result.tasks) == sorted([REFEXP, REGION, "S2Lite-VQA"])
    assert result.converted["caption"] == 0 and result.converted["vqa"] == 5
    with pytest.raises(ValueError, match="does not fit GeoChat vqa"):
        geochat_tasks(samples, task_names={"vqa": "EuroSAT-SceneCls"})
    with pytest.raises(ValueError, match="unknown GeoChat shape"):
        geochat_tasks(samples, task_names={"detection": REFEXP})
    with pytest.raises(ValueError, match="map to one task"):
        geochat_tasks(samples, task_names={"caption": VQA})


# ----------------------------------------------------------------------------------------------- public


def test_convert_public_sources_give_training_rows(tmp_path):
    dior_raw = write_dior_rsvg(tmp_path / "raw" / "dior", split_ids="object")
    dior = convert_public("dior-rsvg", dior_raw, tmp_path / "dior")
    assert set(dior.tasks) == {"DIOR-RSVG-RefExp", "DIOR-RSVG-RegionCaption"}
    assert dior.converted["DIOR-RSVG-RefExp/train"] > 0 and dior.skipped["single-object image"] == 1
    rsvqa = convert_public("rsvqa-lr", write_rsvqa(tmp_path / "raw" / "rsvqa")["root"], tmp_path / "rsvqa")
    assert rsvqa.converted == {"RSVQA-LR-VQA/train": 12, "RSVQA-LR-VQA/test": 8}
    geo = convert_public("geo-tiles", write_geo_tiles(tmp_path / "raw" / "geo", "csv").parent, tmp_path / "geo")
    for result, tasks in ((dior, ["DIOR-RSVG-RefExp", "DIOR-RSVG-RegionCaption"]), (rsvqa, ["RSVQA-LR-VQA"]),
                          (geo, ["GeoTiles-Coords2Img", "GeoTiles-Img2Coords"])):
        datasets, _ = training_datasets(result.out_dir, n_negatives=1)
        assert sorted(datasets) == tasks
        assert check_training_rows(datasets) > 0
    row = training_datasets(geo.out_dir, ["GeoTiles-Img2Coords"])[0]["GeoTiles-Img2Coords"][0]
    assert row["positive"]["coords"] is not None and row["anchor"]["image"] is not None

    with pytest.raises(FileExistsError):
        convert_public("rsvqa-lr", tmp_path / "raw" / "rsvqa", tmp_path / "rsvqa")
    with pytest.raises(ValueError, match="unknown source"):
        convert_public("nope", tmp_path, tmp_path / "nope")


def test_merge_geochat_into_a_public_folder(tmp_path, geochat):
    dior = convert_public("dior-rsvg", write_dior_rsvg(tmp_path / "raw"), tmp_path / "mix")
    dior_train = len(dior.tasks[REFEXP]["train"].queries)
    merged = convert_geochat(geochat["json"], geochat["images"], tmp_path / "mix", if_exists="merge")
    refexp = merged.tasks[REFEXP]["train"].queries
    assert len(refexp) == dior_train + 7
    assert sum(q["query_id"].startswith("geochat/") for q in refexp) == 7
    stored, _ = load_task(tmp_path / "mix", REFEXP, "train")
    assert len(stored) == len(refexp)
    _, corpus = load_task(tmp_path / "mix", REFEXP, "test")  # the DIOR test split is untouched
    assert len(corpus) == len(dior.tasks[REFEXP]["test"].corpus)
    datasets, _ = training_datasets(tmp_path / "mix", n_negatives=1)
    assert sorted(datasets) == sorted([REFEXP, REGION, VQA, CAPTION])
    assert check_training_rows(datasets) > 21
    with pytest.raises(ValueError, match="already in the folder"):
        convert_geochat(geochat["json"], geochat["images"], tmp_path / "mix", if_exists="merge")
    fresh = convert_geochat(geochat["json"], geochat["images"], tmp_path / "mix", if_exists="overwrite")
    assert fresh.rows[f"{REFEXP}/train"] == 7 and not (tmp_path / "mix" / "data" / REFEXP / "test.parquet").exists()


def test_convert_public_raise_vs_skip(tmp_path):
    raw = write_dior_rsvg(tmp_path / "raw")
    truncate(raw / "JPEGImages" / "00006.jpg")
    xml = raw / "Annotations" / "00006.xml"
    with pytest.raises(ValueError, match=r"00006\.xml:annotation: unreadable image"):
        convert_public("dior-rsvg", raw, tmp_path / "raise")
    with pytest.warns(ParseWarning):
        result = convert_public("dior-rsvg", raw, tmp_path / "skip", on_error="skip")
    assert [(p.file, p.row) for p in result.report.problems] == [(str(xml), "annotation")]
    assert "DIOR-RSVG-RefExp/train" in result.converted


def test_train_data_cli_converts_geochat(tmp_path):
    from tests.fixtures.raw.geochat import write_geochat
    from vlm2geovec.cli import main
    from vlm2geovec_train.data import training_datasets

    written = write_geochat(tmp_path / "raw")
    json_path, image_dir = written["json"], written["images"]
    assert main(["train-data", "--source", "geochat", "--raw", str(json_path), "--images", str(image_dir),
                 "--out", str(tmp_path / "data")]) == 0
    datasets, prompts = training_datasets(tmp_path / "data")
    assert sum(len(d) for d in datasets.values()) > 0 and set(prompts) == set(datasets)


def test_benchmark_and_training_builds_of_a_source_are_one_path(tmp_path, capsys):
    """`vlm2geovec rsmeb build --source` and `convert_public` write the same folder (one builder, one writer)."""
    from vlm2geovec.cli import main

    raw = write_dior_rsvg(tmp_path / "raw")
    assert main(["rsmeb", "build", "--source", "dior-rsvg", "--raw", str(raw), "--out", str(tmp_path / "bench")]) == 0
    trained = convert_public("dior-rsvg", raw, tmp_path / "train")
    bench_files = sorted(p.relative_to(tmp_path / "bench") for p in (tmp_path / "bench" / "data").rglob("*.parquet"))
    assert bench_files == sorted(p.relative_to(tmp_path / "train") for p in (tmp_path / "train" / "data").rglob("*.parquet"))
    for path in bench_files:
        assert pq.read_table(tmp_path / "bench" / path).equals(pq.read_table(tmp_path / "train" / path)), path
    card = (tmp_path / "bench" / "README.md").read_text()
    assert "licence of the originals" in card and "RSMEB — dior-rsvg" in card
    with pytest.raises(SystemExit, match="already holds a dataset"):
        main(["rsmeb", "build", "--source", "dior-rsvg", "--raw", str(raw), "--out", str(tmp_path / "bench")])
    assert main(["rsmeb", "build", "--source", "dior-rsvg", "--raw", str(raw), "--out", str(tmp_path / "bench"),
                 "--if-exists", "overwrite"]) == 0
    assert len(trained.tasks) >= 2
