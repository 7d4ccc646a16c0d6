"""vlm2geovec: one embedding for interleaved remote-sensing images, text, boxes and coordinates.

Importing this package registers the classes with transformers' Auto* factories, so a VLM2GeoVec folder
loads with ``AutoModel.from_pretrained(path)`` even without ``trust_remote_code``.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoModel, AutoProcessor

from modeling_vlm2geovec import FAMILY_MODEL_CLASSES, VLM2GeoVecConfig, VLM2GeoVecModel, VLM2GeoVecOutput
from processing_vlm2geovec import (
    INPUT_FORMAT_VERSION,
    VLM2GeoVecProcessor,
    format_bbox,
    format_coords,
    load_image,
    normalize_item,
    validate_bbox,
    validate_coords,
)

__version__ = "0.1.0"

for _model_class in FAMILY_MODEL_CLASSES.values():
    AutoConfig.register(_model_class.config_class.model_type, _model_class.config_class, exist_ok=True)
    AutoModel.register(_model_class.config_class, _model_class, exist_ok=True)
    AutoProcessor.register(_model_class.config_class, VLM2GeoVecProcessor, exist_ok=True)


def load_model(path: str, device: str | None = None, **kwargs):
    """Load a checkpoint as a SentenceTransformer (the one object the CLI, evaluation and Space use).

    ``path`` is a local folder or a Hub id (``ORG/NAME``). A string that can only be a local path (it starts with
    ``.``, ``/`` or ``~``, has more than one ``/`` or a backslash, or its first component is an existing local
    folder, as ``out`` in ``out/nano``; see ``modeling_vlm2geovec.looks_like_local_path``) and does not exist fails
    at once with `FileNotFoundError` instead of being retried on the Hub (minutes without a network); with
    ``HF_HUB_OFFLINE=1`` so does any other string that is neither a local folder nor in the Hub cache.

    A local folder must be a complete checkpoint: ``modules.json``, ``config.json``, the weights and the processor
    files are checked and a missing, damaged or mismatched one raises an error naming it (the model class refuses
    missing, unused or reshaped weights; pass ``model_kwargs={"allow_missing_weights": True}`` to start from a
    partial checkpoint on purpose).
    """
    from modeling_vlm2geovec import check_local_folder, read_json_file

    check_local_folder(path)
    folder = os.path.expanduser(os.fspath(path))
    if os.path.isdir(folder):
        # Without modules.json sentence-transformers falls back to its generic modules, which cannot run VLM2GeoVec.
        modules_path = os.path.join(folder, "modules.json")
        if not os.path.isfile(modules_path):
            raise FileNotFoundError(
                f"{modules_path} not found: {path} is not a VLM2GeoVec sentence-transformers checkpoint; build one "
                "with `vlm2geovec nano` or `vlm2geovec convert` (or re-save it with `save_checkpoint`)"
            )
        modules = read_json_file(modules_path, "modules.json")
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise ValueError(f"{modules_path} is not a list of modules with a 'type' each: re-save the checkpoint")
        path = folder
    elif _hub_offline() and not _in_hub_cache(path, kwargs.get("cache_folder")):
        # Offline, sentence-transformers would only say it "couldn't connect to huggingface.co".
        raise FileNotFoundError(
            f"{path}: no such local folder, and not in the Hub cache while HF_HUB_OFFLINE is set (a Hub id looks "
            f"like ORG/NAME; create a local model with `vlm2geovec nano --out {path}`)"
        )
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, trust_remote_code=True, device=device, **kwargs)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _in_hub_cache(repo_id: str, cache_dir: str | None) -> bool:
    """Whether a sentence-transformers checkpoint for ``repo_id`` is in the local Hub cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "modules.json", cache_dir=cache_dir)
    except ValueError:  # not a valid repository id either
        return False
    return isinstance(found, str)


__all__ = [
    "INPUT_FORMAT_VERSION",
    "VLM2GeoVecConfig",
    "VLM2GeoVecModel",
    "VLM2GeoVecOutput",
    "VLM2GeoVecProcessor",
    "format_bbox",
    "format_coords",
    "load_image",
    "load_model",
    "normalize_item",
    "validate_bbox",
    "validate_coords",
]
