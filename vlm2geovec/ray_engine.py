"""Embed corpora with Ray Data: model replicas in an actor pool, on one machine or a cluster (``pip install
'vlm2geovec[ray]'``).

    import ray
    from vlm2geovec.ray_engine import embed_dataset, raster_windows

    ds = ray.data.read_parquet("s3://bucket/items/")                # rows in the RSMEB item layout
    embed_dataset(ds, "ckpt", replicas=8, gpus_per_replica=1).write_parquet("s3://bucket/vectors/")

    tiles = raster_windows("scene.tif", tile_size=256)              # one row per tile window, no pixels
    embed_dataset(tiles, "ckpt", raster_options={"tile_size": 256}).write_parquet("out/")

Rows come in three layouts, told apart by their columns:

* **RSMEB items**: ``image`` (encoded bytes, a path, or a ``{"bytes", "path"}`` struct), ``text``, ``bbox``,
  ``lat``, ``lon`` (each optional), as `datasets` writes them;
* **JSONL records**: ``item`` holding one JSONL line's item as JSON text (see `vlm2geovec.corpus.read_jsonl_records`);
* **raster windows**: ``raster`` (a path or GDAL URL every worker can read) and ``position`` (the tile-grid position
  of `vlm2geovec.geotiff.GeoTiffTiler`): the workers open the raster and cut the tile, so only window numbers
  travel through the object store, never pixels. A tile whose nodata share is above ``max_nodata`` gives no row.

The result has the input's columns plus ``embedding`` (a float32 vector per row); raster rows also get the tile's
``id``, ``lat``, ``lon``, ``window`` and its full index ``metadata`` (JSON). Each replica loads the model from its
path and checks its weights fingerprint, so every worker embeds with the same weights and processor settings.

`build_index_ray` is ``vlm2geovec index build --engine ray``: the same chunk files, manifest and content digests
as the local build (`vlm2geovec.corpus.embed_chunks`), so a Ray run and a local run resume each other, a rerun
skips finished chunks and re-embeds only chunks whose input changed, and the merged index is the one the local
build gives.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

EMBEDDING_COLUMN = "embedding"
_MARK = "vlm2geovec item error: "  # how an item error crosses Ray's exception wrapping intact


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the Ray engine needs Ray Data: pip install 'vlm2geovec[ray]'") from error
    return ray


def init_ray(address: str | None = None):
    """Connect to the Ray cluster at `address` (``auto``, ``ray://host:10001``, ``host:6379``), or start a local
    instance without the dashboard when there is none; a session already connected is reused."""
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    return ray


def raster_windows(path: str | os.PathLike, *, tile_size: int = 256, stride: int | None = None,
                   edge: str = "drop"):
    """A `ray.data.Dataset` of a raster's tile windows: rows ``{"raster": path, "position": p}`` for every grid
    position of `GeoTiffTiler(path, tile_size, stride, edge=edge)`; give `embed_dataset` the same `raster_options`."""
    from vlm2geovec.geotiff import GeoTiffTiler

    ray = _ray()
    with GeoTiffTiler(path, size=tile_size, stride=stride, edge=edge, scale=(0.0, 1.0), bands=(1,)) as tiler:
        count = len(tiler)  # (scale and bands do not change the grid; these skip the stretch estimate)
    return ray.data.from_items([{"raster": str(path), "position": p} for p in range(count)])


class ItemEmbedder:
    """A Ray Data actor: one model replica that turns a batch of rows into the same rows plus ``embedding``.

    Args:
        model (`str`): checkpoint folder (or Hub id) every worker can load.
        instruction (`str`, *optional*): prompt for every item, as ``index build --instruction``.
        batch_size (`int`, defaults to 16): items per forward pass.
        device (`str`, *optional*): ``cpu``, ``cuda`` ... (default: the best the worker has).
        image_scale (*optional*): the processor's ``image_scale`` (``"auto"``, None for none, or ``[low, high]``);
            default: the checkpoint's own.
        fingerprint (`str`, *optional*): the weights fingerprint the driver expects (`model_fingerprint`); a replica
            that loads other weights refuses to run.
        raster_options (`dict`, *optional*): for raster rows: ``tile_size``, ``stride``, ``bands``, ``max_nodata``,
            ``edge``, ``scale`` (``(low, high)``, None, or the per-band limits the driver's tiler computed),
            ``embed_coords``.
        keep_skipped (`bool`, defaults to False): keep nodata tiles as rows with ``skipped`` = True (the index build
            counts them to know a chunk is complete).
        threads (`int`, *optional*): torch threads of this replica (its CPU share).
    """

    def __init__(self, model: str, *, instruction: str | None = None, batch_size: int = 16, device: str | None = None,
                 image_scale: Any = "keep", fingerprint: str | None = None, raster_options: dict | None = None,
                 keep_skipped: bool = False, threads: int | None = None):
        import torch

        from vlm2geovec import load_model
        from vlm2geovec.index import model_fingerprint

        if threads:
            torch.set_num_threads(int(threads))
        self.model = load_model(model, device=device)
        if image_scale != "keep":
            self.model[0].processor.image_scale = image_scale
        if fingerprint is not None and model_fingerprint(self.model) != fingerprint:
            raise ValueError(f"{model} on this Ray worker holds other weights than the driver's model (weights "
                             "fingerprint differs): give every node the same checkpoint")
        self.instruction, self.batch_size = instruction, batch_size
        self.raster_options = dict(raster_options or {})
        self.keep_skipped = keep_skipped
        self._tilers: dict[str, Any] = {}

    def _tiler(self, path: str):
        """One open tiler per raster per replica; the stretch limits come from the driver when it gives them, so
        every replica maps pixel values to 8 bits exactly as the single-process build does."""
        if path not in self._tilers:
            from vlm2geovec.geotiff import GeoTiffTiler

            options = self.raster_options
            scale = options.get("scale", "auto")
            per_band = isinstance(scale, (list, tuple)) and scale and isinstance(scale[0], (list, tuple))
            tiler = GeoTiffTiler(path, size=options.get("tile_size", 256), stride=options.get("stride"),
                                 bands=options.get("bands"), max_nodata=options.get("max_nodata", 0.5),
                                 scale=(0.0, 1.0) if per_band else scale, edge=options.get("edge", "drop"))
            if per_band:  # the driver's raster-wide limits, not a second estimate
                tiler.scale = np.asarray(scale, dtype=np.float64)
            self._tilers[path] = tiler
        return self._tilers[path]

    def _raster_rows(self, batch: dict[str, np.ndarray]) -> tuple[list, list[dict | None]]:
        items, metas = [], []
        embed_coords = bool(self.raster_options.get("embed_coords"))
        for path, position in zip(batch["raster"], batch["position"]):
            tile = self._tiler(str(path)).tile(int(position))
            if tile is None:
                items.append(None)
                metas.append(None)
                continue
            items.append({"image": tile.image, "coords": (tile.lat, tile.lon)} if embed_coords else tile.image)
            metas.append(tile.metadata())
        return items, metas

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(next(iter(batch.values())))
        metas: list[dict | None] | None = None
        if "raster" in batch and "position" in batch:
            items, metas = self._raster_rows(batch)
        elif "item" in batch:
            items = [json.loads(text) for text in batch["item"]]
        else:
            from vlm2geovec.data.items import row_to_item

            items = [row_to_item({key: _plain(batch[key][i]) for key in batch}) for i in range(count)]
        present = [i for i, item in enumerate(items) if item is not None]
        dim = self.model.get_embedding_dimension()
        vectors = np.zeros((count, dim), dtype=np.float32)
        if present:
            try:
                encoded = self.model.encode([items[i] for i in present], batch_size=self.batch_size,
                                            prompt=self.instruction, convert_to_numpy=True, normalize_embeddings=True,
                                            show_progress_bar=False)
            except (ValueError, TypeError) as error:
                raise ValueError(_MARK + _name_row(str(error), batch, present)) from None
            vectors[present] = np.asarray(encoded, dtype=np.float32)
        out = dict(batch)
        out[EMBEDDING_COLUMN] = vectors
        if metas is not None:
            out["skipped"] = np.array([m is None for m in metas])
            out["metadata"] = np.array([json.dumps(m) if m else "" for m in metas], dtype=object)
            out["id"] = np.array([m["id"] if m else "" for m in metas], dtype=object)
            out["lat"] = np.array([m["lat"] if m else np.nan for m in metas], dtype=np.float64)
            out["lon"] = np.array([m["lon"] if m else np.nan for m in metas], dtype=np.float64)
            out["window"] = np.array([m["window"] if m else [0, 0, 0, 0] for m in metas], dtype=np.int64)
            if not self.keep_skipped:
                keep = ~out["skipped"]
                out = {key: value[keep] for key, value in out.items() if key != "skipped"}
        return out


def _plain(value: Any) -> Any:
    """A numpy cell of a Ray batch -> a plain Python value (`row_to_item` expects lists, dicts and None)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN: how a numpy batch holds a missing number
        return None
    return value


def _name_row(message: str, batch: dict[str, np.ndarray], present: list[int]) -> str:
    """``inputs[3]: ...`` (a position in this batch) -> the row's own name (its record id or position)."""
    match = re.match(r"^inputs\[(\d+)\](.*)$", message, re.S)
    if not match or int(match.group(1)) >= len(present):
        return message
    row = present[int(match.group(1))]
    for column in ("where", "id", "position"):
        if column in batch:
            name = _plain(batch[column][row]) if column == "where" else f"{column} {_plain(batch[column][row])!r}"
            return f"{name}: item{match.group(2)}"
    return f"row {row}: item{match.group(2)}"


def embed_dataset(dataset, model: str | os.PathLike, *, instruction: str | None = None, batch_size: int = 16,
                  replicas: int = 1, gpus_per_replica: float = 0, cpus_per_replica: float = 1,
                  device: str | None = None, image_scale: Any = "keep", raster_options: dict | None = None,
                  fingerprint: str | None = None, keep_skipped: bool = False):
    """`dataset` (a `ray.data.Dataset` of rows in one of the module's three layouts) with an ``embedding`` column,
    computed by `replicas` model replicas (`ItemEmbedder` actors, each with `gpus_per_replica` GPUs and
    `cpus_per_replica` CPUs). Lazy, as Ray Data is: nothing runs until the result is consumed (``write_parquet``,
    ``iter_batches`` ...). A replica whose process dies is restarted and its batch retried (Ray Data's actor
    fault tolerance, on by default). Row order is not kept; carry an id column to join on."""
    for name, value, low in (("replicas", replicas, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    for name, value in (("gpus_per_replica", gpus_per_replica), ("cpus_per_replica", cpus_per_replica)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number; got {value!r}")
    ray = _ray()
    options = {"model": str(model), "instruction": instruction, "batch_size": batch_size,
               "device": device or ("cuda" if gpus_per_replica else "cpu"), "image_scale": image_scale,
               "fingerprint": fingerprint, "raster_options": raster_options, "keep_skipped": keep_skipped,
               "threads": max(1, int(cpus_per_replica))}
    return dataset.map_batches(ItemEmbedder, fn_constructor_kwargs=options, batch_size=batch_size,
                               batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=replicas),
                               num_gpus=gpus_per_replica or None, num_cpus=cpus_per_replica)


# --------------------------------------------------------------------------------------------------------------
# index build --engine ray: the local build's chunks, embedded by an actor pool
# --------------------------------------------------------------------------------------------------------------

def _plan(model, source, out: Path, chunk_size: int, instruction: str | None):
    """The chunks to embed (missing, damaged, or made from an input that changed since) and their content digests,
    planned as the local build plans them (`corpus.plan_chunks`), so Ray and local runs share one output folder."""
    from vlm2geovec import corpus

    parts, todo, digests, notes = corpus.plan_chunks(model, source, out, chunk_size, instruction)
    return parts, len(digests), todo, digests, notes


def _rows(source, todo: list[int], chunk_size: int) -> list[dict]:
    """What travels to the workers: JSONL items (image paths, not pixels) or raster grid positions."""
    from vlm2geovec.corpus import JsonlSource, RasterSource

    rows = []
    for chunk in todo:
        start, stop = chunk * chunk_size, min(len(source), (chunk + 1) * chunk_size)
        if isinstance(source, RasterSource):
            rows += [{"chunk": chunk, "position": p, "raster": source.tiler.path} for p in range(start, stop)]
        elif isinstance(source, JsonlSource):
            for offset, (item, meta) in enumerate(source.read(start, stop)):
                rows.append({"chunk": chunk, "position": start + offset, "where": source.where(start + offset),
                             "item": json.dumps(item), "metadata": json.dumps(meta)})
        else:
            raise ValueError(f"--engine ray embeds JSONL files and rasters; {source.describe()['input']} is a "
                             f"{source.describe()['type']}: use the local engine, or embed_dataset() on "
                             "ray.data.read_parquet(...) from Python")
    return rows


def _raster_options(source) -> dict | None:
    from vlm2geovec.corpus import RasterSource

    if not isinstance(source, RasterSource):
        return None
    tiler = source.tiler
    return {"tile_size": tiler.size, "stride": tiler.stride, "bands": list(tiler.bands), "max_nodata": tiler.max_nodata,
            "edge": tiler.edge, "scale": None if tiler.scale is None else tiler.scale.tolist(),
            "embed_coords": source.embed_coords}


def _item_error(error: Exception) -> ValueError | None:
    """The item error a replica raised, out of Ray's wrapping (which adds the worker's traceback)."""
    text = str(error)
    if _MARK not in text:
        return None
    return ValueError(text.split(_MARK, 1)[1].strip().splitlines()[0])


def embed_chunks_ray(model, model_path: str, source, out: str | os.PathLike, *, chunk_size: int = 1024,
                     batch_size: int = 16, instruction: str | None = None, replicas: int = 1,
                     gpus_per_replica: float = 0, cpus_per_replica: float = 1, address: str | None = None,
                     image_scale: Any = "keep", show_progress_bar: bool = True) -> list[int]:
    """`vlm2geovec.corpus.embed_chunks` on a Ray cluster: embed the chunks of `source` (a JSONL or raster source)
    that ``<out>/parts`` lacks or that are stale, with an actor pool of `replicas` replicas of the checkpoint at
    `model_path` (`model`, loaded on the driver, gives the manifest's fingerprint and processor settings, and each
    replica is checked against it). Each chunk file is written as soon as all its positions are back, so a run
    killed midway keeps its finished chunks. Returns the chunk numbers written now."""
    from vlm2geovec import corpus
    from vlm2geovec.index import model_fingerprint, validate_metadata

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    out = Path(out)
    parts, chunks, todo, digests, notes = _plan(model, source, out, chunk_size, instruction)
    rows = _rows(source, todo, chunk_size)
    expected = {c: min(len(source), (c + 1) * chunk_size) - c * chunk_size for c in todo}
    written: list[int] = []
    with corpus.progress(sum(expected.values()), "embedding (ray)", enabled=show_progress_bar) as bar:
        if chunks - len(todo):
            bar.write(f"resuming: {chunks - len(todo)} of {chunks} chunks already embedded in {parts}", file=sys.stderr)
        for note in notes:
            bar.write(note, file=sys.stderr)
        if not rows:
            return written
        ray = init_ray(address)
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(todo) * 4, len(rows))))
        embedded = embed_dataset(dataset, model_path, instruction=instruction, batch_size=batch_size, replicas=replicas,
                                 gpus_per_replica=gpus_per_replica, cpus_per_replica=cpus_per_replica,
                                 image_scale=image_scale, raster_options=_raster_options(source),
                                 fingerprint=model_fingerprint(model), keep_skipped=True)
        pending: dict[int, list[tuple[int, np.ndarray, str, bool]]] = {c: [] for c in todo}
        try:
            for batch in embedded.iter_batches(batch_format="numpy", batch_size=None):
                skipped = batch.get("skipped", np.zeros(len(batch["chunk"]), dtype=bool))
                for chunk, position, vector, meta, skip in zip(batch["chunk"], batch["position"],
                                                              batch[EMBEDDING_COLUMN], batch["metadata"], skipped):
                    pending[int(chunk)].append((int(position), vector, str(meta), bool(skip)))
                for chunk in {int(c) for c in batch["chunk"]}:
                    if len(pending[chunk]) == expected[chunk]:
                        _write_chunk(parts, chunk, sorted(pending.pop(chunk), key=lambda r: r[0]), digests[chunk],
                                     model.get_embedding_dimension(), validate_metadata)
                        written.append(chunk)
                        bar.update(expected[chunk])
        except Exception as error:  # Ray wraps worker errors (RayTaskError, UserCodeException ...)
            item_error = _item_error(error)
            if item_error is not None:
                raise item_error from None
            raise
    missing = sorted(set(todo) - set(written))
    if missing:  # Ray reports lost work as errors; this guards the bookkeeping itself
        raise RuntimeError(f"the Ray run returned without chunks {missing[:10]}: run it again to embed them")
    return sorted(written)


def _write_chunk(parts: Path, chunk: int, rows: list, digest: str, dim: int, validate_metadata) -> None:
    """One chunk file in the local build's format (`corpus.write_chunk`) from the workers' rows."""
    from vlm2geovec import corpus

    kept = [r for r in rows if not r[3]]
    vectors = np.stack([r[1] for r in kept]).astype(np.float32) if kept else np.zeros((0, dim), dtype=np.float32)
    corpus.write_chunk(parts, chunk, vectors, validate_metadata([json.loads(r[2]) for r in kept], len(kept)), digest)


def build_index_ray(model, model_path: str, source, out: str | os.PathLike, *, kind: str = "auto",
                    chunk_size: int = 1024, batch_size: int = 16, instruction: str | None = None, replicas: int = 1,
                    gpus_per_replica: float = 0, cpus_per_replica: float = 1, address: str | None = None,
                    image_scale: Any = "keep", show_progress_bar: bool = True, **params):
    """`vlm2geovec.corpus.build_corpus_index` with the embedding done by Ray (`embed_chunks_ray`): the same
    parts, the same merge, the same index."""
    from vlm2geovec.corpus import index_from_parts

    embed_chunks_ray(model, model_path, source, out, chunk_size=chunk_size, batch_size=batch_size,
                     instruction=instruction, replicas=replicas, gpus_per_replica=gpus_per_replica,
                     cpus_per_replica=cpus_per_replica, address=address, image_scale=image_scale,
                     show_progress_bar=show_progress_bar)
    return index_from_parts(out, kind=kind, build_info={"model": model_path}, **params)
