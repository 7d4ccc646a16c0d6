"""GeoChat-Instruct: a LLaVA-style conversation list over remote-sensing images, with boxes written as text.

Layout (Kuckreja et al., "GeoChat: Grounded Large Vision-Language Model for Remote Sensing", CVPR 2024,
arXiv:2311.15826; release https://huggingface.co/datasets/MBZUAI/GeoChat_Instruct, ``GeoChat_Instruct.json``
+ ``images.zip``; format as read by https://github.com/mbzuai-oryx/GeoChat)::

    [{"id": "...", "image": "P0001_0000.png",
      "conversations": [{"from": "human", "value": "<image>\\n[refer] give me the location of <p>the plane</p>"},
                        {"from": "gpt", "value": "{<16><55><24><63>|<11>}"},
                        {"from": "human", "value": "[refer] where is <p>the ship</p> ?"},
                        {"from": "gpt", "value": "{<8><82><16><90>|<69>}{<40><82><48><90>|<69>}"}]}, ...]

``image`` is relative to the image folder. Messages alternate ``human`` / ``gpt``; ``<image>`` marks where the
image goes (usually in the first human message only). A box is ``{<x_left><y_top><x_right><y_bottom>|<angle>}``:
integers in [0, 100] (percent of the image width and height, the GeoChat demo's ``bounding_box_size = 100``), then
the rotation angle in degrees (``|<angle>`` may be absent). Several boxes follow each other (``{...}{...}``).

Turn kinds (GeoChat paper, Table 1), told from the human message:

| kind | human message | answer |
|---|---|---|
| ``refer`` | ``[refer] <p>object</p>`` (or ``[refer] give me the location of <p>...</p>``) | one or more boxes |
| ``identify`` | ``[identify]`` and one box (region captioning) | the region's description |
| ``grounding`` | ``[grounding] Describe the image in detail.`` | text with ``<p>phrase</p> {box}{box}`` |
| ``vqa`` | ``<question> Answer the question using a single word or phrase.`` (*) | a word or phrase |
| ``caption`` | ``Describe the image in detail.`` | a detailed description |
| ``conversation`` | anything else (LLaVA-style multi-round conversation and complex reasoning; unknown tags) | free text |

(*) also ``Answer in one word or a short phrase.``: RSVQA-LRBEN questions, NWPU-RESISC-45 classification
("Classify the given image in one of the following classes. Classes: ..."), FloodNet. MiniGPT-v2's ``[vqa]`` and
``[caption]`` tags are accepted as well (GeoChat-Instruct itself does not use them).

Rows are list entries ``[i]`` (sample-level problems) and their messages ``[i].conversations[k]`` (the message
holding the bad text; a bad turn is left out, the rest of the sample kept). Problems: an entry that is not an
object or lacks ``image`` or ``conversations``; a missing or unreadable image (the whole sample is left out); a message that is not
``{"from": "human"|"gpt", "value": str}``; a human message without a gpt answer (e.g. a conversation that ends
on a question) or a gpt message without a question; malformed box text (not ``{<int><int><int><int>|<int>}``, or
``<n>`` outside braces); a box value outside [0, 100]; an inverted box (right < left or bottom < top); a
``[refer]`` answer without a box or without an expression; an ``[identify]`` question without a box; an empty
question or answer; a sample left with no usable turn.

Boxes with zero width or height (``x_left == x_right``: small objects rounded to whole percents) are kept,
flagged by `GeoChatBox.degenerate`: they are valid annotations, just not usable as pixel regions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rsmeb_eval.formats.images import ImageChecker, resolve
from rsmeb_eval.formats.report import Collector, OnError, ParseReport, RowError

BOX_SCALE = 100  # GeoChat box values are percents of the image size
GEOCHAT_TAGS = ("refer", "grounding", "identify", "vqa", "caption")
GEOCHAT_KINDS = ("refer", "grounding", "identify", "vqa", "caption", "conversation")

_INT = r"\s*<\s*(-?\d+)\s*>\s*"
_BOX = re.compile(r"\{" + _INT * 4 + r"(?:\|" + _INT + r")?\}")
_BRACES = re.compile(r"\{[^{}]*\}")
_STRAY_NUMBER = re.compile(r"<\s*-?\d+\s*>|\{\s*<")
_TAG = re.compile(r"^\s*\[(\w+)\]\s*")
_PHRASE = re.compile(r"<p>(.*?)</p>", re.DOTALL)
_AFTER_PHRASE = re.compile(r"\s*(?:,\s*|and\s+)?(\{[^{}]*\})")
_VQA_SUFFIX = re.compile(
    r"\s*answer (?:the question )?(?:using|in|with) (?:a )?(?:single|one) word or (?:a )?(?:short )?phrase\.?\s*$",
    re.IGNORECASE)
_CAPTION = re.compile(r"\bdescribe (?:the|this) (?:given )?image in detail\b", re.IGNORECASE)
_IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class GeoChatBox:
    """One box as written and in pixels.

    Args:
        percent: ``(x_left, y_top, x_right, y_bottom)`` as written, integers in [0, 100].
        angle: the rotation angle in degrees (``|<angle>``), None when not written. The rectangle ``percent``
            describes is rotated by it about its centre.
        bbox: ``percent`` in pixels of the image: ``x * width / 100``, ``y * height / 100`` (floats; the angle is
            not applied).
    """

    percent: tuple[int, int, int, int]
    angle: int | None
    bbox: tuple[float, float, float, float]

    @property
    def degenerate(self) -> bool:
        """Zero width or height (possible after rounding small objects to whole percents)."""
        x1, y1, x2, y2 = self.percent
        return x2 <= x1 or y2 <= y1


@dataclass(frozen=True)
class GroundedPhrase:
    """A ``<p>phrase</p>`` span and the boxes written right after it (none in a ``[refer]`` question)."""

    text: str
    boxes: tuple[GeoChatBox, ...]


@dataclass(frozen=True)
class GeoChatTurn:
    """One question/answer pair; unpacks as ``question, answer = turn``.

    Args:
        index: position of the human message in ``conversations``.
        kind: one of `GEOCHAT_KINDS` (see the module docstring).
        tag: the leading ``[tag]`` of the question (lower case), None without one.
        question / answer: the message texts as written, ``<image>`` removed, stripped.
        question_boxes / answer_boxes: every box of the question / answer, in order.
        phrases: ``<p>...</p>`` spans of the answer (``grounding``), or of the question (``refer``), each with
            the boxes written right after it.
    """

    index: int
    kind: str
    tag: str | None
    question: str
    answer: str
    question_boxes: tuple[GeoChatBox, ...] = ()
    answer_boxes: tuple[GeoChatBox, ...] = ()
    phrases: tuple[GroundedPhrase, ...] = ()

    def __iter__(self):
        yield self.question
        yield self.answer

    @property
    def expression(self) -> str:
        """A ``refer`` turn's referring expression: its first ``<p>`` phrase, else the question without markup."""
        for phrase in self.phrases:
            if phrase.text:
                return phrase.text
        return strip_markup(self.question)

    @property
    def question_text(self) -> str:
        """The question without tag, boxes, ``<p>`` markers and the "Answer ... single word or phrase" suffix."""
        return _VQA_SUFFIX.sub("", strip_markup(self.question)).strip()

    @property
    def answer_text(self) -> str:
        """The answer without boxes and ``<p>`` markers."""
        return strip_markup(self.answer)


@dataclass(frozen=True)
class GeoChatSample:
    """One list entry with its valid turns.

    Args:
        index: position in the JSON list (the row; stable for a given release file).
        id: the entry's ``id`` as a string (None when absent); not guaranteed unique by the release.
        image: the ``image`` field as written (POSIX separators).
        path / width / height: the image file and its size in pixels.
        turns: the usable question/answer pairs, in order.
    """

    index: int
    id: str | None
    image: str
    path: Path
    width: int
    height: int
    turns: tuple[GeoChatTurn, ...]


def strip_markup(text: str) -> str:
    """Text without ``<image>``, a leading ``[tag]``, boxes, ``<p>``/``</p>``/``<delim>``; spaces collapsed."""
    text = text.replace(_IMAGE_TOKEN, " ")
    text = _TAG.sub(" ", text, count=1)
    text = _BRACES.sub(lambda m: " " if "<" in m.group(0) else m.group(0), text)
    text = re.sub(r"</?p>|<delim>", " ", text)
    text = " ".join(text.split())
    return re.sub(r"\s+([.,;:!?])", r"\1", text).strip()


def parse_boxes(text: str, width: int, height: int) -> list[tuple[int, GeoChatBox]]:
    """Every box in ``text`` as ``(offset, box)``; `ValueError` for malformed, out-of-range or inverted boxes."""
    boxes = []
    for match in _BRACES.finditer(text):
        segment = match.group(0)
        if "<" not in segment:
            continue
        box = _BOX.fullmatch(segment)
        if box is None:
            raise ValueError(f"malformed box {segment!r} (expected {{<x1><y1><x2><y2>|<angle>}})")
        values = tuple(int(v) for v in box.groups()[:4])
        if any(v < 0 or v > BOX_SCALE for v in values):
            raise ValueError(f"box {segment!r} has a value outside 0-{BOX_SCALE}")
        x1, y1, x2, y2 = values
        if x2 < x1 or y2 < y1:
            raise ValueError(f"inverted box {segment!r} (right < left or bottom < top)")
        angle = None if box.group(5) is None else int(box.group(5))
        pixels = (x1 * width / BOX_SCALE, y1 * height / BOX_SCALE, x2 * width / BOX_SCALE, y2 * height / BOX_SCALE)
        boxes.append((match.start(), GeoChatBox(values, angle, pixels)))  # type: ignore[arg-type]
    leftover = _BRACES.sub(lambda m: " " if "<" in m.group(0) else m.group(0), text)
    stray = _STRAY_NUMBER.search(leftover)
    if stray:
        raise ValueError(f"malformed box text near {leftover[max(0, stray.start() - 10):stray.end() + 10]!r}")
    return boxes


def _phrases(text: str, boxes: list[tuple[int, GeoChatBox]]) -> tuple[GroundedPhrase, ...]:
    at = dict(boxes)
    phrases = []
    for match in _PHRASE.finditer(text):
        found, position = [], match.end()
        while True:
            follow = _AFTER_PHRASE.match(text, position)
            if follow is None or follow.start(1) not in at:
                break
            found.append(at[follow.start(1)])
            position = follow.end()
        phrases.append(GroundedPhrase(" ".join(match.group(1).split()), tuple(found)))
    return tuple(phrases)


def turn_kind(question: str) -> tuple[str, str | None]:
    """``(kind, tag)`` of a human message (see the module docstring)."""
    text = question.replace(_IMAGE_TOKEN, " ")
    tag_match = _TAG.match(text)
    tag = tag_match.group(1).lower() if tag_match else None
    if tag in GEOCHAT_TAGS:
        return tag, tag
    if tag is None:
        if _VQA_SUFFIX.search(text):
            return "vqa", None
        if _CAPTION.search(text):
            return "caption", None
    return "conversation", tag


class _QuestionError(RowError):
    """A problem in the human message of a turn (reported at that message, not at the answer)."""


def _turn(index: int, question: str, answer: str, width: int, height: int) -> GeoChatTurn:
    question = question.replace(_IMAGE_TOKEN, " ").strip()
    answer = answer.strip()
    if not strip_markup(question) and "{" not in question:
        raise _QuestionError("empty question")
    if not answer:
        raise RowError("empty answer")
    kind, tag = turn_kind(question)
    try:
        question_boxes = parse_boxes(question, width, height)
    except ValueError as error:
        raise _QuestionError(str(error)) from None
    try:
        answer_boxes = parse_boxes(answer, width, height)
    except ValueError as error:
        raise RowError(str(error)) from None
    source = answer
    found = answer_boxes
    if kind == "refer":
        source, found = question, question_boxes
    turn = GeoChatTurn(index, kind, tag, question, answer, tuple(b for _, b in question_boxes),
                       tuple(b for _, b in answer_boxes), _phrases(source, found))
    if kind == "refer":
        if not turn.answer_boxes:
            raise RowError("[refer] answer has no box")
        if not turn.expression:
            raise _QuestionError("[refer] question has no expression")
    elif kind == "identify":
        if not turn.question_boxes:
            raise _QuestionError("[identify] question has no box")
        if not turn.answer_text:
            raise RowError("[identify] answer has no text")
    elif not turn.answer_text:
        raise RowError("answer has no text")
    return turn


def parse_geochat_instruct(
    json_path: str | Path,
    image_dir: str | Path,
    *,
    on_error: OnError = "raise",
    check_images: bool = True,
) -> tuple[list[GeoChatSample], ParseReport]:
    """Read GeoChat-Instruct; samples in file order.

    Args:
        json_path: ``GeoChat_Instruct.json`` (a JSON list).
        image_dir: the folder the ``image`` fields are relative to (the unzipped ``images.zip``).
        on_error / check_images: see `rsmeb_eval.formats.scene_folders.parse_scene_folders`.

    Returns:
        ``(samples, report)``; samples without any usable turn are left out.

    Example:
        >>> samples, report = parse_geochat_instruct(  # doctest: +SKIP
        ...     "GeoChat_Instruct.json", "images", on_error="skip")
        >>> question, answer = samples[0].turns[0]  # doctest: +SKIP
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}: not valid JSON: {error}") from None
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: expected a JSON list of conversations")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    collector = Collector(on_error, f"GeoChat-Instruct {json_path}")
    checker = ImageChecker(decode=check_images)
    records: list[GeoChatSample] = []
    for i, entry in enumerate(data):
        row = f"[{i}]"
        size: tuple[int, int] | None = None
        with collector.row(json_path, row):
            if not isinstance(entry, dict):
                raise RowError("entry is not an object")
            image = entry.get("image")
            if not isinstance(image, str) or not image.strip():
                raise RowError("no 'image'")
            messages = entry.get("conversations")
            if not isinstance(messages, list) or not messages:
                raise RowError("no 'conversations'")
            path = resolve(image_dir, image.strip())
            size = checker(path)
        if size is None:
            continue
        turns: list[GeoChatTurn] = []
        problems_before = len(collector.report.problems)
        pending: tuple[int, str] | None = None
        for k, message in enumerate(messages):
            with collector.row(json_path, f"{row}.conversations[{k}]"):
                if not isinstance(message, dict) or message.get("from") not in ("human", "gpt") \
                        or not isinstance(message.get("value"), str):
                    raise RowError("message is not {'from': 'human'|'gpt', 'value': str}")
                if message["from"] == "human":
                    previous, pending = pending, (k, message["value"])
                    if previous is not None:
                        collector.problem(json_path, f"{row}.conversations[{previous[0]}]",
                                          "human message has no gpt answer")
                    continue
                if pending is None:
                    raise RowError("gpt message without a question")
                index, question = pending
                pending = None
                try:
                    turns.append(_turn(index, question, message["value"], *size))
                except _QuestionError as error:
                    collector.problem(json_path, f"{row}.conversations[{index}]", str(error))
        if pending is not None:
            with collector.row(json_path, f"{row}.conversations[{pending[0]}]"):
                raise RowError("human message has no gpt answer")
        if not turns:
            if len(collector.report.problems) == problems_before:
                with collector.row(json_path, row):
                    raise RowError("no usable question/answer pair")
            continue
        identifier = entry.get("id")
        identifier = None if identifier is None else str(identifier)
        name = image.strip().replace("\\", "/")
        records.append(GeoChatSample(i, identifier, name, path, size[0], size[1], tuple(turns)))
    return records, collector.finish()
