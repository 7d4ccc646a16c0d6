"""The bad-and-unusual-input battery: shared checks.

Every battery case ends in one of two outcomes, and nothing else counts as passing:

* a **clear error**: an exception of the expected type (never a crash deep in torch/PIL) whose message names
  the item, field, file or line (`expect_error`), or, for the CLI, a non-zero exit with one ``error:`` line
  and no traceback (`expect_cli_error`);
* a **checked result**: the case runs and its output is compared with a known-correct value (the test body
  asserts it, then calls `record_correct`).

Cases are marked ``@pytest.mark.battery``; ``tests/conftest.py`` prints the tally at the end of the run
(cases, clear errors, checked results) so CI logs show the battery's size and outcome.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTCOMES: dict[str, set[str]] = {}  # test id -> the outcomes its checks recorded ("clear_error", "correct")


def _record(kind: str) -> None:
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    OUTCOMES.setdefault(test_id, set()).add(kind)

# Text that only a crash or a leak of internals produces; a clear error never contains it.
_CRASH_MARKERS = ("Traceback (most recent call last)", "RuntimeError", "IndexError", "KeyError",
                  "AttributeError", "ZeroDivisionError", "OverflowError", "DecompressionBombError")


def expect_error(call: Callable[[], object], exceptions=(ValueError, TypeError), match: str | Iterable[str] = ()):
    """``call()`` must raise one of ``exceptions`` (exactly those types or subclasses) with every regex in
    ``match`` found in its message. Returns the exception."""
    patterns = [match] if isinstance(match, str) else list(match)
    with pytest.raises(exceptions) as info:
        call()
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"error message {message!r} does not match {pattern!r}"
    assert message.strip(), "the error has no message"
    _record("clear_error")
    return info.value


def record_correct() -> None:
    """Call at the end of a battery case whose result the test has just checked."""
    _record("correct")


def run_cli(args: list[str], cwd: str | os.PathLike | None = None, timeout: float = 600,
            env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh interpreter (what a user's shell runs)."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "vlm2geovec.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def expect_cli_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A CLI failure as users must see it: exit code != 0, stderr's last line ``error: ...`` naming every
    needle (regexes), and no traceback anywhere. Returns the error line."""
    stderr = result.stderr.strip()
    assert result.returncode not in (0, None), f"expected a failure, got exit 0:\n{result.stdout}\n{stderr}"
    assert result.returncode > 0, f"killed by signal {-result.returncode}:\n{stderr[-2000:]}"
    for marker in _CRASH_MARKERS[:1]:
        assert marker not in stderr and marker not in result.stdout, f"traceback on stderr:\n{stderr[-3000:]}"
    last = stderr.splitlines()[-1] if stderr else ""
    assert last.startswith("error: "), f"last stderr line is not an 'error:' line: {last!r}\n{stderr[-2000:]}"
    for needle in needles:
        assert re.search(needle, last), f"error line {last!r} does not match {needle!r}"
    _record("clear_error")
    return last
