"""The VLM2GeoVec input spec and processor: pinned rendering, equality with transformers' Qwen2-VL pipeline,
image loading, validation errors, token estimates and truncation."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from tests.conftest import make_image
from processing_vlm2geovec import (
    DEFAULT_SYSTEM_PROMPT,
    IMAGE_TOKEN,
    estimate_item_tokens,
    format_bbox,
    normalize_item,
    format_coords,
)

VIS = "<|vision_start|><|image_pad|><|vision_end|>"
HEAD = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
TAIL = "<|im_end|>\n<|endoftext|>"


def chat(content: str, system: str = DEFAULT_SYSTEM_PROMPT) -> str:
    return HEAD.format(system=system) + content + TAIL


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def reference_image_processor(processor):
    """transformers' own PIL Qwen2-VL image processor at the same pixel budget."""
    return Qwen2VLImageProcessorPil(size=processor.image_processor.size)


@pytest.fixture
def guarded(processor, monkeypatch):
    """The session processor, with model work (image processing + tokenisation) made to fail loudly."""

    def no_model_work(*args, **kwargs):
        raise AssertionError("validation let a bad item through to the image processor / tokenizer")

    monkeypatch.setattr(processor, "_tokenize", no_model_work)
    monkeypatch.setattr(processor, "_process_images", no_model_work)
    return processor


# ----------------------------------------------------------------------------------------------------------
# 1. Pinned rendering
# ----------------------------------------------------------------------------------------------------------
def test_format_bbox_pinned():
    assert format_bbox([10, 20, 110, 220], (400, 400)) == "<|box_start|>(25,50),(275,550)<|box_end|>"
    # Non-square image: x scales by width, y by height.
    assert format_bbox([30, 20, 150, 200], (300, 200)) == "<|box_start|>(100,100),(500,1000)<|box_end|>"
    # Rounding to nearest integer (1/3 -> 333, 2/3 -> 667), floats accepted.
    assert format_bbox([100, 100, 200, 200], (300, 300)) == "<|box_start|>(333,333),(667,667)<|box_end|>"
    assert format_bbox([0.4, 0.6, 299.4, 299.6], (300, 300)) == "<|box_start|>(1,2),(998,999)<|box_end|>"
    # Edges: a box equal to the whole image is exactly (0,0),(1000,1000), never outside 0..1000.
    assert format_bbox([0, 0, 400, 300], (400, 300)) == "<|box_start|>(0,0),(1000,1000)<|box_end|>"
    assert format_bbox([0, 0, 7, 3], (7, 3)) == "<|box_start|>(0,0),(1000,1000)<|box_end|>"
    assert format_bbox(np.array([0.0, 0.0, 1.0, 1.0]), (3, 3)) == "<|box_start|>(0,0),(333,333)<|box_end|>"


def test_format_coords_pinned():
    assert format_coords((29.69, -81.99)) == "29.6900°N, 81.9900°W"
    assert format_coords((-33.8688, 151.2093)) == "33.8688°S, 151.2093°E"
    assert format_coords((-1.5, -70.25)) == "1.5000°S, 70.2500°W"
    assert format_coords((48.85837, 2.29448)) == "48.8584°N, 2.2945°E"
    # Rounds to zero -> northern/eastern, never "0.0000°S".
    assert format_coords((-0.00001, 0)) == "0.0000°N, 0.0000°E"
    assert format_coords((0, -0.00001)) == "0.0000°N, 0.0000°E"
    # Boundaries are valid.
    assert format_coords((90, 180)) == "90.0000°N, 180.0000°E"
    assert format_coords((-90, -180)) == "90.0000°S, 180.0000°W"
    # Precision argument.
    assert format_coords((29.69, -81.99), precision=2) == "29.69°N, 81.99°W"
    assert format_coords((29.123456, -81.987654), precision=6) == "29.123456°N, 81.987654°W"
    assert format_coords((29.69, -81.99), precision=0) == "30°N, 82°W"
    # Dict form and numpy scalars.
    assert format_coords({"lat": 29.69, "lon": -81.99}) == "29.6900°N, 81.9900°W"
    assert format_coords({"lon": 151.2093, "lat": -33.8688}) == "33.8688°S, 151.2093°E"
    assert format_coords((np.float32(10.5), np.int64(20))) == "10.5000°N, 20.0000°E"


def test_render_dict_item_full_order(processor, images):
    a = images[0]  # 300x200
    item = {"text": "a tree", "coords": (29.69, -81.99), "bbox": [30, 20, 150, 200], "image": a}
    [out] = processor.render([item], instruction="Find the region.")
    assert out == (
        "<|im_start|>system\nFind the region.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>"
        "<|box_start|>(100,100),(500,1000)<|box_end|>\n"
        "29.6900°N, 81.9900°W\n"
        "a tree<|im_end|>\n<|endoftext|>"
    )


def test_render_text_only_default_system_prompt(processor):
    [out] = processor.render(["a quiet harbour"])
    assert out == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\na quiet harbour<|im_end|>\n<|endoftext|>"
    )
    assert processor.render([{"text": "a quiet harbour"}]) == [out]
    assert processor.render([["a quiet harbour"]]) == [out]


def test_render_other_item_forms(processor, images):
    a = images[0]
    assert processor.render([a]) == [chat(VIS)]
    assert processor.render([{"image": a}]) == [chat(VIS)]
    assert processor.render([{"coords": {"lat": -1.5, "lon": 2}}]) == [chat("1.5000°S, 2.0000°E")]
    assert processor.render([{"text": "x", "coords": (1, 2)}]) == [chat("1.0000°N, 2.0000°E\nx")]
    # None values are absent fields (datasets struct rows).
    assert processor.render([{"image": None, "bbox": None, "coords": None, "text": "x"}]) == [chat("x")]
    # Per-item instructions; None and "" fall back to the default system prompt.
    assert processor.render(["p", "q", "r"], instruction=["Alpha.", None, ""]) == [
        chat("p", "Alpha."),
        chat("q"),
        chat("r"),
    ]
    # Batch-wide instruction.
    assert processor.render(["p", "q"], instruction="Beta.") == [chat("p", "Beta."), chat("q", "Beta.")]


def test_render_part_list_interleaved(processor, images):
    a, b = images[0], images[1]
    [out] = processor.render([[a, "between", b]])
    assert out == chat(VIS + "between\n" + VIS)
    [out] = processor.render([["before", a, {"text": "after"}, {"coords": (1, 2)}]])
    assert out == chat("before\n" + VIS + "after\n1.0000°N, 2.0000°E")
    [out] = processor.render([("one", "two")])
    assert out == chat("one\ntwo")


def test_render_several_boxes(processor, images):
    a = images[0]  # 300x200
    [out] = processor.render([{"image": a, "bbox": [[0, 0, 300, 200], [100, 50, 200, 150]], "text": "two"}])
    assert out == chat(
        VIS + "<|box_start|>(0,0),(1000,1000)<|box_end|>\n<|box_start|>(333,250),(667,750)<|box_end|>\ntwo"
    )
    # A 2-D numpy array of boxes is a list of boxes too.
    [out2] = processor.render([{"image": a, "bbox": np.array([[0, 0, 300, 200], [100, 50, 200, 150]]), "text": "two"}])
    assert out2 == out


def test_render_box_part_refers_to_nearest_preceding_image(processor, images):
    a, b = images[0], images[1]  # 300x200, 160x240
    # [0, 0, 80, 120] is (0,0),(500,500) of b but (0,0),(267,600) of a.
    [out] = processor.render([[a, "x", b, {"bbox": [0, 0, 80, 120]}]])
    assert out == chat(VIS + "x\n" + VIS + "<|box_start|>(0,0),(500,500)<|box_end|>")
    [out] = processor.render([[a, {"bbox": [0, 0, 80, 120]}, b]])
    assert out == chat(VIS + "<|box_start|>(0,0),(267,600)<|box_end|>\n" + VIS)
    # Several boxes in one part.
    [out] = processor.render([[b, {"bbox": [[0, 0, 160, 240], [40, 60, 120, 180]]}]])
    assert out == chat(VIS + "<|box_start|>(0,0),(1000,1000)<|box_end|>\n<|box_start|>(250,250),(750,750)<|box_end|>")
    # A box valid for the first (larger) image but outside the second one is refused.
    with pytest.raises(ValueError, match=r"items\[0\]\[2\]\.bbox.*outside the 160x240 image"):
        processor.render([[a, b, {"bbox": [0, 0, 250, 100]}]])


def test_render_matches_chat_template(processor, images):
    """Our Python rendering equals Qwen2-VL's chat template (+ the embedding token)."""
    a = images[0]
    content = [{"type": "image"}, {"type": "text", "text": "a field"}]
    templated = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    assert templated + "<|endoftext|>" == processor.render([{"image": a, "text": "a field"}])[0]
    templated = processor.apply_chat_template(
        [{"role": "system", "content": "Find it."}, {"role": "user", "content": content}], tokenize=False
    )
    assert templated + "<|endoftext|>" == processor.render([{"image": a, "text": "a field"}], instruction="Find it.")[0]


# ----------------------------------------------------------------------------------------------------------
# 2. Equality with transformers' own pipeline
# ----------------------------------------------------------------------------------------------------------
def _reference_ids(processor, reference_image_processor, image, text, system=None):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    templated = processor.apply_chat_template(messages, tokenize=False)
    assert isinstance(templated, str) and templated.count(IMAGE_TOKEN) == 1
    pixels = reference_image_processor(images=[image], return_tensors="pt")
    n_tokens = int(pixels["image_grid_thw"].prod()) // 4
    expanded = (templated + "<|endoftext|>").replace(IMAGE_TOKEN, IMAGE_TOKEN * n_tokens)
    return processor.tokenizer(expanded)["input_ids"], pixels, n_tokens


@pytest.mark.parametrize("image_index", [0, 1, 2])
def test_items_equal_transformers_pipeline(processor, reference_image_processor, images, image_index):
    image = images[image_index]
    ref_ids, ref_pixels, n_tokens = _reference_ids(processor, reference_image_processor, image, "a field by a river")
    out = processor(items=[{"image": image, "text": "a field by a river"}])
    assert out["input_ids"].tolist() == [ref_ids]
    assert out["attention_mask"].tolist() == [[1] * len(ref_ids)]
    assert int((out["input_ids"] == processor.image_token_id).sum()) == n_tokens
    assert out["image_grid_thw"].dtype == ref_pixels["image_grid_thw"].dtype
    assert torch.equal(out["image_grid_thw"], ref_pixels["image_grid_thw"])
    assert out["pixel_values"].dtype == ref_pixels["pixel_values"].dtype
    assert torch.equal(out["pixel_values"], ref_pixels["pixel_values"])
    assert out["input_ids"][0, -1].item() == processor.embed_token_id


def test_items_equal_transformers_pipeline_with_instruction(processor, reference_image_processor, images):
    ref_ids, _, _ = _reference_ids(processor, reference_image_processor, images[1], "a road", system="Find it.")
    out = processor(items=[{"image": images[1], "text": "a road"}], instruction="Find it.")
    assert out["input_ids"].tolist() == [ref_ids]


def test_plain_text_images_path_equals_items_path(processor, images):
    items = [{"image": images[0], "text": "a field"}, "just text", [images[1], "x", images[2]]]
    rendered = processor.render(items, instruction="Inst.")
    assert sum(t.count(IMAGE_TOKEN) for t in rendered) == 3
    via_items = processor(items=items, instruction="Inst.")
    via_text = processor(text=rendered, images=[images[0], images[1], images[2]])
    assert set(via_items.keys()) == set(via_text.keys())
    for key in via_items:
        assert torch.equal(via_items[key], via_text[key]), key
    # A single string with a single image.
    single = processor(text=rendered[0], images=images[0])
    assert torch.equal(single["input_ids"], processor(items=[items[0]], instruction="Inst.")["input_ids"])


def test_plain_path_placeholder_count_mismatch(processor, images):
    with pytest.raises(ValueError, match="placeholders"):
        processor(text=[chat(VIS)], images=[images[0], images[1]])
    with pytest.raises(ValueError, match="not both"):
        processor(items=["x"], text=["x"])


def test_batch_pixel_values_concatenate_in_order(processor, images):
    batch = processor(items=[images[0], [images[1], "x", images[2]]])
    singles = [processor(items=[img]) for img in images]
    assert torch.equal(batch["pixel_values"], torch.cat([s["pixel_values"] for s in singles]))
    assert torch.equal(batch["image_grid_thw"], torch.cat([s["image_grid_thw"] for s in singles]))


# ----------------------------------------------------------------------------------------------------------
# 3. mm_token_type_ids, attention mask and padding
# ----------------------------------------------------------------------------------------------------------
def _check_batch(processor, items, left: bool):
    out = processor(items=items)
    singles = [processor(items=[item])["input_ids"][0].tolist() for item in items]
    longest = max(len(s) for s in singles)
    pad_id = processor.tokenizer.pad_token_id
    assert out["input_ids"].shape == (len(items), longest)
    assert out["attention_mask"].shape == out["input_ids"].shape == out["mm_token_type_ids"].shape
    for row, seq in enumerate(singles):
        n_pad = longest - len(seq)
        expected_ids = [pad_id] * n_pad + seq if left else seq + [pad_id] * n_pad
        expected_mask = [0] * n_pad + [1] * len(seq) if left else [1] * len(seq) + [0] * n_pad
        assert out["input_ids"][row].tolist() == expected_ids
        assert out["attention_mask"][row].tolist() == expected_mask
        expected_mm = [1 if (t == processor.image_token_id and m) else 0 for t, m in zip(expected_ids, expected_mask)]
        assert out["mm_token_type_ids"][row].tolist() == expected_mm
    # mm_token_type_ids is 1 exactly at image pad tokens, and there are grid.prod()//4 of them.
    is_pad = out["input_ids"] == processor.image_token_id
    assert torch.equal(out["mm_token_type_ids"].bool(), is_pad)
    assert int(is_pad.sum()) == int(out["image_grid_thw"].prod(-1).sum()) // 4
    # Each real sequence ends with the embedding token at its last attended position.
    for row in range(len(items)):
        last = longest - 1 if left else int(out["attention_mask"][row].sum()) - 1
        assert out["input_ids"][row, last].item() == processor.embed_token_id
    return out


def test_right_padding(processor, images):
    assert processor.tokenizer.padding_side == "right"
    out = _check_batch(processor, ["short", {"image": images[0], "text": "longer"}, [images[1], "x", images[2]]], left=False)
    assert out["attention_mask"][0, -1].item() == 0


def test_left_padding(processor, images):
    left = copy.deepcopy(processor)
    left.tokenizer.padding_side = "left"
    out = _check_batch(left, ["short", {"image": images[0], "text": "longer"}, [images[1], "x", images[2]]], left=True)
    assert out["attention_mask"][0, 0].item() == 0
    assert processor.tokenizer.padding_side == "right"  # the session processor is untouched


def test_mm_token_type_ids_text_only(processor):
    out = processor(items=["no images here", "nor here"])
    assert int(out["mm_token_type_ids"].sum()) == 0
    assert "pixel_values" not in out and "image_grid_thw" not in out


# ----------------------------------------------------------------------------------------------------------
# 4. Image inputs
# ----------------------------------------------------------------------------------------------------------
def _pixels(processor, image_value):
    out = processor(items=[{"image": image_value}])
    return out["pixel_values"], out["image_grid_thw"]


def _assert_same_pixels(processor, value, reference_pil):
    got, got_grid = _pixels(processor, value)
    ref, ref_grid = _pixels(processor, reference_pil)
    assert torch.equal(got_grid, ref_grid)
    assert torch.equal(got, ref)


def test_image_inputs_lossless_equal_pil(processor, images, tmp_path):
    img = images[0]
    png = encode(img, "PNG")
    path = tmp_path / "tile.png"
    path.write_bytes(png)
    arr = np.asarray(img)
    for value in [png, bytearray(png), str(path), path, arr, arr.copy(order="F"), arr.astype(np.float64) / 255.0,
                  arr.astype(np.float32) / 255.0, np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], -1)]:
        # (an opaque alpha channel changes nothing; translucent ones: tests/test_image_parity.py)
        _assert_same_pixels(processor, value, img)
    # Bare images (not in a dict) and list parts work too.
    assert torch.equal(processor(items=[png])["pixel_values"], _pixels(processor, img)[0])
    assert torch.equal(processor(items=[[arr]])["pixel_values"], _pixels(processor, img)[0])
    assert torch.equal(processor(items=[[{"image": path}]])["pixel_values"], _pixels(processor, img)[0])


def test_image_inputs_jpeg_bytes_and_path(processor, images, tmp_path):
    jpeg = encode(images[2], "JPEG", quality=90)
    decoded = Image.open(io.BytesIO(jpeg)).convert("RGB")
    _assert_same_pixels(processor, jpeg, decoded)
    path = tmp_path / "tile.jpg"
    path.write_bytes(jpeg)
    _assert_same_pixels(processor, str(path), decoded)


def test_image_inputs_grayscale_arrays(processor):
    gray = np.asarray(make_image(180, 150, 5).convert("L"))
    as_rgb = Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    _assert_same_pixels(processor, gray, as_rgb)
    _assert_same_pixels(processor, gray[:, :, None], as_rgb)
    _assert_same_pixels(processor, gray.astype(np.float32) / 255.0, as_rgb)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA", "1", "YCbCr"])
def test_non_rgb_modes_convert(processor, images, mode):
    src = images[0].convert(mode)
    assert src.mode == mode
    _assert_same_pixels(processor, src, src.convert("RGB"))
    # Through an encoded file as well, where the format supports the mode.
    if mode in ("L", "P", "RGBA", "LA", "1"):
        _assert_same_pixels(processor, encode(src, "PNG"), src.convert("RGB"))


def test_huge_image_is_shrunk_like_transformers(processor, reference_image_processor):
    huge = make_image(3000, 3000, 7)
    ours = processor(items=[huge])
    ref = reference_image_processor(images=[huge], return_tensors="pt")
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert int(ours["image_grid_thw"].prod()) * 14 * 14 <= processor.image_processor.size["longest_edge"]
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    # Non-square, far above the budget.
    wide = make_image(2400, 600, 8)
    ours = processor(items=[wide])
    ref = reference_image_processor(images=[wide], return_tensors="pt")
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])


def _every_value_image(width: int, height: int, seed: int) -> Image.Image:
    """Each channel holds all 256 uint8 values (shuffled), so a lookup table is checked at every entry."""
    rng = np.random.default_rng(seed)
    pixels = np.stack([rng.permutation(np.resize(np.arange(256, dtype=np.uint8), width * height)) for _ in range(3)], -1)
    return Image.fromarray(pixels.reshape(height, width, 3))


PIXEL_SETTINGS = {
    "checkpoint default": {},
    "other mean/std and rescale": {"image_mean": [0.5, 0.25, 0.1], "image_std": [0.2, 0.4, 0.6], "rescale_factor": 1 / 127.5},
    "no normalize": {"do_normalize": False},
    "no rescale": {"do_rescale": False},
    "bilinear, smaller budget": {"resample": Image.Resampling.BILINEAR, "size": {"shortest_edge": 28 * 28, "longest_edge": 28 * 28 * 16}},
}


@pytest.mark.parametrize("setting", list(PIXEL_SETTINGS))
def test_fast_pixels_equal_image_processor_bit_for_bit(processor, setting):
    """`_pixel_values_fast` must give exactly what transformers' Qwen2-VL PIL image processor gives."""
    fast = copy.deepcopy(processor)
    for name, value in PIXEL_SETTINGS[setting].items():
        setattr(fast.image_processor, name, value)
    reference = Qwen2VLImageProcessorPil(**fast.image_processor.to_dict())
    images = [
        _every_value_image(64, 48, 0),  # upscaled to the minimum pixel count
        _every_value_image(300, 200, 1),  # resized down/up to multiples of 28
        make_image(56, 84, 2),  # already multiples of 28: no resize
        make_image(1000, 40, 3),  # 25:1 aspect
        make_image(3000, 2000, 4),  # far above the budget
        Image.open(Path(__file__).resolve().parents[1] / "examples" / "images" / "OSBS_029.png").convert("RGB"),
    ]
    assert fast._pixel_fast_path_applies(images)
    ours, counts = fast._process_images(images)
    ref = reference(images=images, return_tensors="pt")
    assert ours["image_grid_thw"].dtype == ref["image_grid_thw"].dtype == torch.int64
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert ours["pixel_values"].dtype == ref["pixel_values"].dtype == torch.float32
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    assert counts == (ref["image_grid_thw"].prod(-1) // 4).tolist()


def test_pixels_fall_back_to_image_processor_outside_the_fast_path(processor, monkeypatch):
    """Settings the fast path does not reproduce (here: no resizing) go through transformers' processor."""
    fallback = copy.deepcopy(processor)
    fallback.image_processor.do_resize = False
    image = make_image(56, 112, 5)
    assert not fallback._pixel_fast_path_applies([image])
    monkeypatch.setattr(fallback, "_pixel_values_fast", lambda images: pytest.fail("fast path taken"))
    ours, _ = fallback._process_images([image])
    ref = Qwen2VLImageProcessorPil(**fallback.image_processor.to_dict())(images=[image], return_tensors="pt")
    assert torch.equal(ours["pixel_values"], ref["pixel_values"])
    assert torch.equal(ours["image_grid_thw"], torch.tensor([[1, 8, 4]]))


def test_bbox_uses_original_size_of_huge_image(processor):
    huge = make_image(3000, 2000, 9)
    [out] = processor.render([{"image": huge, "bbox": [300, 200, 1500, 1000]}])
    assert out == chat(VIS + "<|box_start|>(100,100),(500,500)<|box_end|>")


# ----------------------------------------------------------------------------------------------------------
# 5. Bad input
# ----------------------------------------------------------------------------------------------------------
IMG = make_image(300, 200, 0)
NAN, INF = float("nan"), float("inf")


def _png_bytes() -> bytes:
    return encode(IMG, "PNG")


def _jpeg_bytes() -> bytes:
    return encode(IMG, "JPEG")


BAD_ITEMS = {
    # boxes
    "x2<=x1": ({"image": IMG, "bbox": [50, 10, 50, 20]}, ValueError, r"items\[0\]\.bbox: x2"),
    "x2<x1": ({"image": IMG, "bbox": [60, 10, 50, 20]}, ValueError, r"items\[0\]\.bbox: x2"),
    "y2<=y1": ({"image": IMG, "bbox": [10, 20, 50, 20]}, ValueError, r"items\[0\]\.bbox: y2"),
    "box outside width": ({"image": IMG, "bbox": [0, 0, 301, 200]}, ValueError, r"items\[0\]\.bbox.*outside"),
    "box outside height": ({"image": IMG, "bbox": [0, 0, 300, 200.5]}, ValueError, r"items\[0\]\.bbox.*outside"),
    "negative box x": ({"image": IMG, "bbox": [-1, 0, 10, 10]}, ValueError, r"items\[0\]\.bbox.*outside"),
    "negative box y": ({"image": IMG, "bbox": [0, -0.5, 10, 10]}, ValueError, r"items\[0\]\.bbox.*outside"),
    "box without image (dict)": ({"bbox": [0, 0, 10, 10], "text": "x"}, ValueError, r"items\[0\]\.bbox.*image"),
    "box before image (parts)": ([{"bbox": [0, 0, 10, 10]}, IMG], ValueError, r"items\[0\]\[0\]\.bbox.*image"),
    "3 box values": ({"image": IMG, "bbox": [0, 0, 10]}, ValueError, r"items\[0\]\.bbox.*4 values"),
    "5 box values": ({"image": IMG, "bbox": [0, 0, 10, 10, 10]}, ValueError, r"items\[0\]\.bbox.*4 values"),
    "string in box": ({"image": IMG, "bbox": [0, "0", 10, 10]}, TypeError, r"items\[0\]\.bbox\[1\]"),
    "box is a string": ({"image": IMG, "bbox": "0,0,10,10"}, TypeError, r"items\[0\]\.bbox"),
    "bool in box": ({"image": IMG, "bbox": [True, 0, 10, 10]}, TypeError, r"items\[0\]\.bbox\[0\]"),
    "numpy bool in box": ({"image": IMG, "bbox": [0, 0, np.bool_(True), 10]}, TypeError, r"items\[0\]\.bbox\[2\]"),
    "NaN in box": ({"image": IMG, "bbox": [0, 0, NAN, 10]}, ValueError, r"items\[0\]\.bbox\[2\].*finite"),
    "inf in box": ({"image": IMG, "bbox": [0, 0, 10, INF]}, ValueError, r"items\[0\]\.bbox\[3\].*finite"),
    "second of several boxes": (
        {"image": IMG, "bbox": [[0, 0, 10, 10], [5, 5, 1, 1]]}, ValueError, r"items\[0\]\.bbox\[1\]: x2"),
    "empty box list": ({"image": IMG, "bbox": []}, ValueError, r"items\[0\]\.bbox"),
    "bad box in part": ([IMG, {"bbox": [0, 0, 400, 10]}], ValueError, r"items\[0\]\[1\]\.bbox.*outside"),
    # coordinates
    "lat 91": ({"coords": (91, 0)}, ValueError, r"items\[0\]\.coords\.lat"),
    "lat -90.5": ({"coords": (-90.5, 0)}, ValueError, r"items\[0\]\.coords\.lat"),
    "lon 180.5": ({"coords": (0, 180.5)}, ValueError, r"items\[0\]\.coords\.lon"),
    "lon -181": ({"coords": (0, -181)}, ValueError, r"items\[0\]\.coords\.lon"),
    "NaN lat": ({"coords": (NAN, 0)}, ValueError, r"items\[0\]\.coords\.lat.*finite"),
    "inf lon": ({"coords": (0, -INF)}, ValueError, r"items\[0\]\.coords\.lon.*finite"),
    "3 coords": ({"coords": (1, 2, 3)}, ValueError, r"items\[0\]\.coords"),
    "string coords": ({"coords": "29.69,-81.99"}, TypeError, r"items\[0\]\.coords"),
    "string lat": ({"coords": ("29.69", 1)}, TypeError, r"items\[0\]\.coords\.lat"),
    "bool lon": ({"coords": (1, False)}, TypeError, r"items\[0\]\.coords\.lon"),
    "coords dict wrong keys": ({"coords": {"lat": 1, "lng": 2}}, ValueError, r"items\[0\]\.coords"),
    "coords in part": (["x", {"coords": (0, 200)}], ValueError, r"items\[0\]\[1\]\.coords\.lon"),
    # image arrays
    "NaN in float image": ({"image": np.full((20, 20, 3), NAN)}, ValueError, r"items\[0\]\.image.*NaN"),
    "inf in float image": ({"image": np.full((20, 20, 3), INF, np.float32)}, ValueError, r"items\[0\]\.image.*inf"),
    "float image above 1": ({"image": np.full((20, 20, 3), 1.5)}, ValueError, r"items\[0\]\.image.*\[0, 1\]"),
    "float image below 0": ({"image": np.full((20, 20, 3), -0.1)}, ValueError, r"items\[0\]\.image.*\[0, 1\]"),
    "HxWx2 array": ({"image": np.zeros((20, 20, 2), np.uint8)}, ValueError, r"items\[0\]\.image.*2-band"),
    "bool array": ({"image": np.zeros((20, 20, 3), bool)}, ValueError, r"items\[0\]\.image.*dtype bool"),
    # (16-bit and other wide types are stretched or refused by image_scale: tests/test_image_parity.py)
    "1-D array": ({"image": np.zeros(20, np.uint8)}, ValueError, r"items\[0\]\.image.*shape"),
    "empty array": ({"image": np.zeros((0, 20, 3), np.uint8)}, ValueError, r"items\[0\]\.image.*empty"),
    "image of wrong type": ({"image": 3.5}, TypeError, r"items\[0\]\.image"),
    "image path missing": ({"image": "/nonexistent/dir/tile.png"}, ValueError, r"items\[0\]\.image.*not found"),
    "garbage bytes": ({"image": b"definitely not an image"}, ValueError, r"items\[0\]\.image.*cannot read"),
    "truncated PNG bytes": (
        {"image": _png_bytes()[: len(_png_bytes()) // 2]}, ValueError, r"items\[0\]\.image.*truncated"),
    "truncated JPEG bytes": (
        {"image": _jpeg_bytes()[: len(_jpeg_bytes()) // 2]}, ValueError, r"items\[0\]\.image.*truncated"),
    # item structure
    "unknown key": ({"image": IMG, "caption": "x"}, ValueError, r"items\[0\].*unknown key.*caption"),
    "empty dict": ({}, ValueError, r"items\[0\]: empty item"),
    "all-None dict": ({"image": None, "text": None, "bbox": None, "coords": None}, ValueError,
                      r"items\[0\]: empty item"),
    "empty part list": ([], ValueError, r"items\[0\]: empty part list"),
    "empty part tuple": ((), ValueError, r"items\[0\]: empty part list"),
    "part dict with two keys": ([{"image": IMG, "text": "x"}], ValueError, r"items\[0\]\[0\].*exactly one"),
    "part dict unknown key": (["x", {"caption": "x"}], ValueError, r"items\[0\]\[1\].*exactly one"),
    "empty part dict": (["x", {}], ValueError, r"items\[0\]\[1\].*exactly one"),
    "part of wrong type": (["x", 5], TypeError, r"items\[0\]\[1\]"),
    "path as bare part": ([Path("tile.png")], TypeError, r"items\[0\]\[0\]"),
    "empty text item": ("", ValueError, r"items\[0\]: text is empty"),
    "blank text item": ("   \n", ValueError, r"items\[0\]: text is empty"),
    "empty text in dict": ({"text": ""}, ValueError, r"items\[0\]\.text: text is empty"),
    "empty text part": ([IMG, ""], ValueError, r"items\[0\]\[1\]: text is empty"),
    "empty text part dict": ([IMG, {"text": ""}], ValueError, r"items\[0\]\[1\]\.text: text is empty"),
    "int text": ({"text": 5}, TypeError, r"items\[0\]\.text: expected a string"),
    "bytes text in part dict": ([{"text": b"x"}], TypeError, r"items\[0\]\[0\]\.text"),
    "int item": (5, TypeError, r"items\[0\]: expected"),
    "set item": ({"x"}, TypeError, r"items\[0\]: expected"),
    "None item": (None, TypeError, r"items\[0\]: expected"),
}


@pytest.mark.parametrize("name", list(BAD_ITEMS))
def test_bad_item_raises_before_model_work(guarded, name):
    item, error, match = BAD_ITEMS[name]
    with pytest.raises(error, match=match):
        guarded(items=[item])
    # The index in the message follows the item's position in the batch.
    with pytest.raises(error, match=match.replace(r"items\[0\]", r"items\[1\]")):
        guarded(items=["a valid item", item])


def test_bad_item_fails_in_render_too(processor):
    with pytest.raises(ValueError, match=r"items\[0\]\.coords\.lat"):
        processor.render([{"coords": (91, 0)}])


def test_bad_image_files(guarded, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x00\x01garbage, not a PNG" * 10)
    with pytest.raises(ValueError, match=r"items\[0\]\.image: cannot read"):
        guarded(items=[{"image": str(garbage)}])
    with pytest.raises(ValueError, match=r"items\[0\]\.image: cannot read"):
        guarded(items=[{"image": garbage}])
    for suffix, data in [("png", _png_bytes()), ("jpg", _jpeg_bytes())]:
        truncated = tmp_path / f"truncated.{suffix}"
        truncated.write_bytes(data[: len(data) // 2])
        for value in (str(truncated), truncated):
            with pytest.raises(ValueError, match=r"items\[0\]\.image: cannot decode.*truncated"):
                guarded(items=[{"image": value}])
        with pytest.raises(ValueError, match=r"items\[0\]\[1\]: cannot decode.*truncated"):
            guarded(items=[["x", data[: len(data) // 2]]])
    with pytest.raises(ValueError, match=r"items\[0\]\.image: image file not found"):
        guarded(items=[{"image": tmp_path / "missing.png"}])
    with pytest.raises(ValueError, match=r"items\[0\]\.image: image file not found"):
        guarded(items=[{"image": str(tmp_path)}])  # a directory is not an image file


def test_bad_batch_structure(guarded):
    with pytest.raises(TypeError, match="items must be a list"):
        guarded(items={"text": "a single dict, not a list"})
    with pytest.raises(TypeError, match="items must be a list"):
        guarded(items="a single string")
    with pytest.raises(TypeError, match="items must be a list"):
        guarded(items=IMG)
    with pytest.raises(ValueError, match=r"instruction: got 1 instructions for 2 items"):
        guarded(items=["a", "b"], instruction=["only one"])
    with pytest.raises(ValueError, match=r"instruction: got 3 instructions for 2 items"):
        guarded(items=["a", "b"], instruction=["x", "y", "z"])
    with pytest.raises(TypeError, match=r"instruction\[1\]"):
        guarded(items=["a", "b"], instruction=["x", 5])
    with pytest.raises(ValueError, match="nothing to process"):
        guarded()


def test_plain_path_bad_image(guarded):
    with pytest.raises(ValueError, match=r"images\[1\].*5-band"):
        guarded(text=[chat(VIS + VIS)], images=[IMG, np.zeros((4, 4, 5), np.uint16)])


def test_max_image_pixels_refused_before_decoding(processor, tmp_path):
    small = copy.deepcopy(processor)
    small.max_image_pixels = 100 * 100
    png = encode(make_image(120, 100, 1), "PNG")
    with pytest.raises(ValueError, match=r"items\[0\]\.image.*above the limit"):
        small(items=[{"image": png}])
    with pytest.raises(ValueError, match=r"items\[0\]\.image.*above the limit"):
        small(items=[{"image": make_image(120, 100, 1)}])
    assert small(items=[{"image": make_image(100, 100, 1)}])["image_grid_thw"].shape == (1, 3)


# ----------------------------------------------------------------------------------------------------------
# 6. Token estimates
# ----------------------------------------------------------------------------------------------------------
def test_estimate_item_tokens_orders_items(processor):
    ip = processor.image_processor
    text10 = estimate_item_tokens("0123456789", ip)
    small = estimate_item_tokens({"image": make_image(112, 112, 1)}, ip)
    big = estimate_item_tokens({"image": make_image(224, 224, 1)}, ip)
    assert text10 < small < big
    assert estimate_item_tokens(make_image(112, 112, 1), ip) == small
    assert estimate_item_tokens(np.zeros((112, 112, 3), np.uint8), ip) == small
    assert estimate_item_tokens(encode(make_image(224, 224, 1), "PNG"), ip) == big
    # Above the budget the estimate saturates like the real processor does.
    assert estimate_item_tokens(make_image(2000, 2000, 1), ip) == big
    # Longer text -> more tokens; invalid items do not raise here.
    assert estimate_item_tokens("x" * 400, ip) > estimate_item_tokens("x" * 40, ip)
    assert isinstance(estimate_item_tokens({"image": b"garbage"}, ip), int)


def test_estimate_item_tokens_close_to_real(processor, images, tmp_path):
    path = tmp_path / "tile.png"
    path.write_bytes(encode(images[1], "PNG"))
    items = [
        "0123456789",
        "The quick brown fox jumps over the lazy dog near the river bank. " * 5,
        {"image": make_image(112, 112, 1)},
        {"image": make_image(224, 224, 1)},
        images[0],
        {"image": images[0], "text": "a field with trees"},
        {"image": str(path), "text": "a field"},
        {"image": images[2], "bbox": [1, 2, 30, 40], "coords": (1, 2), "text": "hello world"},
        [images[0], "between", images[1]],
    ]
    for item in items:
        estimate = estimate_item_tokens(item, processor.image_processor)
        real = int(processor(items=[item])["attention_mask"].sum())
        assert abs(estimate - real) <= 0.25 * real, (item if isinstance(item, str) else type(item), estimate, real)


# ----------------------------------------------------------------------------------------------------------
# 7. Truncation
# ----------------------------------------------------------------------------------------------------------
def _tail_ids(processor):
    return processor.tokenizer("<|im_end|>\n<|endoftext|>", add_special_tokens=False)["input_ids"]


def test_max_length_truncates_text(processor):
    long_text = "The quick brown fox jumps over the lazy dog near the river bank. " * 20
    full = processor(items=[long_text])["input_ids"][0].tolist()
    truncating = copy.deepcopy(processor)
    truncating.max_length = 40
    assert len(full) > 40
    out = truncating(items=[long_text, "short"])
    assert out["input_ids"].shape == (2, 40)
    ids = out["input_ids"][0].tolist()
    tail = _tail_ids(processor)
    assert len(tail) == 3
    assert ids[-3:] == tail
    assert ids[:-3] == full[:37]  # the prefix is kept, only the text end is cut
    assert out["attention_mask"][0].tolist() == [1] * 40
    # A short item is not touched.
    short = processor(items=["short"])["input_ids"][0].tolist()
    assert out["input_ids"][1, : len(short)].tolist() == short
    # Exactly max_length long -> unchanged.
    exact = copy.deepcopy(processor)
    exact.max_length = len(full)
    assert exact(items=[long_text])["input_ids"][0].tolist() == full
    assert processor.max_length is None  # the session processor is untouched


def test_max_length_keeps_image_tokens(processor):
    truncating = copy.deepcopy(processor)
    truncating.max_length = 60
    item = {"image": make_image(112, 112, 1), "text": "a long description of the tile " * 20}
    out = truncating(items=[item])
    ids = out["input_ids"][0].tolist()
    assert len(ids) == 60
    assert ids[-3:] == _tail_ids(processor)
    assert ids.count(processor.image_token_id) == 16
    assert int(out["mm_token_type_ids"].sum()) == 16


def test_max_length_text_before_image_is_shortened(processor):
    """Spec: the last text part is shortened; only items whose images alone exceed max_length raise.

    Here the image needs 16 (+2) tokens, far below max_length, so the text before it must be shortened.
    """
    truncating = copy.deepcopy(processor)
    truncating.max_length = 60
    item = ["a long description of the tile " * 20, make_image(112, 112, 1)]
    out = truncating(items=[item])
    ids = out["input_ids"][0].tolist()
    assert len(ids) == 60
    assert ids[-3:] == _tail_ids(processor)
    assert ids.count(processor.image_token_id) == 16
    vision_end = processor.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert ids[-4] == vision_end


def test_max_length_never_truncates_images(processor):
    truncating = copy.deepcopy(processor)
    truncating.max_length = 40
    with pytest.raises(ValueError, match="never truncated"):
        truncating(items=[{"image": make_image(224, 224, 1), "text": "x"}])  # 64 image tokens > 40
    with pytest.raises(ValueError, match="never truncated"):
        truncating(items=["fine", make_image(224, 224, 1)])


def test_max_length_never_cuts_a_box_or_coordinates(processor):
    proc = copy.deepcopy(processor)
    item = {"image": make_image(112, 112, 1), "bbox": [0, 0, 50, 50], "coords": (12.5, -3.25), "text": "hi " * 40}
    full = processor.render([item])[0]
    proc.max_length = 90
    ids = proc(items=[item])["input_ids"][0]
    decoded = proc.tokenizer.decode(ids)
    assert len(ids) == 90
    assert "<|box_start|>(0,0),(446,446)<|box_end|>" in decoded and "12.5000°N, 3.2500°W" in decoded
    proc.max_length = 60  # frame + image + box + coordinates alone need ~72 tokens
    with pytest.raises(ValueError, match=r"items\[0\]: needs .* never truncated"):
        proc(items=[item])
    assert "hi hi" in full


def test_truncated_lazy_pil_image_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.png"
    buffer = io.BytesIO()
    make_image(300, 300, 5).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    lazy = Image.open(path)  # not decoded yet: only the header was read
    with pytest.raises(ValueError, match=r"items\[0\]\.image: cannot decode"):
        normalize_item({"image": lazy}, "items[0]")


def test_load_truncated_images_setting_is_left_as_the_user_set_it(tmp_path):
    from PIL import ImageFile

    path = tmp_path / "ok.png"
    make_image(40, 40).save(path)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        normalize_item({"image": str(path)}, "item")
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_empty_batch_and_unsupported_tensor_type(processor):
    with pytest.raises(ValueError, match="items is empty"):
        processor(items=[])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(items=["x"], return_tensors="np")


def test_check_items_reads_headers_only_and_names_the_index(tmp_path):
    from processing_vlm2geovec import check_items

    path = tmp_path / "big.png"
    make_image(500, 400).save(path)
    check_items(["a", {"image": str(path), "bbox": [0, 0, 500, 400]}])
    with pytest.raises(ValueError, match=r"inputs\[1\]\.bbox: .* outside the 500x400 image"):
        check_items(["a", {"image": str(path), "bbox": [0, 0, 501, 400]}])
