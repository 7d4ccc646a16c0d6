"""The model: pooling, normalisation, Matryoshka, padding invariance, seeds, config validation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from modeling_vlm2geovec import VLM2GeoVecConfig, last_token_indices, pool_embeddings
from tests.conftest import make_image


def embed(model, processor, items, instruction=None, **kwargs):
    with torch.no_grad():
        return model(**processor(items=items, instruction=instruction), **kwargs).embeddings


def test_last_token_indices_left_right_and_no_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_indices(right).tolist() == [2, 4, 0]
    assert last_token_indices(left).tolist() == [4, 4, 4]


def test_pool_embeddings_last_mean_truncate_normalize():
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    last = pool_embeddings(hidden, mask, "last", normalize=False)
    assert torch.equal(last, torch.stack([hidden[0, 1], hidden[1, 2]]))
    mean = pool_embeddings(hidden, mask, "mean", normalize=False)
    assert torch.allclose(mean, torch.stack([hidden[0, :2].mean(0), hidden[1, 1:].mean(0)]))
    truncated = pool_embeddings(hidden, mask, "last", normalize=True, dim=2)
    assert truncated.shape == (2, 2)
    assert torch.allclose(truncated, F.normalize(last[:, :2], dim=-1))
    with pytest.raises(ValueError, match="pooling"):
        pool_embeddings(hidden, mask, "cls")


def test_config_validation():
    with pytest.raises(ValueError, match="pooling"):
        VLM2GeoVecConfig(pooling="max")
    with pytest.raises(ValueError, match="embedding_dim"):
        VLM2GeoVecConfig(text_config={"hidden_size": 64, "num_attention_heads": 4}, embedding_dim=65)


def test_embeddings_are_unit_vectors_with_expected_shape(nano_model, processor, images):
    items = [{"image": images[0], "bbox": [10, 10, 100, 90], "coords": (29.69, -81.99), "text": "a tree"}, "text only"]
    out = embed(nano_model, processor, items)
    assert out.shape == (2, nano_model.config.text_config.hidden_size)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(out[0], out[1])


def test_embedding_is_hidden_state_of_final_token(nano_model, processor, images):
    inputs = processor(items=[{"image": images[1], "text": "x"}, "a much longer text item " * 5])
    with torch.no_grad():
        out = nano_model(**inputs, output_hidden_states=True)
    last = inputs["attention_mask"].sum(1) - 1  # right padding
    expected = F.normalize(out.last_hidden_state[torch.arange(2), last], dim=-1)
    assert torch.allclose(out.embeddings, expected, atol=1e-6)
    # and that token is <|endoftext|>
    assert (inputs["input_ids"][torch.arange(2), last] == processor.embed_token_id).all()


def test_matryoshka_truncation(nano_model, processor):
    items = ["coastal wetland", {"coords": (-33.85, 151.21)}]
    full = embed(nano_model, processor, items)
    nano_model.config.normalize = False
    raw = embed(nano_model, processor, items)
    nano_model.config.normalize = True
    small = embed(nano_model, processor, items, embedding_dim=32)
    assert small.shape == (2, 32)
    assert torch.allclose(small, F.normalize(raw[:, :32], dim=-1), atol=1e-6)
    nano_model.config.embedding_dim = 16
    assert embed(nano_model, processor, items).shape == (2, 16)
    assert torch.allclose(full.norm(dim=-1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padding_invariance(nano_model, processor, images, padding_side):
    proc = copy.deepcopy(processor)
    proc.tokenizer.padding_side = padding_side
    items = [
        "short",
        {"image": images[0], "bbox": [[5, 5, 50, 50], [100, 20, 290, 190]], "text": "two boxes"},
        [images[1], "then", {"image": images[2]}, {"bbox": [0, 0, 420, 420]}],
        {"coords": (61.2, -149.9), "text": "a long description of a place " * 6},
    ]
    batch = embed(nano_model, proc, items)
    for i, item in enumerate(items):
        alone = embed(nano_model, proc, [item])
        assert (batch[i] - alone[0]).abs().max().item() <= 1e-4, f"item {i} depends on its batch ({padding_side})"


def test_left_and_right_padding_agree(nano_model, processor, images):
    items = ["a", {"image": images[0], "text": "field"}]
    right = embed(nano_model, processor, items)
    proc = copy.deepcopy(processor)
    proc.tokenizer.padding_side = "left"
    left = embed(nano_model, proc, items)
    assert (right - left).abs().max().item() <= 1e-4


def test_instruction_changes_embedding(nano_model, processor):
    plain = embed(nano_model, processor, ["river"])
    instructed = embed(nano_model, processor, ["river"], instruction="Represent the scene class.")
    assert (plain - instructed).abs().max().item() > 1e-3


def test_rope_deltas_do_not_leak_between_calls(nano_model, processor, images):
    first = embed(nano_model, processor, [{"image": images[0], "text": "a"}])
    embed(nano_model, processor, [{"image": images[2]}, "other", "third item"])
    again = embed(nano_model, processor, [{"image": images[0], "text": "a"}])
    assert torch.equal(first, again)


def test_nano_is_deterministic_per_seed():
    from vlm2geovec.checkpoint import build_nano

    a, _ = build_nano(seed=0)
    b, _ = build_nano(seed=0)
    c, _ = build_nano(seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["language_model.layers.0.self_attn.q_proj.weight"], sc["language_model.layers.0.self_attn.q_proj.weight"])


def test_forward_needs_ids_or_mask(nano_model):
    with pytest.raises(ValueError, match="input_ids"):
        nano_model(inputs_embeds=torch.zeros(1, 3, nano_model.config.text_config.hidden_size))


def test_bf16_forward_gives_finite_unit_vectors(nano_model, processor):
    model = nano_model.to(torch.bfloat16)
    inputs = processor(items=["bf16 text", {"image": make_image(64, 64), "text": "x"}])
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    with torch.no_grad():
        out = model(**inputs).embeddings.float()
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-2)
