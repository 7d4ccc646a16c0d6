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
