"""vlm2geovec: one embedding for interleaved remote-sensing images, text, boxes and coordinates.

Importing this package registers the classes with transformers' Auto* factories, so a VLM2GeoVec folder
loads with ``AutoModel.from_pretrained(path)`` even without ``trust_remote_code``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoProcessor

from modeling_vlm2geovec import VLM2GeoVecConfig, VLM2GeoVecModel, VLM2GeoVecOutput
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

AutoConfig.register("vlm2geovec", VLM2GeoVecConfig, exist_ok=True)
AutoModel.register(VLM2GeoVecConfig, VLM2GeoVecModel, exist_ok=True)
AutoProcessor.register(VLM2GeoVecConfig, VLM2GeoVecProcessor, exist_ok=True)


def load_model(path: str, device: str | None = None, **kwargs):
    """Load a checkpoint as a SentenceTransformer (the one object the CLI, evaluation and Space use)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, trust_remote_code=True, device=device, **kwargs)


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
