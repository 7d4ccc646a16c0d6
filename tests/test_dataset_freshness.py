"""A dataset folder rebuilt in place is read as it is now, never from datasets' cache of an earlier build (that cache
is keyed on the folder's file patterns, not on the files: a rebuilt RSMEB-lite was evaluated on old rows)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest


def _folder(tmp_path, values):
    folder = tmp_path / "lite"
    (folder / "data" / "T").mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: T\n  data_files:\n  - split: train\n"
                                      "    path: data/T/train*.parquet\n---\n")
    pq.write_table(pa.table({"text": values}), folder / "data" / "T" / "train-00000.parquet")
    return folder


def test_a_rebuilt_folder_is_read_as_it_is_now(tmp_path):
    from vlm2geovec.data.io import load_dataset_fresh

    folder = _folder(tmp_path, ["a river", "a field", "a town"])
    first = load_dataset_fresh(folder, "T", split="train")
    assert first["text"] == ["a river", "a field", "a town"]
    _folder(tmp_path, ["a harbour", "a dune"])  # same names, new contents
    assert load_dataset_fresh(folder, "T", split="train")["text"] == ["a harbour", "a dune"]
    assert first["text"] == ["a river", "a field", "a town"]  # what was loaded before stays readable


def test_a_rewritten_parquet_file_is_read_as_it_is_now(tmp_path):
    from vlm2geovec.corpus import open_source
    from vlm2geovec.data.io import load_dataset_fresh

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"text": ["a river", "a field"]}), path)
    assert load_dataset_fresh(path)["text"] == ["a river", "a field"]
    pq.write_table(pa.table({"text": ["a dune", "a town"]}), path)  # same name, same size, within the same second
    assert load_dataset_fresh(path)["text"] == ["a dune", "a town"]
    assert len(open_source(path)) == 2


def test_rsmeb_tasks_and_index_inputs_follow_a_rebuild(tmp_path):
    from rsmeb_eval.builders.lite import build_lite
    from rsmeb_eval.dataset_io import load_task, write_dataset
    from vlm2geovec.corpus import open_source

    task = "RSLite-GeoLoc"
    data = build_lite(seed=0)[task]
    folder = write_dataset(tmp_path / "rsmeb-lite", {task: data}, "subset")
    queries, _ = load_task(folder, task)
    assert len(queries) == 250
    fewer = {split: type(part)(**{**part.__dict__, "queries": part.queries[:10]}) for split, part in data.items()}
    write_dataset(tmp_path / "rsmeb-lite", {task: fewer}, "subset")
    queries, _ = load_task(folder, task)
    assert len(queries) == 10
    # `index build --input` on a rebuilt local folder reads the new rows too (its content digests follow them).
    source = open_source(folder, config=task, split="test")
    assert len(source) == 10


_RACE = '''
import multiprocessing as mp, sys

def load(folder, configs, rounds, q):
    from vlm2geovec.data.io import load_dataset_fresh
    try:
        for _ in range(rounds):
            for config in configs:
                rows = load_dataset_fresh(folder, config, split="train")
                assert len(rows) == 20000 and rows[19999]["text"] == f"{config} row 19999"
        q.put("ok")
    except Exception as error:
        q.put(f"{type(error).__name__}: {error}")

if __name__ == "__main__":
    folder, configs, method = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    context = mp.get_context(method)
    q = context.Queue()
    workers = [context.Process(target=load, args=(folder, configs, 12, q)) for _ in range(4)]
    for worker in workers:
        worker.start()
    print([q.get(timeout=300) for _ in workers])
    for worker in workers:
        worker.join()
'''


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_processes_loading_one_folder_side_by_side_all_succeed_and_clean_up(tmp_path, method):
    """Seeds or ranks that read one RSMEB-lite folder at once: re-preparing datasets' shared cache entry deleted it
    under the other readers (FileNotFoundError in 1 of 4 processes, seen with three quickstart seeds). Each load now
    has a cache of its own, removed when its process exits -- a forked child's too."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "lite"
    configs = [f"T{i}" for i in range(4)]
    lines = ["---", "configs:"]
    for config in configs:
        (folder / "data" / config).mkdir(parents=True)
        pq.write_table(pa.table({"text": [f"{config} row {j}" for j in range(20000)]}),
                       folder / "data" / config / "train-00000.parquet")
        lines += [f"- config_name: {config}", "  data_files:", "  - split: train",
                  f"    path: data/{config}/train*.parquet"]
    (folder / "README.md").write_text("\n".join(lines + ["---", ""]))
    script = tmp_path / "race.py"
    script.write_text(_RACE)
    temp, shared = tmp_path / "tmp", tmp_path / "hf-datasets-cache"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "HF_DATASETS_CACHE": str(shared)}
    result = subprocess.run([sys.executable, str(script), str(folder), ",".join(configs), method], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(["ok"] * 4)
    assert list(temp.iterdir()) == []  # every process removed its private cache
    # and nothing of the folder went into datasets' shared cache, where another process could replace it
    assert not (shared / "lite").exists()
