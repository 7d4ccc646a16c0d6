"""DIOR-RSVG referring expressions: Pascal-VOC-style XML with one ``<description>`` per ``<object>``.

Layout::

    root/Annotations/00001.xml   <annotation><filename>00001.jpg</filename>
                                   <size><width>800</width><height>800</height></size>
                                   <object><name>vehicle</name>
                                     <bndbox><xmin>..</xmin><ymin>..</ymin><xmax>..</xmax><ymax>..</ymax></bndbox>
                                     <description>the vehicle on the left</description></object>...
    root/JPEGImages/00001.jpg
    root/train.txt, val.txt, test.txt   (optional split lists, one id per line)

Split lists come in two flavours, told apart automatically (``split_ids="auto"``): *image ids* (annotation
file stems, e.g. ``00001``) or *object indices*, as in the official DIOR-RSVG release, where line ``n`` names
the n-th ``<object>`` counted from 0 over all annotation files in file-name order (numeric stems compared as
numbers). "auto" picks image ids when every entry is an annotation stem, else object indices when every entry
is a plain integer (no leading zeros, unlike DIOR's ``00001`` stems), else image ids (unknown entries are then
problems); pass ``split_ids`` to decide yourself. Object indices need every annotation file readable (else
ValueError: a missing file would shift all later indices).

Rows are annotation files (``row="annotation"`` for image-level problems) and their
``object[k]`` elements. Problems: a missing or unreadable image, ``<size>`` that disagrees with the image file,
a box outside the image or degenerate (``xmax <= xmin`` or ``ymax <= ymin``) or not numeric, a missing
``<description>``, a malformed XML file, a split-list entry naming nothing, an id listed in two splits.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rsmeb_eval.formats.images import IMAGE_EXTENSIONS, image_size
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ReferringObject:
    """One described object.

    Args:
        index: position among its image's ``<object>`` elements (from 0).
        global_index: position among all objects of all annotation files (what official split lists count).
        name: the class (``<name>``), or None.
        bbox: pixel ``(xmin, ymin, xmax, ymax)``.
        description: the referring expression.
        split: from the split lists (``"train"``/``"val"``/``"test"``), None when unlisted or without lists.
    """

    index: int
    global_index: int
    name: str | None
    bbox: tuple[float, float, float, float]
    description: str
    split: str | None


@dataclass(frozen=True)
class ReferringImage:
    """One annotation file with its valid objects; ``image_id`` is the annotation file's stem."""

    image_id: str
    filename: str
    path: Path
    width: int
    height: int
    objects: tuple[ReferringObject, ...]


def _sort_key(path: Path) -> tuple:
    return (0, int(path.stem), path.stem) if path.stem.isdigit() else (1, 0, path.stem)


def _read_split_lists(files: Mapping[str, Path]) -> list[tuple[str, Path, int, str]]:
    entries = []
    for split, file in files.items():
        for line_number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                entries.append((split, file, line_number, line.strip()))
    return entries


def _box(element: ET.Element) -> tuple[float, float, float, float]:
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise RowError("no <bndbox>")
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bndbox.findtext(tag)
        try:
            values.append(float(text))
        except (TypeError, ValueError):
            raise RowError(f"<{tag}> is not a number: {text!r}") from None
    if any(v != v for v in values):
        raise RowError(f"box {values} has NaN")
    return tuple(values)  # type: ignore[return-value]


def parse_dior_rsvg(
    root: str | Path,
    *,
    on_error: OnError = "raise",
    check_images: bool = True,
    annotation_dir: str = "Annotations",
    image_dir: str = "JPEGImages",
    split_files: Mapping[str, str | Path] | None = None,
    split_ids: Literal["auto", "image", "object"] = "auto",
) -> tuple[list[ReferringImage], ParseReport]:
    """Read DIOR-RSVG; images in annotation-file order.

    Args:
        root: the dataset folder.
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.
        annotation_dir / image_dir: sub-folders of ``root``.
        split_files (*optional*): ``{split: path}``; defaults to whichever of ``root/{train,val,test}.txt``
            exist (none: every object's ``split`` is None).
        split_ids: how to read the split lists (see the module docstring).

    Returns:
        ``(images, report)``; images whose objects are all bad are left out.
    """
    root = Path(root)
    annotations, images = root / annotation_dir, root / image_dir
    if not annotations.is_dir():
        raise FileNotFoundError(f"{annotations}: annotation folder not found")
    if split_ids not in ("auto", "image", "object"):
        raise ValueError(f"split_ids must be 'auto', 'image' or 'object', got {split_ids!r}")
    collector = Collector(on_error, f"DIOR-RSVG {root}")
    if split_files is None:
        split_files = {s: root / f"{s}.txt" for s in SPLIT_NAMES if (root / f"{s}.txt").is_file()}
    split_files = {split: Path(path) for split, path in split_files.items()}

    # Pass 1: parse every file, so that object indices can be counted over the whole release.
    xml_files = sorted(annotations.glob("*.xml"), key=_sort_key)
    trees: dict[Path, ET.Element] = {}
    for xml in xml_files:
        with collector.row(xml, "annotation"):
            try:
                trees[xml] = ET.parse(xml).getroot()
            except ET.ParseError as error:
                raise RowError(f"not valid XML: {error}") from None
    first_global: dict[Path, int] = {}
    total = 0
    for xml in xml_files:
        if xml in trees:
            first_global[xml] = total
            total += len(trees[xml].findall("object"))

    # Split lists: image ids or object indices.
    entries = _read_split_lists(split_files)
    stems = {xml.stem for xml in xml_files}
    mode = split_ids
    if mode == "auto":
        if all(value in stems for _, _, _, value in entries):
            mode = "image"
        elif entries and all(value.isdigit() and str(int(value)) == value for _, _, _, value in entries):
            mode = "object"
        else:
            mode = "image"
    if mode == "object" and len(trees) < len(xml_files):
        raise ValueError(f"{root}: split lists count objects, but some annotation files are unreadable, "
                         "so object indices cannot be mapped")
    split_of: dict[str | int, str] = {}
    where: dict[str | int, str] = {}
    for split, file, line_number, value in entries:
        with collector.row(file, line_number):
            if mode == "image":
                if value not in stems:
                    raise RowError(f"no annotation file for image id {value!r}")
                key: str | int = value
            else:
                if not value.isdigit() or int(value) >= total:
                    raise RowError(f"{value!r} is not an object index below {total}")
                key = int(value)
            if key in split_of and split_of[key] != split:
                raise RowError(f"{value!r} is also listed in {where[key]} (kept in {split_of[key]!r})")
            split_of.setdefault(key, split)
            where.setdefault(key, f"{file.name}:{line_number}")

    # Pass 2: validate images and objects.
    records: list[ReferringImage] = []
    for xml in xml_files:
        if xml not in trees:
            continue
        tree = trees[xml]
        with collector.row(xml, "annotation"):
            filename = (tree.findtext("filename") or "").strip()
            if filename:
                path = images / filename
            else:
                candidates = [images / f"{xml.stem}{ext}" for ext in IMAGE_EXTENSIONS]
                path = next((p for p in candidates if p.is_file()), candidates[0])
                filename = path.name
            width, height = image_size(path, decode=check_images)
            declared = (tree.findtext("size/width"), tree.findtext("size/height"))
            if declared[0] is not None and declared[1] is not None:
                try:
                    declared_size = (int(float(declared[0])), int(float(declared[1])))
                except ValueError:
                    raise RowError(f"<size> is not numeric: {declared}") from None
                if declared_size != (width, height):
                    raise RowError(f"<size> {declared_size[0]}x{declared_size[1]} disagrees with the image file "
                                   f"({width}x{height})")
            elements = tree.findall("object")
            if not elements:
                raise RowError("no <object>")
            objects = []
            for k, element in enumerate(elements):
                with collector.row(xml, f"object[{k}]"):
                    box = _box(element)
                    x1, y1, x2, y2 = box
                    if x2 <= x1 or y2 <= y1:
                        raise RowError(f"degenerate box {list(box)}")
                    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                        raise RowError(f"box {list(box)} outside the {width}x{height} image")
                    description = (element.findtext("description") or "").strip()
                    if not description:
                        raise RowError("missing <description>")
                    global_index = first_global[xml] + k
                    split = split_of.get(xml.stem if mode == "image" else global_index)
                    name = (element.findtext("name") or "").strip() or None
                    objects.append(ReferringObject(k, global_index, name, box, description, split))
            if objects:
                records.append(ReferringImage(xml.stem, filename, path, width, height, tuple(objects)))
    return records, collector.finish()
