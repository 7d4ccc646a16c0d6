"""The STAC record of exported embeddings (`vlm2geovec.stac`, ``index export --stac DIR``): a Collection and Items,
validated offline against the STAC 1.1.0 core schemas and the embeddings extension schema."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.battery import expect_error, record_correct
from vlm2geovec import load_model
from vlm2geovec.cli import main
from vlm2geovec.corpus import build_corpus_index, open_source
from vlm2geovec.index import VectorIndex

pystac = pytest.importorskip("pystac")
pytest.importorskip("jsonschema")
pytest.importorskip("geopandas")
pytest.importorskip("rasterio")

from vlm2geovec.stac import EXTENSION, offline_validator, validate_offline, write_stac  # noqa: E402


@pytest.fixture(scope="module")
def landsat_export(nano_dir, tmp_path_factory):
    from vlm2geovec.data.assets import georeferenced_rasters

    model = load_model(str(nano_dir), device="cpu")
    folder = tmp_path_factory.mktemp("stac")
    source = open_source(georeferenced_rasters()["landsat_B3"], tile_size=200, bands=[1])
    build_corpus_index(model, source, folder / "index", chunk_size=4, show_progress_bar=False,
                       instruction="Represent the tile", model_name=str(nano_dir))
    return folder, source.tiler


def test_cli_export_writes_a_valid_collection_with_the_embedding_fields(landsat_export, tmp_path, capsys):
    folder, tiler = landsat_export
    index = VectorIndex.load(folder / "index")
    assert main(["index", "export", str(folder / "index"), "--to", str(tmp_path / "v.parquet"), "--quantize", "int8",
                 "--stac", str(tmp_path / "stac")]) == 0
    assert "wrote a STAC collection" in capsys.readouterr().out
    collection = pystac.Collection.from_file(str(tmp_path / "stac" / "collection.json"))
    validate_offline(collection)  # re-read from disk: what a STAC client sees
    items = list(collection.get_items())
    assert len(items) == 1
    item = items[0]
    props = item.properties
    assert EXTENSION in item.stac_extensions and EXTENSION in collection.stac_extensions
    assert props["embeddings:model_fingerprint"] == index.fingerprint
    assert props["embeddings:instruction"] == "Represent the tile"
    assert props["embeddings:dimensions"] == index.dim and props["embeddings:data_type"] == "int8"
    assert props["embeddings:quantization"]["type"] == "int8" and props["embeddings:quantization"]["scale"] > 0
    assert props["embeddings:chip_layout"] == {"size": 200, "stride": 200, "bands": [1], "edge": "drop"}
    assert props["embeddings:count"] == len(index) and props["embeddings:model"] == index.build_info["model"]
    assert props["embeddings:datetime_source"] == "processing"  # the Landsat subset carries no acquisition date
    assert collection.extra_fields["embeddings:model_fingerprint"] == index.fingerprint
    # the asset is the GeoParquet file, found from the Item's own location
    asset = item.assets["embeddings"]
    assert asset.media_type == "application/vnd.apache.parquet" and "embeddings" in asset.roles
    assert json.loads((tmp_path / "stac" / item.id / f"{item.id}.json").read_text())["assets"]["embeddings"]["href"] \
        == "../../v.parquet"
    assert asset.get_absolute_href() == str((tmp_path / "v.parquet").resolve())
    # spatial extent: the tiles' corners; every tile corner lies in the Item bbox, and the extent is that bbox
    corners = []
    for meta in index.metadata:
        x0, y0, x1, y1 = meta["window"]
        corners.append(tiler.pixel_to_lonlat([x0, x0, x1, x1], [y0, y1, y1, y0]))
    lons = np.concatenate([c[0] for c in corners])
    lats = np.concatenate([c[1] for c in corners])
    west, south, east, north = item.bbox
    assert west == pytest.approx(lons.min()) and east == pytest.approx(lons.max())
    assert south == pytest.approx(lats.min()) and north == pytest.approx(lats.max())
    assert collection.extent.spatial.bboxes == [item.bbox]
    assert collection.extent.temporal.intervals[0][0] == item.datetime


def test_validation_catches_missing_fields_and_never_goes_online(landsat_export, tmp_path):
    folder, _ = landsat_export
    from vlm2geovec.geoparquet import export_geoparquet

    path = export_geoparquet(VectorIndex.load(folder / "index"), tmp_path / "v.parquet")
    collection = write_stac(path, tmp_path / "stac")
    item = next(iter(collection.get_items()))
    del item.properties["embeddings:dimensions"]
    expect_error(lambda: validate_offline(item), match=[f"STAC Item {item.id!r} does not validate",
                                                        "embeddings:dimensions"])
    item.properties["embeddings:dimensions"] = 128
    item.properties["embeddings:data_type"] = "float64"
    expect_error(lambda: validate_offline(item), match="float64")
    # an extension whose schema is not bundled is refused, not downloaded
    item.properties["embeddings:data_type"] = "float32"
    item.stac_extensions.append("https://stac-extensions.github.io/eo/v2.0.0/schema.json")
    with pytest.raises(Exception, match="not bundled"):
        item.validate(validator=offline_validator())


@pytest.mark.battery
def test_stac_needs_an_export_of_ours_and_a_folder(landsat_export, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, _ = landsat_export
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "foreign.parquet")
    expect_error(lambda: write_stac(tmp_path / "foreign.parquet", tmp_path / "s"),
                 match=r"foreign\.parquet: no 'vlm2geovec' file metadata")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["index", "export", str(folder / "index"), "--to", str(tmp_path / "v.parquet"), "--stac",
              str(tmp_path / "afile")])
    assert info.value.code == f"error: --stac {tmp_path / 'afile'} is a file, not a folder"
    record_correct()
