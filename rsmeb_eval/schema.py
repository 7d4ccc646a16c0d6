"""RSMEB data contract: task metadata and the exact HF `Features` every task is stored with.

Datasets are model-agnostic: an item is stored as plain columns — ``image`` (embedded bytes), ``text``,
``bbox`` (pixel ``[x1, y1, x2, y2]`` boxes on that row's image), ``lat``/``lon`` — and never carries placeholder
tokens or instructions; instructions live in `TaskMeta` and only the model's processor renders markup.

Each task has two configs in one dataset folder:

* ``<task>``: the queries, one row per query, with ``candidate_ids`` (the fixed candidate list of the MMEB
  protocol; empty for corpus-only tasks) and ``positive_ids`` (the relevant corpus ids; never assumed to be
  the first candidate);
* ``<task>-corpus``: every candidate/document item, keyed by ``id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

# The item layout is the data layer's (vlm2geovec.data.items); re-exported here for the benchmark's modules.
from vlm2geovec.data.items import ITEM_COLUMNS, empty_item, item_features, item_modalities, row_to_item  # noqa: F401

Family = Literal[
    "scene_classification",
    "cross_modal_retrieval",
    "compositional_retrieval",
    "vqa",
    "grounding",
    "geospatial",
]
FAMILIES: tuple[str, ...] = get_args(Family)
Modality = Literal["image", "text", "bbox", "coords"]
MODALITIES: tuple[str, ...] = get_args(Modality)
Protocol = Literal["candidates", "corpus"]
SPLITS = ("train", "test")


def query_features():
    from datasets import Features, List, Value

    return Features(
        {"query_id": Value("string"), **item_features(), "candidate_ids": List(Value("string")),
         "positive_ids": List(Value("string"))}
    )


def corpus_features():
    from datasets import Features, Value

    return Features({"id": Value("string"), **item_features()})


@dataclass(frozen=True)
class TaskMeta:
    """Everything about a task except its data.

    Args:
        name: ``<Dataset>-<Direction>``, e.g. ``"NEON-RefExp-T2R"``; unique in the registry.
        family: one of the six RSMEB families.
        source: where the data comes from (dataset name, licence).
        description: what is asked, how labels/queries were derived.
        query_modalities / candidate_modalities: what a query / a candidate holds.
        query_instruction / candidate_instruction: the instruction each side is embedded with.
        candidates: how each query's candidate list is drawn.
        protocol: ``candidates`` (P@1 over a fixed list, MMEB) and/or ``corpus`` (full-corpus retrieval).
        main_score: the headline metric (``"p@1"`` or a corpus metric such as ``"r@1"``).
        license: licence of the stored data.
        hf_path: Hub dataset id for published data (None: built locally only).
        lite: part of RSMEB-lite (built offline from installable real data).
        reference: citation or URL of the source dataset.
    """

    name: str
    family: Family
    source: str
    description: str
    query_modalities: tuple[Modality, ...]
    candidate_modalities: tuple[Modality, ...]
    query_instruction: str
    candidate_instruction: str | None
    candidates: str
    protocol: tuple[Protocol, ...] = ("candidates",)
    main_score: str = "p@1"
    license: str = "unknown"
    hf_path: str | None = None
    lite: bool = False
    reference: str = ""
    splits: tuple[str, ...] = field(default=SPLITS)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {FAMILIES}")
        for side, modalities in (("query", self.query_modalities), ("candidate", self.candidate_modalities)):
            if not modalities or any(m not in MODALITIES for m in modalities):
                raise ValueError(f"{self.name}: {side}_modalities {modalities!r} must be a non-empty subset of {MODALITIES}")
        if not self.protocol or any(p not in get_args(Protocol) for p in self.protocol):
            raise ValueError(f"{self.name}: protocol {self.protocol!r} must be a non-empty subset of {get_args(Protocol)}")
        if not self.query_instruction.strip():
            raise ValueError(f"{self.name}: query_instruction is empty")
        if "<" in self.query_instruction and "|>" in self.query_instruction:
            raise ValueError(f"{self.name}: instructions must not carry model markup")
        for split in self.splits:
            if split not in SPLITS:
                raise ValueError(f"{self.name}: split {split!r} is not one of {SPLITS}")
