"""Defaults stated in README.md equal the constants in the code (a changed default must change the README)."""

from __future__ import annotations

import ast
import math
import re

from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def stated(pattern: str) -> tuple[str, ...]:
    """The groups of the one README passage matching `pattern` (whitespace may wrap across lines)."""
    matches = re.findall(pattern.replace(" ", r"\s+"), README)
    assert len(matches) == 1, f"README: expected one match of {pattern!r}, found {len(matches)}"
    return matches[0] if isinstance(matches[0], tuple) else (matches[0],)


def number(text: str) -> float:
    return float(text.replace(",", ""))


def space_constants() -> dict[str, float]:
    """MAX_UPLOAD_MB / MAX_IMAGE_PIXELS from the Space's settings module, read without importing it (the Space's
    package imports gradio)."""
    tree = ast.parse((REPO_ROOT / "space" / "vlm2geovec_space" / "settings.py").read_text(encoding="utf-8"))
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in ("MAX_UPLOAD_MB", "MAX_IMAGE_PIXELS"):
                call = node.value.args[0] if name == "MAX_IMAGE_PIXELS" else node.value  # int(_env_number(...))
                assert isinstance(call, ast.Call) and call.func.id == "_env_number", ast.dump(node)
                values[name] = float(eval(compile(ast.Expression(call.args[1]), "settings.py", "eval")))  # a literal
    assert values.keys() == {"MAX_UPLOAD_MB", "MAX_IMAGE_PIXELS"}
    return values


def test_index_auto_kind_threshold():
    from vlm2geovec.index import AUTO_EXACT_BELOW

    (value,) = stated(r"exact below ([\d,]+) vectors, HNSW above")
    assert number(value) == AUTO_EXACT_BELOW


def test_region_exact_threshold():
    from vlm2geovec.index import EXACT_SUBSET_BELOW

    (value,) = stated(r"regions of up to ([\d,]+) vectors are searched exactly")
    assert number(value) == EXACT_SUBSET_BELOW


def test_index_search_defaults():
    from vlm2geovec.index import DEFAULT_PARAMS

    m, ef_construction, ef_search = stated(r"default HNSW settings \(M (\d+), efConstruction (\d+), efSearch (\d+)\)")
    assert (int(m), int(ef_construction), int(ef_search)) == (
        DEFAULT_PARAMS["hnsw"]["M"], DEFAULT_PARAMS["hnsw"]["ef_construction"], DEFAULT_PARAMS["hnsw"]["ef_search"])
    (nprobe,) = stated(r"IVF \(nprobe (\d+)\) gives")
    assert int(nprobe) == DEFAULT_PARAMS["ivf"]["nprobe"]


def test_chunk_size_default():
    from vlm2geovec.cli import build_parser

    (value,) = stated(r"\(`--chunk-size`, default (\d+)\)")
    args = build_parser().parse_args(["index", "build", "--model", "M", "--input", "I", "--out", "O"])
    assert int(value) == args.chunk_size


def test_space_upload_caps():
    constants = space_constants()
    megabytes, megapixels = stated(r"uploads are capped at (\d+) MB / ([\d.]+) MP")
    assert float(megabytes) == constants["MAX_UPLOAD_MB"]
    # The README truncates to one decimal: 4096 x 4096 = 16,777,216 pixels is written "16.7 MP".
    assert float(megapixels) == math.floor(constants["MAX_IMAGE_PIXELS"] / 1e5) / 10


def test_quickstart_recipe():
    from vlm2geovec_train.recipe import TrainConfig

    from vlm2geovec_train.quickstart import PRESETS

    nano = TrainConfig.from_yaml(REPO_ROOT / "train" / "configs" / "nano.yaml")
    steps, batch = stated(r"([\d,]+) steps of batch (\d+);")
    # the quickstart trains the nano recipe with its default preset's step count
    assert (int(number(steps)), int(batch)) == (PRESETS["quick"]["max_steps"], nano.batch_size)
    (temperature,) = stated(r"InfoNCE at temperature ([\d.]+) over")
    assert float(temperature) == nano.temperature == TrainConfig.temperature
