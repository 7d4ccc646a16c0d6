"""Raw public distributions -> RSMEB-format folders that `vlm2geovec_train.data.training_datasets` (and
``vlm2geovec train --data FOLDER``) read.

* `convert_public`: any source of `rsmeb_eval.builders.SOURCES` (scene folders, Karpathy captions, DIOR-RSVG,
  RSVQA, composed triplets, geo tiles). It is `rsmeb_eval.builders.build_source_folder`, as for the benchmark
  (`vlm2geovec rsmeb build --source`): the same parsers and builders, so there is one reader per format. Both splits are written; training reads ``train``.
* `convert_geochat`: GeoChat-Instruct (training data only, everything lands in ``train``), parsed by
  `rsmeb_eval.formats.geochat`, reshaped into registered task shapes (`GEOCHAT_TASKS`):

  | GeoChat turns | task (default) | query -> candidates |
  |---|---|---|
  | ``[refer]`` expression -> answer boxes; ``[grounding]`` ``<p>phrase</p>`` -> its boxes; ``[identify]`` description -> its box | ``DIOR-RSVG-RefExp`` | image + text -> image + box, among the image's boxes |
  | the same (box, text) pairs, the other way round | ``DIOR-RSVG-RegionCaption`` | image + box -> text, among the image's region texts |
  | VQA (``Answer the question using a single word or phrase.``: RSVQA-LRBEN, NWPU-RESISC-45, FloodNet) | ``RSVQA-LR-VQA`` | image + question -> answer, among answers of its type |
  | ``Describe the image in detail.`` answers; ``[grounding]`` answers without their boxes | ``RSICD-T2I`` | caption -> image, among the release's images |

  Free-form conversation turns (LLaVA-style multi-round chat and complex reasoning) have no task shape and
  are counted as skipped.

GeoChat decisions (all deterministic; ids derive from the image name, the text or the file position):

* **Regions are grouped by image**, over every sample that shows it (GeoChat has several samples per image: a
  refer sample, an identify sample, a grounding sample...). A text that names several boxes (``[refer]`` with two
  boxes, ``<p>2 planes</p> {..}{..}``) has each of them as a positive. An image with fewer than two boxes gives no
  RefExp query, one with fewer than two region texts no RegionCaption query; a query whose positives cover every
  candidate is skipped (no negative).
* **Boxes** are GeoChat's percent boxes in pixels of the image (`rsmeb_eval.formats.geochat.GeoChatBox.bbox`);
  the rotation angle is dropped (the processor's boxes are axis-aligned), so boxes equal up to the angle are one
  region. Zero-width/height boxes (rounding of tiny objects) are skipped.
* **VQA candidates**: answers are compared lower-cased without a trailing full stop. ``yes``/``no`` answers
  compete with each other; counts (``0``, ``between 1 and 10``, ``more than 1000``) with counts; any other
  answer with the answers given to the same question text (e.g. every class named in answers to one
  "Classify the given image..." prompt), or, when that question has a single answer in the release, with every
  other such answer. Up to 100 candidates, drawn as `rsmeb_eval.builders.draw_candidates` does.
* **Caption candidates**: the described image among up to 99 other images of the release.

Every function returns a `ConversionResult` with the parse report (rows left out, with file and row), the
GeoChat turns parsed / converted per kind, and what was left out by design, by reason.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsmeb_eval.builders.public import build_source_folder, draw_candidates
from rsmeb_eval.dataset_io import IfExists, TaskData, check_out_dir, write_dataset_folder
from rsmeb_eval.formats.geochat import GEOCHAT_KINDS, GeoChatSample, parse_geochat_instruct
from rsmeb_eval.formats.report import OnError, ParseReport, check_on_error

logger = logging.getLogger("vlm2geovec_train.converters")

SPLIT = "train"
ID_PREFIX = "geochat/"

# GeoChat shape -> registered task it is stored under; every task's modalities must match the shape.
GEOCHAT_TASKS: dict[str, str] = {
    "refexp": "DIOR-RSVG-RefExp",
    "region_caption": "DIOR-RSVG-RegionCaption",
    "vqa": "RSVQA-LR-VQA",
    "caption": "RSICD-T2I",
}
GEOCHAT_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "refexp": (("image", "text"), ("image", "bbox")),
    "region_caption": (("image", "bbox"), ("text",)),
    "vqa": (("image", "text"), ("text",)),
    "caption": (("text",), ("image",)),
}
_COUNT = re.compile(r"^(?:\d+|between \d+ and \d+|(?:more|less|fewer) than \d+)$")


@dataclass
class ConversionResult:
    """What a conversion wrote.

    Args:
        out_dir: the RSMEB folder.
        tasks: ``{task: {split: TaskData}}`` as written (merged with what was there for ``if_exists="merge"``).
        report: rows the parser left out (``on_error="skip"``), with file and row.
        turns: GeoChat only: parsed turns per kind (`GEOCHAT_KINDS`).
        converted: GeoChat: turns per kind that are part of at least one written query (as query or positive);
            public sources: query rows per task and split (``"task/split"``).
        skipped: items left out by design, by reason (``"<what>: <why>"``).
    """

    out_dir: Path
    tasks: dict[str, dict[str, TaskData]]
    report: ParseReport
    turns: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> dict[str, int]:
        """Query rows per ``task/split``."""
        return {f"{task}/{split}": len(data.queries) for task, splits in self.tasks.items()
                for split, data in splits.items()}


def convert_public(source: str, raw: str | Path, out_dir: str | Path, on_error: OnError = "raise", seed: int = 0,
                   *, if_exists: IfExists = "error") -> ConversionResult:
    """Build one public source's tasks (`rsmeb_eval.builders.build_source`) and write them to ``out_dir``.

    Args:
        source: a key of `rsmeb_eval.builders.SOURCES` (``"eurosat"``, ``"rsicd"``, ``"dior-rsvg"``, ``"rsvqa-lr"``,
            ``"patterncom"``, ``"geo-tiles"``...); ``raw`` as `rsmeb_eval.builders.RAW_LAYOUTS` describes.
        on_error (`"raise"` or `"skip"`): bad rows raise ``ValueError("<file>:<row>: <reason>")`` or are skipped and
            listed in ``result.report``.
        seed: seeds the candidate draws (never the splits).
        if_exists: see `rsmeb_eval.dataset_io.write_dataset_folder`.

    Example:
        >>> result = convert_public("dior-rsvg", "DIOR-RSVG", "data/train-mix", on_error="skip")  # doctest: +SKIP
        >>> result = convert_public("rsvqa-lr", "RSVQA_LR", "data/train-mix", if_exists="merge")  # doctest: +SKIP
        >>> # vlm2geovec train --data data/train-mix
    """
    built, tasks = build_source_folder(source, raw, out_dir, on_error=on_error, seed=seed, if_exists=if_exists,
                                       title=f"RSMEB training data: {source}")
    if not any(SPLIT in splits for splits in built.tasks.values()):
        logger.warning("%s: no %s split built; the folder holds nothing to train on", source, SPLIT)
    converted = {f"{task}/{split}": len(data.queries) for task, splits in built.tasks.items()
                 for split, data in splits.items()}
    return ConversionResult(Path(out_dir), tasks, built.report, converted=converted, skipped=dict(built.skipped))


# ------------------------------------------------------------------------------------------------ GeoChat


def _normalize(text: str) -> str:
    return re.sub(r"[\s.]+$", "", " ".join(text.lower().split()))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _rng(seed: int, task: str, query_id: str) -> random.Random:
    return random.Random(f"{seed}|{task}|{query_id}")


def _item(**item: Any) -> dict[str, Any]:
    return {"image": None, "text": None, "bbox": None, "lat": None, "lon": None, **item}


def _check_task_names(task_names: Mapping[str, str | None] | None) -> dict[str, str | None]:
    from rsmeb_eval.registry import get_task

    names: dict[str, str | None] = dict(GEOCHAT_TASKS)
    if task_names:
        unknown = set(task_names) - set(GEOCHAT_SHAPES)
        if unknown:
            raise ValueError(f"unknown GeoChat shape(s) {sorted(unknown)}; shapes: {sorted(GEOCHAT_SHAPES)}")
        names.update(task_names)
    chosen = [name for name in names.values() if name is not None]
    if len(chosen) != len(set(chosen)):
        raise ValueError(f"two GeoChat shapes map to one task: {names}")
    for shape, name in names.items():
        if name is None:
            continue
        meta = get_task(name).metadata
        query, candidate = GEOCHAT_SHAPES[shape]
        if set(meta.query_modalities) != set(query) or set(meta.candidate_modalities) != set(candidate):
            raise ValueError(f"{name} ({'+'.join(meta.query_modalities)} -> {'+'.join(meta.candidate_modalities)}) "
                             f"does not fit GeoChat {shape} ({'+'.join(query)} -> {'+'.join(candidate)})")
        if SPLIT not in meta.splits:
            raise ValueError(f"{name} has no {SPLIT} split")
    return names


class _Task:
    """Queries and the corpus items their candidates point to, for one task."""

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.queries: list[dict[str, Any]] = []
        self.corpus: dict[str, dict[str, Any]] = {}

    def add(self, query_id: str, positives: list[str], pool: list[str], docs: Mapping[str, dict[str, Any]],
            seed: int, **item: Any) -> None:
        candidates, kept = draw_candidates(positives, pool, _rng(seed, self.name or "", query_id))
        self.queries.append({"query_id": query_id, **_item(**item), "candidate_ids": candidates, "positive_ids": kept})
        for doc_id in candidates:
            self.corpus.setdefault(doc_id, {"id": doc_id, **docs[doc_id]})

    def data(self) -> TaskData:
        return TaskData(queries=self.queries, corpus=[self.corpus[key] for key in sorted(self.corpus)])


def geochat_tasks(samples: Iterable[GeoChatSample], seed: int = 0,
                  task_names: Mapping[str, str | None] | None = None) -> ConversionResult:
    """GeoChat samples (from `parse_geochat_instruct`) -> ``{task: {"train": TaskData}}``, without writing.

    Returns:
        a `ConversionResult` whose ``out_dir`` is ``Path()`` and ``report`` empty; every split passed
        `TaskData.validate`.
    """
    names = _check_task_names(task_names)
    samples = list(samples)
    skipped: Counter = Counter()
    turns_seen: Counter = Counter()
    kind_of: dict[str, str] = {}
    used: set[str] = set()

    images: dict[str, Path] = {}
    # Region relations per image: box key -> pixel box; text -> (first text, {box keys}, {turns}).
    boxes: dict[str, dict[tuple[int, ...], tuple[float, ...]]] = {}
    texts: dict[str, dict[str, list]] = {}
    pairs: dict[str, dict[tuple[tuple[int, ...], str], set[str]]] = {}
    vqa: list[tuple[str, str, str, str]] = []  # turn key, image, question, answer (normalised)
    captions: dict[str, list] = {}  # normalised -> [text, {images}, {turns}]

    def relate(image: str, box, text: str, turn_key: str) -> None:
        if box.degenerate:
            skipped["box: zero width or height (rounded to whole percents)"] += 1
            return
        norm = _normalize(text)
        if not norm:
            return
        boxes.setdefault(image, {})[box.percent] = box.bbox
        entry = texts.setdefault(image, {}).setdefault(norm, [text, set(), set()])
        entry[1].add(box.percent)
        entry[2].add(turn_key)
        pairs.setdefault(image, {}).setdefault((box.percent, norm), set()).add(turn_key)

    for sample in samples:
        images.setdefault(sample.image, sample.path)
        for turn in sample.turns:
            key = f"{ID_PREFIX}{sample.index}/t{turn.index}"
            kind_of[key] = turn.kind
            turns_seen[turn.kind] += 1
            if turn.kind == "refer":
                for box in turn.answer_boxes:
                    relate(sample.image, box, turn.expression, key)
            elif turn.kind == "identify":
                for box in turn.question_boxes:
                    relate(sample.image, box, turn.answer_text, key)
            elif turn.kind == "grounding":
                for phrase in turn.phrases:
                    for box in phrase.boxes:
                        relate(sample.image, box, phrase.text, key)
                text = turn.answer_text
                if text:
                    entry = captions.setdefault(_normalize(text), [text, set(), set()])
                    entry[1].add(sample.image)
                    entry[2].add(key)
            elif turn.kind == "caption":
                entry = captions.setdefault(_normalize(turn.answer_text), [turn.answer_text, set(), set()])
                entry[1].add(sample.image)
                entry[2].add(key)
            elif turn.kind == "vqa":
                question, answer = turn.question_text, _normalize(turn.answer_text)
                if not question:
                    skipped["vqa turn: nothing left of the question without the answer-format prompt"] += 1
                    continue
                vqa.append((key, sample.image, question, answer))
            else:
                skipped["conversation turn: free-form, no task shape"] += 1

    tasks = {shape: _Task(names[shape]) for shape in GEOCHAT_SHAPES}

    def box_id(image: str, percent: tuple[int, ...]) -> str:
        return f"{ID_PREFIX}{image}#box:{','.join(map(str, percent))}"

    def text_id(image: str, norm: str) -> str:
        return f"{ID_PREFIX}{image}#text:{_digest(norm)}"

    for image in sorted(boxes):
        path = str(images[image])
        image_boxes = sorted(boxes[image])
        image_texts = texts[image]
        # RefExp: text -> its boxes among the image's boxes.
        if names["refexp"] is not None:
            if len(image_boxes) < 2:
                skipped["refexp image: fewer than two boxes"] += 1
            else:
                docs = {box_id(image, b): {**_item(image=path, bbox=[list(boxes[image][b])])} for b in image_boxes}
                pool = list(docs)
                for norm in sorted(image_texts):
                    text, own, turn_keys = image_texts[norm]
                    if len(own) == len(image_boxes):
                        skipped["refexp query: every box of the image is a positive"] += 1
                        continue
                    positives = [box_id(image, b) for b in sorted(own)]
                    tasks["refexp"].add(f"{ID_PREFIX}{image}#refexp:{_digest(norm)}", positives, pool, docs, seed,
                                        image=path, text=text)
                    used.update(turn_keys)
        # RegionCaption: box -> its texts among the image's region texts.
        if names["region_caption"] is not None:
            if len(image_texts) < 2:
                skipped["region-caption image: fewer than two region texts"] += 1
            else:
                docs = {text_id(image, norm): _item(text=image_texts[norm][0]) for norm in sorted(image_texts)}
                pool = list(docs)
                for b in image_boxes:
                    own = sorted(norm for (percent, norm) in pairs[image] if percent == b)
                    if len(own) == len(image_texts):
                        skipped["region-caption query: every region text of the image is a positive"] += 1
                        continue
                    tasks["region_caption"].add(box_id(image, b), [text_id(image, n) for n in own], pool, docs, seed,
                                                image=path, bbox=[list(boxes[image][b])])
                    for norm in own:
                        used.update(pairs[image][(b, norm)])

    # VQA: answers of the same type.
    if names["vqa"] is not None:
        def group(question: str, answer: str) -> str:
            if answer in ("yes", "no"):
                return "yes/no"
            return "count" if _COUNT.match(answer) else "question:" + _normalize(question)

        members: dict[str, set[str]] = {}
        for _, _, question, answer in vqa:
            members.setdefault(group(question, answer), set()).add(answer)
        open_answers = sorted({a for g, answers in members.items() if g.startswith("question:") for a in answers})
        docs = {f"{ID_PREFIX}answer:{a}": _item(text=a) for answers in members.values() for a in answers}
        for key, image, question, answer in vqa:
            name = group(question, answer)
            pool_answers = sorted(members[name])
            if name.startswith("question:") and len(pool_answers) < 2:
                pool_answers = open_answers
            if len(pool_answers) < 2:
                skipped["vqa query: no other answer of its type in the release"] += 1
                continue
            tasks["vqa"].add(key, [f"{ID_PREFIX}answer:{answer}"], [f"{ID_PREFIX}answer:{a}" for a in pool_answers],
                             docs, seed, image=str(images[image]), text=question)
            used.add(key)

    # Captions: text -> image among the release's images.
    if names["caption"] is not None:
        docs = {f"{ID_PREFIX}image:{image}": _item(image=str(path)) for image, path in sorted(images.items())}
        pool = list(docs)
        for norm in sorted(captions):
            text, own, turn_keys = captions[norm]
            if len(own) >= len(images):
                skipped["caption query: no other image in the release"] += 1
                continue
            tasks["caption"].add(f"{ID_PREFIX}caption:{_digest(norm)}", [f"{ID_PREFIX}image:{i}" for i in sorted(own)],
                                 pool, docs, seed, text=text)
            used.update(turn_keys)

    built: dict[str, dict[str, TaskData]] = {}
    for shape, task in tasks.items():
        if task.name is None or not task.queries:
            continue
        data = task.data()
        data.validate(task.name, SPLIT)
        built[task.name] = {SPLIT: data}
    converted = Counter(kind_of[key] for key in used)
    return ConversionResult(Path(), built, ParseReport(),
                            turns={kind: turns_seen[kind] for kind in GEOCHAT_KINDS},
                            converted={kind: converted[kind] for kind in GEOCHAT_KINDS}, skipped=dict(skipped))


def convert_geochat(json_path: str | Path, image_dir: str | Path, out_dir: str | Path, on_error: OnError = "raise",
                    seed: int = 0, *, task_names: Mapping[str, str | None] | None = None,
                    if_exists: IfExists = "error", check_images: bool = True) -> ConversionResult:
    """GeoChat-Instruct -> an RSMEB folder with a ``train`` split per task shape (see the module docstring).

    Args:
        json_path / image_dir: ``GeoChat_Instruct.json`` and the unzipped image folder.
        out_dir: the RSMEB folder to write.
        on_error (`"raise"` or `"skip"`): a bad row raises ``ValueError("<file>:<row>: <reason>")`` or is skipped
            and listed in ``result.report``.
        seed: seeds the candidate draws.
        task_names (*optional*): overrides of `GEOCHAT_TASKS` (shape -> registered task with the same
            modalities; None leaves the shape out).
        if_exists: see `rsmeb_eval.dataset_io.write_dataset_folder` (``"merge"`` adds GeoChat rows to e.g. a DIOR-RSVG folder: ids
            are prefixed ``geochat/``).
        check_images: decode every image (catches truncated files) rather than read headers only.

    Example:
        >>> result = convert_geochat(  # doctest: +SKIP
        ...     "GeoChat_Instruct.json", "images", "data/geochat", on_error="skip")
        >>> result.converted, result.skipped, result.report.summary()  # doctest: +SKIP
        >>> # vlm2geovec train --data data/geochat
    """
    check_on_error(on_error)
    check_out_dir(Path(out_dir), if_exists)  # before a long parse
    names = _check_task_names(task_names)
    samples, report = parse_geochat_instruct(json_path, image_dir, on_error=on_error, check_images=check_images)
    result = geochat_tasks(samples, seed=seed, task_names=names)
    for reason, count in sorted(result.skipped.items()):
        logger.info("GeoChat-Instruct: %d left out by design: %s", count, reason)
    if not result.tasks:
        raise ValueError(f"{json_path}: no GeoChat turn could be converted ({result.skipped})")
    mapping = ", ".join(f"{shape} -> `{name}`" for shape, name in names.items() if name is not None)
    notes = ("GeoChat-Instruct (https://huggingface.co/datasets/MBZUAI/GeoChat_Instruct; Kuckreja et al., CVPR "
             f"2024) reshaped for contrastive training, train split only. Stored under registered task names: "
             f"{mapping}.\n")
    result.tasks = write_dataset_folder(out_dir, result.tasks, title="Training data: GeoChat-Instruct",
                                         notes=notes, if_exists=if_exists)
    result.out_dir = Path(out_dir)
    result.report = report
    return result
