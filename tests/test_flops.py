"""bench/flops.py: the analytic FLOPs equal an independent count (torch's FlopCounterMode on a real forward) in every
backbone family, and the MFU peak table reads device names."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_vlm2geovec import FAMILY_MODEL_CLASSES
from tests.conftest import REPO_ROOT, make_image

sys.path.insert(0, str(REPO_ROOT / "bench"))
from flops import (  # noqa: E402
    batch_flops, device_peak_tflops, language_flops, model_flops, vision_attention_segments,
)


def counted_flops(model, batch) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(**batch)
    return counter.get_total_flops()


@pytest.mark.parametrize("family", sorted(FAMILY_MODEL_CLASSES))
def test_analytic_flops_equal_torch_flop_counter(family):
    """Eager attention runs QK^T and AV as plain matmuls, so torch counts every term we count; the items run one
    at a time (no padding). Torch computes the full n x n causal score matrix, so the analytic side counts it too
    (causal=False); with SDPA on the CPU torch's counter sees no attention at all, only the linear layers."""
    from vlm2geovec.checkpoint import build_nano

    model, processor = build_nano(seed=0, family=family)
    # two images whose merged grids do not divide Qwen2.5-VL's window: partial windows at the edges are counted
    items = [[make_image(300, 250, 0), "a river", make_image(200, 120, 1)], "bare ground", {"coords": (29.69, -81.99)}]
    eager_total = analytic_total = 0
    model.set_attn_implementation("eager")
    for item in items:
        batch = processor(items=[item])
        grids = batch["image_grid_thw"].tolist() if "image_grid_thw" in batch else []
        eager_total += counted_flops(model, batch)
        analytic_total += model_flops(model.config, batch["attention_mask"].sum(1).tolist(), grids, causal=False)["total"]
    assert eager_total == analytic_total > 0
    model.set_attn_implementation("sdpa")
    batch = processor(items=[items[0]])
    parts = batch_flops(model.config, batch)
    assert counted_flops(model, batch) == parts["vision_linear"] + parts["merger"] + parts["language_linear"]


def test_causal_attention_counts_the_lower_triangle():
    from vlm2geovec.checkpoint import nano_config

    config = nano_config("qwen2_vl")
    full = language_flops(config, [10, 1], causal=False)
    causal = language_flops(config, [10, 1])
    assert causal["language_linear"] == full["language_linear"]
    # pairs: 10*11/2 + 1 = 56 of 100 + 1 = 101
    assert causal["language_attention"] * 101 == full["language_attention"] * 56
    text = config.text_config
    assert full["language_attention"] == 2 * text.num_hidden_layers * 2 * 101 * text.hidden_size


def test_qwen2_5_vl_windows_are_cut_like_transformers():
    from vlm2geovec.checkpoint import nano_config

    vision = nano_config("qwen2_5_vl").vision_config  # window 112 px = 4 merged tokens of 2x2 patches of 14 px
    frames, windows = vision_attention_segments(vision, (1, 14, 16))  # 7 x 8 merged tokens
    assert frames == [224] and windows == [64, 64, 48, 48] and sum(windows) == 224
    frames, windows = vision_attention_segments(nano_config("qwen2_vl").vision_config, (2, 4, 6))
    assert frames == windows == [24, 24]  # no windows: whole frames


def test_unknown_vision_family_is_named():
    from vlm2geovec.checkpoint import nano_config

    config = nano_config("qwen2_vl")
    config.vision_config.model_type = "siglip_vision_model"
    with pytest.raises(ValueError, match="no FLOPs model for vision config model_type 'siglip_vision_model'"):
        model_flops(config, [4], [(1, 4, 4)])


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0), ("NVIDIA A10G", 70.0),
    ("cpu", None), (None, None), ("Some Future Accelerator", None),
])
def test_device_peak_table(name, peak):
    assert device_peak_tflops(name) == peak


def test_encode_benchmark_reports_flops_mfu_and_the_packed_forward():
    """bench/encode.py's measurement on a tiny mixed workload: FLOPs from the items (the same in either batching
    order), MFU null on a CPU (no peak to divide by), and the packed forward timed on the same batches with the
    padded forward's vectors."""
    import encode

    from vlm2geovec.checkpoint import build_nano

    model, processor = build_nano(seed=0)
    items = encode.build_workload(6)
    env = encode.environment("cpu")
    assert env["device_name"] == "cpu" and env["peak_bf16_tflops"] is None
    orders = encode.measure(model, processor, items, 3, "cpu", torch.float32, 1, env["peak_bf16_tflops"])
    length, arrival = orders["length"], orders["arrival"]
    expected = sum(batch_flops(model.config, processor(items=[item]))["total"] for item in items) / 1e12
    assert length["model_tflop"] == arrival["model_tflop"] == round(expected, 6) > 0
    for order in (length, arrival):
        assert order["ours_mfu"] is None and order["packed_mfu"] is None and order["ours_tflops_per_s"] > 0
        assert order["packed_model_s"] > 0 and order["packed_max_abs_diff"] <= 1e-5
        assert 0 < order["packed_language_model_s"] and 0 < order["ours_language_model_s"]
    assert encode.throughput(2e12, 4.0, 989.0) == {"tflops_per_s": 0.5, "mfu": round(0.5 / 989.0, 4)}
