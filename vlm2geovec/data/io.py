"""Small file-writing helpers shared by the data layer, the corpus/index code and the benchmark."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
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


_process_cache: dict[int, Path] = {}


def _private_cache_dir() -> Path:
    """A new folder for one load, inside a folder of this process's own (under the temporary directory, `TMPDIR`),
    removed when the process exits -- also a forked multiprocessing child, which leaves through ``os._exit``."""
    import multiprocessing.util

    root = _process_cache.get(os.getpid())
    if root is None or not root.is_dir():
        root = _process_cache[os.getpid()] = Path(tempfile.mkdtemp(prefix="vlm2geovec-datasets-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        multiprocessing.util.Finalize(None, shutil.rmtree, args=(root,), kwargs={"ignore_errors": True}, exitpriority=0)
    return Path(tempfile.mkdtemp(prefix="load-", dir=root))


def load_dataset_fresh(path: str | os.PathLike, config: str | None = None, split: str | None = None):
    """`datasets.load_dataset`, except that a local folder is always read as it is on disk now.

    datasets caches a local folder's configs under a key made from their file *patterns* (``data/T/test*.parquet``),
    not from the files' contents or times, so a folder rebuilt in place (every quickstart writes ``rsmeb-lite``) would
    be served from the Arrow cache of an earlier build, silently. Preparing it again in that shared cache
    (``force_redownload``) is no cure: it deletes the entry under any other process reading the same folder at that
    moment (seeds or ranks run side by side: FileNotFoundError). So a local folder is prepared into a cache of this
    load's own, in a folder of this process's that is removed at exit (a local ``.parquet`` file too); Hub ids keep
    datasets' own caching, keyed on their revision.
    """
    import datasets

    path = os.fspath(path)
    if os.path.isfile(path) and path.lower().endswith(".parquet"):  # one local file: one split, "train"
        args, kwargs = ("parquet",), {"data_files": path, "split": split or "train"}
    elif os.path.isdir(path):
        args, kwargs = (path, config), {"split": split}
    else:
        return datasets.load_dataset(path, config, split=split)
    private = {"cache_dir": os.fspath(_private_cache_dir()), "verification_mode": "no_checks"}
    return datasets.load_dataset(*args, **kwargs, **private)
