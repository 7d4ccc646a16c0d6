"""Class-per-folder scene classification trees: ``root/<ClassName>/<image files>``.

This is how EuroSAT (RGB, ``2750/``), UC Merced (``UCMerced_LandUse/Images/``), AID, NWPU-RESISC45,
PatternNet (``images/``) and WHU-RS19 are distributed. Rows are image files; their stable key is the
path relative to ``root`` (``"Forest/Forest_1.jpg"``).

Problems (one per row): an unreadable or truncated image, a file that is not an image, a nested folder, a
loose file next to the class folders, an empty class folder, and, when ``classes`` is given, a folder that is
not a known class (its images are left out) or a known class without a folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rsmeb_eval.formats.images import IMAGE_EXTENSIONS, image_size
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError


@dataclass(frozen=True)
class SceneImage:
    """One labelled image.

    Args:
        key: path relative to the root, POSIX style (``"Forest/Forest_1.jpg"``): a stable id.
        label: the class folder's name, as spelled on disk.
        path: the file.
        width / height: pixel size.
    """

    key: str
    label: str
    path: Path
    width: int
    height: int


def parse_scene_folders(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    on_error: OnError = "raise",
    check_images: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> tuple[list[SceneImage], ParseReport]:
    """Read ``root/<class>/<image>``; images sorted by class then file name.

    Args:
        root: the folder that holds the class folders.
        classes (*optional*): the expected class folder names; unknown folders are problems.
        on_error (`"raise"` or `"skip"`, defaults to `"raise"`): see `rsmeb_eval.formats.report`.
        check_images (`bool`, defaults to `True`): decode every image (catches truncated files).
        extensions: the file suffixes taken as images (case-insensitive); other files are problems.

    Returns:
        ``(images, report)``.

    Example:
        >>> images, report = parse_scene_folders("EuroSAT/2750", on_error="skip")  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    collector = Collector(on_error, f"scene folders {root}")
    known = None if classes is None else set(classes)
    suffixes = {suffix.lower() for suffix in extensions}
    records: list[SceneImage] = []
    seen_classes = set()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue  # .DS_Store, ._AppleDouble, .ipynb_checkpoints: file-system noise, not rows
        with collector.row(root, entry.name):
            if not entry.is_dir():
                raise RowError("a file outside any class folder")
            seen_classes.add(entry.name)
            if known is not None and entry.name not in known:
                raise RowError(f"unknown class folder {entry.name!r} (expected one of {sorted(known)[:8]}...)")
            files = [f for f in sorted(entry.iterdir()) if not f.name.startswith(".")]
            if not files:
                raise RowError("empty class folder")
            for file in files:
                relative = f"{entry.name}/{file.name}"
                with collector.row(root, relative):
                    if file.is_dir():
                        raise RowError("a nested folder inside a class folder")
                    if file.suffix.lower() not in suffixes:
                        raise RowError(f"not an image file (suffix {file.suffix!r})")
                    width, height = image_size(file, decode=check_images)
                    records.append(SceneImage(relative, entry.name, file, width, height))
    for name in sorted((known or set()) - seen_classes):
        collector.problem(root, name, "class folder missing")
    return records, collector.finish()
