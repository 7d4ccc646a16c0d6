"""Opening image files the same careful way in every parser."""

from __future__ import annotations

from pathlib import Path

from rsmeb_eval.formats.report import RowError

# Extensions the scene-folder and RSVQA parsers recognise as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def image_size(path: Path, decode: bool = True) -> tuple[int, int]:
    """``(width, height)`` of an image file, or `RowError` when it is missing or unreadable.

    Args:
        path: the image file.
        decode (`bool`, defaults to `True`): decode every pixel, which is what catches truncated files;
            with `False` only the header is read (fast, for very large trees).
    """
    from PIL import Image

    if not path.is_file():
        raise RowError(f"missing image file {path}")
    try:
        with Image.open(path) as image:
            size = image.size
            if decode:
                image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise RowError(f"unreadable image {path.name}: {type(error).__name__}: {error}") from None
    return size


class ImageChecker:
    """`image_size` with a cache, for listings that name the same image in many rows."""

    def __init__(self, decode: bool = True) -> None:
        self.decode = decode
        self._cache: dict[Path, tuple[int, int] | RowError] = {}

    def __call__(self, path: Path) -> tuple[int, int]:
        if path not in self._cache:
            try:
                self._cache[path] = image_size(path, self.decode)
            except RowError as error:
                self._cache[path] = error
        result = self._cache[path]
        if isinstance(result, RowError):
            raise RowError(str(result))
        return result


def resolve(root: Path, name: str) -> Path:
    """A path as written in a listing (relative to ``root`` unless absolute; ``\\`` accepted)."""
    path = Path(name.replace("\\", "/"))
    return path if path.is_absolute() else root / path
