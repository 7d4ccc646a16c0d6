"""Packed vs padded forward on the mixed encode workload, timed in CPU seconds so that a shared machine's load does
not decide the answer.

    python bench/packed.py --families qwen2_vl qwen2_5_vl qwen3_vl --json bench/results/packed_nano_cpu.json

Wall time on a machine shared with other jobs drifts by x1.5 between identical passes (see RESULTS.md), which hides
a 10-20% effect. With one torch thread a pass's *process CPU time* counts only the work this process did (other
jobs' time slices are not in it), so the padded and packed passes are compared on what they compute. The passes
alternate (padded, packed / packed, padded) so that any drift touches both; per order we report the median CPU
seconds of each, the speed-up of the medians, every pair's ratio (min, median, max), the language model's own CPU
seconds (where packing acts; the vision tower runs without padding either way), the padding share, and the largest
vector difference between the two forwards. Wall seconds are recorded next to them for reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from common import write_outputs  # noqa: E402
from encode import LanguageModelTimer, build_workload, environment, load, make_batches, packed_difference  # noqa: E402


def timed_pass(model, batches, packed: bool) -> dict:
    """One pass over the batches: process CPU seconds, wall seconds, and the language model's CPU seconds."""
    with torch.inference_mode(), LanguageModelTimer(model, "cpu", clock=time.process_time) as language:
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches:
            model(**batch, packed=packed)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": cpu, "wall_s": wall, "language_model_cpu_s": language.seconds}


def compare(model, batches, repeats: int) -> dict:
    for packed in (False, True):  # warm-up: allocator, kernels for these shapes
        timed_pass(model, batches[:2], packed)
    runs = {False: [], True: []}
    for repeat in range(repeats):
        for packed in ((False, True) if repeat % 2 == 0 else (True, False)):
            runs[packed].append(timed_pass(model, batches, packed))
    padded, packed = runs[False], runs[True]
    median = lambda passes, key: statistics.median(p[key] for p in passes)  # noqa: E731
    pair_ratios = sorted(a["cpu_s"] / b["cpu_s"] for a, b in zip(padded, packed))
    return {
        "padded_cpu_s": round(median(padded, "cpu_s"), 4),
        "packed_cpu_s": round(median(packed, "cpu_s"), 4),
        "speedup_cpu": round(median(padded, "cpu_s") / median(packed, "cpu_s"), 4),
        "pair_ratio_min": round(pair_ratios[0], 4),
        "pair_ratio_median": round(statistics.median(pair_ratios), 4),
        "pair_ratio_max": round(pair_ratios[-1], 4),
        "padded_language_model_cpu_s": round(median(padded, "language_model_cpu_s"), 4),
        "packed_language_model_cpu_s": round(median(packed, "language_model_cpu_s"), 4),
        "language_model_speedup_cpu": round(median(padded, "language_model_cpu_s")
                                            / median(packed, "language_model_cpu_s"), 4),
        "padded_wall_s": round(median(padded, "wall_s"), 4),
        "packed_wall_s": round(median(packed, "wall_s"), 4),
    }


def measure_family(family: str, items: list, batch_size: int, repeats: int) -> dict:
    model, processor = load("nano", "cpu", torch.float32, family)
    orders = {}
    for order in ("length", "arrival"):
        batches, _ = make_batches(processor, items, batch_size, order)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        slots = sum(b["attention_mask"].numel() for b in batches)
        orders[order] = {"batches": len(batches), "real_tokens": real, "padding_fraction": round(1 - real / slots, 4),
                         **compare(model, batches, repeats),
                         "max_abs_diff": packed_difference(model, batches, "cpu", torch.float32)}
        print(f"{family} {order}: {orders[order]}", flush=True)
    return orders


def results_md_lines(record: dict) -> list[str]:
    env = record["environment"]
    lines = [
        f"\n### packed vs padded — nano on CPU ({record['threads']} torch thread), {env['date']}\n",
        f"{record['n_items']} items (mixed), batch {record['batch_size']}, float32, {record['repeats']} alternating "
        f"passes of each; torch {env['torch']}, transformers {env['transformers']}. CPU s = process CPU seconds "
        "(median); pair ratio = padded / packed CPU s of adjacent passes (min / median / max).\n\n",
        "| family | order | padding | padded CPU s | packed CPU s | speed-up | pair ratio | language model CPU s, "
        "padded / packed (speed-up) | wall s, padded / packed | max diff |\n",
        "|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for family, orders in record["families"].items():
        for order, r in orders.items():
            lines.append(
                f"| {family} | {order} | {r['padding_fraction']:.1%} | {r['padded_cpu_s']} | {r['packed_cpu_s']} | "
                f"x{r['speedup_cpu']} | {r['pair_ratio_min']} / {r['pair_ratio_median']} / {r['pair_ratio_max']} | "
                f"{r['padded_language_model_cpu_s']} / {r['packed_language_model_cpu_s']} "
                f"(x{r['language_model_speedup_cpu']}) | {r['padded_wall_s']} / {r['packed_wall_s']} | "
                f"{r['max_abs_diff']:.1e} |\n")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["qwen2_vl"], help="nano backbone families to measure")
    parser.add_argument("--n", type=int, default=160, help="number of items of the mixed workload")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=6, help="timed passes of each forward (alternating)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: process CPU time is this pass's work alone)")
    parser.add_argument("--quick", action="store_true", help="24 items in batches of 8, two passes (CI); RESULTS.md untouched")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, repeats, batch_size = (24, 2, 8) if args.quick else (args.n, args.repeats, args.batch_size)
    items = build_workload(n)
    record = {"benchmark": "packed", "model": "nano", "n_items": n, "batch_size": batch_size,
              "repeats": repeats, "threads": args.threads, "quick": args.quick, "environment": environment("cpu"),
              "families": {family: measure_family(family, items, batch_size, repeats)
                           for family in args.families}}
    return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)


if __name__ == "__main__":
    main()
