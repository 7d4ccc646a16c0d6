"""VLM2GeoVec input specification and processor.

This file is the single home of the input spec: what an item is, how it is validated, and the exact text
each part becomes. It is copied into every checkpoint and runs as remote code, so it imports only
numpy, PIL, torch and transformers.

An **item** is one of:

* a ``str`` -> a text-only item;
* an image (``PIL.Image.Image``, ``numpy.ndarray`` or ``bytes``) -> an image-only item;
* a ``dict`` with any of the keys ``image``, ``text``, ``bbox``, ``coords`` (at least one), rendered in the
  fixed order image, boxes, coordinates, text;
* a ``list``/``tuple`` of **parts**, rendered in the given order, to interleave freely. A part is a ``str``
  (text), an image, or a one-key dict ``{"image": ...}``, ``{"text": ...}``, ``{"bbox": [...]}`` or
  ``{"coords": (lat, lon)}``.

``image`` may also be a path (``str``/``os.PathLike``) inside a dict. ``bbox`` is ``[x1, y1, x2, y2]`` in
pixels of the nearest preceding image (several boxes: a list of such lists). ``coords`` is
``(lat, lon)`` in WGS84 degrees, latitude first (or a dict with ``lat``/``lon``).

Rendering (``INPUT_FORMAT_VERSION = 1``), pinned by tests and documented in ``model_card.md``:

* image  -> ``<|vision_start|><|image_pad|>...<|vision_end|>`` (one pad token per merged 28x28 patch)
* bbox   -> the backbone family's own grounding form (`BACKBONE_FAMILIES`), always from a box given in pixels of
  the image as the user passed it (upright):
  Qwen2-VL ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with integers in 0..1000 of the image;
  Qwen3-VL ``{"bbox_2d": [x1, y1, x2, y2]}`` with integers in 0..1000 of the image;
  Qwen2.5-VL ``{"bbox_2d": [x1, y1, x2, y2]}`` in absolute pixels of the *resized* model input
* coords -> ``29.6900°N, 81.9900°W`` (latitude first, fixed precision, hemisphere letters; the same in every family)
* parts are joined with ``"\\n"``, except that nothing is inserted right after an image
* the whole item is the family's chat (system = instruction, user = content) followed by the prompt style's ending:
  ``"vlm2geovec"`` appends ``<|endoftext|>`` after the user turn, whose hidden state is the embedding;
  ``"qwen3_vl_embedding"`` reproduces Qwen3-VL-Embedding's own pipeline (default instruction
  "Represent the user's input.", a final full stop added to an instruction without end punctuation, and the
  generation prompt ``<|im_start|>assistant\\n`` whose last token is pooled).
"""

from __future__ import annotations

import io
import math
import os
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from transformers import BatchFeature
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize
from transformers.processing_utils import ProcessorMixin

INPUT_FORMAT_VERSION = 1
ITEM_KEYS = ("image", "text", "bbox", "coords")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
EMBED_TOKEN = "<|endoftext|>"
IMAGE_TOKEN = "<|image_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
BOX_SCALE = 1000
DEFAULT_COORD_PRECISION = 4
# Decoding guard: anything above this is refused before decoding (PIL's own bomb limit is ~179 MP).
DEFAULT_MAX_IMAGE_PIXELS = 16_384 * 16_384
PART_SEPARATOR = "\n"
# Token budget of an item when neither max_length nor the tokenizer sets one (Qwen2-VL's context length).
DEFAULT_MAX_LENGTH = 32_768
# A text longer than this many characters per token of the budget is cut before tokenizing, so a huge text costs
# one budget's worth of tokenizing (tokens average 3-5 characters: only text made of long runs of one character
# can be cut shorter than the budget by this).
TEXT_CHARS_PER_TOKEN = 16

# Qwen2-VL's chat template (the one its checkpoints ship). The processor renders items in Python (see
# `render_item`) and a test pins that rendering to this template's output.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL's chat turns: no default system turn, content parts concatenated. (Qwen3-VL checkpoints ship a longer
# template, with tools and thinking; for system and user turns of text and images it renders exactly this.)
QWEN3_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Added tokens of each tokenizer generation, in id order from 151643 (after the 151,643 byte-level BPE ranks).
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
)
QWEN2_5_SPECIAL_TOKENS = QWEN2_VL_SPECIAL_TOKENS + (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
QWEN3_SPECIAL_TOKENS = QWEN2_5_SPECIAL_TOKENS + ("<tool_response>", "</tool_response>", "<think>", "</think>")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class BackboneFamily:
    """What changes between Qwen-VL generations, read from each family's own processor and checkpoints. Adding a
    family is one entry in `BACKBONE_FAMILIES` plus a config/model pair in ``modeling_vlm2geovec.py``."""

    name: str  # the backbone's transformers model_type
    title: str
    hub_ids: tuple[str, ...]
    patch_size: int  # vision patch side in pixels
    merge_size: int  # patches merged per side into one token (a token covers patch_size * merge_size pixels)
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pixel_budget: tuple[int, int]  # (min, max) pixels per image in the Hub checkpoints' image processor
    box_units: str  # "0-1000": integers in 0..1000 of the image; "resized-pixels": pixels of the resized input
    box_syntax: str  # "qwen2_vl": <|box_start|>(x1,y1),(x2,y2)<|box_end|>; "json": {"bbox_2d": [x1, y1, x2, y2]}
    default_system_prompt: str | None  # rendered when no instruction is given (None: no system turn)
    special_tokens: tuple[str, ...]
    chat_template: str

    @property
    def image_factor(self) -> int:
        return self.patch_size * self.merge_size


BACKBONE_FAMILIES: dict[str, BackboneFamily] = {
    "qwen2_vl": BackboneFamily(
        "qwen2_vl", "Qwen2-VL", ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-VL-7B-Instruct"), 14, 2,
        OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, (56 * 56, 28 * 28 * 16384), "0-1000", "qwen2_vl",
        DEFAULT_SYSTEM_PROMPT, QWEN2_VL_SPECIAL_TOKENS, QWEN2_VL_CHAT_TEMPLATE,
    ),
    "qwen2_5_vl": BackboneFamily(
        "qwen2_5_vl", "Qwen2.5-VL", ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"), 14, 2,
        OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, (56 * 56, 28 * 28 * 16384), "resized-pixels", "json",
        DEFAULT_SYSTEM_PROMPT, QWEN2_5_SPECIAL_TOKENS, QWEN2_VL_CHAT_TEMPLATE,
    ),
    "qwen3_vl": BackboneFamily(
        "qwen3_vl", "Qwen3-VL", ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-8B-Instruct",
                                 "Qwen/Qwen3-VL-Embedding-2B", "Qwen/Qwen3-VL-Embedding-8B"), 16, 2,
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (65536, 16777216), "0-1000", "json",
        None, QWEN3_SPECIAL_TOKENS, QWEN3_VL_CHAT_TEMPLATE,
    ),
}
DEFAULT_FAMILY = "qwen2_vl"


@dataclass(frozen=True)
class PromptStyle:
    """How an item's chat ends and where the embedding is read."""

    name: str
    ending: str  # appended after the user turn's content; its last token is pooled
    default_instruction: str | None  # used when no instruction is given (None: the family's default system turn)
    end_instruction_with_punctuation: bool  # add "." to an instruction whose last character is no punctuation


PROMPT_STYLES: dict[str, PromptStyle] = {
    "vlm2geovec": PromptStyle("vlm2geovec", "<|im_end|>\n<|endoftext|>", None, False),
    # Qwen3-VL-Embedding's published pipeline: system instruction, user content, generation prompt, last token.
    "qwen3_vl_embedding": PromptStyle(
        "qwen3_vl_embedding", "<|im_end|>\n<|im_start|>assistant\n", "Represent the user's input.", True
    ),
}
DEFAULT_PROMPT_STYLE = "vlm2geovec"


def backbone_family_spec(name: Any) -> BackboneFamily:
    """The `BackboneFamily` called ``name`` (a transformers model_type such as ``"qwen2_5_vl"``)."""
    if name not in BACKBONE_FAMILIES:
        raise ValueError(f"backbone_family: unknown family {name!r}; supported: {sorted(BACKBONE_FAMILIES)}")
    return BACKBONE_FAMILIES[name]


def prompt_style_spec(name: Any) -> PromptStyle:
    if name not in PROMPT_STYLES:
        raise ValueError(f"prompt_style: unknown style {name!r}; supported: {sorted(PROMPT_STYLES)}")
    return PROMPT_STYLES[name]



# ----------------------------------------------------------------------------------------------------------
# Validation and formatting of single fields
# ----------------------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _finite_number(value: Any, field: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{field}: expected a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        raise ValueError(f"{field}: must be finite, got an integer of {len(str(abs(int(value))))} digits") from None
    if not math.isfinite(number):
        raise ValueError(f"{field}: must be finite, got {number}")
    return number


def validate_bbox(bbox: Any, image_size: tuple[int, int] | None, field: str = "bbox") -> tuple[float, ...]:
    """Check one box ``[x1, y1, x2, y2]`` (pixels) against its image's ``(width, height)``; return it as floats."""
    if image_size is None:
        raise ValueError(f"{field}: a box needs an image before it in the same item to refer to")
    if isinstance(bbox, (str, bytes)) or not isinstance(bbox, (Sequence, np.ndarray)):
        raise TypeError(f"{field}: expected [x1, y1, x2, y2], got {type(bbox).__name__}")
    if len(bbox) != 4:
        raise ValueError(f"{field}: expected 4 values [x1, y1, x2, y2], got {len(bbox)}")
    x1, y1, x2, y2 = (_finite_number(v, f"{field}[{i}]") for i, v in enumerate(bbox))
    width, height = image_size
    if x2 <= x1:
        raise ValueError(f"{field}: x2 ({x2:g}) must be greater than x1 ({x1:g})")
    if y2 <= y1:
        raise ValueError(f"{field}: y2 ({y2:g}) must be greater than y1 ({y1:g})")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(
            f"{field}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width}x{height} image it refers to"
        )
    return x1, y1, x2, y2


def _box_span(low: float, high: float, size: float, scale: int) -> tuple[int, int]:
    """A pixel interval of an axis of ``size`` pixels, as integers in 0..scale; an interval narrower than one unit
    would round to a point, so it is kept one unit wide."""
    a = min(scale, max(0, int(round(low * scale / size))))
    b = min(scale, max(0, int(round(high * scale / size))))
    if b <= a:
        a, b = (a, a + 1) if a < scale else (scale - 1, scale)
    return a, b


def format_bbox(
    bbox: Sequence[float],
    image_size: tuple[int, int],
    family: str = DEFAULT_FAMILY,
    resized_size: tuple[int, int] | None = None,
) -> str:
    """Render a box given in pixels of an image of ``image_size`` ``(width, height)`` in ``family``'s own form.

    Families with ``box_units == "resized-pixels"`` (Qwen2.5-VL) need ``resized_size``, the ``(width, height)`` the
    image processor resizes that image to; the others use integers in 0..1000 of the image.

    >>> format_bbox([10, 20, 110, 220], (400, 400))
    '<|box_start|>(25,50),(275,550)<|box_end|>'
    >>> format_bbox([10, 20, 110, 220], (400, 400), "qwen3_vl")
    '{"bbox_2d": [25, 50, 275, 550]}'
    >>> format_bbox([10, 20, 110, 220], (400, 400), "qwen2_5_vl", resized_size=(392, 392))
    '{"bbox_2d": [10, 20, 108, 216]}'
    """
    x1, y1, x2, y2 = validate_bbox(bbox, image_size)
    spec = backbone_family_spec(family)
    width, height = image_size
    if spec.box_units == "resized-pixels":
        if resized_size is None:
            raise ValueError(f"{spec.title} boxes are in pixels of the resized image: pass resized_size")
        out_w, out_h = resized_size
        (ax, bx), (ay, by) = _box_span(x1 * out_w / width, x2 * out_w / width, out_w, out_w), \
            _box_span(y1 * out_h / height, y2 * out_h / height, out_h, out_h)
    else:
        (ax, bx), (ay, by) = _box_span(x1, x2, width, BOX_SCALE), _box_span(y1, y2, height, BOX_SCALE)
    if spec.box_syntax == "qwen2_vl":
        return f"{BOX_START}({ax},{ay}),({bx},{by}){BOX_END}"
    return f'{{"bbox_2d": [{ax}, {ay}, {bx}, {by}]}}'


def validate_coords(coords: Any, field: str = "coords") -> tuple[float, float]:
    """Check a ``(lat, lon)`` pair (or ``{"lat": .., "lon": ..}``) in WGS84 degrees; return it as floats."""
    if isinstance(coords, Mapping):
        unknown = set(coords) - {"lat", "lon"}
        if unknown or not {"lat", "lon"} <= set(coords):
            raise ValueError(f"{field}: a coordinate dict needs exactly the keys 'lat' and 'lon', got {sorted(coords)}")
        coords = (coords["lat"], coords["lon"])
    if isinstance(coords, (str, bytes)) or not isinstance(coords, (Sequence, np.ndarray)):
        raise TypeError(f"{field}: expected (lat, lon), got {type(coords).__name__}")
    if len(coords) != 2:
        raise ValueError(f"{field}: expected 2 values (lat, lon), got {len(coords)}")
    lat = _finite_number(coords[0], f"{field}.lat")
    lon = _finite_number(coords[1], f"{field}.lon")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"{field}.lat: latitude must lie in [-90, 90], got {lat:g}")
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"{field}.lon: longitude must lie in [-180, 180], got {lon:g}")
    return lat, lon


def format_coords(coords: Any, precision: int = DEFAULT_COORD_PRECISION) -> str:
    """Render ``(lat, lon)`` as fixed-precision text, latitude first, with hemisphere letters.

    >>> format_coords((29.69, -81.99))
    '29.6900°N, 81.9900°W'
    """
    lat, lon = validate_coords(coords)
    lat, lon = round(lat, precision), round(lon, precision)
    # Hemisphere from the rounded value, so that -0.00001 renders as 0.0000°N, not 0.0000°S.
    ns = "S" if lat < 0 else "N"
    ew = "W" if lon < 0 else "E"
    return f"{abs(lat):.{precision}f}°{ns}, {abs(lon):.{precision}f}°{ew}"


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
# What becomes of each kind of image (the same rules for encode, embed, the Space and RSMEB builds):
# * 8-bit images in any PIL mode become RGB exactly as transformers' Qwen2-VL image processor makes them:
#   transparency (an alpha band, or a palette/colour-key `transparency`) is composited onto white, other modes
#   are converted by PIL. HxWx4 uint8 arrays are composited onto white with transformers' own arithmetic.
# * Files and bytes are turned upright by their EXIF orientation (as transformers' `load_image` does); a PIL
#   image object is used as given.
# * High-bit-depth data (16-bit PNG/TIFF, PIL modes I;16/I/F, integer arrays wider than 8 bits) is never cut
#   to 8 bits silently: `image_scale="auto"` (default) stretches each band linearly from its 2nd..98th
#   percentile to 0..255 (the GeoTIFF tiler's stretch, `stretch_to_uint8`), `image_scale=(low, high)` maps that
#   fixed range for every image (consistent radiometry across tiles), `image_scale=None` refuses such images.
# * Multiband data other than 1, 3 (RGB) or 4 (RGBA) channels is refused: select three bands first.
# * Truncated files, decompression bombs, images above `max_image_pixels`, zero-size images and aspect ratios
#   above 200 (Qwen2-VL's limit) are refused with the item named.
MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize refuses more elongated images
STRETCH_PERCENTILES = (2.0, 98.0)
IMAGE_SCALES = ("auto",)
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F", "I;32", "I;32B", "I;32L"}
# Endings of PNG/TIFF raw modes ("RGB;16B", "RGBA;16L") that PIL reads into an 8-bit mode by dropping the low byte
# of each 16-bit sample. (Not ";16" alone: BMP's "BGR;16" is a 16-bit *pixel* of 5-6-5 bits, read faithfully.)
_SIXTEEN_BIT_RAWMODE_ENDINGS = (";16B", ";16L", ";16N")


def _is_image_value(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray, bytes, bytearray))


def check_image_scale(scale: Any, field: str = "image_scale") -> str | tuple[float, float] | None:
    """Validate an ``image_scale`` setting: ``"auto"``, ``None`` or ``(low, high)`` with low < high."""
    if scale is None or (isinstance(scale, str) and scale in IMAGE_SCALES):
        return scale
    if (isinstance(scale, (str, bytes)) or not isinstance(scale, (Sequence, np.ndarray)) or len(scale) != 2
            or not all(_is_number(v) and math.isfinite(float(v)) for v in scale) or not float(scale[0]) < float(scale[1])):
        raise ValueError(f"{field}: expected 'auto', None or (low, high) with low < high, got {scale!r}")
    return float(scale[0]), float(scale[1])


def stretch_to_uint8(
    array: np.ndarray, scale: str | tuple[float, float] = "auto", valid: np.ndarray | None = None
) -> np.ndarray:
    """Map numeric pixels to uint8, per band: ``(x - low) * 255 / (high - low)``, clipped, rounded half up.

    Args:
        array: ``(H, W)`` or ``(H, W, bands)`` pixels of any numeric dtype.
        scale: ``"auto"``: each band's 2nd..98th percentile over its finite (and `valid`) pixels; one fixed
            ``(low, high)`` for every band; or a ``(bands, 2)`` array of per-band limits (the GeoTIFF tiler's
            raster-wide percentiles).
        valid: optional ``(H, W)`` mask of the pixels that count for the percentiles (nodata excluded).

    Non-finite pixels become 0. A band whose percentiles coincide is stretched over ``(low, low + 1)``.
    This is the one home of the stretch: the GeoTIFF tiler and the processor use it alike.
    """
    data = np.asarray(array, dtype=np.float64)
    squeeze = data.ndim == 2
    if squeeze:
        data = data[:, :, None]
    if isinstance(scale, str) and scale == "auto":
        limits = []
        for band in range(data.shape[2]):
            values = data[:, :, band]
            values = values[valid] if valid is not None else values.ravel()
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(f"band {band + 1} has no finite pixels; cannot estimate its stretch")
            low, high = np.percentile(values, STRETCH_PERCENTILES)
            limits.append((low, high if high > low else low + 1.0))
        low, high = np.array(limits).T
    elif np.ndim(scale) == 2:
        limits = np.asarray(scale, dtype=np.float64)
        if limits.shape != (data.shape[2], 2) or not np.isfinite(limits).all() or not (limits[:, 0] < limits[:, 1]).all():
            raise ValueError(f"scale: expected {data.shape[2]} finite (low, high) pairs with low < high, got {scale!r}")
        low, high = limits[:, 0], limits[:, 1]
    else:
        low, high = check_image_scale(scale, "scale")
    out = np.clip((data - low) * (255.0 / (high - low)), 0.0, 255.0)
    out = np.floor(np.nan_to_num(out, nan=0.0) + 0.5).astype(np.uint8)
    return out[:, :, 0] if squeeze else out


def _high_bit_refusal(field: str, what: str) -> ValueError:
    return ValueError(
        f"{field}: {what} holds more than 8 bits per sample and image_scale is None (refuse); set image_scale to "
        "'auto' (2-98 percentile stretch per band) or (low, high), or convert it to 8 bits yourself"
    )


def _stretched_image(array: np.ndarray, image_scale, field: str, what: str) -> Image.Image:
    if image_scale is None:
        raise _high_bit_refusal(field, what)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    try:
        pixels = stretch_to_uint8(array, image_scale)
    except ValueError as error:
        raise ValueError(f"{field}: {what}: {error}") from None
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def _check_array(array: np.ndarray, field: str) -> None:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] not in (3, 4):
        raise ValueError(
            f"{field}: a {array.shape[2]}-band array (shape {array.shape}); an image has 1, 3 (RGB) or 4 (RGBA) "
            "channels last: select three bands first (e.g. red, green, blue)"
        )
    if array.ndim not in (2, 3):
        raise ValueError(f"{field}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{field}: image array is empty (shape {array.shape})")
    if array.dtype.kind not in "uif":
        raise ValueError(f"{field}: unsupported array dtype {array.dtype}; give uint8, a wider integer type or float")


def _array_to_image(array: np.ndarray, field: str, image_scale="auto") -> Image.Image:
    """An RGB image from an array, by the rules at the top of this section."""
    _check_array(array, field)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{field}: image array contains NaN or inf")
        if isinstance(image_scale, tuple):
            if channels == 4:
                raise ValueError(f"{field}: image_scale does not apply to 4-channel (RGBA) float arrays; give 3 bands")
            return _stretched_image(array, image_scale, field, "a float array")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"{field}: float image arrays are read as intensities in [0, 1], got values in [{array.min():g}, "
                f"{array.max():g}]; for reflectances or other ranges set image_scale=(low, high)"
            )
        array = np.round(array.astype(np.float64) * 255.0).astype(np.uint8)  # float64: float16 would misround
    elif array.dtype != np.uint8:
        if channels == 4:
            raise ValueError(
                f"{field}: a 4-channel {array.dtype} array: alpha above 8 bits is not supported; give 3 bands"
            )
        return _stretched_image(array, image_scale, field, f"a {array.dtype} array")
    if channels == 4:
        # the same arithmetic transformers' image processor applies to HxWx4 arrays (composite onto white)
        from transformers.image_transforms import convert_to_rgb

        return Image.fromarray(convert_to_rgb(array, return_numpy=True, input_data_format="channels_last"), mode="RGB")
    return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")


def _to_rgb(image: Image.Image, field: str, image_scale) -> Image.Image:
    """RGB from a decoded PIL image, by the rules at the top of this section."""
    if image.mode in _HIGH_BIT_MODES:
        return _stretched_image(np.asarray(image), image_scale, field, f"a mode {image.mode!r} image")
    if image.mode == "RGB" and image.info.get("transparency") is None:
        return image
    # transformers' own conversion (alpha and palette transparency composited onto white), so pixels match it
    from transformers.image_transforms import convert_to_rgb

    try:
        return Image.fromarray(convert_to_rgb(image, return_numpy=True), mode="RGB")
    except (ValueError, OSError) as error:  # modes PIL cannot convert to RGB
        raise ValueError(f"{field}: cannot convert a mode {image.mode!r} image to RGB: {error}") from None


def _sixteen_bit_samples(image: Image.Image) -> bool:
    """Whether PIL reads this multi-channel file into 8 bits by dropping the low byte of 16-bit samples."""
    if image.mode in _HIGH_BIT_MODES:
        return False  # PIL keeps all bits of single-channel data
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and rawmode.endswith(_SIXTEEN_BIT_RAWMODE_ENDINGS):
            return True
    return False


def _read_with_gdal(source: Any, label: str, field: str, image_scale) -> Image.Image:
    """Files PIL cannot read faithfully (16-bit RGB PNG/TIFF): read all bits with GDAL (rasterio), then stretch."""
    try:
        import rasterio
        from rasterio.io import MemoryFile
    except ImportError:
        raise ValueError(
            f"{field}: {label} holds 16-bit multi-channel samples, which PIL can only read by dropping their low "
            "byte; install rasterio (pip install 'vlm2geovec[geo]') to read it, or pass the pixels as a numpy "
            "uint16 array"
        ) from None
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not georeferenced" is expected for plain images
            if isinstance(source, io.BytesIO):
                with MemoryFile(source.getvalue()) as memory, memory.open() as dataset:
                    data = dataset.read()
            else:
                with rasterio.open(source) as dataset:
                    data = dataset.read()
    except Exception as error:  # rasterio raises its own error types for corrupt data
        raise ValueError(f"{field}: cannot read image from {label}: {error}") from None
    if data.dtype == np.uint8 and data.shape[0] in (1, 3):  # 8-bit after all: nothing to stretch
        pixels = np.moveaxis(data, 0, -1)
        return Image.fromarray(np.ascontiguousarray(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels), "RGB")
    if data.shape[0] not in (1, 3):
        raise ValueError(
            f"{field}: {label} has {data.shape[0]} bands; an image has 1 or 3 (RGB): select three bands first "
            "(vlm2geovec index build --bands, or a numpy array)"
        )
    return _stretched_image(np.moveaxis(data, 0, -1), image_scale, field, label)


def _decode(image: Image.Image, field: str, label: str) -> None:
    """Decode now (lazily opened images included), refusing truncated data even if PIL is told to allow it."""
    allow_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for corrupt data
        raise ValueError(f"{field}: cannot decode image from {label} (corrupt or truncated): {error}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated


def _check_size(width: int, height: int, field: str, label: str, max_image_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"{field}: image {label} has zero size {width}x{height}")
    if width * height > max_image_pixels:
        raise ValueError(
            f"{field}: image {label} is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_image_pixels:,}; cut it into tiles first"
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"{field}: image {label} is {width}x{height}, an aspect ratio above {MAX_ASPECT_RATIO} (the most "
            "Qwen2-VL accepts); crop or pad it first"
        )


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The size after EXIF orientation, from the header alone (orientations 5-8 swap width and height)."""
    width, height = image.size
    try:
        if image.format == "PNG":  # PNG's getexif() decodes the whole image to find an eXIf chunk after the data
            exif = Image.Exif()
            if image.info.get("exif"):
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        orientation = exif.get(0x0112)
    except Exception:  # a broken EXIF block: exif_transpose will ignore it as well
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _open(source: Any, field: str, label: str) -> Image.Image:
    import warnings

    try:
        with warnings.catch_warnings():
            # PIL's own bomb warning fires far below this package's limit, which is checked right after
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{field}: image {label} is larger than PIL's decompression-bomb limit ({error}); cut it into tiles "
            "first"
        ) from None
    except Exception as error:  # UnidentifiedImageError, OSError, and ValueError/SyntaxError from some plugins
        raise ValueError(f"{field}: cannot read image from {label}: {error}") from None


def load_image(
    value: Any,
    field: str = "image",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    decode: bool = True,
    image_scale: str | tuple[float, float] | None = "auto",
) -> Image.Image:
    """Turn a PIL image, path, bytes or array into a fully decoded, upright RGB ``PIL.Image`` (or raise a clear
    error naming `field`), by the rules at the top of this section.

    ``decode``: ``True`` returns the RGB image; ``"verify"`` decodes every pixel (what catches truncated
    files) but converts nothing and returns the opened image; ``False`` reads only the header (size after EXIF
    orientation, mode).
    """
    image_scale = check_image_scale(image_scale)
    if isinstance(value, Image.Image):
        label = "(PIL image)"
        _check_size(*value.size, field, label, max_image_pixels)
        if value.mode in _HIGH_BIT_MODES and image_scale is None:
            raise _high_bit_refusal(field, f"a mode {value.mode!r} image")
        if _sixteen_bit_samples(value):  # opened from a 16-bit RGB file and not decoded yet: read its file instead
            filename = getattr(value, "filename", "")
            if not filename or not os.path.isfile(filename):
                raise ValueError(f"{field}: the PIL image holds 16-bit samples that PIL reads by dropping their low "
                                 "byte; pass its file path or a numpy uint16 array instead")
            if image_scale is None:
                raise _high_bit_refusal(field, repr(filename))
            return value if not decode else _read_with_gdal(filename, repr(filename), field, image_scale)
        if not decode:
            return value
        _decode(value, field, "the PIL image")
        return value if decode == "verify" else _to_rgb(value, field, image_scale)
    if isinstance(value, np.ndarray):
        if decode is not True:
            _check_array(value, field)
            _check_size(value.shape[1], value.shape[0], field, f"array {value.shape}", max_image_pixels)
            if decode == "verify":
                _array_to_image(value, field, image_scale)  # dtype/range rules (cheap next to a model)
            return value
        _check_array(value, field)
        _check_size(value.shape[1], value.shape[0], field, f"array {value.shape}", max_image_pixels)
        return _array_to_image(value, field, image_scale)
    if not isinstance(value, (bytes, bytearray, str, os.PathLike)):
        raise TypeError(f"{field}: expected a PIL image, numpy array, bytes or file path, got {type(value).__name__}")
    if isinstance(value, (bytes, bytearray)):
        source, label = io.BytesIO(bytes(value)), f"{len(value)} bytes"
    else:
        source, label = value, repr(os.fspath(value))
        if not os.path.isfile(value):
            where = os.fspath(value)
            hint = ("; URLs and base64 strings are not fetched or decoded: download the file, or pass its bytes"
                    if isinstance(where, str) and where.lower().startswith(("http://", "https://", "data:")) else "")
            raise ValueError(f"{field}: image file not found: {label}{hint}")
    try:
        image = _open(source, field, label)
    except ValueError:
        # PIL cannot identify 16-bit RGB or multiband TIFFs: GDAL can, where installed
        if _looks_like_tiff(source) and _has_rasterio():
            return _read_with_gdal(source, label, field, image_scale)
        raise
    sixteen_bit = _sixteen_bit_samples(image)  # before anything can decode the image and clear its tile list
    _check_size(*_upright_size(image), field, label, max_image_pixels)
    if (sixteen_bit or image.mode in _HIGH_BIT_MODES) and image_scale is None:
        raise _high_bit_refusal(field, label)
    if sixteen_bit:
        if not decode and _has_rasterio():
            return image
        return _read_with_gdal(source, label, field, image_scale)  # without rasterio: raises its explanation
    if not decode:
        return image
    _decode(image, field, label)
    if decode == "verify":
        return image
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image, field, image_scale)


def _looks_like_tiff(source: Any) -> bool:
    try:
        if isinstance(source, io.BytesIO):
            head = source.getvalue()[:4]
        else:
            with open(source, "rb") as handle:
                head = handle.read(4)
    except OSError:
        return False
    return head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _has_rasterio() -> bool:
    import importlib.util

    return importlib.util.find_spec("rasterio") is not None


# ----------------------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------------------
def _text_value(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {type(value).__name__}")
    _check_unicode(value, field)
    if not _has_visible_character(value):
        raise ValueError(f"{field}: text is empty (only whitespace, control or zero-width characters)")
    return value


def _check_unicode(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates (e.g. from a bad decode) cannot be tokenized
        raise ValueError(f"{field}: text is not valid Unicode ({error.reason} at position {error.start})") from None


def _has_visible_character(text: str) -> bool:
    # separators (Z*), controls (Cc) and format characters (Cf: zero-width space, BOM, ...) show nothing
    return any(not unicodedata.category(char).startswith(("Z", "Cc", "Cf")) for char in text)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".jp2")


def _refuse_image_path_as_text(text: str, field: str) -> None:
    """A bare string is text; one that names an existing image file was almost surely meant as the image."""
    if len(text) < 4096 and text.strip().lower().endswith(_IMAGE_SUFFIXES) and os.path.isfile(text.strip()):
        raise ValueError(
            f"{field}: this text is the path of an image file ({text.strip()!r}); a bare string is embedded as "
            f"text: write {{'image': {text.strip()!r}}} to embed the image, or {{'text': ...}} to embed the name"
        )


def _boxes(value: Any, field: str) -> list[Any]:
    """A single box or a list of boxes -> list of boxes."""
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)) and len(value) > 0:
        first = value[0]
        if isinstance(first, (Sequence, np.ndarray)) and not isinstance(first, (str, bytes)):
            return list(value)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)) and len(value) == 0:
        raise ValueError(f"{field}: empty box list")
    return [value]


def _present(mapping: Mapping) -> dict:
    # Rows from `datasets` struct columns carry None for absent fields: treat None as absent.
    return {key: value for key, value in mapping.items() if value is not None}


def _mapping_parts(present: dict, field: str) -> list[tuple[str, Any, str]]:
    """Raw parts of a dict, in the fixed rendering order image, boxes, coordinates, text."""
    parts = []
    for kind in ("image", "bbox", "coords", "text"):
        if kind not in present:
            continue
        value = present[kind]
        if kind == "bbox":
            boxes = _boxes(value, f"{field}.bbox")
            nested = boxes[0] is not value
            parts.extend(("bbox", box, f"{field}.bbox[{i}]" if nested else f"{field}.bbox") for i, box in enumerate(boxes))
        else:
            parts.append((kind, value, f"{field}.{kind}"))
    return parts


def normalize_item(
    item: Any,
    field: str = "item",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    decode_images: bool | str = True,
    image_scale: str | tuple[float, float] | None = "auto",
) -> list[tuple[str, Any]]:
    """Validate one item and return its parts in rendering order.

    Returns a list of ``(kind, value)`` with kind in ``image`` (RGB PIL image), ``text`` (str),
    ``bbox`` (``(x1, y1, x2, y2)`` floats, already validated against its image) and ``coords`` (``(lat, lon)``).
    """
    raw_parts: list[tuple[str, Any, str]] = []
    if isinstance(item, str):
        _refuse_image_path_as_text(item, field)
        raw_parts.append(("text", item, field))
    elif _is_image_value(item):
        raw_parts.append(("image", item, field))
    elif isinstance(item, Mapping):
        present = _present(item)
        unknown = sorted(set(map(str, present)) - set(ITEM_KEYS))
        if unknown:
            raise ValueError(f"{field}: unknown key(s) {unknown}; an item may have {list(ITEM_KEYS)}")
        if not present:
            raise ValueError(f"{field}: empty item; give at least one of {list(ITEM_KEYS)}")
        raw_parts.extend(_mapping_parts(present, field))
    elif isinstance(item, (list, tuple)):
        if not item:
            raise ValueError(f"{field}: empty part list")
        for i, part in enumerate(item):
            part_field = f"{field}[{i}]"
            if isinstance(part, str):
                _refuse_image_path_as_text(part, part_field)
                raw_parts.append(("text", part, part_field))
            elif _is_image_value(part):
                raw_parts.append(("image", part, part_field))
            elif isinstance(part, Mapping):
                present = _present(part)
                if len(present) != 1 or next(iter(present)) not in ITEM_KEYS:
                    raise ValueError(
                        f"{part_field}: a part dict must have exactly one of the keys {list(ITEM_KEYS)}, "
                        f"got {sorted(map(str, part))}"
                    )
                raw_parts.extend(_mapping_parts(present, part_field))
            else:
                raise TypeError(
                    f"{part_field}: a part must be a string, an image or a one-key dict, got {type(part).__name__}"
                )
    else:
        raise TypeError(
            f"{field}: expected a string, an image, a dict with keys {list(ITEM_KEYS)} or a list of parts, "
            f"got {type(item).__name__}"
        )

    parts: list[tuple[str, Any]] = []
    # Boxes refer to the *original* size of the nearest preceding image.
    current_image_size: tuple[int, int] | None = None
    for kind, value, part_field in raw_parts:
        if kind == "image":
            image = load_image(value, part_field, max_image_pixels, decode=decode_images, image_scale=image_scale)
            current_image_size = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
            if isinstance(image, Image.Image) and decode_images is not True and isinstance(value, (bytes, bytearray, str, os.PathLike)):
                current_image_size = _upright_size(image)
            parts.append(("image", image))
        elif kind == "text":
            parts.append(("text", _text_value(value, part_field)))
        elif kind == "bbox":
            box = validate_bbox(value, current_image_size, part_field)
            parts.append(("bbox", (box, current_image_size)))
        elif kind == "coords":
            parts.append(("coords", validate_coords(value, part_field)))
    return parts


def check_items(
    items: Sequence[Any],
    field: str = "inputs",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    image_scale: str | tuple[float, float] | None = "auto",
    decode_images: bool | str = "verify",
) -> None:
    """Validate a whole list of items before any model work; errors name the caller's list index.

    By default every image is decoded once (``"verify"``: what finds truncated files) without being converted
    or kept; ``decode_images=False`` reads headers only (cheaper, blind to truncation).
    """
    for index, item in enumerate(items):
        normalize_item(item, f"{field}[{index}]", max_image_pixels, decode_images=decode_images,
                       image_scale=image_scale)


def _styled_instruction(instruction: str | None, style: PromptStyle) -> str | None:
    """The user's instruction as the prompt style writes it (None or empty: none given)."""
    if instruction and style.end_instruction_with_punctuation:
        instruction = instruction.strip()
        if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
            instruction += "."
    return instruction or None


def render_pieces(
    parts: list[tuple[str, Any]],
    instruction: str | None = None,
    coord_precision: int = DEFAULT_COORD_PRECISION,
    family: str = DEFAULT_FAMILY,
    style: str = DEFAULT_PROMPT_STYLE,
    resized_size=None,
) -> list[tuple[str, bool]]:
    """The full text of one item as ``(text, from_user)`` pieces: the family's chat (system = instruction) plus the
    prompt style's ending. Pieces from the user (texts, instruction) are tokenized as plain text, so control tokens
    typed in them (``<|im_end|>``, ``<|image_pad|>``...) stay text instead of steering the chat template.

    ``resized_size`` maps an image's ``(width, height)`` to the size the image processor resizes it to; families
    whose boxes are in pixels of the resized input (Qwen2.5-VL) need it.
    """
    spec, ending = backbone_family_spec(family), prompt_style_spec(style)
    system_text = _styled_instruction(instruction, ending)
    if system_text:
        system = (system_text, True)
    elif ending.default_instruction:
        system = (ending.default_instruction, False)
    elif spec.default_system_prompt is not None:
        system = (spec.default_system_prompt, False)
    else:
        system = None
    pieces: list[tuple[str, bool]] = []
    if system is not None:
        pieces += [("<|im_start|>system\n", False), system, ("<|im_end|>\n", False)]
    pieces.append(("<|im_start|>user\n", False))
    for kind, text, from_user in content_pieces(parts, coord_precision, family, resized_size):
        pieces.append((f"{VISION_START}{IMAGE_TOKEN}{VISION_END}" if kind == "image" else text, from_user))
    pieces.append((ending.ending, False))
    return pieces


def content_pieces(
    parts: list[tuple[str, Any]],
    coord_precision: int = DEFAULT_COORD_PRECISION,
    family: str = DEFAULT_FAMILY,
    resized_size=None,
) -> list[tuple[str, str | None, bool]]:
    """The user turn's content of one item as ``(kind, text, from_user)``: separators (kind ``"separator"``),
    boxes and coordinates as the family renders them, user texts, and images (``text`` None). The one home of the
    content rules, for our chat rendering and for the vLLM request helpers."""
    spec = backbone_family_spec(family)
    pieces: list[tuple[str, str | None, bool]] = []
    previous = None
    for kind, value in parts:
        if previous is not None and previous != "image":
            pieces.append(("separator", PART_SEPARATOR, False))
        if kind == "image":
            pieces.append(("image", None, False))
        elif kind == "bbox":
            box, size = value
            resized = resized_size(*size) if (resized_size is not None and spec.box_units == "resized-pixels") else None
            pieces.append(("bbox", format_bbox(box, size, family, resized), False))
        elif kind == "coords":
            pieces.append(("coords", format_coords(value, coord_precision), False))
        else:
            pieces.append(("text", value, True))
        previous = kind
    return pieces


def render_item(
    parts: list[tuple[str, Any]],
    instruction: str | None = None,
    coord_precision: int = DEFAULT_COORD_PRECISION,
    family: str = DEFAULT_FAMILY,
    style: str = DEFAULT_PROMPT_STYLE,
    resized_size=None,
) -> str:
    """The full text of one item (see `render_pieces`)."""
    return "".join(text for text, _ in render_pieces(parts, instruction, coord_precision, family, style, resized_size))


def estimate_item_tokens(item: Any, image_processor: Qwen2VLImageProcessorPil | None = None) -> int:
    """Cheap token-count estimate of a raw item (no decoding), used to sort batches by length."""
    factor = 28
    min_pixels, max_pixels = 56 * 56, 28 * 28 * 1280
    if image_processor is not None:
        factor = image_processor.patch_size * image_processor.merge_size
        min_pixels, max_pixels = image_processor.size["shortest_edge"], image_processor.size["longest_edge"]

    def image_tokens(value: Any) -> int:
        try:
            if isinstance(value, Image.Image):
                width, height = value.size
            elif isinstance(value, np.ndarray):
                height, width = value.shape[:2]
            elif isinstance(value, (bytes, bytearray)):
                width, height = Image.open(io.BytesIO(value)).size
            else:
                width, height = Image.open(value).size
            h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
            return (h // factor) * (w // factor) + 2
        except Exception:  # invalid images are reported properly later, by `normalize_item`
            return 0

    def part_tokens(kind: str, value: Any) -> int:
        if kind == "image":
            return image_tokens(value)
        if kind == "text":
            return len(value) // 4 + 1 if isinstance(value, str) else 0
        return 12  # a box or a coordinate pair

    total = 20  # chat frame
    if isinstance(item, str):
        total += part_tokens("text", item)
    elif _is_image_value(item):
        total += image_tokens(item)
    elif isinstance(item, Mapping):
        total += sum(part_tokens(k, v) for k, v in item.items() if v is not None)
    elif isinstance(item, (list, tuple)):
        for part in item:
            if isinstance(part, str):
                total += part_tokens("text", part)
            elif _is_image_value(part):
                total += image_tokens(part)
            elif isinstance(part, Mapping):
                total += sum(part_tokens(k, v) for k, v in part.items() if v is not None)
    return total


# ----------------------------------------------------------------------------------------------------------
# Processor files
# ----------------------------------------------------------------------------------------------------------
# transformers reads these leniently: without tokenizer.json it builds a tokenizer that fails only on first use,
# without tokenizer_config.json one that has lost its special tokens.
PROCESSOR_FILES = ("processor_config.json", "tokenizer.json", "tokenizer_config.json")
_LARGE_JSON_FILES = ("tokenizer.json",)  # 18 MB: parsed once, by the tokenizer; here only its ends are looked at
REPAIR = "the checkpoint is damaged: copy the folder again or re-save it (`vlm2geovec convert`, `save_checkpoint`)"


def read_json_file(path: str, what: str = "file") -> dict:
    """A checkpoint's JSON file as a dict; a missing, unreadable or non-object file raises naming the path. (The
    one reader of checkpoint JSON: the model and the sentence-transformers module use it too.)"""
    import json

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {what} is missing; {REPAIR}")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason}): {REPAIR}") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): {REPAIR}"
        ) from None
    if not isinstance(data, (dict, list)):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object: {REPAIR}")
    return data


def check_processor_folder(folder: str | os.PathLike) -> None:
    """Every file the processor is rebuilt from is present and JSON, or a ValueError/FileNotFoundError names it."""
    for name in PROCESSOR_FILES:
        path = os.path.join(folder, name)
        if name not in _LARGE_JSON_FILES:
            if not isinstance(read_json_file(path, name), dict):
                raise ValueError(f"{path} holds a JSON list, not an object: {REPAIR}")
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: {name} is missing; {REPAIR}")
        with open(path, "rb") as handle:
            head = handle.read(64).lstrip()
            handle.seek(max(0, os.path.getsize(path) - 64))
            tail = handle.read().rstrip()
        if not (head.startswith(b"{") and tail.endswith(b"}")):
            raise ValueError(f"{path} is not valid JSON (it does not start with '{{' and end with '}}'): {REPAIR}")


# ----------------------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------------------
class VLM2GeoVecProcessor(ProcessorMixin):
    r"""Turns VLM2GeoVec items (images, text, boxes, coordinates; see the module docstring) into model inputs.

    Wraps Qwen2-VL's PIL image processor (no torchvision; identical pixels on every machine) and the Qwen2
    tokenizer. Pixel values are computed by a faster path that equals the image processor bit for bit
    (`_pixel_values_fast`); settings it does not cover go through the image processor itself.

    Args:
        image_processor (`Qwen2VLImageProcessorPil`):
            Image processor; its ``size["longest_edge"]`` is the per-image pixel budget.
        tokenizer (`PreTrainedTokenizerBase`):
            The Qwen2 tokenizer with the Qwen2-VL special tokens.
        chat_template (`str`, *optional*):
            Jinja chat template; defaults to Qwen2-VL's.
        coord_precision (`int`, *optional*, defaults to 4):
            Decimals of rendered latitude/longitude (4 decimals ~ 11 m).
        max_length (`int`, *optional*):
            Longest sequence in tokens; by default the tokenizer's ``model_max_length`` (32,768 for Qwen2-VL).
            Longer items have their last text part shortened (cut at the end); image tokens, boxes, coordinates
            and the chat frame are never cut (an item that needs more without its text raises).
        max_image_pixels (`int`, *optional*, defaults to 16384**2):
            Images above this many pixels are refused before decoding (tile them first).
        backbone_family (`str`, *optional*, defaults to `"qwen2_vl"`):
            The backbone's family (`BACKBONE_FAMILIES`: ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``): chat frame and box
            form. It must match the model's ``config.backbone_family``.
        prompt_style (`str`, *optional*, defaults to `"vlm2geovec"`):
            How an item ends and which token is pooled (`PROMPT_STYLES`); ``"qwen3_vl_embedding"`` reproduces
            Qwen3-VL-Embedding's own pipeline for checkpoints converted from it.
        image_scale (`str` or `(low, high)`, *optional*, defaults to `"auto"`):
            What high-bit-depth images (16-bit PNG/TIFF, PIL modes I;16/I/F, integer arrays wider than 8 bits)
            become: ``"auto"`` stretches each band from its 2nd..98th percentile to 0..255; ``(low, high)`` maps
            that fixed range (the same radiometry for every image, e.g. ``(0, 3000)`` for Sentinel-2 L2A
            reflectance x 10,000); ``None`` refuses them. 8-bit images are never rescaled.

    Example:

    ```python
    >>> from transformers import AutoProcessor
    >>> processor = AutoProcessor.from_pretrained("path/to/vlm2geovec", trust_remote_code=True)
    >>> inputs = processor(items=[{"image": "tile.png", "bbox": [10, 10, 60, 80], "text": "a tree"}],
    ...                    instruction="Represent the region for retrieval.")
    ```
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        coord_precision: int = DEFAULT_COORD_PRECISION,
        max_length: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        image_scale: str | Sequence[float] | None = "auto",
        backbone_family: str = DEFAULT_FAMILY,
        prompt_style: str = DEFAULT_PROMPT_STYLE,
        **kwargs,
    ):
        if image_processor is not None and not isinstance(image_processor, Qwen2VLImageProcessorPil):
            # AutoImageProcessor may pick the torchvision ("fast") class; rebuild the PIL one from its settings
            # so pixels are identical everywhere and torchvision is never needed.
            image_processor = Qwen2VLImageProcessorPil(**image_processor.to_dict())
        self.coord_precision = int(coord_precision)
        self.max_length = max_length
        self.max_image_pixels = int(max_image_pixels)
        scale = check_image_scale(image_scale)
        self.image_scale = list(scale) if isinstance(scale, tuple) else scale  # a list survives the JSON config
        self.input_format_version = INPUT_FORMAT_VERSION
        self.backbone_family = backbone_family_spec(backbone_family).name
        self.prompt_style = prompt_style_spec(prompt_style).name
        family = BACKBONE_FAMILIES[self.backbone_family]
        super().__init__(image_processor, tokenizer, chat_template=chat_template or family.chat_template)
        if image_processor is not None and image_processor.patch_size != family.patch_size:
            raise ValueError(
                f"image processor patch_size {image_processor.patch_size} does not match the {family.title} backbone "
                f"family (patch_size {family.patch_size}); pass backbone_family= for the backbone you use"
            )
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.embed_token_id = tokenizer.convert_tokens_to_ids(EMBED_TOKEN)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`ProcessorMixin.from_pretrained`, with a local folder's processor files checked first (`check_processor_folder`)
        so a missing or damaged file is named instead of giving a tokenizer that fails later."""
        import json

        local = os.path.join(os.fspath(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        is_local = os.path.isdir(local)
        if is_local:
            check_processor_folder(local)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except json.JSONDecodeError as error:  # the small files were parsed above: it is the vocabulary
            path = os.path.join(local, "tokenizer.json") if is_local else os.fspath(pretrained_model_name_or_path)
            raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
                             f"{REPAIR}") from None

    # -- public API -------------------------------------------------------------------------------------------
    def __call__(
        self,
        items: Sequence[Any] | None = None,
        instruction: str | Sequence[str | None] | None = None,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Build model inputs.

        Args:
            items: a batch (list) of VLM2GeoVec items. Mutually exclusive with ``text``/``images``.
            instruction: one instruction for the whole batch, or one per item (``None`` = default system prompt).
            text, images: the plain Qwen2-VL path: texts that already hold one ``<|image_pad|>`` per image.
        """
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors: only 'pt' (PyTorch) is supported, got {return_tensors!r}")
        if items is not None:
            if text is not None or images is not None:
                raise ValueError("pass either items=... or text=/images=..., not both")
            return self.encode_items(items, instruction=instruction, return_tensors=return_tensors)
        if text is None:
            raise ValueError("nothing to process: pass items=[...] or text=[...]")
        texts = [text] if isinstance(text, str) else list(text)
        image_list = [] if images is None else ([images] if _is_image_value(images) else list(images))
        pil_images = [load_image(img, f"images[{i}]", self.max_image_pixels, image_scale=self._image_scale())
                      for i, img in enumerate(image_list)]
        return self._tokenize(texts, pil_images, return_tensors=return_tensors)

    def normalize(self, items: Sequence[Any]) -> list[list[tuple[str, Any]]]:
        """Validate a batch; every error names the item index and field."""
        if isinstance(items, (str, Mapping)) or _is_image_value(items):
            raise TypeError("items must be a list of items; wrap a single item in a list")
        if len(items) == 0:
            raise ValueError("items is empty: nothing to process")
        scale = self._image_scale()
        return [normalize_item(item, f"items[{i}]", self.max_image_pixels, image_scale=scale)
                for i, item in enumerate(items)]

    @property
    def family_name(self) -> str:
        return getattr(self, "backbone_family", DEFAULT_FAMILY)  # processors saved before families existed: Qwen2-VL

    @property
    def style_name(self) -> str:
        return getattr(self, "prompt_style", DEFAULT_PROMPT_STYLE)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` the image processor resizes a ``width`` x ``height`` image to (what Qwen2.5-VL's
        absolute box coordinates refer to)."""
        ip = self.image_processor
        if not ip.do_resize:
            return width, height
        new_height, new_width = smart_resize(height, width, factor=ip.patch_size * ip.merge_size,
                                             min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
        return new_width, new_height

    def _image_scale(self) -> str | tuple[float, float] | None:
        return check_image_scale(getattr(self, "image_scale", "auto"))

    def check(self, items: Sequence[Any], field: str = "inputs") -> None:
        """Validate a whole list of items before any model work (every image decoded once, nothing kept);
        errors name the caller's list index. `SentenceTransformer.encode` runs this first."""
        check_items(items, field, self.max_image_pixels, image_scale=self._image_scale())

    def render(self, items: Sequence[Any], instruction: str | Sequence[str | None] | None = None) -> list[str]:
        """The exact text of each item, before image-token expansion (for inspection and tests)."""
        parts = self.normalize(items)
        instructions = self._instructions(instruction, len(parts))
        return [render_item(p, ins, self.coord_precision, self.family_name, self.style_name, self.resized_size)
                for p, ins in zip(parts, instructions)]

    def encode_items(
        self,
        items: Sequence[Any],
        instruction: str | Sequence[str | None] | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        parts = self.normalize(items)
        instructions = self._instructions(instruction, len(parts))
        images = [value for item_parts in parts for kind, value in item_parts if kind == "image"]
        image_inputs, counts = self._process_images(images)
        ids, cursor = [], 0
        for index, (item_parts, ins) in enumerate(zip(parts, instructions)):
            n_images = sum(1 for kind, _ in item_parts if kind == "image")
            item_counts = counts[cursor : cursor + n_images]
            cursor += n_images
            ids.append(self._fit_item(item_parts, ins, item_counts, f"items[{index}]"))
        batch = self._pad(ids)
        batch.update(image_inputs)
        return BatchFeature(batch)

    # -- internals --------------------------------------------------------------------------------------------
    @staticmethod
    def _instructions(instruction, n: int) -> list[str | None]:
        if instruction is None or isinstance(instruction, str):
            if isinstance(instruction, str):
                _check_unicode(instruction, "instruction")
            return [instruction] * n
        if not isinstance(instruction, (list, tuple)):
            raise TypeError(f"instruction: expected a string, None or a list of them, got {type(instruction).__name__}")
        instruction = list(instruction)
        if len(instruction) != n:
            raise ValueError(f"instruction: got {len(instruction)} instructions for {n} items")
        for i, ins in enumerate(instruction):
            if ins is not None and not isinstance(ins, str):
                raise TypeError(f"instruction[{i}]: expected a string or None, got {type(ins).__name__}")
            if ins is not None:
                _check_unicode(ins, f"instruction[{i}]")
        return instruction

    def _fit_images(self, images: list[Image.Image]) -> list[Image.Image]:
        """Shrink images far above the pixel budget with PIL before they become float arrays.

        The target is exactly the size the image processor resizes to, with the same filter, so pixels equal
        the unshrunk path's; this only bounds memory for huge inputs.
        """
        ip = self.image_processor
        factor = ip.patch_size * ip.merge_size
        budget = ip.size["longest_edge"]
        fitted = []
        for image in images:
            width, height = image.size
            if width * height > 4 * budget:
                h, w = smart_resize(
                    height, width, factor=factor, min_pixels=ip.size["shortest_edge"], max_pixels=budget
                )
                image = image.resize((w, h), resample=Image.Resampling.BICUBIC)
            fitted.append(image)
        return fitted

    def _process_images(self, images: list[Image.Image]) -> tuple[dict[str, Any], list[int]]:
        """Pixel values for all images of a batch, and the number of pad tokens each image needs."""
        if not images:
            return {}, []
        if self._pixel_fast_path_applies(images):
            image_inputs = self._pixel_values_fast(images)
        else:
            image_inputs = dict(self.image_processor(images=self._fit_images(images), return_tensors="pt"))
        merge = self.image_processor.merge_size**2
        return image_inputs, (image_inputs["image_grid_thw"].prod(-1) // merge).tolist()

    def _pixel_fast_path_applies(self, images: list[Image.Image]) -> bool:
        """Whether `_pixel_values_fast` reproduces the image processor exactly for these settings and images."""
        ip = self.image_processor
        return (
            type(ip) is Qwen2VLImageProcessorPil
            and ip.do_resize
            and isinstance(ip.resample, int)
            and bool(ip.size.get("shortest_edge")) and bool(ip.size.get("longest_edge"))
            and all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
        )

    def _pixel_lookup_table(self) -> np.ndarray:
        """(3, 256) float32: what rescale + normalize make of each uint8 value in each channel.

        Computed by the image processor's own rescale/normalize on all 256 values, so looking pixels up in
        it gives the processor's float32 results bit for bit.
        """
        ip = self.image_processor
        values = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()  # channels first, like ip
        table = ip.rescale(values, ip.rescale_factor) if ip.do_rescale else values
        table = ip.normalize(table, ip.image_mean, ip.image_std) if ip.do_normalize else table
        return np.ascontiguousarray(np.asarray(table, dtype=np.float32)[:, 0, :])

    def _pixel_values_fast(self, images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """Qwen2-VL pixel values, equal bit for bit to ``Qwen2VLImageProcessorPil``'s, in about half its time.

        The processor round-trips every image through numpy and PIL to resize it, then converts it to
        float64, rescales, normalises and transposes it in separate full-size passes, and finally copies all
        patches once more into one array. Here each image is resized straight from PIL, cut into patches
        as uint8, and each value is looked up in `_pixel_lookup_table` while being written once to its
        place in one preallocated array (the temporal copy Qwen2-VL's 3D patch embedding expects is a
        broadcast in that write). What is left is PIL's resize and one pass of memory writes; both release
        the GIL, so look-ahead threads overlap them with the model.
        """
        ip = self.image_processor
        patch, merge, temporal = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        arrays, grids = [], []
        for image in images:
            width, height = image.size
            new_height, new_width = smart_resize(
                height, width, factor=patch * merge, min_pixels=ip.size["shortest_edge"],
                max_pixels=ip.size["longest_edge"],
            )
            if (new_width, new_height) != (width, height):
                image = image.resize((new_width, new_height), resample=ip.resample)
            arrays.append(np.asarray(image))
            grids.append((1, new_height // patch, new_width // patch))
        table = self._pixel_lookup_table()
        total = sum(grid_h * grid_w for _, grid_h, grid_w in grids)
        pixel_values = np.empty((total, 3, temporal, patch * patch), dtype=np.float32)
        start = 0
        for array, (_, grid_h, grid_w) in zip(arrays, grids):
            count = grid_h * grid_w
            # (H, W, C) -> patches in Qwen2-VL's order: merge blocks row-major, then the patches inside
            # each block (merge x merge), each patch channels-first.
            patches = array.reshape(grid_h // merge, merge, patch, grid_w // merge, merge, patch, 3)
            patches = patches.transpose(0, 3, 1, 4, 6, 2, 5).reshape(count, 3, patch * patch)
            for channel in range(3):
                values = np.take(table[channel], patches[:, channel])
                pixel_values[start : start + count, channel] = values[:, None, :]  # broadcast over time
            start += count
        return {
            "pixel_values": torch.from_numpy(pixel_values.reshape(total, -1)),
            "image_grid_thw": torch.tensor(grids, dtype=torch.int64),
        }

    @staticmethod
    def _expand_image_pads(text: str, counts: Sequence[int]) -> str:
        chunks = text.split(IMAGE_TOKEN)
        if len(chunks) - 1 != len(counts):
            raise ValueError(f"text holds {len(chunks) - 1} {IMAGE_TOKEN} placeholders but {len(counts)} images were given")
        return chunks[0] + "".join(IMAGE_TOKEN * n + chunk for n, chunk in zip(counts, chunks[1:]))

    def length_limit(self) -> int:
        """The token budget of one item: ``max_length``, or by default the tokenizer's ``model_max_length``
        (32,768 for Qwen2-VL; capped there when a tokenizer declares none)."""
        limit = self.max_length
        if limit is None:
            declared = getattr(self.tokenizer, "model_max_length", None)
            limit = declared if isinstance(declared, int) and 0 < declared <= DEFAULT_MAX_LENGTH else DEFAULT_MAX_LENGTH
        if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit <= 0:
            raise ValueError(f"max_length: expected a positive integer or None, got {limit!r}")
        return int(limit)

    def _special_tokens(self):
        """(pattern that splits trusted, package-rendered text at the tokenizer's added tokens, as the tokenizer
        itself does; the added tokens' ids), from one read of the tokenizer's added vocabulary per item."""
        added = self.tokenizer.get_added_vocab()
        key = tuple(sorted(added.items()))
        if getattr(self, "_special_cache", (None,))[0] != key:
            import re

            tokens = sorted(added, key=len, reverse=True)
            self._special_cache = (key, re.compile("(" + "|".join(map(re.escape, tokens)) + ")"))
        return self._special_cache[1], added

    def _token_ids(self, item_parts, instruction, counts) -> list[int]:
        """Token ids of one item, image pads expanded. The tokenizer splits a string at its added tokens and
        tokenizes the stretches between them on their own; this does the same, except that it splits only the
        package's own pieces, so user text is always plain text (``split_special_tokens``). For text without
        control tokens the ids equal tokenizing the rendered string."""
        pattern, added = self._special_tokens()
        plan: list[str | int] = []  # plain stretches and special-token ids
        stretch: list[str] = []
        images = iter(counts)
        n_images = 0
        for text, from_user in render_pieces(item_parts, instruction, self.coord_precision, self.family_name,
                                             self.style_name, self.resized_size):
            for i, chunk in enumerate([text] if from_user else pattern.split(text)):
                if i % 2 == 0:
                    stretch.append(chunk)
                    continue
                if stretch and "".join(stretch):
                    plan.append("".join(stretch))
                stretch = []
                if chunk == IMAGE_TOKEN:
                    n_images += 1
                    plan.extend([added[IMAGE_TOKEN]] * next(images, 0))
                else:
                    plan.append(added[chunk])
        if "".join(stretch):
            plan.append("".join(stretch))
        if n_images != len(counts):
            raise ValueError(f"item holds {n_images} images but {len(counts)} image token counts were given")
        plain = [piece for piece in plan if isinstance(piece, str)]
        encoded = iter(self.tokenizer(plain, add_special_tokens=False, split_special_tokens=True)["input_ids"] if plain else [])
        ids: list[int] = []
        for piece in plan:
            if isinstance(piece, str):
                ids.extend(next(encoded))
            else:
                ids.append(piece)
        return ids

    def _fit_item(self, item_parts, instruction, counts, field: str) -> list[int]:
        """Token ids of one item; over the length limit (`length_limit`), text parts are shortened, last first.

        Only free text is cut: image tokens, boxes, coordinates and the chat frame stay whole. A text far beyond
        the limit is first cut to ``TEXT_CHARS_PER_TOKEN`` characters per token of the limit, so that a huge
        input costs no more than one limit's worth of tokenizing.
        """
        limit = self.length_limit()
        chars = TEXT_CHARS_PER_TOKEN * limit
        item_parts = [(kind, value[:chars]) if kind == "text" and len(value) > chars else (kind, value)
                      for kind, value in item_parts]
        if instruction is not None and len(instruction) > chars:
            raise ValueError(f"{field}: the instruction is {len(instruction):,} characters long, more than the "
                             f"{limit:,}-token limit can hold; shorten it")
        ids = self._token_ids(item_parts, instruction, counts)
        if len(ids) <= limit:
            return ids
        text_positions = [i for i, (kind, _) in enumerate(item_parts) if kind == "text"]
        for position in reversed(text_positions):
            # Re-tokenising a shortened text can merge tokens differently; a few rounds settle it.
            for _ in range(4):
                excess = len(ids) - limit
                if excess <= 0:
                    return ids
                text_ids = self.tokenizer(item_parts[position][1], add_special_tokens=False,
                                          split_special_tokens=True)["input_ids"]
                keep = max(1, len(text_ids) - excess)
                item_parts[position] = ("text", self.tokenizer.decode(text_ids[:keep]))
                ids = self._token_ids(item_parts, instruction, counts)
                if keep == 1:
                    break
        if len(ids) <= limit:
            return ids
        n_image = sum(counts)
        raise ValueError(
            f"{field}: needs {len(ids)} tokens ({n_image} for images) even with its text shortened, but max_length "
            f"is {limit}; image tokens, boxes and coordinates are never truncated: raise max_length or "
            "lower the image pixel budget"
        )

    def _tokenize(self, texts: list[str], images: list[Image.Image], return_tensors: str = "pt") -> BatchFeature:
        """The plain Qwen2-VL path: expand each ``<|image_pad|>`` and tokenize (no truncation)."""
        n_placeholders = sum(t.count(IMAGE_TOKEN) for t in texts)
        if n_placeholders != len(images):
            raise ValueError(f"texts hold {n_placeholders} {IMAGE_TOKEN} placeholders but {len(images)} images were given")
        image_inputs, counts = self._process_images(images)
        ids, cursor = [], 0
        for t in texts:
            n = t.count(IMAGE_TOKEN)
            ids.append(self.tokenizer(self._expand_image_pads(t, counts[cursor : cursor + n]), add_special_tokens=False)["input_ids"])
            cursor += n
        batch = self._pad(ids)
        batch.update(image_inputs)
        return BatchFeature(batch)

    def _pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.embed_token_id
        longest = max(len(x) for x in ids)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for row, seq in enumerate(ids):
            span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, span] = 1
        mm_token_type_ids = (input_ids == self.image_token_id).to(torch.int32) * attention_mask.to(torch.int32)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "mm_token_type_ids": mm_token_type_ids}

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that shapes the vectors of an item (JSON-able): indexes record it, so
        that a query is never prepared differently from the corpus it is searched against."""
        ip = self.image_processor
        added = self.tokenizer.get_added_vocab()
        scale = self._image_scale()
        return {
            "input_format_version": self.input_format_version,
            "backbone_family": self.family_name,
            "prompt_style": self.style_name,
            "coord_precision": self.coord_precision,
            "max_length": self.length_limit(),
            "image_scale": list(scale) if isinstance(scale, tuple) else scale,
            "image_processor": {
                key: (list(value) if isinstance(value, tuple) else value)
                for key, value in (("size", dict(ip.size)), ("patch_size", ip.patch_size), ("merge_size", ip.merge_size),
                                   ("temporal_patch_size", ip.temporal_patch_size), ("resample", int(ip.resample)),
                                   ("do_resize", ip.do_resize), ("do_rescale", ip.do_rescale),
                                   ("rescale_factor", ip.rescale_factor), ("do_normalize", ip.do_normalize),
                                   ("image_mean", list(ip.image_mean)), ("image_std", list(ip.image_std)))
            },
            "tokenizer": {"vocab_size": len(self.tokenizer), "added_tokens": dict(sorted(added.items()))},
        }

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"]


__all__ = [
    "VLM2GeoVecProcessor",
    "INPUT_FORMAT_VERSION",
    "ITEM_KEYS",
    "format_bbox",
    "format_coords",
    "BACKBONE_FAMILIES",
    "BackboneFamily",
    "PROMPT_STYLES",
    "backbone_family_spec",
    "prompt_style_spec",
    "validate_bbox",
    "validate_coords",
    "load_image",
    "normalize_item",
    "render_item",
    "estimate_item_tokens",
    "check_items",
    "check_image_scale",
    "stretch_to_uint8",
    "render_pieces",
    "content_pieces",
]
