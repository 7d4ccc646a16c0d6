"""RSMEB-lite: real data, every family, disjoint splits, deterministic files, oracle = 1.0, nano ~ chance."""

from __future__ import annotations

import hashlib

import pytest

from rsmeb_eval.dataset_io import load_task, write_dataset
from rsmeb_eval.registry import get_tasks
from rsmeb_eval.schema import FAMILIES, corpus_features, query_features
from tests.test_rsmeb_eval import OracleEncoder

LITE = [t.name for t in get_tasks(lite=True)]


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    from rsmeb_eval.builders.lite import LITE_NOTES, build_lite

    return write_dataset(tmp_path_factory.mktemp("lite") / "rsmeb-lite", build_lite(seed=0), "RSMEB-lite", LITE_NOTES)


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_every_family_and_split_loads_offline_with_exact_features(lite_dir):
    families = set()
    for name in LITE:
        for split in ("train", "test"):
            queries, corpus = load_task(lite_dir, name, split)
            assert queries.features == query_features() and corpus.features == corpus_features()
            assert len(queries) > 0 and len(corpus) > 0, (name, split)
        families.add(get_tasks([name])[0].metadata.family)
    assert families == set(FAMILIES)


def test_train_and_test_are_disjoint_by_place(lite_dir):
    def places(name, split):
        queries, corpus = load_task(lite_dir, name, split)
        ids = set(queries["query_id"]) | set(corpus["id"])
        if name.startswith("S2Lite"):
            return {i.split("_")[1] + "_" + i.split("_")[2] for i in ids if i.startswith("s2_")}  # chip grid cell
        if name.startswith("NEONLite"):
            return {i.split(":")[0] for i in ids if not i.startswith("site:") and "_" in i and ":" in i or i.startswith("NEON")}
        return {i for i in ids if i.startswith("city:")}

    for name in LITE:
        if name in ("NaturalEarth-Coords2Country",):
            continue  # country names are shared on purpose; its queries are cities, checked via Place2Coords ids
        train, test = places(name, "train"), places(name, "test")
        if name.startswith("GeoNames"):
            train_q = set(load_task(lite_dir, name, "train")[0]["query_id"])
            test_q = set(load_task(lite_dir, name, "test")[0]["query_id"])
            assert not train_q & test_q
            continue
        assert not train & test, (name, sorted(train & test)[:5])
    country_train = set(load_task(lite_dir, "NaturalEarth-Coords2Country", "train")[0]["query_id"])
    country_test = set(load_task(lite_dir, "NaturalEarth-Coords2Country", "test")[0]["query_id"])
    assert not country_train & country_test


def test_building_twice_gives_identical_files(lite_dir, tmp_path):
    from rsmeb_eval.builders.lite import LITE_NOTES, build_lite

    again = write_dataset(tmp_path / "again", build_lite(seed=0), "RSMEB-lite", LITE_NOTES)
    assert _digest(again) == _digest(lite_dir)


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
