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
* bbox   -> ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with integers in 0..1000 of the image's original
  width/height (Qwen2-VL's native grounding form)
* coords -> ``29.6900°N, 81.9900°W`` (latitude first, fixed precision, hemisphere letters)
* parts are joined with ``"\\n"``, except that nothing is inserted right after an image
* the whole item is a Qwen2-VL chat (system = instruction, user = content) followed by ``<|endoftext|>``,
  whose hidden state is the embedding.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
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

# Modes PIL converts to RGB without losing meaning. High-bit-depth modes ("I;16", "I", "F") would be
# clipped to garbage by a plain convert, so they are refused with advice instead.
_CONVERTIBLE_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


# ----------------------------------------------------------------------------------------------------------
# Validation and formatting of single fields
# ----------------------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _finite_number(value: Any, field: str) -> float:
    if not _is_number(value):
        raise TypeError(f"{field}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{field}: must be finite, got {value}")
    return value


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


def format_bbox(bbox: Sequence[float], image_size: tuple[int, int]) -> str:
    """Render a pixel box as Qwen2-VL grounding text, normalised to 0..1000 of the original image size.

    >>> format_bbox([10, 20, 110, 220], (400, 400))
    '<|box_start|>(25,50),(275,550)<|box_end|>'
    """
    x1, y1, x2, y2 = validate_bbox(bbox, image_size)
    width, height = image_size

    def scale(value: float, size: int) -> int:
        return min(BOX_SCALE, max(0, int(round(value * BOX_SCALE / size))))

    return f"{BOX_START}({scale(x1, width)},{scale(y1, height)}),({scale(x2, width)},{scale(y2, height)}){BOX_END}"


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
def _is_image_value(value: Any) -> bool:
    return isinstance(value, (Image.Image, np.ndarray, bytes, bytearray))


def _array_to_image(array: np.ndarray, field: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"{field}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{field}: image array is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        pass
    elif array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{field}: image array contains NaN or inf")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"{field}: float image arrays must hold values in [0, 1], got [{array.min():g}, {array.max():g}]"
            )
        array = np.round(array * 255.0).astype(np.uint8)
    else:
        raise ValueError(
            f"{field}: unsupported array dtype {array.dtype}; scale to uint8 (or float in [0, 1]) first, "
            "e.g. a percentile stretch for 16-bit satellite bands"
        )
    return Image.fromarray(np.ascontiguousarray(array))


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


def load_image(
    value: Any, field: str = "image", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, decode: bool = True
) -> Image.Image:
    """Turn a PIL image, path, bytes or array into a fully decoded RGB ``PIL.Image`` (or raise a clear error).

    With ``decode=False`` only the header is read (size, mode): a cheap check for a whole dataset up front.
    """
    if isinstance(value, Image.Image):
        image = value
        if decode:
            _decode(image, field, "the PIL image")
    elif isinstance(value, np.ndarray):
        image = _array_to_image(value, field)
    elif isinstance(value, (bytes, bytearray, str, os.PathLike)):
        source = io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value
        label = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else repr(os.fspath(value))
        if isinstance(value, (str, os.PathLike)) and not os.path.isfile(value):
            raise ValueError(f"{field}: image file not found: {label}")
        try:
            image = Image.open(source)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{field}: cannot read image from {label}: {error}") from None
        width, height = image.size
        if width * height > max_image_pixels:
            raise ValueError(
                f"{field}: image {label} is {width}x{height} = {width * height:,} pixels, above the limit of "
                f"{max_image_pixels:,}; cut it into tiles first"
            )
        if not decode:
            if image.mode not in _CONVERTIBLE_MODES:
                raise ValueError(
                    f"{field}: image mode {image.mode!r} cannot be converted to RGB without losing data; "
                    "scale it to 8 bits per channel first"
                )
            return image
        _decode(image, field, label)
    else:
        raise TypeError(
            f"{field}: expected a PIL image, numpy array, bytes or file path, got {type(value).__name__}"
        )
    width, height = image.size
    if width == 0 or height == 0:
        raise ValueError(f"{field}: image has zero size {width}x{height}")
    if width * height > max_image_pixels:
        raise ValueError(
            f"{field}: image is {width}x{height} = {width * height:,} pixels, above the limit of {max_image_pixels:,}"
        )
    if image.mode != "RGB":
        if image.mode not in _CONVERTIBLE_MODES:
            raise ValueError(
                f"{field}: image mode {image.mode!r} cannot be converted to RGB without losing data; "
                "scale it to 8 bits per channel first"
            )
        image = image.convert("RGB")
    return image


# ----------------------------------------------------------------------------------------------------------
# Items
# ----------------------------------------------------------------------------------------------------------
def _text_value(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{field}: text is empty")
    return value


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
    item: Any, field: str = "item", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, decode_images: bool = True
) -> list[tuple[str, Any]]:
    """Validate one item and return its parts in rendering order.

    Returns a list of ``(kind, value)`` with kind in ``image`` (RGB PIL image), ``text`` (str),
    ``bbox`` (``(x1, y1, x2, y2)`` floats, already validated against its image) and ``coords`` (``(lat, lon)``).
    """
    raw_parts: list[tuple[str, Any, str]] = []
    if isinstance(item, str):
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
            image = load_image(value, part_field, max_image_pixels, decode=decode_images)
            current_image_size = image.size
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
    items: Sequence[Any], field: str = "inputs", max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> None:
    """Validate a whole list of items without decoding images (headers only); errors name the list index."""
    for index, item in enumerate(items):
        normalize_item(item, f"{field}[{index}]", max_image_pixels, decode_images=False)


def render_content(parts: list[tuple[str, Any]], coord_precision: int = DEFAULT_COORD_PRECISION) -> str:
    """The user-turn text of normalised parts, with one ``<|image_pad|>`` per image (expanded later)."""
    pieces: list[str] = []
    previous = None
    for kind, value in parts:
        if kind == "image":
            piece = f"{VISION_START}{IMAGE_TOKEN}{VISION_END}"
        elif kind == "bbox":
            box, size = value
            piece = format_bbox(box, size)
        elif kind == "coords":
            piece = format_coords(value, coord_precision)
        else:
            piece = value
        if previous is not None and previous != "image":
            pieces.append(PART_SEPARATOR)
        pieces.append(piece)
        previous = kind
    return "".join(pieces)


def render_item(
    parts: list[tuple[str, Any]], instruction: str | None = None, coord_precision: int = DEFAULT_COORD_PRECISION
) -> str:
    """The full text of one item: Qwen2-VL chat (system = instruction) plus the embedding token."""
    system = instruction if instruction else DEFAULT_SYSTEM_PROMPT
    content = render_content(parts, coord_precision)
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n{EMBED_TOKEN}"


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
            Longest sequence in tokens. Longer items have their last text part shortened; image tokens are
            never cut (an item whose images alone exceed it raises).
        max_image_pixels (`int`, *optional*, defaults to 16384**2):
            Images above this many pixels are refused before decoding (tile them first).

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
        **kwargs,
    ):
        if image_processor is not None and not isinstance(image_processor, Qwen2VLImageProcessorPil):
            # AutoImageProcessor may pick the torchvision ("fast") class; rebuild the PIL one from its settings
            # so pixels are identical everywhere and torchvision is never needed.
            image_processor = Qwen2VLImageProcessorPil(**image_processor.to_dict())
        self.coord_precision = int(coord_precision)
        self.max_length = max_length
        self.max_image_pixels = int(max_image_pixels)
        self.input_format_version = INPUT_FORMAT_VERSION
        super().__init__(image_processor, tokenizer, chat_template=chat_template or QWEN2_VL_CHAT_TEMPLATE)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.embed_token_id = tokenizer.convert_tokens_to_ids(EMBED_TOKEN)

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
        pil_images = [load_image(img, f"images[{i}]", self.max_image_pixels) for i, img in enumerate(image_list)]
        return self._tokenize(texts, pil_images, return_tensors=return_tensors)

    def normalize(self, items: Sequence[Any]) -> list[list[tuple[str, Any]]]:
        """Validate a batch; every error names the item index and field."""
        if isinstance(items, (str, Mapping)) or _is_image_value(items):
            raise TypeError("items must be a list of items; wrap a single item in a list")
        if len(items) == 0:
            raise ValueError("items is empty: nothing to process")
        return [normalize_item(item, f"items[{i}]", self.max_image_pixels) for i, item in enumerate(items)]

    def render(self, items: Sequence[Any], instruction: str | Sequence[str | None] | None = None) -> list[str]:
        """The exact text of each item, before image-token expansion (for inspection and tests)."""
        parts = self.normalize(items)
        instructions = self._instructions(instruction, len(parts))
        return [render_item(p, ins, self.coord_precision) for p, ins in zip(parts, instructions)]

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
            return [instruction] * n
        instruction = list(instruction)
        if len(instruction) != n:
            raise ValueError(f"instruction: got {len(instruction)} instructions for {n} items")
        for i, ins in enumerate(instruction):
            if ins is not None and not isinstance(ins, str):
                raise TypeError(f"instruction[{i}]: expected a string or None, got {type(ins).__name__}")
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

    def _token_ids(self, item_parts, instruction, counts) -> list[int]:
        text = self._expand_image_pads(render_item(item_parts, instruction, self.coord_precision), counts)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _fit_item(self, item_parts, instruction, counts, field: str) -> list[int]:
        """Token ids of one item; over ``max_length``, text parts are shortened, last first.

        Only free text is cut: image tokens, boxes, coordinates and the chat frame stay whole.
        """
        ids = self._token_ids(item_parts, instruction, counts)
        if self.max_length is None or len(ids) <= self.max_length:
            return ids
        item_parts = list(item_parts)
        text_positions = [i for i, (kind, _) in enumerate(item_parts) if kind == "text"]
        for position in reversed(text_positions):
            # Re-tokenising a shortened text can merge tokens differently; a few rounds settle it.
            for _ in range(4):
                excess = len(ids) - self.max_length
                if excess <= 0:
                    return ids
                text_ids = self.tokenizer(item_parts[position][1], add_special_tokens=False)["input_ids"]
                keep = max(1, len(text_ids) - excess)
                item_parts[position] = ("text", self.tokenizer.decode(text_ids[:keep]))
                ids = self._token_ids(item_parts, instruction, counts)
                if keep == 1:
                    break
        if len(ids) <= self.max_length:
            return ids
        n_image = sum(counts)
        raise ValueError(
            f"{field}: needs {len(ids)} tokens ({n_image} for images) even with its text shortened, but max_length "
            f"is {self.max_length}; image tokens, boxes and coordinates are never truncated: raise max_length or "
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

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"]


__all__ = [
    "VLM2GeoVecProcessor",
    "INPUT_FORMAT_VERSION",
    "ITEM_KEYS",
    "format_bbox",
    "format_coords",
    "validate_bbox",
    "validate_coords",
    "load_image",
    "normalize_item",
    "render_item",
    "estimate_item_tokens",
    "check_items",
]
