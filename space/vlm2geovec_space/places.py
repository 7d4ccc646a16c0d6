"""Place names: GeoNames cities (``vlm2geovec.data.assets.cities``) resolved to coordinates."""

from __future__ import annotations

import difflib
import unicodedata
from functools import lru_cache
from typing import Any

from .settings import InputError


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return " ".join("".join(ch for ch in text if not unicodedata.combining(ch)).casefold().split())


@lru_cache(maxsize=1)
def _place_index() -> dict[str, list]:
    from vlm2geovec.data import assets

    index: dict[str, list] = {}
    for city in assets.cities(min_population=15_000):
        index.setdefault(_fold(city.name), []).append(city)
    for entries in index.values():
        entries.sort(key=lambda c: -c.population)
    return index


def resolve_place(query: str) -> Any:
    """``"Norfolk"``, ``"Norfolk, US"``, ``"Paris, France"`` -> the most populous matching GeoNames city
    (>= 15,000 inhabitants). Accents and case are ignored; qualifiers match country, country code or admin1."""
    if not query or not query.strip():
        raise InputError("Place name: enter a city, e.g. 'Norfolk, US' or 'Paris, France'.")
    if len(query) > 200:
        raise InputError(f"Place name: at most 200 characters, got {len(query)}.")
    name, *qualifiers = [part.strip() for part in query.split(",")]
    index = _place_index()
    matches = index.get(_fold(name), [])
    for qualifier in filter(None, map(_fold, qualifiers)):
        matches = [c for c in matches if qualifier in (_fold(c.country), _fold(c.country_code), _fold(c.admin1_code),
                                                       _fold(c.continent))]
    if not matches:
        close = difflib.get_close_matches(_fold(name), index.keys(), n=3, cutoff=0.75)
        hint = f" Did you mean {', '.join(repr(index[c][0].name) for c in close)}?" if close else ""
        raise InputError(
            f"Place name: unknown place {query.strip()!r} (GeoNames cities with at least 15,000 inhabitants; "
            f"add ', <country>' to disambiguate).{hint}"
        )
    return matches[0]
