"""Corpus indexing: sources (JSONL, HF datasets, rasters), chunked/sharded/resumable embedding, `index` and
`search` commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, make_image
from vlm2geovec import load_model
from vlm2geovec.cli import main
from vlm2geovec.corpus import (
    DatasetSource,
    build_corpus_index,
    embed_chunks,
    index_from_parts,
    merge_parts,
    open_source,
    parse_shard,
    read_jsonl_records,
)
from vlm2geovec.index import VectorIndex

rasterio = pytest.importorskip("rasterio")


@pytest.fixture(scope="module")
def model(nano_dir):
    return load_model(str(nano_dir), device="cpu")


@pytest.fixture(scope="module")
def neon_tif():
    from vlm2geovec.data.assets import georeferenced_rasters

    return georeferenced_rasters()["neon_OSBS_029"]


@pytest.fixture(scope="module")
def corpus_jsonl(tmp_path_factory):
    """Eight items of every kind; images on disk next to the JSONL file."""
    folder = tmp_path_factory.mktemp("corpus")
    lines = []
    for i in range(4):
        make_image(96 + 16 * i, 80, seed=10 + i).save(folder / f"tile{i}.png")
        lines.append({"item": {"image": f"tile{i}.png"}, "id": f"tile-{i}", "lat": 10.0 + i, "lon": 20.0 - i})
    lines += [
        "a harbour with container ships",
        {"text": "farmland near a river", "coords": [45.5, -73.6]},
        {"image": "tile0.png", "bbox": [10, 10, 60, 50]},
        [{"image": "tile1.png"}, "what is in the north-east corner?"],
    ]
    (folder / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "items.jsonl"


def vectors_of(index: VectorIndex) -> np.ndarray:
    return index.index.reconstruct_n(0, len(index))


def test_jsonl_records_carry_metadata_and_resolve_paths(corpus_jsonl):
    records = read_jsonl_records(corpus_jsonl)
    assert len(records) == 8
    item, meta = records[0]
    assert item == {"image": str(corpus_jsonl.parent / "tile0.png")}
    assert meta == {"id": "tile-0", "lat": 10.0, "lon": 20.0}
    assert records[4] == ("a harbour with container ships", {"id": 5})
    assert records[5][1] == {"id": 6, "lat": 45.5, "lon": -73.6}
    assert records[7][0][0] == {"image": str(corpus_jsonl.parent / "tile1.png")}
    source = open_source(corpus_jsonl)
    assert len(source) == 8 and [m["source"] for _, m in source.read(0, 2)] == [str(corpus_jsonl)] * 2


def test_dataset_source_uses_the_rsmeb_item_columns(tmp_path):
    import datasets

    images = [make_image(64, 64, seed=s) for s in range(3)]
    data = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "image": images, "text": ["x", None, "z"],
                                       "lat": [1.0, 2.0, None], "lon": [3.0, 4.0, None], "label": [0, 1, 2]},
                                      features=datasets.Features({"id": datasets.Value("string"),
                                                                  "image": datasets.Image(),
                                                                  "text": datasets.Value("string"),
                                                                  "lat": datasets.Value("float64"),
                                                                  "lon": datasets.Value("float64"),
                                                                  "label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": data, "test": data}).save_to_disk(tmp_path / "dd")
    with pytest.raises(ValueError, match="has splits \\['train', 'test'\\]: choose one"):
        open_source(tmp_path / "dd")
    with pytest.raises(ValueError, match="has no split 'val'"):
        open_source(tmp_path / "dd", split="val")
    source = open_source(tmp_path / "dd", split="test")
    assert isinstance(source, DatasetSource) and source.item_columns == ("image", "text", "lat", "lon")
    records = list(source.read(0, 3))
    assert [m["id"] for _, m in records] == ["a", "b", "c"]
    first = records[0][0]
    assert first["text"] == "x" and first["coords"] == (1.0, 3.0) and first["image"].size == (64, 64)
    assert records[0][1] == {"id": "a", "source": f"{tmp_path / 'dd'}:test", "lat": 1.0, "lon": 3.0}
    assert set(records[1][0]) == {"image", "coords"} and set(records[2][0]) == {"image", "text"}
    only_images = open_source(tmp_path / "dd", split="train", item_columns=["image"])
    assert all(set(item) == {"image"} for item, _ in only_images.read(0, 3))
    with pytest.raises(ValueError, match="item columns must be among"):
        open_source(tmp_path / "dd", split="train", item_columns=["label"])
    with pytest.raises(ValueError, match="not all of the item columns"):
        open_source(tmp_path / "dd", split="train", item_columns=["bbox"])
    (tmp_path / "pq").mkdir()
    data.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))  # a plain parquet folder: datasets.load_dataset
    from_parquet = open_source(tmp_path / "pq")
    assert from_parquet.name == f"{tmp_path / 'pq'}:train" and len(from_parquet) == 3
    assert [m["id"] for _, m in from_parquet.read(1, 3)] == ["b", "c"]


def test_build_save_load_search_returns_the_same_top_k(model, neon_tif, tmp_path):
    source = open_source(neon_tif, tile_size=100, stride=50)
    assert len(source) == 49
    built = build_corpus_index(model, source, tmp_path / "exact", chunk_size=16, kind="exact",
                               show_progress_bar=False)
    loaded = VectorIndex.load(tmp_path / "exact")
    assert loaded.metadata == built.metadata and len(loaded) == len(built.metadata)
    assert loaded.build_info["source"]["type"] == "raster" and loaded.fingerprint == built.fingerprint
    # the index holds exactly what encoding the tiles directly gives
    tiles = list(source.tiler)
    direct = model.encode([t.image for t in tiles], convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(vectors_of(loaded), direct, atol=1e-5)
    assert [m["window"] for m in loaded.metadata] == [list(t.window) for t in tiles]
    queries = model.encode(["trees", {"coords": (29.6925, -81.9899)}, tiles[7].image], convert_to_numpy=True,
                           normalize_embeddings=True)
    before, after = built.search(queries, 5), loaded.search(queries, 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    brute = np.argsort(-(queries @ direct.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(after[1], brute)
    assert after[1][2][0] == 7 and after[0][2][0] == pytest.approx(1.0, abs=1e-5)  # a tile finds itself first
    hnsw = index_from_parts(tmp_path / "exact", kind="hnsw", M=8, ef_construction=64)  # same parts, new index
    assert hnsw.kind == "hnsw" and VectorIndex.load(tmp_path / "exact").kind == "hnsw"
    np.testing.assert_array_equal(hnsw.search(queries, 5)[1], brute)


def test_shards_and_resume_give_the_single_process_result(model, corpus_jsonl, tmp_path, capsys):
    source = open_source(corpus_jsonl)
    single = build_corpus_index(model, source, tmp_path / "single", chunk_size=3, show_progress_bar=False)
    assert embed_chunks(model, source, tmp_path / "sharded", shard="1/2", chunk_size=3, show_progress_bar=False) == [1]
    with pytest.raises(ValueError, match="2 of 3 chunks are not embedded yet \\(0, 2\\)"):
        merge_parts(tmp_path / "sharded")
    assert embed_chunks(model, source, tmp_path / "sharded", shard=(0, 2), chunk_size=3,
                        show_progress_bar=False) == [0, 2]
    merged = index_from_parts(tmp_path / "sharded")
    np.testing.assert_allclose(vectors_of(merged), vectors_of(single), atol=1e-6)
    assert merged.metadata == single.metadata and merged.fingerprint == single.fingerprint
    # resume: only the missing chunk is embedded again
    (tmp_path / "single" / "parts" / "chunk-000001.npz").unlink()
    assert embed_chunks(model, source, tmp_path / "single", chunk_size=3, show_progress_bar=True) == [1]
    assert "resuming: 2 of 3 chunks already embedded" in capsys.readouterr().err
    np.testing.assert_allclose(merge_parts(tmp_path / "single")[0], vectors_of(single), atol=1e-6)
    with pytest.raises(ValueError, match="holds chunks of different work \\(differs in chunk_size, chunks\\)"):
        embed_chunks(model, source, tmp_path / "single", chunk_size=4, show_progress_bar=False)
    with pytest.raises(ValueError, match="differs in instruction"):
        embed_chunks(model, source, tmp_path / "single", chunk_size=3, instruction="Find", show_progress_bar=False)


def test_parse_shard(monkeypatch):
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3) and parse_shard((0, 4)) == (0, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert parse_shard("auto") == (1, 2)
    for bad in ("3/3", "1/0", "x", "1/2/3", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_cli_index_build_then_search_every_query_kind(nano_dir, corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "index"
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out),
                 "--chunk-size", "3", "--quiet"]) == 0
    assert "wrote VectorIndex(kind='exact', count=8" in capsys.readouterr().out
    image = str(corpus_jsonl.parent / "tile2.png")
    queries = {
        "text": ["--query", "a harbour with container ships"],
        "image": ["--image", image],
        "image+box": ["--image", image, "--bbox", "10,10,60,50"],
        "coords": ["--coords", "45.5,-73.6"],
        "json": ["--item", json.dumps({"text": "farmland near a river", "coords": [45.5, -73.6]})],
    }
    top = {}
    for kind, args in queries.items():
        assert main(["search", "--index", str(out), "-k", "3", "--json", *args]) == 0
        hits = json.loads(capsys.readouterr().out)
        assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
        top[kind] = hits[0]
    # identical items come back first with cosine 1
    assert top["text"]["id"] == 5 and top["text"]["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["image"]["id"] == "tile-2" and top["image"]["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["image"]["lat"] == 12.0 and top["image"]["source"] == str(corpus_jsonl)
    assert top["json"]["id"] == 6 and top["json"]["score"] == pytest.approx(1.0, abs=1e-4)
    assert main(["search", "--index", str(out), "--query", "harbour", "-k", "2"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 and table[0].split()[0] == "1"
    assert main(["index", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 8 and info["build"]["model"] == str(nano_dir)


def test_cli_errors_are_specific(nano_dir, corpus_jsonl, neon_tif, tmp_path, capsys):
    out = tmp_path / "index"
    main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out), "--quiet"])
    capsys.readouterr()
    cases = [
        (["--bbox", "1,2,3,4"], "--bbox marks a region of --image"),
        ([], "give a query"),
        (["--item", "{not json"], "--item is not valid JSON"),
        (["--item", "\"x\"", "--query", "y"], "do not combine it with --query"),
        (["--coords", "95,10"], "coords"),
        (["--bbox", "1,2,3", "--image", "x.png"], "--bbox needs 4 numbers"),
        (["--query", "x", "-k", "0"], "k must be a positive integer"),
        (["--query", "x", "--nprobe", "4"], "has no search parameters \\['nprobe'\\]"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit, match=message):
            main(["search", "--index", str(out), *args])
    with pytest.raises(SystemExit, match="is not a saved VectorIndex"):
        main(["search", "--index", str(tmp_path), "--query", "x"])
    other = tmp_path / "other-model"
    main(["nano", "--out", str(other), "--seed", "1"])
    with pytest.raises(SystemExit, match="is not the model this index was built with"):
        main(["search", "--index", str(out), "--query", "x", "--model", str(other)])
    with pytest.raises(SystemExit, match="--ef-search does not apply to a exact index"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out),
              "--kind", "exact", "--ef-search", "64"])
    with pytest.raises(SystemExit, match="shard must look like i/n"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out),
              "--shard", "first"])
    with pytest.raises(SystemExit, match="input not found"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(tmp_path / "nope.parquet"), "--out", str(out)])
    with pytest.raises(SystemExit, match="raster not found"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(REPO_ROOT / "missing.tif"), "--out", str(out)])
    with pytest.raises(SystemExit, match="--bands must be comma-separated ints; got '4,x'"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(neon_tif), "--bands", "4,x", "--out", str(out)])
    with pytest.raises(SystemExit, match="--scale needs 2 numbers"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(neon_tif), "--scale", "0", "--out", str(out)])
    with pytest.raises(SystemExit, match="band 7 does not exist"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(neon_tif), "--bands", "7", "--out", str(out)])


@pytest.mark.slow
def test_two_torchrun_processes_equal_one(nano_dir, neon_tif, tmp_path):
    """`--shard auto` under torchrun on 2 CPU processes: the merged index equals the single-process one."""
    common = ["index", "build", "--model", str(nano_dir), "--input", str(neon_tif), "--tile-size", "100",
              "--stride", "50", "--chunk-size", "8", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "vlm2geovec.cli", *common, "--out", str(tmp_path / "one")], check=True,
                   env=env, capture_output=True, timeout=600)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "vlm2geovec.cli", *common, "--out", str(tmp_path / "two"), "--shard", "auto"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = VectorIndex.load(tmp_path / "one"), VectorIndex.load(tmp_path / "two")
    assert len(one) == len(two) == 49 and one.metadata == two.metadata
    np.testing.assert_allclose(vectors_of(two), vectors_of(one), atol=1e-6)
    made_by = sorted(p.name for p in (tmp_path / "two" / "parts").glob("chunk-*.npz"))
    assert made_by == [f"chunk-{c:06d}.npz" for c in range(7)]


def test_cli_preprocess_options_reach_the_model(nano_dir, corpus_jsonl, tmp_path, monkeypatch):
    import vlm2geovec.cli as cli

    seen = {}
    real = cli._load_for_encoding

    def spy(args, device):
        model = real(args, device)
        seen.update(workers=model[0].preprocess_workers, backend=model[0].preprocess_backend)
        return model

    monkeypatch.setattr(cli, "_load_for_encoding", spy)
    assert main(["embed", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(tmp_path / "v.npy"),
                 "--preprocess-workers", "1", "--preprocess-backend", "thread", "--quiet"]) == 0
    assert seen == {"workers": 1, "backend": "thread"} and np.load(tmp_path / "v.npy").shape[0] == 8


def test_a_bad_record_is_named_and_finished_chunks_are_kept(model, corpus_jsonl, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = corpus_jsonl.read_text().splitlines()
    lines.insert(5, json.dumps({"item": {"coords": [91.0, 0.0]}, "id": "north-of-the-pole"}))
    bad.write_text("\n".join(lines) + "\n")
    (tmp_path / "tile0.png").symlink_to(corpus_jsonl.parent / "tile0.png")
    for i in (1, 2, 3):
        (tmp_path / f"tile{i}.png").symlink_to(corpus_jsonl.parent / f"tile{i}.png")
    source = open_source(bad)
    with pytest.raises(ValueError, match="bad.jsonl: record id 'north-of-the-pole'.*latitude"):
        build_corpus_index(model, source, tmp_path / "index", chunk_size=3, show_progress_bar=False)
    assert sorted(p.name for p in (tmp_path / "index" / "parts").glob("chunk-*")) == ["chunk-000000.npz"]


def test_cli_search_batches_and_regions(nano_dir, corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "index"
    main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out), "--quiet"])
    capsys.readouterr()
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in ["a harbour with container ships", {"image": "tile3.png"},
                                                           {"coords": [45.5, -73.6], "text": "farmland near a river"}]))
    (tmp_path / "tile3.png").symlink_to(corpus_jsonl.parent / "tile3.png")
    assert main(["search", "--index", str(out), "--queries", str(queries), "-k", "2", "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)
    assert [hits[0]["id"] for hits in batch] == [5, "tile-3", 6] and all(len(hits) == 2 for hits in batch)
    # only tiles 0 and 1 (lat 10, 11; lon 20, 19) lie in the region: fewer hits than k, all inside
    assert main(["search", "--index", str(out), "--query", "a harbour", "-k", "3", "--region", "9,16,11.5,21",
                 "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert sorted(h["id"] for h in hits) == ["tile-0", "tile-1"]
    with pytest.raises(SystemExit, match="no indexed vector has coordinates inside the region"):
        main(["search", "--index", str(out), "--query", "x", "--region", "-60,0,-50,10"])  # negative first value
    assert main(["search", "--index", str(out), "--coords", "-33.86,151.21", "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["rank"] == 1
    with pytest.raises(SystemExit, match="--region needs 4 numbers"):
        main(["search", "--index", str(out), "--query", "x", "--region", "1,2"])
    with pytest.raises(SystemExit, match="do not combine it with a single query"):
        main(["search", "--index", str(out), "--query", "x", "--queries", str(queries)])
    queries.write_text(json.dumps({"coords": [95, 0]}) + "\n")
    with pytest.raises(SystemExit, match="queries.jsonl: query 1"):
        main(["search", "--index", str(out), "--queries", str(queries)])


def test_cli_builds_the_index_once_with_the_requested_kind(nano_dir, corpus_jsonl, tmp_path, monkeypatch):
    kinds = []
    real_build = VectorIndex.build.__func__

    def counting_build(cls, vectors, metadata=None, kind="auto", **kwargs):
        kinds.append(kind)
        return real_build(cls, vectors, metadata, kind=kind, **kwargs)

    monkeypatch.setattr(VectorIndex, "build", classmethod(counting_build))
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(tmp_path / "i"),
                 "--kind", "hnsw", "--M", "8", "--ef-search", "32", "--quiet"]) == 0
    assert kinds == ["hnsw"]
    loaded = VectorIndex.load(tmp_path / "i")
    assert loaded.kind == "hnsw" and loaded.params["M"] == 8 and loaded.params["ef_search"] == 32


class CountingModel:
    """A model whose encode calls are counted (items per call), to see which chunks were embedded again."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, items, **kwargs):
        self.calls.append(list(items))
        return self.model.encode(items, **kwargs)


def test_an_edited_line_re_embeds_only_its_chunk(model, corpus_jsonl, tmp_path, capsys):
    """Same line count, one line edited: the rebuilt index holds the edited item's vector (equal to encoding it
    directly), and only the chunk holding that line is embedded again."""
    folder = tmp_path / "corpus"
    shutil.copytree(corpus_jsonl.parent, folder)
    items = folder / "items.jsonl"
    first = build_corpus_index(model, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    lines = items.read_text().splitlines()
    lines[4] = json.dumps("an airport with two runways")  # position 4: chunk 1 of 3
    items.write_text("\n".join(lines) + "\n")
    counting = CountingModel(model)
    rebuilt = build_corpus_index(counting, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=True)
    assert len(counting.calls) == 1 and "an airport with two runways" in counting.calls[0]
    assert re.search(r"re-embedding chunk 1 \(.*items.jsonl:4 \.\.\.\): its input changed", capsys.readouterr().err)
    direct = model.encode(["an airport with two runways"], convert_to_numpy=True, normalize_embeddings=True)[0]
    vectors = vectors_of(VectorIndex.load(tmp_path / "idx"))
    np.testing.assert_allclose(vectors[4], direct, atol=1e-5)
    np.testing.assert_allclose(np.delete(vectors, 4, axis=0), np.delete(vectors_of(first), 4, axis=0), atol=1e-6)
    assert not np.allclose(vectors[4], vectors_of(first)[4], atol=1e-3)
    assert rebuilt.metadata == first.metadata
    # an untouched input: nothing is embedded again
    counting.calls.clear()
    build_corpus_index(counting, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    assert counting.calls == []
    # a replaced image file (same JSONL bytes) re-embeds the chunks that show it
    make_image(64, 64, seed=99).save(folder / "tile3.png")
    build_corpus_index(counting, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    assert len(counting.calls) == 1 and counting.calls[0][0] == {"image": str(folder / "tile3.png")}
    # an image edited in place with its size and modification time kept (cp -p, sync tools): still re-embedded
    make_image(64, 64, seed=100).save(folder / "tile3.png", compress_level=0)  # stored blocks: size set by the pixels
    build_corpus_index(model, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    before = os.stat(folder / "tile3.png")
    make_image(64, 64, seed=101).save(folder / "tile3.png", compress_level=0)
    os.utime(folder / "tile3.png", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(folder / "tile3.png")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    counting.calls.clear()
    index = build_corpus_index(counting, open_source(items), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    assert len(counting.calls) == 1 and counting.calls[0][0] == {"image": str(folder / "tile3.png")}
    direct = model.encode([{"image": str(folder / "tile3.png")}], convert_to_numpy=True, normalize_embeddings=True)[0]
    position = next(i for i, line in enumerate(items.read_text().splitlines()) if "tile3.png" in line)
    np.testing.assert_allclose(vectors_of(index)[position], direct, atol=1e-5)


def test_an_edited_dataset_row_re_embeds_only_its_chunk(model, tmp_path):
    import datasets

    texts = [f"field number {i}" for i in range(7)]
    datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(7)], "text": texts}).save_to_disk(tmp_path / "a")
    build_corpus_index(model, open_source(tmp_path / "a"), tmp_path / "idx", chunk_size=3, show_progress_bar=False)
    texts[6] = "a flooded quarry"
    datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(7)], "text": texts}).save_to_disk(tmp_path / "b")
    (tmp_path / "a").rename(tmp_path / "old")
    (tmp_path / "b").rename(tmp_path / "a")  # same input path, one row edited
    counting = CountingModel(model)
    index = build_corpus_index(counting, open_source(tmp_path / "a"), tmp_path / "idx", chunk_size=3,
                               show_progress_bar=False)
    assert counting.calls == [[{"text": "a flooded quarry"}]]
    direct = model.encode([{"text": "a flooded quarry"}], convert_to_numpy=True, normalize_embeddings=True)[0]
    np.testing.assert_allclose(vectors_of(index)[6], direct, atol=1e-5)


def test_a_changed_raster_re_embeds_its_chunks(model, neon_tif, tmp_path):
    raster = tmp_path / "scene.tif"
    shutil.copy(neon_tif, raster)
    build_corpus_index(model, open_source(raster, tile_size=100, stride=100), tmp_path / "idx", chunk_size=4,
                       show_progress_bar=False)
    with rasterio.open(raster, "r+") as data:  # one pixel block brighter: the file's bytes change
        block = data.read(1, window=((0, 10), (0, 10)))
        data.write(block + 1, 1, window=((0, 10), (0, 10)))
    counting = CountingModel(model)
    source = open_source(raster, tile_size=100, stride=100)
    index = build_corpus_index(counting, source, tmp_path / "idx", chunk_size=4, show_progress_bar=False)
    assert sum(len(c) for c in counting.calls) == len(source)  # the raster's identity is in every chunk
    direct = model.encode([t.image for t in source.tiler], convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(vectors_of(index), direct, atol=1e-5)


def test_progress_in_a_log_is_one_plain_display(model, corpus_jsonl, tmp_path, capsys):
    """stderr is not a terminal (capsys): a line per update instead of tqdm redraws; the per-chunk encode shows
    no bar of its own."""
    build_corpus_index(model, open_source(corpus_jsonl), tmp_path / "idx", chunk_size=3, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "embedding: 8/8 pos (100%)" in err
    assert not re.search(r"\d+%\|", err)


def test_processor_settings_are_recorded_and_guard_search(nano_dir, tmp_path, capsys):
    """16-bit images: the index records how they were read (image_scale), `search` reads query images the same
    way, and a model whose processor prepares items differently is refused (its vectors are not comparable)."""
    import shutil

    from vlm2geovec.cli import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "corpus"
    folder.mkdir()
    bands = [rng.integers(0, 4000, (48, 64)).astype(np.uint16) for _ in range(3)]
    for i, band in enumerate(bands):
        Image.fromarray(band).save(folder / f"band{i}.png")  # 16-bit grey PNGs (mode I;16)
    (folder / "items.jsonl").write_text("".join(json.dumps({"image": f"band{i}.png"}) + "\n" for i in range(3)))
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(folder / "items.jsonl"), "--out", str(out),
                 "--image-scale", "0,3000", "--quiet"]) == 0
    info = json.loads((out / "index.json").read_text())
    assert info["build"]["preprocessing"]["image_scale"] == [0.0, 3000.0]
    # the stored vector is the one encode gives with that scale
    model = load_model(str(nano_dir), device="cpu")
    model[0].processor.image_scale = [0, 3000]
    expected = model.encode([{"image": str(folder / "band1.png")}], convert_to_numpy=True, normalize_embeddings=True)[0]
    np.testing.assert_allclose(vectors_of(VectorIndex.load(out))[1], expected, atol=1e-5)
    # search with the same image as the query finds it first, read with the index's scale (not auto)
    capsys.readouterr()
    assert main(["search", "--index", str(out), "--image", str(folder / "band1.png"), "-k", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["position"] == 1 and hits[0]["score"] > 0.9999
    # a resumed build with another scale is other work: refused, naming the difference
    with pytest.raises(SystemExit, match=r"differs in preprocessing"):
        main(["index", "build", "--model", str(nano_dir), "--input", str(folder / "items.jsonl"), "--out", str(out),
              "--quiet"])
    # a model whose processor has another pixel budget: its query vectors would not be comparable
    other = tmp_path / "other-model"
    shutil.copytree(nano_dir, other)
    config = json.loads((other / "processor_config.json").read_text())
    config["image_processor"]["size"]["longest_edge"] = 28 * 28 * 16
    (other / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"prepares items differently.*image_processor"):
        main(["search", "--index", str(out), "--model", str(other), "--query", "x"])
