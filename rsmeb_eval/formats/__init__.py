"""Parsers for the public distribution formats behind RSMEB, one module per format.

Each parser reads one raw format into plain frozen dataclass records and returns ``(records, ParseReport)``;
none knows about RSMEB tasks, so the training-data converters reuse them. Every parser takes
``on_error="raise"`` (the first bad row raises ``ValueError("<file>:<row>: <reason>")``) or ``"skip"`` (bad
rows are left out, logged on the ``rsmeb_eval.formats`` logger, summarised by a `ParseWarning` and listed in
the report).

| module | format | records |
|---|---|---|
| `scene_folders` | ``root/<Class>/<image>`` (EuroSAT, UC Merced, AID, RESISC45, PatternNet, WHU-RS19) | `SceneImage` |
| `karpathy` | Karpathy caption JSON (RSICD, RSITMD, UCM-Captions) | `CaptionedImage`, `Caption` |
| `dior_rsvg` | DIOR-RSVG VOC XML with ``<description>`` | `ReferringImage`, `ReferringObject` |
| `rsvqa` | RSVQA questions/answers/images JSON triple | `VQAQuestion` |
| `composed` | reference,text,target CSV/JSONL (PatternCom style) | `ComposedTriplet` |
| `geo_tiles` | image,lat,lon CSV or GeoJSON Points | `GeoTile` |
| `geochat` | GeoChat-Instruct LLaVA-style conversation JSON (training data) | `GeoChatSample`, `GeoChatTurn`, `GeoChatBox` |
"""

from rsmeb_eval.formats.composed import ComposedTriplet, parse_composed
from rsmeb_eval.formats.dior_rsvg import ReferringImage, ReferringObject, parse_dior_rsvg
from rsmeb_eval.formats.geo_tiles import GeoTile, parse_geo_tiles
from rsmeb_eval.formats.geochat import (
    GeoChatBox,
    GeoChatSample,
    GeoChatTurn,
    GroundedPhrase,
    parse_geochat_instruct,
)
from rsmeb_eval.formats.images import IMAGE_EXTENSIONS
from rsmeb_eval.formats.karpathy import Caption, CaptionedImage, parse_karpathy
from rsmeb_eval.formats.report import OnError, ParseReport, ParseWarning, Problem
from rsmeb_eval.formats.rsvqa import VQAQuestion, parse_rsvqa
from rsmeb_eval.formats.scene_folders import SceneImage, parse_scene_folders

__all__ = [
    "IMAGE_EXTENSIONS",
    "Caption",
    "CaptionedImage",
    "ComposedTriplet",
    "GeoChatBox",
    "GeoChatSample",
    "GeoChatTurn",
    "GeoTile",
    "GroundedPhrase",
    "OnError",
    "ParseReport",
    "ParseWarning",
    "Problem",
    "ReferringImage",
    "ReferringObject",
    "SceneImage",
    "VQAQuestion",
    "parse_composed",
    "parse_dior_rsvg",
    "parse_geo_tiles",
    "parse_geochat_instruct",
    "parse_karpathy",
    "parse_rsvqa",
    "parse_scene_folders",
]
