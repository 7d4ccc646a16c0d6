"""On-disk embedding cache keyed by (model fingerprint, item content + instruction): one SQLite file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, folder: str | os.PathLike):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / "embeddings.sqlite"
        self._db = sqlite3.connect(self.path)
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT, key TEXT, vector BLOB, PRIMARY KEY (model, key))"
            )
            self._db.execute("SELECT model, key, vector FROM embeddings LIMIT 1").fetchall()
        except sqlite3.DatabaseError as error:  # sqlite says "file is not a database", without the file's name
            self._db.close()
            raise ValueError(f"{self.path}: not an embedding cache ({error}); delete it (it is rebuilt) or pass "
                             "another --cache-dir") from None

    def get_many(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({marks})", [model, *chunk]
            )
            found.update((key, np.frombuffer(blob, dtype=np.float32).copy()) for key, blob in rows)
        return found

    def put_many(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
            [(model, key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in vectors.items()],
        )
        self._db.commit()

    def count(self, model: str | None = None) -> int:
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", [model]).fetchone()[0]

    def close(self) -> None:
        self._db.close()
