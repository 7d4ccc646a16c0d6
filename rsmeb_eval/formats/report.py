"""Problems found while parsing a raw distribution, and the one policy every parser follows for them.

A *row* is the unit a parser keeps or leaves out: an image file in a class folder, an entry of a JSON list,
a line of a CSV/JSONL file, an ``<object>`` of an XML annotation. With ``on_error="raise"`` the first bad row
raises ``ValueError("<file>:<row>: <reason>")``; with ``on_error="skip"`` it is left out, logged, and listed in
the returned `ParseReport` (a `ParseWarning` summarises each parse call), so nothing is dropped silently.
Problems with a whole file (a listing that is not JSON, a folder that does not exist) always raise.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

OnError = Literal["raise", "skip"]
logger = logging.getLogger("rsmeb_eval.formats")


class ParseWarning(UserWarning):
    """Rows were skipped (``on_error="skip"``); the returned `ParseReport` lists them."""


class RowError(Exception):
    """Raised inside a parser for a bad row; `Collector.row` turns it into a `Problem` (or a ValueError)."""


@dataclass(frozen=True)
class Problem:
    """One bad row: ``file`` it was read from, ``row`` (line number, ``"images[3]"``, relative path...)."""

    file: str
    row: int | str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}: {self.reason}" if self.row is not None else f"{self.file}: {self.reason}"


@dataclass
class ParseReport:
    """Every row a parse left out, and why."""

    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.problems)

    def __bool__(self) -> bool:  # a report is "true" when something went wrong
        return bool(self.problems)

    def extend(self, other: ParseReport) -> ParseReport:
        self.problems.extend(other.problems)
        return self

    def summary(self, limit: int = 5) -> str:
        if not self.problems:
            return "no problems"
        lines = [f"{len(self.problems)} row(s) skipped:"] + [f"  {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


def check_on_error(on_error: str) -> None:
    if on_error not in get_args(OnError):
        raise ValueError(f"on_error must be one of {get_args(OnError)}, got {on_error!r}")


class Collector:
    """Applies the ``on_error`` policy for one parse call (used by the parsers, not by their callers)."""

    def __init__(self, on_error: OnError, what: str) -> None:
        check_on_error(on_error)
        self.on_error = on_error
        self.what = what
        self.report = ParseReport()

    def problem(self, file: str | Path, row: int | str | None, reason: str) -> None:
        problem = Problem(str(file), row, reason)
        if self.on_error == "raise":
            raise ValueError(str(problem))
        self.report.problems.append(problem)
        logger.warning("skipped %s", problem)

    @contextmanager
    def row(self, file: str | Path, row: int | str | None) -> Iterator[None]:
        """``with collector.row(file, row): ...``: a `RowError` inside becomes a problem for that row."""
        try:
            yield
        except RowError as error:
            self.problem(file, row, str(error))

    def finish(self) -> ParseReport:
        if self.report.problems:
            warnings.warn(f"{self.what}: {self.report.summary()}", ParseWarning, stacklevel=3)
        return self.report
