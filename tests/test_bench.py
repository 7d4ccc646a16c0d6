"""The benchmark scripts keep running through `vlm2geovec bench` (quick form; no speed assertions — the numbers
go to JSON and RESULTS.md)."""

from __future__ import annotations

import json

from vlm2geovec.cli import main


def run_bench(name: str, tmp_path, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["bench", name, *args, "--json", str(out), "--results-md", ""]) == 0
    return json.loads(out.read_text())


def test_encode_benchmark_quick(tmp_path):
    record = run_bench("encode", tmp_path, "--model", "nano", "--quick", "--device", "cpu")
    assert record["n_items"] == 40 and set(record["orders"]) == {"length", "arrival"}
    length, arrival = record["orders"]["length"], record["orders"]["arrival"]
    assert length["real_tokens"] == arrival["real_tokens"] > 0  # same items, only the batching differs
    assert 0 <= length["padding_fraction"] < arrival["padding_fraction"] < 1  # sorting reduces padding
    assert record["end_to_end"]["wall_s"] > 0 and record["end_to_end"]["preprocess_workers"] == 0
    pixels = record["pixel_path"]
    assert pixels["images"] == 24 and pixels["transformers_s"] > 0 and pixels["ours_s"] > 0  # 3 of every 5 items


def test_encode_benchmark_preprocess_only(tmp_path):
    """No model is built: preprocessing at the 2B pixel budget is measurable on any CPU machine."""
    record = run_bench("encode", tmp_path, "--model", "qwen2vl-2b-random", "--preprocess-only", "--quick")
    assert record["preprocess_only"] and "orders" not in record
    assert set(record["preprocess_s"]) == {"length", "arrival"} and min(record["preprocess_s"].values()) > 0
    assert record["pixel_path"]["images"] == 24


def test_packed_benchmark_quick(tmp_path):
    """Packed vs padded in CPU seconds: both forwards ran on the same batches and gave the same vectors."""
    record = run_bench("packed", tmp_path, "--quick", "--families", "qwen2_vl", "qwen3_vl")
    assert record["threads"] == 1 and record["environment"]["cpu_threads"] == 1
    for family in ("qwen2_vl", "qwen3_vl"):
        length, arrival = record["families"][family]["length"], record["families"][family]["arrival"]
        assert length["real_tokens"] == arrival["real_tokens"] > 0
        for order in (length, arrival):
            assert order["max_abs_diff"] <= 1e-5
            assert order["padded_cpu_s"] > 0 and order["packed_cpu_s"] > 0
            assert 0 < order["packed_language_model_cpu_s"] < order["packed_cpu_s"]
            assert order["pair_ratio_min"] <= order["pair_ratio_median"] <= order["pair_ratio_max"]


def test_train_benchmark_quick(tmp_path):
    record = run_bench("train", tmp_path, "--model", "nano", "--quick", "--device", "cpu")
    rows = {(r["batch_size"], r["loss"]): r for r in record["rows"]}
    assert set(rows) == {(4, "mnrl"), (4, "cached_mnrl"), (8, "mnrl"), (8, "cached_mnrl")}
    assert all(r["status"] == "ok" for r in rows.values())
    for batch in (4, 8):  # the same loss either way: GradCache only changes how it is computed
        assert abs(rows[(batch, "mnrl")]["loss_value"] - rows[(batch, "cached_mnrl")]["loss_value"]) < 1e-4


def test_search_benchmark_quick(tmp_path):
    record = run_bench("search", tmp_path, "--quick", "--sizes", "2000", "--dim", "32", "--queries", "20")
    runs = record["runs"]
    assert [(run["data"], run["n"], run["kind"]) for run in runs] == [("clustered", 2000, "exact")] + [
        ("clustered", 2000, "hnsw")] * 5 + [("clustered", 2000, "ivf")] * 5
    exact, hnsw, ivf = runs[0], runs[1:6], runs[6:]
    assert [run["params"]["ef_search"] for run in hnsw] == [64, 128, 256, 512, 1024]
    assert [run["params"]["nprobe"] for run in ivf] == [8, 16, 32, 64, 128] and ivf[0]["params"]["nlist"] == 51
    assert exact["index_bytes"] >= 2000 * 32 * 4 and hnsw[0]["index_bytes"] > exact["index_bytes"]
    assert exact["ms_per_query"] > 0 and exact["recall_at_10"] == 1.0 and hnsw[0]["build_s"] > 0
    assert all(run["single_query_ms"] > 0 for run in runs)
    # more search effort never finds fewer true neighbours (same graph / same lists, searched wider)
    for sweep in (hnsw, ivf):
        recalls = [run["recall_at_10"] for run in sweep]
        assert recalls == sorted(recalls) and 0.9 <= recalls[-1] <= 1.0


def test_assets_benchmark_quick(tmp_path):
    record = run_bench("assets", tmp_path, "--quick")
    assert record["benchmark"] == "assets" and record["n_points"] == 1000
    assert record["country_at_per_s"] > 0 and 0.0 < record["land_share"] < 1.0
