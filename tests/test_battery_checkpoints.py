"""Damaged checkpoints through every load path: a clear error naming the file, or a complete, correct model.

Each case corrupts a copy of the session's nano checkpoint one way and loads it through one path:

* ``auto``: ``AutoModel`` + ``AutoProcessor`` with ``trust_remote_code`` (the checkpoint's own copy of the code);
* ``class``: the installed ``VLM2GeoVecModel.from_pretrained`` (model only);
* ``st``: ``SentenceTransformer(folder, trust_remote_code=True)`` (the module's ``load``);
* ``load_model``: ``vlm2geovec.load_model``.

Where the change is harmless for a path (e.g. a missing ``modules.json`` for plain transformers) the case checks
that every weight equals the saved one and that the processor tokenizes as the original does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.battery import expect_error, record_correct

PATHS = ("auto", "class", "st", "load_model")
REPAIR = r"copy the folder again or re-save it"


# ---------------------------------------------------------------------------------------------------------------
# Copies and corruptions


def _link_or_copy(source, target):
    try:
        os.link(source, target)  # the 80 MB of weights and the 18 MB tokenizer are shared, not copied, per case
    except OSError:
        shutil.copy2(source, target)


def _write(path: Path, data: bytes | str) -> None:
    """Replace a file without touching the (hard-linked) original."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    _write(path, json.dumps(data, indent=2))


def _edit_tensors(folder: Path, edit) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    (folder / "model.safetensors").unlink()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _more_text_layers(config):
    text = config["text_config"]
    text["num_hidden_layers"] += 1
    text["layer_types"] = text["layer_types"] + text["layer_types"][-1:]


def _reshape(tensors):
    key = "language_model.layers.0.mlp.gate_proj.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])


def _truncate(folder: Path):
    data = (folder / "model.safetensors").read_bytes()
    _write(folder / "model.safetensors", data[: len(data) // 2])


GARBAGE_JSON = "{not json ::"

CORRUPTIONS = {
    "config.json deleted": lambda d: (d / "config.json").unlink(),
    "config.json invalid JSON": lambda d: _write(d / "config.json", GARBAGE_JSON),
    "config.json binary garbage": lambda d: _write(d / "config.json", bytes(range(256)) * 4),
    "config.json model_type bert": lambda d: _edit_json(d / "config.json", lambda c: c.update(model_type="bert")),
    "text layers +1": lambda d: _edit_json(d / "config.json", _more_text_layers),
    "text num_hidden_layers +1 only": lambda d: _edit_json(
        d / "config.json", lambda c: c["text_config"].update(num_hidden_layers=3)  # layer_types still lists 2
    ),
    "vision depth +1": lambda d: _edit_json(d / "config.json", lambda c: c["vision_config"].update(depth=3)),
    "tensor dropped": lambda d: _edit_tensors(d, lambda t: t.pop("language_model.norm.weight")),
    "tensor added": lambda d: _edit_tensors(d, lambda t: t.update({"language_model.extra.weight": torch.zeros(3)})),
    "tensor reshaped": lambda d: _edit_tensors(d, _reshape),
    "weights truncated to half": _truncate,
    "weights garbage bytes": lambda d: _write(d / "model.safetensors", os.urandom(4096)),
    "weights empty": lambda d: _write(d / "model.safetensors", b""),
    "weights deleted": lambda d: (d / "model.safetensors").unlink(),
    "tokenizer.json deleted": lambda d: (d / "tokenizer.json").unlink(),
    "tokenizer.json garbage": lambda d: _write(d / "tokenizer.json", GARBAGE_JSON),
    "tokenizer.json truncated": lambda d: _write(d / "tokenizer.json", (d / "tokenizer.json").read_bytes()[:100_000]),
    "tokenizer.json braced garbage": lambda d: _write(d / "tokenizer.json", "{" + "x" * 1000 + "}"),
    "tokenizer_config.json deleted": lambda d: (d / "tokenizer_config.json").unlink(),
    "tokenizer_config.json garbage": lambda d: _write(d / "tokenizer_config.json", GARBAGE_JSON),
    "modules.json deleted": lambda d: (d / "modules.json").unlink(),
    "modules.json garbage": lambda d: _write(d / "modules.json", GARBAGE_JSON),
    "processor_config.json deleted": lambda d: (d / "processor_config.json").unlink(),
    "processor_config.json garbage": lambda d: _write(d / "processor_config.json", GARBAGE_JSON),
    "stray garbage preprocessor_config.json": lambda d: _write(d / "preprocessor_config.json", GARBAGE_JSON),
}

# What each path must do. ("error", exception types, regexes the message must match) or "correct".
# {d} in a regex stands for the escaped folder path.
NOT_VALID_JSON = r"is not valid JSON \(.* at line 1, column 2\)"
WEIGHTS_MISMATCH = r"the weights do not match the model that config\.json describes"
EXPECTED = {
    "config.json deleted": {
        # transformers' AutoConfig reads config.json before any of our code exists for this folder
        "auto": ("error", ValueError, [r"{d}", r"config\.json"]),
        "*": ("error", FileNotFoundError, [r"{d}/config\.json not found", r"vlm2geovec nano", r"vlm2geovec convert"]),
    },
    "config.json invalid JSON": {
        "auto": ("error", OSError, [r"{d}/config\.json", r"not a valid JSON file"]),
        "*": ("error", ValueError, [r"{d}/config\.json " + NOT_VALID_JSON, REPAIR]),
    },
    "config.json binary garbage": {
        "auto": ("error", OSError, [r"{d}/config\.json", r"not a valid JSON file"]),
        "*": ("error", ValueError, [r"{d}/config\.json (is not UTF-8 text|is not valid JSON)", REPAIR]),
    },
    "config.json model_type bert": {
        "*": ("error", ValueError, [r"{d}/config\.json: model_type 'bert' is not a VLM2GeoVec checkpoint"]),
    },
    "text layers +1": {
        "*": ("error", ValueError, [r"{d}", WEIGHTS_MISMATCH, r"missing from the file: 12 weights",
                                    r"language_model\.layers\.2\.", r"allow_missing_weights=True"]),
    },
    "text num_hidden_layers +1 only": {
        "*": ("error", ValueError, [r"config\.json", r"invalid VLM2GeoVec configuration", r"num_hidden_layers"]),
    },
    "vision depth +1": {
        "*": ("error", ValueError, [r"{d}", WEIGHTS_MISMATCH, r"missing from the file: 12 weights",
                                    r"visual\.blocks\.2\."]),
    },
    "tensor dropped": {
        "*": ("error", ValueError, [r"{d}", WEIGHTS_MISMATCH,
                                    r"missing from the file: 1 weight \(language_model\.norm\.weight\)"]),
    },
    "tensor added": {
        "*": ("error", ValueError, [r"{d}", r"not used by the model: 1 weight \(language_model\.extra\.weight\)"]),
    },
    "tensor reshaped": {
        "*": ("error", ValueError, [r"{d}", r"another shape in the file: 1 weight",
                                    r"language_model\.layers\.0\.mlp\.gate_proj\.weight "
                                    r"\(file \(257, 128\), model \(256, 128\)\)"]),
    },
    "weights truncated to half": {
        "*": ("error", ValueError, [r"{d}/model\.safetensors is not a complete safetensors file",
                                    r"bytes on disk, its header describes", REPAIR]),
    },
    "weights garbage bytes": {
        "*": ("error", ValueError, [r"{d}/model\.safetensors is not a complete safetensors file", REPAIR]),
    },
    "weights empty": {
        "*": ("error", ValueError, [r"{d}/model\.safetensors is not a complete safetensors file", r"0 bytes"]),
    },
    "weights deleted": {
        "*": ("error", FileNotFoundError, [r"{d}/model\.safetensors not found", REPAIR]),
    },
    "tokenizer.json deleted": {
        "class": "correct",
        "*": ("error", FileNotFoundError, [r"{d}/tokenizer\.json not found", REPAIR]),
    },
    "tokenizer.json garbage": {
        "class": "correct",
        "*": ("error", ValueError, [r"{d}/tokenizer\.json is not valid JSON", REPAIR]),
    },
    "tokenizer.json truncated": {
        "class": "correct",
        "*": ("error", ValueError, [r"{d}/tokenizer\.json is not valid JSON", REPAIR]),
    },
    "tokenizer.json braced garbage": {  # passes the cheap look at both ends; the parse error is named after it
        "class": "correct",
        "*": ("error", ValueError, [r"{d}", r"tokenizer\.json", REPAIR]),
    },
    "tokenizer_config.json deleted": {
        "class": "correct",
        "*": ("error", FileNotFoundError, [r"{d}/tokenizer_config\.json not found", REPAIR]),
    },
    "tokenizer_config.json garbage": {
        "class": "correct",
        "*": ("error", ValueError, [r"{d}/tokenizer_config\.json " + NOT_VALID_JSON, REPAIR]),
    },
    "modules.json deleted": {
        "auto": "correct",  # plain transformers never reads it
        "class": "correct",
        "st": ("error", FileNotFoundError, [r"{d}/modules\.json not found", r"generic Transformer \+ pooling"]),
        "load_model": ("error", FileNotFoundError, [r"{d}/modules\.json not found", r"vlm2geovec nano"]),
    },
    "modules.json garbage": {
        "auto": "correct",
        "class": "correct",
        "st": ("xfail", "sentence-transformers parses modules.json itself, before any VLM2GeoVec code runs",
               "modules.json"),
        "load_model": ("error", ValueError, [r"{d}/modules\.json " + NOT_VALID_JSON]),
    },
    "processor_config.json deleted": {
        "class": "correct",
        "*": ("error", FileNotFoundError, [r"{d}/processor_config\.json not found", REPAIR]),
    },
    "processor_config.json garbage": {
        # AutoProcessor parses it itself (to find the processor class) before any VLM2GeoVec code runs
        "auto": ("error", OSError, [r"{d}/processor_config\.json", r"not a valid JSON file"]),
        "class": "correct",
        "*": ("error", ValueError, [r"{d}/processor_config\.json " + NOT_VALID_JSON, REPAIR]),
    },
    # the processor is saved as processor_config.json; a stray preprocessor_config.json is never read
    "stray garbage preprocessor_config.json": {"*": "correct"},
}


def _expected(kind: str, path: str):
    table = EXPECTED[kind]
    return table.get(path, table.get("*"))


def _cases():
    for kind in CORRUPTIONS:
        for path in PATHS:
            outcome = _expected(kind, path)
            marks = [pytest.mark.battery]
            if isinstance(outcome, tuple) and outcome[0] == "xfail":
                marks.append(pytest.mark.xfail(reason=outcome[1], strict=True))
            yield pytest.param(kind, path, marks=marks, id=f"{kind}-{path}")


# ---------------------------------------------------------------------------------------------------------------
# Loading and checking


def _load(path: str, folder: Path | str, with_processor: bool = True, **model_kwargs):
    """Load through one path; return (model, processor-like) where the path gives one."""
    if path == "auto":
        from transformers import AutoModel, AutoProcessor

        model = AutoModel.from_pretrained(str(folder), trust_remote_code=True, **model_kwargs)
        if not with_processor:
            return model, None
        return model, AutoProcessor.from_pretrained(str(folder), trust_remote_code=True)
    if path == "class":
        from modeling_vlm2geovec import VLM2GeoVecModel

        return VLM2GeoVecModel.from_pretrained(str(folder), **model_kwargs), None
    if path == "st":
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu", model_kwargs=model_kwargs or None)
        return st[0].model, st[0].processor
    if path == "load_model":
        from vlm2geovec import load_model

        st = load_model(str(folder), device="cpu", model_kwargs=model_kwargs or None)
        return st[0].model, st[0].processor
    raise AssertionError(path)


@pytest.fixture(scope="module")
def reference(nano_dir):
    return load_file(str(nano_dir / "model.safetensors"))


@pytest.fixture
def damaged(nano_dir, tmp_path):
    """A hard-linked copy of the nano checkpoint to corrupt; removed after the case (disk stays flat)."""
    folder = tmp_path / "ckpt"
    shutil.copytree(nano_dir, folder, copy_function=_link_or_copy)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_complete(model, reference, fresh=()) -> None:
    """The model has exactly the saved checkpoint's weights, each equal to the saved one except the ``fresh`` ones
    (initialised on purpose in an opt-out case, so only their shapes are compared)."""
    state = model.state_dict()
    assert set(state) == set(reference), set(state) ^ set(reference)
    for key, value in reference.items():
        if key in fresh:
            assert state[key].shape == value.shape, key
        else:
            assert torch.equal(state[key], value), key


def assert_processor_like(processor, reference_processor) -> None:
    items = ["a river delta", "pad <|endoftext|> and <|im_start|> tokens"]
    assert processor(items=items)["input_ids"].tolist() == reference_processor(items=items)["input_ids"].tolist()
    assert processor.tokenizer.pad_token == "<|endoftext|>" and processor.tokenizer.eos_token == "<|im_end|>"
    assert processor.image_processor.size == reference_processor.image_processor.size


@pytest.mark.parametrize("kind, path", list(_cases()))
def test_damaged_checkpoint(kind, path, damaged, reference, processor):
    CORRUPTIONS[kind](damaged)
    outcome = _expected(kind, path)
    if outcome == "correct":
        model, loaded_processor = _load(path, damaged)
        assert_complete(model, reference)
        if loaded_processor is not None:
            assert_processor_like(loaded_processor, processor)
        record_correct()
        return
    if outcome[0] == "xfail":
        # A known gap in code this file does not own: held to the same standard (a clear error naming the file
        # at load or first use), so the case turns into an XPASS failure once it is fixed.
        expect_error(lambda: _use(path, damaged), (ValueError, OSError), [re.escape(str(damaged / outcome[2]))])
        return
    _, exceptions, patterns = outcome
    patterns = [p.replace("{d}", re.escape(str(damaged))) for p in patterns]
    expect_error(lambda: _load(path, damaged), exceptions, patterns)


def _use(path, folder):
    """Load and encode once: a load that only fails at first use is no clear error."""
    model, processor = _load(path, folder)
    processor(items=["a river delta"])


# ---------------------------------------------------------------------------------------------------------------
# Opting out, and loads that must still work


@pytest.mark.battery
@pytest.mark.parametrize("path", ["class", "auto", "st"])
def test_allow_missing_weights_loads_a_partial_checkpoint(path, damaged, reference):
    CORRUPTIONS["tensor dropped"](damaged)
    model, _ = _load(path, damaged, with_processor=False, allow_missing_weights=True)
    # every saved weight is loaded; only the dropped one is fresh
    assert_complete(model, reference, fresh=("language_model.norm.weight",))
    record_correct()


@pytest.mark.battery
def test_allow_missing_weights_also_allows_unused_weights(damaged, reference):
    from modeling_vlm2geovec import VLM2GeoVecModel

    CORRUPTIONS["tensor added"](damaged)
    assert_complete(VLM2GeoVecModel.from_pretrained(str(damaged), allow_missing_weights=True), reference)
    record_correct()


@pytest.mark.battery
def test_allow_missing_weights_does_not_allow_other_shapes(damaged):
    from modeling_vlm2geovec import VLM2GeoVecModel

    CORRUPTIONS["tensor reshaped"](damaged)
    expect_error(lambda: VLM2GeoVecModel.from_pretrained(str(damaged), allow_missing_weights=True), ValueError,
                 [r"another shape in the file", r"gate_proj"])


@pytest.mark.battery
def test_ignore_mismatched_sizes_keeps_transformers_meaning(damaged, reference):
    from modeling_vlm2geovec import VLM2GeoVecModel

    CORRUPTIONS["tensor reshaped"](damaged)
    model = VLM2GeoVecModel.from_pretrained(str(damaged), ignore_mismatched_sizes=True)
    # the model keeps its own shape for that weight, freshly initialised; every other weight is the saved one
    assert_complete(model, reference, fresh=("language_model.layers.0.mlp.gate_proj.weight",))
    record_correct()


@pytest.mark.battery
def test_output_loading_info_leaves_the_check_to_the_caller(damaged, reference):
    from modeling_vlm2geovec import VLM2GeoVecModel

    CORRUPTIONS["tensor dropped"](damaged)
    model, info = VLM2GeoVecModel.from_pretrained(str(damaged), output_loading_info=True)
    assert info["missing_keys"] == {"language_model.norm.weight"} and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    record_correct()


@pytest.mark.battery
@pytest.mark.parametrize("path", PATHS)
def test_intact_checkpoint_loads_completely(path, nano_dir, reference, processor):
    model, loaded_processor = _load(path, nano_dir)
    assert_complete(model, reference)
    if loaded_processor is not None:
        assert_processor_like(loaded_processor, processor)
    record_correct()


@pytest.mark.battery
def test_lm_head_of_a_backbone_checkpoint_is_ignored(damaged, reference):
    """A Qwen2-VL checkpoint's lm_head is not part of the embedder: dropped, not an error."""
    from modeling_vlm2geovec import VLM2GeoVecModel

    _edit_tensors(damaged, lambda t: t.update({"lm_head.weight": torch.zeros(4, 128)}))
    assert_complete(VLM2GeoVecModel.from_pretrained(str(damaged)), reference)
    record_correct()


@pytest.mark.battery
def test_qwen2_vl_model_type_loads(damaged, reference):
    """config.json of a raw Qwen2-VL backbone (model_type qwen2_vl) is a loadable type for the class."""
    from modeling_vlm2geovec import VLM2GeoVecModel

    _edit_json(damaged / "config.json", lambda c: (c.update(model_type="qwen2_vl"), c.pop("auto_map")))
    assert_complete(VLM2GeoVecModel.from_pretrained(str(damaged)), reference)
    record_correct()


@pytest.mark.battery
def test_sharded_checkpoint_with_a_missing_shard(damaged):
    from modeling_vlm2geovec import VLM2GeoVecModel

    (damaged / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"visual.merger.ln_q.weight": "model-00001-of-00002.safetensors"}}
    _write(damaged / "model.safetensors.index.json", json.dumps(index))
    expect_error(lambda: VLM2GeoVecModel.from_pretrained(str(damaged)), FileNotFoundError,
                 [re.escape(str(damaged / "model-00001-of-00002.safetensors")) + " not found",
                  r"model\.safetensors\.index\.json"])


# ---------------------------------------------------------------------------------------------------------------
# Paths that do not exist


@pytest.mark.battery
@pytest.mark.parametrize("path", ["class", "load_model"])
@pytest.mark.parametrize("name", ["./out/nano", "out/nano", "runs/a/b", "~/no-such-vlm2geovec-folder"])
def test_missing_local_folder_fails_at_once(name, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()  # so `out/nano` can only mean a local folder
    # not offline: a Hub lookup would be retried for a minute and more, so the time limit shows none happened
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.monotonic()
    expect_error(lambda: _load(path, name), FileNotFoundError,
                 [re.escape(name) + r": no such local folder", r"ORG/NAME", r"vlm2geovec nano --out"])
    assert time.monotonic() - started < 10


def test_sentence_transformers_itself_on_a_missing_folder_offline(tmp_path, monkeypatch):
    """What `SentenceTransformer("out/nano")` does before any VLM2GeoVec code can run (recorded, not ours): offline
    it fails at once with the Hub client's OSError (online it retries the Hub for over a minute)."""
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    with pytest.raises(OSError):
        _load("st", "out/nano")
    assert time.monotonic() - started < 20


def test_load_model_offline_names_an_uncached_hub_id(tmp_path, monkeypatch):
    from vlm2geovec import load_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    expect_error(lambda: load_model("someone/not-here"), FileNotFoundError,
                 [r"someone/not-here: no such local folder, and not in the Hub cache while HF_HUB_OFFLINE is set"])
    assert time.monotonic() - started < 5


def test_local_path_rule():
    from modeling_vlm2geovec import looks_like_local_path

    for local in ("./nano", "/abs/nano", "~/nano", "a/b/c", "out\\nano", ".hidden"):
        assert looks_like_local_path(local), local
    for hub in ("org/name", "nano", "Qwen/Qwen2-VL-2B-Instruct"):
        assert not looks_like_local_path(hub), hub


def test_file_given_instead_of_a_folder(nano_dir):
    from vlm2geovec import load_model

    expect_error(lambda: load_model(str(nano_dir / "config.json")), NotADirectoryError,
                 [r"config\.json: is a file, not a checkpoint folder"])


# ---------------------------------------------------------------------------------------------------------------
# File modes of saved checkpoints


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(_nano, tmp_path, umask):
    from vlm2geovec.checkpoint import save_checkpoint

    previous = os.umask(umask)
    try:
        folder = save_checkpoint(_nano[0], _nano[1], tmp_path / "ckpt")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == 0o666 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}, modes


# ---------------------------------------------------------------------------------------------------------------
# The offline tokenizer's cache (vlm2geovec.tokenizer): derived data, so a damaged copy is rebuilt, never used


@pytest.mark.battery
@pytest.mark.parametrize("damage", ["tokenizer.json garbage", "tokenizer.json truncated",
                                    "tokenizer_config.json deleted", "tokenizer_config.json garbage"])
def test_damaged_tokenizer_cache_is_not_used(damage, processor, tmp_path):
    from vlm2geovec import tokenizer as offline_tokenizer

    del processor  # requested only so that the session processor has built (or loaded) the cache
    source = offline_tokenizer._cache_root() / f"qwen2-vl-tokenizer-{offline_tokenizer.QWEN_TIKTOKEN_SHA256[:12]}"
    cache = tmp_path / "cache"
    shutil.copytree(source, cache, copy_function=_link_or_copy)
    CORRUPTIONS[damage](cache)
    assert offline_tokenizer._load_cached(cache) is None
    record_correct()


def test_intact_tokenizer_cache_is_used(processor, tmp_path):
    from vlm2geovec import tokenizer as offline_tokenizer

    source = offline_tokenizer._cache_root() / f"qwen2-vl-tokenizer-{offline_tokenizer.QWEN_TIKTOKEN_SHA256[:12]}"
    cached = offline_tokenizer._load_cached(source)
    assert cached is not None and cached("a river delta")["input_ids"] == processor.tokenizer("a river delta")["input_ids"]


@pytest.mark.battery
def test_config_from_its_json_file(nano_dir, damaged):
    """A config still loads from the path of its JSON file (transformers allows it); a wrong one is named."""
    from modeling_vlm2geovec import VLM2GeoVecConfig

    config = VLM2GeoVecConfig.from_pretrained(str(nano_dir / "config.json"))
    assert config.to_dict() == VLM2GeoVecConfig.from_pretrained(str(nano_dir)).to_dict()
    assert config.text_config.num_hidden_layers == 2
    record_correct()
    CORRUPTIONS["config.json model_type bert"](damaged)
    expect_error(lambda: VLM2GeoVecConfig.from_pretrained(str(damaged / "config.json")), ValueError,
                 [re.escape(str(damaged / "config.json")) + r": model_type 'bert'"])


def test_model_save_pretrained_follows_the_umask(nano_model, tmp_path):
    """Plain transformers users save with ``save_pretrained``: the weights get the umask's mode too."""
    previous = os.umask(0o022)
    try:
        nano_model.save_pretrained(tmp_path / "saved")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "saved" / "model.safetensors").stat().st_mode) == 0o644


def test_pure_remote_code_refuses_damaged_checkpoints(nano_dir, tmp_path):
    """In a process that never imports vlm2geovec, AutoModel runs the checkpoint's own copy of the code (in this
    session the installed classes are registered and take over): the refusals must be in that copy."""
    from tests.conftest import run_python

    folders = {}
    for kind in ("tensor dropped", "text layers +1", "weights truncated to half", "config.json model_type bert"):
        folder = tmp_path / kind.replace(" ", "_").replace(".", "_")
        shutil.copytree(nano_dir, folder, copy_function=_link_or_copy)
        CORRUPTIONS[kind](folder)
        folders[kind] = str(folder)
    code = f"""
import json, sys
from transformers import AutoModel
results = {{}}
for kind, folder in {folders!r}.items():
    try:
        AutoModel.from_pretrained(folder, trust_remote_code=True)
        results[kind] = "loaded"
    except ValueError as error:
        results[kind] = str(error)
model = AutoModel.from_pretrained({str(nano_dir)!r}, trust_remote_code=True)
assert "vlm2geovec" not in sys.modules and "modeling_vlm2geovec" not in sys.modules
results["module"] = type(model).__module__
print(json.dumps(results))
"""
    results = json.loads(run_python(code, tmp_path).strip().splitlines()[-1])
    assert results.pop("module").startswith("transformers_modules.")
    assert re.search(r"missing from the file: 1 weight \(language_model\.norm\.weight\)", results["tensor dropped"])
    assert re.search(r"missing from the file: 12 weights", results["text layers +1"])
    assert re.search(r"model\.safetensors is not a complete safetensors file", results["weights truncated to half"])
    assert re.search(r"model_type 'bert' is not a VLM2GeoVec checkpoint", results["config.json model_type bert"])
