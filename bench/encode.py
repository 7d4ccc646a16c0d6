"""Encode throughput of VLM2GeoVec vs the floor: transformers' plain Qwen2-VL forward on the same batches.

    python bench/encode.py --model nano --quick --json out/bench_encode.json          # CPU, nano
    python bench/encode.py --model qwen2vl-2b-random --device cuda --json OUT.json    # GPU, real 2B cost

`qwen2vl-2b-random` is a Qwen2-VL-2B-shaped model with random weights: the cost is the real one.
The workload is a realistic remote-sensing mix (image-only tiles of several sizes, image+box,
image+box+text, text-only captions, text+coordinates) built from the real NEON tiles in `examples/`.

Reported, per batching order (length-sorted as our encode does, and arrival order):
- preprocessing time (processor on the CPU) and its share of the end-to-end time;
- model time of the floor (`Qwen2VLModel.forward`) and of ours (`VLM2GeoVecModel.forward`: + pooling),
  items/s and real (unpadded) tokens/s, `ratio` = ours / floor throughput;
- padding fraction, peak device memory;
- model FLOPs (`bench/flops.py`: analytic, from the real token counts, padding never counted), achieved TFLOP/s and
  MFU against the device's dense bf16 peak (`flops.PEAK_BF16_TFLOPS` by device name; null on a CPU);
- the packed forward (`model(..., packed=True)`: the batch's real tokens as one sequence, no padding computed) on the
  same batches: its model time, speed-up over the padded forward, and its largest vector difference from it;
- end to end: `SentenceTransformer.encode` wall time, and its ratio to the floor's model time;
- pixel values alone: transformers' Qwen2-VL image processor vs our processor's (bit-identical) path.
`--preprocess-only` skips the model: preprocessing at a model's pixel budget on any machine, e.g.
    python bench/encode.py --model qwen2vl-2b-random --preprocess-only --device cpu
Results go to `--json` and are appended to `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import write_outputs  # noqa: E402
from flops import batch_flops, device_peak_tflops  # noqa: E402

QWEN2VL_2B_TEXT = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
)
QWEN2VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
# Tiles of 224..640 px: up to 28*28*529 pixels keeps a 640x640 tile whole (529 image tokens).
QWEN2VL_2B_IMAGE_SIZE = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 529}

CAPTIONS = [
    "dense conifer forest with a few dead standing trees",
    "open sandhill with scattered longleaf pine crowns and bare sand between them",
    "a tree",
    "mixed woodland on a slope; shadows fall to the north-west and a dirt track crosses the lower left corner",
    "bare ground",
    "grassland with isolated shrubs",
]


def build_workload(n: int, seed: int = 0) -> list:
    from PIL import Image

    rng = random.Random(seed)
    tiles = [Image.open(REPO / "examples" / "images" / name).convert("RGB") for name in ("OSBS_029.png", "SOAP_061.png")]
    sizes = [224, 320, 400, 512, 640]
    items = []
    for i in range(n):
        tile = tiles[i % len(tiles)]
        side = rng.choice(sizes)
        image = tile.resize((side, side if rng.random() < 0.7 else int(side * 0.75)))
        width, height = image.size
        x1, y1 = rng.randrange(0, width // 2), rng.randrange(0, height // 2)
        box = [x1, y1, x1 + rng.randrange(16, width // 2), y1 + rng.randrange(16, height // 2)]
        kind = i % 5
        if kind == 0:
            items.append({"image": image})
        elif kind == 1:
            items.append({"image": image, "bbox": box})
        elif kind == 2:
            items.append({"image": image, "bbox": box, "text": rng.choice(CAPTIONS)})
        elif kind == 3:
            items.append(" ".join(rng.choice(CAPTIONS) for _ in range(rng.randint(1, 4))))
        else:
            items.append({"coords": (rng.uniform(-60, 70), rng.uniform(-180, 180)), "text": rng.choice(CAPTIONS)})
    return items


def load_processor(model_name: str):
    """The processor `load` would return, without building the model."""
    from vlm2geovec.checkpoint import build_processor

    if model_name == "nano":
        return build_processor()  # what build_nano uses
    if model_name == "qwen2vl-2b-random":
        return build_processor(image_size=QWEN2VL_2B_IMAGE_SIZE)
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_name, trust_remote_code=True)


def load(model_name: str, device: str, dtype: torch.dtype, family: str = "qwen2_vl"):
    from modeling_vlm2geovec import VLM2GeoVecConfig, VLM2GeoVecModel
    from vlm2geovec.checkpoint import build_nano

    if model_name == "nano":
        model, processor = build_nano(seed=0, family=family)
    elif model_name == "qwen2vl-2b-random":
        config = VLM2GeoVecConfig(text_config=dict(QWEN2VL_2B_TEXT), vision_config=dict(QWEN2VL_2B_VISION))
        torch.manual_seed(0)
        with torch.device(device):
            model = VLM2GeoVecModel._from_config(config, dtype=dtype)
        processor = load_processor(model_name)
    else:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_name, trust_remote_code=True, device="cpu")
        model, processor = st[0].model, st[0].processor
    return model.to(device=device, dtype=dtype).eval(), processor


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_batches(processor, items, batch_size, order):
    from processing_vlm2geovec import estimate_item_tokens

    index = list(range(len(items)))
    if order == "length":
        index.sort(key=lambda i: -estimate_item_tokens(items[i], processor.image_processor))
    start = time.perf_counter()
    batches = [processor(items=[items[i] for i in index[s : s + batch_size]]) for s in range(0, len(index), batch_size)]
    return batches, time.perf_counter() - start


def run_forward(forward, batches, device, dtype):
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            forward(inputs)
    sync(device)
    return time.perf_counter() - start


class LanguageModelTimer:
    """Seconds spent inside the language model (hooks around it): packing acts there, the vision tower is packed
    either way. `clock` is wall time by default; `time.process_time` counts this process's CPU seconds."""

    def __init__(self, model, device: str, clock=time.perf_counter):
        self.module, self.device, self.clock, self.seconds, self.handles = model.language_model, device, clock, 0.0, []

    def _start(self, module, args, kwargs):
        sync(self.device)
        self.started = self.clock()

    def _stop(self, module, args, kwargs, output):
        sync(self.device)
        self.seconds += self.clock() - self.started

    def __enter__(self):
        self.handles = [self.module.register_forward_pre_hook(self._start, with_kwargs=True),
                        self.module.register_forward_hook(self._stop, with_kwargs=True)]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def throughput(flops: float, seconds: float, peak_tflops: float | None) -> dict:
    """Achieved TFLOP/s and model FLOPs utilisation (null without a known peak: never guessed)."""
    achieved = flops / seconds / 1e12
    return {"tflops_per_s": round(achieved, 4), "mfu": round(achieved / peak_tflops, 4) if peak_tflops else None}


def packed_difference(model, batches, device, dtype) -> float:
    """Largest absolute difference between the packed and padded vectors over the batches."""
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items()}
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            padded = model(**inputs).embeddings.float()
            packed = model(**inputs, packed=True).embeddings.float()
            worst = max(worst, (padded - packed).abs().max().item())
    return worst


def measure(model, processor, items, batch_size, device, dtype, repeats, peak_tflops=None):
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

    def floor(inputs):  # the plain transformers forward on the same weights
        model.rope_deltas = None
        return Qwen2VLModel.forward(model, **inputs, use_cache=False)

    def ours(inputs):
        return model(**inputs).embeddings

    def packed(inputs):
        return model(**inputs, packed=True).embeddings

    results = {}
    for order in ("length", "arrival"):
        batches, preprocess_s = make_batches(processor, items, batch_size, order)
        real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        padded_tokens = sum(b["attention_mask"].numel() for b in batches)
        run_forward(ours, batches[:2], device, dtype)  # warm-up (kernels, allocator)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        run_forward(packed, batches[:2], device, dtype)  # warm-up: other shapes
        # Passes interleaved, best of each kept: a shared machine's load drifts, and all three see the same drift.
        times = {forward: [] for forward in (floor, ours, packed)}
        for _ in range(repeats):
            for forward, seconds in times.items():
                seconds.append(run_forward(forward, batches, device, dtype))
        floor_s, ours_s, packed_s = (min(seconds) for seconds in times.values())
        flops = sum(batch_flops(model.config, b)["total"] for b in batches)
        language_s = {}
        for name, forward in (("ours", ours), ("packed", packed)):  # one more pass each, timing the language model
            with LanguageModelTimer(model, device) as timer:
                run_forward(forward, batches, device, dtype)
            language_s[name] = round(timer.seconds, 4)
        ours_rate, packed_rate = throughput(flops, ours_s, peak_tflops), throughput(flops, packed_s, peak_tflops)
        results[order] = {
            "batches": len(batches),
            "preprocess_s": round(preprocess_s, 4),
            "floor_model_s": round(floor_s, 4),
            "ours_model_s": round(ours_s, 4),
            "ratio": round(floor_s / ours_s, 4),
            "ours_items_per_s": round(len(items) / ours_s, 2),
            "ours_tokens_per_s": round(real_tokens / ours_s, 1),
            "padding_fraction": round(1 - real_tokens / padded_tokens, 4),
            "real_tokens": real_tokens,
            "model_tflop": round(flops / 1e12, 6),
            "ours_tflops_per_s": ours_rate["tflops_per_s"],
            "ours_mfu": ours_rate["mfu"],
            "packed_model_s": round(packed_s, 4),
            "ours_language_model_s": language_s["ours"],
            "packed_language_model_s": language_s["packed"],
            "packed_speedup": round(ours_s / packed_s, 4),
            "packed_items_per_s": round(len(items) / packed_s, 2),
            "packed_tokens_per_s": round(real_tokens / packed_s, 1),
            "packed_tflops_per_s": packed_rate["tflops_per_s"],
            "packed_mfu": packed_rate["mfu"],
            "packed_max_abs_diff": packed_difference(model, batches, device, dtype),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        }
    return results


def end_to_end(model, processor, items, batch_size, device, workers, backend="thread"):
    """Wall time of `SentenceTransformer.encode` with `workers` look-ahead preprocessing threads or processes."""
    from sentence_transformers import SentenceTransformer

    from st_vlm2geovec import VLM2GeoVecEmbedder

    module = VLM2GeoVecEmbedder(model, processor, preprocess_workers=workers, preprocess_backend=backend)
    st = SentenceTransformer(modules=[module], device=device)
    st.encode(items[: 3 * batch_size], batch_size=batch_size)  # warm-up (also starts a process pool)
    sync(device)
    start = time.perf_counter()
    vectors = st.encode(items, batch_size=batch_size, convert_to_numpy=True)
    sync(device)
    assert vectors.shape[0] == len(items)
    seconds = time.perf_counter() - start
    module.preprocess_backend = "thread"  # shuts the process pool down
    return seconds, module.resolved_preprocess_workers(device)


def preprocess_scaling(processor, items, batch_size, workers: int) -> dict:
    """Preprocessing alone (no model): seconds for all batches serially, in `workers` threads and in `workers`
    spawned processes (pool started before timing) — whether preprocessing itself scales with cores."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from st_vlm2geovec import _init_preprocess_process, _preprocess_in_process

    batches = [items[s : s + batch_size] for s in range(0, len(items), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        processor(items=batch)
    serial = time.perf_counter() - start
    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        list(pool.map(lambda b: processor(items=b), batches))
        threads = time.perf_counter() - start
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_preprocess_process, initargs=(pickle.dumps(processor),)) as pool:
        list(pool.map(_preprocess_in_process, batches[:workers], [None] * workers))  # start every worker
        start = time.perf_counter()
        list(pool.map(_preprocess_in_process, batches, [None] * len(batches)))
        processes = time.perf_counter() - start
    return {"workers": workers, "serial_s": round(serial, 4), "threads_s": round(threads, 4),
            "processes_s": round(processes, 4), "thread_speedup": round(serial / threads, 3),
            "process_speedup": round(serial / processes, 3)}


def pixel_path(processor, items, batch_size, repeats) -> dict:
    """Pixel values alone, batch by batch: transformers' Qwen2-VL PIL image processor vs our processor's path
    (equal bit for bit, tested). Best of `repeats` passes after one warm-up pass each (first-touch memory)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from processing_vlm2geovec import load_image

    reference = Qwen2VLImageProcessorPil(**processor.image_processor.to_dict())
    images = [load_image(item["image"]) for item in items if isinstance(item, dict) and "image" in item]
    batches = [images[s : s + batch_size] for s in range(0, len(images), batch_size)]

    def best(run) -> float:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            times.append(time.perf_counter() - start)
        return min(times[1:])

    transformers_s = best(lambda batch: reference(images=batch, return_tensors="pt"))
    ours_s = best(processor._process_images)
    return {"images": len(images), "transformers_s": round(transformers_s, 4), "ours_s": round(ours_s, 4),
            "speedup": round(transformers_s / ours_s, 2)}


def environment(device: str) -> dict:
    import transformers

    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    info["device_name"] = info.get("gpu", "cpu")
    info["peak_bf16_tflops"] = device_peak_tflops(info.get("gpu"))  # none for a CPU: MFU stays null
    return info


def pixel_path_line(pixels: dict) -> str:
    return (f"Pixel values alone ({pixels['images']} images): transformers' `Qwen2VLImageProcessorPil` "
            f"{pixels['transformers_s']} s, ours {pixels['ours_s']} s (x{pixels['speedup']}, equal bit for bit).\n")


def results_md_lines(record: dict) -> list[str]:
    """The RESULTS.md block of one run."""
    env = record["environment"]
    where = env.get("gpu") or f"CPU ({env['cpu_threads']} threads)"
    if record.get("preprocess_only"):
        pixels, pre = record["pixel_path"], record["preprocess_s"]
        return [
            f"\n### encode, preprocessing only — {record['model']} pixel budget on {where}, {env['date']}\n",
            f"{record['n_items']} items (mixed), batch {record['batch_size']}; transformers {env['transformers']}.\n\n",
            f"Processor over all batches (best of passes after a warm-up): length order {pre['length']} s, arrival "
            f"order {pre['arrival']} s. " + pixel_path_line(pixels),
        ]
    lines = [
        f"\n### encode — {record['model']} on {where}, {env['date']}\n",
        f"{record['n_items']} items (mixed), batch {record['batch_size']}, dtype {record['dtype']}, attention "
        f"{record.get('attn_implementation', 'sdpa')}; torch {env['torch']}, transformers {env['transformers']}.\n\n",
        "| order | preprocess s | floor model s | ours model s | ratio | items/s | tokens/s | padding | peak GiB |\n",
        "|---|---|---|---|---|---|---|---|---|\n",
    ]
    for order, r in record["orders"].items():
        lines.append(
            f"| {order} | {r['preprocess_s']} | {r['floor_model_s']} | {r['ours_model_s']} | {r['ratio']} | "
            f"{r['ours_items_per_s']} | {r['ours_tokens_per_s']} | {r['padding_fraction']:.1%} | {r['peak_mem_gib']} |\n"
        )
    peak = env.get("peak_bf16_tflops")
    lines += [
        f"\nModel FLOPs (analytic, `bench/flops.py`) and the packed forward; MFU against "
        f"{f'{peak} TFLOP/s dense bf16' if peak else 'no known peak (null)'}:\n\n",
        "| order | TFLOP | padded s | padded TFLOP/s | padded MFU | packed s | packed TFLOP/s | packed MFU | "
        "packed speed-up | language model s, padded / packed | packed max diff |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for order, r in record["orders"].items():
        lines.append(
            f"| {order} | {r['model_tflop']} | {r['ours_model_s']} | {r['ours_tflops_per_s']} | {r['ours_mfu']} | "
            f"{r['packed_model_s']} | {r['packed_tflops_per_s']} | {r['packed_mfu']} | x{r['packed_speedup']} | "
            f"{r['ours_language_model_s']} / {r['packed_language_model_s']} | {r['packed_max_abs_diff']:.1e} |\n"
        )
    e2e = record["end_to_end"]
    lines.append(
        f"\nEnd to end (`SentenceTransformer.encode`, preprocessing included): serial {e2e['serial_wall_s']} s; "
        f"with {e2e['preprocess_workers']} look-ahead preprocessing threads {e2e['wall_s']} s = "
        f"{e2e['items_per_s']} items/s; floor model time / wall = {e2e['ratio_to_floor']}; "
        f"serial preprocessing / wall ≈ {e2e['preprocess_share']:.0%}; {e2e['tflops_per_s']} TFLOP/s end to end, "
        f"MFU {e2e['mfu']}.\n"
    )
    pixels = record.get("pixel_path")
    if pixels:
        lines.append(pixel_path_line(pixels))
    proc = record.get("end_to_end_process")
    if proc:
        lines.append(f"With {proc['preprocess_workers']} look-ahead preprocessing *processes*: {proc['wall_s']} s = "
                     f"{proc['items_per_s']} items/s; floor model time / wall = {proc['ratio_to_floor']}.\n")
    scaling = record.get("preprocess_scaling")
    if scaling:
        lines.append(f"Preprocessing alone, {scaling['workers']} workers: serial {scaling['serial_s']} s, threads "
                     f"{scaling['threads_s']} s (x{scaling['thread_speedup']}), processes {scaling['processes_s']} s "
                     f"(x{scaling['process_speedup']}).\n")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nano", help="nano | qwen2vl-2b-random | checkpoint folder")
    parser.add_argument("--family", default="qwen2_vl", help="backbone family of --model nano")
    parser.add_argument("--attn-implementation", default=None,
                        help="the model's attention (sdpa, flash_attention_2, eager); default: as loaded (sdpa)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="bfloat16 on GPU, float32 on CPU by default")
    parser.add_argument("--n", type=int, default=None, help="number of items")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per measurement (best kept)")
    parser.add_argument("--quick", action="store_true", help="small workload, one pass (CI)")
    parser.add_argument("--workers", type=int, default=None, help="look-ahead preprocessing threads (default: auto)")
    parser.add_argument("--process-workers", type=int, default=0,
                        help="also time encode with this many look-ahead preprocessing processes, and preprocessing "
                             "alone serial vs threads vs processes (0: skip)")
    parser.add_argument("--preprocess-only", action="store_true",
                        help="no model: time preprocessing at the model's pixel budget (length and arrival batches, "
                             "and pixel values alone vs transformers' image processor)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device.startswith("cuda") else torch.float32)
    n = args.n or (40 if args.quick else 320)
    repeats = 1 if args.quick else args.repeats
    items = build_workload(n)
    if args.preprocess_only:
        processor = load_processor(args.model)
        preprocess = {}
        for order in ("length", "arrival"):
            preprocess[order] = round(min(make_batches(processor, items, args.batch_size, order)[1]
                                          for _ in range(repeats + 1)), 4)
        record = {"benchmark": "encode", "preprocess_only": True, "model": args.model, "n_items": n,
                  "batch_size": args.batch_size, "quick": args.quick, "environment": environment("cpu"),
                  "preprocess_s": preprocess, "pixel_path": pixel_path(processor, items, args.batch_size, repeats)}
        return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)
    model, processor = load(args.model, args.device, dtype, args.family)
    if args.attn_implementation:
        model.set_attn_implementation(args.attn_implementation)
    env = environment(args.device)
    orders = measure(model, processor, items, args.batch_size, args.device, dtype, repeats, env["peak_bf16_tflops"])
    serial_wall, _ = end_to_end(model, processor, items, args.batch_size, args.device, workers=0)
    wall, workers = end_to_end(model, processor, items, args.batch_size, args.device, workers=args.workers)
    length = orders["length"]
    extra = {"pixel_path": pixel_path(processor, items, args.batch_size, repeats)}
    if args.process_workers:
        proc_wall, proc_workers = end_to_end(model, processor, items, args.batch_size, args.device,
                                             workers=args.process_workers, backend="process")
        extra["end_to_end_process"] = {"preprocess_workers": proc_workers, "wall_s": round(proc_wall, 4),
                                       "items_per_s": round(n / proc_wall, 2),
                                       "ratio_to_floor": round(length["floor_model_s"] / proc_wall, 4)}
        extra["preprocess_scaling"] = preprocess_scaling(processor, items, args.batch_size, args.process_workers)
    record = {
        "benchmark": "encode",
        "model": args.model,
        "n_items": n,
        "batch_size": args.batch_size,
        "dtype": str(dtype).replace("torch.", ""),
        "quick": args.quick,
        "family": model.config.backbone_family,
        "attn_implementation": model.config.text_config._attn_implementation,
        "environment": env,
        "orders": orders,
        "end_to_end": {
            "serial_wall_s": round(serial_wall, 4),
            "preprocess_workers": workers,
            "wall_s": round(wall, 4),
            "items_per_s": round(n / wall, 2),
            "ratio_to_floor": round(length["floor_model_s"] / wall, 4),
            "preprocess_share": round(min(1.0, length["preprocess_s"] / wall), 4),
            **throughput(length["model_tflop"] * 1e12, wall, env["peak_bf16_tflops"]),
        },
        **extra,
    }
    return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)


if __name__ == "__main__":
    main()
