"""The `vlm2geovec` command line. Each subcommand is a thin shell over the public Python API.

    vlm2geovec nano --out DIR [--seed N] [--family qwen2_vl|qwen2_5_vl|qwen3_vl]
    vlm2geovec convert --backbone Qwen/Qwen3-VL-Embedding-2B --out DIR     (Qwen2-VL, Qwen2.5-VL, Qwen3-VL too)
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


def looks_local(path: str) -> bool:
    """Whether a model/dataset argument can only mean a local path (never a Hub id ``org/name``): it starts with
    ``.``, ``/`` or ``~``, is absolute, holds a backslash or more than one ``/``, or its first component is a local
    folder."""
    text = str(path)
    if not text or text.startswith((".", "/", "~")) or os.path.isabs(text) or "\\" in text or text.count("/") > 1:
        return True
    return "/" in text and os.path.isdir(text.split("/")[0])


def check_model_path(path: str, option: str = "--model") -> str:
    """Refuse at once a model argument that names a local folder which is not there (instead of a long Hub retry)
    or a file; return local folders as absolute resolved paths (usable from any directory), Hub ids as given."""
    text = str(path)
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        if not any(os.path.isfile(os.path.join(expanded, name)) for name in ("modules.json", "config.json")):
            raise SystemExit(f"error: {option} {text}: the folder holds no model (no modules.json or config.json)")
        return str(Path(expanded).resolve())
    if os.path.exists(expanded):
        raise SystemExit(f"error: {option} {text} is a file, not a model folder")
    if looks_local(text):
        raise SystemExit(f"error: {option} {text}: no such folder")
    return text


def _check_out_file(path: str, option: str = "--out") -> Path:
    out = Path(path)
    if out.is_dir():
        raise SystemExit(f"error: {option} {path} is a folder; give a file name")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SystemExit(f"error: {option} {path}: {parent} is a file, not a folder")
    return out


def _check_out_folder(path: str, option: str = "--out") -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: {option} {path} is an existing file, not a folder")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SystemExit(f"error: {option} {path}: {parent} is a file, not a folder")
    return out


def _positive(value: int, option: str) -> int:
    if value < 1:
        raise SystemExit(f"error: {option} must be a positive integer; got {value}")
    return value


def _cmd_nano(args: argparse.Namespace) -> int:
    from vlm2geovec.checkpoint import build_nano, save_checkpoint
    from vlm2geovec.model_card import render_model_card

    from processing_vlm2geovec import BACKBONE_FAMILIES

    model, processor = build_nano(seed=args.seed, family=args.family)
    title = BACKBONE_FAMILIES[args.family].title
    card = render_model_card(
        name=f"vlm2geovec-nano (seed {args.seed})" if args.family == "qwen2_vl" else
        f"vlm2geovec-nano (seed {args.seed}, {title} architecture)",
        base=None,
        repo=str(args.out),
        dim=f"{model.config.text_config.hidden_size}",
        training="Randomly initialised (the offline default for tests, demos and the quickstart): not trained.",
    )
    out = save_checkpoint(model, processor, args.out, model_card=card)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote nano VLM2GeoVec ({title} architecture, {n_params / 1e6:.1f} M parameters, seed {args.seed}) to {out}")
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
        source_pipeline=args.source_pipeline,
        revision=args.revision,
    )
    from vlm2geovec.checkpoint import read_config

    settings = json.loads((out / "processor_config.json").read_text(encoding="utf-8"))
    print(f"wrote VLM2GeoVec checkpoint converted from {args.backbone} to {out} (family "
          f"{settings.get('backbone_family')}, prompt style {settings.get('prompt_style')}, model_type "
          f"{read_config(out)['model_type']})")
    return 0


def _add_preprocess_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preprocess-workers", type=int, default=None,
                        help="look-ahead preprocessing workers (default: up to 8 on GPU, 0 on CPU)")
    parser.add_argument("--preprocess-backend", choices=["thread", "process"], default=None,
                        help="run them as threads (default) or spawned processes")
    _add_image_scale_arg(parser, "the model's processor setting (auto unless saved otherwise)")


def _add_image_scale_arg(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--image-scale", default=None, metavar="auto|none|LOW,HIGH",
                        help="16-bit and wider images: auto (2-98 percentile stretch per band), none (refuse them) "
                             f"or LOW,HIGH (a fixed range for every image); default: {default}")


def _image_scale(value: str | None):
    """``--image-scale`` -> the processor's ``image_scale`` (or None when the option is absent: keep the model's)."""
    if value is None:
        return None
    if value.strip().lower() in ("auto", "none"):
        return value.strip().lower()
    low, high = _parse_numbers(value, "--image-scale", count=2)
    if not low < high:
        raise SystemExit(f"error: --image-scale needs LOW < HIGH; got {value!r}")
    return [low, high]


def _set_image_scale(model, scale) -> None:
    if scale is not None:
        model[0].processor.image_scale = None if scale == "none" else scale


def load_model_or_exit(path: str, device: str | None = None):
    """`vlm2geovec.load_model` with a one-line error naming the model when it cannot be loaded."""
    import vlm2geovec

    if not sys.stderr.isatty():  # in a log, the weight-loading bar would be carriage-return garbage
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()
    try:
        return vlm2geovec.load_model(path, device=device)
    except (OSError, ValueError, TypeError, KeyError, ImportError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise SystemExit(f"error: cannot load the model {path}: {reason}") from None


def _load_for_encoding(args: argparse.Namespace, device: str | None):
    scale = _image_scale(args.image_scale)  # a bad value is named before minutes of loading
    model = load_model_or_exit(args.model, device=device)
    if args.preprocess_workers is not None:
        model[0].preprocess_workers = args.preprocess_workers
    if args.preprocess_backend is not None:
        model[0].preprocess_backend = args.preprocess_backend
    _set_image_scale(model, scale)
    return model


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from vlm2geovec.corpus import JsonlSource

    args.model = check_model_path(args.model)
    _positive(args.batch_size, "--batch-size")
    out = _check_out_file(args.out)
    if not os.path.exists(args.input):
        raise SystemExit(f"error: --input {args.input}: no such file")
    try:
        source = JsonlSource.open(args.input)
        # Validate every line first (image headers only) so that a bad line 9,000 fails in a second, not after an
        # hour of encoding.
        source.check_items(max_image_pixels=16_384**2)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"error: {error}")
    items = [item for item, _ in source.records]
    model = _load_for_encoding(args, args.device)
    try:
        vectors = encode_with_progress(model, items, lambda i: source.where(i), batch_size=args.batch_size,
                                       prompt=args.instruction,
                                       prompt_name=args.prompt_name if args.instruction is None else None,
                                       show=not args.quiet)
    except ValueError as error:
        raise SystemExit(f"error: {error}")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    print(f"wrote {vectors.shape[0]} embeddings of dimension {vectors.shape[1]} to {out}")
    return 0


def encode_with_progress(model, items: list, where, batch_size: int = 16, show: bool = True, **encode_kwargs):
    """`model.encode(items)` with one progress display: sentence-transformers' bar on a terminal; in a log (stderr
    not a terminal) slices of items with a plain progress line now and then. An item error is re-raised naming
    the item by `where(position)` (e.g. its JSONL line)."""
    import numpy as np

    from vlm2geovec.corpus import progress

    step = len(items) if sys.stderr.isatty() or not show else max(batch_size * 8, 64)
    parts = []
    with progress(len(items), "encoding", unit="items", enabled=show and step < len(items)) as bar:
        for start in range(0, len(items), step):
            block = items[start : start + step]
            try:
                parts.append(np.asarray(model.encode(block, batch_size=batch_size, convert_to_numpy=True,
                                                     show_progress_bar=show and step == len(items), **encode_kwargs)))
            except (ValueError, TypeError) as error:
                match = re.match(r"^inputs\[(\d+)\](.*)$", str(error), re.S)
                if not match or int(match.group(1)) >= len(block):
                    raise ValueError(str(error)) from None
                raise ValueError(f"{where(start + int(match.group(1)))}: item{match.group(2)}") from None
            bar.update(len(block))
    return np.concatenate(parts)


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


def _ray_engine_options(args: argparse.Namespace) -> dict | None:
    """The Ray engine's arguments (None for the local engine); options that need Ray are refused without it."""
    if args.engine != "ray":
        given = [name for name, value in (("--address", args.address), ("--replicas", args.replicas),
                                          ("--gpus-per-replica", args.gpus_per_replica)) if value is not None]
        if given:
            raise SystemExit(f"error: {given[0]} needs --engine ray")
        return None
    replicas = 1 if args.replicas is None else _positive(args.replicas, "--replicas")
    gpus = 0.0 if args.gpus_per_replica is None else args.gpus_per_replica
    if not gpus >= 0:
        raise SystemExit(f"error: --gpus-per-replica must be >= 0; got {gpus}")
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise SystemExit("error: --engine ray needs Ray Data: pip install 'vlm2geovec[ray]'") from None
    return {"replicas": replicas, "gpus_per_replica": gpus, "address": args.address}


def _index_from_export(args: argparse.Namespace, model_path: str, params: dict, ray_options: dict | None) -> int:
    """``index build --input export.parquet``: the exported vectors and metadata become an index again, after the
    model is checked to be the one that made them (so `search` with it compares like with like)."""
    from vlm2geovec.geoparquet import index_from_geoparquet
    from vlm2geovec.index import fingerprint_mismatch

    if ray_options is not None or args.shard is not None:
        raise SystemExit(f"error: {args.input} holds vectors already: --engine ray and --shard do not apply")
    model = load_model_or_exit(model_path, device="cpu")
    try:
        index = index_from_geoparquet(args.input, model_name=model_path, kind=args.kind, **params)
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}")
    mismatch = fingerprint_mismatch(index.fingerprint, model, model_path)
    if mismatch:
        raise SystemExit(f"error: {args.input}: {mismatch.replace('this index was', 'these vectors were')}")
    index.save(args.out)
    print(f"wrote {index!r} to {args.out} (vectors read from {args.input}, nothing embedded)")
    return 0


def _cmd_index_build(args: argparse.Namespace) -> int:
    from vlm2geovec.corpus import JsonlSource, RasterSource, build_corpus_index, index_from_parts, open_source, parse_shard

    model_path = check_model_path(args.model)
    _check_out_folder(args.out)
    _positive(args.chunk_size, "--chunk-size")
    _positive(args.batch_size, "--batch-size")
    params = _index_params(args)
    ray_options = _ray_engine_options(args)
    if str(args.input).lower().endswith(".parquet") and os.path.isfile(args.input):
        from vlm2geovec.geoparquet import file_record

        try:
            record = file_record(args.input)
        except ValueError as error:
            raise SystemExit(f"error: {error}")
        if record is not None:  # vectors exported by `index export`: index them again, nothing to embed
            return _index_from_export(args, model_path, params, ray_options)
    try:
        shard = parse_shard(args.shard)
        if ray_options is not None and shard[1] > 1:
            raise ValueError("--shard does not apply to --engine ray: Ray spreads the chunks over its workers itself")
        scale = args.scale if args.scale in ("auto", "none") else _parse_numbers(args.scale, "--scale", count=2)
        source = open_source(args.input, split=args.split, config=args.config,
                             item_columns=args.item_columns.split(",") if args.item_columns else None,
                             tile_size=args.tile_size, stride=args.stride, bands=_parse_numbers(args.bands, "--bands", int),
                             max_nodata=args.max_nodata, scale=None if scale == "none" else scale, edge=args.edge,
                             embed_coords=args.embed_coords)
        if isinstance(source, JsonlSource):  # every line checked before the model loads
            source.check_items()
        if ray_options is not None and not isinstance(source, (JsonlSource, RasterSource)):
            raise ValueError(f"--engine ray embeds JSONL files and rasters; {args.input} is a dataset: use the local "
                             "engine, or vlm2geovec.ray_engine.embed_dataset on ray.data.read_parquet(...)")
    except (ValueError, TypeError, OSError) as error:
        raise SystemExit(f"error: {error}")
    device = args.device
    if device is None and shard[1] > 1 and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    args.model = model_path
    model = _load_for_encoding(args, device)
    try:
        if ray_options is not None:
            from vlm2geovec.ray_engine import build_index_ray

            scale = _image_scale(args.image_scale)
            index = build_index_ray(model, model_path, source, args.out, kind=args.kind, chunk_size=args.chunk_size,
                                    batch_size=args.batch_size, instruction=args.instruction,
                                    image_scale="keep" if scale is None else (None if scale == "none" else scale),
                                    show_progress_bar=not args.quiet, **ray_options, **params)
            print(f"wrote {index!r} to {args.out}")
            return 0
        # the index records the model as an absolute path (local folders), so `search` works from any directory
        index = build_corpus_index(model, source, args.out, kind=args.kind, shard=shard, chunk_size=args.chunk_size,
                                   batch_size=args.batch_size, instruction=args.instruction, model_name=model_path,
                                   show_progress_bar=not args.quiet, **params)
        if index is None:  # one shard of several
            if args.shard != "auto" or "MASTER_ADDR" not in os.environ:
                print(f"embedded shard {shard[0]}/{shard[1]} into {args.out}/parts; when every shard is done: "
                      f"vlm2geovec index merge --out {args.out}")
                return 0
            if not _distributed_barrier():  # torchrun/accelerate: rank 0 merges once every rank is done
                return 0
            index = index_from_parts(args.out, kind=args.kind, build_info={"model": model_path}, **params)
    except (ValueError, TypeError) as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {index!r} to {args.out}")
    return 0


def _cmd_index_merge(args: argparse.Namespace) -> int:
    from vlm2geovec.corpus import index_from_parts

    model = check_model_path(args.model) if args.model is not None else None
    _check_out_folder(args.out)
    try:
        index = index_from_parts(args.out, kind=args.kind, build_info={"model": model}, **_index_params(args))
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}")
    print(f"wrote {index!r} to {args.out}")
    return 0


def _cmd_index_info(args: argparse.Namespace) -> int:
    from vlm2geovec.index import VectorIndex

    try:
        print(json.dumps(VectorIndex.load(args.index).info(), indent=2))
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}")
    return 0


def _cmd_index_export(args: argparse.Namespace) -> int:
    from vlm2geovec.index import VectorIndex

    to = _check_out_file(args.to, "--to")
    geo = args.quantize is not None or args.stac is not None or args.format == "geoparquet"
    if geo:
        try:
            from vlm2geovec.geoparquet import export_geoparquet, parse_quantize

            quantize = parse_quantize(args.quantize)
        except (ImportError, ValueError) as error:
            raise SystemExit(f"error: {error}")
    if args.stac is not None and Path(args.stac).exists() and not Path(args.stac).is_dir():
        raise SystemExit(f"error: --stac {args.stac} is a file, not a folder")
    try:
        index = VectorIndex.load(args.index)
    except (ValueError, OSError) as error:
        raise SystemExit(f"error: {error}")
    if not geo:
        path = index.export_parquet(to)
        print(f"wrote {len(index)} vectors of dimension {index.dim} with their metadata to {path}")
        return 0
    try:
        path = export_geoparquet(index, to, quantize=quantize)
        print(f"wrote GeoParquet: {len(index)} {quantize or 'float32'} vectors of dimension {index.dim} with "
              f"footprints and metadata to {path}")
        if args.stac is not None:
            from vlm2geovec.stac import write_stac

            collection = write_stac(path, args.stac)
            print(f"wrote a STAC collection ({collection}) to {args.stac}")
    except (ImportError, ValueError, OSError) as error:
        raise SystemExit(f"error: {error}")
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
    from vlm2geovec.corpus import read_items_jsonl
    from vlm2geovec.index import VectorIndex, fingerprint_mismatch, preprocessing_mismatch
    from processing_vlm2geovec import normalize_item

    _positive(args.k, "-k")
    _image_scale(args.image_scale)  # named before the model loads
    model_path = check_model_path(args.model) if args.model is not None else None
    try:
        index = VectorIndex.load(args.index)
        single = search_query_item(args.query, args.image, _parse_numbers(args.bbox, "--bbox", count=4),
                                   _parse_numbers(args.coords, "--coords", count=2), args.item,
                                   allow_none=args.queries is not None)
        if single is not None and args.queries is not None:
            raise ValueError("--queries FILE is a batch of queries: do not combine it with a single query")
        if single is None and not os.path.isfile(args.queries):
            raise ValueError(f"--queries {args.queries}: no such file")
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
    except (ValueError, TypeError, OSError) as error:
        raise SystemExit(f"error: {error}")
    if model_path is None:
        named = index.build_info.get("model")
        if not named:
            raise SystemExit(f"error: {args.index}/index.json names no model (field build.model): pass --model")
        if looks_local(named) and not os.path.isdir(os.path.expanduser(named)):
            raise SystemExit(f"error: {args.index}/index.json names the model {named}, which is not there (no such "
                             "folder): pass --model")
        model_path = check_model_path(named, option="the index's model")
    model = load_model_or_exit(model_path, device=args.device)
    mismatch = fingerprint_mismatch(index.fingerprint, model, model_path)
    recorded = index.build_info.get("preprocessing") or {}
    # query images are read as the corpus' were, unless asked otherwise
    scale = _image_scale(args.image_scale)
    if scale is None and "image_scale" in recorded:
        scale = "none" if recorded["image_scale"] is None else recorded["image_scale"]
    _set_image_scale(model, scale)
    mismatch = mismatch or preprocessing_mismatch(recorded, model, model_path, ignore=("image_scale",))
    if mismatch:
        raise SystemExit(f"error: {mismatch}")
    try:
        vectors = encode_with_progress(model, items, lambda n: "query" if single is not None else
                                       f"{args.queries}: query {n + 1}", show=len(items) > 1 and not args.json,
                                       prompt=args.instruction, normalize_embeddings=True)
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


def _cmd_export_vllm(args: argparse.Namespace) -> int:
    from vlm2geovec.vllm_export import export_for_vllm

    out = export_for_vllm(check_model_path(args.model), args.out)
    print(f"wrote a vLLM-servable copy of {args.model} to {out} (native transformers class, last-token pooling, "
          f"normalised); serve it with: vllm serve {out} --runner pooling")
    return 0


BENCHMARKS = ("encode", "packed", "train", "search", "assets")


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
    from vlm2geovec_train.quickstart import quickstart, quickstart_seeds

    if args.seeds:
        quickstart_seeds(args.out, args.seeds, max_steps=args.max_steps, tasks=args.tasks or None, family=args.family,
                         data_dir=args.data, preset=args.preset)
    else:
        quickstart(args.out, max_steps=args.max_steps, tasks=args.tasks or None, seed=args.seed, family=args.family,
                   data_dir=args.data, preset=args.preset)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error ends in the same one ``error: ...`` line as every other CLI error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vlm2geovec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from processing_vlm2geovec import BACKBONE_FAMILIES
    from vlm2geovec_train.quickstart import PRESETS  # light: no torch until a quickstart runs

    families = sorted(BACKBONE_FAMILIES)
    nano = sub.add_parser("nano", help="build the offline default: a small random Qwen-VL-architecture embedder")
    nano.add_argument("--out", required=True, help="output folder")
    nano.add_argument("--seed", type=int, default=0, help="initialisation seed (same seed, same weights)")
    nano.add_argument("--family", choices=families, default="qwen2_vl",
                      help="backbone family: its architecture, tokenizer, image processing and box form")
    nano.set_defaults(func=_cmd_nano)

    convert = sub.add_parser("convert", help="turn a Qwen-VL checkpoint into a VLM2GeoVec checkpoint")
    convert.add_argument("--backbone", required=True,
                         help="Hub id or local folder of a Qwen2-VL, Qwen2.5-VL, Qwen3-VL or Qwen3-VL-Embedding "
                              "checkpoint (the family is read from its config.json)")
    convert.add_argument("--source-pipeline", choices=["auto", "generative", "qwen3_vl_embedding"], default="auto",
                         help="how the source embeds: auto detects Qwen3-VL-Embedding checkpoints and keeps their "
                              "instruction format and pooled token")
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
    quick.add_argument("--max-steps", type=int, default=None, help="default: the preset's")
    quick.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                       help="quick: 1,000 steps, under 10 minutes a seed on 2 idle cores; full: 4,000 steps (about 20 "
                            "minutes a seed), the settings behind docs/quickstart/full")
    quick.add_argument("--tasks", nargs="*", default=None, help="RSMEB-lite tasks (default: all)")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--family", choices=families, default="qwen2_vl", help="backbone family of the nano model")
    quick.add_argument("--data", default=None, help="an RSMEB-lite folder to use (default: OUT/rsmeb-lite, built once)")
    quick.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                       help="one run per seed (OUT/seed-<s>), with OUT/summary.json and a mean/range report")
    quick.set_defaults(func=_cmd_quickstart)

    _add_index_parsers(sub)

    export = sub.add_parser("export", help="export a checkpoint for another engine")
    export_sub = export.add_subparsers(dest="export_target", required=True)
    vllm = export_sub.add_parser("vllm", help="a folder vLLM serves with --runner pooling, giving our vectors")
    vllm.add_argument("--model", required=True, help="VLM2GeoVec folder (or Hub id)")
    vllm.add_argument("--out", required=True, help="output folder")
    vllm.set_defaults(func=_cmd_export_vllm)

    bench = sub.add_parser("bench", help="run a benchmark script (encode, packed, train, search, assets); --help after the name")
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
                            "dataset folder, a Hub dataset id, or a GeoParquet file of `index export` (indexed again)")
    build.add_argument("--out", required=True, help="index folder (also holds parts/ for resuming and shards)")
    _add_index_kind_args(build)
    build.add_argument("--shard", default=None,
                       help="i/n: embed only shard i of n (merge later with `index merge`); auto: torchrun/accelerate "
                            "ranks, merged by rank 0")
    build.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process (or --shard / torchrun); ray: an actor pool of model replicas on a Ray "
                            "cluster (pip install 'vlm2geovec[ray]'), same chunks and result")
    build.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray instance)")
    build.add_argument("--replicas", type=int, default=None, help="model replicas for --engine ray (default 1)")
    build.add_argument("--gpus-per-replica", type=float, default=None, help="GPUs per replica for --engine ray (default 0)")
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
    raster.add_argument("--bands", default=None, help="1-based bands, e.g. 4,3,2 (default: the bands marked red/green/blue, else 1,2,3 of a 3-band or 1 of a 1-band raster; others must name them)")
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
    export.add_argument("--format", choices=["geoparquet", "parquet"], default="geoparquet",
                        help="geoparquet (default): GeoParquet 1.1 with footprints in EPSG:4326 (pip install "
                             "'vlm2geovec[geoparquet]'); parquet: plain vectors + metadata")
    export.add_argument("--quantize", default=None, metavar="int8|binary",
                        help="store int8 (one scale) or binary (sign bits) vectors; recorded in the file metadata")
    export.add_argument("--stac", default=None, metavar="DIR", help="also write a STAC Collection + Items to DIR")
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
    _add_image_scale_arg(search, "the one the index was built with")
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


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    import json as _json

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(_join_negative_number_lists(argv))
    try:
        return args.func(args)
    except SystemExit as stop:
        if isinstance(stop.code, str):  # keep every error one `error:` line (the last line of stderr)
            raise SystemExit(_one_line(stop.code)) from None
        raise
    except (ValueError, TypeError, OSError, _json.JSONDecodeError) as error:
        # the last line of defence: every raise site names its file, line or field; never a traceback
        message = _one_line(str(error)) or type(error).__name__
        raise SystemExit(f"error: {message}") from None


if __name__ == "__main__":
    sys.exit(main())
