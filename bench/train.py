"""Training-step memory and time: GradCache (`CachedMultimodalMNRLoss`) vs plain `MultimodalMNRLoss`.

    python bench/train.py --model nano --quick                              # CPU smoke run (CI)
    python bench/train.py --model qwen2vl-2b-random --device cuda           # GPU, real 2B cost

One forward + backward of the contrastive loss on a batch of (image+box+text anchor, caption positive) pairs,
for growing batch sizes. Reported: step time, peak device memory (GPU) or peak RSS growth (CPU), and
whether the step ran out of memory. GradCache should keep peak memory roughly flat in the batch size.
Results go to `--json` and are appended to `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import write_outputs  # noqa: E402

try:
    import vlm2geovec_train  # noqa: F401
except ImportError:  # a source checkout that is not pip-installed: load `train/` under its installed name
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "vlm2geovec_train", REPO / "train" / "__init__.py", submodule_search_locations=[str(REPO / "train")])
    sys.modules["vlm2geovec_train"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["vlm2geovec_train"])


def pairs(n: int, seed: int = 0):
    """Anchors: tiles with a box and a caption (images 224-640 px); positives: captions."""
    from encode import CAPTIONS, build_workload

    images = [item for item in build_workload(5 * n, seed) if isinstance(item, dict) and "bbox" in item]
    anchors = [{"image": item["image"], "bbox": item["bbox"], "text": "the region in the box"} for item in images[:n]]
    positives = [CAPTIONS[i % len(CAPTIONS)] + f" (tile {i})" for i in range(n)]
    return anchors, positives


def step(st_model, loss, anchors, positives, device):
    features = [st_model.preprocess(anchors), st_model.preprocess(positives)]
    features = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in f.items()} for f in features]
    features[0]["pixel_values"] = features[0]["pixel_values"].to(next(st_model.parameters()).dtype)
    labels = torch.arange(len(anchors)).unsqueeze(1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = loss(features, labels)
    value.backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, float(value.detach())


def measure_row(st_model, batch_size: int, name: str, mini_batch_size: int, device: str) -> dict:
    """One forward + backward at `batch_size` with loss `name`: time and peak memory above what was there before."""
    from vlm2geovec_train.losses import CachedMultimodalMNRLoss, MultimodalMNRLoss

    anchors, positives = pairs(batch_size)
    loss = (MultimodalMNRLoss(st_model) if name == "mnrl"
            else CachedMultimodalMNRLoss(st_model, mini_batch_size=min(mini_batch_size, batch_size)))
    st_model.zero_grad(set_to_none=True)
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        seconds, value = step(st_model, loss, anchors, positives, device)
        status = "ok"
    except torch.OutOfMemoryError:
        seconds, value, status = None, None, "oom"
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:  # KiB of peak RSS above the model and data of this fresh process
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 2**20
    return {"batch_size": batch_size, "loss": name, "status": status,
            "step_s": None if seconds is None else round(seconds, 3), "peak_extra_gib": round(peak, 3),
            "loss_value": value}


def results_md_lines(record: dict) -> list[str]:
    """The RESULTS.md block of one run."""
    env = record["environment"]
    lines = [f"\n### train step — {record['model']} on {env.get('gpu') or 'CPU'}, {env['date']}\n",
             f"Forward + backward of the contrastive loss, (image+box+text, caption) pairs, dtype {record['dtype']}, "
             f"token embedding frozen, GradCache mini-batch {record['mini_batch_size']}; torch {env['torch']}. "
             "Peak = device memory above the weights (GPU) or peak RSS above the loaded model and data (CPU, one "
             "process per row).\n\n",
             "| batch | loss | status | step s | peak extra GiB |\n|---|---|---|---|---|\n"]
    lines += [f"| {r['batch_size']} | {r['loss']} | {r['status']} | {r['step_s']} | {r['peak_extra_gib']} |\n"
              for r in record["rows"]]
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="nano", help="nano | qwen2vl-2b-random | checkpoint folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=None)
    parser.add_argument("--mini-batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny batches (CI)")
    parser.add_argument("--row", nargs=2, default=None, metavar=("BATCH", "LOSS"), help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)

    from encode import environment, load
    from sentence_transformers import SentenceTransformer

    from st_vlm2geovec import VLM2GeoVecEmbedder
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, processor = load(args.model, args.device, dtype)
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    st_model = SentenceTransformer(modules=[VLM2GeoVecEmbedder(model, processor)], device=args.device)
    sizes = args.batch_sizes or ([4, 8] if args.quick else [32, 64, 128, 256])
    if args.row is not None:  # the child of a CPU run: one configuration, its record on the last stdout line
        print(json.dumps(measure_row(st_model, int(args.row[0]), args.row[1], args.mini_batch_size, args.device)))
        return {}
    rows = []
    for batch_size in sizes:
        for name in ("mnrl", "cached_mnrl"):
            if args.device.startswith("cuda"):
                rows.append(measure_row(st_model, batch_size, name, args.mini_batch_size, args.device))
            else:  # a fresh process per row: peak RSS never goes down, so one process cannot measure each step
                command = [sys.executable, __file__, "--model", args.model, "--device", args.device,
                           "--mini-batch-size", str(args.mini_batch_size), "--row", str(batch_size), name]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    record = {"benchmark": "train", "model": args.model, "mini_batch_size": args.mini_batch_size,
              "dtype": str(dtype).replace("torch.", ""), "environment": environment(args.device), "rows": rows}
    return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)


if __name__ == "__main__":
    main()
