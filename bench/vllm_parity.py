"""vLLM against our `encode` on the same items: vectors (max abs difference, cosine) and throughput.

Needs a GPU machine with vLLM installed (not run on our CPU machines; `tests/test_vllm_export.py` checks the export
with transformers' native class instead). One call:

    python bench/vllm_parity.py --model out/vlm2geovec-2b --n 512 --json bench/results/vllm_parity_h100.json

It exports the checkpoint (`vlm2geovec export vllm`), builds the requests with the client helper
(`vlm2geovec.vllm_export.vllm_prompts`), embeds them with `vllm.LLM(..., runner="pooling").embed`, embeds the same
items with our `SentenceTransformer.encode`, and records both vector sets' agreement and items/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a VLM2GeoVec checkpoint folder")
    parser.add_argument("--n", type=int, default=512, help="items (the encode benchmark's mixed workload)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--export-dir", default=None, help="default: <model>-vllm")
    parser.add_argument("--json", default=None, help="write the record here")
    args = parser.parse_args(argv)
    try:
        from vllm import LLM
    except ImportError:
        raise SystemExit("error: vLLM is not installed here; this benchmark runs on a GPU machine with vLLM")
    import torch

    from bench.encode import build_workload
    from vlm2geovec import load_model
    from vlm2geovec.vllm_export import export_for_vllm, vllm_prompts

    items = build_workload(args.n)
    export_dir = Path(args.export_dir or f"{args.model.rstrip('/')}-vllm")
    export_for_vllm(args.model, export_dir)
    ours_model = load_model(args.model, device="cuda", model_kwargs={"dtype": getattr(torch, args.dtype)})
    processor = ours_model[0].processor
    prompts = vllm_prompts(items, processor)

    start = time.perf_counter()
    ours = ours_model.encode(items, batch_size=args.batch_size, convert_to_numpy=True, normalize_embeddings=True)
    ours_s = time.perf_counter() - start
    del ours_model
    torch.cuda.empty_cache()

    llm = LLM(model=str(export_dir), runner="pooling", dtype=args.dtype)
    start = time.perf_counter()
    outputs = llm.embed(prompts)
    vllm_s = time.perf_counter() - start
    theirs = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)

    ours = np.asarray(ours, dtype=np.float32)
    cosine = np.sum(ours * theirs, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    record = {
        "model": args.model, "n": len(items), "dtype": args.dtype, "device": torch.cuda.get_device_name(0),
        "max_abs_difference": float(np.abs(ours - theirs).max()),
        "cosine": {"min": float(cosine.min()), "mean": float(cosine.mean())},
        "items_per_s": {"vlm2geovec_encode": len(items) / ours_s, "vllm_embed": len(items) / vllm_s},
        "versions": {"vllm": __import__("vllm").__version__, "torch": torch.__version__},
    }
    print(json.dumps(record, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


if __name__ == "__main__":
    main()
