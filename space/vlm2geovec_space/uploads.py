"""Upload guard: size and pixel limits checked before an image is decoded; images read as ``encode`` reads them."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from . import settings
from .settings import InputError


def check_pixels(size: tuple[int, int], what: str = "Image") -> None:
    width, height = size
    if width * height > settings.MAX_IMAGE_PIXELS:
        side = int(math.isqrt(settings.MAX_IMAGE_PIXELS))
        raise InputError(
            f"{what}: {width}x{height} = {width * height:,} pixels is above the limit of "
            f"{settings.MAX_IMAGE_PIXELS:,} (about {side}x{side}); downscale it or cut it into tiles."
        )


def check_file_size(path: str | os.PathLike, label: str) -> None:
    size = os.path.getsize(path)
    if size > settings.MAX_UPLOAD_MB * 1024 * 1024:
        raise InputError(f"Upload {label}: {size / 2**20:.1f} MB is above the limit of {settings.MAX_UPLOAD_MB:g} MB.")


def check_upload(path: str | os.PathLike, name: str | None = None) -> None:
    """Refuse uploads above the size or pixel limits, or that are not images, with a readable message."""
    label = name or Path(path).name
    check_file_size(path, label)
    try:
        with Image.open(path) as image:  # reads the header only
            dimensions = image.size
    except UnidentifiedImageError:
        raise InputError(f"Upload {label}: not an image format Pillow can read (PNG, JPEG, TIFF, WebP...).") from None
    except Image.DecompressionBombError as error:
        # PIL refuses headers claiming more than 2x its own limit before we see the size: name the claim
        claimed = re.search(r"\((\d+) pixels\)", str(error))
        what = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than PIL accepts"
        raise InputError(f"Upload {label}: its header claims {what}, above the limit of "
                         f"{settings.MAX_IMAGE_PIXELS:,} (refused as a possible decompression bomb); downscale it or "
                         "cut it into tiles.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"Upload {label}: cannot read the image header ({error}).") from None
    check_pixels(dimensions, f"Upload {label}")


def read_upload(path: str | os.PathLike, name: str | None = None) -> Image.Image:
    """An uploaded file as the RGB image the model would see: the processor's own reader (``load_image``:
    EXIF orientation, alpha composited onto white, 16-bit data stretched or refused, truncated files and
    extreme aspect ratios refused), so the Space treats a file exactly as ``encode`` does."""
    from processing_vlm2geovec import load_image

    label = name or Path(path).name
    check_upload(path, label)
    try:
        return load_image(str(path), field=f"Upload {label}", max_image_pixels=settings.MAX_IMAGE_PIXELS)
    except (ValueError, TypeError) as error:
        # the processor names the file by its server-side path; the user knows it by its own name
        raise InputError(str(error).replace(repr(str(path)), repr(label))) from None
