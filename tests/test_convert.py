"""`convert`: a Qwen2-VL checkpoint (new or legacy key layout) becomes a VLM2GeoVec checkpoint, every weight loaded."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlm2geovec.checkpoint import NANO_TEXT_CONFIG, NANO_VISION_CONFIG


@pytest.fixture(scope="module")
def qwen2vl_source(tmp_path_factory, processor):
    """A tiny Qwen2VLForConditionalGeneration saved by transformers, with tokenizer and image processor."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    config = Qwen2VLConfig(text_config=dict(NANO_TEXT_CONFIG), vision_config=dict(NANO_VISION_CONFIG))
    torch.manual_seed(123)
    model = Qwen2VLForConditionalGeneration(config)
    folder = tmp_path_factory.mktemp("qwen2vl") / "tiny-qwen2-vl"
    model.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def to_legacy_layout(folder, target):
    """Rewrite keys the way Hub Qwen2-VL checkpoints store them (visual.*, model.layers.*)."""
    import shutil

    shutil.copytree(folder, target)
    tensors = load_file(str(target / "model.safetensors"))
    legacy = {}
    for key, value in tensors.items():
        if key.startswith("model.visual."):
            key = key[len("model."):]
        elif key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model."):]
        legacy[key] = value
    assert any(k.startswith("model.layers.") for k in legacy) and any(k.startswith("visual.") for k in legacy)
    save_file(legacy, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def source_key(our_key: str) -> str:
    return "model." + our_key


@pytest.mark.parametrize("layout", ["current", "legacy"])
def test_convert_loads_every_backbone_weight(qwen2vl_source, tmp_path, layout):
    from transformers import AutoModel

    from vlm2geovec.checkpoint import convert_backbone

    folder, source_state = qwen2vl_source
    if layout == "legacy":
        folder = to_legacy_layout(folder, tmp_path / "legacy")
    out = convert_backbone(str(folder), tmp_path / "converted")
    model, info = AutoModel.from_pretrained(str(out), trust_remote_code=True, output_loading_info=True)
    assert info["missing_keys"] == set() and info["mismatched_keys"] == set() and info["unexpected_keys"] == set()
    state = model.state_dict()
    assert len(state) == len([k for k in source_state if not k.startswith("lm_head")])
    for key, value in state.items():
        assert torch.equal(value, source_state[source_key(key)]), key
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vlm2geovec" and config["pooling"] == "last"


def test_convert_refuses_partial_checkpoints(qwen2vl_source, tmp_path):
    import shutil

    from vlm2geovec.checkpoint import convert_backbone

    folder, _ = qwen2vl_source
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    dropped = [k for k in tensors if "layers.1.mlp" in k]
    for key in dropped:
        del tensors[key]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="did not load completely"):
        convert_backbone(str(broken), tmp_path / "out")


def test_convert_refuses_other_architectures(tmp_path):
    from transformers import BertConfig

    from vlm2geovec.checkpoint import convert_backbone

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type .bert. is not a supported backbone"):
        convert_backbone(str(tmp_path), tmp_path / "out")
