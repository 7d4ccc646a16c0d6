"""Visual grounding and region-level reasoning: referring expressions <-> regions (image + box)."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

REFEXP = "Find the region of the given image that the expression refers to."
REGION = "Represent the given region of the remote-sensing image."
CAPTION = "Find the caption of the given region of the remote-sensing image."
TEXT_SIDE = "Represent the region description."


class DIORRSVGRefExp(RSMEBTask):
    metadata = TaskMeta(
        name="DIOR-RSVG-RefExp", family="grounding", source="DIOR-RSVG (38,320 expressions, 17,402 images)",
        description="Image + referring expression -> the referred object among the image's objects (image + box).",
        query_modalities=("image", "text"), candidate_modalities=("image", "bbox"), query_instruction=REFEXP,
        candidate_instruction=REGION, candidates="every annotated object of the same image",
        license="research use", reference="Zhan et al. 2023",
    )


class DIORRSVGRegionCaption(RSMEBTask):
    metadata = TaskMeta(
        name="DIOR-RSVG-RegionCaption", family="grounding", source="DIOR-RSVG",
        description="Image + box -> its expression among the expressions of the image's objects.",
        query_modalities=("image", "bbox"), candidate_modalities=("text",), query_instruction=CAPTION,
        candidate_instruction=TEXT_SIDE, candidates="the expressions of every object of the same image",
        license="research use", reference="Zhan et al. 2023",
    )


class NEONLiteRefExp(RSMEBTask):
    metadata = TaskMeta(
        name="NEONLite-RefExp", family="grounding",
        source="NEON airborne RGB tiles with tree crown boxes (deepforest 2.1.0, MIT)",
        description=("Image + 'the leftmost / rightmost / topmost / bottommost / largest / smallest tree crown' -> "
                     "that crown among up to 8 crowns of the same tile (unambiguous sets only)."),
        query_modalities=("image", "text"), candidate_modalities=("image", "bbox"), query_instruction=REFEXP,
        candidate_instruction=REGION, candidates="up to 8 crowns of the same tile", license="MIT (deepforest data)",
        lite=True, reference="derived from box geometry",
    )


class NEONLiteRegionCaption(RSMEBTask):
    metadata = TaskMeta(
        name="NEONLite-RegionCaption", family="grounding", source="NEON tiles with tree crown boxes (deepforest, MIT)",
        description=("Image + crown box -> its caption ('a small tree crown in the upper left of the tile'), among "
                     "the captions of up to 8 crowns of the same tile with distinct captions."),
        query_modalities=("image", "bbox"), candidate_modalities=("text",), query_instruction=CAPTION,
        candidate_instruction=TEXT_SIDE, candidates="captions of up to 8 crowns of the same tile",
        license="MIT (deepforest data)", lite=True, reference="derived: size tercile + 3x3 position of the box",
    )
