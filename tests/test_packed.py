"""The packed forward (``model(..., packed=True)``: one sequence of the batch's real tokens, attention kept inside
each item) gives the padded forward's vectors for every input kind and every backbone family."""

from __future__ import annotations

import pytest
import torch

from modeling_vlm2geovec import FAMILY_MODEL_CLASSES, pack_language_model, pack_language_model_inputs
from tests.conftest import make_image

FAMILIES = sorted(FAMILY_MODEL_CLASSES)
TOLERANCE = 1e-5  # fp32, cosine-normalised vectors


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    from vlm2geovec.checkpoint import build_nano

    model, processor = build_nano(seed=0, family=request.param)
    return request.param, model, processor


def input_kinds():
    wide, tall, square = make_image(300, 200, 0), make_image(160, 240, 1), make_image(420, 420, 2)
    return {
        "text": ["a river delta", "dense conifer forest with a few dead standing trees " * 6],
        "image": [wide, {"image": square}],
        "image+box": [{"image": wide, "bbox": [10, 20, 120, 150]}, {"image": tall, "bbox": [[0, 0, 40, 40], [50, 60, 150, 230]]}],
        "coordinates": [{"coords": (29.69, -81.99)}, {"coords": (-33.9, 151.2), "text": "harbour"}],
        "two images": [[wide, "before and after", tall], [{"image": square}, {"image": wide}]],
    }


def mixed_batch():
    """Very different lengths in one batch: a few tokens next to hundreds."""
    kinds = input_kinds()
    return ["bare ground", kinds["two images"][0], {"coords": (0.0, 0.0)}, kinds["image+box"][1],
            "grassland " * 80, kinds["image"][1]]


def embed(model, processor, items, **kwargs):
    with torch.inference_mode():
        return model(**processor(items=items), output_hidden_states=True, **kwargs)


@pytest.mark.parametrize("kind", [*input_kinds(), "mixed"])
def test_packed_equals_padded_for_every_input_kind(family_model, kind):
    family, model, processor = family_model
    items = mixed_batch() if kind == "mixed" else input_kinds()[kind]
    batch = processor(items=items)
    padding = 1 - batch["attention_mask"].float().mean().item()
    padded, packed = embed(model, processor, items), embed(model, processor, items, packed=True)
    assert packed.embeddings.shape == padded.embeddings.shape == (len(items), model.config.text_config.hidden_size)
    assert (packed.embeddings - padded.embeddings).abs().max().item() <= TOLERANCE, (family, kind)
    # every real token's state agrees too, and padding comes back as zeros (nothing computed there)
    keep = batch["attention_mask"].bool()
    assert (packed.last_hidden_state[keep] - padded.last_hidden_state[keep]).abs().max().item() <= 1e-4
    assert not packed.last_hidden_state[~keep].any()
    if kind == "mixed":
        assert padding > 0.4  # the case packing exists for


def test_packed_vectors_do_not_depend_on_the_neighbours(family_model):
    """Attention never crosses items: an item packed with others gets the vector it gets alone."""
    family, model, processor = family_model
    items = mixed_batch()
    together = embed(model, processor, items, packed=True).embeddings
    alone = torch.cat([embed(model, processor, [item]).embeddings for item in items])
    assert (together - alone).abs().max().item() <= TOLERANCE, family


def test_packed_inputs_restart_positions_and_keep_only_real_tokens():
    """One packed row of the real tokens; the text positions restart at 0 per item (where transformers finds the
    item boundaries), the M-RoPE rows are the padded ones at the kept tokens."""
    attention_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    embeds = torch.arange(12 * 2, dtype=torch.float32).view(3, 4, 2)
    rope = torch.arange(3 * 3 * 4).view(3, 3, 4)
    visual = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    packed = pack_language_model_inputs(
        {"inputs_embeds": embeds, "position_ids": rope, "attention_mask": attention_mask, "visual_pos_masks": visual},
        attention_mask)
    keep = attention_mask.bool()
    assert packed["attention_mask"] is None
    assert packed["inputs_embeds"].shape == (1, 9, 2) and torch.equal(packed["inputs_embeds"][0], embeds[keep])
    positions = packed["position_ids"]
    assert positions.shape == (4, 1, 9)
    assert positions[0, 0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert torch.equal(positions[1:, 0], rope[:, keep])
    assert packed["visual_pos_masks"].tolist() == [[False, True, False, False, False, True, True, False, False]]
    text_only = pack_language_model_inputs({"inputs_embeds": embeds, "position_ids": None}, attention_mask)
    assert torch.equal(text_only["position_ids"][1], text_only["position_ids"][0])  # 0..n-1 per item on every axis
    with pytest.raises(ValueError, match=r"attention_mask has shape \(3, 3\), the inputs \(3, 4\)"):
        pack_language_model_inputs({"inputs_embeds": embeds}, attention_mask[:, :3])


def test_packing_hooks_are_removed_even_after_an_error(family_model):
    family, model, processor = family_model
    language_model = model.language_model
    before = (dict(language_model._forward_pre_hooks), dict(language_model._forward_hooks))
    with pytest.raises(RuntimeError, match="boom"):
        with pack_language_model(model, torch.ones(1, 3, dtype=torch.long)):
            assert len(language_model._forward_pre_hooks) == len(before[0]) + 1
            raise RuntimeError("boom")
    assert (dict(language_model._forward_pre_hooks), dict(language_model._forward_hooks)) == before
    embed(model, processor, ["a tree"], packed=True)
    assert (dict(language_model._forward_pre_hooks), dict(language_model._forward_hooks)) == before


def test_sdpa_runs_item_by_item_and_eager_takes_the_block_mask(family_model):
    """On SDPA the packed call runs `varlen_sdpa_attention` (one SDPA per item, no (tokens x tokens) mask) and puts
    SDPA back afterwards; on eager attention transformers' own block-diagonal causal mask does the same job."""
    from modeling_vlm2geovec import VARLEN_SDPA

    family, model, processor = family_model
    items = mixed_batch()
    reference = embed(model, processor, items).embeddings
    text_config = model.language_model.config
    seen = []
    attention = model.language_model.layers[0].self_attn
    handle = attention.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((text_config._attn_implementation, kwargs.get("attention_mask"))),
        with_kwargs=True)
    try:
        packed = embed(model, processor, items, packed=True).embeddings
    finally:
        handle.remove()
    assert seen == [(VARLEN_SDPA, None)] and text_config._attn_implementation == "sdpa"
    assert (packed - reference).abs().max().item() <= TOLERANCE
    model.set_attn_implementation("eager")
    try:
        eager_packed = embed(model, processor, items, packed=True).embeddings
        assert text_config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
    assert (eager_packed - reference).abs().max().item() <= TOLERANCE
