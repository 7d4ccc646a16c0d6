"""Training rows from an RSMEB dataset folder's `train` split: (anchor, positive, negatives..., label).

Each task becomes one dataset of a `DatasetDict`, so the sentence-transformers trainer draws every batch from
one task ("homogeneous" batches, as in VLM2Vec) and applies that task's instructions as per-column prompts.
Items are stored in the processor's own format (`image`, `text`, `bbox`, `coords`; absent = None). The
``label`` column holds one content id per item column, so identical items count as positives in the loss.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
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


def per_task(setting: int | Mapping[str, int] | None, task_name: str, what: str) -> int | None:
    """A setting given for every task (an int or None) or per task (``{task: value, "*": default}``)."""
    if setting is None or isinstance(setting, int):
        return setting
    if not isinstance(setting, Mapping):
        raise ValueError(f"{what}: expected an int or a mapping task -> int, got {setting!r}")
    value = setting.get(task_name, setting.get("*"))
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{what}[{task_name!r}]: expected a non-negative int, got {value!r}")
    return value


def task_training_rows(task, data_dir: str | os.PathLike, n_negatives: int = 1, seed: int = 0,
                       max_rows: int | None = None, rows: int | None = None) -> list[dict[str, Any]]:
    """Rows of one task's train split: the query, its first positive, and hard negatives from its candidates.

    The negatives are drawn from the query's own candidates (for grounding: the other crowns or captions of the
    same window), without repeats; a query with fewer than `n_negatives` of them (but at least one) repeats its
    draws to fill the columns (a repeated negative only weighs more; every row of a task needs the same columns).
    `max_rows` caps the rows; `rows` asks for exactly that many: queries are gone over again, each pass with fresh
    negative draws, until there are enough (upweights a small task in the proportional task mix).
    """
    queries, corpus = task.load(data_dir, "train")
    by_id = {row["id"]: row for row in corpus}
    rng = random.Random(f"{seed}|{task.name}")
    usable = [q for q in queries
              if n_negatives == 0 or any(c not in set(q["positive_ids"]) for c in q["candidate_ids"])]
    target = rows if rows is not None else len(usable)
    out: list[dict[str, Any]] = []
    while usable and len(out) < target:
        batch = []
        for query in usable:
            positives = set(query["positive_ids"])
            pool = [c for c in query["candidate_ids"] if c not in positives]
            drawn = rng.sample(pool, min(n_negatives, len(pool)))
            drawn += [drawn[i % len(drawn)] for i in range(n_negatives - len(drawn))] if drawn else []
            items = [row_to_training_item(query), row_to_training_item(by_id[query["positive_ids"][0]])]
            items += [row_to_training_item(by_id[c]) for c in drawn]
            row = {"anchor": items[0], "positive": items[1]}
            row.update({NEGATIVE_COLUMN.format(i + 1): item for i, item in enumerate(items[2:])})
            row["label"] = [content_id(item) for item in items[1:]]
            batch.append(row)
        rng.shuffle(batch)
        out += batch
    out = out[:target]
    return out[:max_rows] if max_rows else out


def training_datasets(data_dir: str | os.PathLike, task_names: list[str] | None = None,
                      n_negatives: int | Mapping[str, int] = 1, seed: int = 0,
                      max_rows_per_task: int | Mapping[str, int] | None = None):
    """`(DatasetDict, prompts)` for `SentenceTransformerTrainer`: one dataset and one prompt map per task.

    `n_negatives`: hard negatives per row, for every task or per task (``{task: n, "*": default}``; e.g. all seven
    other crowns of a window for referring expressions: a listwise loss over the window's crowns).
    `max_rows_per_task`: an int caps every task's rows; a mapping (``{task: rows, "*": default}``) gives each task
    that many rows -- cut, or repeated with fresh negative draws -- which sets the task's share of the batches
    (the trainer draws tasks in proportion to their rows); in a mapping, None is every row and 0 leaves the task
    out of training.
    """
    from datasets import Dataset, DatasetDict, Features, List, Value

    from rsmeb_eval.dataset_io import has_task
    from rsmeb_eval.registry import get_tasks

    for name, setting in (("n_negatives", n_negatives), ("max_rows_per_task", max_rows_per_task)):
        if not (setting is None or isinstance(setting, Mapping) or (isinstance(setting, int) and setting >= 0)):
            raise ValueError(f"{name}: expected a non-negative int or a mapping task -> int, got {setting!r}")
    tasks = get_tasks(task_names) if task_names else [t for t in get_tasks() if has_task(data_dir, t.name)]
    item = item_features()
    datasets, prompts, without_rows = {}, {}, []
    for task in tasks:
        negatives = per_task(n_negatives, task.name, "n_negatives")
        negatives = 1 if negatives is None else negatives
        if isinstance(max_rows_per_task, Mapping):
            rows = task_training_rows(task, data_dir, negatives, seed,
                                      rows=per_task(max_rows_per_task, task.name, "max_rows_per_task"))
        else:
            rows = task_training_rows(task, data_dir, negatives, seed, max_rows_per_task)
        if not rows:
            without_rows.append(task.name)
            continue
        columns = {"anchor": item, "positive": item, **{NEGATIVE_COLUMN.format(i + 1): item for i in range(negatives)}}
        features = Features({**columns, "label": List(Value("int64"))})
        datasets[task.name] = Dataset.from_list(rows, features=features)
        meta = task.metadata
        prompts[task.name] = {"anchor": meta.query_instruction, "positive": meta.candidate_instruction or "",
                              **{NEGATIVE_COLUMN.format(i + 1): meta.candidate_instruction or "" for i in range(negatives)}}
    if not datasets:
        names = f" for {', '.join(without_rows)}" if without_rows else ""
        raise ValueError(f"{data_dir}: no training rows{names} (is there a train split? does max_rows_per_task give "
                         f"these tasks 0 rows?)")
    return DatasetDict(datasets), prompts


def anchor_image_groups(dataset) -> list[Any]:
    """Per row, a group key: the anchor's image (its stored bytes) and how many identical anchors came before it,
    so a repeated query (a task repeated to fill its rows) lands in another group; rows without an image anchor
    get a group of their own."""
    import hashlib

    from datasets import Image

    if "anchor" not in dataset.column_names:
        return list(range(len(dataset)))
    anchors = dataset.select_columns(["anchor"])
    anchors = anchors.cast_column("anchor", {**anchors.features["anchor"], "image": Image(decode=False)})
    seen: dict[tuple, int] = {}
    keys: list[Any] = []
    for index, row in enumerate(anchors["anchor"]):
        image = row.get("image")
        if image is None or image.get("bytes") is None:
            keys.append(index)
            continue
        digest = hashlib.sha256(image["bytes"]).hexdigest()
        anchor = (digest, row.get("text"), repr(row.get("bbox")))
        occurrence = seen.get(anchor, 0)
        seen[anchor] = occurrence + 1
        keys.append((digest, occurrence))
    return keys


def same_image_batch_sampler(dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                             seed: int = 0):
    """A batch sampler (sentence-transformers' `batch_sampler` argument) that keeps the rows of one anchor image
    together: a batch holds a few whole groups instead of 32 unrelated rows.

    For the grounding and neighbour tasks a window (or chip) has several queries -- "the leftmost crown", "the
    topmost crown"... -- whose targets are different crowns of the same window. In one batch, each query's in-batch
    candidates then include the other crowns of its own window: the listwise, same-tile hard negatives the task
    needs, at no extra encoding cost (multi-positive InfoNCE counts a shared target as positive). Groups are shuffled
    each epoch, and so are the rows inside each group; rows without an image anchor are shuffled as usual.
    """
    from sentence_transformers.base.sampler import DefaultBatchSampler

    class SameImageBatchSampler(DefaultBatchSampler):
        def __init__(self):
            super().__init__(range(len(dataset)), batch_size=batch_size, drop_last=drop_last,
                             valid_label_columns=valid_label_columns, generator=generator, seed=seed)
            groups: dict[Any, list[int]] = {}
            for index, key in enumerate(anchor_image_groups(dataset)):
                groups.setdefault(key, []).append(index)
            self.groups = list(groups.values())

        def __iter__(self):
            rng = random.Random(f"{self.seed}|{self.epoch}|{len(dataset)}")
            order = list(range(len(self.groups)))
            rng.shuffle(order)
            stream: list[int] = []
            for g in order:
                members = list(self.groups[g])
                rng.shuffle(members)
                stream += members
            for start in range(0, len(stream), batch_size):
                batch = stream[start:start + batch_size]
                if len(batch) == batch_size or not drop_last:
                    yield batch

        def __len__(self):
            return len(dataset) // batch_size if drop_last else -(-len(dataset) // batch_size)

    return SameImageBatchSampler()
