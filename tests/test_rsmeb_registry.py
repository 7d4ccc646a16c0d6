"""The task registry: valid metadata, unique names, every family covered offline."""

from __future__ import annotations

import pytest

from rsmeb_eval.registry import get_task, get_tasks
from rsmeb_eval.schema import FAMILIES, TaskMeta
from rsmeb_eval.tasks import RSMEBTask


def test_every_family_has_tasks_and_an_offline_lite_task():
    tasks = get_tasks()
    assert {t.metadata.family for t in tasks} == set(FAMILIES)
    assert {t.metadata.family for t in get_tasks(lite=True)} == set(FAMILIES)


def test_names_unique_and_lookups():
    names = [t.name for t in get_tasks()]
    assert len(names) == len(set(names)) and names == sorted(names)
    assert get_task("NEONLite-RefExp").metadata.family == "grounding"
    assert all(t.metadata.family == "vqa" for t in get_tasks(family="vqa"))
    with pytest.raises(KeyError, match="unknown RSMEB task"):
        get_task("Nope")
    with pytest.raises(ValueError, match="unknown family"):
        get_tasks(family="nope")


def test_metadata_is_validated():
    base = dict(name="X", family="vqa", source="s", description="d", query_modalities=("image",),
                candidate_modalities=("text",), query_instruction="q", candidate_instruction=None, candidates="c")
    TaskMeta(**base)
    with pytest.raises(ValueError, match="family"):
        TaskMeta(**{**base, "family": "vqa2"})
    with pytest.raises(ValueError, match="modalities"):
        TaskMeta(**{**base, "query_modalities": ("video",)})
    with pytest.raises(ValueError, match="markup"):
        TaskMeta(**{**base, "query_instruction": "<|image_pad|> describe"})


def test_duplicate_task_names_raise(monkeypatch):
    from rsmeb_eval import registry

    class Duplicate(RSMEBTask):  # gets its metadata only inside this test
        pass

    Duplicate.metadata = get_task("S2Lite-VQA").metadata
    real = list(registry._subclasses(RSMEBTask))
    monkeypatch.setattr(registry, "_subclasses", lambda cls: iter(real + [Duplicate]))
    registry._gather.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="duplicate RSMEB task name 'S2Lite-VQA'"):
            registry._gather()
    finally:
        del Duplicate.metadata  # the class may outlive the test; without metadata the registry ignores it
        monkeypatch.undo()
        registry._gather.cache_clear()
    assert registry._gather()["S2Lite-VQA"].metadata.name == "S2Lite-VQA"
