"""Battery: `vlm2geovec rsmeb build --source NAME --raw DIR` on damaged, missing and unusual raw releases.

Every case ends in one ``error:`` line naming the file (and row), or in a written dataset checked against
what the model itself would see (tests/battery.py).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from processing_vlm2geovec import load_image
from rsmeb_eval.builders import SOURCES
from rsmeb_eval.dataset_io import load_task
from tests.battery import expect_cli_error, record_correct, run_cli
from tests.test_builders import damage, write_release
from vlm2geovec.cli import main

pytestmark = pytest.mark.battery

ALL_SOURCES = sorted(SOURCES)
DAMAGEABLE = ["eurosat", "ucmerced", "rsicd", "dior-rsvg", "rsvqa-lr", "patterncom", "geo-tiles"]  # tests.test_builders.damage


def cli_error(argv: list[str], *patterns: str) -> str:
    """In-process CLI run that must end in one ``error:`` line matching every pattern."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message.strip(), message
    for pattern in patterns:
        assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    from tests.battery import _record

    _record("clear_error")
    return message


@pytest.mark.parametrize("source", DAMAGEABLE)
def test_damaged_row_is_named(source, tmp_path):
    raw = write_release(source, tmp_path / "raw")
    file, row, _ = damage(source, raw)
    cli_error(["rsmeb", "build", "--source", source, "--raw", str(raw), "--out", str(tmp_path / "out")],
              re.escape(f"{file}:{row}: "))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("**/*.parquet"))


@pytest.mark.parametrize("source", DAMAGEABLE)
def test_damaged_row_skipped_on_request(source, tmp_path, capsys):
    raw = write_release(source, tmp_path / "raw")
    file, row, (task, gone) = damage(source, raw)
    assert main(["rsmeb", "build", "--source", source, "--raw", str(raw), "--out", str(tmp_path / "out"),
                 "--on-error", "skip"]) == 0
    assert f"skipped {file}:{row}:" in capsys.readouterr().out
    queries, _ = load_task(tmp_path / "out", task, "test")
    assert len(queries) > 0
    if gone is not None:
        assert gone not in set(queries["query_id"])
    record_correct()


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_missing_raw(source, tmp_path):
    cli_error(["rsmeb", "build", "--source", source, "--raw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
              re.escape(str(tmp_path / "nowhere")))


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_empty_raw_folder(source, tmp_path):
    (tmp_path / "empty").mkdir()
    cli_error(["rsmeb", "build", "--source", source, "--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
              re.escape(str(tmp_path / "empty")))


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_out_is_a_file(source, tmp_path):
    raw = write_release(source, tmp_path / "raw")
    (tmp_path / "out.txt").write_text("x")
    cli_error(["rsmeb", "build", "--source", source, "--raw", str(raw), "--out", str(tmp_path / "out.txt")],
              r"out\.txt")


@pytest.mark.parametrize("argv,pattern", [
    (["--source", "nosuch", "--raw", "."], r"unknown source 'nosuch'"),
    (["--source", "eurosat"], r"--source needs --raw"),
    (["--lite", "--source", "eurosat", "--raw", "."], r"either --lite or --source"),
    ([], r"either --lite or --source"),
    (["--source", "eurosat", "--raw", ".", "--on-error", "ignore"], None),
])
def test_bad_build_arguments(argv, pattern, tmp_path):
    if pattern is None:  # argparse's own usage error: exit 2 with a message naming the option
        result = run_cli(["rsmeb", "build", *argv, "--out", str(tmp_path / "o")])
        assert result.returncode == 2 and "--on-error" in result.stderr and "Traceback" not in result.stderr
        record_correct()
        return
    cli_error(["rsmeb", "build", *argv, "--out", str(tmp_path / "o")], pattern)


def test_console_script_damaged_release(tmp_path):
    """The real entry point in a fresh interpreter: one error line, no traceback."""
    raw = write_release("rsicd", tmp_path / "raw")
    (raw / "dataset_rsicd.json").write_text("{not json")
    expect_cli_error(run_cli(["rsmeb", "build", "--source", "rsicd", "--raw", raw, "--out", tmp_path / "o"]),
                     r"dataset_rsicd\.json")


@pytest.mark.parametrize("variant", ["16-bit grey PNG", "16-bit array TIFF", "RGBA PNG", "palette+transparency",
                                     "EXIF-rotated JPEG"])
def test_unusual_images_are_stored_as_the_model_sees_them(variant, tmp_path):
    raw = write_release("eurosat", tmp_path / "raw")
    target = raw / "Forest" / "Forest_0.jpg"
    rng = np.random.default_rng(0)
    if variant == "16-bit grey PNG":
        image = Image.fromarray(rng.integers(0, 10000, (16, 16)).astype(np.uint16))
        data = _encoded(image, "PNG")
    elif variant == "16-bit array TIFF":
        image = Image.fromarray(rng.integers(300, 9000, (16, 16)).astype(np.uint16))
        data = _encoded(image, "TIFF")
    elif variant == "RGBA PNG":
        rgba = np.dstack([rng.integers(0, 255, (16, 16, 3)), np.linspace(0, 255, 256).reshape(16, 16)]).astype(np.uint8)
        data = _encoded(Image.fromarray(rgba, "RGBA"), "PNG")
    elif variant == "palette+transparency":
        palette = Image.fromarray(rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)).quantize(8)
        data = _encoded(palette, "PNG", transparency=0)
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        data = _encoded(Image.fromarray(rng.integers(0, 255, (16, 12, 3)).astype(np.uint8)), "JPEG", exif=exif)
    target.write_bytes(data)  # (PIL identifies by content, not by the .jpg name)
    assert main(["rsmeb", "build", "--source", "eurosat", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 0
    stored = _stored_image(tmp_path / "out", "Forest/Forest_0.jpg")
    expected = np.asarray(load_image(data))
    assert np.array_equal(stored, expected)
    if variant.startswith("16-bit"):
        assert stored.mean() > 40  # not the near-black high byte / clipped values
    record_correct()


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _stored_image(folder, name: str) -> np.ndarray:
    """The pixels an RSMEB folder holds for one source image, from any of its parquet files."""
    import pyarrow.parquet as pq

    for path in sorted(folder.glob("**/*.parquet")):
        table = pq.read_table(path)
        if "image" not in table.column_names:
            continue
        ids = next((c for c in ("candidate_id", "query_id", "id") if c in table.column_names), None)
        for row_id, cell in zip(table.column(ids).to_pylist(), table.column("image").to_pylist()):
            if cell and name in str(row_id):
                return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
    raise AssertionError(f"{name} not found in {folder}")
