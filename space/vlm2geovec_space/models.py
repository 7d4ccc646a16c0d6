"""The model: loaded once per process through the public API (``vlm2geovec.load_model``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import cache_root

logger = logging.getLogger("vlm2geovec.space")


@dataclass
class LoadedModel:
    model: Any  # a SentenceTransformer
    source: str  # what was asked for: a folder or a Hub id
    fingerprint: str | None  # weights + processor settings (None: embeddings are not cached on disk)
    load_seconds: float


_MODELS: dict[str, LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def ensure_nano(cache_dir: Path) -> Path:
    """The offline default: the nano model (seed 0), built once into ``<cache>/nano`` and reused."""
    target = cache_dir / "nano"
    if (target / "modules.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from vlm2geovec.checkpoint import build_nano, save_checkpoint

    logger.info("building the nano model into %s (once)", target)
    tmp = cache_dir / f".nano-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model, processor = build_nano(seed=0)
    save_checkpoint(model, processor, tmp)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_key(model) -> str:
    """Which vectors this model makes: its weights (`vlm2geovec.index.model_fingerprint`, every byte) and the
    processor settings that shape them, the same pair an index records."""
    from vlm2geovec.index import model_fingerprint, model_preprocessing

    recipe = json.dumps([model_fingerprint(model), model_preprocessing(model)], sort_keys=True, default=str)
    return hashlib.sha256(recipe.encode()).hexdigest()


def get_model(model_path: str | os.PathLike | None = None, cache_dir: Path | None = None,
              device: str | None = None) -> LoadedModel:
    """The model for ``model_path`` (else ``$VLM2GEOVEC_MODEL``, else the cached nano), loaded once per process."""
    source = model_path or os.environ.get("VLM2GEOVEC_MODEL")
    if not source:
        source = ensure_nano(cache_dir or cache_root())
    source = str(source)
    key = str(Path(source).resolve()) if Path(source).exists() else source
    with _MODELS_LOCK:
        if key not in _MODELS:
            from vlm2geovec import load_model

            start = time.perf_counter()
            model = load_model(source, device=device or os.environ.get("VLM2GEOVEC_DEVICE") or None)
            model.eval()
            _MODELS[key] = LoadedModel(model, source, model_key(model), time.perf_counter() - start)
            logger.info("loaded %s in %.1f s", source, _MODELS[key].load_seconds)
        return _MODELS[key]
