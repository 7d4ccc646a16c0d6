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
from rsmeb_eval.builders.lite import WINDOW_PIXELS
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


WINDOW = re.compile(r"([A-Z]+\d+)@(\d+)_(\d+)_(\d+)")  # NEON window: source@x_y_size (source-image pixels)


def _places(lite_dir, name, split) -> dict[str, set]:
    """What a task's split is built from, by kind: Sentinel-2 grid cells, Landsat grid cells, NEON windows (as
    pixel rectangles of their source image), GeoNames cities. Read from the ids of queries and corpus items."""
    queries, corpus = load_task(lite_dir, name, split)
    ids = list(queries["query_id"]) + list(corpus["id"])
    places = {"s2": set(), "landsat": set(), "neon": set(), "city": set()}
    for i in ids:
        if m := re.search(r"s2_(r\d+_c\d+)", i):
            places["s2"].add(m.group(1))
        elif m := re.search(r"l8_(r\d+_c\d+)", i):
            places["landsat"].add(m.group(1))
        elif m := WINDOW.search(i):
            places["neon"].add((m.group(1), *(int(v) for v in m.groups()[1:])))
        elif i.startswith("city:"):
            places["city"].add(i)
    return places


def _overlapping(train_windows, test_windows) -> list:
    """Pairs of a train and a test window of the same source image that share at least one pixel."""
    return [(a, b) for a in train_windows for b in test_windows
            if a[0] == b[0] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[3] and b[2] < a[2] + a[3]]


def test_train_and_test_are_disjoint_by_place(lite_dir):
    train_all = {k: set() for k in ("s2", "landsat", "neon", "city")}
    test_all = {k: set() for k in train_all}
    for name in LITE:
        train, test = _places(lite_dir, name, "train"), _places(lite_dir, name, "test")
        # Non-empty: an id scheme the parser above misses would otherwise compare two empty sets.
        assert any(train.values()) and any(test.values()), name
        for kind in train:
            train_all[kind] |= train[kind]
            test_all[kind] |= test[kind]
    # Across all tasks: no grid cell or city of any train split in any test split...
    for kind in ("s2", "landsat", "city"):
        assert train_all[kind] and test_all[kind], kind
        assert not train_all[kind] & test_all[kind], (kind, sorted(train_all[kind] & test_all[kind])[:5])
    # ... and no pixel of a test NEON window in any train window (so no test crown is seen in training).
    assert len(train_all["neon"]) > 100 and len(test_all["neon"]) > 100
    assert {w[0] for w in test_all["neon"]} == {"OSBS029", "SOAP061", "YELL528", "YELL541"}  # every image
    assert not _overlapping(train_all["neon"], test_all["neon"])


def test_sentinel2_splits_keep_a_buffer_row_and_the_same_mix_of_cover(lite_dir):
    from collections import Counter

    cells = {split: set() for split in ("train", "test")}
    for name in ("S2Lite-SceneCls", "S2Lite-T2I", "S2Lite-Neighbour", "S2Lite-VQA", "RSLite-GeoLoc"):
        for split in cells:
            cells[split] |= {tuple(int(v) for v in re.findall(r"\d+", c)) for c in _places(lite_dir, name, split)["s2"]}
    assert len(cells["train"]) >= 500 and len(cells["test"]) >= 250
    # A buffer: no train chip touches a test chip, not even at a corner.
    assert min(max(abs(a[0] - b[0]), abs(a[1] - b[1])) for a in cells["train"] for b in cells["test"]) >= 2
    # Both splits cross the scene from land to sea: the share of each class differs by at most 0.1 (a split by
    # column gave a training set 78% water against 9% in test).
    shares = {}
    for split in cells:
        queries, _ = load_task(lite_dir, "S2Lite-SceneCls", split)
        counts = Counter(q["positive_ids"][0] for q in queries)
        shares[split] = {label: counts[label] / len(queries) for label in ("water", "vegetation", "bare", "mixed")}
    assert all(abs(shares["train"][k] - shares["test"][k]) <= 0.1 for k in shares["train"]), shares


def test_the_overlap_check_finds_shared_pixels():
    assert _overlapping({("YELL528", 1000, 0, 300)}, {("YELL528", 1200, 200, 200)})  # 100 x 100 px shared
    assert not _overlapping({("YELL528", 1000, 0, 200)}, {("YELL528", 1200, 0, 200)})  # touching edges only
    assert not _overlapping({("YELL541", 1000, 0, 300)}, {("YELL528", 1200, 200, 200)})  # other image


# Test queries per task, pinned: every RSMEB-lite task has at least 200 (so P@1 is known to about +-0.06).
TEST_QUERIES = {"S2Lite-SceneCls": 270, "S2Lite-T2I": 270, "S2Lite-Neighbour": 221, "S2Lite-VQA": 759,
                "NEONLite-RefExp": 360, "NEONLite-RegionCaption": 360, "RSLite-GeoLoc": 250,
                "GeoNames-Place2Coords": 400, "NaturalEarth-Coords2Country": 383}


def test_task_sizes_are_pinned_and_large_enough(lite_dir):
    sizes = {name: len(load_task(lite_dir, name, "test")[0]) for name in LITE}
    assert sizes == TEST_QUERIES
    assert min(sizes.values()) >= 200
    train = {name: len(load_task(lite_dir, name, "train")[0]) for name in LITE}
    assert min(train.values()) >= 400, train


def test_grounding_and_geoloc_labels_are_true_by_construction(lite_dir):
    from collections import Counter

    queries, corpus = load_task(lite_dir, "NEONLite-RefExp", "test")
    boxes = {row["id"]: row["bbox"][0] for row in corpus}
    kinds = Counter()
    for q in queries:
        centres = {c: ((boxes[c][0] + boxes[c][2]) / 2, (boxes[c][1] + boxes[c][3]) / 2) for c in q["candidate_ids"]}
        target = q["positive_ids"][0]
        if q["text"] == "the leftmost tree crown":  # the target is the leftmost of the candidates too
            assert min(centres, key=lambda c: centres[c][0]) == target
            kinds["leftmost"] += 1
        if q["text"] == "the bottommost tree crown":
            assert max(centres, key=lambda c: centres[c][1]) == target
            kinds["bottommost"] += 1
    assert kinds["leftmost"] >= 10 and kinds["bottommost"] >= 10
    queries, _ = load_task(lite_dir, "NEONLite-RegionCaption", "test")
    checked = 0
    for q in queries:
        x1, y1, x2, y2 = q["bbox"][0]
        cx, cy = (x1 + x2) / 2 / WINDOW_PIXELS, (y1 + y2) / 2 / WINDOW_PIXELS  # boxes: stored image's pixels
        if min(abs(v - t) for v in (cx, cy) for t in (1 / 3, 2 / 3)) < 1e-4:
            continue  # the file holds float32 boxes; the label came from the float64 box, a hair away from a line
        row = "upper" if cy < 1 / 3 else "lower" if cy >= 2 / 3 else "middle"
        col = "left" if cx < 1 / 3 else "right" if cx >= 2 / 3 else "centre"
        where = "centre" if (row, col) == ("middle", "centre") else f"{row}_{col}"
        assert q["positive_ids"][0].endswith(f"_in_the_{where}_of_the_image"), (q["query_id"], q["positive_ids"])
        checked += 1
    assert checked >= 340
    queries, corpus = load_task(lite_dir, "RSLite-GeoLoc", "test")
    per_place = Counter(q["positive_ids"][0] for q in queries)
    assert per_place == {f"place:{p}": 50 for p in ("s2", "landsat", "OSBS", "SOAP", "YELL")}
    places = {row["id"]: (row["lat"], row["lon"]) for row in corpus}
    assert 37 < places["place:s2"][0] < 38.5 and 29.5 < places["place:OSBS"][0] < 30  # Virginia; Florida


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
