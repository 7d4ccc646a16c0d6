"""What the harness evaluates: anything with `encode(items, instruction) -> unit vectors` and a `supports` check.

`SentenceTransformerEncoder` wraps a VLM2GeoVec checkpoint (or any SentenceTransformer) through the same
public API users call; baselines and test oracles implement the same two methods.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Encoder(Protocol):
    name: str
    fingerprint: str | None  # identifies the weights for the embedding cache; None disables caching

    def supports(self, modalities: tuple[str, ...]) -> bool: ...

    def encode(self, items: list[Any], instruction: str | None, batch_size: int = 16,
               show_progress_bar: bool = False) -> np.ndarray: ...


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over every byte of every file of a checkpoint folder, subfolders included (weights, configs,
    tokenizer, code), keyed by relative path; not dates. Only the model card (README.md) and hidden entries
    (``.git``, ``.cache``) are left out: they do not change what the model computes."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "README.md"
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise ValueError(f"{path}: no weights file ({', '.join(WEIGHT_SUFFIXES)}) to fingerprint")
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(path).as_posix().encode()
        digest.update(b"%d:%s:%d;" % (len(name), name, file.stat().st_size))
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


class SentenceTransformerEncoder:
    """A VLM2GeoVec (or other multimodal) SentenceTransformer; instructions are passed as prompts."""

    def __init__(self, model: Any, name: str | None = None, device: str | None = None):
        if isinstance(model, (str, os.PathLike)):
            from vlm2geovec import load_model

            path = Path(model)
            self.name = name or (path.name if path.exists() else str(model))
            self.fingerprint = folder_fingerprint(path) if path.is_dir() else None
            model = load_model(str(model), device=device)
        else:
            self.name = name or type(model).__name__
            self.fingerprint = None  # in-memory weights change during training: never cache
        self.model = model

    def supports(self, modalities: tuple[str, ...]) -> bool:
        return True  # interleaved images, text, boxes and coordinates

    def encode(self, items, instruction, batch_size=16, show_progress_bar=False):
        vectors = self.model.encode(items, prompt=instruction or None, batch_size=batch_size,
                                    show_progress_bar=show_progress_bar, convert_to_numpy=True,
                                    normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def item_key(item: dict[str, Any], instruction: str | None) -> str:
    """Content hash of an item and its instruction (image by its stored bytes)."""
    digest = hashlib.sha256()
    image = item.get("image")
    if image is not None:
        data = image["bytes"] if isinstance(image, dict) else image
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("item_key needs images as stored bytes")
        digest.update(hashlib.sha256(data).digest())
    rest = {k: item.get(k) for k in ("text", "bbox", "coords")}
    digest.update(json.dumps([rest, instruction or ""], sort_keys=True, default=list).encode())
    return digest.hexdigest()
