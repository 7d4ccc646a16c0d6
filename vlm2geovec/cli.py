"""The `vlm2geovec` command line. Each subcommand is a thin shell over the public Python API.

    vlm2geovec nano --out DIR [--seed N]
    vlm2geovec convert --backbone Qwen/Qwen2-VL-2B-Instruct --out DIR
    vlm2geovec embed --model DIR --input items.jsonl --out vectors.npy
    vlm2geovec index build --model DIR --input <items.jsonl | dataset | scene.tif> --out INDEX [--shard i/n]
    vlm2geovec search --index INDEX --query "a harbour" -k 10     (or --image, --bbox, --coords, --item)
    vlm2geovec rsmeb build --lite --out DATA ; vlm2geovec rsmeb eval --model DIR --data DATA --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence


def _cmd_nano(args: argparse.Namespace) -> int:
    from vlm2geovec.checkpoint import build_nano, save_checkpoint
    from vlm2geovec.model_card import render_model_card

    model, processor = build_nano(seed=args.seed)
    card = render_model_card(
        name=f"vlm2geovec-nano (seed {args.seed})",
        base=None,
        repo=str(args.out),
        dim=f"{model.config.text_config.hidden_size}",
        training="Randomly initialised (the offline default for tests, demos and the quickstart): not trained.",
    )
    out = save_checkpoint(model, processor, args.out, model_card=card)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote nano VLM2GeoVec ({n_params / 1e6:.1f} M parameters, seed {args.seed}) to {out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from vlm2geovec.checkpoint import convert_backbone

    out = convert_backbone(
        args.backbone,
        args.out,
        pooling=args.pooling,
        normalize=not args.no_normalize,
        embedding_dim=args.embedding_dim,
        max_pixels=args.max_pixels,
        dtype=args.dtype,
        revision=args.revision,
    )
    print(f"wrote VLM2GeoVec checkpoint converted from {args.backbone} to {out}")
    return 0


def _add_preprocess_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preprocess-workers", type=int, default=None,
                        help="look-ahead preprocessing workers (default: up to 8 on GPU, 0 on CPU)")
    parser.add_argument("--preprocess-backend", choices=["thread", "process"], default=None,
                        help="run them as threads (default) or spawned processes")


def _load_for_encoding(args: argparse.Namespace, device: str | None):
    from vlm2geovec import load_model

    model = load_model(args.model, device=device)
    if args.preprocess_workers is not None:
        model[0].preprocess_workers = args.preprocess_workers
    if args.preprocess_backend is not None:
        model[0].preprocess_backend = args.preprocess_backend
    return model


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from vlm2geovec.corpus import read_items_jsonl
    from processing_vlm2geovec import normalize_item

    items = read_items_jsonl(args.input)
    # Validate every line first so that a bad line 9,000 fails in a second, not after an hour of encoding.
    for index, item in enumerate(items):
        try:
            normalize_item(item, f"{args.input}: line item {index + 1}", max_image_pixels=16_384**2)
        except (ValueError, TypeError) as error:
            raise SystemExit(f"error: {error}")
    model = _load_for_encoding(args, args.device)
    vectors = model.encode(
        items,
        batch_size=args.batch_size,
        prompt=args.instruction,
        prompt_name=args.prompt_name if args.instruction is None else None,
        show_progress_bar=not args.quiet,
        convert_to_numpy=True,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    print(f"wrote {vectors.shape[0]} embeddings of dimension {vectors.shape[1]} to {out}")
    return 0


def _index_params(args: argparse.Namespace) -> dict:
    names = {"hnsw": ("M", "ef_construction", "ef_search"), "ivf": ("nlist", "nprobe")}.get(args.kind, ())
    given = {name: getattr(args, name) for name in ("M", "ef_construction", "ef_search", "nlist", "nprobe")
             if getattr(args, name) is not None}
    if args.kind == "auto":  # the index kind depends on the corpus size: VectorIndex.build checks the names
        return given
    stray = sorted(set(given) - set(names))
    if stray:
        raise SystemExit(f"error: --{stray[0].replace('_', '-')} does not apply to a {args.kind} index")
    return given


def _parse_numbers(value: str | None, name: str, kind: type = float, count: int | None = None) -> tuple | None:
    """``"1,2,3"`` -> ``(1, 2, 3)`` of `kind`; a clear CLI error for anything else (or the wrong count)."""
    if value is None:
        return None
    try:
        numbers = tuple(kind(v) for v in value.split(","))
    except ValueError:
        raise SystemExit(f"error: {name} must be comma-separated {kind.__name__}s; got {value!r}") from None
    if count is not None and len(numbers) != count:
        raise SystemExit(f"error: {name} needs {count} numbers; got {value!r}")
    return numbers


def _distributed_barrier() -> bool:
    """Under torchrun/accelerate (WORLD_SIZE > 1): wait for every rank; True on rank 0. A gloo group suffices
    (no tensors move), so the same path works on CPUs and GPUs."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))  # shards may differ a lot in time
    dist.barrier()
    rank = dist.get_rank()
    dist.destroy_process_group()
    return rank == 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from vlm2geovec.corpus import build_corpus_index, index_from_parts, open_source, parse_shard

    params = _index_params(args)
    try:
        shard = parse_shard(args.shard)
        scale = args.scale if args.scale in ("auto", "none") else _parse_numbers(args.scale, "--scale", count=2)
        source = open_source(args.input, split=args.split, config=args.config,
                             item_columns=args.item_columns.split(",") if args.item_columns else None,
                             tile_size=args.tile_size, stride=args.stride, bands=_parse_numbers(args.bands, "--bands", int),
                             max_nodata=args.max_nodata, scale=None if scale == "none" else scale, edge=args.edge,
                             embed_coords=args.embed_coords)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    device = args.device
    if device is None and shard[1] > 1 and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    model = _load_for_encoding(args, device)
    try:
        index = build_corpus_index(model, source, args.out, kind=args.kind, shard=shard, chunk_size=args.chunk_size,
                                   batch_size=args.batch_size, instruction=args.instruction, model_name=args.model,
                                   show_progress_bar=not args.quiet, **params)
        if index is None:  # one shard of several
            if args.shard != "auto" or "MASTER_ADDR" not in os.environ:
                print(f"embedded shard {shard[0]}/{shard[1]} into {args.out}/parts; when every shard is done: "
                      f"vlm2geovec index merge --out {args.out}")
                return 0
            if not _distributed_barrier():  # torchrun/accelerate: rank 0 merges once every rank is done
                return 0
            index = index_from_parts(args.out, kind=args.kind, build_info={"model": args.model}, **params)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {index!r} to {args.out}")
    return 0


def _cmd_index_merge(args: argparse.Namespace) -> int:
    from vlm2geovec.corpus import index_from_parts

    try:
        index = index_from_parts(args.out, kind=args.kind, build_info={"model": args.model}, **_index_params(args))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {index!r} to {args.out}")
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    from vlm2geovec.index import VectorIndex

    try:
        print(json.dumps(VectorIndex.load(args.index).info(), indent=2))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    return 0


def _cmd_index_export(args: argparse.Namespace) -> int:
    from vlm2geovec.index import VectorIndex

    try:
        index = VectorIndex.load(args.index)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    path = index.export_parquet(args.to)
    print(f"wrote {len(index)} vectors of dimension {index.dim} with their metadata to {path}")
    return 0


def search_query_item(text: str | None = None, image: str | None = None, bbox: Sequence[float] | None = None,
                      coords: Sequence[float] | None = None, item: str | None = None, allow_none: bool = False) -> Any:
    """The query item of `vlm2geovec search`: a JSON item (``--item``, or ``@file.json``), or the given parts
    (None when nothing is given and `allow_none`)."""
    if item is not None:
        if any(v is not None for v in (text, image, bbox, coords)):
            raise ValueError("--item is a whole query: do not combine it with --query, --image, --bbox or --coords")
        raw = Path(item[1:]).read_text(encoding="utf-8") if item.startswith("@") else item
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"--item is not valid JSON: {error}") from None
    if bbox is not None and image is None:
        raise ValueError("--bbox marks a region of --image: give the image too")
    parts = {"image": image, "bbox": list(bbox) if bbox else None,
             "coords": list(coords) if coords else None, "text": text}
    parts = {k: v for k, v in parts.items() if v is not None}
    if not parts and allow_none:
        return None
    if not parts:
        raise ValueError("give a query: --query TEXT, --image PATH [--bbox x1,y1,x2,y2], --coords LAT,LON, --item JSON "
                         "or --queries FILE.jsonl")
    return parts["text"] if list(parts) == ["text"] else parts


def _cmd_search(args: argparse.Namespace) -> int:
    from vlm2geovec import load_model
    from vlm2geovec.corpus import read_items_jsonl
    from vlm2geovec.index import VectorIndex, model_fingerprint
    from processing_vlm2geovec import normalize_item

    try:
        index = VectorIndex.load(args.index)
        single = search_query_item(args.query, args.image, _parse_numbers(args.bbox, "--bbox", count=4),
                                   _parse_numbers(args.coords, "--coords", count=2), args.item,
                                   allow_none=args.queries is not None)
        if single is not None and args.queries is not None:
            raise ValueError("--queries FILE is a batch of queries: do not combine it with a single query")
        items = [single] if single is not None else read_items_jsonl(args.queries)
        for n, item in enumerate(items):
            normalize_item(item, "query" if single is not None else f"{args.queries}: query {n + 1}")
        if args.ef_search is not None:
            index.set_search_params(ef_search=args.ef_search)
        if args.nprobe is not None:
            index.set_search_params(nprobe=args.nprobe)
        allowed = None
        if args.region is not None:
            allowed = index.ids_within(*_parse_numbers(args.region, "--region", count=4))
            if len(allowed) == 0:
                raise ValueError(f"no indexed vector has coordinates inside the region {args.region} (S,W,N,E)")
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    model_path = args.model or index.build_info.get("model")
    if not model_path:
        raise SystemExit("error: the index does not name its model: pass --model")
    model = load_model(model_path, device=args.device)
    if index.fingerprint and model_fingerprint(model) != index.fingerprint:
        raise SystemExit(f"error: {model_path} is not the model this index was built with (weights fingerprint "
                         f"differs): its vectors would not be comparable")
    vectors = model.encode(items, prompt=args.instruction, convert_to_numpy=True, normalize_embeddings=True,
                           show_progress_bar=len(items) > 1 and not args.json)
    try:
        scores, ids, metas = index.search(vectors, min(args.k, len(index)), allowed_ids=allowed)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    results = [[{"rank": r + 1, "score": round(float(s), 6), "position": int(i), **(m or {})}
                for r, (s, i, m) in enumerate(zip(row_scores, row_ids, row_metas)) if i >= 0]
               for row_scores, row_ids, row_metas in zip(scores, ids, metas)]
    if args.json:
        print(json.dumps(results[0] if single is not None else results, ensure_ascii=False, indent=2))
        return 0
    for n, hits in enumerate(results):
        if single is None:
            print(f"query {n + 1}")
        for hit in hits:
            where = f"  lat {hit['lat']:.5f} lon {hit['lon']:.5f}" if "lat" in hit and "lon" in hit else ""
            window = f"  window {hit['window']}" if hit.get("window") else ""
            print(f"{hit['rank']:>3}  {hit['score']:.4f}  {hit.get('id', hit['position'])}{where}{window}")
    return 0


BENCHMARKS = ("encode", "train", "search")


def _cmd_bench(args: argparse.Namespace) -> int:
    """Run `bench/<name>.py` of the source checkout this package is installed from (benchmarks are scripts
    that append to the repository's bench/RESULTS.md, so they live in the repository, not in the wheel)."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "bench" / f"{args.name}.py"
    if not script.is_file():
        raise SystemExit("error: the benchmarks ship with the source repository, not the installed package: "
                         "clone it and `pip install -e .` to run `vlm2geovec bench`")
    spec = importlib.util.spec_from_file_location(f"vlm2geovec_bench_{args.name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(args.args)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from vlm2geovec_train.recipe import TrainConfig, train

    config = TrainConfig.from_yaml(args.config, model=args.model, data=args.data, max_steps=args.max_steps,
                                   loss=args.loss, batch_size=args.batch_size, seed=args.seed)
    train(config, args.out, resume_from_checkpoint=args.resume)
    print(f"wrote the trained model to {args.out}")
    return 0


def _cmd_train_data(args: argparse.Namespace) -> int:
    from vlm2geovec_train.converters import convert_geochat, convert_public

    if args.source == "geochat":
        if not args.images:
            raise SystemExit("error: --source geochat needs --raw GeoChat_Instruct.json and --images IMAGE_DIR")
        result = convert_geochat(args.raw, args.images, args.out, on_error=args.on_error, seed=args.seed,
                                 if_exists=args.if_exists)
    else:
        result = convert_public(args.source, args.raw, args.out, on_error=args.on_error, seed=args.seed,
                                if_exists=args.if_exists)
    for problem in result.report.problems:
        print(f"skipped {problem.file}:{problem.row}: {problem.reason}")
    print(f"wrote training data for {', '.join(sorted(result.tasks))} to {args.out}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from vlm2geovec_train.quickstart import quickstart

    quickstart(args.out, max_steps=args.max_steps, tasks=args.tasks or None, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm2geovec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    nano = sub.add_parser("nano", help="build the offline default: a small random Qwen2-VL-architecture embedder")
    nano.add_argument("--out", required=True, help="output folder")
    nano.add_argument("--seed", type=int, default=0, help="initialisation seed (same seed, same weights)")
    nano.set_defaults(func=_cmd_nano)

    convert = sub.add_parser("convert", help="turn a Qwen2-VL checkpoint into a VLM2GeoVec checkpoint")
    convert.add_argument("--backbone", required=True, help="Hub id or local folder of a Qwen2-VL checkpoint")
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--pooling", choices=["last", "mean"], default="last")
    convert.add_argument("--no-normalize", action="store_true", help="do not L2-normalise embeddings")
    convert.add_argument("--embedding-dim", type=int, default=None, help="Matryoshka truncation")
    convert.add_argument("--max-pixels", type=int, default=None, help="per-image pixel budget")
    convert.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the checkpoint's)")
    convert.add_argument("--revision", default=None, help="Hub revision of the backbone")
    convert.set_defaults(func=_cmd_convert)

    embed = sub.add_parser("embed", help="embed a JSONL file of items into a .npy matrix")
    embed.add_argument("--model", required=True, help="VLM2GeoVec folder or Hub id")
    embed.add_argument("--input", required=True, help="JSONL, one item per line; image paths relative to it")
    embed.add_argument("--out", required=True, help="output .npy (float32, one row per line)")
    embed.add_argument("--instruction", default=None, help="instruction (task prompt) for every item")
    embed.add_argument("--prompt-name", default=None, help="a saved prompt instead: query or document")
    embed.add_argument("--batch-size", type=int, default=16)
    embed.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_preprocess_args(embed)
    embed.set_defaults(func=_cmd_embed)

    train = sub.add_parser("train", help="contrastive training with the sentence-transformers Trainer")
    train.add_argument("--config", required=True, help="YAML, e.g. train/configs/nano.yaml")
    train.add_argument("--out", required=True)
    train.add_argument("--model", default=None, help="override: model folder or Hub id")
    train.add_argument("--data", default=None, help="override: RSMEB dataset folder with a train split")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--loss", choices=["mnrl", "cached_mnrl"], default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    train.set_defaults(func=_cmd_train)

    data = sub.add_parser("train-data", help="convert a raw public dataset or GeoChat-Instruct into training data")
    data.add_argument("--source", required=True, help="geochat, or an RSMEB source: eurosat, rsicd, dior-rsvg, ...")
    data.add_argument("--raw", required=True, help="the dataset as distributed (GeoChat: the JSON file)")
    data.add_argument("--images", default=None, help="GeoChat: the unzipped image folder")
    data.add_argument("--out", required=True, help="RSMEB-format folder for `vlm2geovec train --data`")
    data.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    data.add_argument("--if-exists", choices=["error", "overwrite", "merge"], default="error")
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=_cmd_train_data)

    quick = sub.add_parser("quickstart", help="nano + RSMEB-lite: evaluate, train, evaluate, report")
    quick.add_argument("--out", required=True)
    quick.add_argument("--max-steps", type=int, default=None, help="default: the nano recipe's")
    quick.add_argument("--tasks", nargs="*", default=None, help="RSMEB-lite tasks (default: all)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_cmd_quickstart)

    _add_index_parsers(sub)

    bench = sub.add_parser("bench", help="run a benchmark script (encode, train, search); --help after the name")
    bench.add_argument("name", choices=BENCHMARKS)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the script's own options, e.g. --quick --json OUT")
    bench.set_defaults(func=_cmd_bench)

    from rsmeb_eval.cli import add_rsmeb_parser

    add_rsmeb_parser(sub)
    return parser


def _add_index_kind_args(parser: argparse.ArgumentParser) -> None:
    from vlm2geovec.index import AUTO_EXACT_BELOW, DEFAULT_PARAMS, KINDS

    hnsw, ivf = DEFAULT_PARAMS["hnsw"], DEFAULT_PARAMS["ivf"]
    parser.add_argument("--kind", choices=["auto", *KINDS], default="auto",
                        help=f"auto: exact below {AUTO_EXACT_BELOW:,} vectors, else HNSW")
    parser.add_argument("--M", type=int, default=None, help=f"HNSW graph degree (default {hnsw['M']})")
    parser.add_argument("--ef-construction", type=int, default=None,
                        help=f"HNSW build effort (default {hnsw['ef_construction']})")
    parser.add_argument("--ef-search", type=int, default=None, help=f"HNSW search effort (default {hnsw['ef_search']})")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default ~4 sqrt(n))")
    parser.add_argument("--nprobe", type=int, default=None, help=f"IVF lists searched (default {ivf['nprobe']})")


def _add_index_parsers(sub) -> None:
    index = sub.add_parser("index", help="build and inspect a vector index of a corpus")
    index_sub = index.add_subparsers(dest="index_command", required=True)

    build = index_sub.add_parser("build", help="embed a corpus (JSONL, HF dataset or raster tiles) into an index")
    build.add_argument("--model", required=True, help="VLM2GeoVec folder or Hub id")
    build.add_argument("--input", required=True,
                       help="items.jsonl, a raster (.tif/.tiff/.vrt/.img/.jp2), a save_to_disk folder, a local "
                            "dataset folder or a Hub dataset id")
    build.add_argument("--out", required=True, help="index folder (also holds parts/ for resuming and shards)")
    _add_index_kind_args(build)
    build.add_argument("--shard", default=None,
                       help="i/n: embed only shard i of n (merge later with `index merge`); auto: torchrun/accelerate "
                            "ranks, merged by rank 0")
    build.add_argument("--chunk-size", type=int, default=1024, help="positions per resumable chunk")
    build.add_argument("--batch-size", type=int, default=16)
    build.add_argument("--instruction", default=None, help="instruction (prompt) for every corpus item")
    build.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_preprocess_args(build)
    data = build.add_argument_group("datasets")
    data.add_argument("--split", default=None, help="dataset split (default: the only one, or train for Hub ids)")
    data.add_argument("--config", default=None, help="dataset config, e.g. an RSMEB <task>-corpus")
    data.add_argument("--item-columns", default=None, help="comma-separated, among image,text,bbox,lat,lon "
                                                           "(default: all present)")
    raster = build.add_argument_group("rasters")
    raster.add_argument("--tile-size", type=int, default=256, help="tile width and height in pixels")
    raster.add_argument("--stride", type=int, default=None, help="step between tiles (default: tile size)")
    raster.add_argument("--bands", default=None, help="1-based bands, e.g. 4,3,2 (default: 1,2,3 or 1)")
    raster.add_argument("--max-nodata", type=float, default=0.5, help="skip tiles with more nodata than this share")
    raster.add_argument("--scale", default="auto", help="auto (2-98 percentile stretch), none (uint8) or LOW,HIGH")
    raster.add_argument("--edge", choices=["drop", "pad"], default="drop", help="partial tiles at the edges")
    raster.add_argument("--embed-coords", action="store_true", help="embed each tile as image + centre coordinates")
    build.set_defaults(func=_cmd_index_build)

    merge = index_sub.add_parser("merge", help="build the index from the parts of finished shards")
    merge.add_argument("--out", required=True, help="the folder the shards embedded into")
    merge.add_argument("--model", default=None, help="record this model for `search` (default: give --model there)")
    _add_index_kind_args(merge)
    merge.set_defaults(func=_cmd_index_merge)

    export = index_sub.add_parser("export", help="write vectors + metadata to Parquet (for vector databases)")
    export.add_argument("index")
    export.add_argument("--to", required=True, help="output .parquet file")
    export.set_defaults(func=_cmd_index_export)

    info = index_sub.add_parser("info", help="print an index's index.json")
    info.add_argument("index")
    info.set_defaults(func=_cmd_index_info)

    search = sub.add_parser("search", help="search an index with a text, image, image+box, coordinates or JSON item")
    search.add_argument("--index", required=True)
    search.add_argument("--query", default=None, help="query text (alone, or with --image / --coords)")
    search.add_argument("--image", default=None, help="query image path")
    search.add_argument("--bbox", default=None, help="x1,y1,x2,y2 in pixels of --image")
    search.add_argument("--coords", default=None, help="LAT,LON in degrees")
    search.add_argument("--item", default=None, help="a whole JSON item, or @file.json")
    search.add_argument("--queries", default=None, help="a JSONL file of queries (one item per line): a batch")
    search.add_argument("--region", default=None,
                        help="S,W,N,E in degrees: only vectors whose lat/lon lie inside (west > east crosses 180°)")
    search.add_argument("-k", type=int, default=10, help="results (default 10)")
    search.add_argument("--instruction", default=None, help="query instruction (prompt)")
    search.add_argument("--model", default=None, help="default: the model named in the index")
    search.add_argument("--ef-search", type=int, default=None, help="HNSW search effort for this query")
    search.add_argument("--nprobe", type=int, default=None, help="IVF lists searched for this query")
    search.add_argument("--device", default=None)
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(func=_cmd_search)


NUMBER_LIST_OPTIONS = ("--coords", "--bbox", "--region", "--scale")
_NUMBER_LIST = re.compile(r"^-\d[\d.eE+-]*(,-?[\d.eE+-]+)*$")


def _join_negative_number_lists(argv: Sequence[str]) -> list[str]:
    """``--coords -33.86,151.21`` -> ``--coords=-33.86,151.21``: argparse would read the value as an option."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in NUMBER_LIST_OPTIONS and i + 1 < len(args) and _NUMBER_LIST.match(args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_join_negative_number_lists(argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
