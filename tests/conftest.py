"""Shared fixtures: one nano model, processor and saved checkpoint per test session (tests get copies)."""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Never reach for the Hub, and keep the Hugging Face caches (transformers' remote code, evaluate's metric
# modules) out of the user's home. Set at import, before any library reads them: transformers and evaluate
# fix their module paths when first imported, so switching later would split the cache.
_HF_HOME = tempfile.mkdtemp(prefix="vlm2geovec-tests-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_MODULES_CACHE"] = os.path.join(_HF_HOME, "modules")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def _nano():
    from vlm2geovec.checkpoint import build_nano

    return build_nano(seed=0)


@pytest.fixture
def nano_model(_nano):
    return copy.deepcopy(_nano[0])


@pytest.fixture(scope="session")
def processor(_nano):
    return _nano[1]


@pytest.fixture(scope="session")
def nano_dir(_nano, tmp_path_factory):
    from vlm2geovec.checkpoint import save_checkpoint

    return save_checkpoint(_nano[0], _nano[1], tmp_path_factory.mktemp("nano") / "vlm2geovec-nano")


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A textured RGB image (smooth gradients + noise), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width, 1), y / max(height, 1), (x + y) / max(width + height, 1)], axis=-1)
    pixels = np.clip(base * 200 + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def images():
    return [make_image(300, 200, 0), make_image(160, 240, 1), make_image(420, 420, 2)]


def run_python(code: str, cwd: Path, env_extra: dict | None = None) -> str:
    """Run code in a fresh interpreter (another process, another directory); return stdout."""
    import subprocess

    env = dict(os.environ, **(env_extra or {}))
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def pytest_terminal_summary(terminalreporter):
    """The battery's tally (tests/battery.py): how many bad or unusual inputs ended in what."""
    from tests.battery import OUTCOMES

    reports = terminalreporter.stats
    battery = [r for key in ("passed", "failed", "error") for r in reports.get(key, [])
               if getattr(r, "when", "call") == "call" and "battery" in getattr(r, "keywords", {})]
    if not battery:
        return
    failed = [r for r in battery if r.outcome != "passed"]
    passed = [r.nodeid for r in battery if r.outcome == "passed"]
    errors = sum(1 for nodeid in passed if "clear_error" in OUTCOMES.get(nodeid, ()))
    terminalreporter.write_line(
        f"battery: {len(battery)} bad/unusual-input cases: {errors} ended in clear errors, "
        f"{len(passed) - errors} in checked results, {len(failed)} failed (a crash, a silent result or an unclear error)"
    )
