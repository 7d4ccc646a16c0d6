"""Input guards: gradio validates and converts a component's payload before any handler runs, and its own
failures (a KeyError in the annotator, a TypeError in the slider, a pydantic error) reach the user as
"the upstream app has raised an exception". These checks run first and name the field instead."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import gradio as gr
import pydantic  # gradio's own dependency
from gradio_image_annotation import image_annotator

from .settings import InputError
from .uploads import read_upload

logger = logging.getLogger("vlm2geovec.space")


def invalid(message: str) -> gr.Error:
    return gr.Error(message, title="Invalid input", print_exception=False)


def _short(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print (Python's digit limit)
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _number(value: Any, what: str, whole: bool = False, low: float | None = None,
            high: float | None = None) -> float:
    """``value`` as a finite number (a whole one if asked) in [low, high], else a message naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{what}: expected a number, got {_kind(value)}.")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        raise invalid(f"{what}: {_short(value)} is too large.") from None
    if not math.isfinite(number):
        raise invalid(f"{what}: expected a finite number, got {_short(value)}.")
    if whole and number != int(number):
        raise invalid(f"{what}: expected a whole number, got {_short(value)}.")
    if (low is not None and number < low) or (high is not None and number > high):
        shown = int(number) if whole else _short(value)
        raise invalid(f"{what}: must lie in [{low:g}, {high:g}], got {shown}.")
    return number


def guard_slider(component: gr.Slider, what: str) -> gr.Slider:
    """Whole numbers within the slider's range (gradio compares strings with numbers, and rounds 2.5)."""
    preprocess = component.preprocess

    def checked(payload):
        _number(payload, what, whole=True, low=component.minimum, high=component.maximum)
        return preprocess(payload)

    component.preprocess = checked
    return component


def guard_number(component: gr.Number, what: str) -> gr.Number:
    """A finite number or empty; its range is the processor's check (latitude/longitude), named by the handler."""
    preprocess = component.preprocess

    def checked(payload):
        if payload is not None:
            _number(payload, what)
        return preprocess(payload)

    component.preprocess = checked
    return component


def guard_text(component: gr.Textbox, what: str) -> gr.Textbox:
    """Text or empty: gradio would turn a number or a list into its repr and search for that."""
    preprocess = component.preprocess

    def checked(payload):
        if payload is not None and not isinstance(payload, str):
            raise invalid(f"{what}: expected text, got {_kind(payload)}.")
        return preprocess(payload)

    component.preprocess = checked
    return component


def guard_choices(component: gr.CheckboxGroup, what: str) -> gr.CheckboxGroup:
    """A list of the offered choices (a bare string would be read character by character)."""
    preprocess = component.preprocess
    choices = [value for _, value in component.choices]

    def checked(payload):
        if not isinstance(payload, list):
            raise invalid(f"{what}: expected a list such as {choices[:2]}, got {_kind(payload)}.")
        unknown = [v for v in payload if not isinstance(v, str) or v not in choices]
        if unknown:
            raise invalid(f"{what}: unknown {_short(unknown)}; choose from {choices}.")
        return preprocess(payload)

    component.preprocess = checked
    return component


BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


def _check_annotation(payload: Any, what: str) -> None:
    """The annotator's payload ``{"image": <file>, "boxes": [{"xmin", "ymin", "xmax", "ymax"}, ...]}``, checked
    for shape and numbers before the component reads it; box geometry (inside the image, x1 < x2) is the
    processor's check, made when the boxes are embedded."""
    if not isinstance(payload, dict):
        raise invalid(f"{what}: expected {{'image': <file>, 'boxes': [...]}}, got {_kind(payload)}.")
    image = payload.get("image")
    uploaded = isinstance(image, dict) and image.get("path") and isinstance(image.get("meta"), dict)
    if image is not None and not uploaded:
        raise invalid(f"{what}: 'image' must be an uploaded file (gradio_client.handle_file), got {_kind(image)}.")
    boxes = payload.get("boxes", [])
    if boxes is None:
        return
    if not isinstance(boxes, list):
        raise invalid(f"{what}: 'boxes' must be a list of {{'xmin', 'ymin', 'xmax', 'ymax'}} boxes in pixels, "
                       f"got {_kind(boxes)}.")
    for i, box in enumerate(boxes, start=1):
        if not isinstance(box, dict):
            raise invalid(f"{what}: box {i} must be {{'xmin', 'ymin', 'xmax', 'ymax'}} in pixels, got {_kind(box)}.")
        missing = [key for key in BOX_KEYS if key not in box]
        if missing:
            raise invalid(f"{what}: box {i} has no {', '.join(repr(k) for k in missing)} "
                           "(a box is {'xmin', 'ymin', 'xmax', 'ymax'} in pixels).")
        for key in BOX_KEYS:
            _number(box[key], f"{what}: box {i} {key!r}")
        if "scaleFactor" in box:
            _number(box["scaleFactor"], f"{what}: box {i} 'scaleFactor'", low=1e-6, high=1e6)
        if "color" in box and not isinstance(box["color"], str):
            raise invalid(f"{what}: box {i} 'color' must be text such as '#ff0000', got {_kind(box['color'])}.")


def guard_annotator(component: image_annotator, what: str) -> image_annotator:
    """Check the payload before gradio validates it, the file before it is decoded, and read the image with the
    processor's rules (not the annotator's plain ``convert("RGB")``, which drops alpha and cuts 16-bit data)."""
    base = component.data_model

    def model_validate(cls, obj, *args, **kwargs):  # gradio validates the payload with this before preprocess
        _check_annotation(obj, what)
        try:
            return super(checked_model, cls).model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first.get("loc", ()))) or "payload"
            raise invalid(f"{what}: malformed input at {where!r}: {first.get('msg', error)}.") from None

    checked_model = type(base.__name__, (base,), {"model_validate": classmethod(model_validate)})
    component.data_model = checked_model
    preprocess_boxes = component.preprocess_boxes

    def read_image(image):
        if image is None:
            return None
        try:
            return read_upload(image.path, image.orig_name or Path(image.path).name)
        except InputError as error:
            raise invalid(str(error)) from None

    def read_boxes(boxes):
        try:
            return preprocess_boxes(boxes)
        except Exception as error:  # noqa: BLE001 - anything _check_annotation missed: a message, not a traceback
            raise invalid(f"{what}: malformed boxes ({type(error).__name__}: {error}).") from None

    component.preprocess_image = read_image
    component.preprocess_boxes = read_boxes
    return component


def refuse_foreign_files(demo: gr.Blocks) -> None:
    """gradio refuses a payload naming a server file that no one uploaded (``InvalidPathError``) before any
    component sees it, and shows that as a generic error: give the refusal a message (without the path)."""
    from gradio.exceptions import InvalidPathError

    preprocess_data = demo.preprocess_data

    async def checked(*args, **kwargs):
        try:
            return await preprocess_data(*args, **kwargs)
        except InvalidPathError:
            raise invalid("Upload: refused a file path that was not uploaded to this app; send images with the "
                           "upload button or gradio_client.handle_file.") from None

    demo.preprocess_data = checked


def quiet_component_file_log() -> None:
    """gradio prints ``id=..., environment=client, type=component, file_name=...`` to stdout for every file of
    a custom component a browser fetches (several per page load): send those lines to the debug log."""
    import builtins

    import gradio.routes as routes

    if getattr(routes, "_vlm2geovec_quiet", False):
        return

    def quiet_print(*args, **kwargs):
        text = " ".join(map(str, args))
        if text.startswith("id=") and ", environment=" in text and ", file_name=" in text:
            logger.debug("custom component file: %s", text)
            return
        builtins.print(*args, **kwargs)

    routes.print = quiet_print  # module global: shadows the builtin for gradio.routes only
    routes._vlm2geovec_quiet = True


def ui_handler(fn: Callable) -> Callable:
    """Gradio handler: :class:`InputError` becomes a friendly message box."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as error:
            raise gr.Error(str(error), title="Invalid input", print_exception=False) from None

    return wrapper


def guard_choice(component, what: str, choices: Callable[[], list[str]]):
    """One of ``choices()`` (read at call time: the search targets grow as rasters are indexed)."""

    def checked(payload):
        allowed = choices()
        if not isinstance(payload, str) or payload not in allowed:
            raise invalid(f"{what}: expected one of {allowed}, got {_kind(payload)}.")
        return payload

    component.preprocess = checked
    return component


def guard_ids(component: gr.Dropdown, what: str) -> gr.Dropdown:
    """A list of tile ids (text), or empty; which ids exist is the handler's check, named there."""

    def checked(payload):
        if payload is None:
            return []
        if isinstance(payload, str):
            payload = [part.strip() for part in payload.split(",") if part.strip()]
        if not isinstance(payload, list) or not all(isinstance(v, str) for v in payload):
            raise invalid(f"{what}: expected a list of tile ids, got {_kind(payload)}.")
        return payload

    component.preprocess = checked
    return component
