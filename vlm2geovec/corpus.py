"""Embed a corpus (JSONL items, an HF dataset, or a GeoTIFF cut into tiles) into a `VectorIndex`: in chunks,
resumable, and shardable across processes, GPUs or nodes.

    from vlm2geovec import load_model
    from vlm2geovec.corpus import open_source, build_corpus_index

    source = open_source("scene.tif", tile_size=256, bands=(4, 3, 2))     # or items.jsonl, or a dataset
    index = build_corpus_index(load_model("ckpt"), source, "out/index")    # embeds, merges, builds, saves

How the work is cut: the source's positions (JSONL lines, dataset rows, tile-grid positions) are split into
chunks of `chunk_size` consecutive positions; chunk ``c`` belongs to shard ``c % n``. Each finished chunk is one
file ``<out>/parts/chunk-<c>.npz`` (vectors + metadata), written atomically, so an interrupted run resumes where
it stopped and `n` processes (``--shard i/n``, or torchrun/accelerate ranks) share one output folder without
coordination. `merge_parts` then reads every chunk in order: the merged vectors and metadata do not depend on how
many shards made them. A manifest (``parts/manifest.json``) pins the source, chunk size, model fingerprint and
instruction, so a resumed or sharded run cannot mix in chunks made from other inputs or another model.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rsmeb_eval.assets import atomic_write
from vlm2geovec.index import VectorIndex, model_fingerprint, validate_metadata

PARTS_DIR, MANIFEST_FILE = "parts", "manifest.json"
DEFAULT_CHUNK_SIZE = 1024
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
Record = tuple[Any, dict]  # (item, metadata)


# --------------------------------------------------------------------------------------------------------------
# Sources: positions 0..len-1, each giving at most one (item, metadata) record
# --------------------------------------------------------------------------------------------------------------

def _resolve_image_paths(item: Any, base: Path) -> Any:
    def resolve(value: Any) -> Any:
        return str(base / value) if isinstance(value, str) and not os.path.isabs(value) else value

    if isinstance(item, dict) and "image" in item:
        return {**item, "image": resolve(item["image"])}
    if isinstance(item, list):
        return [{**p, "image": resolve(p["image"])} if isinstance(p, dict) and "image" in p else p for p in item]
    return item


def read_jsonl_records(path: str | os.PathLike) -> list[Record]:
    """Read one item per line; image paths are taken relative to the JSONL file's folder.

    A line is an item (a JSON string = text, an object with ``image``/``text``/``bbox``/``coords``, or an array of
    parts), or ``{"item": <item>, ...}`` whose other keys are the line's metadata (e.g. ``id``, ``lat``, ``lon``).
    Metadata defaults to ``{"id": <line number>}``, plus ``lat``/``lon`` when the item has ``coords``.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {error}") from None
            if isinstance(value, dict) and "item" in value:
                item, meta = value["item"], {k: v for k, v in value.items() if k != "item"}
            else:
                item, meta = value, {}
            if not isinstance(item, (str, dict, list)):
                raise ValueError(f"{path}:{line_no}: expected a string, an object or an array, got {type(item).__name__}")
            meta.setdefault("id", line_no)
            coords = item.get("coords") if isinstance(item, dict) else None
            if isinstance(coords, (list, tuple)) and len(coords) == 2:
                meta.setdefault("lat", coords[0])
                meta.setdefault("lon", coords[1])
            records.append((_resolve_image_paths(item, path.parent), meta))
    if not records:
        raise ValueError(f"{path}: no items")
    return records


def read_items_jsonl(path: str | os.PathLike) -> list[Any]:
    """The items of a JSONL file (see `read_jsonl_records`), without their metadata."""
    return [item for item, _ in read_jsonl_records(path)]


@dataclass
class JsonlSource:
    path: str
    records: list[Record] = field(repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "JsonlSource":
        return cls(str(path), read_jsonl_records(path))

    def __len__(self) -> int:
        return len(self.records)

    def describe(self) -> dict:
        return {"type": "jsonl", "input": os.path.abspath(self.path), "positions": len(self)}

    def read(self, start: int, stop: int) -> Iterator[Record]:
        for item, meta in self.records[start:stop]:
            yield item, {"source": self.path, **meta}


@dataclass
class DatasetSource:
    """Rows of an HF `datasets.Dataset` in the RSMEB item layout: columns ``image``, ``text``, ``bbox``, ``lat``,
    ``lon`` (each optional; `item_columns` picks which ones make the embedded item)."""

    dataset: Any = field(repr=False)
    name: str
    item_columns: tuple[str, ...]
    id_column: str | None

    @classmethod
    def open(cls, dataset, name: str, item_columns: Sequence[str] | None = None) -> "DatasetSource":
        from rsmeb_eval.schema import ITEM_COLUMNS

        columns = list(dataset.column_names)
        if item_columns is None:
            item_columns = [c for c in ITEM_COLUMNS if c in columns]
        unknown = [c for c in item_columns if c not in ITEM_COLUMNS]
        missing = [c for c in item_columns if c not in columns]
        if unknown:
            raise ValueError(f"item columns must be among {list(ITEM_COLUMNS)}; got {unknown}")
        if missing or not item_columns:
            raise ValueError(f"{name}: the dataset has columns {columns}, none or not all of the item columns "
                             f"{list(item_columns) or list(ITEM_COLUMNS)}")
        id_column = next((c for c in ("id", "query_id") if c in columns), None)
        return cls(dataset, name, tuple(item_columns), id_column)

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self) -> dict:
        return {"type": "dataset", "input": self.name, "positions": len(self), "item_columns": list(self.item_columns),
                "fingerprint": getattr(self.dataset, "_fingerprint", None)}

    def read(self, start: int, stop: int) -> Iterator[Record]:
        from rsmeb_eval.schema import row_to_item

        for offset, row in enumerate(self.dataset.select(range(start, min(stop, len(self))))):
            item = row_to_item({c: row.get(c) for c in self.item_columns})
            if not item:
                raise ValueError(f"{self.name}: row {start + offset} has no value in any of {list(self.item_columns)}")
            meta: dict[str, Any] = {"id": row[self.id_column] if self.id_column else start + offset,
                                    "source": self.name}
            for key in ("lat", "lon"):
                if row.get(key) is not None:
                    meta[key] = row[key]
            yield item, meta


@dataclass
class RasterSource:
    """Tiles of a georeferenced raster (`vlm2geovec.geotiff.GeoTiffTiler`); the position is the grid position.
    `embed_coords` adds each tile's centre coordinates to its item (image + coords) instead of metadata only."""

    tiler: Any = field(repr=False)
    embed_coords: bool = False

    def __len__(self) -> int:
        return len(self.tiler)

    def describe(self) -> dict:
        from vlm2geovec.geotiff import is_remote

        t = self.tiler
        return {"type": "raster", "input": t.path if is_remote(t.path) else os.path.abspath(t.path), "positions": len(self), "size": t.size,
                "stride": t.stride, "bands": list(t.bands), "max_nodata": t.max_nodata, "edge": t.edge,
                "scale": None if t.scale is None else t.scale.tolist(), "embed_coords": self.embed_coords}

    def read(self, start: int, stop: int) -> Iterator[Record]:
        for tile in self.tiler.tiles(start, stop):
            item = {"image": tile.image, "coords": (tile.lat, tile.lon)} if self.embed_coords else tile.image
            yield item, tile.metadata()


def open_source(input: str | os.PathLike, *, split: str | None = None, config: str | None = None,
                item_columns: Sequence[str] | None = None, tile_size: int = 256, stride: int | None = None,
                bands: Sequence[int] | None = None, max_nodata: float = 0.5, scale: Any = "auto", edge: str = "drop",
                embed_coords: bool = False):
    """A source from a path or Hub id: ``*.jsonl`` items; a raster (``.tif``, ``.tiff``, ``.vrt``, ``.img``,
    ``.jp2``) cut into tiles; a folder written by `Dataset.save_to_disk`; anything else goes to
    `datasets.load_dataset(input, config, split=split)` (local parquet folders such as RSMEB's, or Hub ids)."""
    text = str(input)
    path = Path(text)
    if path.suffix.lower() == ".jsonl":
        return JsonlSource.open(path)
    if path.suffix.lower() in RASTER_SUFFIXES:
        from vlm2geovec.geotiff import GeoTiffTiler

        tiler = GeoTiffTiler(path, size=tile_size, stride=stride, bands=bands, max_nodata=max_nodata, scale=scale,
                             edge=edge)
        return RasterSource(tiler, embed_coords=embed_coords)
    import datasets

    if path.is_dir() and any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if split is None and len(splits) != 1:
                raise ValueError(f"{path} has splits {splits}: choose one with split=... (--split)")
            if split is not None and split not in loaded:
                raise ValueError(f"{path} has no split {split!r} (it has {splits})")
            loaded = loaded[split or splits[0]]
        name = f"{text}:{split}" if split else text
    else:
        if not path.exists() and path.suffix:
            raise FileNotFoundError(f"input not found: {text}")
        loaded = datasets.load_dataset(text, config, split=split or "train")
        name = ":".join(x for x in (text, config, split or "train") if x)
    return DatasetSource.open(loaded, name, item_columns)


# --------------------------------------------------------------------------------------------------------------
# Chunked, sharded, resumable embedding
# --------------------------------------------------------------------------------------------------------------

def parse_shard(value: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n), ``"auto"`` (torchrun/accelerate: RANK/WORLD_SIZE) or None (one shard) -> (i, n)."""
    if value is None:
        return 0, 1
    if value == "auto":
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if isinstance(value, str):
        try:
            index, count = (int(v) for v in value.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like i/n (e.g. 0/4) or 'auto'; got {value!r}") from None
    else:
        index, count = value
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need n >= 1 and 0 <= i < n")
    return index, count


def chunk_count(source, chunk_size: int) -> int:
    return math.ceil(len(source) / chunk_size)


def _chunk_path(parts: Path, chunk: int) -> Path:
    return parts / f"chunk-{chunk:06d}.npz"


def _check_manifest(parts: Path, manifest: dict) -> None:
    """Write the manifest, or check that an existing one (an earlier or parallel run) describes the same work."""
    path = parts / MANIFEST_FILE
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != manifest:
            diff = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            raise ValueError(f"{parts} holds chunks of different work (differs in {', '.join(diff)}): use another "
                             "--out, or delete that folder to start over")
        return
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8"))


def _read_manifest(parts: Path) -> dict:
    if not (parts / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{parts} has no {MANIFEST_FILE}: nothing was embedded into {parts.parent} yet")
    return json.loads((parts / MANIFEST_FILE).read_text(encoding="utf-8"))


def embed_chunks(model, source, out: str | os.PathLike, *, shard: str | tuple[int, int] | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, batch_size: int = 16, instruction: str | None = None,
                 show_progress_bar: bool = True) -> list[int]:
    """Embed this shard's chunks of `source` into ``<out>/parts`` (skipping chunks already there); return the
    chunk numbers written now."""
    from tqdm.auto import tqdm

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    index, count = parse_shard(shard)
    parts = Path(out) / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    chunks = chunk_count(source, chunk_size)
    _check_manifest(parts, {"source": source.describe(), "chunk_size": chunk_size,
                            "model_fingerprint": model_fingerprint(model), "instruction": instruction, "chunks": chunks})
    mine = [c for c in range(chunks) if c % count == index]
    todo = [c for c in mine if not _chunk_path(parts, c).is_file()]
    total = sum(min(len(source), (c + 1) * chunk_size) - c * chunk_size for c in todo)
    written = []
    empty = np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)  # a chunk whose positions were all skipped
    desc = f"embedding shard {index}/{count}" if count > 1 else "embedding"
    with tqdm(total=total, desc=desc, unit="pos", disable=not show_progress_bar) as bar:
        if len(todo) < len(mine):
            bar.write(f"resuming: {len(mine) - len(todo)} of {len(mine)} chunks already embedded in {parts}",
                      file=sys.stderr)
        for chunk in todo:
            start, stop = chunk * chunk_size, min(len(source), (chunk + 1) * chunk_size)
            records = list(source.read(start, stop))
            vectors = empty
            if records:
                try:
                    vectors = model.encode([item for item, _ in records], batch_size=batch_size, prompt=instruction,
                                           convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
                except (ValueError, TypeError) as error:
                    raise _locate_error(error, records, source) from None
            metadata = validate_metadata([meta for _, meta in records], len(records))
            vectors = np.asarray(vectors, dtype=np.float32)
            atomic_write(_chunk_path(parts, chunk), lambda tmp: np.savez(
                tmp, vectors=vectors, metadata=np.array(json.dumps(metadata, ensure_ascii=False))))
            written.append(chunk)
            bar.update(stop - start)
    return written


def _locate_error(error: Exception, records: list[Record], source) -> Exception:
    """Name the corpus record (input, id) of an item error instead of its index inside one chunk's batch;
    chunks finished before it stay on disk, so a rerun after fixing the input resumes."""
    match = re.match(r"^inputs\[(\d+)\](.*)$", str(error), re.S)
    if not match or int(match.group(1)) >= len(records):
        return error
    meta = records[int(match.group(1))][1]
    where = f"{source.describe()['input']}: record id {meta.get('id')!r}"
    return type(error)(f"{where}{match.group(2)}")


def merge_parts(out: str | os.PathLike) -> tuple[np.ndarray, list[dict], dict]:
    """All chunks of ``<out>/parts`` in order: (vectors, metadata, manifest). Fails if any chunk is missing."""
    parts = Path(out) / PARTS_DIR
    manifest = _read_manifest(parts)
    missing = [c for c in range(manifest["chunks"]) if not _chunk_path(parts, c).is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"{out}: {len(missing)} of {manifest['chunks']} chunks are not embedded yet ({shown}); "
                         "run the missing shards (or `index build` without --shard) first")
    vectors, metadata = [], []
    for chunk in range(manifest["chunks"]):
        with np.load(_chunk_path(parts, chunk)) as data:
            vectors.append(data["vectors"])
            metadata += json.loads(data["metadata"].item())
    return np.concatenate(vectors), metadata, manifest


def index_from_parts(out: str | os.PathLike, kind: str = "auto", build_info: dict | None = None,
                     **params) -> VectorIndex:
    """Merge ``<out>/parts`` into one `VectorIndex` saved in `out`."""
    vectors, metadata, manifest = merge_parts(out)
    if len(vectors) == 0:
        raise ValueError(f"{out}: every position was skipped (e.g. all tiles were nodata): nothing to index")
    info = {"source": manifest["source"], "instruction": manifest["instruction"], **(build_info or {})}
    index = VectorIndex.build(vectors, metadata, kind=kind, fingerprint=manifest["model_fingerprint"],
                              build_info=info, **params)
    index.save(out)
    return index


def build_corpus_index(model, source, out: str | os.PathLike, *, kind: str = "auto",
                       shard: str | tuple[int, int] | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       batch_size: int = 16, instruction: str | None = None, model_name: str | None = None,
                       show_progress_bar: bool = True, **params) -> VectorIndex | None:
    """Embed `source` into ``<out>/parts`` and build the index in `out`. With a shard ``i/n`` (n > 1) only that
    shard's chunks are embedded and None is returned: merge with `index_from_parts` once every shard is done."""
    embed_chunks(model, source, out, shard=shard, chunk_size=chunk_size, batch_size=batch_size,
                 instruction=instruction, show_progress_bar=show_progress_bar)
    if parse_shard(shard)[1] > 1:
        return None
    return index_from_parts(out, kind=kind, build_info={"model": model_name}, **params)
