"""A persisted vector index over VLM2GeoVec embeddings: exact and approximate (HNSW, IVF) cosine search.

    from vlm2geovec import load_model
    from vlm2geovec.index import VectorIndex, build_index_from_items

    index = build_index_from_items(load_model("ckpt"), items, metadata)   # embeds, then builds
    scores, ids, metas = index.search(query_vectors, k=10)
    index.save("out/index"); index = VectorIndex.load("out/index")

Embeddings are unit-normalised, so inner product = cosine similarity; every index uses the inner-product
metric. A folder written by `save` holds `index.faiss` (the faiss index), `metadata.jsonl` (one JSON object
per vector, in id order) and `index.json` (kind, dim, count, params, model fingerprint).

Metadata per vector is a free JSON-serialisable dict; these keys, when present, are validated:
`id` (str or int), `source` (str), `window` (pixel window [x0, y0, x1, y1] with x0 < x1, y0 < y1, or None),
`lat` (-90..90), `lon` (-180..180).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

KINDS = ("exact", "hnsw", "ivf")
AUTO_EXACT_BELOW = 50_000  # `kind="auto"`: exact search below this many vectors, HNSW from here on
EXACT_SUBSET_BELOW = 20_000  # a restricted search over at most this many ids compares them exactly
# Defaults from bench/RESULTS.md (recall@10 vs exact): HNSW 0.988 on real text embeddings and 0.965 on random
# vectors at 10^5, 1.0 on clustered ones at 10^6; IVF 0.964 on real embeddings at 10^5 (useless on random data).
# IVF nlist None: ~4*sqrt(n), at most n // 39 (faiss wants 39 training points per list).
DEFAULT_PARAMS = {
    "exact": {},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 512},
    "ivf": {"nlist": None, "nprobe": 64},
}
FORMAT_VERSION = 1
NORM_TOLERANCE = 1e-3
INDEX_FILE, METADATA_FILE, INFO_FILE = "index.faiss", "metadata.jsonl", "index.json"


def _faiss():
    try:
        import faiss
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("vlm2geovec.index needs faiss: pip install faiss-cpu") from error
    return faiss


def _as_matrix(vectors: Any, name: str, dim: int | None = None) -> np.ndarray:
    """Validate a (n, d) float matrix; return it as contiguous float32, unit-normalised (warning if it was not)."""
    array = np.asarray(vectors)
    if array.ndim == 1 and name == "queries":
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must not be empty; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a float array (float32 preferred); got dtype {array.dtype}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} have dimension {array.shape[1]}, but the index has dimension {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(f"{name} contain NaN or infinite values (rows {bad[:10].tolist()})")
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{name} contain zero vectors (rows {np.flatnonzero(norms == 0)[:10].tolist()}); cannot normalise")
    if np.abs(norms - 1).max() > NORM_TOLERANCE:
        warnings.warn(f"{name} are not unit-normalised (norms {norms.min():.4g}..{norms.max():.4g}); normalising them",
                      stacklevel=3)
    return np.ascontiguousarray(array / norms[:, None], dtype=np.float32)


def _check_number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}")


def validate_metadata(metadata: Sequence[dict] | None, count: int) -> list[dict]:
    """Check one JSON-serialisable dict per vector (see the module docstring); None gives `{"id": i}`."""
    if metadata is None:
        return [{"id": i} for i in range(count)]
    if isinstance(metadata, (dict, str, bytes)) or not isinstance(metadata, Sequence):
        raise ValueError(f"metadata must be a list of dicts, one per vector; got {type(metadata).__name__}")
    if len(metadata) != count:
        raise ValueError(f"metadata has {len(metadata)} entries but there are {count} vectors")
    checked = []
    for row, entry in enumerate(metadata):
        if not isinstance(entry, dict):
            raise ValueError(f"metadata[{row}] must be a dict; got {type(entry).__name__}")
        if "id" in entry and (isinstance(entry["id"], bool) or not isinstance(entry["id"], (str, int))):
            raise ValueError(f"metadata[{row}]['id'] must be a str or int; got {entry['id']!r}")
        if "source" in entry and entry["source"] is not None and not isinstance(entry["source"], str):
            raise ValueError(f"metadata[{row}]['source'] must be a str; got {entry['source']!r}")
        window = entry.get("window")
        if window is not None:
            if (not isinstance(window, (list, tuple)) or len(window) != 4
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in window)):
                raise ValueError(f"metadata[{row}]['window'] must be [x0, y0, x1, y1] or None; got {window!r}")
            x0, y0, x1, y1 = window
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"metadata[{row}]['window'] needs 0 <= x0 < x1 and 0 <= y0 < y1; got {list(window)}")
        if entry.get("lat") is not None:
            _check_number(entry["lat"], f"metadata[{row}]['lat']", -90, 90)
        if entry.get("lon") is not None:
            _check_number(entry["lon"], f"metadata[{row}]['lon']", -180, 180)
        try:
            entry = json.loads(json.dumps(entry, allow_nan=False))  # a JSON round trip: tuples -> lists, no aliasing
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{row}] is not JSON-serialisable: {error}") from None
        checked.append(entry)
    return checked


FINGERPRINT_PREFIX = "weights-sha256:"  # the old 16-values-per-tensor fingerprints began with "sha256:"


def model_fingerprint(model) -> str:
    """A fingerprint of every weight: sha256 over each state-dict entry's name, dtype, shape and all of its bytes,
    so one changed value anywhere changes it. About as fast as reading the weights once: measured on a shared
    CPU, 100 M random parameters hash in 0.5 s as float32 (400 MB) and 0.3 s as bfloat16, so a 2B bfloat16 model
    (4.4 GB) takes ~5 s; the nano model a few ms."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        if tensor.numel() == 0:
            continue
        # raw bytes through a uint8 view: numpy has no bfloat16, and a float() cast would cost a full copy
        raw = tensor.cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(raw.numpy()))
    return FINGERPRINT_PREFIX + digest.hexdigest()


def fingerprint_mismatch(expected: str | None, model, model_name: str) -> str | None:
    """None when `model`'s weights are those `expected` names (or nothing is expected); else why not, in words."""
    if not expected:
        return None
    if not expected.startswith(FINGERPRINT_PREFIX):
        return (f"this index was made by an older vlm2geovec whose weights fingerprint ({expected}) covered only a "
                f"few values per tensor and cannot be checked against {model_name}: rebuild the index")
    if model_fingerprint(model) != expected:
        return (f"{model_name} is not the model this index was built with (weights fingerprint differs): its "
                "vectors would not be comparable")
    return None


def model_preprocessing(model) -> dict | None:
    """The processor settings that shape a model's vectors besides its weights (`VLM2GeoVecProcessor.settings`), or
    None for a model without a VLM2GeoVec processor."""
    for candidate in (model, getattr(model, "_first_module", lambda: None)()):
        processor = getattr(candidate, "processor", None)
        if processor is not None and hasattr(processor, "settings"):
            return processor.settings()
    try:
        return model[0].processor.settings()
    except (TypeError, AttributeError, IndexError, KeyError):
        return None


def preprocessing_mismatch(recorded: dict | None, model, model_name: str, ignore: tuple[str, ...] = ()) -> str | None:
    """None when `model` prepares items as `recorded` says the index's vectors were prepared; else which settings
    differ, in words (JSON round trips turn tuples into lists, so both sides are compared as JSON)."""
    current = model_preprocessing(model)
    if not recorded or current is None:
        return None
    differing = sorted(key for key in set(recorded) | set(current) if key not in ignore
                       and json.dumps(recorded.get(key), sort_keys=True) != json.dumps(current.get(key), sort_keys=True))
    if not differing:
        return None
    return (f"{model_name} prepares items differently from the ones this index was built with (processor settings "
            f"{', '.join(differing)} differ): its query vectors would not be comparable; use the processor settings "
            "the index records (index.json, build.preprocessing) or rebuild the index")


class VectorIndex:
    """Cosine-similarity search over unit-normalised vectors with per-vector metadata. Use `build` or `load`."""

    def __init__(self, faiss_index, metadata: list[dict], kind: str, params: dict, fingerprint: str | None = None,
                 build_info: dict | None = None):
        self.index = faiss_index
        self.metadata = metadata
        self.kind = kind
        self.params = params
        self.fingerprint = fingerprint
        self.build_info = build_info or {}  # how the vectors were made: model, source, instruction (for `search`)
        self._latlon: tuple[np.ndarray, np.ndarray] | None = None  # metadata coordinates, for region queries
        self._apply_search_params()

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, count={len(self)}, dim={self.dim}, params={self.params})"

    @classmethod
    def build(cls, vectors: np.ndarray, metadata: Sequence[dict] | None = None, kind: str = "auto",
              fingerprint: str | None = None, build_info: dict | None = None, **params) -> "VectorIndex":
        """Index `vectors` (n, d) float32 with one metadata dict each.

        kind: "exact" (IndexFlatIP), "hnsw" (IndexHNSWFlat, inner product; params M, ef_construction, ef_search),
        "ivf" (IndexIVFFlat, inner product; params nlist, nprobe) or "auto" (exact below 50k vectors, else HNSW).
        """
        faiss = _faiss()
        vectors = _as_matrix(vectors, "vectors")
        count, dim = vectors.shape
        metadata = validate_metadata(metadata, count)
        if kind == "auto":
            kind = "exact" if count < AUTO_EXACT_BELOW else "hnsw"
        if kind not in KINDS:
            raise ValueError(f"kind must be 'auto' or one of {KINDS}; got {kind!r}")
        unknown = set(params) - set(DEFAULT_PARAMS[kind])
        if unknown:
            raise ValueError(f"unknown parameters for a {kind} index: {sorted(unknown)} "
                             f"(known: {sorted(DEFAULT_PARAMS[kind])})")
        params = {**DEFAULT_PARAMS[kind], **params}
        if kind == "exact":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            for key in params:
                if int(params[key]) < 1:
                    raise ValueError(f"{key} must be a positive integer; got {params[key]!r}")
                params[key] = int(params[key])
            index = faiss.IndexHNSWFlat(dim, params["M"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params["ef_construction"]
        else:
            nlist = params["nlist"] or max(1, min(int(4 * math.sqrt(count)), count // 39))
            if not 1 <= int(nlist) <= count:
                raise ValueError(f"nlist must be between 1 and the number of vectors ({count}); got {nlist}")
            params["nlist"], params["nprobe"] = int(nlist), int(params["nprobe"])
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        index.add(vectors)
        return cls(index, metadata, kind, params, fingerprint, build_info)

    def _apply_search_params(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = int(self.params["ef_search"])
        elif self.kind == "ivf":
            self.index.nprobe = int(self.params["nprobe"])

    def set_search_params(self, **params) -> None:
        """Change the speed/recall trade-off of a built or loaded index: ef_search (HNSW) or nprobe (IVF)."""
        allowed = {"hnsw": {"ef_search"}, "ivf": {"nprobe"}}.get(self.kind, set())
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"a {self.kind} index has no search parameters {sorted(unknown)} (allowed: {sorted(allowed)})")
        for key, value in params.items():
            if int(value) < 1:
                raise ValueError(f"{key} must be a positive integer; got {value!r}")
            self.params[key] = int(value)
        self._apply_search_params()

    def search(self, queries: np.ndarray, k: int = 10, allowed_ids: Sequence[int] | np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, list[list[dict | None]]]:
        """Top-k by cosine similarity: (scores (m, k) float32, ids (m, k) int64, metadata lists (m x k)).

        `allowed_ids` restricts the search to those vector ids (e.g. `ids_within` a region) — a filter inside the
        search, not on its results: up to `EXACT_SUBSET_BELOW` ids the allowed vectors are compared exactly (a
        graph walk restricted to a few nodes would miss some), above that the index searches with a faiss ID
        selector. Slots without a neighbour (fewer allowed ids than k, or an approximate index that found fewer) hold id -1,
        score -inf and metadata None.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the number of indexed vectors ({len(self)})")
        queries = _as_matrix(queries, "queries", dim=self.dim)
        if allowed_ids is None:
            scores, ids = self.index.search(queries, int(k))
        else:
            allowed = self._checked_ids(allowed_ids)
            if self.kind == "exact" or len(allowed) > EXACT_SUBSET_BELOW:
                scores, ids = self.index.search(queries, int(k), params=self._selection(allowed))
            else:
                scores, ids = self._subset_search(queries, int(k), allowed)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        metas = [[self.metadata[i] if i >= 0 else None for i in row] for row in ids.tolist()]
        return scores, ids.astype(np.int64), metas

    def _checked_ids(self, allowed_ids) -> np.ndarray:
        ids = np.unique(np.asarray(allowed_ids, dtype=np.int64))
        if ids.size == 0:
            raise ValueError("allowed_ids is empty: no vector to search")
        if ids[0] < 0 or ids[-1] >= len(self):
            raise ValueError(f"allowed_ids must be vector ids in 0..{len(self) - 1}")
        return ids

    def _subset_search(self, queries: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self.vectors(ids).T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(sims, top, axis=1)
        found = ids[top]
        if top.shape[1] < k:  # fewer allowed vectors than k: pad like faiss does
            pad = k - top.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            found = np.pad(found, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), found

    def _selection(self, ids: np.ndarray):
        faiss = _faiss()
        # search parameters replace the index's own settings for this call: carry efSearch / nprobe over
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(self.params["ef_search"])
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = int(self.params["nprobe"])
        else:
            params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorBatch(ids)  # copies the ids; faiss keeps the selector alive with params
        return params

    def ids_within(self, south: float, west: float, north: float, east: float) -> np.ndarray:
        """Ids of the vectors whose metadata ``lat``/``lon`` lie in a latitude/longitude box (degrees; a box
        with ``west > east`` crosses the antimeridian). Vectors without coordinates are never inside."""
        for name, value, low, high in (("south", south, -90, 90), ("north", north, -90, 90),
                                       ("west", west, -180, 180), ("east", east, -180, 180)):
            _check_number(value, f"region {name}", low, high)
        if south > north:
            raise ValueError(f"region south ({south}) is north of its north ({north})")
        lat, lon = self._coordinates()
        with np.errstate(invalid="ignore"):  # NaN (no coordinates) compares False: never inside
            inside = (lat >= south) & (lat <= north)
            inside &= ((lon >= west) & (lon <= east)) if west <= east else ((lon >= west) | (lon <= east))
        return np.flatnonzero(inside).astype(np.int64)

    def _coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Metadata lat/lon as float arrays (NaN where absent), built once: region queries stay vectorised."""
        if self._latlon is None or len(self._latlon[0]) != len(self.metadata):
            lat = np.array([m.get("lat") if m.get("lat") is not None else np.nan for m in self.metadata], dtype=float)
            lon = np.array([m.get("lon") if m.get("lon") is not None else np.nan for m in self.metadata], dtype=float)
            lat[np.isnan(lon)] = np.nan
            self._latlon = (lat, lon)
        return self._latlon

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """The indexed vectors (n, d) float32 in id order, or those of `ids` (IVF lists are mapped back to ids)."""
        if self.kind == "ivf":
            self.index.make_direct_map()
        if ids is None:
            return self.index.reconstruct_n(0, len(self))
        return self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def export_parquet(self, path: str | Path, batch_rows: int = 65_536) -> Path:
        """Write one row per vector — ``row`` (the index id), ``vector`` (float32 list), the validated metadata
        keys ``id``/``source``/``window``/``lat``/``lon`` as columns and any other metadata as a JSON ``extra``
        column — the shape vector databases (LanceDB, Milvus, Qdrant, Vespa, pgvector, Elasticsearch) ingest."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = self.vectors()
        known = ("id", "source", "window", "lat", "lon")
        schema = pa.schema([("row", pa.int64()), ("vector", pa.list_(pa.float32(), self.dim)), ("id", pa.string()),
                            ("source", pa.string()), ("window", pa.list_(pa.float64(), 4)), ("lat", pa.float64()),
                            ("lon", pa.float64()), ("extra", pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            for start in range(0, len(self), batch_rows):
                metas = self.metadata[start : start + batch_rows]
                block = vectors[start : start + len(metas)]
                extra = [{k: v for k, v in m.items() if k not in known} for m in metas]
                columns = {
                    "row": pa.array(range(start, start + len(metas)), pa.int64()),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), self.dim),
                    "id": [None if m.get("id") is None else str(m["id"]) for m in metas],
                    "source": [m.get("source") for m in metas],
                    "window": [m.get("window") for m in metas],
                    "lat": [m.get("lat") for m in metas],
                    "lon": [m.get("lon") for m in metas],
                    "extra": [json.dumps(e, ensure_ascii=False) if e else None for e in extra],
                }
                writer.write_table(pa.table(columns, schema=schema))
        return path

    def info(self) -> dict:
        return {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "count": len(self),
                "metric": "inner_product", "params": self.params, "model_fingerprint": self.fingerprint, "build": self.build_info}

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / INDEX_FILE))
        with open(folder / METADATA_FILE, "w", encoding="utf-8") as handle:
            for entry in self.metadata:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        (folder / INFO_FILE).write_text(json.dumps(self.info(), indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "VectorIndex":
        """Read a folder written by `save`. Anything missing, truncated or garbled is a ValueError (or
        FileNotFoundError) naming the file, and the line or field, at fault."""
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"index folder not found: {folder} (no such folder)")
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is a file, not an index folder")
        missing = [name for name in (INDEX_FILE, METADATA_FILE, INFO_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} is not a saved VectorIndex (missing {', '.join(missing)})")
        info = _read_info(folder / INFO_FILE)
        try:
            index = _faiss().read_index(str(folder / INDEX_FILE))
        except RuntimeError as error:  # faiss reports truncation and garbage as RuntimeError with a C++ trace
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise ValueError(f"{folder / INDEX_FILE}: not a readable faiss index (truncated or corrupt: {reason}); "
                             "rebuild it with `vlm2geovec index merge --out FOLDER` from its parts/") from None
        metadata = _read_metadata(folder / METADATA_FILE)
        if index.ntotal != info["count"] or len(metadata) != info["count"] or index.d != info["dim"]:
            raise ValueError(f"{folder} is inconsistent: index has {index.ntotal} x {index.d}, metadata "
                             f"{len(metadata)} rows, index.json says {info['count']} x {info['dim']}")
        kind = info["kind"]
        if (kind == "hnsw") != hasattr(index, "hnsw") or (kind == "ivf") != hasattr(index, "nprobe"):
            raise ValueError(f"{folder / INFO_FILE}: field 'kind' says {kind!r}, but {INDEX_FILE} holds a "
                             f"{type(index).__name__}")
        try:
            return cls(index, metadata, kind, info["params"], info.get("model_fingerprint"), info.get("build"))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{folder / INFO_FILE}: field 'params' does not fit a {kind} index ({error!r})") from None


def _read_info(path: Path) -> dict:
    """index.json, checked field by field (a hand-edited or truncated file names what is wrong)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = info.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: field 'format_version' must be an integer; got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: written by a newer version (format {version}); upgrade vlm2geovec")
    for key, kind in (("kind", str), ("dim", int), ("count", int), ("params", dict)):
        if key not in info:
            raise ValueError(f"{path}: field {key!r} is missing")
        if isinstance(info[key], bool) or not isinstance(info[key], kind):
            raise ValueError(f"{path}: field {key!r} must be {kind.__name__}; got {info[key]!r}")
    if info["kind"] not in KINDS:
        raise ValueError(f"{path}: field 'kind' must be one of {KINDS}; got {info['kind']!r}")
    for key in ("model_fingerprint",):
        if info.get(key) is not None and not isinstance(info[key], str):
            raise ValueError(f"{path}: field {key!r} must be a string; got {info[key]!r}")
    if info.get("build") is not None and not isinstance(info["build"], dict):
        raise ValueError(f"{path}: field 'build' must be an object; got {info['build']!r}")
    return info


def _read_metadata(path: Path) -> list[dict]:
    metadata = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({error.msg}, column {error.colno})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object per vector, got {type(entry).__name__}")
            metadata.append(entry)
    return metadata


def build_index_from_items(model, items: Sequence, metadata: Sequence[dict] | None = None, batch_size: int = 16,
                           kind: str = "auto", fingerprint: str | None = None, **params) -> VectorIndex:
    """Embed `items` with a SentenceTransformer (`vlm2geovec.load_model`) and index them.

    The fingerprint defaults to `model_fingerprint(model)`, stored in `index.json` to catch mixing models.
    """
    if metadata is not None and len(metadata) != len(items):
        raise ValueError(f"metadata has {len(metadata)} entries but there are {len(items)} items")
    vectors = model.encode(list(items), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True)
    if fingerprint is None:
        fingerprint = model_fingerprint(model)
    return VectorIndex.build(np.asarray(vectors, dtype=np.float32), metadata, kind=kind, fingerprint=fingerprint,
                             **params)
