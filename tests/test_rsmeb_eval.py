"""The evaluation harness on a small real-format dataset folder: oracle = 1.0, caching, reports, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rsmeb_eval.dataset_io import TaskData, load_task, write_dataset
from rsmeb_eval.encoders import item_key
from rsmeb_eval.evaluator import evaluate
from rsmeb_eval.report import write_report
from rsmeb_eval.registry import get_task
from rsmeb_eval.schema import row_to_item
from tests.conftest import make_image


class OracleEncoder:
    """Sees the answers: corpus item j -> e_j, query -> sum of its positives' e_j. Must score 1.0."""


    name = "oracle"
    fingerprint = "oracle-v1"

    def __init__(self, data_dir, tasks, split="test"):
        self.vectors: dict[str, np.ndarray] = {}
        ids: dict[str, int] = {}
        rows = []
        for task in tasks:
            queries, corpus = task.load(data_dir, split)
            meta = task.metadata
            for row in corpus:
                ids.setdefault(f"{task.name}/{row['id']}", len(ids))
            rows.append((task, meta, queries, corpus))
        self.dim = len(ids)
        for task, meta, queries, corpus in rows:
            for row in corpus:
                self._put(row_to_item(row), meta.candidate_instruction, [ids[f"{task.name}/{row['id']}"]])
            for row in queries:
                self._put(row_to_item(row), meta.query_instruction, [ids[f"{task.name}/{p}"] for p in row["positive_ids"]])
        self.calls = 0

    def _put(self, item, instruction, hot):
        # Identical inputs (e.g. one templated caption for several chips) share a vector: the union of their
        # answers. Each candidate list holds only one of them, so the union still ranks its positive first.
        key = item_key(item, instruction)
        vector = self.vectors.setdefault(key, np.zeros(self.dim, dtype=np.float32))
        vector[hot] = 1.0

    def supports(self, modalities):
        return True

    def encode(self, items, instruction, batch_size=16, show_progress_bar=False):
        self.calls += len(items)
        return np.stack([self.vectors[item_key(item, instruction)] for item in items])


class ConstantEncoder:
    name, fingerprint = "constant", None

    def supports(self, modalities):
        return True

    def encode(self, items, instruction, batch_size=16, show_progress_bar=False):
        return np.ones((len(items), 4), dtype=np.float32)


class ImageTextOnlyEncoder(ConstantEncoder):
    """A dual encoder's view: it cannot embed boxes or coordinates."""

    name = "dual"

    def supports(self, modalities):
        return set(modalities) <= {"image", "text"} and len(modalities) == 1


def tiny_tasks():
    """Two tasks in the real storage format: scene classification and region-caption grounding."""
    tiles = [make_image(64, 64, seed) for seed in range(6)]
    classes = ["water", "vegetation", "bare"]
    scene = TaskData(
        queries=[{"query_id": f"chip{i}", "image": tiles[i], "candidate_ids": classes,
                  "positive_ids": [classes[i % 3]]} for i in range(6)],
        corpus=[{"id": c, "text": f"a satellite image of {c}"} for c in classes],
    )
    boxes = [[0, 0, 20, 20], [30, 30, 60, 60], [5, 40, 25, 62]]
    captions = ["upper left crown", "lower right crown", "lower left crown"]
    region = TaskData(
        queries=[{"query_id": f"t{t}b{b}", "image": tiles[t], "bbox": [boxes[b]],
                  "candidate_ids": [f"cap{k}" for k in range(3)], "positive_ids": [f"cap{b}"]}
                 for t in range(2) for b in range(3)],
        corpus=[{"id": f"cap{k}", "text": captions[k]} for k in range(3)],
    )
    return {"S2Lite-SceneCls": {"test": scene, "train": scene},
            "NEONLite-RegionCaption": {"test": region}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rsmeb") / "data"
    write_dataset(folder, tiny_tasks(), title="RSMEB test")
    return folder


def test_dataset_folder_loads_offline_with_exact_features(data_dir):
    from rsmeb_eval.schema import corpus_features, query_features

    queries, corpus = load_task(data_dir, "NEONLite-RegionCaption", "test")
    assert queries.features == query_features() and corpus.features == corpus_features()
    assert queries[0]["bbox"] == [[0.0, 0.0, 20.0, 20.0]] and queries[0]["lat"] is None
    assert queries[0]["image"].size == (64, 64)
    card = (data_dir / "README.md").read_text()
    assert "config_name: NEONLite-RegionCaption-corpus" in card and "reconstruction" in card


def test_oracle_scores_one_and_constant_scores_zero(data_dir):
    tasks = [get_task("S2Lite-SceneCls"), get_task("NEONLite-RegionCaption")]
    oracle = OracleEncoder(data_dir, tasks)
    results = evaluate(oracle, data_dir, tasks=tasks, show_progress_bar=False)
    assert all(r["p@1"] == 1.0 for r in results["tasks"].values())
    assert results["overall"] == 1.0
    assert results["tasks"]["S2Lite-SceneCls"]["chance"] == pytest.approx(1 / 3)
    constant = evaluate(ConstantEncoder(), data_dir, tasks=tasks, show_progress_bar=False)
    assert constant["overall"] == 0.0  # ties count against the model


def test_unsupported_tasks_are_reported_not_dropped(data_dir):
    results = evaluate(ImageTextOnlyEncoder(), data_dir, show_progress_bar=False)
    region = results["tasks"]["NEONLite-RegionCaption"]
    assert region["status"] == "unsupported" and "image+bbox" in region["reason"]
    assert results["tasks"]["S2Lite-SceneCls"]["status"] == "ok"
    assert "grounding" not in results["families"]


def test_each_unique_input_is_embedded_once_and_cached(data_dir, tmp_path):
    tasks = [get_task("S2Lite-SceneCls"), get_task("NEONLite-RegionCaption")]
    oracle = OracleEncoder(data_dir, tasks)
    first = evaluate(oracle, data_dir, tasks=tasks, cache_dir=tmp_path / "cache", show_progress_bar=False)
    # 6 chips + 3 class texts; 6 region queries + 3 captions: each distinct input once.
    assert oracle.calls == 18
    assert first["tasks"]["S2Lite-SceneCls"]["embedded"] == 9
    second = evaluate(oracle, data_dir, tasks=tasks, cache_dir=tmp_path / "cache", show_progress_bar=False)
    assert oracle.calls == 18  # nothing recomputed
    assert second["tasks"] == {k: {**v, "embedded": 0, "reused": v["embedded"] + v["reused"]} for k, v in first["tasks"].items()}


def test_reports_and_determinism(data_dir, tmp_path):
    tasks = [get_task("S2Lite-SceneCls"), get_task("NEONLite-RegionCaption")]
    results = evaluate(OracleEncoder(data_dir, tasks), data_dir, tasks=tasks, show_progress_bar=False)
    paths = write_report(results, tmp_path / "out")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["overall"] == 1.0 and set(loaded["tasks"]) == {t.name for t in tasks}
    # an oracle is right on every query: its bootstrap interval is the single point 1.000
    assert "| S2Lite-SceneCls | scene_classification | p@1 | 1.000 | 1.000–1.000 | 0.333 | 6 |" in paths["markdown"].read_text()
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = evaluate(OracleEncoder(data_dir, tasks), data_dir, tasks=tasks, show_progress_bar=False)
    assert again == results


def test_nano_model_through_the_cli(nano_dir, data_dir, tmp_path, capsys):
    from vlm2geovec.cli import main

    out = tmp_path / "eval"
    assert main(["rsmeb", "eval", "--model", str(nano_dir), "--data", str(data_dir), "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == nano_dir.name
    for result in results["tasks"].values():
        assert 0.0 <= result["p@1"] <= 1.0 and result["n_queries"] > 0
    assert (out / "embedding_cache" / "embeddings.sqlite").is_file()
    assert main(["rsmeb", "eval", "--model", str(nano_dir), "--data", str(data_dir), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "results.json").read_text())["tasks"]["S2Lite-SceneCls"]["embedded"] == 0


def test_publish_dry_run_lists_files(data_dir, capsys):
    from vlm2geovec.cli import main

    assert main(["rsmeb", "publish", "--data", str(data_dir), "--repo-id", "org/rsmeb-test", "--dry-run"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["repo_type"] == "dataset" and "README.md" in listing["files"]
    assert "data/S2Lite-SceneCls/test.parquet" in listing["files"]


class HashEncoder(ConstantEncoder):
    """Deterministic pseudo-random vectors: a model-like, non-trivial ranking."""

    name, fingerprint = "hash", "hash-v1"

    def encode(self, items, instruction, batch_size=16, show_progress_bar=False):
        rows = []
        for item in items:
            seed = int(item_key(item, instruction)[:12], 16)
            vector = np.random.default_rng(seed).normal(size=16)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows).astype(np.float32)


def test_evaluate_metric_module_gives_the_harness_numbers(data_dir):
    import evaluate as hf_evaluate

    from tests.conftest import REPO_ROOT

    metric = hf_evaluate.load(str(REPO_ROOT / "rsmeb_eval" / "evaluate_metric" / "rsmeb_ranking.py"))
    encoder = HashEncoder()
    harness = evaluate(encoder, data_dir, show_progress_bar=False)
    for name in ("S2Lite-SceneCls", "NEONLite-RegionCaption"):
        task = get_task(name)
        queries, corpus = task.load(data_dir, "test")
        q = encoder.encode([row_to_item(r) for r in queries], task.metadata.query_instruction)
        c = encoder.encode([row_to_item(r) for r in corpus], task.metadata.candidate_instruction)
        index = {cid: i for i, cid in enumerate(corpus["id"])}
        predictions, references = [], []
        for row, (candidates, positives) in enumerate(zip(queries["candidate_ids"], queries["positive_ids"])):
            predictions.append([float(q[row] @ c[index[cid]]) for cid in candidates])
            references.append([candidates.index(p) for p in positives])
        computed = metric.compute(predictions=predictions, references=references)
        assert computed["p@1"] == pytest.approx(harness["tasks"][name]["p@1"])
        assert computed["mrr"] == pytest.approx(harness["tasks"][name]["mrr"])
        assert computed["n_queries"] == harness["tasks"][name]["n_queries"]
    assert 0 < np.mean([r["mrr"] for r in harness["tasks"].values()]) < 1  # a real, non-trivial ranking
    with pytest.raises(ValueError, match="do not fit"):
        metric.compute(predictions=[[0.1, 0.2]], references=[[5]])
