"""Stage the Space (and optionally push it to the Hugging Face Hub).

    python space/push.py --out /tmp/vlm2geovec-space                  # stage only: a folder ready to upload
    python space/push.py --dry-run                                    # list the files a push would upload
    python space/push.py --repo-id ORG/vlm2geovec-demo [--private] [--model ORG/vlm2geovec-2b]

The staged folder is the Space repository: ``app.py``, ``requirements.txt``, ``README.md`` (the Space's YAML
header), ``ATTRIBUTION.md``, ``samples/``, the Space's own modules (``vlm2geovec_space/``), plus the sources of the ``vlm2geovec`` package and
the three ``*_vlm2geovec.py`` modules, which ``app.py`` imports from beside itself when the package is not
installed (Spaces install only ``requirements.txt``, before the repository is copied in). Pushing needs a write
token (``hf auth login`` or ``HF_TOKEN``); ``--model`` sets the Space variable ``VLM2GEOVEC_MODEL``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

SPACE = Path(__file__).resolve().parent
REPO = SPACE.parent
SPACE_FILES = ("app.py", "requirements.txt", "README.md", "ATTRIBUTION.md")
SPACE_DIRS = ("samples", "vlm2geovec_space")
PACKAGE_DIRS = ("vlm2geovec",)
PACKAGE_FILES = ("modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py", "LICENSE")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def stage(out: Path) -> list[Path]:
    """Copy the Space into ``out`` (which must not exist or be empty); return the files written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(SPACE / name, out / name)
    for name in SPACE_DIRS:
        shutil.copytree(SPACE / name, out / name, ignore=IGNORE)
    for name in PACKAGE_DIRS:
        shutil.copytree(REPO / name, out / name, ignore=IGNORE)
    for name in PACKAGE_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, out / name)
    return sorted(p for p in out.rglob("*") if p.is_file())


def push(folder: Path, repo_id: str, private: bool = False, model: str | None = None) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    if model:
        api.add_space_variable(repo_id, "VLM2GEOVEC_MODEL", model)
    api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=str(folder),
                      commit_message="Update the VLM2GeoVec Space")
    return str(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="stage into this folder (default: a temporary folder)")
    parser.add_argument("--repo-id", help="push to this Space, e.g. ORG/vlm2geovec-demo")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--model", help="set the Space variable VLM2GEOVEC_MODEL (a Hub model id)")
    parser.add_argument("--dry-run", action="store_true",
                        help="stage into a temporary folder, list the files a push would upload, push nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        with tempfile.TemporaryDirectory(prefix="vlm2geovec-space-") as tmp:
            files = stage(Path(tmp) / "space")
            for path in files:
                print(path.relative_to(Path(tmp) / "space").as_posix())
            total = sum(p.stat().st_size for p in files)
        print(f"{len(files)} files, {total / 2**20:.1f} MB (dry run: nothing staged or pushed)")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="vlm2geovec-space-"))
    files = stage(out)
    print(f"staged {len(files)} files in {out}")
    if args.repo_id:
        print(f"pushed: {push(out, args.repo_id, args.private, args.model)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
