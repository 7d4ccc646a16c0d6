"""Run RSMEB tasks on an encoder: embed each unique input once (cached), score, and aggregate.

Aggregation: a task's score is its ``main_score``; a family's score is the mean of its tasks; ``overall`` is
the mean of the families (macro), so a family with many tasks does not dominate.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np

from rsmeb_eval.cache import EmbeddingCache
from rsmeb_eval.dataset_io import has_task
from rsmeb_eval.encoders import Encoder, item_key
from rsmeb_eval.metrics import candidate_metrics, corpus_metrics
from rsmeb_eval.registry import get_tasks
from rsmeb_eval.schema import FAMILIES, row_to_item
from rsmeb_eval.tasks.base import RSMEBTask


def _rows_to_items(dataset) -> list[dict[str, Any]]:
    return [row_to_item(row) for row in dataset]


def embed_unique(
    encoder: Encoder,
    items: list[dict[str, Any]],
    instruction: str | None,
    cache: EmbeddingCache | None,
    batch_size: int,
    show_progress_bar: bool,
    stats: dict[str, int],
) -> np.ndarray:
    """Embeddings for `items`, computing each distinct (item, instruction) once and reusing the cache."""
    keys = [item_key(item, instruction) for item in items]
    unique: dict[str, dict[str, Any]] = {}
    for key, item in zip(keys, items):
        unique.setdefault(key, item)
    use_cache = cache is not None and encoder.fingerprint is not None
    known = cache.get_many(encoder.fingerprint, list(unique)) if use_cache else {}
    todo = [key for key in unique if key not in known]
    if todo:
        vectors = encoder.encode([unique[k] for k in todo], instruction, batch_size=batch_size,
                                 show_progress_bar=show_progress_bar)
        computed = dict(zip(todo, vectors))
        if use_cache:
            cache.put_many(encoder.fingerprint, computed)
        known.update(computed)
    stats["embedded"] += len(todo)
    stats["reused"] += len(items) - len(todo)
    matrix = np.stack([known[k] for k in keys]).astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.clip(norms, 1e-12, None)


def evaluate_task(
    encoder: Encoder,
    task: RSMEBTask,
    data_dir: str | os.PathLike,
    split: str = "test",
    cache: EmbeddingCache | None = None,
    batch_size: int = 16,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    meta = task.metadata
    result: dict[str, Any] = {"family": meta.family, "main_score": meta.main_score, "split": split}
    if not (encoder.supports(meta.query_modalities) and encoder.supports(meta.candidate_modalities)):
        result["status"] = "unsupported"
        result["reason"] = (f"{encoder.name} cannot embed {'+'.join(meta.query_modalities)} queries or "
                            f"{'+'.join(meta.candidate_modalities)} candidates")
        return result
    queries, corpus = task.load(data_dir, split)
    stats = {"embedded": 0, "reused": 0}
    query_vectors = embed_unique(encoder, _rows_to_items(queries), meta.query_instruction, cache, batch_size,
                                 show_progress_bar, stats)
    corpus_vectors = embed_unique(encoder, _rows_to_items(corpus), meta.candidate_instruction, cache, batch_size,
                                  show_progress_bar, stats)
    scores = query_vectors @ corpus_vectors.T
    index = {cid: i for i, cid in enumerate(corpus["id"])}
    positives = queries["positive_ids"]
    result.update(status="ok", n_queries=len(queries), n_corpus=len(corpus), **stats)
    if "candidates" in meta.protocol:
        per_query_scores, per_query_positive = [], []
        for row, (candidates, positive) in enumerate(zip(queries["candidate_ids"], positives)):
            columns = [index[c] for c in candidates]
            per_query_scores.append(scores[row, columns])
            positive_set = set(positive)
            per_query_positive.append(np.array([c in positive_set for c in candidates]))
        metrics = candidate_metrics(per_query_scores, per_query_positive)
        result.update(metrics)
        result["n_candidates_mean"] = float(np.mean([len(c) for c in queries["candidate_ids"]]))
        result["chance"] = metrics["chance_p@1"]
    if "corpus" in meta.protocol:
        relevant = np.zeros(scores.shape, dtype=bool)
        for row, positive in enumerate(positives):
            relevant[row, [index[p] for p in positive]] = True
        corpus_result = corpus_metrics(scores, relevant)
        result["corpus"] = corpus_result
        if meta.main_score in corpus_result:
            result["chance"] = corpus_result.get(f"chance_{meta.main_score}")
    result["score"] = result[meta.main_score] if meta.main_score in result else result["corpus"][meta.main_score]
    return result


def evaluate(
    encoder: Encoder,
    data_dir: str | os.PathLike,
    tasks: list[RSMEBTask] | list[str] | None = None,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    show_progress_bar: bool = True,
) -> dict[str, Any]:
    """Evaluate `encoder` on `tasks` (default: every task whose data is in `data_dir`)."""
    from tqdm.auto import tqdm

    if tasks is None:
        tasks = [t for t in get_tasks() if has_task(data_dir, t.name)]
        if not tasks:
            raise ValueError(f"{data_dir}: no RSMEB task data found (expected data/<task>/<split>.parquet)")
    tasks = [t if isinstance(t, RSMEBTask) else get_tasks([t])[0] for t in tasks]
    for task in tasks:
        if not has_task(data_dir, task.name):
            raise ValueError(f"{data_dir}: no data for task {task.name!r}")
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    results: dict[str, Any] = {"model": encoder.name, "split": split, "tasks": {}}
    try:
        for task in tqdm(tasks, desc="RSMEB tasks", disable=not show_progress_bar):
            results["tasks"][task.name] = evaluate_task(encoder, task, data_dir, split, cache, batch_size,
                                                        show_progress_bar)
    finally:
        if cache is not None:
            cache.close()
    by_family: dict[str, list[float]] = defaultdict(list)
    for task_result in results["tasks"].values():
        if task_result["status"] == "ok":
            by_family[task_result["family"]].append(task_result["score"])
    results["families"] = {f: float(np.mean(by_family[f])) for f in FAMILIES if by_family[f]}
    results["overall"] = float(np.mean(list(results["families"].values()))) if results["families"] else None
    chance_family: dict[str, list[float]] = defaultdict(list)
    for task_result in results["tasks"].values():
        if task_result["status"] == "ok" and task_result.get("chance") is not None:
            chance_family[task_result["family"]].append(task_result["chance"])
    results["families_chance"] = {f: float(np.mean(v)) for f, v in chance_family.items()}
    return results
