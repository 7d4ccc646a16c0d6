"""The CLI, called in-process through `main([...])`, plus one real console-script run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import make_image
from vlm2geovec.cli import main
from vlm2geovec.corpus import read_items_jsonl


@pytest.fixture(scope="module")
def jsonl_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jsonl")
    (folder / "tiles").mkdir()
    make_image(200, 150, 3).save(folder / "tiles" / "a.png")
    make_image(120, 120, 4).save(folder / "tiles" / "b.png")
    lines = [
        {"image": "tiles/a.png", "bbox": [10, 10, 90, 120], "text": "crown"},
        "a coastal lagoon",
        {"coords": [29.69, -81.99]},
        [{"image": "tiles/a.png"}, "versus", {"image": "tiles/b.png"}],
    ]
    (folder / "items.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return folder


def test_read_items_resolves_paths_relative_to_the_file(jsonl_dir):
    items = read_items_jsonl(jsonl_dir / "items.jsonl")
    assert items[0]["image"] == str(jsonl_dir / "tiles" / "a.png")
    assert items[3][2] == {"image": str(jsonl_dir / "tiles" / "b.png")}
    assert items[1] == "a coastal lagoon"


def test_embed_matches_sentence_transformer(nano_dir, jsonl_dir, tmp_path, capsys):
    from vlm2geovec import load_model

    out = tmp_path / "vectors.npy"
    assert main(["embed", "--model", str(nano_dir), "--input", str(jsonl_dir / "items.jsonl"), "--out", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape == (4, 128) and vectors.dtype == np.float32
    expected = load_model(str(nano_dir), device="cpu").encode(read_items_jsonl(jsonl_dir / "items.jsonl"))
    assert np.abs(vectors - expected).max() <= 1e-5
    assert "wrote 4 embeddings" in capsys.readouterr().out


def test_embed_reports_bad_line_before_encoding(nano_dir, tmp_path, monkeypatch):
    import vlm2geovec.cli as cli

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(cli, "_load_for_encoding", no_model)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n{"coords": [12.0, 200.0]}\n')
    with pytest.raises(SystemExit, match=r"bad.jsonl:2: item\.coords\.lon"):
        main(["embed", "--model", str(nano_dir), "--input", str(bad), "--out", str(tmp_path / "x.npy")])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('"fine"\n{not json\n')
    with pytest.raises(SystemExit, match=r"broken.jsonl:2: not valid JSON"):
        main(["embed", "--model", str(nano_dir), "--input", str(broken), "--out", str(tmp_path / "y.npy")])
    missing = tmp_path / "missing.jsonl"
    missing.write_text('"fine"\n{"image": "nowhere.png"}\n')
    with pytest.raises(SystemExit, match="missing.jsonl:2: item.*image file not found"):
        main(["embed", "--model", str(nano_dir), "--input", str(missing), "--out", str(tmp_path / "z.npy")])


def test_nano_command_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    assert main(["nano", "--out", str(tmp_path / "a"), "--seed", "7"]) == 0
    assert main(["nano", "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    card = (tmp_path / "a" / "README.md").read_text()
    assert "vlm2geovec-nano (seed 7)" in card and "not trained" in card


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "vlm2geovec.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("nano", "convert", "embed"):
        assert command in result.stdout


def test_missing_subcommand_is_an_error():
    with pytest.raises(SystemExit):
        main([])


def test_quickstart_seeds_option_runs_one_quickstart_per_seed(monkeypatch, tmp_path):
    import vlm2geovec_train.quickstart as qs

    calls = []
    monkeypatch.setattr(qs, "quickstart_seeds", lambda out, seeds, **kw: calls.append(("seeds", list(seeds), kw)))
    monkeypatch.setattr(qs, "quickstart", lambda out, **kw: calls.append(("one", kw["seed"], kw["preset"])))
    assert main(["quickstart", "--out", str(tmp_path), "--seeds", "0", "1", "2", "--max-steps", "5"]) == 0
    assert main(["quickstart", "--out", str(tmp_path), "--seed", "4"]) == 0
    assert main(["quickstart", "--out", str(tmp_path), "--seed", "5", "--preset", "full"]) == 0
    assert calls == [("seeds", [0, 1, 2], {"max_steps": 5, "tasks": None, "family": "qwen2_vl", "data_dir": None,
                                           "preset": "quick"}),
                     ("one", 4, "quick"), ("one", 5, "full")]
    calls.clear()
    assert main(["quickstart", "--out", str(tmp_path), "--seeds", "1", "--family", "qwen3_vl", "--data", "D",
                 "--preset", "full"]) == 0
    assert calls == [("seeds", [1], {"max_steps": None, "tasks": None, "family": "qwen3_vl", "data_dir": "D",
                                     "preset": "full"})]
