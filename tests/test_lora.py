"""LoRA/DoRA through peft: targets, training, adapter and merged checkpoints, loaders, fresh processes."""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest
import torch

from tests.conftest import run_python

LM_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
VISION_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
NANO_LAYERS = 2  # language and vision blocks of the nano model


def lora_items(images):
    return [
        {"image": images[0], "bbox": [20, 30, 140, 160], "text": "the crown in the box"},
        "a barrier island with a sandy beach",
        {"coords": (29.69, -81.99)},
        [{"image": images[2]}, {"bbox": [0, 0, 210, 210]}, "north-west quarter"],
    ]


def adapted_modules(peft_model) -> set[str]:
    """Names (relative to the VLM2GeoVec model) of the modules that carry a LoRA adapter."""
    prefix = "base_model.model."
    return {name[len(prefix):] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}


def train_steps(st, items, steps: int = 3, lr: float = 5e-2, seed: int = 0) -> None:
    """A few optimiser steps towards random targets, so every adapter's B moves away from zero."""
    generator = torch.Generator().manual_seed(seed)
    parameters = [p for p in st.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    st.train()
    features = st.preprocess(items)
    targets = torch.randn(len(items), st.get_embedding_dimension(), generator=generator)
    for _ in range(steps):
        optimizer.zero_grad()
        embeddings = st(dict(features))["sentence_embedding"]
        loss = (embeddings - torch.nn.functional.normalize(targets, dim=-1)).pow(2).sum()
        loss.backward()
        optimizer.step()
    st.eval()


def max_diff(a, b) -> float:
    return (torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max().item()


# ---------------------------------------------------------------------------------------------- targets


def test_default_targets_language_model_only(nano_model):
    from vlm2geovec_train.lora import LoraSettings, apply_lora, count_parameters

    base_total = sum(p.numel() for p in nano_model.parameters())
    settings = LoraSettings()
    assert (settings.r, settings.alpha, settings.dropout, settings.use_dora, settings.include_vision) == (
        16, 64, 0.1, False, False)
    peft_model = apply_lora(nano_model, settings)
    expected = {f"language_model.layers.{i}.{t}" for i in range(NANO_LAYERS) for t in LM_TARGETS}
    assert adapted_modules(peft_model) == expected
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(re.search(r"\.lora_[AB]\.default\.weight$", name) for name in trainable), trainable
    assert all(".language_model.layers." in name for name in trainable)
    assert not any("visual" in name for name in trainable)
    # The vision tower's own linear layers are untouched plain nn.Linear modules, every one frozen.
    visual = peft_model.get_base_model().visual
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        assert type(visual.blocks[0].get_submodule(name)) is torch.nn.Linear
    assert not any(p.requires_grad for p in visual.parameters())
    # r * (in + out) per adapted layer: q, o 128->128; k, v 128->64; gate, up 128->256; down 256->128.
    per_layer = 16 * ((128 + 128) * 2 + (128 + 64) * 2 + (128 + 256) * 3)
    assert count_parameters(peft_model) == (NANO_LAYERS * per_layer, base_total + NANO_LAYERS * per_layer)
    assert peft_model.peft_config["default"].lora_alpha == 64 and peft_model.peft_config["default"].lora_dropout == 0.1


def test_include_vision_adds_vision_blocks(nano_model):
    from vlm2geovec_train.lora import LoraSettings, apply_lora

    peft_model = apply_lora(nano_model, LoraSettings(include_vision=True))
    names = adapted_modules(peft_model)
    vision = {f"visual.blocks.{i}.{t}" for i in range(NANO_LAYERS) for t in VISION_TARGETS}
    language = {f"language_model.layers.{i}.{t}" for i in range(NANO_LAYERS) for t in LM_TARGETS}
    assert names == vision | language
    assert not any(name.startswith("visual.merger") for name in names)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any(".visual.blocks.0.attn.qkv.lora_B." in name for name in trainable)


def test_target_modules_subset(nano_model):
    from vlm2geovec_train.lora import LoraSettings, apply_lora

    peft_model = apply_lora(nano_model, LoraSettings(target_modules=("q_proj", "v_proj"), r=4))
    assert adapted_modules(peft_model) == {
        f"language_model.layers.{i}.self_attn.{t}" for i in range(NANO_LAYERS) for t in ("q_proj", "v_proj")}


def test_dora_adds_magnitudes_and_merges_exactly(nano_model, processor, images):
    from vlm2geovec_train.lora import LoraSettings, apply_lora

    peft_model = apply_lora(nano_model, LoraSettings(use_dora=True))
    magnitudes = {name for name, p in peft_model.named_parameters() if "lora_magnitude_vector" in name}
    assert len(magnitudes) == NANO_LAYERS * len(LM_TARGETS)
    assert all(p.requires_grad for name, p in peft_model.named_parameters() if name in magnitudes)
    inputs = processor(items=lora_items(images))
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=5e-2)
    peft_model.train()
    for _ in range(2):
        optimizer.zero_grad()
        peft_model(**inputs).embeddings[:, 0].sum().backward()
        optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(**inputs).embeddings
        merged = peft_model.merge_and_unload()(**inputs).embeddings
    assert max_diff(unmerged, merged) <= 1e-4


# ------------------------------------------------------------------------------- train, save and reload


@pytest.fixture(scope="module")
def trained(nano_dir, images, tmp_path_factory):
    """Base vectors; LoRA applied and trained a few steps; the adapter and the merged checkpoint written."""
    from sentence_transformers import SentenceTransformer

    from vlm2geovec_train.lora import LoraSettings, apply_lora, merge_and_save, save_adapter

    root = tmp_path_factory.mktemp("lora")
    items = lora_items(images)
    st = SentenceTransformer(str(nano_dir), trust_remote_code=True, device="cpu")
    base_vectors = st.encode(items, convert_to_tensor=True)
    apply_lora(st, LoraSettings())
    untrained_vectors = st.encode(items, convert_to_tensor=True)
    train_steps(st, items)
    lora_B = [p for name, p in st.named_parameters() if "lora_B" in name]
    assert lora_B and all(p.abs().max().item() > 0 for p in lora_B)
    trained_vectors = st.encode(items, convert_to_tensor=True)
    adapter_dir = root / "adapter"
    # Relative to the adapter folder, so the pair can move together and load from any working directory.
    base_ref = os.path.relpath(nano_dir, adapter_dir)
    save_adapter(st, adapter_dir, base_path=base_ref)
    merged_dir = merge_and_save(st, root / "merged")
    merged_in_memory = st.encode(items, convert_to_tensor=True)
    return dict(root=root, items=items, base=base_vectors, untrained=untrained_vectors, trained=trained_vectors,
                merged_in_memory=merged_in_memory, adapter_dir=adapter_dir, merged_dir=merged_dir, base_ref=base_ref)


def test_untrained_lora_equals_base(trained):
    assert max_diff(trained["untrained"], trained["base"]) <= 1e-6


def test_training_changes_embeddings(trained):
    assert max_diff(trained["trained"], trained["base"]) > 1e-3
    assert max_diff(trained["merged_in_memory"], trained["trained"]) <= 1e-4


def test_adapter_folder_layout(trained, nano_dir):
    adapter_dir = trained["adapter_dir"]
    names = {p.name for p in adapter_dir.iterdir()}
    expected = {
        "adapter_config.json", "adapter_model.safetensors", "modules.json", "config_sentence_transformers.json",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
        "modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py",
    }
    assert expected <= names, expected - names
    assert not {"model.safetensors", "config.json"} & names  # no base weights, no half-written model config
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == trained["base_ref"] and not os.path.isabs(trained["base_ref"])
    assert config["peft_type"] == "LORA" and config["r"] == 16 and config["lora_alpha"] == 64
    assert re.fullmatch(config["target_modules"], "language_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(config["target_modules"], "visual.blocks.0.attn.qkv")
    modules = json.loads((adapter_dir / "modules.json").read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": "st_vlm2geovec.VLM2GeoVecEmbedder"}]
    processor_config = json.loads((adapter_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_vlm2geovec.VLM2GeoVecProcessor"}
    adapter_bytes = (adapter_dir / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (nano_dir / "model.safetensors").stat().st_size / 50
    # the adapter's weights get the mode of every other file (safetensors alone writes 0600)
    assert (adapter_dir / "adapter_model.safetensors").stat().st_mode & 0o777 == (adapter_dir / "modules.json").stat().st_mode & 0o777


def test_merged_folder_layout(trained, nano_dir):
    merged = {p.name for p in trained["merged_dir"].iterdir()}
    assert {p.name for p in nano_dir.iterdir()} <= merged
    assert not {"adapter_config.json", "adapter_model.safetensors"} & merged


def test_adapter_and_merged_checkpoints_agree(trained):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoProcessor

    items = trained["items"]
    adapter = SentenceTransformer(str(trained["adapter_dir"]), trust_remote_code=True, device="cpu")
    assert type(adapter[0].model).__name__ == "VLM2GeoVecModel"  # merged for inference by default
    merged = SentenceTransformer(str(trained["merged_dir"]), trust_remote_code=True, device="cpu")
    unmerged = SentenceTransformer(str(trained["adapter_dir"]), trust_remote_code=True, device="cpu",
                                   model_kwargs={"merge_adapter": False})
    assert type(unmerged[0].model).__name__ == "PeftModel"
    vectors = {
        "adapter": adapter.encode(items, convert_to_tensor=True),
        "merged": merged.encode(items, convert_to_tensor=True),
        "unmerged": unmerged.encode(items, convert_to_tensor=True),
    }
    model = AutoModel.from_pretrained(str(trained["merged_dir"]), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(str(trained["merged_dir"]), trust_remote_code=True)
    with torch.no_grad():
        vectors["automodel"] = model(**processor(items=items)).embeddings
    for name, value in vectors.items():
        assert max_diff(value, trained["trained"]) <= 1e-4, name
    assert max_diff(vectors["adapter"], vectors["merged"]) <= 1e-4


def test_load_adapter_model_plain_transformers(trained):
    from transformers import AutoProcessor

    from vlm2geovec_train.lora import load_adapter_model

    items = trained["items"]
    processor = AutoProcessor.from_pretrained(str(trained["adapter_dir"]), trust_remote_code=True)
    inputs = processor(items=items)
    with torch.no_grad():
        peft_model = load_adapter_model(trained["adapter_dir"])
        assert type(peft_model).__name__ == "PeftModel"
        unmerged = peft_model(**inputs).embeddings
        merged = load_adapter_model(trained["adapter_dir"], merge=True)(**inputs).embeddings
    assert max_diff(unmerged, trained["trained"]) <= 1e-4
    assert max_diff(merged, trained["trained"]) <= 1e-4


def test_adapter_without_peft_says_how_to_fix(trained, monkeypatch):
    import st_vlm2geovec

    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ImportError, match="pip install peft"):
        st_vlm2geovec.VLM2GeoVecEmbedder.load(str(trained["adapter_dir"]))


def test_apply_lora_twice_is_refused(trained):
    from sentence_transformers import SentenceTransformer

    from vlm2geovec_train.lora import apply_lora

    unmerged = SentenceTransformer(str(trained["adapter_dir"]), trust_remote_code=True, device="cpu",
                                   model_kwargs={"merge_adapter": False})
    with pytest.raises(ValueError, match="already carries peft adapters"):
        apply_lora(unmerged)


FRESH_PROCESS = r"""
import json
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer
paths = json.loads(open("args.json").read())
images = [Image.open(p).convert("RGB") for p in paths["images"]]
items = [
    {"image": images[0], "bbox": [20, 30, 140, 160], "text": "the crown in the box"},
    "a barrier island with a sandy beach",
    {"coords": (29.69, -81.99)},
    [{"image": images[1]}, {"bbox": [0, 0, 210, 210]}, "north-west quarter"],
]
out = {}
for name in ("adapter", "merged"):
    st = SentenceTransformer(paths[name], trust_remote_code=True, device="cpu")
    out[name] = st.encode(items, convert_to_numpy=True).tolist()
    out[name + "_module"] = type(st[0]).__module__
print("VECTORS" + json.dumps(out))
"""


@pytest.mark.slow
def test_fresh_process_in_another_directory(trained, images, tmp_path):
    hf_home = tmp_path / "hf"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    image_paths = []
    for index in (0, 2):  # the images lora_items uses, saved losslessly
        path = tmp_path / f"image{index}.png"
        images[index].save(path)
        image_paths.append(str(path))
    args = {"images": image_paths, "adapter": str(trained["adapter_dir"]), "merged": str(trained["merged_dir"])}
    (workdir / "args.json").write_text(json.dumps(args))
    stdout = run_python(FRESH_PROCESS, cwd=workdir,
                        env_extra={"HF_HOME": str(hf_home), "HF_MODULES_CACHE": str(hf_home / "modules")})
    out = json.loads(stdout.split("VECTORS", 1)[1])
    # Both modules ran as remote code from the fresh cache (relative base resolved against the adapter folder).
    assert out["adapter_module"].startswith("transformers_modules.") and out["merged_module"].startswith(
        "transformers_modules.")
    assert (hf_home / "modules").is_dir()
    adapter, merged = np.asarray(out["adapter"]), np.asarray(out["merged"])
    assert np.abs(adapter - merged).max() <= 1e-4
    assert np.abs(adapter - trained["trained"].numpy()).max() <= 1e-4


@pytest.mark.slow
def test_sentence_transformers_trainer_trains_only_adapters_and_resumes(nano_dir, tmp_path):
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from vlm2geovec_train.losses import MultimodalMNRLoss
    from vlm2geovec_train.lora import apply_lora

    def trainer_for(st, max_steps):
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / "trainer"), per_device_train_batch_size=4, max_steps=max_steps,
            learning_rate=1e-2, save_strategy="steps", save_steps=1, report_to="none", disable_tqdm=True,
            use_cpu=True)
        st.model_card_data.set_widget_examples = lambda dataset: None
        data = Dataset.from_dict({"anchor": [f"query {i}" for i in range(8)],
                                  "positive": [f"field number {i} by the river" for i in range(8)]})
        return SentenceTransformerTrainer(model=st, args=args, train_dataset=data,
                                          loss=MultimodalMNRLoss(st, temperature=0.02))

    st = apply_lora(SentenceTransformer(str(nano_dir), trust_remote_code=True, device="cpu"))
    frozen_before = {name: p.detach().clone() for name, p in st.named_parameters() if not p.requires_grad}
    trainer_for(st, max_steps=1).train()
    assert all(torch.equal(p, frozen_before[name]) for name, p in st.named_parameters() if not p.requires_grad)
    assert any(p.abs().max().item() > 0 for name, p in st.named_parameters() if "lora_B" in name)
    checkpoint = tmp_path / "trainer" / "checkpoint-1"
    assert (checkpoint / "adapter_config.json").is_file() and (checkpoint / "trainer_state.json").is_file()
    # A Trainer checkpoint loads unmerged, so resuming can load its state dict into the LoRA model.
    reloaded = SentenceTransformer(str(checkpoint), trust_remote_code=True, device="cpu")
    assert type(reloaded[0].model).__name__ == "PeftModel"
    assert max_diff(reloaded.encode(["query 1"], convert_to_tensor=True),
                    st.encode(["query 1"], convert_to_tensor=True)) <= 1e-5
    resumed = apply_lora(SentenceTransformer(str(nano_dir), trust_remote_code=True, device="cpu"))
    trainer_for(resumed, max_steps=2).train(resume_from_checkpoint=str(checkpoint))
    assert (tmp_path / "trainer" / "checkpoint-2" / "adapter_model.safetensors").is_file()
