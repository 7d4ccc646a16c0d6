"""Baselines: the CLIP dual encoder, the OpenCLIP -> transformers converter, and the random encoder.

No real CLIP weights or tokenizer files are available offline, so a tiny random `CLIPModel` stands in, with a
tiny CLIP tokenizer built by the same code path as the real one (`clip_tokenizer_from_bpe`) from a short BPE
merges file written here. The OpenCLIP-format state dict is produced by an inverse mapping written
independently in this file (`hf_to_openclip`), following OpenCLIP's published key layout.
"""

from __future__ import annotations

import gzip
import io
import sys

import numpy as np
import pytest
import torch

from rsmeb_eval.baselines import (
    CLIPDualEncoder,
    RandomEncoder,
    clip_image_processor,
    clip_tokenizer_from_bpe,
    convert_openclip_checkpoint,
    find_clip_bpe,
    infer_openclip_config,
    openclip_to_hf_state_dict,
)
from rsmeb_eval.dataset_io import TaskData, write_dataset
from rsmeb_eval.evaluator import evaluate
from rsmeb_eval.registry import get_task
from tests.conftest import make_image
from tests.test_rsmeb_eval import tiny_tasks

# A few real CLIP merges (they spell "satellite", "water", "image", "bare"): enough to exercise merging.
TINY_MERGES = ["s a", "t e", "l l", "i t", "sa te", "sate ll", "satell it", "satellit e</w>",
               "w a", "wa te", "wate r</w>", "i m", "im a", "ima g", "imag e</w>", "b a", "ba r", "bar e</w>"]


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    path.write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n").encode()))
    return path


@pytest.fixture(scope="module")
def tokenizer(bpe_path):
    return clip_tokenizer_from_bpe(bpe_path, context_length=16)


def tiny_clip(tokenizer, vision_width=128, vision_heads=2, text_width=64, text_heads=1, act="quick_gelu", seed=0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    common = {"num_hidden_layers": 2, "hidden_act": act, "projection_dim": 16}
    config = CLIPConfig(
        text_config={**common, "vocab_size": len(tokenizer), "hidden_size": text_width,
                     "intermediate_size": 2 * text_width, "num_attention_heads": text_heads,
                     "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**common, "hidden_size": vision_width, "intermediate_size": 4 * vision_width,
                       "num_attention_heads": vision_heads, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():  # random, not-unit LayerNorms and biases, so a mis-mapped tensor cannot hide
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias") or "class_embedding" in name:
                param.add_(0.1 * torch.randn_like(param))
        model.logit_scale.fill_(3.1)
    return model


def hf_to_openclip(model) -> dict[str, torch.Tensor]:
    """The inverse of the converter, written independently: HF CLIPModel -> OpenCLIP ViT key layout."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}

    def block(src: str, dst: str, layers: int) -> None:
        for i in range(layers):
            s, d = f"{src}.{i}", f"{dst}.{i}"
            for kind in ("weight", "bias"):
                out[f"{d}.attn.in_proj_{kind}"] = torch.cat(
                    [sd[f"{s}.self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")], dim=0)
                out[f"{d}.attn.out_proj.{kind}"] = sd[f"{s}.self_attn.out_proj.{kind}"]
                out[f"{d}.ln_1.{kind}"] = sd[f"{s}.layer_norm1.{kind}"]
                out[f"{d}.ln_2.{kind}"] = sd[f"{s}.layer_norm2.{kind}"]
                out[f"{d}.mlp.c_fc.{kind}"] = sd[f"{s}.mlp.fc1.{kind}"]
                out[f"{d}.mlp.c_proj.{kind}"] = sd[f"{s}.mlp.fc2.{kind}"]

    v, t = "vision_model", "text_model"
    out["visual.conv1.weight"] = sd[f"{v}.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = sd[f"{v}.embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd[f"{v}.embeddings.position_embedding.weight"]
    for kind in ("weight", "bias"):
        out[f"visual.ln_pre.{kind}"] = sd[f"{v}.pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = sd[f"{v}.post_layernorm.{kind}"]
        out[f"ln_final.{kind}"] = sd[f"{t}.final_layer_norm.{kind}"]
    block(f"{v}.encoder.layers", "visual.transformer.resblocks", model.config.vision_config.num_hidden_layers)
    out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()  # OpenCLIP applies x @ proj
    out["token_embedding.weight"] = sd[f"{t}.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd[f"{t}.embeddings.position_embedding.weight"]
    block(f"{t}.encoder.layers", "transformer.resblocks", model.config.text_config.num_hidden_layers)
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return out


def _features(model, pixels, ids):
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    as_tensor = lambda out: out if isinstance(out, torch.Tensor) else out.pooler_output  # noqa: E731
    return as_tensor(image), as_tensor(text)


@pytest.fixture(scope="module")
def original(tokenizer):
    return tiny_clip(tokenizer)


@pytest.fixture(scope="module")
def converted_dir(original, bpe_path, tmp_path_factory):
    """The tiny model through OpenCLIP format on disk (DDP prefix, training wrapper, an OpenAI bookkeeping key)."""
    folder = tmp_path_factory.mktemp("openclip")
    state = {f"module.{k}": v for k, v in hf_to_openclip(original).items()}
    state["module.input_resolution"] = torch.tensor(32)
    torch.save({"state_dict": state, "epoch": 3}, folder / "tiny-openclip.pt")
    return convert_openclip_checkpoint(folder / "tiny-openclip.pt", folder / "tiny-hf", quick_gelu=True,
                                       tokenizer_dir=bpe_path)


def test_tiny_tokenizer_has_clips_vocabulary_layout(tokenizer):
    assert len(tokenizer) == 512 + len(TINY_MERGES) + 2
    assert tokenizer.convert_tokens_to_ids("a</w>") == 320  # the real CLIP id of "a" (byte table + </w> block)
    ids = tokenizer("A  satellite image of Water")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == len(tokenizer) - 2
    assert ids[-1] == tokenizer.eos_token_id == len(tokenizer) - 1  # EOT is the top id: argmax pooling finds it
    assert tokenizer.convert_ids_to_tokens(ids[1:4]) == ["a</w>", "satellite</w>", "image</w>"]
    assert tokenizer.convert_ids_to_tokens(ids[-2]) == "water</w>"
    assert tokenizer.model_max_length == 16


def test_bpe_file_is_found_inside_an_installed_package_without_importing_it(bpe_path, tmp_path, monkeypatch):
    import importlib

    package = tmp_path / "site" / "clip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "bpe_simple_vocab_16e6.txt.gz").write_bytes(bpe_path.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "open_clip", raising=False)
    found = find_clip_bpe()
    assert found is not None and found.read_bytes() == bpe_path.read_bytes() and "clip" not in sys.modules


def test_round_trip_through_openclip_format_reproduces_features(original, converted_dir, tokenizer):
    from transformers import CLIPModel, CLIPProcessor

    sizes = infer_openclip_config(hf_to_openclip(original))
    assert sizes == {"vision_layers": 2, "vision_width": 128, "vision_patch_size": 8, "image_size": 32,
                     "vision_heads": 2, "vision_mlp_dim": 512, "text_layers": 2, "text_width": 64, "text_heads": 1,
                     "text_mlp_dim": 128, "embed_dim": 16, "vocab_size": len(tokenizer), "context_length": 16}
    loaded = CLIPModel.from_pretrained(str(converted_dir)).eval()
    assert loaded.config.vision_config.hidden_act == loaded.config.text_config.hidden_act == "quick_gelu"
    assert loaded.config.text_config.eos_token_id == tokenizer.eos_token_id
    assert loaded.logit_scale.item() == pytest.approx(3.1)
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 32, 32)
    ids = tokenizer(["a satellite image of water", "bare", "image of a field"], padding=True, return_tensors="pt")
    for got, want in zip(_features(loaded, pixels, ids), _features(original, pixels, ids)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert _features(original, pixels, ids)[0].abs().max() > 0.1  # not trivially zero
    processor = CLIPProcessor.from_pretrained(str(converted_dir))
    assert processor.tokenizer("bare water")["input_ids"] == tokenizer("bare water")["input_ids"]
    crop = processor.image_processor.crop_size
    assert (crop.height, crop.width, processor.image_processor.size.shortest_edge) == (32, 32, 32)


def test_explicit_sizes_and_heads_convert_a_non_standard_head_width(bpe_path, tokenizer, tmp_path):
    from transformers import CLIPModel

    model = tiny_clip(tokenizer, vision_width=32, vision_heads=2, text_width=32, text_heads=2, act="gelu", seed=2)
    state = hf_to_openclip(model)
    assert infer_openclip_config(state)["text_heads"] == 1  # the width // 64 convention cannot know
    out = convert_openclip_checkpoint(state, tmp_path / "hf", 2, 32, 8, 32, 2, 32, 2, 2, 16, len(tokenizer), 16,
                                      quick_gelu=False, tokenizer_dir=bpe_path)
    loaded = CLIPModel.from_pretrained(str(out)).eval()
    assert loaded.config.text_config.num_attention_heads == loaded.config.vision_config.num_attention_heads == 2
    torch.manual_seed(3)
    pixels = torch.randn(2, 3, 32, 32)
    ids = tokenizer(["water", "a bare satellite image"], padding=True, return_tensors="pt")
    for got, want in zip(_features(loaded, pixels, ids), _features(model, pixels, ids)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="does not match the weights"):
        convert_openclip_checkpoint(state, tmp_path / "bad", vision_width=64, quick_gelu=False, tokenizer_dir=bpe_path)


def test_the_activation_flag_matters(original, bpe_path, tokenizer, tmp_path):
    from transformers import CLIPModel

    out = convert_openclip_checkpoint(hf_to_openclip(original), tmp_path / "gelu", quick_gelu=False,
                                      tokenizer_dir=bpe_path)
    loaded = CLIPModel.from_pretrained(str(out)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ids = tokenizer(["water"], return_tensors="pt")
    got, want = _features(loaded, pixels, ids)[0], _features(original, pixels, ids)[0]
    assert not torch.allclose(got, want, atol=1e-4)
    with pytest.warns(UserWarning, match="quick_gelu not given"):
        convert_openclip_checkpoint(hf_to_openclip(original), tmp_path / "guess", tokenizer_dir=bpe_path)


def test_converter_rejects_what_it_cannot_map(original):
    state = hf_to_openclip(original)
    with pytest.raises(ValueError, match="unsupported OpenCLIP keys"):
        openclip_to_hf_state_dict({**state, "visual.transformer.resblocks.0.ls_1.gamma": torch.ones(128)})
    resnet = {"visual.layer1.0.conv1.weight": torch.ones(1), "visual.attnpool.c_proj.weight": torch.ones(1)}
    with pytest.raises(ValueError, match="ResNet"):
        infer_openclip_config(resnet)
    with pytest.raises(ValueError, match="missing"):
        openclip_to_hf_state_dict({k: v for k, v in state.items() if k != "visual.ln_post.bias"})


def test_tokenizer_that_does_not_fit_the_embeddings_is_refused(original, tmp_path):
    bpe = tmp_path / "other.txt"
    bpe.write_text("#version: 0.2\ns a\n")
    with pytest.raises(ValueError, match="not this model's tokenizer"):
        convert_openclip_checkpoint(hf_to_openclip(original), tmp_path / "x", quick_gelu=True, tokenizer_dir=bpe)


def test_dual_encoder_embeds_single_modalities_in_order(original, converted_dir, tokenizer):
    from transformers import CLIPProcessor

    from_folder = CLIPDualEncoder(converted_dir)
    assert from_folder.name == "tiny-hf" and len(from_folder.fingerprint) == 64
    in_memory = CLIPDualEncoder(original, CLIPProcessor(image_processor=clip_image_processor(32), tokenizer=tokenizer))
    assert in_memory.fingerprint is None
    assert from_folder.supports(("image",)) and from_folder.supports(("text",))
    assert not any(from_folder.supports(m) for m in [("image", "bbox"), ("image", "text"), ("coords",), ("text", "coords")])

    png = io.BytesIO()
    make_image(48, 40, 5).save(png, format="PNG")
    items = [{"text": "a satellite image of water"}, {"image": png.getvalue()}, {"image": make_image(64, 64, 1)},
             {"text": "bare"}]
    vectors = from_folder.encode(items, "Represent the image", batch_size=1, show_progress_bar=True)
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(in_memory.encode(items, None, batch_size=3), vectors, atol=1e-5)
    np.testing.assert_allclose(from_folder.encode(items[:1], "another instruction"), vectors[:1], atol=1e-6)

    # By hand: CLIP preprocessing (short side -> 32, centre crop, OpenAI mean/std) and the projected towers.
    with torch.no_grad():
        pixels = clip_image_processor(32)(images=[make_image(64, 64, 1)], return_tensors="pt")["pixel_values"]
        image = torch.nn.functional.normalize(_features(original, pixels, tokenizer(["x"], return_tensors="pt"))[0], dim=-1)
    np.testing.assert_allclose(vectors[2], image[0].numpy(), atol=1e-5)

    with pytest.raises(ValueError, match="image\\+bbox"):
        from_folder.encode([{"image": make_image(32, 32), "bbox": [[0, 0, 4, 4]]}], None)
    with pytest.raises(ValueError, match="image\\+text"):
        from_folder.encode([{"image": make_image(32, 32), "text": "water"}], None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rsmeb-baselines") / "data"
    write_dataset(folder, tiny_tasks(), title="RSMEB baselines test")
    return folder


def test_dual_encoder_through_the_harness(converted_dir, data_dir, tmp_path):
    encoder = CLIPDualEncoder(converted_dir)
    results = evaluate(encoder, data_dir, cache_dir=tmp_path / "cache", show_progress_bar=False)
    scene = results["tasks"]["S2Lite-SceneCls"]
    assert scene["status"] == "ok" and 0.0 <= scene["p@1"] <= 1.0 and scene["n_queries"] == 6
    assert scene["embedded"] == 9  # 6 chips + 3 class captions
    region = results["tasks"]["NEONLite-RegionCaption"]
    assert region["status"] == "unsupported" and "image+bbox" in region["reason"] and "tiny-hf" in region["reason"]
    assert set(results["families"]) == {"scene_classification"}
    again = evaluate(CLIPDualEncoder(converted_dir), data_dir, cache_dir=tmp_path / "cache", show_progress_bar=False)
    assert again["tasks"]["S2Lite-SceneCls"]["embedded"] == 0  # folder fingerprint keys the embedding cache
    assert again["tasks"]["S2Lite-SceneCls"]["p@1"] == scene["p@1"]


def test_random_encoder_is_deterministic_unit_and_content_keyed():
    png = io.BytesIO()
    make_image(16, 16, 0).save(png, format="PNG")
    items = [{"text": "water"}, {"text": "bare"}, {"image": png.getvalue()}, {"image": make_image(16, 16, 1)},
             {"image": png.getvalue(), "bbox": [[0, 0, 4, 4]]}, {"coords": (48.1, 11.6)}, {"text": "water"}]
    encoder = RandomEncoder(seed=0, dim=32)
    first = encoder.encode(items, "find it")
    assert first.shape == (7, 32) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(first, RandomEncoder(seed=0, dim=32).encode(items, "find it"))
    np.testing.assert_array_equal(first[0], first[6])  # same content, same vector
    gram = first[:6] @ first[:6].T
    assert np.all(np.abs(gram[~np.eye(6, dtype=bool)]) < 0.99)  # distinct items differ
    assert not np.allclose(encoder.encode(items[:1], "other"), first[:1])
    assert not np.allclose(RandomEncoder(seed=1, dim=32).encode(items[:1], "find it"), first[:1])
    assert encoder.fingerprint == "random-0-32" and all(encoder.supports(m) for m in [("image", "bbox"), ("coords",)])


def test_random_encoder_scores_near_chance(data_dir, tmp_path):
    classes = ["water", "vegetation", "bare"]
    n = 150
    scene = TaskData(
        queries=[{"query_id": f"q{i}", "image": make_image(8, 8, 100 + i), "candidate_ids": classes,
                  "positive_ids": [classes[i % 3]]} for i in range(n)],
        corpus=[{"id": c, "text": f"a satellite image of {c}"} for c in classes],
    )
    folder = tmp_path / "data"
    write_dataset(folder, {"S2Lite-SceneCls": {"test": scene, "train": scene}}, title="chance")
    task = get_task("S2Lite-SceneCls")
    scores = []
    for seed in range(5):
        result = evaluate(RandomEncoder(seed=seed), folder, tasks=[task], show_progress_bar=False)
        scores.append(result["tasks"]["S2Lite-SceneCls"]["p@1"])
        assert result["tasks"]["S2Lite-SceneCls"]["chance"] == pytest.approx(1 / 3)
    assert len(set(scores)) > 1  # seeds differ
    assert abs(np.mean(scores) - 1 / 3) < 0.1 and all(0.15 < s < 0.55 for s in scores)
    tiny = evaluate(RandomEncoder(), data_dir, show_progress_bar=False)
    assert {r["status"] for r in tiny["tasks"].values()} == {"ok"}  # every modality is "supported"


def test_without_a_tokenizer_offline_the_folder_is_written_and_the_encoder_asks_for_one(
        original, tokenizer, tmp_path, monkeypatch):
    import rsmeb_eval.baselines as baselines
    from transformers import CLIPProcessor

    monkeypatch.setattr(baselines, "find_clip_bpe", lambda: None)
    with pytest.warns(UserWarning, match="without a tokenizer"):
        out = convert_openclip_checkpoint(hf_to_openclip(original), tmp_path / "no-tok", quick_gelu=True)
    assert not (out / "tokenizer.json").exists() and (out / "preprocessor_config.json").is_file()
    with pytest.raises(ValueError, match="processor="):
        CLIPDualEncoder(out)
    processor = CLIPProcessor(image_processor=clip_image_processor(32), tokenizer=tokenizer)
    vector = CLIPDualEncoder(out, processor=processor).encode([{"text": "water"}], None)
    assert vector.shape == (1, 16)
