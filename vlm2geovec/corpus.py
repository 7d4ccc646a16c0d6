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
many shards made them. A manifest (``parts/manifest.json``) pins the source, chunk size, model fingerprint,
processor settings (`VLM2GeoVecProcessor.settings`) and instruction, so a resumed or sharded run cannot mix in
chunks made from other inputs, another model or other preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from vlm2geovec.data.io import atomic_write, load_dataset_fresh
from vlm2geovec.index import VectorIndex, model_fingerprint, model_preprocessing, validate_metadata

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


def _image_paths(item: Any) -> list[str]:
    """The file paths an item refers to (its images), for the chunk content digest."""
    parts = item if isinstance(item, list) else [item]
    return [p["image"] for p in parts if isinstance(p, dict) and isinstance(p.get("image"), str)]


def _read_jsonl(path: Path) -> tuple[list[Record], list[bytes], list[int]]:
    """Records, the raw bytes of their lines and their line numbers. Every problem names ``path:line``."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a JSONL file")
    records, raw_lines, line_numbers = [], [], []
    blank = None
    with open(path, "rb") as handle:  # bytes: a non-UTF-8 line is named, and its bytes feed the chunk digest
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                                 f"{error.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                blank = blank or line_no
                continue
            if blank is not None:  # skipping it would shift every later output row off its line
                raise ValueError(f"{path}:{blank}: blank line; one item per line, no gaps (remove the line)")
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {error}") from None
            if isinstance(value, dict) and "item" in value:
                item, meta = value["item"], {k: v for k, v in value.items() if k != "item"}
            else:
                item, meta = value, {}
            if not isinstance(item, (str, dict, list)):
                raise ValueError(f"{path}:{line_no}: expected an item (a string, an object or an array), got "
                                 f"{type(item).__name__} {json.dumps(item)[:60]}")
            try:  # the line's own metadata, checked now: before any chunk is embedded
                validate_metadata([meta], 1)
            except ValueError as error:
                raise ValueError(f"{path}:{line_no}: {str(error).replace('metadata[0]', 'metadata')}") from None
            meta.setdefault("id", line_no)
            coords = item.get("coords") if isinstance(item, dict) else None
            if isinstance(coords, (list, tuple)) and len(coords) == 2:  # (checked with the item, as item.coords)
                meta.setdefault("lat", coords[0])
                meta.setdefault("lon", coords[1])
            records.append((_resolve_image_paths(item, path.parent), meta))
            raw_lines.append(raw.rstrip(b"\r\n"))
            line_numbers.append(line_no)
    if not records:
        raise ValueError(f"{path}: no items (the file is empty)")
    return records, raw_lines, line_numbers


def read_jsonl_records(path: str | os.PathLike) -> list[Record]:
    """Read one item per line; image paths are taken relative to the JSONL file's folder.

    A line is an item (a JSON string = text, an object with ``image``/``text``/``bbox``/``coords``, or an array of
    parts), or ``{"item": <item>, ...}`` whose other keys are the line's metadata (e.g. ``id``, ``lat``, ``lon``).
    Metadata defaults to ``{"id": <line number>}``, plus ``lat``/``lon`` when the item has ``coords``, and is
    validated here (``lat`` in -90..90 ...). A non-UTF-8 line, invalid JSON, a value that is not an item, bad
    metadata, an empty file or a blank line between items is a ValueError naming ``path:line``.
    """
    return _read_jsonl(Path(path))[0]


def read_items_jsonl(path: str | os.PathLike) -> list[Any]:
    """The items of a JSONL file (see `read_jsonl_records`), without their metadata."""
    return [item for item, _ in read_jsonl_records(path)]


def _update_digest(digest, value: Any) -> None:
    """Feed a JSON-like value (bytes included) into a hash, unambiguously and independent of dict order."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        digest.update(b"b%d:" % len(value))
        digest.update(value)
    elif isinstance(value, dict):
        digest.update(b"{%d" % len(value))
        for key in sorted(value, key=str):
            _update_digest(digest, str(key))
            _update_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(b"[%d" % len(value))
        for entry in value:
            _update_digest(digest, entry)
    else:
        text = json.dumps(value, default=repr).encode()
        digest.update(b"v%d:" % len(text))
        digest.update(text)


def _file_identity(path: str) -> list:
    """The content hash of a file an item refers to: an image edited in place (even with its size and modification
    time kept, as `cp -p` or a sync tool does) counts as a changed input. Hashing reads the file once more, at disk
    speed, which costs little next to decoding and embedding it; a file seen twice in one run is hashed once."""
    try:
        stat = os.stat(path)
    except OSError:
        return [path, None]
    key = (path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns)  # ctime: any write or utime moves it
    known = _FILE_HASHES.get(key)
    if known is None:
        digest = hashlib.blake2b(digest_size=20)
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return [path, None]
        known = _FILE_HASHES[key] = digest.hexdigest()
    return [path, known]


_FILE_HASHES: dict[tuple, str] = {}  # (path, size, mtime, inode, ctime) -> content hash, for the span of a process


@dataclass
class JsonlSource:
    path: str
    records: list[Record] = field(repr=False)
    lines: list[bytes] = field(repr=False, default_factory=list)
    line_numbers: list[int] = field(repr=False, default_factory=list)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "JsonlSource":
        return cls(str(path), *_read_jsonl(Path(path)))

    def __len__(self) -> int:
        return len(self.records)

    def describe(self) -> dict:
        return {"type": "jsonl", "input": os.path.abspath(self.path), "positions": len(self)}

    def where(self, position: int) -> str:
        return f"{self.path}:{self.line_numbers[position]}" if self.line_numbers else f"{self.path}: item {position + 1}"

    def check_items(self, max_image_pixels: int | None = None) -> None:
        """Validate every item (images: header only) so a bad line 9,000 fails in a second, not after an hour of
        encoding; errors name ``path:line``."""
        from processing_vlm2geovec import normalize_item

        extra = {} if max_image_pixels is None else {"max_image_pixels": max_image_pixels}
        for position, (item, _) in enumerate(self.records):
            normalize_item(item, f"{self.where(position)}: item", decode_images=False, **extra)

    def chunk_digest(self, start: int, stop: int) -> str:
        """sha256 of the chunk's line bytes and of its image files' content hashes."""
        digest = hashlib.sha256()
        for position in range(start, min(stop, len(self))):
            _update_digest(digest, self.lines[position] if self.lines else json.dumps(self.records[position][0]))
            _update_digest(digest, [_file_identity(p) for p in _image_paths(self.records[position][0])])
        return digest.hexdigest()

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
        from vlm2geovec.data.items import ITEM_COLUMNS

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
        # the rows' content is checked per chunk (`chunk_digest`): an edited row re-embeds its chunk only
        return {"type": "dataset", "input": self.name, "positions": len(self), "item_columns": list(self.item_columns)}

    def where(self, position: int) -> str:
        return f"{self.name}: row {position}"

    def chunk_digest(self, start: int, stop: int) -> str:
        """sha256 of the chunk's rows as stored (image bytes, not decoded pixels) in the columns that make them."""
        columns = [*self.item_columns, *([self.id_column] if self.id_column else []),
                   *[c for c in ("lat", "lon") if c in self.dataset.column_names and c not in self.item_columns]]
        table = self.dataset.select_columns(columns).with_format("arrow")[start:min(stop, len(self))]
        digest = hashlib.sha256()
        _update_digest(digest, table.to_pylist())
        return digest.hexdigest()

    def read(self, start: int, stop: int) -> Iterator[Record]:
        from vlm2geovec.data.items import row_to_item

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

    def where(self, position: int) -> str:
        return f"{self.tiler.path}: tile {position} (window {list(self.tiler.window(position))})"

    def raster_digest(self) -> str:
        """sha256 of every file GDAL reads for the raster (a .tif, or a .vrt and its sources), computed once per
        run; remote rasters are known by their address only."""
        from vlm2geovec.geotiff import is_remote

        if getattr(self, "_raster_digest", None) is None:
            digest = hashlib.sha256()
            files = list(getattr(self.tiler._dataset, "files", None) or [self.tiler.path])
            for name in sorted(files):
                _update_digest(digest, os.path.basename(name))
                if is_remote(name) or not os.path.isfile(name):
                    _update_digest(digest, name)
                    continue
                with open(name, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 24), b""):
                        digest.update(block)
            self._raster_digest = digest.hexdigest()
        return self._raster_digest

    def chunk_digest(self, start: int, stop: int) -> str:
        """sha256 of the raster's content and of the chunk's pixel windows."""
        digest = hashlib.sha256(self.raster_digest().encode())
        _update_digest(digest, [list(self.tiler.window(p)) for p in range(start, min(stop, len(self)))])
        return digest.hexdigest()

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
        if not path.exists():
            raise FileNotFoundError(f"input not found: {text}")
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
        if path.exists():
            _check_parquet_files(path, config)
        try:
            loaded = load_dataset_fresh(text, config, split=split or "train")  # never a stale or shared cache
        except Exception as error:  # datasets raises many types (DatasetGenerationError, ArrowInvalid, ...)
            reason = (str(error).strip().splitlines() or [""])[0][:300]
            raise ValueError(f"{text}: cannot load it as a dataset ({type(error).__name__}: {reason})") from None
        name = ":".join(x for x in (text, config, split or "train") if x)
    return DatasetSource.open(loaded, name, item_columns)


# --------------------------------------------------------------------------------------------------------------
# Chunked, sharded, resumable embedding
# --------------------------------------------------------------------------------------------------------------

def _check_parquet_files(path: Path, config: str | None) -> None:
    """Read the footer of every parquet file the dataset may use, so a truncated one is named (datasets' own
    error does not say which file)."""
    import pyarrow.parquet as pq

    if path.is_file():
        files = [path] if path.suffix.lower() == ".parquet" else []
    else:
        under = path / "data" / config if config and (path / "data" / config).is_dir() else path
        files = sorted(under.rglob("*.parquet"))
    for file in files:
        try:
            pq.ParquetFile(file).close()
        except Exception as error:  # pyarrow: ArrowInvalid / OSError for truncated or foreign files
            raise ValueError(f"{file}: not a readable parquet file ({str(error).strip()[:200]})") from None


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


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                         "delete the folder to start over") from None


def _check_manifest(parts: Path, manifest: dict) -> None:
    """Write the manifest, or check that an existing one (an earlier or parallel run) describes the same work."""
    path = parts / MANIFEST_FILE
    if path.is_file():
        existing = _load_json(path)
        if not isinstance(existing, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(existing).__name__}")
        if existing != manifest:
            diff = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            why = ("; its chunks were embedded by another model (weights fingerprint differs)"
                   if "model_fingerprint" in diff else "")
            raise ValueError(f"{parts} holds chunks of different work (differs in {', '.join(diff)}){why}: use "
                             "another --out, or delete that folder to start over")
        return
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                                  encoding="utf-8"))


def _read_manifest(parts: Path) -> dict:
    if not parts.parent.is_dir():
        raise FileNotFoundError(f"index folder not found: {parts.parent} (no such folder)")
    if not (parts / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"{parts} has no {MANIFEST_FILE}: nothing was embedded into {parts.parent} yet")
    manifest = _load_json(parts / MANIFEST_FILE)
    chunks = manifest.get("chunks") if isinstance(manifest, dict) else None
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 0:
        raise ValueError(f"{parts / MANIFEST_FILE}: field 'chunks' must be a non-negative integer; got {chunks!r}")
    for key in ("source", "model_fingerprint", "instruction"):
        if key not in manifest:
            raise ValueError(f"{parts / MANIFEST_FILE}: field {key!r} is missing")
    return manifest


def _read_chunk(path: Path) -> tuple[np.ndarray, list[dict], str | None]:
    """(vectors, metadata, content digest or None) of a chunk file; a damaged file is a ValueError naming it."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            vectors, metadata_text = data["vectors"], data["metadata"]
            content = str(data["content"]) if "content" in data.files else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: unreadable chunk file ({type(error).__name__}: {error}); delete it and run "
                         "`index build` again to re-embed it") from None
    try:
        metadata = json.loads(metadata_text.item())
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: its metadata is not valid JSON ({error}); delete it and run `index build` "
                         "again to re-embed it") from None
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise ValueError(f"{path}: vectors must be a 2-D float array; got {vectors.dtype} {vectors.shape}")
    if not isinstance(metadata, list) or len(metadata) != len(vectors):
        raise ValueError(f"{path}: {len(vectors)} vectors but "
                         f"{len(metadata) if isinstance(metadata, list) else 'no list of'} metadata entries")
    return vectors, metadata, content


def _stored_digest(path: Path) -> tuple[str | None, str | None]:
    """(content digest, None) of a finished chunk, or (None, why it must be embedded again)."""
    try:
        content = _read_chunk(path)[2]
    except ValueError as error:
        return None, str(error).split("; delete it")[0]
    if content is None:
        return None, f"{path.name} was written without a content digest (an older vlm2geovec)"
    return content, None


class _LogProgress:
    """Progress for logs (stderr not a terminal): a plain line at most every `every` seconds and at the end,
    instead of tqdm's carriage-return redraws, which pile up into one unreadable line in a file."""

    def __init__(self, total: int, desc: str, unit: str, every: float = 30.0):
        import time

        self.total, self.desc, self.unit, self.every, self.n = total, desc, unit, every, 0
        self._clock = time.monotonic
        self._start = self._last = self._clock()

    def write(self, message: str, file=None) -> None:
        print(message, file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every or self.n >= self.total:
            self._last = now
            rate = self.n / max(now - self._start, 1e-9)
            share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {rate:.1f} {self.unit}/s", file=sys.stderr,
                  flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress(total: int, desc: str, unit: str = "pos", enabled: bool = True):
    """One progress display for long work: a tqdm bar on a terminal, periodic plain lines in a log file."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return _LogProgress(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)


def plan_chunks(model, source, out: str | os.PathLike, chunk_size: int, instruction: str | None,
                wanted: list[int] | None = None) -> tuple[Path, list[int], dict[int, str], list[str]]:
    """Which chunks of `source` (of `wanted`, default all) need embedding into ``<out>/parts``, for every engine
    (local, torchrun shards, Ray): the manifest is checked (or written) first, then a chunk is kept only when its
    file holds the content digest of its input now. Returns ``(parts folder, chunks to embed, digests of wanted
    chunks, notes naming each chunk embedded again and why)``."""
    parts = Path(out) / PARTS_DIR
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not an index folder")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = chunk_count(source, chunk_size)
    _check_manifest(parts, {"source": source.describe(), "chunk_size": chunk_size,
                            "model_fingerprint": model_fingerprint(model), "instruction": instruction,
                            "preprocessing": model_preprocessing(model), "chunks": chunks})
    todo, notes, digests = [], [], {}
    for c in range(chunks) if wanted is None else wanted:
        digests[c] = source.chunk_digest(c * chunk_size, (c + 1) * chunk_size)
        path = _chunk_path(parts, c)
        if not path.is_file():
            todo.append(c)
            continue
        stored, why = _stored_digest(path)
        if stored == digests[c]:
            continue
        todo.append(c)
        notes.append(f"re-embedding chunk {c} ({source.where(c * chunk_size)} ...): " +
                     (why or f"its input changed since {path.name} was written"))
    return parts, todo, digests, notes


def write_chunk(parts: Path, chunk: int, vectors, metadata: list, digest: str) -> None:
    """One chunk file: its vectors (float32), metadata JSON and the content digest of its input (atomically)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    atomic_write(_chunk_path(parts, chunk), lambda tmp: np.savez(
        tmp, vectors=vectors, metadata=np.array(json.dumps(metadata, ensure_ascii=False)), content=np.array(digest)))


def embed_chunks(model, source, out: str | os.PathLike, *, shard: str | tuple[int, int] | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, batch_size: int = 16, instruction: str | None = None,
                 show_progress_bar: bool = True) -> list[int]:
    """Embed this shard's chunks of `source` into ``<out>/parts``; return the chunk numbers written now.

    Each chunk file records a content digest of the input it covers (`chunk_digest`: JSONL line bytes and image
    file contents; dataset rows as stored; the raster's bytes and the tile windows). A chunk already there is
    kept only when its digest matches the input now: a chunk whose input was edited since (same line count, so
    the same manifest), an unreadable chunk file, or one without a digest is **embedded again**, and a line on
    stderr names it. A changed model, processor setting, instruction, chunk size or position count is refused by the manifest.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
    index, count = parse_shard(shard)
    mine = [c for c in range(chunk_count(source, chunk_size)) if c % count == index]
    parts, todo, digests, notes = plan_chunks(model, source, out, chunk_size, instruction, mine)
    total = sum(min(len(source), (c + 1) * chunk_size) - c * chunk_size for c in todo)
    written = []
    empty = np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)  # a chunk whose positions were all skipped
    desc = f"embedding shard {index}/{count}" if count > 1 else "embedding"
    # one display: the chunk-level bar; each chunk's encode runs without its own bar
    with progress(total, desc, enabled=show_progress_bar) as bar:
        kept = len(mine) - len(todo)
        if kept:
            bar.write(f"resuming: {kept} of {len(mine)} chunks already embedded in {parts}", file=sys.stderr)
        for note in notes:
            bar.write(note, file=sys.stderr)
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
            write_chunk(parts, chunk, vectors, metadata, digests[chunk])
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
    """All chunks of ``<out>/parts`` in order: (vectors, metadata, manifest). Fails if any chunk is missing or
    damaged (naming it). Chunk contents were checked against the input by the `embed_chunks` run that kept them."""
    parts = Path(out) / PARTS_DIR
    manifest = _read_manifest(parts)
    missing = [c for c in range(manifest["chunks"]) if not _chunk_path(parts, c).is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"{out}: {len(missing)} of {manifest['chunks']} chunks are not embedded yet ({shown}); "
                         "run the missing shards (or `index build` without --shard) first")
    vectors, metadata = [], []
    for chunk in range(manifest["chunks"]):
        path = _chunk_path(parts, chunk)
        chunk_vectors, chunk_metadata, _ = _read_chunk(path)
        if vectors and chunk_vectors.shape[1] != vectors[0].shape[1]:
            raise ValueError(f"{path}: vectors of dimension {chunk_vectors.shape[1]}, but earlier chunks have "
                             f"{vectors[0].shape[1]}")
        vectors.append(chunk_vectors)
        metadata += chunk_metadata
    if not vectors:
        raise ValueError(f"{out}: the manifest lists no chunks: nothing to index")
    return np.concatenate(vectors), metadata, manifest


def index_from_parts(out: str | os.PathLike, kind: str = "auto", build_info: dict | None = None,
                     **params) -> VectorIndex:
    """Merge ``<out>/parts`` into one `VectorIndex` saved in `out`."""
    vectors, metadata, manifest = merge_parts(out)
    if len(vectors) == 0:
        raise ValueError(f"{out}: every position was skipped (e.g. all tiles were nodata): nothing to index")
    info = {"source": manifest["source"], "instruction": manifest["instruction"],
            "preprocessing": manifest.get("preprocessing"), **(build_info or {})}
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
