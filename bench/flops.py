"""Analytic model FLOPs of a VLM2GeoVec forward from its real token counts, and device peaks for MFU.

Counted (2 FLOPs per multiply-add, from the model's config; every Qwen-VL family the package has):
- vision tower, per image of ``t x h x w`` patches: the patch embedding (a Conv3d, i.e. one matmul per patch), per
  block the qkv and output projections and the MLP (Qwen2-VL: fc1/fc2 at ``mlp_ratio``; Qwen2.5-VL: gated
  gate/up/down; Qwen3-VL: fc1/fc2), and the attention terms QK^T and AV over each attention segment: a whole frame
  (``h*w`` patches), or for Qwen2.5-VL's windowed blocks each window as transformers cuts it;
- the patch merger (two linears on every ``merge**2`` patches), plus Qwen3-VL's deepstack mergers (one per
  ``deepstack_visual_indexes`` entry);
- language model, per item of ``n`` real tokens: q/k/v/o projections (grouped-query k/v), the gated MLP, and the
  causal attention terms QK^T and AV over the ``n (n + 1) / 2`` query-key pairs a causal item needs.

Not counted: norms, activations, softmax, rotary embeddings, residual adds, the token-embedding lookup, Qwen3-VL's
interpolated position embedding and the final pooling (elementwise or gathers: well under 1% at 2B shape). There is no
LM head (an embedding model pools the last hidden state). Padding is never counted: these are the FLOPs the model
needs, so MFU compares every forward (padded or packed) with the same work.
"""

from __future__ import annotations

from typing import Iterable, Sequence

# Dense bf16 tensor-core peak (no sparsity) in TFLOP/s, by a substring of `torch.cuda.get_device_name()`; the
# first match wins, so more specific names come first. From the vendors' data sheets (SXM/PCIe forms differ).
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),  # fp16 (V100 has no bf16)
    ("T4", 65.0),  # fp16 (T4 has no bf16)
)


def device_peak_tflops(device_name: str | None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when it is not in the table (a CPU has no entry: MFU is then
    reported as null rather than guessed)."""
    if not device_name:
        return None
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def _vision_shape(vision) -> dict:
    """Per-family vision sizes: width, MLP MACs per patch, merger input width and output width, merger count."""
    kind = getattr(vision, "model_type", "")
    merge = vision.spatial_merge_size
    if kind.startswith("qwen2_vl"):  # Qwen2-VL: embed_dim wide, MLP fc1/fc2 at mlp_ratio, merger to hidden_size
        width = vision.embed_dim
        mlp = 2 * width * int(width * vision.mlp_ratio)
        out, mergers = vision.hidden_size, 1
    elif kind.startswith("qwen2_5_vl"):  # gated MLP (gate, up, down)
        width = vision.hidden_size
        mlp = 3 * width * vision.intermediate_size
        out, mergers = vision.out_hidden_size, 1
    elif kind.startswith("qwen3_vl"):  # fc1/fc2, one more merger per deepstack level
        width = vision.hidden_size
        mlp = 2 * width * vision.intermediate_size
        out, mergers = vision.out_hidden_size, 1 + len(vision.deepstack_visual_indexes or ())
    else:
        raise ValueError(f"no FLOPs model for vision config model_type {kind!r} (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)")
    return {"width": width, "mlp": mlp, "merge": merge, "out": out, "mergers": mergers}


def _windows(length: int, window: int) -> list[int]:
    """Chunk sizes of ``length`` cut from 0 into windows of ``window`` (the last one partial)."""
    return [window] * (length // window) + ([length % window] if length % window else [])


def vision_attention_segments(vision, grid_thw: Sequence[int]) -> tuple[list[int], list[int]]:
    """Patch counts of the attention segments of one image: (full-attention blocks, windowed blocks). Qwen2.5-VL's
    windows are squares of ``window_size // merge // patch`` merged tokens per side from the top-left corner (partial at
    the right and bottom edges), as transformers' `get_vision_window_index` cuts them; other families attend over whole
    frames in every block."""
    t, h, w = (int(v) for v in grid_thw)
    frames = [h * w] * t
    if not getattr(vision, "model_type", "").startswith("qwen2_5_vl"):
        return frames, frames
    merge = vision.spatial_merge_size
    window = vision.window_size // merge // vision.patch_size
    windows = [a * b * merge * merge for a in _windows(h // merge, window) for b in _windows(w // merge, window)]
    return frames, windows * t


def vision_flops(config, image_grid_thw: Iterable[Sequence[int]]) -> dict:
    """FLOPs of the vision tower and the merger(s) on images of the given patch grids (``image_grid_thw`` rows)."""
    vision = config.vision_config
    shape = _vision_shape(vision)
    width, merge = shape["width"], shape["merge"]
    patch_in = vision.in_channels * vision.temporal_patch_size * vision.patch_size ** 2
    windowed = getattr(vision, "model_type", "").startswith("qwen2_5_vl")
    full_blocks = set(vision.fullatt_block_indexes) if windowed else set(range(vision.depth))
    linear = attention = merger = 0
    for grid in image_grid_thw:
        patches = int(grid[0]) * int(grid[1]) * int(grid[2])
        frames, windows = vision_attention_segments(vision, grid)
        linear += patches * (patch_in * width + vision.depth * (4 * width * width + shape["mlp"]))
        for block in range(vision.depth):
            segments = frames if block in full_blocks else windows
            attention += sum(2 * s * s * width for s in segments)  # QK^T and AV, all heads together
        merged_in = width * merge * merge
        merger += shape["mergers"] * (patches // (merge * merge)) * (merged_in * merged_in + merged_in * shape["out"])
    return {"vision_linear": 2 * linear, "vision_attention": 2 * attention, "merger": 2 * merger}


def language_flops(config, sequence_lengths: Iterable[int], causal: bool = True) -> dict:
    """FLOPs of the language model on items of the given real lengths (no padding). ``causal=False`` counts the full
    ``n x n`` score matrix (what a kernel computes when it does not skip masked blocks)."""
    text = config.text_config
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    per_token = layers * (hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * text.intermediate_size)
    linear = attention = 0
    for n in sequence_lengths:
        n = int(n)
        linear += n * per_token
        pairs = n * (n + 1) // 2 if causal else n * n
        attention += layers * 2 * pairs * heads * head_dim  # QK^T and AV
    return {"language_linear": 2 * linear, "language_attention": 2 * attention}


def model_flops(config, sequence_lengths: Iterable[int], image_grid_thw: Iterable[Sequence[int]] = (),
                causal: bool = True) -> dict:
    """Model FLOPs of one forward over items of ``sequence_lengths`` real tokens holding images of ``image_grid_thw``
    patch grids: the parts (see the module docstring) and their ``total``."""
    parts = {**vision_flops(config, image_grid_thw), **language_flops(config, sequence_lengths, causal)}
    parts["total"] = sum(parts.values())
    return parts


def batch_flops(config, batch) -> dict:
    """`model_flops` of a processor batch (its ``attention_mask`` and ``image_grid_thw``)."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    grids = batch["image_grid_thw"].tolist() if batch.get("image_grid_thw") is not None else []
    return model_flops(config, lengths, grids)
