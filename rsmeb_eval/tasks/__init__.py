"""All RSMEB tasks, one module per family. RSMEB's official task list is unpublished: this is our reconstruction."""

from rsmeb_eval.tasks.base import RSMEBTask
from rsmeb_eval.tasks import compositional, cross_modal, geospatial, grounding, scene_classification, vqa  # noqa: F401

__all__ = ["RSMEBTask"]
