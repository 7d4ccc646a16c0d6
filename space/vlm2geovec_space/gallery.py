"""Searchable collections of geo-tagged tiles: the built-in gallery of real tiles and, in `rasters`, the analyst's
own raster. Vectors are cached on disk, keyed by the model and the tiles' content; search goes through
``vlm2geovec.index.VectorIndex``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .settings import GALLERY, GALLERY_VERSION, INSTRUCTIONS, S2_CHIP, InputError

logger = logging.getLogger("vlm2geovec.space")
EMBED_BATCH = 16  # tiles per forward pass (and per progress step)


@dataclass(frozen=True)
class Tile:
    id: str
    source: str
    image: Image.Image
    lat: float
    lon: float
    label: str
    window: tuple[int, int, int, int] | None = None  # pixel window in its raster (indexed rasters only)
    footprint: tuple[tuple[float, float], ...] | None = None  # closed (lon, lat) ring of the window's corners


def gallery_tiles() -> list[Tile]:
    """Real geo-tagged tiles: the Sentinel-2 scene in 128 px chips (1.28 km) and the NEON airborne tiles."""
    from vlm2geovec.data import assets

    tiles = [
        Tile(f"s2_r{c.row:02d}_c{c.col:02d}", "Sentinel-2 L1C, 10 m (Virginia Eastern Shore)", c.image, c.lat,
             c.lon, f"land cover: {c.label}")
        for c in assets.sentinel2_chips(S2_CHIP)
    ]
    tiles += [
        Tile(f"neon_{t.name}", f"NEON airborne RGB, 0.1 m ({t.site})", t.image, t.lat, t.lon,
             f"{len(t.boxes)} annotated tree crowns")
        for t in assets.neon_tiles()
    ]
    return tiles


def gallery_digest(tiles: Sequence[Tile]) -> str:
    """Content hash of the gallery (ids, positions and pixels) and of how it is embedded."""
    from vlm2geovec import INPUT_FORMAT_VERSION

    digest = hashlib.sha256(json.dumps([GALLERY_VERSION, INPUT_FORMAT_VERSION, INSTRUCTIONS["gallery"]]).encode())
    for tile in tiles:
        image = tile.image.convert("RGB")
        digest.update(json.dumps([tile.id, tile.lat, tile.lon, image.size]).encode())
        digest.update(hashlib.sha256(image.tobytes()).digest())
    return digest.hexdigest()


@dataclass
class Collection:
    """Tiles, their unit vectors and a `VectorIndex` over them; ``name`` is the search target that picks it."""

    name: str
    tiles: list[Tile]
    vectors: np.ndarray  # (n, dim) float32, unit rows
    digest: str
    cache_file: Path | None
    source: str  # "computed" or "disk cache"
    seconds: float
    info: dict = field(default_factory=dict)  # how it was made (raster, tiling options)
    path: Path | None = None  # the raster file (indexed rasters only; server-side, never shown)
    latlon: np.ndarray = field(init=False)

    def __post_init__(self):
        from vlm2geovec.index import VectorIndex

        self.latlon = np.array([[t.lat, t.lon] for t in self.tiles], dtype=np.float64).reshape(-1, 2)
        self._positions = {t.id: i for i, t in enumerate(self.tiles)}
        self.index = VectorIndex.build(self.vectors, [{"id": t.id, "lat": t.lat, "lon": t.lon} for t in self.tiles],
                                       kind="exact")

    def __len__(self) -> int:
        return len(self.tiles)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(position, cosine) of the top-k tiles for one query vector."""
        scores, ids, _ = self.index.search(np.asarray(vector, dtype=np.float32)[None, :], min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def positions(self, ids: Sequence[str], what: str) -> list[int]:
        """Positions of tile ids; an unknown id is named with a few valid ones."""
        unknown = [i for i in ids if i not in self._positions]
        if unknown:
            examples = ", ".join(t.id for t in self.tiles[:3])
            raise InputError(f"{what}: no tile {unknown[0]!r} in {self.describe()} (ids look like {examples}).")
        return [self._positions[i] for i in ids]

    def describe(self) -> str:
        return "the gallery" if self.name == GALLERY else f"raster {self.info.get('raster', self.name)!r}"


def embed_collection(name: str, tiles: list[Tile], digest: str, encode: Callable, fingerprint: str | None,
                     cache_file: Path | None, info: dict | None = None,
                     progress: Callable[[int, int], None] | None = None, path: Path | None = None) -> Collection:
    """The tiles' vectors from ``cache_file`` when it holds this model's vectors of these tiles, else embedded
    (``encode(items, instruction, names)``, in batches so ``progress(done, total)`` can move) and cached."""
    start = time.perf_counter()
    if cache_file is not None and cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                ids, vectors = [str(i) for i in data["ids"]], data["vectors"].astype(np.float32)
                meta = json.loads(str(data["meta"]))
            if ids == [t.id for t in tiles] and meta.get("fingerprint") == fingerprint and meta.get("digest") == digest:
                if progress:
                    progress(len(tiles), len(tiles))
                return Collection(name, tiles, vectors, digest, cache_file, "disk cache",
                                  time.perf_counter() - start, info or {}, path)
        except (OSError, ValueError, KeyError) as error:
            logger.warning("ignoring unreadable embedding cache %s: %s", cache_file, error)
    if fingerprint is None:
        logger.warning("no weights fingerprint: %s is embedded without a disk cache", name)
    logger.info("embedding %s (%d tiles)", name, len(tiles))
    parts = []
    for begin in range(0, len(tiles), EMBED_BATCH):
        batch = tiles[begin:begin + EMBED_BATCH]
        parts.append(encode([{"image": t.image} for t in batch], INSTRUCTIONS["gallery"], [f"tile {t.id}" for t in batch]))
        if progress:
            progress(begin + len(batch), len(tiles))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    if cache_file is not None and fingerprint is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.stem}.{os.getpid()}.tmp.npz")
        meta = json.dumps({"fingerprint": fingerprint, "digest": digest, "instruction": INSTRUCTIONS["gallery"],
                           "created": time.time(), **({"info": info} if info else {})})
        np.savez(tmp, ids=np.array([t.id for t in tiles]), vectors=vectors, meta=np.array(meta))
        os.replace(tmp, cache_file)
    return Collection(name, tiles, vectors, digest, cache_file, "computed", time.perf_counter() - start, info or {},
                      path)
