"""Write and read RSMEB dataset folders: parquet per task, config and split, plus a README card whose YAML
`configs:` maps every config to its files, so `load_dataset(folder, "<task>", split="test")` works offline."""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rsmeb_eval.schema import corpus_features, query_features

CORPUS_SUFFIX = "-corpus"


@dataclass
class TaskData:
    """One split of one task: query rows and corpus rows (see `rsmeb_eval.schema`)."""

    queries: list[dict[str, Any]] = field(default_factory=list)
    corpus: list[dict[str, Any]] = field(default_factory=list)

    def validate(self, task: str, split: str) -> None:
        ids = [row["id"] for row in self.corpus]
        if len(ids) != len(set(ids)):
            raise ValueError(f"{task}/{split}: duplicate corpus ids")
        known = set(ids)
        query_ids = [row["query_id"] for row in self.queries]
        if len(query_ids) != len(set(query_ids)):
            raise ValueError(f"{task}/{split}: duplicate query ids")
        for row in self.queries:
            where = f"{task}/{split} query {row['query_id']}"
            if not row["positive_ids"]:
                raise ValueError(f"{where}: no positive")
            missing = (set(row["candidate_ids"]) | set(row["positive_ids"])) - known
            if missing:
                raise ValueError(f"{where}: ids not in the corpus: {sorted(missing)[:5]}")
            if row["candidate_ids"] and not set(row["positive_ids"]) <= set(row["candidate_ids"]):
                raise ValueError(f"{where}: a positive is missing from its candidate list")
            if len(set(row["candidate_ids"])) != len(row["candidate_ids"]):
                raise ValueError(f"{where}: duplicate candidates")


def _png_bytes(image: Any, field: str = "image") -> dict[str, Any] | None:
    """Images are stored as PNG bytes (lossless, deterministic), whatever they came in as."""
    if image is None:
        return None
    from processing_vlm2geovec import load_image

    if isinstance(image, dict):
        return image
    # the model's own conversion (transparency onto white, EXIF orientation, 16-bit stretch): what is stored is
    # what the model would have seen
    image = load_image(image, field)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return {"bytes": buffer.getvalue(), "path": None}


def _prepare(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, list[Any]]:
    table = {column: [] for column in columns}
    for index, row in enumerate(rows):
        for column in columns:
            value = row.get(column)
            if column == "image":
                name = row.get("query_id") or row.get("id") or row.get("candidate_id")
                value = _png_bytes(value, f"row {index}{f' ({name})' if name else ''}.image")
            table[column].append(value)
    return table


def write_task(folder: str | os.PathLike, task: str, splits: dict[str, TaskData]) -> list[tuple[str, str, str]]:
    """Write one task's parquet files; returns (config, split, relative path) entries for the card."""
    from datasets import Dataset

    folder = Path(folder)
    entries = []
    for split, data in splits.items():
        data.validate(task, split)
        for config, rows, features in (
            (task, data.queries, query_features()),
            (task + CORPUS_SUFFIX, data.corpus, corpus_features()),
        ):
            relative = f"data/{config}/{split}.parquet"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            dataset = Dataset.from_dict(_prepare(rows, list(features)), features=features)
            _write_parquet(dataset, folder / relative)
            entries.append((config, split, relative))
    return entries


def _write_parquet(dataset, path: Path) -> None:
    """Parquet with the features in its schema metadata; rows that show the same tile share its image bytes,
    and a large dictionary page stores each distinct image once (a 10x smaller RSMEB-lite)."""
    import pyarrow.parquet as pq

    table = dataset.with_format("arrow")[:]
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_features_metadata(dataset)})
    pq.write_table(table, str(path), use_dictionary=True, dictionary_pagesize_limit=1 << 28,
                   compression="zstd", row_group_size=len(dataset) or None)


def _features_metadata(dataset) -> dict[bytes, bytes]:
    import json

    return {b"huggingface": json.dumps({"info": {"features": dataset.features.to_dict()}}).encode()}


def configs_yaml(entries: list[tuple[str, str, str]]) -> str:
    by_config: dict[str, list[tuple[str, str]]] = {}
    for config, split, relative in entries:
        by_config.setdefault(config, []).append((split, relative))
    lines = ["configs:"]
    for config in sorted(by_config):
        lines.append(f"- config_name: {config}")
        lines.append("  data_files:")
        for split, relative in sorted(by_config[config]):
            lines.append(f"  - split: {split}")
            lines.append(f"    path: {relative}")
    return "\n".join(lines) + "\n"


def has_task(folder: str | os.PathLike, task: str) -> bool:
    """Whether an RSMEB dataset folder holds data for `task` (the layout `write_task` writes)."""
    return os.path.isdir(os.path.join(folder, "data", task))


def check_parquet(path: str | os.PathLike) -> None:
    """Read a parquet file's footer: a truncated or foreign file is a ValueError naming it."""
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).close()
    except Exception as error:  # pyarrow raises ArrowInvalid or OSError, neither naming the file
        raise ValueError(f"{path}: not a readable parquet file ({str(error).strip()[:200]})") from None


def load_task(folder: str | os.PathLike, task: str, split: str = "test"):
    """(queries, corpus) as `datasets.Dataset`s, offline, with exact features. A missing or damaged file is a
    ValueError naming it (`datasets` would say neither which file nor why)."""
    from vlm2geovec.data.io import load_dataset_fresh

    loaded = []
    for config in (task, task + CORPUS_SUFFIX):
        for path in sorted((Path(folder) / "data" / config).glob(f"{split}*.parquet")):  # the layout we write
            check_parquet(path)
        try:
            loaded.append(load_dataset_fresh(folder, config, split=split))  # a rebuilt folder is read as it is now
        except Exception as error:  # datasets raises many types, rarely naming the file
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise ValueError(f"{folder}: cannot load {config}/{split} ({type(error).__name__}: {reason})") from None
    return loaded[0], loaded[1]


def write_dataset(folder: str | os.PathLike, tasks: dict[str, dict[str, TaskData]], title: str = "RSMEB",
                  notes: str = "") -> Path:
    """Write every task and the dataset card (README.md with YAML `configs:` and the task table)."""
    from rsmeb_eval.card import dataset_card

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in sorted(tasks):
        entries += write_task(folder, name, tasks[name])
    (folder / "README.md").write_text(dataset_card(sorted(tasks), configs_yaml(entries), title, notes), encoding="utf-8")
    return folder


IfExists = Literal["error", "overwrite", "merge"]


def _existing(folder: Path, task: str, split: str) -> TaskData | None:
    import pyarrow.parquet as pq

    queries = folder / "data" / task / f"{split}.parquet"
    corpus = folder / "data" / (task + CORPUS_SUFFIX) / f"{split}.parquet"
    if not queries.is_file():
        return None
    return TaskData(queries=pq.read_table(queries).to_pylist(), corpus=pq.read_table(corpus).to_pylist())


def _merge(old: TaskData, new: TaskData, where: str) -> TaskData:
    for kind, key, rows_old, rows_new in (("query", "query_id", old.queries, new.queries),
                                          ("corpus", "id", old.corpus, new.corpus)):
        clash = {row[key] for row in rows_old} & {row[key] for row in rows_new}
        if clash:
            raise ValueError(f"{where}: {kind} id(s) already in the folder: {sorted(clash)[:5]} (converted twice?)")
    return TaskData(queries=old.queries + new.queries, corpus=old.corpus + new.corpus)


def check_out_dir(folder: Path, if_exists: str) -> bool:
    """Whether ``folder`` already holds a dataset; FileExistsError when it does and ``if_exists="error"``."""
    if if_exists not in ("error", "overwrite", "merge"):
        raise ValueError(f"if_exists must be 'error', 'overwrite' or 'merge', got {if_exists!r}")
    has_dataset = (folder / "data").exists() or (folder / "README.md").exists()
    if has_dataset and if_exists == "error":
        raise FileExistsError(f"{folder}: already holds a dataset; pass if_exists='overwrite' or 'merge'")
    return has_dataset


def write_dataset_folder(out_dir: str | Path, tasks: dict[str, dict[str, TaskData]], title: str, notes: str = "",
                          if_exists: IfExists = "error") -> dict[str, dict[str, TaskData]]:
    """Write ``tasks`` as an RSMEB folder, deciding what happens to a dataset already there.

    Args:
        if_exists: what to do when ``out_dir`` already holds a dataset (a ``data/`` folder or ``README.md``):
            ``"error"`` (FileExistsError), ``"overwrite"`` (its ``data/`` and ``README.md`` are deleted first) or
            ``"merge"`` (splits of tasks already there get the new rows appended, ids must not clash; the card
            lists every task in the folder).

    Returns:
        the tasks as written (merged ones included).
    """
    from rsmeb_eval.card import dataset_card

    folder = Path(out_dir)
    has_dataset = check_out_dir(folder, if_exists)
    if has_dataset and if_exists == "overwrite":
        shutil.rmtree(folder / "data", ignore_errors=True)
        (folder / "README.md").unlink(missing_ok=True)
    if not (has_dataset and if_exists == "merge"):
        write_dataset(folder, tasks, title=title, notes=notes)
        return tasks
    written: dict[str, dict[str, TaskData]] = {}
    for task in sorted(tasks):  # every clash is found before anything is written
        for split, data in tasks[task].items():
            old = _existing(folder, task, split)
            merged = data if old is None else _merge(old, data, f"{folder}: {task}/{split}")
            written.setdefault(task, {})[split] = merged
    for task in sorted(written):
        write_task(folder, task, written[task])
    entries = sorted((path.parent.name, path.stem, path.relative_to(folder).as_posix())
                     for path in (folder / "data").glob("*/*.parquet"))
    names = sorted({config for config, _, _ in entries if not config.endswith(CORPUS_SUFFIX)})
    (folder / "README.md").write_text(dataset_card(names, configs_yaml(entries), title, notes), encoding="utf-8")
    return written


# ------------------------------------------------------------------------------------------ public sources
