"""The analyst's tools as plain functions on unit vectors (the UI only calls them; tests call them directly):
relevance feedback, the few-shot map, change between two dates, and GeoJSON / GeoParquet of tile footprints.

Relevance feedback is Rocchio's query update, q' = alpha*q + beta*mean(p - m) - gamma*mean(n - m), with m the mean
vector of the searched collection. Chosen over a linear model on the marked tiles because it works from the first
mark (one positive and no negative is the common case), needs no fitting, keeps the original query in the loop
(alpha), and is deterministic. The marked vectors are centred on the collection mean so the update moves the query
toward what sets a positive apart from the collection rather than toward the direction every tile shares (small
and untrained models put all tiles in a narrow cone, where raw means would barely change the ranking).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROCCHIO = {"alpha": 1.0, "beta": 0.75, "gamma": 0.25}  # the textbook weights (Manning et al., IR book, ch. 9)
FEWSHOT_METHODS = ("linear probe", "nearest centroid")
CONFIDENCE_TEMPERATURE = 0.05  # softmax temperature over centroid cosines (the training temperature of the recipe)
MARK_LABELS = ("relevant", "not relevant")


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def rocchio(query: np.ndarray | None, vectors: np.ndarray, positives: Sequence[int], negatives: Sequence[int],
            alpha: float = ROCCHIO["alpha"], beta: float = ROCCHIO["beta"], gamma: float = ROCCHIO["gamma"]) -> np.ndarray:
    """The updated unit query vector. ``query`` None: search by example (the positives alone)."""
    if not positives and not negatives:
        raise ValueError("mark at least one tile as relevant or not relevant")
    if query is None and not positives:
        raise ValueError("without a previous query, mark at least one tile as relevant")
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    update = np.zeros(vectors.shape[1])
    if query is not None:
        update += alpha * np.asarray(query, dtype=np.float64)
    if positives:
        update += beta * (vectors[list(positives)] - mean).mean(axis=0)
    if negatives:
        update -= gamma * (vectors[list(negatives)] - mean).mean(axis=0)
    return _unit(update).astype(np.float32)


@dataclass
class FewShotMap:
    classes: list[str]
    labels: list[str]  # one per tile
    confidence: np.ndarray  # (n,) probability of the assigned class
    probabilities: np.ndarray  # (n, classes)
    method: str

    def counts(self) -> dict[str, int]:
        return {c: self.labels.count(c) for c in self.classes}


def fewshot_map(vectors: np.ndarray, labelled: Mapping[int, str], method: str = "linear probe",
                seed: int = 0) -> FewShotMap:
    """Label every tile from a few labelled ones (position -> class).

    ``linear probe``: multinomial logistic regression (L2 1e-3, L-BFGS, torch) on the vectors centred and scaled
    by the collection's own mean and spread, so the few labelled tiles are fitted (they get their own labels) and
    every other tile gets the class whose side of the learnt boundaries it falls on. ``nearest centroid``: cosine
    to each class's mean (centred vectors); confidence is a softmax over those cosines at temperature 0.05.
    """
    if method not in FEWSHOT_METHODS:
        raise ValueError(f"method must be one of {FEWSHOT_METHODS}; got {method!r}")
    classes = sorted(set(labelled.values()))
    if len(classes) < 2:
        raise ValueError(f"label tiles of at least two classes; got {classes or 'none'}")
    vectors = np.asarray(vectors, dtype=np.float64)
    mean, spread = vectors.mean(axis=0), vectors.std(axis=0) + 1e-6
    features = (vectors - mean) / spread
    train = np.array(list(labelled), dtype=np.int64)
    targets = np.array([classes.index(labelled[i]) for i in train], dtype=np.int64)
    if method == "nearest centroid":
        centroids = np.stack([features[train[targets == c]].mean(axis=0) for c in range(len(classes))])
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        logits = unit @ centroids.T / CONFIDENCE_TEMPERATURE
    else:
        import torch

        generator = torch.Generator().manual_seed(seed)
        x = torch.tensor(features, dtype=torch.float64)
        layer = torch.nn.Linear(x.shape[1], len(classes), dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator, dtype=torch.float64) * 0.01)
            layer.bias.zero_()
        optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
        xt, yt = x[torch.from_numpy(train)], torch.from_numpy(targets)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(layer(xt), yt) + 1e-3 * layer.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            logits = layer(x).numpy()
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    best = probabilities.argmax(axis=1)
    return FewShotMap(classes, [classes[i] for i in best], probabilities[np.arange(len(best)), best], probabilities,
                      method)


def change_distance(vectors_a: np.ndarray, vectors_b: np.ndarray) -> np.ndarray:
    """Per-tile cosine distance ``1 - a·b`` between the two dates' unit vectors (0: same embedding, 2: opposite)."""
    a, b = np.asarray(vectors_a, dtype=np.float64), np.asarray(vectors_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two dates have {a.shape[0]} and {b.shape[0]} tiles: they must be tiled alike")
    return np.clip(1.0 - np.einsum("ij,ij->i", a, b), 0.0, 2.0)


# ------------------------------------------------------------------------------------------------ export

def footprints_geojson(tiles: Sequence, properties: Sequence[dict]) -> dict:
    """A GeoJSON FeatureCollection (RFC 7946, WGS84) of the tiles' footprints with one property dict each."""
    features = []
    for tile, props in zip(tiles, properties, strict=True):
        if tile.footprint:
            ring = [[round(lon, 8), round(lat, 8)] for lon, lat in tile.footprint]
            geometry = {"type": "Polygon", "coordinates": [ring]}
        else:  # a gallery tile: its centre
            geometry = {"type": "Point", "coordinates": [round(tile.lon, 8), round(tile.lat, 8)]}
        features.append({"type": "Feature", "geometry": geometry,
                         "properties": {"id": tile.id, "lat": round(tile.lat, 8), "lon": round(tile.lon, 8),
                                        **({"window": list(tile.window)} if tile.window else {}), **props}})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: Path, collection: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(collection, indent=1) + "\n", encoding="utf-8")
    return path


def read_marks(data: dict, what: str = "Marked set") -> tuple[list[str], list[str]]:
    """(relevant ids, not relevant ids) from a GeoJSON written by the marked-set export."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        raise ValueError(f"{what}: expected a GeoJSON FeatureCollection exported by this Space")
    marks: dict[str, list[str]] = {label: [] for label in MARK_LABELS}
    for number, feature in enumerate(data["features"], start=1):
        props = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(props, dict) or not isinstance(props.get("id"), str):
            raise ValueError(f"{what}: feature {number} has no 'id' property (the tile id)")
        label = props.get("label")
        if label not in MARK_LABELS:
            raise ValueError(f"{what}: feature {number} ({props['id']}) has label {label!r}; expected one of "
                             f"{list(MARK_LABELS)}")
        marks[label].append(props["id"])
    return marks["relevant"], marks["not relevant"]


def geoparquet_available() -> bool:
    """Whether the package's GeoParquet exporter can run (the ``geoparquet`` extra: shapely, pyproj)."""
    try:
        import pyarrow  # noqa: F401
        import pyproj  # noqa: F401
        import shapely  # noqa: F401
    except ImportError:
        return False
    return True


def write_geoparquet(path: Path, collection, properties: Sequence[dict]) -> Path:
    """The collection's tiles, vectors and ``properties`` (one dict per tile) as GeoParquet 1.1 through the
    package's exporter (`vlm2geovec.geoparquet.export_geoparquet`: footprints from the raster, EPSG:4326)."""
    from vlm2geovec.geoparquet import export_geoparquet
    from vlm2geovec.index import VectorIndex

    metadata = []
    for tile, props in zip(collection.tiles, properties, strict=True):
        where = ({"source": str(collection.path), "window": list(tile.window)}
                 if collection.path is not None and tile.window else {})
        metadata.append({"id": tile.id, "lat": tile.lat, "lon": tile.lon, **where, **props})
    index = VectorIndex.build(collection.vectors, metadata, kind="exact",
                              build_info={"source": collection.info.get("raster", collection.name),
                                          "instruction": "Represent the given remote-sensing image."})
    return export_geoparquet(index, path)
