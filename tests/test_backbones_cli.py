"""The command line for every backbone family: `nano --family`, `convert` of a Hub-layout folder, `quickstart
--family` (a short run on one small task) and the index build and search on top of it."""

from __future__ import annotations

import json

import pytest

from tests.battery import expect_cli_error, expect_error, record_correct, run_cli

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
MODEL_TYPES = {"qwen2_vl": "vlm2geovec", "qwen2_5_vl": "vlm2geovec_qwen2_5_vl", "qwen3_vl": "vlm2geovec_qwen3_vl"}


@pytest.fixture(scope="module")
def geoloc_subset(tmp_path_factory):
    from rsmeb_eval.builders.lite import build_lite
    from rsmeb_eval.dataset_io import write_dataset

    task = "RSLite-GeoLoc"
    folder = tmp_path_factory.mktemp("lite") / "lite"
    return task, write_dataset(folder, {task: build_lite(seed=0)[task]}, "RSMEB-lite subset")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_quickstart_runs_for_every_family(family, geoloc_subset, tmp_path, capsys):
    from vlm2geovec import load_model
    from vlm2geovec.cli import main

    task, data = geoloc_subset
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--family", family, "--max-steps", "2", "--tasks", task,
                 "--data", str(data)]) == 0
    for stage in ("before", "after"):
        results = json.loads((out / stage / "results.json").read_text())
        assert results["tasks"][task]["n_queries"] >= 200 and 0.0 <= results["tasks"][task]["score"] <= 1.0
    for folder in ("nano", "model"):
        config = json.loads((out / folder / "config.json").read_text())
        assert config["model_type"] == MODEL_TYPES[family], folder
        assert json.loads((out / folder / "processor_config.json").read_text())["backbone_family"] == family
    vectors = load_model(str(out / "model")).encode(["a lake", {"coords": (46.2, 6.1)}], convert_to_tensor=True)
    assert vectors.shape == (2, 128)


@pytest.mark.parametrize("family", FAMILIES)
def test_nano_family_builds_a_loadable_checkpoint(family, tmp_path, capsys):
    from transformers import AutoModel

    from vlm2geovec.cli import main

    assert main(["nano", "--out", str(tmp_path / "m"), "--family", family, "--seed", "3"]) == 0
    assert "architecture" in capsys.readouterr().out
    model = AutoModel.from_pretrained(str(tmp_path / "m"), trust_remote_code=True)
    assert model.config.backbone_family == family
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == MODEL_TYPES[family]
    # The same seed and family give the same weights; the index fingerprint tells families apart.
    assert main(["nano", "--out", str(tmp_path / "again"), "--family", family, "--seed", "3"]) == 0
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (tmp_path / "again" / "model.safetensors").read_bytes()


@pytest.mark.battery
def test_unknown_family_is_one_clear_cli_error(tmp_path):
    expect_cli_error(run_cli(["nano", "--out", tmp_path / "m", "--family", "qwen9_vl"]), "invalid choice: 'qwen9_vl'")
    expect_cli_error(run_cli(["quickstart", "--out", tmp_path / "q", "--family", "llava"]), "invalid choice: 'llava'")
    # A Bert folder is no backbone: named, with the supported families.
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(
        tmp_path / "bert")
    expect_cli_error(run_cli(["convert", "--backbone", tmp_path / "bert", "--out", tmp_path / "o"]),
                     "model_type 'bert' is not a supported backbone", "qwen2_5_vl")


def test_every_recipe_parses_and_the_qwen3_vl_embedding_recipe_keeps_its_pipeline():
    import re
    from pathlib import Path

    from vlm2geovec_train.recipe import TrainConfig

    configs = sorted((Path(__file__).resolve().parents[1] / "train" / "configs").glob("*.yaml"))
    names = {path.name for path in configs}
    assert {"nano.yaml", "qwen2vl-2b.yaml", "qwen3vl-embedding-2b.yaml"} <= names
    for path in configs:
        config = TrainConfig.from_yaml(path)
        assert config.max_steps > 0 and config.batch_size > 0, path.name
    recipe = (Path(__file__).resolve().parents[1] / "train" / "configs" / "qwen3vl-embedding-2b.yaml").read_text()
    config = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "train" / "configs" / "qwen3vl-embedding-2b.yaml")
    assert config.lora["r"] == 16 and config.loss == "cached_mnrl"
    # The launch line it documents converts the real Hub id with the CLI's own options.
    launch = re.search(r"vlm2geovec convert --backbone (\S+) --out (\S+)", recipe)
    assert launch and launch.group(1) == "Qwen/Qwen3-VL-Embedding-2B" and launch.group(2) == config.model


def test_index_build_and_search_with_a_qwen2_5_vl_model(tmp_path, capsys):
    """Boxes in Qwen2.5-VL's resized-pixel form go through the whole corpus path: the indexed item found by itself."""
    from pathlib import Path

    from vlm2geovec.cli import main

    examples = Path(__file__).resolve().parents[1] / "examples"
    model = tmp_path / "nano25"
    assert main(["nano", "--out", str(model), "--family", "qwen2_5_vl"]) == 0
    index = tmp_path / "index"
    assert main(["index", "build", "--model", str(model), "--input", str(examples / "items.jsonl"),
                 "--out", str(index)]) == 0
    manifest = json.loads((index / "index.json").read_text())
    assert manifest["build"]["preprocessing"]["backbone_family"] == "qwen2_5_vl"
    capsys.readouterr()
    query = json.dumps({"image": str(examples / "images" / "OSBS_029.png"), "bbox": [166, 253, 225, 304],
                        "text": "a pine crown in open sandhill"})
    assert main(["search", "--index", str(index), "--item", query, "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["position"] == 0 and hits[0]["score"] > 0.9999


@pytest.fixture(scope="module")
def qwen2_nano(tmp_path_factory):
    from vlm2geovec.cli import main

    folder = tmp_path_factory.mktemp("fam") / "nano"
    assert main(["nano", "--out", str(folder)]) == 0
    return folder


def _copy_with(folder, target, name, edit):
    import shutil

    shutil.copytree(folder, target)
    data = json.loads((target / name).read_text())
    edit(data)
    (target / name).write_text(json.dumps(data))
    return target


@pytest.mark.battery
def test_family_mixups_in_a_checkpoint_are_named(qwen2_nano, tmp_path):
    """A checkpoint whose files disagree about the backbone family never loads into silently wrong vectors."""
    from transformers import AutoProcessor

    from modeling_vlm2geovec import VLM2GeoVecModel, VLM2GeoVecQwen3VLModel
    from vlm2geovec import load_model

    # An unknown family in processor_config.json.
    unknown = _copy_with(qwen2_nano, tmp_path / "unknown", "processor_config.json",
                         lambda d: d.update(backbone_family="qwen9_vl"))
    expect_error(lambda: load_model(str(unknown)), ValueError, [r"unknown family 'qwen9_vl'", "supported"])
    # The processor says Qwen3-VL (32-pixel tokens) but holds Qwen2-VL's 14-pixel patches.
    mixed = _copy_with(qwen2_nano, tmp_path / "mixed", "processor_config.json",
                       lambda d: d.update(backbone_family="qwen3_vl"))
    expect_error(lambda: AutoProcessor.from_pretrained(str(mixed), trust_remote_code=True), ValueError,
                 [r"patch_size 14 does not match the Qwen3-VL backbone family"])
    # config.json claims another family: its weights do not fit that architecture, and loading says which.
    relabelled = _copy_with(qwen2_nano, tmp_path / "relabelled", "config.json",
                            lambda d: d.update(model_type="vlm2geovec_qwen3_vl"))
    expect_error(lambda: VLM2GeoVecModel.from_pretrained(str(relabelled)), (ValueError, TypeError))
    # A family class asked to load another family's checkpoint names both.
    expect_error(lambda: VLM2GeoVecQwen3VLModel.from_pretrained(str(qwen2_nano)), ValueError,
                 [r"a qwen2_vl checkpoint", "VLM2GeoVecQwen3VLModel", "AutoModel"])


@pytest.mark.battery
def test_qwen2_5_vl_boxes_for_every_image_size_stay_inside_the_resized_input():
    """Boxes touching the edges of tiny, huge and very elongated images render inside the resized frame, never as a
    point, in Qwen2.5-VL's resized-pixel form."""
    import re

    from PIL import Image

    from vlm2geovec.checkpoint import build_processor

    processor = build_processor(family="qwen2_5_vl")
    for width, height in ((1, 1), (7, 3), (28, 28), (5000, 40), (40, 5000), (3000, 2000)):
        image = Image.new("RGB", (width, height), (10, 20, 30))
        for box in ([0, 0, width, height], [0, 0, min(width, 0.5), min(height, 0.5)],
                    [width - min(width, 0.5), height - min(height, 0.5), width, height]):
            [text] = processor.render([{"image": image, "bbox": box}])
            x1, y1, x2, y2 = map(int, re.search(r'"bbox_2d": \[(\d+), (\d+), (\d+), (\d+)\]', text).groups())
            out_w, out_h = processor.resized_size(width, height)
            assert 0 <= x1 < x2 <= out_w and 0 <= y1 < y2 <= out_h, (width, height, box, text)
            if box[0] == 0 and box[2] == width:
                assert (x1, x2) == (0, out_w)
    record_correct()
