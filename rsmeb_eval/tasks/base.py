"""The task base class: a task owns its metadata and how its data is loaded; evaluators own the math."""

from __future__ import annotations

from typing import ClassVar

from rsmeb_eval.schema import TaskMeta


class RSMEBTask:
    """Subclass with ``metadata = TaskMeta(...)``; the registry collects every subclass that has one."""

    metadata: ClassVar[TaskMeta]

    @property
    def name(self) -> str:
        return self.metadata.name

    def load(self, data_dir, split: str = "test"):
        """(queries, corpus) of one split from an RSMEB dataset folder, images left as stored bytes."""
        from datasets import Image

        from rsmeb_eval.dataset_io import load_task

        if split not in self.metadata.splits:
            raise ValueError(f"{self.name}: no split {split!r}; it has {self.metadata.splits}")
        queries, corpus = load_task(data_dir, self.name, split)
        return queries.cast_column("image", Image(decode=False)), corpus.cast_column("image", Image(decode=False))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, family={self.metadata.family!r})"
