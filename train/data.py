"""Training rows from an RSMEB dataset folder's `train` split: (anchor, positive, negatives..., label).

Each task becomes one dataset of a `DatasetDict`, so the sentence-transformers trainer draws every batch from
one task ("homogeneous" batches, as in VLM2Vec) and applies that task's instructions as per-column prompts.
Items are stored in the processor's own format (`image`, `text`, `bbox`, `coords`; absent = None). The
``label`` column holds one content id per item column, so identical items count as positives in the loss.
"""

from __future__ import annotations

import os
import random
from typing import Any

NEGATIVE_COLUMN = "negative_{}"


def item_features():
    from datasets import Image, List, Value

    return {"image": Image(), "text": Value("string"), "bbox": List(List(Value("float32"), length=4)),
            "coords": List(Value("float64"), length=2)}


def row_to_training_item(row: dict[str, Any]) -> dict[str, Any]:
    coords = [row["lat"], row["lon"]] if row.get("lat") is not None else None
    return {"image": row.get("image"), "text": row.get("text"), "bbox": row.get("bbox") or None, "coords": coords}


def content_id(item: dict[str, Any]) -> int:
    """The item's content hash (the evaluation cache's key, without instruction) as an int64 label."""
    from rsmeb_eval.encoders import item_key

    return int(item_key(item, None)[:15], 16)


def task_training_rows(task, data_dir: str | os.PathLike, n_negatives: int = 1, seed: int = 0,
                       max_rows: int | None = None) -> list[dict[str, Any]]:
    """Rows of one task's train split: the query, its first positive, and hard negatives from its candidates."""
    queries, corpus = task.load(data_dir, "train")
    by_id = {row["id"]: row for row in corpus}
    rng = random.Random(f"{seed}|{task.name}")
    rows = []
    for query in queries:
        negatives_pool = [c for c in query["candidate_ids"] if c not in set(query["positive_ids"])]
        if len(negatives_pool) < n_negatives:
            continue
        items = [row_to_training_item(query), row_to_training_item(by_id[query["positive_ids"][0]])]
        items += [row_to_training_item(by_id[c]) for c in rng.sample(negatives_pool, n_negatives)]
        row = {"anchor": items[0], "positive": items[1]}
        row.update({NEGATIVE_COLUMN.format(i + 1): item for i, item in enumerate(items[2:])})
        row["label"] = [content_id(item) for item in items[1:]]
        rows.append(row)
    rng.shuffle(rows)
    return rows[:max_rows] if max_rows else rows


def training_datasets(data_dir: str | os.PathLike, task_names: list[str] | None = None, n_negatives: int = 1,
                      seed: int = 0, max_rows_per_task: int | None = None):
    """`(DatasetDict, prompts)` for `SentenceTransformerTrainer`: one dataset and one prompt map per task."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    from rsmeb_eval.dataset_io import has_task
    from rsmeb_eval.registry import get_tasks

    tasks = get_tasks(task_names) if task_names else [t for t in get_tasks() if has_task(data_dir, t.name)]
    item = item_features()
    columns = {"anchor": item, "positive": item, **{NEGATIVE_COLUMN.format(i + 1): item for i in range(n_negatives)}}
    features = Features({**columns, "label": List(Value("int64"))})
    datasets, prompts = {}, {}
    for task in tasks:
        rows = task_training_rows(task, data_dir, n_negatives, seed, max_rows_per_task)
        if not rows:
            continue
        datasets[task.name] = Dataset.from_list(rows, features=features)
        meta = task.metadata
        prompts[task.name] = {"anchor": meta.query_instruction, "positive": meta.candidate_instruction or "",
                              **{NEGATIVE_COLUMN.format(i + 1): meta.candidate_instruction or "" for i in range(n_negatives)}}
    if not datasets:
        raise ValueError(f"{data_dir}: no training rows (is there a train split?)")
    return DatasetDict(datasets), prompts
