"""Task registry: every `RSMEBTask` subclass with metadata, by name. Duplicate names are an error."""

from __future__ import annotations

from functools import lru_cache

from rsmeb_eval.schema import FAMILIES
from rsmeb_eval.tasks import RSMEBTask


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


@lru_cache(maxsize=1)
def _gather() -> dict[str, RSMEBTask]:
    tasks: dict[str, RSMEBTask] = {}
    for cls in _subclasses(RSMEBTask):
        if "metadata" not in cls.__dict__:
            continue
        name = cls.metadata.name
        if name in tasks:
            raise RuntimeError(f"duplicate RSMEB task name {name!r}: {type(tasks[name]).__name__} and {cls.__name__}")
        tasks[name] = cls()
    return dict(sorted(tasks.items()))


def get_task(name: str) -> RSMEBTask:
    tasks = _gather()
    if name not in tasks:
        raise KeyError(f"unknown RSMEB task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]


def get_tasks(names=None, family: str | None = None, lite: bool | None = None) -> list[RSMEBTask]:
    """Tasks by name, family and/or lite membership, in name order."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {FAMILIES}")
    selected = [get_task(n) for n in names] if names else list(_gather().values())
    return [t for t in selected if (family is None or t.metadata.family == family)
            and (lite is None or t.metadata.lite == lite)]
