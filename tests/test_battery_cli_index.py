"""Bad and unusual inputs for `embed`, `index build|merge|info|export`, `search` and `rsmeb eval`: each ends in one
``error:`` line naming the file, line or field (never a traceback), or in a checked result.

Most cases call `vlm2geovec.cli.main` in-process (argument and input checks need no fresh interpreter); cases
that must not load the model run with `vlm2geovec.load_model` replaced by a tripwire. A few run the real console
entry point (`run_cli`) to show what a shell sees: no traceback, the last stderr line an ``error:``, and a search
from another directory.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests.battery import expect_cli_error, expect_error, record_correct, run_cli
from tests.conftest import make_image
from vlm2geovec.cli import main

pytestmark = pytest.mark.battery


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv, *regexes)``: `main(argv)` must stop as the console script would: non-zero exit, the last
    stderr line one ``error: ...`` matching every regex, no traceback (checked by `expect_cli_error` on what the
    interpreter would print: argparse's stderr, or the SystemExit message)."""

    def check(argv, *needles):
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in argv])
        code = info.value.code
        captured = capsys.readouterr()
        stderr = captured.err
        if isinstance(code, str):  # the interpreter prints a string exit code on stderr and exits with 1
            assert "\n" not in code.strip(), f"the error spans several lines: {code!r}"
            stderr, code = stderr + code + "\n", 1
        result = subprocess.CompletedProcess(argv, code, captured.out, stderr)
        return expect_cli_error(result, *needles)

    return check


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model is a test failure: the case must be refused before that (it costs minutes on a 2B model)."""
    import vlm2geovec

    def tripwire(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(vlm2geovec, "load_model", tripwire)


def write_lines(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six items in three chunks of two (chunk size 2): texts, an image and image + box."""
    folder = tmp_path_factory.mktemp("battery-corpus")
    make_image(96, 80, seed=5).save(folder / "tile.png")
    (folder / "notes.txt").write_text("not an image")
    lines = [json.dumps(x) for x in ["a harbour with container ships", "farmland near a river",
                                     {"image": "tile.png"}, "a marina with boats",
                                     {"image": "tile.png", "bbox": [5, 5, 60, 50]}, "dense conifer forest"]]
    write_lines(folder / "items.jsonl", lines)
    return folder


@pytest.fixture(scope="module")
def model(nano_dir):
    from vlm2geovec import load_model

    return load_model(str(nano_dir), device="cpu")


@pytest.fixture(scope="module")
def built(nano_dir, corpus, tmp_path_factory):
    """An index built by the CLI (exact, 6 vectors, chunks of 2); cases copy it before damaging it."""
    out = tmp_path_factory.mktemp("battery-index") / "index"
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus / "items.jsonl"), "--out",
                 str(out), "--chunk-size", "2", "--quiet"]) == 0
    return out


@pytest.fixture
def index_copy(built, tmp_path):
    return shutil.copytree(built, tmp_path / "index")


@pytest.fixture(scope="module")
def changed_model(nano_dir, tmp_path_factory):
    """The nano checkpoint with ONE weight element changed (the last value of its largest tensor)."""
    from safetensors.torch import load_file, save_file

    folder = shutil.copytree(nano_dir, tmp_path_factory.mktemp("changed") / "nano-changed")
    weights = load_file(str(folder / "model.safetensors"))
    name = max(weights, key=lambda key: weights[key].numel())
    weights[name].view(-1)[-1] += 0.5
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def rsmeb_data(tmp_path_factory):
    from rsmeb_eval.dataset_io import write_dataset
    from tests.test_rsmeb_eval import tiny_tasks

    folder = tmp_path_factory.mktemp("battery-rsmeb") / "data"
    write_dataset(folder, tiny_tasks(), title="RSMEB battery")
    return folder


# ------------------------------------------------------------------------------------------------ embed

EMBED_BAD_LINES = [
    ("empty", [], r"empty\.jsonl: no items \(the file is empty\)"),
    ("only-blank", ["", "  "], r"no items"),
    ("gap", ['"a"', "", '"b"'], r"gap\.jsonl:2: blank line"),
    ("garbage", ['"a"', '"b"', "{not json"], r"garbage\.jsonl:3: not valid JSON"),
    ("number", ["42"], r"number\.jsonl:1: expected an item .*int"),
    ("null", ['"a"', "null"], r"null\.jsonl:2: expected an item .*NoneType"),
    ("bool", ["true"], r"bool\.jsonl:1: expected an item"),
    ("unknown-key", ['{"foo": 1}'], r"unknown-key\.jsonl:1: item: unknown key\(s\) \['foo'\]"),
    ("empty-object", ['"a"', "{}"], r"empty-object\.jsonl:2: item: empty item"),
    ("empty-list", ["[]"], r"empty-list\.jsonl:1: item: empty part list"),
    ("missing-image", ['"a"', '{"image": "nowhere.png"}'], r"missing-image\.jsonl:2: item.*image file not found"),
    ("not-an-image", ['{"image": "notes.txt"}'], r"not-an-image\.jsonl:1: item.*cannot read image"),
    ("bbox-alone", ['{"bbox": [0, 0, 10, 10]}'], r"bbox-alone\.jsonl:1: item"),
    ("bbox-outside", ['{"image": "tile.png", "bbox": [0, 0, 500, 50]}'], r"bbox-outside\.jsonl:1: item.*bbox"),
    ("lat", ['"a"', '{"coords": [95, 0]}'], r"lat\.jsonl:2: item\.coords\.lat"),
    ("meta-lat", ['{"item": "x", "lat": 200}'], r"meta-lat\.jsonl:1: metadata\['lat'\] must be a number in \[-90, 90\]"),
    ("meta-lon", ['{"item": "x", "lon": "east"}'], r"meta-lon\.jsonl:1: metadata\['lon'\]"),
    ("meta-id", ['{"item": "x", "id": [1]}'], r"meta-id\.jsonl:1: metadata\['id'\] must be a str or int"),
    ("meta-window", ['{"item": "x", "window": [5, 0, 1, 1]}'], r"meta-window\.jsonl:1: metadata\['window'\]"),
    ("item-number", ['{"item": 7, "id": "a"}'], r"item-number\.jsonl:1: expected an item"),
    ("text-number", ['{"text": 5}'], r"text-number\.jsonl:1: item\.text"),
]


@pytest.mark.parametrize("name, lines, message", EMBED_BAD_LINES, ids=[c[0] for c in EMBED_BAD_LINES])
def test_embed_bad_jsonl_names_the_line(name, lines, message, nano_dir, corpus, tmp_path, cli_error, no_model):
    path = write_lines(corpus / f"{name}.jsonl", lines) if lines else corpus / f"{name}.jsonl"
    if not lines:
        path.write_bytes(b"")
    cli_error(["embed", "--model", nano_dir, "--input", path, "--out", tmp_path / "v.npy"], message)
    assert not (tmp_path / "v.npy").exists()


def test_embed_latin1_line_is_named(nano_dir, tmp_path, cli_error, no_model):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('"fine"\n"caf\u00e9 near the lake"\n'.encode("latin-1"))
    cli_error(["embed", "--model", nano_dir, "--input", path, "--out", tmp_path / "v.npy"],
              r"latin1\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 5\)")


def test_embed_input_and_output_paths(nano_dir, corpus, tmp_path, cli_error, no_model):
    items = corpus / "items.jsonl"
    cli_error(["embed", "--model", nano_dir, "--input", tmp_path / "none.jsonl", "--out", tmp_path / "v.npy"],
              r"--input .*none\.jsonl: no such file")
    cli_error(["embed", "--model", nano_dir, "--input", corpus, "--out", tmp_path / "v.npy"],
              r"is a folder, not a JSONL file")
    cli_error(["embed", "--model", nano_dir, "--input", items, "--out", tmp_path],
              r"--out .* is a folder; give a file name")
    (tmp_path / "afile").write_text("x")
    cli_error(["embed", "--model", nano_dir, "--input", items, "--out", tmp_path / "afile" / "v.npy"],
              r"afile is a file, not a folder")
    cli_error(["embed", "--model", nano_dir, "--input", items, "--out", tmp_path / "v.npy", "--batch-size", "0"],
              r"--batch-size must be a positive integer; got 0")
    cli_error(["embed", "--model", nano_dir, "--input", items, "--out", tmp_path / "v.npy", "--batch-size", "x"],
              r"argument --batch-size: invalid int value: 'x'")
    cli_error(["embed", "--model", nano_dir, "--input", items, "--out", tmp_path / "v.npy", "--bogus"],
              r"unrecognized arguments: --bogus")
    cli_error(["embed", "--input", items, "--out", tmp_path / "v.npy"], r"the following arguments are required: --model")


MISSING_MODELS = [("./nowhere", r"--model \./nowhere: no such folder"),
                  ("/nonexistent/model", r"--model /nonexistent/model: no such folder"),
                  ("org/name/extra", r"no such folder"),
                  ("tests/no-such-model", r"--model tests/no-such-model: no such folder"),
                  ("~/no-such-model-here", r"no such folder")]


@pytest.mark.parametrize("model_arg, message", MISSING_MODELS, ids=[m[0] for m in MISSING_MODELS])
def test_a_missing_local_model_fails_at_once(model_arg, message, corpus, tmp_path, cli_error, no_model, monkeypatch):
    from tests.conftest import REPO_ROOT

    monkeypatch.chdir(REPO_ROOT)  # "tests/..." has an existing first component here
    cli_error(["embed", "--model", model_arg, "--input", corpus / "items.jsonl", "--out", tmp_path / "v.npy"], message)
    cli_error(["index", "build", "--model", model_arg, "--input", corpus / "items.jsonl", "--out", tmp_path / "i"],
              message)


def test_a_model_argument_that_is_a_file_or_an_empty_folder(corpus, tmp_path, cli_error, no_model):
    (tmp_path / "model.bin").write_bytes(b"\0")
    (tmp_path / "empty-model").mkdir()
    args = ["--input", corpus / "items.jsonl", "--out", tmp_path / "v.npy"]
    cli_error(["embed", "--model", tmp_path / "model.bin", *args], r"model\.bin is a file, not a model folder")
    cli_error(["embed", "--model", tmp_path / "empty-model", *args],
              r"empty-model: the folder holds no model \(no modules\.json or config\.json\)")


def test_a_hub_id_that_cannot_be_loaded_offline_is_one_error_line(corpus, tmp_path, cli_error, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cli_error(["embed", "--model", "no-such-org/no-such-model", "--input", corpus / "items.jsonl", "--out",
               tmp_path / "v.npy", "--quiet"], r"cannot load the model no-such-org/no-such-model")


def test_embed_trailing_newlines_are_fine_and_rows_follow_lines(nano_dir, model, tmp_path, capsys):
    path = tmp_path / "trailing.jsonl"
    path.write_text('"a harbour"\n"a forest"\n\n\n')
    assert main(["embed", "--model", str(nano_dir), "--input", str(path), "--out", str(tmp_path / "v.npy"),
                 "--quiet"]) == 0
    vectors = np.load(tmp_path / "v.npy")
    expected = model.encode(["a harbour", "a forest"], convert_to_numpy=True)
    assert vectors.shape == (2, expected.shape[1])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    record_correct()


# ------------------------------------------------------------------------------------------------ index build

def test_index_build_bad_metadata_is_named_before_any_chunk(nano_dir, tmp_path, cli_error, no_model):
    path = write_lines(tmp_path / "meta.jsonl", ['"fine"', '{"item": "x", "lat": 200}'])
    cli_error(["index", "build", "--model", nano_dir, "--input", path, "--out", tmp_path / "idx"],
              r"meta\.jsonl:2: metadata\['lat'\] must be a number in \[-90, 90\]; got 200")
    assert not (tmp_path / "idx" / "parts").exists()


def test_index_build_bad_item_is_named_before_the_model_loads(nano_dir, tmp_path, cli_error, no_model):
    path = write_lines(tmp_path / "items.jsonl", ['"fine"'] * 3 + ['{"image": "gone.png"}'])
    cli_error(["index", "build", "--model", nano_dir, "--input", path, "--out", tmp_path / "idx"],
              r"items\.jsonl:4: item.*image file not found")


def test_index_build_latin1_jsonl(nano_dir, tmp_path, cli_error, no_model):
    path = tmp_path / "l1.jsonl"
    path.write_bytes(b'"ok"\n"ok"\n"S\xe3o Paulo"\n')
    cli_error(["index", "build", "--model", nano_dir, "--input", path, "--out", tmp_path / "idx"],
              r"l1\.jsonl:3: not UTF-8")


def test_index_build_paths_and_numbers(nano_dir, corpus, tmp_path, cli_error, no_model):
    items = corpus / "items.jsonl"
    (tmp_path / "afile").write_text("x")
    base = ["index", "build", "--model", nano_dir, "--input", items]
    cli_error([*base, "--out", tmp_path / "afile"], r"--out .*afile is an existing file, not a folder")
    cli_error([*base, "--out", tmp_path / "afile" / "idx"], r"afile is a file, not a folder")
    cli_error([*base, "--out", tmp_path / "i", "--chunk-size", "0"], r"--chunk-size must be a positive integer")
    cli_error([*base, "--out", tmp_path / "i", "--chunk-size", "-4"], r"--chunk-size must be a positive integer")
    cli_error([*base, "--out", tmp_path / "i", "--batch-size", "0"], r"--batch-size must be a positive integer")
    cli_error([*base, "--out", tmp_path / "i", "--shard", "5/2"], r"shard 5/2")
    cli_error([*base, "--out", tmp_path / "i", "--kind", "annoy"], r"argument --kind: invalid choice: 'annoy'")
    cli_error([*base, "--out", tmp_path / "i", "--kind", "ivf", "--M", "8"], r"--M does not apply to a ivf index")
    cli_error(["index", "build", "--model", nano_dir, "--input", tmp_path / "nope.jsonl", "--out", tmp_path / "i"],
              r"input not found: .*nope\.jsonl")
    cli_error(["index", "build", "--model", nano_dir, "--input", tmp_path / "nope.parquet", "--out", tmp_path / "i"],
              r"input not found: .*nope\.parquet")


def test_index_build_truncated_parquet_is_named(nano_dir, tmp_path, cli_error, no_model):
    import datasets

    folder = tmp_path / "pq"
    folder.mkdir()
    data = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(50)], "text": [f"row {i}" for i in range(50)]})
    data.to_parquet(str(folder / "train-00000.parquet"))
    whole = (folder / "train-00000.parquet").read_bytes()
    (folder / "train-00000.parquet").write_bytes(whole[: len(whole) // 2])
    cli_error(["index", "build", "--model", nano_dir, "--input", folder, "--out", tmp_path / "i"],
              r"train-00000\.parquet: not a readable parquet file")
    (tmp_path / "one.parquet").write_bytes(b"PAR1 but not really")
    cli_error(["index", "build", "--model", nano_dir, "--input", tmp_path / "one.parquet", "--out", tmp_path / "i"],
              r"one\.parquet: not a readable parquet file")


def test_index_build_dataset_splits_and_columns(nano_dir, tmp_path, cli_error, no_model):
    import datasets

    data = datasets.Dataset.from_dict({"id": ["a", "b"], "text": ["x", "y"], "label": [0, 1]})
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(tmp_path / "dd")
    base = ["index", "build", "--model", nano_dir, "--input", tmp_path / "dd", "--out", tmp_path / "i"]
    cli_error(base, r"has splits \['train', 'test'\]: choose one")
    cli_error([*base, "--split", "val"], r"has no split 'val'")
    cli_error([*base, "--split", "test", "--item-columns", "label"], r"item columns must be among")
    cli_error([*base, "--split", "test", "--item-columns", "image"], r"not all of the item columns")


def test_index_build_bad_rasters(nano_dir, tmp_path, cli_error, no_model):
    (tmp_path / "fake.tif").write_text("this is not a GeoTIFF")
    base = ["index", "build", "--model", nano_dir, "--out", tmp_path / "i", "--input"]
    cli_error([*base, tmp_path / "fake.tif"], r"fake\.tif: not a raster GDAL can read")
    cli_error([*base, tmp_path / "missing.tif"], r"raster not found: .*missing\.tif")
    cli_error([*base, tmp_path / "fake.tif", "--bands", "4,x"], r"--bands must be comma-separated ints; got '4,x'")
    cli_error([*base, tmp_path / "fake.tif", "--scale", "0"], r"--scale needs 2 numbers")


def test_resumed_build_refuses_a_model_with_one_changed_weight(changed_model, corpus, built, tmp_path, cli_error):
    out = shutil.copytree(built, tmp_path / "index")
    (out / "parts" / "chunk-000001.npz").unlink()  # an interrupted build, resumed with other weights
    cli_error(["index", "build", "--model", changed_model, "--input", corpus / "items.jsonl", "--out", out,
               "--chunk-size", "2", "--quiet"],
              r"differs in model_fingerprint\).*another model \(weights fingerprint differs\)")
    assert not (out / "parts" / "chunk-000001.npz").exists()  # nothing embedded with the wrong weights


def test_a_garbage_chunk_is_embedded_again_on_resume(nano_dir, corpus, index_copy, model, capsys):
    parts = index_copy / "parts"
    (parts / "chunk-000001.npz").write_bytes(b"garbage, not a zip")
    before = {p: p.stat().st_mtime_ns for p in parts.glob("chunk-*.npz")}
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus / "items.jsonl"), "--out",
                 str(index_copy), "--chunk-size", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"re-embedding chunk 1 \(.*items\.jsonl:3 \.\.\.\): .*chunk-000001\.npz: unreadable chunk file", err)
    after = {p: p.stat().st_mtime_ns for p in parts.glob("chunk-*.npz")}
    assert [p.name for p in after if after[p] != before[p]] == ["chunk-000001.npz"]
    from vlm2geovec.corpus import read_items_jsonl
    from vlm2geovec.index import VectorIndex

    direct = model.encode(read_items_jsonl(corpus / "items.jsonl"), convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(VectorIndex.load(index_copy).vectors(), direct, atol=1e-5)
    record_correct()


def test_a_chunk_without_content_digest_is_embedded_again(nano_dir, corpus, index_copy, capsys):
    path = index_copy / "parts" / "chunk-000002.npz"
    with np.load(path) as data:
        vectors, metadata = data["vectors"], data["metadata"]
    np.savez(path.with_suffix(""), vectors=vectors, metadata=metadata)  # as an older vlm2geovec wrote it
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus / "items.jsonl"), "--out",
                 str(index_copy), "--chunk-size", "2", "--quiet"]) == 0
    assert "re-embedding chunk 2" in capsys.readouterr().err
    with np.load(path) as data:
        assert "content" in data.files
        np.testing.assert_allclose(data["vectors"], vectors, atol=1e-5)
    record_correct()


def test_a_garbage_manifest_is_named(nano_dir, corpus, index_copy, cli_error):
    (index_copy / "parts" / "manifest.json").write_text('{"chunks": 3,')
    cli_error(["index", "build", "--model", nano_dir, "--input", corpus / "items.jsonl", "--out", index_copy,
               "--chunk-size", "2", "--quiet"], r"manifest\.json: not valid JSON \(line 1")


# ------------------------------------------------------------------------------------------------ index merge

def _rewrite_chunk(path, **arrays):
    path.unlink()
    np.savez(path.with_suffix(""), **arrays)


CHUNK_DAMAGE = {
    "garbage": lambda p: p.write_bytes(b"\x00garbage" * 10),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "no-vectors": lambda p: _rewrite_chunk(p, metadata=np.array("[]")),
    "bad-metadata-json": lambda p: _rewrite_chunk(p, vectors=np.zeros((2, 128), np.float32), metadata=np.array("[{")),
    "count-mismatch": lambda p: _rewrite_chunk(p, vectors=np.zeros((3, 128), np.float32),
                                               metadata=np.array(json.dumps([{"id": 1}, {"id": 2}]))),
    "wrong-dim": lambda p: _rewrite_chunk(p, vectors=np.ones((2, 64), np.float32),
                                          metadata=np.array(json.dumps([{"id": 1}, {"id": 2}]))),
    "int-vectors": lambda p: _rewrite_chunk(p, vectors=np.ones((2, 128), np.int64),
                                            metadata=np.array(json.dumps([{"id": 1}, {"id": 2}]))),
}
CHUNK_MESSAGES = {
    "garbage": r"chunk-000001\.npz: unreadable chunk file", "truncated": r"chunk-000001\.npz: unreadable chunk file",
    "empty": r"chunk-000001\.npz: unreadable chunk file", "no-vectors": r"chunk-000001\.npz: unreadable chunk file",
    "bad-metadata-json": r"chunk-000001\.npz: its metadata is not valid JSON",
    "count-mismatch": r"chunk-000001\.npz: 3 vectors but 2 metadata entries",
    "wrong-dim": r"chunk-000001\.npz: vectors of dimension 64, but earlier chunks have 128",
    "int-vectors": r"chunk-000001\.npz: vectors must be a 2-D float array",
}


@pytest.mark.parametrize("damage", list(CHUNK_DAMAGE))
def test_merge_names_a_damaged_chunk(damage, index_copy, cli_error):
    CHUNK_DAMAGE[damage](index_copy / "parts" / "chunk-000001.npz")
    cli_error(["index", "merge", "--out", index_copy], CHUNK_MESSAGES[damage])


def test_merge_folder_problems(index_copy, tmp_path, cli_error):
    cli_error(["index", "merge", "--out", tmp_path / "nowhere"], r"index folder not found: .*nowhere \(no such folder\)")
    (tmp_path / "bare").mkdir()
    cli_error(["index", "merge", "--out", tmp_path / "bare"], r"parts has no manifest\.json: nothing was embedded")
    (tmp_path / "afile").write_text("x")
    cli_error(["index", "merge", "--out", tmp_path / "afile"], r"afile is an existing file, not a folder")
    cli_error(["index", "merge", "--out", index_copy, "--model", "./gone-model"], r"--model \./gone-model: no such folder")
    (index_copy / "parts" / "chunk-000002.npz").unlink()
    cli_error(["index", "merge", "--out", index_copy], r"1 of 3 chunks are not embedded yet \(2\)")
    manifest = index_copy / "parts" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "chunks": "three"}))
    cli_error(["index", "merge", "--out", index_copy], r"manifest\.json: field 'chunks' must be a non-negative integer")
    manifest.write_text("[1, 2")
    cli_error(["index", "merge", "--out", index_copy], r"manifest\.json: not valid JSON")


def test_merge_with_model_records_an_absolute_path(index_copy, nano_dir, capsys, monkeypatch):
    monkeypatch.chdir(nano_dir.parent)
    assert main(["index", "merge", "--out", str(index_copy), "--model", nano_dir.name]) == 0
    info = json.loads((index_copy / "index.json").read_text())
    assert info["build"]["model"] == str(nano_dir.resolve())
    record_correct()


# ------------------------------------------------------------------------------------------------ saved index files

def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_info(**changes):
    def edit(folder):
        info = json.loads((folder / "index.json").read_text())
        info.update(changes)
        (folder / "index.json").write_text(json.dumps(info))
    return edit


INDEX_DAMAGE = [
    ("faiss-truncated", lambda f: _truncate(f / "index.faiss"), r"index\.faiss: not a readable faiss index"),
    ("faiss-garbage", lambda f: (f / "index.faiss").write_bytes(b"garbage" * 20), r"index\.faiss: not a readable faiss"),
    ("faiss-empty", lambda f: (f / "index.faiss").write_bytes(b""), r"index\.faiss: not a readable faiss index"),
    ("faiss-missing", lambda f: (f / "index.faiss").unlink(), r"is not a saved VectorIndex \(missing index\.faiss\)"),
    ("json-truncated", lambda f: _truncate(f / "index.json"), r"index\.json: not valid JSON \(line \d+"),
    ("json-garbage", lambda f: (f / "index.json").write_text("kind: exact"), r"index\.json: not valid JSON \(line 1"),
    ("json-latin1", lambda f: (f / "index.json").write_bytes(b'{"kind": "\xe9"}'), r"index\.json: not UTF-8"),
    ("json-list", lambda f: (f / "index.json").write_text("[]"), r"index\.json: expected a JSON object, got list"),
    ("json-no-count", _edit_info(count=None), r"index\.json: field 'count' must be int; got None"),
    ("json-count-text", _edit_info(count="6"), r"index\.json: field 'count' must be int; got '6'"),
    ("json-count-wrong", _edit_info(count=7), r"is inconsistent: index has 6 x 128, metadata 6 rows, index\.json says 7"),
    ("json-kind", _edit_info(kind="annoy"), r"index\.json: field 'kind' must be one of"),
    ("json-kind-lies", _edit_info(kind="hnsw"), r"index\.json: field 'kind' says 'hnsw', but index\.faiss holds"),
    ("json-params", _edit_info(params=[]), r"index\.json: field 'params' must be dict"),
    ("json-newer", _edit_info(format_version=99), r"index\.json: written by a newer version \(format 99\)"),
    ("json-fingerprint", _edit_info(model_fingerprint=5), r"index\.json: field 'model_fingerprint' must be a string"),
    ("json-build", _edit_info(build="x"), r"index\.json: field 'build' must be an object"),
    ("meta-garbage", lambda f: (f / "metadata.jsonl").write_text('{"id": 1}\n{"id": 2}\n{oops\n'),
     r"metadata\.jsonl:3: not valid JSON"),
    ("meta-latin1", lambda f: (f / "metadata.jsonl").write_bytes(b'{"id": 1}\n{"id": "\xe9"}\n'),
     r"metadata\.jsonl:2: not UTF-8"),
    ("meta-not-object", lambda f: (f / "metadata.jsonl").write_text('{"id": 1}\n[2]\n'),
     r"metadata\.jsonl:2: expected a JSON object per vector, got list"),
    ("meta-short", lambda f: (f / "metadata.jsonl").write_text('{"id": 1}\n'), r"is inconsistent: .*metadata 1 rows"),
]


@pytest.mark.parametrize("name, damage, message", INDEX_DAMAGE, ids=[c[0] for c in INDEX_DAMAGE])
def test_info_names_a_damaged_index_file(name, damage, message, index_copy, cli_error):
    damage(index_copy)
    cli_error(["index", "info", index_copy], message)


@pytest.mark.parametrize("name, damage, message", INDEX_DAMAGE[:2] + INDEX_DAMAGE[5:6] + INDEX_DAMAGE[17:18],
                         ids=["faiss-truncated", "faiss-garbage", "json-garbage", "meta-garbage"])
def test_search_and_export_name_a_damaged_index_file(name, damage, message, index_copy, tmp_path, cli_error,
                                                      no_model):
    damage(index_copy)
    cli_error(["search", "--index", index_copy, "--query", "a harbour"], message)
    cli_error(["index", "export", index_copy, "--to", tmp_path / "v.parquet"], message)


def test_info_and_export_paths(index_copy, tmp_path, cli_error):
    cli_error(["index", "info", tmp_path / "nowhere"], r"index folder not found: .*nowhere \(no such folder\)")
    (tmp_path / "afile").write_text("x")
    cli_error(["index", "info", tmp_path / "afile"], r"afile is a file, not an index folder")
    cli_error(["index", "export", index_copy, "--to", tmp_path], r"--to .* is a folder; give a file name")
    cli_error(["index", "export", index_copy, "--to", tmp_path / "afile" / "v.parquet"], r"afile is a file, not a folder")


def test_an_os_error_deep_in_a_command_is_one_error_line(index_copy, tmp_path, cli_error, monkeypatch):
    """The last-resort guard in `main`: a disk-full OSError inside the parquet writer, a multi-line ValueError."""
    from vlm2geovec.index import VectorIndex

    def disk_full(self, path, batch_rows=65_536):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(VectorIndex, "export_parquet", disk_full)
    cli_error(["index", "export", index_copy, "--to", tmp_path / "v.parquet", "--format", "parquet"],
              r"No space left on device: .*v\.parquet")

    def two_lines(self, path, batch_rows=65_536):
        raise ValueError(f"{path}: first line\nsecond line")

    monkeypatch.setattr(VectorIndex, "export_parquet", two_lines)
    cli_error(["index", "export", index_copy, "--to", tmp_path / "v.parquet", "--format", "parquet"],
              r"v\.parquet: first line second line")


# ------------------------------------------------------------------------------------------------ search

def test_search_argument_problems(built, tmp_path, cli_error, no_model):
    base = ["search", "--index", built]
    cli_error(["search", "--index", tmp_path / "nowhere", "--query", "x"], r"nowhere \(no such folder\)")
    cli_error([*base, "--query", "x", "-k", "0"], r"-k must be a positive integer; got 0")
    cli_error([*base, "--query", "x", "-k", "-3"], r"-k must be a positive integer; got -3")
    cli_error([*base, "--query", "x", "-k", "1.5"], r"argument -k: invalid int value: '1\.5'")
    cli_error([*base, "--query", "x", "-k", "ten"], r"argument -k: invalid int value: 'ten'")
    cli_error([*base, "--query", "x", "--model", "./gone"], r"--model \./gone: no such folder")
    cli_error([*base, "--query", "x", "--model", "/gone/model"], r"--model /gone/model: no such folder")
    cli_error([*base, "--queries", tmp_path / "q.jsonl"], r"--queries .*q\.jsonl: no such file")
    cli_error([*base, "--item", f"@{tmp_path / 'q.json'}"], r"No such file or directory: .*q\.json")
    cli_error([*base, "--image", tmp_path / "nothere.png"], r"query.*image file not found")
    cli_error([*base, "--query", "x", "--region", "95,0,96,1"], r"region south must be a number in \[-90, 90\]")
    cli_error([*base, "--coords", "1"], r"--coords needs 2 numbers")
    cli_error([*base, "--query", "x", "--ef-search", "16"], r"has no search parameters \['ef_search'\]")


def test_search_query_files(built, tmp_path, cli_error, no_model):
    base = ["search", "--index", built, "--queries"]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'"ok"\n"\xe9t\xe9"\n')
    cli_error([*base, latin], r"latin\.jsonl:2: not UTF-8")
    gap = write_lines(tmp_path / "gap.jsonl", ['"a"', "", '"b"'])
    cli_error([*base, gap], r"gap\.jsonl:2: blank line")
    bad = write_lines(tmp_path / "bad.jsonl", ['"a"', "3"])
    cli_error([*base, bad], r"bad\.jsonl:2: expected an item")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cli_error([*base, empty], r"empty\.jsonl: no items")


def test_search_refuses_a_model_with_one_changed_weight(built, changed_model, cli_error):
    cli_error(["search", "--index", built, "--query", "a harbour", "--model", changed_model],
              r"nano-changed is not the model this index was built with \(weights fingerprint differs\)")


def test_search_refuses_an_old_style_fingerprint(index_copy, cli_error):
    _edit_info(model_fingerprint="sha256:0123456789abcdef0123456789abcdef")(index_copy)
    cli_error(["search", "--index", index_copy, "--query", "a harbour"],
              r"older vlm2geovec whose weights fingerprint .* cannot be checked.*rebuild the index")


def test_search_when_the_recorded_model_is_gone(index_copy, cli_error, no_model):
    _edit_info(build={"model": "/no/longer/here"})(index_copy)
    cli_error(["search", "--index", index_copy, "--query", "x"],
              r"index\.json names the model /no/longer/here, which is not there \(no such folder\): pass --model")
    _edit_info(build={})(index_copy)
    cli_error(["search", "--index", index_copy, "--query", "x"], r"names no model \(field build\.model\): pass --model")


# ------------------------------------------------------------------------------------------------ rsmeb eval

def test_rsmeb_eval_problems_are_refused_before_the_model_loads(nano_dir, rsmeb_data, tmp_path, cli_error, no_model):
    base = ["rsmeb", "eval", "--model", nano_dir, "--data", rsmeb_data, "--out", tmp_path / "eval"]
    cli_error([*base, "--tasks", "S2Lite-SceneCls", "NoSuchTask"], r"--tasks: unknown RSMEB task\(s\) 'NoSuchTask'")
    cli_error(["rsmeb", "eval", "--model", nano_dir, "--data", tmp_path / "none", "--out", tmp_path / "e"],
              r"--data .*none: no such folder")
    (tmp_path / "afile").write_text("x")
    cli_error(["rsmeb", "eval", "--model", nano_dir, "--data", tmp_path / "afile", "--out", tmp_path / "e"],
              r"afile is a file, not an RSMEB dataset folder")
    (tmp_path / "empty").mkdir()
    cli_error(["rsmeb", "eval", "--model", nano_dir, "--data", tmp_path / "empty", "--out", tmp_path / "e"],
              r"no RSMEB task data found")
    from rsmeb_eval.registry import get_tasks

    absent = next(t.name for t in get_tasks() if not (rsmeb_data / "data" / t.name).exists())
    cli_error([*base, "--tasks", absent], rf"has no data for task\(s\) {absent}")
    cli_error([*base, "--split", "val"], r"task NEONLite-RegionCaption has no 'val' split")
    cli_error(["rsmeb", "eval", "--model", tmp_path / "gone", "--data", rsmeb_data, "--out", tmp_path / "e"],
              r"--model .*gone: no such folder")
    cli_error(["rsmeb", "eval", "--model", "./gone", "--data", rsmeb_data, "--out", tmp_path / "e"],
              r"--model \./gone: no such folder")
    cli_error(["rsmeb", "eval", "--model", tmp_path / "empty", "--data", rsmeb_data, "--out", tmp_path / "e"],
              r"empty: the folder holds no model")
    cli_error([*base, "--batch-size", "0"], r"--batch-size must be a positive integer")
    cli_error(["rsmeb", "eval", "--model", nano_dir, "--data", rsmeb_data, "--out", tmp_path / "afile"],
              r"--out .*afile is an existing file, not a folder")


def test_rsmeb_eval_damaged_data_and_cache_are_named_before_the_model_loads(nano_dir, rsmeb_data, tmp_path,
                                                                            cli_error, no_model):
    data = shutil.copytree(rsmeb_data, tmp_path / "data")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "embeddings.sqlite").write_bytes(b"this is not an sqlite database" * 40)
    base = ["rsmeb", "eval", "--model", nano_dir, "--data", data, "--out", tmp_path / "eval"]
    cli_error([*base, "--cache-dir", cache], r"cache/embeddings\.sqlite: not an embedding cache")
    _truncate(data / "data" / "S2Lite-SceneCls-corpus" / "test.parquet")
    cli_error(base, r"S2Lite-SceneCls-corpus/test\.parquet: not a readable parquet file")
    from rsmeb_eval.dataset_io import load_task

    expect_error(lambda: load_task(data, "S2Lite-SceneCls", "test"), ValueError,
                 r"S2Lite-SceneCls-corpus/test\.parquet: not a readable parquet file")


# ------------------------------------------------------------------------------------------------ in-process API

def test_api_errors_name_the_file(built, tmp_path, corpus):
    from vlm2geovec.corpus import merge_parts, open_source, read_jsonl_records
    from vlm2geovec.index import VectorIndex

    copy = shutil.copytree(built, tmp_path / "idx")
    _truncate(copy / "index.faiss")
    expect_error(lambda: VectorIndex.load(copy), ValueError, r"index\.faiss: not a readable faiss index")
    (copy / "parts" / "chunk-000000.npz").write_bytes(b"PK\x03\x04 truncated zip")
    expect_error(lambda: merge_parts(copy), ValueError, r"chunk-000000\.npz: unreadable chunk file")
    expect_error(lambda: VectorIndex.load(tmp_path / "none"), FileNotFoundError, r"no such folder")
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'"\xff"\n')
    expect_error(lambda: read_jsonl_records(latin), ValueError, r"l\.jsonl:1: not UTF-8")
    expect_error(lambda: open_source(tmp_path / "none.jsonl"), FileNotFoundError, r"input not found")


# ------------------------------------------------------------------------------------------------ real console runs

def test_real_cli_search_with_one_changed_weight(built, changed_model):
    result = run_cli(["search", "--index", built, "--query", "a harbour", "--model", changed_model])
    expect_cli_error(result, r"is not the model this index was built with")


def test_real_cli_truncated_index_file(index_copy):
    _truncate(index_copy / "index.faiss")
    expect_cli_error(run_cli(["search", "--index", index_copy, "--query", "x", "-k", "3"]),
                     r"index\.faiss: not a readable faiss index")


def test_real_cli_missing_model_fails_fast(tmp_path):
    import time

    (tmp_path / "items.jsonl").write_text('"x"\n')
    start = time.monotonic()
    expect_cli_error(run_cli(["embed", "--model", "./no-model", "--input", tmp_path / "items.jsonl", "--out",
                              tmp_path / "v.npy"], cwd=tmp_path), r"--model \./no-model: no such folder")
    assert time.monotonic() - start < 90  # imports only: no Hub retries, no model loading


def test_real_cli_index_is_usable_from_another_directory(nano_dir, corpus, tmp_path):
    """Built with a relative --model in one directory, searched from another: index.json holds the absolute
    model path, and the fingerprint check still runs. The build's stderr is a pipe, as in a log file: its progress
    is plain lines, with no carriage-return redraws and no nested bars."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(nano_dir, work / "nano")
    shutil.copy(corpus / "items.jsonl", work / "items.jsonl")
    shutil.copy(corpus / "tile.png", work / "tile.png")
    result = run_cli(["index", "build", "--model", "nano", "--input", "items.jsonl", "--out", "idx", "--chunk-size",
                      "2"], cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr and "embedding: 6/6 pos (100%)" in result.stderr
    assert not re.search(r"\d+%\|", result.stderr)  # no tqdm bar in the log
    info = json.loads((work / "idx" / "index.json").read_text())
    assert info["build"]["model"] == str((work / "nano").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli(["search", "--index", work / "idx", "--query", "a marina with boats", "-k", "2", "--json"],
                     cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-2000:]
    hits = json.loads(result.stdout)
    assert hits[0]["id"] == 4 and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    record_correct()
