"""Vector search cost of `vlm2geovec.index.VectorIndex`: exact (IndexFlatIP) vs HNSW on random unit vectors.

    python bench/search.py --quick --json out/bench_search.json        # CI: 10^4 vectors, dim 128
    python bench/search.py --dim 1536 --json OUT.json                   # full: 10^5 and 10^6 vectors

Reported per size and kind: build time, query latency (ms/query, one batch of `--queries` queries, best of
`--repeats`), index memory (bytes of the serialised faiss index) and, for HNSW, recall@10 against exact search.
Results go to `--json` and (full runs) are appended to `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import write_outputs  # noqa: E402


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float64 temporaries small at 10^6 x 1536
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall_at(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    hits = sum(len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx_ids, exact_ids))
    return hits / (k * len(exact_ids))


def serialised_bytes(index) -> int:
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        return (Path(folder) / "index.faiss").stat().st_size


def measure(kind: str, vectors, queries, k: int, repeats: int, params: dict) -> tuple[dict, np.ndarray]:
    from vlm2geovec.index import VectorIndex

    start = time.perf_counter()
    index = VectorIndex.build(vectors, None, kind=kind, **params)
    build_s = time.perf_counter() - start
    index.search(queries[:2], k)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids, _ = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    result = {
        "kind": kind,
        "params": dict(index.params),
        "build_s": round(build_s, 4),
        "ms_per_query": round(1000 * best / len(queries), 4),
        "index_bytes": serialised_bytes(index),
    }
    return result, ids


def environment() -> dict:
    import faiss

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "machine": platform.machine(),
    }


def append_results_md(record: dict, path: Path) -> None:
    env = record["environment"]
    lines = [
        f"\n### search — dim {record['dim']} on CPU ({env['faiss_threads']} threads), {env['date']}\n",
        f"Random unit vectors, {record['n_queries']} queries per batch, k={record['k']}; faiss {env['faiss']}. "
        "Memory = bytes of the serialised faiss index; recall@10 of HNSW against exact search.\n\n",
        "| vectors | kind | params | build s | ms/query | index MiB | recall@10 |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    for run in record["runs"]:
        params = ", ".join(f"{k}={v}" for k, v in run["params"].items()) or "-"
        lines.append(
            f"| {run['n']} | {run['kind']} | {params} | {run['build_s']} | {run['ms_per_query']} | "
            f"{run['index_bytes'] / 2**20:.1f} | {run.get('recall_at_10', '-')} |\n"
        )
    with open(path, "a", encoding="utf-8") as handle:
        handle.writelines(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (1536 = VLM2GeoVec-2B, 128 = small)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="index sizes (default 1e5 1e6; quick 1e4)")
    parser.add_argument("--queries", type=int, default=100, help="queries per timed batch")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed query batches (best kept)")
    parser.add_argument("--M", type=int, default=32, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="10^4 vectors, one timed batch (CI)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)

    sizes = args.sizes or ([10_000] if args.quick else [100_000, 1_000_000])
    repeats = 1 if args.quick else args.repeats
    hnsw = {"M": args.M, "ef_construction": args.ef_construction, "ef_search": args.ef_search}
    k = args.k
    queries = unit_vectors(args.queries, args.dim, seed=1)
    runs = []
    for n in sizes:
        vectors = unit_vectors(n, args.dim, seed=0)
        exact, exact_ids = measure("exact", vectors, queries, k, repeats, {})
        approx, approx_ids = measure("hnsw", vectors, queries, k, repeats, hnsw)
        approx["recall_at_10"] = round(recall_at(approx_ids, exact_ids, min(10, k)), 4)
        runs += [{"n": n, **exact}, {"n": n, **approx}]
        print(json.dumps(runs[-2:]), flush=True)
        del vectors
    record = {
        "benchmark": "search",
        "dim": args.dim,
        "sizes": sizes,
        "n_queries": args.queries,
        "k": k,
        "quick": args.quick,
        "environment": environment(),
        "runs": runs,
    }
    return write_outputs(record, args.json, args.results_md, args.quick, append_results_md)


if __name__ == "__main__":
    main()
