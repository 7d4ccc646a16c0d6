"""Builders turn raw public releases into RSMEB task data (see `rsmeb_eval.builders.public`)."""

from rsmeb_eval.builders.public import (
    RAW_LAYOUTS,
    SOURCES,
    BuildResult,
    SourceInfo,
    build_source,
    build_source_folder,
    class_words,
    draw_candidates,
    hash_split,
)

__all__ = ["RAW_LAYOUTS", "SOURCES", "BuildResult", "SourceInfo", "build_source", "build_source_folder", "class_words",
           "draw_candidates", "hash_split"]
