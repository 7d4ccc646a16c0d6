"""`export vllm`: the export loads as the backbone's native transformers class (no remote code) and, fed the requests
the client helpers build, gives our vectors; the two request forms render the same text. vLLM itself is not
installed here (no GPU): that part of the chain is exercised through transformers, which vLLM's pooling runner
mirrors; `bench/` holds no vLLM numbers."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from processing_vlm2geovec import IMAGE_TOKEN
from vlm2geovec.vllm_export import NATIVE_CLASSES, export_for_vllm, openai_messages, vllm_prompts

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def _image(width, height, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


ITEMS = {
    "text": "a harbour with container cranes",
    "image": _image(300, 200, 4),
    "image+box": {"image": _image(300, 200, 5), "bbox": [20, 30, 160, 150], "text": "the pier"},
    "coordinates": {"coords": (29.69, -81.99), "text": "sandhill pines"},
    "two images": [_image(120, 240, 6), "then", _image(240, 120, 7), {"bbox": [0, 0, 100, 60]}],
}


@pytest.fixture(scope="module", params=FAMILIES + ("qwen3_vl_embedding",))
def exported(request, tmp_path_factory):
    from vlm2geovec.checkpoint import build_nano, build_processor, save_checkpoint

    style = "qwen3_vl_embedding" if request.param == "qwen3_vl_embedding" else "vlm2geovec"
    family = "qwen3_vl" if style == "qwen3_vl_embedding" else request.param
    model, _ = build_nano(seed=11, family=family)
    processor = build_processor(family=family, prompt_style=style)
    root = tmp_path_factory.mktemp(request.param)
    ours = save_checkpoint(model, processor, root / "ours")
    return family, ours, export_for_vllm(ours, root / "vllm")


@functools.lru_cache(maxsize=2)
def _native(out, family):
    """The export loaded as vLLM's transformers backend would: tokenizer, image processor, native model class."""
    import transformers
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model = getattr(transformers, NATIVE_CLASSES[family][1]).from_pretrained(out).eval()
    return AutoTokenizer.from_pretrained(out), Qwen2VLImageProcessorPil.from_pretrained(out), model


@functools.lru_cache(maxsize=2)
def _ours(path):
    from vlm2geovec import load_model

    return load_model(str(path))


def _native_vector(out, family, prompt):
    """Embed one offline prompt as vLLM's pooling runner does, with transformers' native class."""
    tokenizer, image_processor, model = _native(out, family)
    text, inputs = prompt["prompt"], {}
    images = prompt.get("multi_modal_data", {}).get("image", [])
    if images:
        inputs = dict(image_processor(images=images, return_tensors="pt"))
        counts = (inputs["image_grid_thw"].prod(-1) // image_processor.merge_size**2).tolist()
        chunks = text.split(IMAGE_TOKEN)
        text = chunks[0] + "".join(IMAGE_TOKEN * n + chunk for n, chunk in zip(counts, chunks[1:]))
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=(ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).to(torch.int32))
    with torch.no_grad():
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
    return F.normalize(hidden[0, -1].float(), dim=-1)


@pytest.mark.parametrize("instruction", [None, "Find the place"])
def test_native_export_fed_by_the_client_helper_gives_our_vectors(exported, instruction):
    family, ours, out = exported
    st_model = _ours(ours)
    processor = st_model[0].processor
    items = list(ITEMS.values())
    expected = st_model.encode(items, convert_to_tensor=True, **({"prompt": instruction} if instruction else {}))
    prompts = vllm_prompts(items, processor, instruction=instruction)
    for name, prompt, vector in zip(ITEMS, prompts, expected):
        assert (_native_vector(out, family, prompt) - vector).abs().max().item() <= 1e-5, name


def test_export_loads_without_remote_code_and_describes_the_pooling(exported):
    import transformers

    family, _, out = exported
    model, info = getattr(transformers, NATIVE_CLASSES[family][1]).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == [NATIVE_CLASSES[family][1]]
    assert not any(path.suffix == ".py" for path in out.iterdir())
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_lasttoken"] is True and pooling["word_embedding_dimension"] == 128
    assert json.loads((out / "preprocessor_config.json").read_text())["processor_class"] == NATIVE_CLASSES[family][2]


def test_openai_messages_render_the_same_text_as_the_offline_prompts(exported):
    from transformers import AutoTokenizer

    _, ours, out = exported
    processor = _ours(ours)[0].processor
    tokenizer = AutoTokenizer.from_pretrained(out)
    items = list(ITEMS.values())
    for instruction in (None, "Find the place"):
        prompts = vllm_prompts(items, processor, instruction=instruction)
        for messages, prompt, item in zip(openai_messages(items, processor, instruction), prompts, items):
            assert tokenizer.apply_chat_template(messages, tokenize=False) == prompt["prompt"]
            urls = [part["image_url"]["url"] for message in messages if isinstance(message["content"], list)
                    for part in message["content"] if part["type"] == "image_url"]
            assert len(urls) == len(prompt.get("multi_modal_data", {}).get("image", []))
            assert all(url.startswith("data:image/png;base64,") for url in urls)
        # Our own rendering of each item is what vLLM is asked to embed.
        assert [p["prompt"] for p in prompts] == processor.render(items, instruction=instruction)


@pytest.mark.battery
def test_export_refuses_what_vllm_cannot_serve_the_same_way(tmp_path):
    from tests.battery import expect_cli_error, run_cli
    from vlm2geovec.checkpoint import build_nano, build_processor, save_checkpoint

    model, _ = build_nano(seed=0, pooling="mean")
    save_checkpoint(model, build_processor(), tmp_path / "mean")
    expect_cli_error(run_cli(["export", "vllm", "--model", tmp_path / "mean", "--out", tmp_path / "o"]),
                     "pooling 'mean'", "last")
    expect_cli_error(run_cli(["export", "vllm", "--model", tmp_path / "missing", "--out", tmp_path / "o"]),
                     "missing")
