"""Small file-writing helpers shared by the data layer, the corpus/index code and the benchmark."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write"]


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
