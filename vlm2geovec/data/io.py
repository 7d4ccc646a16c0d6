"""Small file-writing helpers shared by the data layer, the corpus/index code and the benchmark."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write", "load_dataset_fresh"]


def atomic_write(path: Path, writer) -> None:
    """``writer(tmp)`` writes a temporary file beside `path` (same suffix, per-process name), which then replaces
    `path` in one step: readers and parallel writers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset_fresh(path: str | os.PathLike, config: str | None = None, split: str | None = None):
    """`datasets.load_dataset`, except that a local folder is always read as it is on disk now.

    datasets caches a local folder's configs under a key made from their file *patterns* (``data/T/test*.parquet``),
    not from the files' contents or times, so a folder rebuilt in place (every quickstart writes ``rsmeb-lite``) would
    be served from the Arrow cache of an earlier build, silently. A local folder is therefore prepared again on every
    load (its old cache entry replaced); Hub ids keep datasets' own caching, keyed on their revision.
    """
    import datasets

    fresh = {"download_mode": "force_redownload", "verification_mode": "no_checks"} if os.path.isdir(path) else {}
    return datasets.load_dataset(os.fspath(path), config, split=split, **fresh)
