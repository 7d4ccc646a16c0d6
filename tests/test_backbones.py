"""Backbone families: Qwen2-VL, Qwen2.5-VL and Qwen3-VL (and Qwen3-VL-Embedding checkpoints).

For each family a tiny random model is built with transformers' own ``*ForConditionalGeneration`` class and saved by
transformers in the Hub layout, converted with `convert_backbone`, and its vectors compared with transformers' own
model fed by the family's own chat template and image processor. (transformers' ``Qwen*VLProcessor`` classes cannot
be built without torchvision, which breaks the CPU torch here; the reference is the same pipeline they run: the
chat template, the PIL image processor, one ``<|image_pad|>`` per merged patch.)
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from processing_vlm2geovec import BACKBONE_FAMILIES, IMAGE_TOKEN, format_bbox
from vlm2geovec.checkpoint import (
    NANO_FAMILY_CONFIGS, QWEN3_VL_EMBEDDING_IMAGE_SIZE, build_nano, build_processor, convert_backbone,
    family_image_processor,
)
from vlm2geovec.tokenizer import build_qwen_tokenizer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
GENERATIVE = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLForConditionalGeneration"),
}
TOLERANCE = 1e-5


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def pictures():
    return _image(300, 200, 1), _image(160, 240, 2)


def _save_hub_layout(model, family: str, folder, image_size=None) -> None:
    """What a Hub checkpoint folder holds: weights + config (transformers), tokenizer with the chat template,
    image processor."""
    model.save_pretrained(folder)
    tokenizer = build_qwen_tokenizer(family)
    tokenizer.chat_template = BACKBONE_FAMILIES[family].chat_template
    tokenizer.save_pretrained(folder)
    family_image_processor(family, image_size).save_pretrained(folder)


@pytest.fixture(scope="module", params=FAMILIES)
def converted(request, tmp_path_factory):
    """(family, transformers' own generative model, source folder, converted VLM2GeoVec folder)."""
    import transformers

    family = request.param
    config_name, model_name = GENERATIVE[family]
    text, vision, _ = NANO_FAMILY_CONFIGS[family]
    config = getattr(transformers, config_name)(text_config=dict(text), vision_config=dict(vision))
    torch.manual_seed(321)
    source = getattr(transformers, model_name)(config).eval()
    folder = tmp_path_factory.mktemp(family) / f"tiny-{family}"
    _save_hub_layout(source, family, folder)
    out = convert_backbone(str(folder), tmp_path_factory.mktemp(family) / "converted")
    return family, source, folder, out


def _reference_inputs(family: str, folder, parts, system=None, ending="<|endoftext|>"):
    """Token ids and pixels as the family's own pipeline makes them: chat template + image processor + one image
    pad per merged patch (+ the embedding token)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    content = [{"type": "image"} if isinstance(p, Image.Image) else {"type": "text", "text": p} for p in parts]
    messages = [{"role": "user", "content": content}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    text = tokenizer.apply_chat_template(messages, tokenize=False) + ending
    images = [p for p in parts if isinstance(p, Image.Image)]
    inputs = {}
    if images:
        inputs = dict(image_processor(images=images, return_tensors="pt"))
        counts = (inputs["image_grid_thw"].prod(-1) // image_processor.merge_size**2).tolist()
        chunks = text.split(IMAGE_TOKEN)
        assert len(chunks) - 1 == len(counts)
        text = chunks[0] + "".join(IMAGE_TOKEN * n + chunk for n, chunk in zip(counts, chunks[1:]))
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids))
    inputs["mm_token_type_ids"] = (ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).to(torch.int32)
    return inputs


def _reference_vector(backbone, inputs) -> torch.Tensor:
    with torch.no_grad():
        hidden = backbone(**inputs, use_cache=False).last_hidden_state
    return F.normalize(hidden[0, -1].float(), dim=-1)


def _item(parts):
    """Our item for a list of parts (a plain string or image stays a bare item)."""
    return parts[0] if len(parts) == 1 else list(parts)


CASES = {
    "text": lambda a, b: ["a river delta with fields"],
    "image": lambda a, b: [a],
    "image+text": lambda a, b: [a, "a river delta with fields"],
    "two images": lambda a, b: [a, b],
}


@pytest.mark.parametrize("case", list(CASES))
def test_converted_equals_transformers_own_model(converted, pictures, case):
    from vlm2geovec import load_model

    family, source, folder, out = converted
    parts = CASES[case](*pictures)
    reference = _reference_inputs(family, folder, parts)
    st_model = load_model(str(out))
    processor = st_model[0].processor
    ours = processor(items=[_item(parts)])
    assert ours["input_ids"].tolist() == reference["input_ids"].tolist()
    if "pixel_values" in reference:
        assert torch.equal(ours["pixel_values"], reference["pixel_values"])
        assert torch.equal(ours["image_grid_thw"], reference["image_grid_thw"])
    expected = _reference_vector(source.model, reference)
    vector = st_model.encode([_item(parts)], convert_to_tensor=True)[0]
    assert (vector - expected).abs().max().item() <= TOLERANCE


def test_convert_loads_every_weight_and_names_the_family(converted):
    from transformers import AutoModel

    family, source, _, out = converted
    model, info = AutoModel.from_pretrained(str(out), trust_remote_code=True, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert model.config.backbone_family == family
    source_state = source.state_dict()
    state = model.state_dict()
    assert len(state) == len([k for k in source_state if not k.startswith("lm_head")])
    for key, value in state.items():
        assert torch.equal(value, source_state["model." + key]), key
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith(type(model).__name__)
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert processor_config["backbone_family"] == family


def test_auto_classes_and_sentence_transformers_agree_and_round_trip(converted, pictures, tmp_path):
    from transformers import AutoModel, AutoProcessor

    from vlm2geovec import load_model
    from vlm2geovec.checkpoint import save_checkpoint

    family, _, _, out = converted
    a, b = pictures
    items = ["a field", {"image": a, "bbox": [10, 20, 200, 150], "text": "a tree"}, {"coords": (29.69, -81.99)},
             [a, "next to", b, {"bbox": [0, 0, 80, 120]}]]
    model = AutoModel.from_pretrained(str(out), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(str(out), trust_remote_code=True)
    with torch.no_grad():
        auto = model(**processor(items=items)).embeddings
    st_model = load_model(str(out))
    st = st_model.encode(items, convert_to_tensor=True)
    assert (auto - st).abs().max().item() <= TOLERANCE
    save_checkpoint(st_model[0].model, st_model[0].processor, tmp_path / "again")
    again = load_model(str(tmp_path / "again")).encode(items, convert_to_tensor=True)
    assert torch.equal(again, st)


def test_lora_adapter_equals_merged_for_every_family(converted, pictures, tmp_path):
    from vlm2geovec import load_model
    from vlm2geovec_train.lora import LoraSettings, apply_lora, merge_and_save, save_adapter

    family, _, _, out = converted
    a, _ = pictures
    items = ["a field", {"image": a, "bbox": [10, 20, 200, 150], "text": "a tree"}]
    st_model = load_model(str(out))
    apply_lora(st_model, LoraSettings(r=4, alpha=8, dropout=0.0, include_vision=True))
    peft_model = st_model[0].model
    adapted = [name for name, _ in peft_model.named_modules() if name.endswith("lora_A")]
    # Every language and vision linear layer of the family's blocks got an adapter (its MLP names differ).
    assert any(".visual.blocks.0.mlp." in name for name in adapted), family
    assert any(".language_model.layers.0.mlp.down_proj" in name for name in adapted)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    st_model.eval()
    with torch.no_grad():
        unmerged = st_model.encode(items, convert_to_tensor=True)
    save_adapter(st_model, tmp_path / "adapter", out)
    merge_and_save(st_model, tmp_path / "merged")
    merged = load_model(str(tmp_path / "merged")).encode(items, convert_to_tensor=True)
    reloaded = load_model(str(tmp_path / "adapter")).encode(items, convert_to_tensor=True)  # adapter + base
    base = load_model(str(out)).encode(items, convert_to_tensor=True)
    assert (base - unmerged).abs().max().item() > 1e-3  # the adapter changes the vectors
    assert (merged - unmerged).abs().max().item() <= 1e-4
    assert (reloaded - unmerged).abs().max().item() <= 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Box rendering per family
# ---------------------------------------------------------------------------------------------------------------
def test_box_rendering_is_pinned_per_family():
    box, size = [10, 20, 110, 220], (400, 400)
    assert format_bbox(box, size) == "<|box_start|>(25,50),(275,550)<|box_end|>"
    assert format_bbox(box, size, "qwen3_vl") == '{"bbox_2d": [25, 50, 275, 550]}'
    assert format_bbox(box, size, "qwen2_5_vl", resized_size=(392, 392)) == '{"bbox_2d": [10, 20, 108, 216]}'
    with pytest.raises(ValueError, match="resized_size"):
        format_bbox(box, size, "qwen2_5_vl")
    with pytest.raises(ValueError, match="unknown family 'qwen9_vl'"):
        format_bbox(box, size, "qwen9_vl")


def test_qwen2_5_vl_boxes_follow_the_resize_of_a_large_non_square_image():
    """Above the pixel budget the image is shrunk; Qwen2.5-VL's absolute coordinates are those of the shrunk input,
    and the box lands on the same place of the image as in the other families."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    image = _image(1000, 400, 3)  # 400,000 pixels, far above the nano budget of 224 x 224
    box = [100, 40, 600, 360]
    rendered = {}
    for family in FAMILIES:
        processor = build_processor(family=family)
        [text] = processor.render([{"image": image, "bbox": box}])
        rendered[family] = text
    ip = build_processor(family="qwen2_5_vl").image_processor
    height, width = smart_resize(400, 1000, factor=28, min_pixels=ip.size["shortest_edge"],
                                 max_pixels=ip.size["longest_edge"])
    assert (width, height) == (336, 140)  # the resized model input the coordinates refer to
    x1, y1, x2, y2 = (round(100 * width / 1000), round(40 * height / 400), round(600 * width / 1000),
                      round(360 * height / 400))
    assert f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}]}}' in rendered["qwen2_5_vl"]
    assert '{"bbox_2d": [100, 100, 600, 900]}' in rendered["qwen3_vl"]
    assert "<|box_start|>(100,100),(600,900)<|box_end|>" in rendered["qwen2_vl"]
    # The same place: each family's numbers, divided by its own frame, give the same fractions of the image.
    assert [x1 / width, y1 / height, x2 / width, y2 / height] == pytest.approx([0.1, 0.1, 0.6, 0.9], abs=1 / 140)
    # The pixels the model sees are that resize.
    inputs = build_processor(family="qwen2_5_vl")(items=[{"image": image, "bbox": box}])
    assert inputs["image_grid_thw"].tolist() == [[1, height // 14, width // 14]]


def test_coordinates_render_identically_in_every_family():
    rendered = {family: build_processor(family=family).render([{"coords": (29.69, -81.99), "text": "x"}])[0]
                for family in FAMILIES}
    for text in rendered.values():
        assert "29.6900°N, 81.9900°W\nx<|im_end|>" in text


def test_chat_frames_per_family():
    texts = {family: build_processor(family=family).render(["hi"])[0] for family in FAMILIES}
    frame = "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>"
    assert texts["qwen2_vl"] == texts["qwen2_5_vl"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + frame)
    assert texts["qwen3_vl"] == frame  # Qwen3-VL has no default system turn


def test_family_mismatch_between_model_and_processor_is_refused():
    from st_vlm2geovec import VLM2GeoVecEmbedder

    model, _ = build_nano(0, family="qwen3_vl")
    with pytest.raises(ValueError, match="qwen2_vl backbone family but the model is qwen3_vl"):
        VLM2GeoVecEmbedder(model, build_processor(family="qwen2_vl"))
    with pytest.raises(ValueError, match="patch_size 14 does not match the Qwen3-VL"):
        build_processor(family="qwen3_vl", image_size=None).__class__(
            image_processor=family_image_processor("qwen2_vl"), tokenizer=build_qwen_tokenizer("qwen3_vl"),
            backbone_family="qwen3_vl")


def test_nano_is_deterministic_per_seed_and_family():
    first, _ = build_nano(5, family="qwen2_5_vl")
    second, _ = build_nano(5, family="qwen2_5_vl")
    other, _ = build_nano(6, family="qwen2_5_vl")
    for (key, a), (_, b), (_, c) in zip(first.state_dict().items(), second.state_dict().items(),
                                        other.state_dict().items()):
        assert torch.equal(a, b), key
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values()))


def test_convert_refuses_unsupported_and_partial_sources(converted, tmp_path):
    from transformers import BertConfig

    family, _, folder, _ = converted
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type 'bert' is not a supported backbone"):
        convert_backbone(str(tmp_path / "bert"), tmp_path / "out")
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    tensors = load_file(str(broken / "model.safetensors"))
    for key in [k for k in tensors if "layers.1.mlp" in k]:
        del tensors[key]
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="did not load completely"):
        convert_backbone(str(broken), tmp_path / "out2")


# ---------------------------------------------------------------------------------------------------------------
# Qwen3-VL-Embedding
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen3_vl_embedding(tmp_path_factory):
    """A tiny checkpoint in the Qwen3-VL-Embedding layout: Qwen3-VL weights under ``model.*`` without a language
    head, its tokenizer, image processor and chat template, and a sentence-transformers configuration."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text, vision, _ = NANO_FAMILY_CONFIGS["qwen3_vl"]
    config = Qwen3VLConfig(text_config=dict(text), vision_config=dict(vision))
    torch.manual_seed(77)
    generative = Qwen3VLForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("q3e") / "Qwen3-VL-Embedding-tiny"
    _save_hub_layout(generative, "qwen3_vl", folder, image_size={"shortest_edge": 65536, "longest_edge": 16777216})
    tensors = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if not k.startswith("lm_head")}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "cosine"}))
    out = convert_backbone(str(folder), tmp_path_factory.mktemp("q3e") / "converted")
    return generative.model, folder, out


def _qwen3_vl_embedding_reference(backbone, folder, parts, instruction=None):
    """Qwen3-VL-Embedding's published pipeline: system instruction (default "Represent the user's input.", a final
    full stop added when it ends without punctuation), user content, the generation prompt; images resized by its
    smart resize (factor 32, 4 * 32^2 to 1800 * 32^2 pixels, PIL's default resampling) and processed without a
    second resize; last token of the attention mask, L2-normalised."""
    import unicodedata

    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    instruction = (instruction or "Represent the user's input.").strip()
    if not unicodedata.category(instruction[-1]).startswith("P"):
        instruction += "."
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    content = []
    images = []
    for part in parts:
        if isinstance(part, Image.Image):
            height, width = part.height, part.width
            factor, low, high = 32, 4 * 32 * 32, 1800 * 32 * 32
            h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
            if h_bar * w_bar > high:
                beta = math.sqrt(height * width / high)
                h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
            elif h_bar * w_bar < low:
                beta = math.sqrt(low / (height * width))
                h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
            images.append(part.convert("RGB").resize((w_bar, h_bar)))
            content.append({"type": "image"})
        else:
            content.append({"type": "text", "text": part})
    messages = [{"role": "system", "content": [{"type": "text", "text": instruction}]},
                {"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = {}
    if images:
        inputs = dict(image_processor(images=images, do_resize=False, return_tensors="pt"))
        counts = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
        chunks = text.split(IMAGE_TOKEN)
        text = chunks[0] + "".join(IMAGE_TOKEN * n + chunk for n, chunk in zip(counts, chunks[1:]))
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    inputs.update(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=(ids == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).to(torch.int32))
    with torch.no_grad():
        hidden = backbone(**inputs, use_cache=False).last_hidden_state
    return F.normalize(hidden[0, -1].float(), dim=-1), ids


@pytest.mark.parametrize("case", ["text", "image", "image+text"])
@pytest.mark.parametrize("instruction", [None, "Retrieve images of the same place"])
def test_qwen3_vl_embedding_conversion_equals_its_own_pipeline(qwen3_vl_embedding, pictures, case, instruction):
    from vlm2geovec import load_model

    backbone, folder, out = qwen3_vl_embedding
    parts = CASES[case](*pictures)
    expected, reference_ids = _qwen3_vl_embedding_reference(backbone, folder, parts, instruction)
    st_model = load_model(str(out))
    processor = st_model[0].processor
    assert processor.prompt_style == "qwen3_vl_embedding"
    assert processor.image_processor.size == QWEN3_VL_EMBEDDING_IMAGE_SIZE
    ours = processor(items=[_item(parts)], instruction=instruction)
    assert ours["input_ids"].tolist() == reference_ids.tolist()
    prompt = {"query": instruction} if instruction else {}
    vector = st_model.encode([_item(parts)], convert_to_tensor=True, **({"prompt": instruction} if prompt else {}))[0]
    assert (vector - expected).abs().max().item() <= TOLERANCE
