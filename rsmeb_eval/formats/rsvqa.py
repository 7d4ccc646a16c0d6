"""RSVQA (LR and HR): three JSON files per split and a folder of images named by image id.

``<prefix>_questions.json``: ``{"questions": [{"id", "img_id", "type", "question", "answers_ids": [..],
"active": bool}, ...]}``; ``<prefix>_answers.json``: ``{"answers": [{"id", "question_id", "answer",
"active"}, ...]}``; ``<prefix>_images.json``: ``{"images": [{"id", "questions_ids": [..], "active": bool}, ...]}``;
images ``Images_LR/<id>.tif`` (RSVQA-LR; HR uses ``Data/<id>.tif``), ``.png`` also accepted. Prefixes are e.g.
``LR_split_train``, ``LR_split_val``, ``LR_split_test``, ``USGS_split_test_phili``.

Inactive entries (``"active": false``) are skipped without a problem, and so are the questions of inactive
images. Rows are ``questions[i]``/``answers[i]``/``images[i]`` in their files. Problems: a dangling id (a
question's image, a question's answer, an answer's question, an image's question), a question without an
active answer, an entry missing a field, a missing or unreadable image file (its questions are left out with
it: the image's problem stands for them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsmeb_eval.formats.images import image_size
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError

RSVQA_IMAGE_EXTENSIONS = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class VQAQuestion:
    """One active question with its active answer(s); ids are the source's ids, as strings."""

    question_id: str
    image_id: str
    image_path: Path
    type: str
    question: str
    answers: tuple[str, ...]


def _load_list(path: Path, key: str) -> list[Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path}: expected an object with a {key!r} list")
    return data[key]


def _field(entry: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(entry, dict):
        raise RowError("entry is not an object")
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise RowError(f"missing or malformed {name!r}: {value!r}")
    return value


def _active(entry: Any) -> bool:
    return not isinstance(entry, dict) or entry.get("active", True) is not False


def _key(value: Any) -> str:
    return str(value)


def parse_rsvqa(
    folder: str | Path,
    prefix: str,
    *,
    image_dir: str | Path | None = None,
    image_extensions: Sequence[str] = RSVQA_IMAGE_EXTENSIONS,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> tuple[list[VQAQuestion], ParseReport]:
    """Read one RSVQA split (one JSON triple); questions in file order.

    Args:
        folder: where the ``<prefix>_*.json`` files are.
        prefix: e.g. ``"LR_split_test"``.
        image_dir (*optional*): the image folder; defaults to ``folder/Images_LR``.
        image_extensions: tried in order for ``<image id><ext>``.
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.

    Returns:
        ``(questions, report)``.
    """
    folder = Path(folder)
    image_dir = folder / "Images_LR" if image_dir is None else Path(image_dir)
    files = {kind: folder / f"{prefix}_{kind}.json" for kind in ("questions", "answers", "images")}
    questions = _load_list(files["questions"], "questions")
    answers = _load_list(files["answers"], "answers")
    images = _load_list(files["images"], "images")
    collector = Collector(on_error, f"RSVQA {folder / prefix}")

    question_ids = {_key(q.get("id")) for q in questions if isinstance(q, dict) and "id" in q}
    all_answers: set[str] = set()
    answer_text: dict[str, str] = {}  # active answers only
    for i, entry in enumerate(answers):
        with collector.row(files["answers"], f"answers[{i}]"):
            answer_id = _key(_field(entry, "id", (int, str)))
            all_answers.add(answer_id)
            if not _active(entry):
                continue
            text = _field(entry, "answer", (str, int, float))
            question_id = entry.get("question_id")
            if question_id is not None and _key(question_id) not in question_ids:
                raise RowError(f"dangling question_id {question_id!r}")
            if not str(text).strip():
                raise RowError("empty answer")
            answer_text[answer_id] = str(text).strip()

    all_images: set[str] = set()
    image_path: dict[str, Path] = {}  # active, readable images
    for i, entry in enumerate(images):
        with collector.row(files["images"], f"images[{i}]"):
            image_id = _key(_field(entry, "id", (int, str)))
            all_images.add(image_id)
            if not _active(entry):
                continue
            listed = entry.get("questions_ids", [])
            dangling = [q for q in listed if _key(q) not in question_ids] if isinstance(listed, list) else listed
            if dangling:
                raise RowError(f"dangling questions_ids {dangling[:5]}")
            candidates = [image_dir / f"{image_id}{ext}" for ext in image_extensions]
            path = next((p for p in candidates if p.is_file()), candidates[0])
            try:
                image_size(path, decode=check_images)
            except RowError as error:
                raise RowError(f"{error} (its questions are left out)") from None
            image_path[image_id] = path

    records: list[VQAQuestion] = []
    for i, entry in enumerate(questions):
        with collector.row(files["questions"], f"questions[{i}]"):
            question_id = _key(_field(entry, "id", (int, str)))
            if not _active(entry):
                continue
            image_id = _key(_field(entry, "img_id", (int, str)))
            if image_id not in all_images:
                raise RowError(f"dangling img_id {image_id!r}")
            if image_id not in image_path:
                continue  # an inactive image (not a problem) or a broken one (reported at the image)
            text = _field(entry, "question", str).strip()
            if not text:
                raise RowError("empty question")
            kind = _field(entry, "type", str)
            answer_ids = [_key(a) for a in _field(entry, "answers_ids", list)]
            dangling = [a for a in answer_ids if a not in all_answers]
            if dangling:
                raise RowError(f"dangling answers_ids {dangling[:5]}")
            texts = tuple(answer_text[a] for a in answer_ids if a in answer_text)
            if not texts:
                raise RowError("no active answer")
            records.append(VQAQuestion(question_id, image_id, image_path[image_id], kind, text, texts))
    return records, collector.finish()
