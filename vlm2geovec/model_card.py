"""The model card: one template for the repository's `model_card.md` and every saved checkpoint's README.md.

`model_card.md` at the repository root is `render_model_card()` with its defaults; a test keeps them equal.
The rendered examples below are pinned by tests against the processor's real output.
"""

from __future__ import annotations

TEMPLATE = """---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
license: apache-2.0
tags:
- remote-sensing
- geospatial
- multimodal-embedding
- qwen2-vl
- vlm2geovec
{base_line}---

# {name}

VLM2GeoVec embeds **interleaved images, text, bounding boxes and geographic coordinates** into one vector
space for remote sensing: a Qwen2-VL encoder whose last-token hidden state, L2-normalised, is the
embedding (an open re-implementation of arXiv 2512.11490; the paper's weights are not released).

## Load

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{repo}", trust_remote_code=True)
vectors = model.encode([
    {{"image": "tile.png", "bbox": [40, 60, 180, 200], "text": "the dead tree in the box"}},
    {{"coords": (29.69, -81.99)}},
    "a barrier island with a sandy beach",
    [{{"image": "before.png"}}, "changed to", {{"image": "after.png"}}],   # a list of parts interleaves freely
])

from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
embeddings = model(**processor(items=[{{"text": "a river delta"}}], instruction="Represent the text for retrieval.")).embeddings
```

Both paths give the same vectors (tested to 1e-5).

Search an archive with the `vlm2geovec` package (its `index` and `geo` extras): tile a GeoTIFF, index it, query it by text,
image (+ box) or coordinates; `--shard i/n` or torchrun splits the embedding across GPUs and machines.

```bash
vlm2geovec index build --model {repo} --input scene.tif --tile-size 256 --bands 4,3,2 --out scene-index
vlm2geovec search --index scene-index --query "a marina with boats" -k 10
```

## Input specification (input format version 1)

An **item** is a string (text), an image, a dict with any of `image`, `text`, `bbox`, `coords`, or a list
of parts (each a string, an image, or a one-key dict) to interleave freely. In `encode`, a list is the
batch: a single part list is passed as `encode([[...]])`.

| field | accepted | meaning |
|---|---|---|
| `image` | PIL image, file path, encoded bytes, numpy array (HxW, HxWx1, HxWx3, HxWx4) | an RGB image, by the rules below |
| `text` | a string with at least one visible character | as is, always as plain text (see below) |
| `bbox` | `[x1, y1, x2, y2]` or a list of them | pixels of the **nearest preceding image**, original size; `0 <= x1 < x2 <= width`, `0 <= y1 < y2 <= height` |
| `coords` | `(lat, lon)` or `{{"lat": .., "lon": ..}}` | WGS84 degrees, **latitude first**; lat in [-90, 90], lon in [-180, 180] |

A dict renders in the fixed order image, boxes, coordinates, text. Parts are joined with a newline,
except that nothing is inserted right after an image. Every item becomes one Qwen2-VL chat turn —
the instruction is the system message (Qwen2-VL's default system prompt when none is given) — followed by
`<|endoftext|>`, whose final hidden state is the embedding.

| part | rendered text |
|---|---|
| image | `<|vision_start|><|image_pad|>…<|image_pad|><|vision_end|>` (one pad per 28x28 pixels after resizing) |
| box `[10, 20, 110, 220]` on a 400x400 image | `<|box_start|>(25,50),(275,550)<|box_end|>` (Qwen2-VL grounding: integers 0–1000 of the original width/height, rounded) |
| coords `(29.69, -81.99)` | `29.6900°N, 81.9900°W` (4 decimals, about 11 m; hemisphere letters, no signs) |
| coords `(-33.8568, 151.2153)` | `33.8568°S, 151.2153°E` |

The full text of `{{"image": img, "bbox": [10, 20, 110, 220], "coords": (29.69, -81.99), "text": "a tree"}}`
with instruction `Find the region.` (before the image pad is expanded):

```
<|im_start|>system
Find the region.<|im_end|>
<|im_start|>user
<|vision_start|><|image_pad|><|vision_end|><|box_start|>(25,50),(275,550)<|box_end|>
29.6900°N, 81.9900°W
a tree<|im_end|>
<|endoftext|>
```

and of the text-only item `"a harbour"` with no instruction:

```
<|im_start|>system
You are a helpful assistant.<|im_end|>
<|im_start|>user
a harbour<|im_end|>
<|endoftext|>
```

What each kind of input becomes:

| input | becomes |
|---|---|
| 8-bit image in any PIL mode (RGB, L, 1, P, CMYK, YCbCr, ...) | RGB exactly as transformers' Qwen2-VL image processor converts it (pixel values tested equal for every mode) |
| transparency (RGBA, LA, PA, palette or colour-key `transparency`, HxWx4 `uint8` array) | composited onto **white**, as transformers' image processor does (not dropped) |
| file path or bytes with an EXIF orientation | turned upright first, as transformers' `load_image` does; boxes refer to the upright image. A PIL image object is used as given |
| 16-bit or wider data (16-bit PNG/TIFF/JPEG2000, PIL modes `I;16`/`I`/`F`, integer arrays) | `image_scale="auto"` (default): each band stretched linearly from its 2nd to 98th percentile to 0–255 (the GeoTIFF tiler's stretch); `image_scale=(low, high)`: that fixed range for every image (consistent radiometry across tiles, e.g. `(0, 3000)` for Sentinel-2 L2A); `image_scale=None`: refused. 16-bit RGB files are read with GDAL (rasterio) since PIL keeps only their high byte; without rasterio they are refused. transformers itself clips such images to white or black |
| float array | intensities in [0, 1] (x 255, rounded); other ranges need `image_scale=(low, high)` |
| more than 4 bands, 2 bands, a 4-band array wider than 8 bits | refused: select three bands (`vlm2geovec index build --bands` for rasters) |
| text containing control tokens (`<|im_end|>`, `<|image_pad|>`, ...) | plain characters, never chat-template tokens |
| text longer than the token budget | cut at the end so the item fits `max_length` (default: the tokenizer's `model_max_length`, 32,768 for Qwen2-VL); images, boxes, coordinates and the chat frame are never cut |
| a box narrower than one unit of the 0–1000 grid | rendered one unit wide (never a point) |
| a truncated or corrupt file | refused, even where PIL's `LOAD_TRUNCATED_IMAGES` is set (transformers would embed the grey-filled remainder) |

Invalid input (a box outside its image or with x2 <= x1, a box with no image before it, latitude outside
[-90, 90], NaN, inf or numbers beyond float range, unknown keys, empty or invisible-only text, unreadable or
truncated images, decompression bombs, aspect ratios above 200) raises a `ValueError`/`TypeError` naming the
item and field before any model work; `SentenceTransformer.encode` checks (and decodes) every input first, so
the index is the caller's own. Images are resized to the processor's pixel budget
(`image_processor.size["longest_edge"]`); images above `max_image_pixels` ({max_image_pixels:,} by default)
are refused before decoding — tile them.

## Backbone families

One model file wraps transformers' own backbone classes with the same pooling; each family keeps its own
conventions, read from its own processor and checkpoints. A box is always given in pixels of the image as passed
(upright, original size) and lands on the same place of the image in every family; coordinates render the same
everywhere.

| family (`backbone_family`) | Hub checkpoints | image token covers | pixel budget (Hub processor) | no instruction | box `[10, 20, 110, 220]` on a 400x400 image |
|---|---|---|---|---|---|
| `qwen2_vl` | Qwen/Qwen2-VL-2B-Instruct, -7B | 28x28 px (patch 14, merge 2) | 3,136–12,845,056 | system "You are a helpful assistant." | `<|box_start|>(25,50),(275,550)<|box_end|>` (0–1000 of the image) |
| `qwen2_5_vl` | Qwen/Qwen2.5-VL-3B-Instruct, -7B | 28x28 px (patch 14, merge 2) | 3,136–12,845,056 | system "You are a helpful assistant." | `{{"bbox_2d": [10, 20, 108, 216]}}` (pixels of the resized input, here 392x392) |
| `qwen3_vl` | Qwen/Qwen3-VL-2B-Instruct, -8B; Qwen/Qwen3-VL-Embedding-2B, -8B | 32x32 px (patch 16, merge 2) | 65,536–16,777,216 | no system turn | `{{"bbox_2d": [25, 50, 275, 550]}}` (0–1000 of the image) |

The item above in Qwen2.5-VL (Hub pixel budget; a larger image is shrunk first and the box follows the shrink):

```
<|im_start|>system
Find the region.<|im_end|>
<|im_start|>user
<|vision_start|><|image_pad|><|vision_end|>{{"bbox_2d": [10, 20, 108, 216]}}
29.6900°N, 81.9900°W
a tree<|im_end|>
<|endoftext|>
```

and in Qwen3-VL, with no instruction:

```
<|im_start|>user
<|vision_start|><|image_pad|><|vision_end|>{{"bbox_2d": [25, 50, 275, 550]}}
29.6900°N, 81.9900°W
a tree<|im_end|>
<|endoftext|>
```

A checkpoint converted from **Qwen3-VL-Embedding** (`vlm2geovec convert` detects it) keeps that model's own
pipeline (`prompt_style="qwen3_vl_embedding"`), so it gives the published model's vectors: the instruction is the
system turn ("Represent the user's input." when none is given, a full stop added when it ends without
punctuation), the pooled token is the last one of the generation prompt, and images are resized to
4,096–1,843,200 pixels. `"a harbour"` with no instruction:

```
<|im_start|>system
Represent the user's input.<|im_end|>
<|im_start|>user
a harbour<|im_end|>
<|im_start|>assistant
```

## Embedding

| setting | value |
|---|---|
| pooling | `{pooling}`: hidden state of the final token (`<|endoftext|>`; in Qwen3-VL-Embedding's style the generation prompt's last token), correct for left and right padding |
| normalisation | {normalize} |
| dimension | {dim} (Matryoshka truncation: `embedding_dim` in the config, or `truncate_dim` in sentence-transformers) |
| similarity | cosine |

## Training and evaluation

{training}

## Limitations

- The input format (box and coordinate text) is this project's decision; the paper's is unpublished.
- Coordinates are text: the model learns geography only from the data it is trained on.

## Citation

```bibtex
@article{{vlm2geovec2025,
  title   = {{VLM2GeoVec}},  % the abstract's short name; see arXiv for the full title
  author  = {{S{{\\'a}}nchez Aimar, Emanuel and Zhambulova, Gulnaz and Khan, Fahad Shahbaz and Xu, Yonghao and Felsberg, Michael}},
  journal = {{arXiv preprint arXiv:2512.11490}},
  year    = {{2025}}
}}
```
"""

DEFAULT_TRAINING = (
    "Not trained yet: this card describes the architecture and input format. Trained checkpoints fill in "
    "their data, hyperparameters and RSMEB results here."
)


def render_model_card(
    name: str = "VLM2GeoVec",
    base: str | None = "Qwen/Qwen2-VL-2B-Instruct",
    repo: str = "path/to/vlm2geovec",
    pooling: str = "last",
    normalize: bool = True,
    dim: str = "the backbone's hidden size (1536 for Qwen2-VL-2B)",
    training: str = DEFAULT_TRAINING,
) -> str:
    from processing_vlm2geovec import DEFAULT_MAX_IMAGE_PIXELS

    return TEMPLATE.format(
        name=name,
        base_line=f"base_model: {base}\n" if base else "",
        repo=repo,
        pooling=pooling,
        normalize="L2 (unit vectors)" if normalize else "none",
        dim=dim,
        training=training,
        max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS,
    )
