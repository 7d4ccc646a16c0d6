"""The persisted vector index (vlm2geovec.index): exact = brute force, save/load round trip, HNSW recall, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.conftest import make_image
from vlm2geovec.index import VectorIndex, build_index_from_items, validate_metadata


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors, queries, k):
    sims = queries.astype(np.float64) @ vectors.astype(np.float64).T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def geo_metadata(n: int) -> list[dict]:
    return [{"id": f"tile-{i}", "source": f"scene_{i % 3}.tif", "window": [i, 0, i + 32, 32] if i % 2 else None,
             "lat": -45 + i * 0.01, "lon": 10.0 + i * 0.01} for i in range(n)]


def test_exact_search_equals_brute_force():
    vectors, queries = unit(2000, 64, 0), unit(25, 64, 1)
    index = VectorIndex.build(vectors, geo_metadata(2000), kind="exact")
    assert index.kind == "exact" and len(index) == 2000 and index.dim == 64
    scores, ids, metas = index.search(queries, k=10)
    ref_scores, ref_ids = brute_force(vectors, queries, 10)
    assert scores.shape == ids.shape == (25, 10) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert [m["id"] for m in metas[3]] == [f"tile-{i}" for i in ref_ids[3]]
    # A single 1-D query works too, and the auto kind picks exact search for a small index.
    s1, i1, _ = index.search(queries[3], k=5)
    np.testing.assert_array_equal(i1[0], ref_ids[3, :5])
    assert VectorIndex.build(vectors[:100], None).kind == "exact"


def test_non_unit_vectors_are_normalised_with_a_warning():
    vectors = unit(50, 16) * np.arange(1, 51, dtype=np.float32)[:, None]
    with pytest.warns(UserWarning, match="not unit-normalised"):
        index = VectorIndex.build(vectors, None, kind="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unit queries: no warning
        scores, ids, metas = index.search(unit(50, 16)[7:8], k=1)
    assert ids[0, 0] == 7 and scores[0, 0] == pytest.approx(1.0, abs=1e-5) and metas[0][0] == {"id": 7}


@pytest.mark.parametrize("kind, params", [("exact", {}), ("hnsw", {"M": 16, "ef_search": 64}), ("ivf", {"nprobe": 4})])
def test_save_load_round_trip(tmp_path, kind, params):
    vectors, queries = unit(3000, 32, 2), unit(20, 32, 3)
    meta = geo_metadata(3000)
    index = VectorIndex.build(vectors, meta, kind=kind, fingerprint="sha256:test", **params)
    before = index.search(queries, k=10)
    folder = index.save(tmp_path / "idx")
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "index.json", "metadata.jsonl"]
    info = json.loads((folder / "index.json").read_text())
    assert info["kind"] == kind and info["dim"] == 32 and info["count"] == 3000
    assert info["model_fingerprint"] == "sha256:test" and info["params"] == index.params
    loaded = VectorIndex.load(folder)
    assert loaded.kind == kind and loaded.params == index.params and loaded.metadata == meta
    after = loaded.search(queries, k=10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert after[2] == before[2]


def test_hnsw_recall_at_10_vs_exact():
    vectors, queries = unit(20_000, 128, 4), unit(200, 128, 5)
    exact = VectorIndex.build(vectors, None, kind="exact")
    hnsw = VectorIndex.build(vectors, None, kind="hnsw", M=32, ef_construction=200, ef_search=256)
    assert hnsw.kind == "hnsw" and hnsw.index.hnsw.efSearch == 256
    _, exact_ids, _ = exact.search(queries, 10)
    _, approx_ids, _ = hnsw.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_ids.tolist(), exact_ids.tolist())])
    print(f"HNSW recall@10 = {recall:.4f} (n=20000, dim=128, M=32, efConstruction=200, efSearch=256)")
    assert recall >= 0.95
    # efSearch is a search-time knob: lower it, recall may drop but the ids stay valid.
    hnsw.set_search_params(ef_search=16)
    assert hnsw.index.hnsw.efSearch == 16 and hnsw.params["ef_search"] == 16
    _, low_ids, _ = hnsw.search(queries, 10)
    assert ((low_ids >= -1) & (low_ids < 20_000)).all()


def test_bad_inputs_raise_clear_errors():
    vectors = unit(100, 16)
    index = VectorIndex.build(vectors, None, kind="exact")
    with pytest.raises(ValueError, match="dimension 8, but the index has dimension 16"):
        index.search(unit(2, 8), k=3)
    with pytest.raises(ValueError, match="k=101 is larger than the number of indexed vectors"):
        index.search(unit(2, 16), k=101)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(unit(2, 16), k=0)
    bad = vectors.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(rows \[5\]\)"):
        VectorIndex.build(bad, None)
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad[:6], k=1)
    with pytest.raises(ValueError, match="metadata has 99 entries but there are 100 vectors"):
        VectorIndex.build(vectors, [{}] * 99)
    with pytest.raises(ValueError, match="must be a float array"):
        VectorIndex.build(vectors.astype(np.int64), None)
    with pytest.raises(ValueError, match="2-D array"):
        VectorIndex.build(vectors[0], None)
    with pytest.raises(ValueError, match="zero vectors"):
        VectorIndex.build(np.zeros((3, 4), np.float32), None)
    with pytest.raises(ValueError, match="kind must be"):
        VectorIndex.build(vectors, None, kind="annoy")
    with pytest.raises(ValueError, match="unknown parameters for a hnsw index"):
        VectorIndex.build(vectors, None, kind="hnsw", nprobe=3)
    with pytest.raises(ValueError, match=r"\['window'\] needs 0 <= x0 < x1"):
        validate_metadata([{"window": [10, 0, 5, 8]}], 1)
    with pytest.raises(ValueError, match=r"\['lat'\] must be a number in \[-90, 90\]"):
        validate_metadata([{"lat": 91.0}], 1)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        validate_metadata([{"extra": object()}], 1)
    with pytest.raises(ValueError, match="must be a dict"):
        validate_metadata(["tile-0"], 1)
    assert validate_metadata([{"window": (0, 0, 4, 4), "lat": 1, "lon": -2}], 1) == [
        {"window": [0, 0, 4, 4], "lat": 1, "lon": -2}]


def test_build_index_from_items_with_nano_model(nano_dir, tmp_path):
    from vlm2geovec import load_model

    model = load_model(str(nano_dir), device="cpu")
    items = [
        {"image": make_image(64, 48, 0)},
        {"image": make_image(80, 80, 1), "bbox": [4, 4, 40, 40]},
        {"image": make_image(96, 64, 2), "bbox": [10, 8, 60, 50], "text": "a dirt track through pines"},
        "dense conifer forest with a few dead standing trees",
        "open sandhill with scattered longleaf pine crowns",
        "bare ground",
        {"coords": (29.68, -82.01), "text": "grassland with isolated shrubs"},
        {"coords": (-33.9, 151.2)},
        {"image": make_image(72, 72, 3), "text": "mixed woodland on a slope"},
        "a tree",
    ]
    meta = [{"id": f"item-{i}", "source": "test", "window": None, "lat": None, "lon": None} for i in range(len(items))]
    index = build_index_from_items(model, items, meta, batch_size=4)
    assert len(index) == len(items) and index.kind == "exact"
    assert index.fingerprint and index.fingerprint.startswith("weights-sha256:")
    query = model.encode([items[2]], convert_to_numpy=True)
    scores, ids, metas = index.search(query, k=3)
    assert ids[0, 0] == 2 and metas[0][0]["id"] == "item-2" and scores[0, 0] == pytest.approx(1.0, abs=1e-3)
    loaded = VectorIndex.load(index.save(tmp_path / "nano-index"))
    assert loaded.fingerprint == index.fingerprint
    np.testing.assert_array_equal(loaded.search(query, k=3)[1], ids)
    with pytest.raises(ValueError, match="metadata has 2 entries but there are 10 items"):
        build_index_from_items(model, items, meta[:2])


def test_auto_kind_switches_to_hnsw_at_the_threshold(monkeypatch):
    import vlm2geovec.index as index_module

    monkeypatch.setattr(index_module, "AUTO_EXACT_BELOW", 500)
    assert VectorIndex.build(unit(499, 8), None).kind == "exact"
    big = VectorIndex.build(unit(500, 8), None)
    assert big.kind == "hnsw" and big.params == {"M": 32, "ef_construction": 200, "ef_search": 512}
    with pytest.raises(ValueError, match="no search parameters"):
        VectorIndex.build(unit(10, 8), None, kind="exact").set_search_params(ef_search=10)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_export_parquet_round_trip(tmp_path, kind):
    import pyarrow.parquet as pq

    vectors = unit(300, 16, 3)
    meta = geo_metadata(300)
    meta[5]["label"] = "harbour"  # free metadata travels as JSON
    index = VectorIndex.build(vectors, meta, kind=kind, **({"nlist": 4} if kind == "ivf" else {}))
    table = pq.read_table(index.export_parquet(tmp_path / "v.parquet", batch_rows=128))
    assert table.num_rows == 300 and table.column("row").to_pylist() == list(range(300))
    np.testing.assert_allclose(np.array(table.column("vector").to_pylist(), dtype=np.float32), vectors, atol=1e-6)
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [m["id"] for m in meta] and rows[3]["window"] == [3, 0, 35, 32]
    assert rows[0]["window"] is None and rows[7]["lat"] == pytest.approx(-44.93) and rows[7]["source"] == "scene_1.tif"
    assert json.loads(rows[5]["extra"]) == {"label": "harbour"} and rows[6]["extra"] is None


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_search_restricted_to_a_region_is_exact_within_it(kind):
    vectors, queries = unit(3000, 32, 5), unit(6, 32, 6)
    meta = [{"id": i, "lat": float(lat), "lon": float(lon)} for i, (lat, lon) in enumerate(
        zip(np.linspace(-80, 80, 3000), np.linspace(-179, 179, 3000)[::-1]))]
    meta[7] = {"id": 7}  # no coordinates: never inside a region
    params = {"nlist": 8, "nprobe": 8} if kind == "ivf" else {}  # IVF probing every list: exact
    index = VectorIndex.build(vectors, meta, kind=kind, **params)
    inside = index.ids_within(south=-10, west=-50, north=30, east=60)
    expected_inside = [i for i, m in enumerate(meta) if "lat" in m and -10 <= m["lat"] <= 30 and -50 <= m["lon"] <= 60]
    assert inside.tolist() == expected_inside and 7 not in inside and 0 < len(inside) < 1000
    scores, ids, metas = index.search(queries, 10, allowed_ids=inside)
    ref_scores, ref_local = brute_force(vectors[inside], queries, 10)
    np.testing.assert_array_equal(ids, inside[ref_local])
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert all(-10 <= m["lat"] <= 30 for row in metas for m in row)
    few = index.search(queries[:1], 5, allowed_ids=inside[:3])  # fewer allowed ids than k
    assert sorted(few[1][0][:3].tolist()) == inside[:3].tolist() and few[1][0][3:].tolist() == [-1, -1]
    assert np.isneginf(few[0][0][3:]).all() and few[2][0][3:] == [None, None]


def test_region_crossing_the_antimeridian_and_bad_regions():
    meta = [{"lat": 0.0, "lon": lon} for lon in (-179.5, -10.0, 0.0, 170.0, 179.9)]
    index = VectorIndex.build(unit(5, 8), meta, kind="exact")
    assert index.ids_within(-1, 160, 1, -170).tolist() == [0, 3, 4]
    assert index.ids_within(-1, -20, 1, 5).tolist() == [1, 2]
    with pytest.raises(ValueError, match="south \\(5\\) is north of its north \\(1\\)"):
        index.ids_within(5, 0, 1, 10)
    with pytest.raises(ValueError, match="region west must be a number in \\[-180, 180\\]"):
        index.ids_within(0, -190, 1, 10)
    with pytest.raises(ValueError, match="allowed_ids is empty"):
        index.search(unit(1, 8), 2, allowed_ids=[])
    with pytest.raises(ValueError, match="allowed_ids must be vector ids in 0..4"):
        index.search(unit(1, 8), 2, allowed_ids=[2, 9])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_large_restrictions_go_through_the_faiss_selector(monkeypatch, kind):
    import vlm2geovec.index as index_module

    monkeypatch.setattr(index_module, "EXACT_SUBSET_BELOW", 0)  # force the selector path
    vectors, queries = unit(3000, 32, 8), unit(20, 32, 9)
    params = {"nlist": 8, "nprobe": 8} if kind == "ivf" else {"ef_search": 256}
    index = VectorIndex.build(vectors, None, kind=kind, **params)
    allowed = np.arange(0, 3000, 3)
    _, ids, _ = index.search(queries, 10, allowed_ids=allowed)
    assert (ids % 3 == 0).all() and (ids >= 0).all()
    _, ref_local = brute_force(vectors[allowed], queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids.tolist(), allowed[ref_local].tolist())])
    assert recall == 1.0 if kind == "ivf" else recall >= 0.95


def test_model_fingerprint_covers_every_weight_byte(nano_model):
    """One changed value anywhere (here the last element of the largest tensor, far past any sampled prefix)
    changes the fingerprint; dtype and names count too; bfloat16 weights hash without a float copy."""
    import torch

    from vlm2geovec.index import model_fingerprint

    before = model_fingerprint(nano_model)
    assert model_fingerprint(nano_model) == before  # deterministic
    name, tensor = max(nano_model.state_dict().items(), key=lambda kv: kv[1].numel())
    with torch.no_grad():
        tensor.view(-1)[-1] += 1e-3
    changed = model_fingerprint(nano_model)
    assert changed != before
    with torch.no_grad():
        tensor.view(-1)[-1] -= 1e-3
    assert model_fingerprint(nano_model) == before  # the same bytes again, the same fingerprint

    class Weights:
        def __init__(self, state):
            self.state = state

        def state_dict(self):
            return self.state

    base = {"a": torch.arange(40, dtype=torch.float32).reshape(5, 8), "b": torch.zeros(0)}
    reference = model_fingerprint(Weights(base))
    assert model_fingerprint(Weights({**base, "a": base["a"].to(torch.bfloat16)})) != reference
    assert model_fingerprint(Weights({"c": base["a"], "b": base["b"]})) != reference  # names
    assert model_fingerprint(Weights({**base, "a": base["a"].reshape(8, 5)})) != reference  # shapes
    assert model_fingerprint(Weights({**base, "a": base["a"].t().contiguous().t()})) == reference  # layout: no
    bf16 = base["a"].to(torch.bfloat16).clone()
    bf16_before = model_fingerprint(Weights({"a": bf16}))
    bf16[4, 7] = 1.0
    assert model_fingerprint(Weights({"a": bf16})) != bf16_before
