"""Build, convert and save VLM2GeoVec checkpoints (one folder for transformers and sentence-transformers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from modeling_vlm2geovec import VLM2GeoVecConfig, VLM2GeoVecModel
from processing_vlm2geovec import VLM2GeoVecProcessor

# The nano model: Qwen2-VL architecture at a size that trains on 2 CPU cores in minutes (see
# shared/notes/nano.md). head_dim = 128 / 4 = 32, so mrope_section must sum to 16.
NANO_TEXT_CONFIG = dict(
    vocab_size=151936,  # Qwen2's padded vocabulary, so real token ids index the embedding directly
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
    tie_word_embeddings=False,
)
NANO_VISION_CONFIG = dict(depth=2, embed_dim=64, hidden_size=128, num_heads=4, mlp_ratio=2)
# 112x112 to 224x224 pixels -> 16 to 64 image tokens per image.
NANO_IMAGE_SIZE = {"shortest_edge": 112 * 112, "longest_edge": 224 * 224}
DEFAULT_MODEL_PROMPTS = {"query": "", "document": ""}


def build_processor(tokenizer=None, image_size: dict[str, int] | None = None, **kwargs) -> VLM2GeoVecProcessor:
    """A processor from the real Qwen2 tokenizer and Qwen2-VL's PIL image processor."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if tokenizer is None:
        from vlm2geovec.tokenizer import build_qwen2_tokenizer

        tokenizer = build_qwen2_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(size=dict(image_size or NANO_IMAGE_SIZE))
    return VLM2GeoVecProcessor(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


def nano_config(**overrides: Any) -> VLM2GeoVecConfig:
    return VLM2GeoVecConfig(
        text_config=dict(NANO_TEXT_CONFIG), vision_config=dict(NANO_VISION_CONFIG), **overrides
    )


def build_nano(seed: int = 0, **config_overrides: Any) -> tuple[VLM2GeoVecModel, VLM2GeoVecProcessor]:
    """The offline default: a randomly initialised nano VLM2GeoVec, identical for the same seed."""
    processor = build_processor()
    config = nano_config(**config_overrides)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = VLM2GeoVecModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.eval()
    return model, processor


def save_checkpoint(
    model: VLM2GeoVecModel,
    processor: VLM2GeoVecProcessor,
    out_dir: str | os.PathLike,
    prompts: dict[str, str] | None = None,
    model_card: str | None = None,
) -> Path:
    """Write one folder that loads with AutoModel/AutoProcessor (trust_remote_code) and SentenceTransformer."""
    from sentence_transformers import SentenceTransformer

    from st_vlm2geovec import VLM2GeoVecEmbedder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    st_model = SentenceTransformer(
        modules=[VLM2GeoVecEmbedder(model, processor)],
        prompts=dict(DEFAULT_MODEL_PROMPTS if prompts is None else prompts),
        similarity_fn_name="cosine",
        device="cpu" if next(model.parameters()).device.type == "cpu" else None,
    )
    st_model.save(str(out_dir), create_model_card=False)
    if model_card is not None:
        (out_dir / "README.md").write_text(model_card, encoding="utf-8")
    return out_dir


def convert_backbone(
    backbone: str | os.PathLike,
    out_dir: str | os.PathLike,
    pooling: str = "last",
    normalize: bool = True,
    embedding_dim: int | None = None,
    max_pixels: int | None = None,
    dtype: str | torch.dtype | None = None,
    **hub_kwargs: Any,
) -> Path:
    """Turn a Qwen2-VL checkpoint (Hub id or local folder) into a VLM2GeoVec checkpoint.

    Every backbone weight must load: missing or mismatched keys raise instead of leaving random weights.
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    source_config = AutoConfig.from_pretrained(backbone, **hub_kwargs)
    if source_config.model_type not in ("qwen2_vl", "vlm2geovec"):
        raise ValueError(f"{backbone}: expected a Qwen2-VL checkpoint, got model_type {source_config.model_type!r}")
    config_dict = source_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        config_dict.pop(key, None)
    config_dict.update(pooling=pooling, normalize=normalize, embedding_dim=embedding_dim)
    config = VLM2GeoVecConfig(**config_dict)
    model, info = VLM2GeoVecModel.from_pretrained(
        backbone, config=config, output_loading_info=True, dtype=dtype or "auto", **hub_kwargs
    )
    problems = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys", "error_msgs") and v}
    if problems:
        raise RuntimeError(f"{backbone}: backbone weights did not load completely: {problems}")
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith("lm_head")]
    if unexpected:
        raise RuntimeError(f"{backbone}: checkpoint has weights the backbone does not use: {unexpected[:10]}")
    tokenizer = AutoTokenizer.from_pretrained(backbone, **hub_kwargs)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(backbone, **hub_kwargs)
    if max_pixels is not None:
        image_processor.size = {**image_processor.size, "longest_edge": int(max_pixels)}
    processor = VLM2GeoVecProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return save_checkpoint(model, processor, out_dir)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
