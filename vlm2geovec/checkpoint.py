"""Build, convert and save VLM2GeoVec checkpoints (one folder for transformers and sentence-transformers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from modeling_vlm2geovec import FAMILY_CONFIG_CLASSES, FAMILY_MODEL_CLASSES, MODEL_TYPE_FAMILIES, VLM2GeoVecModel
from processing_vlm2geovec import (
    BACKBONE_FAMILIES, DEFAULT_FAMILY, DEFAULT_PROMPT_STYLE, VLM2GeoVecProcessor, backbone_family_spec,
)

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
# The same nano size in every family: each family's own architecture (Qwen2.5-VL's windowed vision attention with
# one full-attention block; Qwen3-VL's QK-norm language model, interleaved M-RoPE and deepstack visual features).
NANO_FAMILY_CONFIGS: dict[str, tuple[dict, dict, dict]] = {
    "qwen2_vl": (NANO_TEXT_CONFIG, NANO_VISION_CONFIG, NANO_IMAGE_SIZE),
    "qwen2_5_vl": (
        NANO_TEXT_CONFIG,
        dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128, window_size=112,
             fullatt_block_indexes=[1]),
        NANO_IMAGE_SIZE,
    ),
    "qwen3_vl": (
        dict(vocab_size=151936, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, tie_word_embeddings=False,
             rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [6, 5, 5],
                              "mrope_interleaved": True}),
        dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
             num_position_embeddings=256, deepstack_visual_indexes=[0]),
        # Qwen3-VL's tokens cover 32x32 pixels: 128x128 to 256x256 -> 16 to 64 image tokens per image.
        {"shortest_edge": 128 * 128, "longest_edge": 256 * 256},
    ),
}
# What Qwen3-VL-Embedding's own pipeline resizes images to (its MIN_PIXELS / MAX_PIXELS, factor 32).
QWEN3_VL_EMBEDDING_IMAGE_SIZE = {"shortest_edge": 4 * 32 * 32, "longest_edge": 1800 * 32 * 32}
DEFAULT_MODEL_PROMPTS = {"query": "", "document": ""}


def family_image_processor(family: str = DEFAULT_FAMILY, image_size: dict[str, int] | None = None):
    """The family's PIL image processor (patch size, merge size, mean/std) at a pixel budget."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = backbone_family_spec(family)
    size = image_size or NANO_FAMILY_CONFIGS[spec.name][2]
    return Qwen2VLImageProcessorPil(size=dict(size), patch_size=spec.patch_size, merge_size=spec.merge_size,
                                    temporal_patch_size=2, image_mean=list(spec.image_mean),
                                    image_std=list(spec.image_std))


def build_processor(tokenizer=None, image_size: dict[str, int] | None = None, family: str = DEFAULT_FAMILY,
                    **kwargs) -> VLM2GeoVecProcessor:
    """A processor from the family's real tokenizer (offline, from the Qwen2 BPE ranks) and PIL image processor."""
    if tokenizer is None:
        from vlm2geovec.tokenizer import build_qwen_tokenizer

        tokenizer = build_qwen_tokenizer(family)
    return VLM2GeoVecProcessor(image_processor=family_image_processor(family, image_size), tokenizer=tokenizer,
                               backbone_family=family, **kwargs)


def nano_config(family: str = DEFAULT_FAMILY, **overrides: Any):
    """The nano configuration of a backbone family (`NANO_FAMILY_CONFIGS`)."""
    text, vision, _ = NANO_FAMILY_CONFIGS[backbone_family_spec(family).name]
    return FAMILY_CONFIG_CLASSES[family](text_config=dict(text), vision_config=dict(vision), **overrides)


def build_nano(seed: int = 0, family: str = DEFAULT_FAMILY, **config_overrides: Any):
    """The offline default: a randomly initialised nano VLM2GeoVec of a backbone family (real tokenizer, real image
    processing), identical for the same seed and family. Returns ``(model, processor)``."""
    processor = build_processor(family=family)
    config = nano_config(family, **config_overrides)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = FAMILY_MODEL_CLASSES[family](config)
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


SOURCE_PIPELINES = ("auto", "generative", "qwen3_vl_embedding")


def source_family(model_type: str | None, where: str) -> str:
    """The backbone family of a source ``config.json``'s model_type (a backbone, or one of our checkpoints)."""
    family = MODEL_TYPE_FAMILIES.get(model_type, model_type)
    if family not in BACKBONE_FAMILIES:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not a supported backbone; expected one of "
            f"{sorted(BACKBONE_FAMILIES)} (Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-Embedding checkpoints) or a "
            "VLM2GeoVec checkpoint"
        )
    return family


def _is_qwen3_vl_embedding(backbone: str, family: str, hub_kwargs: dict) -> bool:
    """Qwen3-VL-Embedding checkpoints are Qwen3-VL weights served with their own sentence-transformers layout."""
    if family != "qwen3_vl":
        return False
    if "qwen3-vl-embedding" in os.fspath(backbone).lower():
        return True
    folder = Path(os.fspath(backbone))
    if folder.is_dir():
        return (folder / "config_sentence_transformers.json").is_file() and not (folder / "sentence_vlm2geovec_config.json").is_file()
    return False


def convert_backbone(
    backbone: str | os.PathLike,
    out_dir: str | os.PathLike,
    pooling: str = "last",
    normalize: bool = True,
    embedding_dim: int | None = None,
    max_pixels: int | None = None,
    dtype: str | torch.dtype | None = None,
    source_pipeline: str = "auto",
    **hub_kwargs: Any,
) -> Path:
    """Turn a Qwen2-VL, Qwen2.5-VL, Qwen3-VL or Qwen3-VL-Embedding checkpoint (Hub id or local folder) into a
    VLM2GeoVec checkpoint of the same family; the family is read from the source ``config.json`` (model_type).

    Every backbone weight must load: missing or mismatched keys raise instead of leaving random weights.

    ``source_pipeline`` says how the source model was meant to embed: ``"generative"`` (a chat model: our prompt style,
    pooled at an appended ``<|endoftext|>``), ``"qwen3_vl_embedding"`` (Qwen3-VL-Embedding's own instruction format,
    pooled at the generation prompt's last token, with its image pixel budget, so the converted checkpoint gives that
    model's own vectors), or ``"auto"`` (Qwen3-VL-Embedding when the source is one: its name says so, or it is a
    Qwen3-VL folder with a sentence-transformers configuration).
    """
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    if source_pipeline not in SOURCE_PIPELINES:
        raise ValueError(f"source_pipeline must be one of {SOURCE_PIPELINES}, got {source_pipeline!r}")
    where = os.fspath(backbone)
    source_config = AutoConfig.from_pretrained(backbone, **hub_kwargs)
    family = source_family(source_config.model_type, where)
    if source_pipeline == "auto":
        source_pipeline = "qwen3_vl_embedding" if _is_qwen3_vl_embedding(backbone, family, hub_kwargs) else "generative"
    if source_pipeline == "qwen3_vl_embedding" and family != "qwen3_vl":
        raise ValueError(f"{where}: source_pipeline 'qwen3_vl_embedding' needs a Qwen3-VL checkpoint, got {family}")
    config_dict = source_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        config_dict.pop(key, None)
    config_dict.update(pooling=pooling, normalize=normalize, embedding_dim=embedding_dim)
    config = FAMILY_CONFIG_CLASSES[family](**config_dict)
    model, info = FAMILY_MODEL_CLASSES[family].from_pretrained(
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
    if source_pipeline == "qwen3_vl_embedding":
        image_processor.size = dict(QWEN3_VL_EMBEDDING_IMAGE_SIZE)
    if max_pixels is not None:
        image_processor.size = {**image_processor.size, "longest_edge": int(max_pixels)}
    style = "qwen3_vl_embedding" if source_pipeline == "qwen3_vl_embedding" else DEFAULT_PROMPT_STYLE
    processor = VLM2GeoVecProcessor(image_processor=image_processor, tokenizer=tokenizer, backbone_family=family,
                                    prompt_style=style)
    return save_checkpoint(model, processor, out_dir)


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
