"""RSMEB-lite: real data, every family, disjoint splits, deterministic files, oracle = 1.0, nano ~ chance."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from rsmeb_eval.dataset_io import load_task, write_dataset
from rsmeb_eval.registry import get_tasks
from rsmeb_eval.schema import FAMILIES, corpus_features, query_features
from tests.conftest import REPO_ROOT
from tests.test_rsmeb_eval import OracleEncoder

LITE = [t.name for t in get_tasks(lite=True)]


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    from rsmeb_eval.builders.lite import LITE_NOTES, build_lite

    return write_dataset(tmp_path_factory.mktemp("lite") / "rsmeb-lite", build_lite(seed=0), "RSMEB-lite", LITE_NOTES)


def test_every_family_and_split_loads_offline_with_exact_features(lite_dir):
    families = set()
    for name in LITE:
        for split in ("train", "test"):
            queries, corpus = load_task(lite_dir, name, split)
            assert queries.features == query_features() and corpus.features == corpus_features()
            assert len(queries) > 0 and len(corpus) > 0, (name, split)
        families.add(get_tasks([name])[0].metadata.family)
    assert families == set(FAMILIES)


def _places(lite_dir, name, split) -> set[str]:
    """The places a task's split is built from: Sentinel-2 grid cells, NEON tiles, GeoNames cities."""
    queries, corpus = load_task(lite_dir, name, split)
    ids = list(queries["query_id"]) + list(corpus["id"])
    if name.startswith("S2Lite"):  # s2_r01_c11, s2_r01_c11_east, s2_r00_c00_caption -> r01_c11
        return {m.group(1) for i in ids if (m := re.match(r"s2_(r\d+_c\d+)", i))}
    if name.startswith("NEONLite"):  # GeoLoc queries are tile names; RefExp/RegionCaption ids are tile:box
        corpus_tiles = {i.split(":")[0] for i in corpus["id"] if ":" in i and not i.startswith("site:")}
        return {i.split(":")[0] for i in queries["query_id"]} | corpus_tiles
    return {i for i in ids if i.startswith("city:")}  # country names are shared by both splits on purpose


def test_train_and_test_are_disjoint_by_place(lite_dir):
    by_kind = {"s2": ({}, {}), "neon": ({}, {}), "city": ({}, {})}
    for name in LITE:
        kind = "s2" if name.startswith("S2Lite") else "neon" if name.startswith("NEONLite") else "city"
        train, test = _places(lite_dir, name, "train"), _places(lite_dir, name, "test")
        # Non-empty: an id scheme the parser above misses would otherwise compare two empty sets.
        assert train and test, (name, len(train), len(test))
        assert not train & test, (name, sorted(train & test)[:5])
        by_kind[kind][0][name], by_kind[kind][1][name] = train, test
    # Across tasks too: no place in any task's train split is in any task's test split.
    for kind, (train, test) in by_kind.items():
        train_all, test_all = set().union(*train.values()), set().union(*test.values())
        assert not train_all & test_all, (kind, sorted(train_all & test_all)[:5])
    assert len(by_kind["neon"][1]["NEONLite-GeoLoc"]) == 9  # 9 test tiles (OSBS and the east third of YELL)


def _file_hashes(folder) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


_BUILD = """
import sys
from rsmeb_eval.builders.lite import LITE_NOTES, build_lite
from rsmeb_eval.dataset_io import write_dataset
write_dataset(sys.argv[1], build_lite(seed=0), "RSMEB-lite", LITE_NOTES)
"""


@pytest.mark.slow
def test_building_twice_gives_identical_files_across_processes(lite_dir, tmp_path):
    # Separate interpreters with different string-hash seeds: any order that leaks from a set or dict of
    # strings into the files would show up here and not within one process.
    import subprocess
    import sys

    hashes = {}
    for hash_seed in ("1", "2"):
        out = tmp_path / f"hashseed-{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        subprocess.run([sys.executable, "-c", _BUILD, str(out)], env=env, check=True, timeout=600,
                       cwd=REPO_ROOT, capture_output=True)
        hashes[hash_seed] = _file_hashes(out)
    here = _file_hashes(lite_dir)
    assert len(here) > 9 * 2 and any(name.endswith(".parquet") for name in here)
    for hash_seed, theirs in hashes.items():
        differing = sorted(name for name in here.keys() | theirs.keys() if here.get(name) != theirs.get(name))
        assert not differing, (hash_seed, differing[:5])


def test_oracle_scores_one_on_every_lite_task(lite_dir):
    from rsmeb_eval.evaluator import evaluate

    tasks = get_tasks(lite=True)
    results = evaluate(OracleEncoder(lite_dir, tasks), lite_dir, tasks=tasks, show_progress_bar=False)
    assert {name: r["p@1"] for name, r in results["tasks"].items()} == {name: 1.0 for name in LITE}
    assert results["overall"] == 1.0


@pytest.mark.slow
def test_untrained_nano_scores_near_chance(lite_dir, nano_dir, tmp_path):
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    from rsmeb_eval.evaluator import evaluate

    first = evaluate(SentenceTransformerEncoder(nano_dir), lite_dir, cache_dir=tmp_path / "cache", show_progress_bar=False)
    margins = {name: r["score"] - r["chance"] for name, r in first["tasks"].items()}
    assert sum(margins.values()) / len(margins) <= 0.05, margins
    assert max(margins.values()) <= 0.25, margins  # small tasks (a few dozen queries) can be lucky
    again = evaluate(SentenceTransformerEncoder(nano_dir), lite_dir, cache_dir=tmp_path / "cache", show_progress_bar=False)
    assert {k: v["score"] for k, v in again["tasks"].items()} == {k: v["score"] for k, v in first["tasks"].items()}
    assert all(r["embedded"] == 0 for r in again["tasks"].values())  # second run: everything from the cache
