"""The benchmark scripts keep running (quick form; no speed assertions — numbers go to JSON/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json

from tests.conftest import REPO_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encode_benchmark_quick(tmp_path):
    encode = load_script("encode")
    out = tmp_path / "encode.json"
    record = encode.main(["--model", "nano", "--quick", "--device", "cpu", "--json", str(out), "--results-md", ""])
    assert json.loads(out.read_text()) == record
    assert record["n_items"] == 40 and set(record["orders"]) == {"length", "arrival"}
    length, arrival = record["orders"]["length"], record["orders"]["arrival"]
    assert length["real_tokens"] == arrival["real_tokens"] > 0  # same items, only the batching differs
    assert 0 <= length["padding_fraction"] < arrival["padding_fraction"] < 1  # sorting reduces padding
    assert record["end_to_end"]["wall_s"] > 0 and record["end_to_end"]["preprocess_workers"] == 0


def test_train_benchmark_quick(tmp_path):
    train = load_script("train")
    record = train.main(["--model", "nano", "--quick", "--device", "cpu", "--json", str(tmp_path / "t.json"),
                         "--results-md", ""])
    rows = {(r["batch_size"], r["loss"]): r for r in record["rows"]}
    assert set(rows) == {(4, "mnrl"), (4, "cached_mnrl"), (8, "mnrl"), (8, "cached_mnrl")}
    assert all(r["status"] == "ok" for r in rows.values())
    for batch in (4, 8):  # the same loss either way: GradCache only changes how it is computed
        assert abs(rows[(batch, "mnrl")]["loss_value"] - rows[(batch, "cached_mnrl")]["loss_value"]) < 1e-4
