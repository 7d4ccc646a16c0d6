"""Packaging rules that keep installs working: no torchvision anywhere, project-specific import names."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from tests.conftest import REPO_ROOT

FORBIDDEN = ("torchvision", "timm", "open_clip", "open-clip")


def test_no_torchvision_in_any_install_path():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    requirements += (REPO_ROOT / "constraints.txt").read_text().splitlines()
    for requirement in requirements:
        name = re.split(r"[<>=!\[;\s]", requirement.strip(), maxsplit=1)[0].lower()
        assert name not in FORBIDDEN, requirement
        assert "[vision]" not in requirement and "[image]" not in requirement, requirement


def test_remote_code_files_import_only_allowed_modules():
    """The files copied into checkpoints must run with only the standard library, torch/transformers/PIL/numpy
    (and each other)."""
    allowed = set(sys.stdlib_module_names) | {
               "numpy", "torch", "PIL", "transformers", "sentence_transformers",
               "peft",  # imported lazily, only to load an adapter checkpoint
               "rasterio",  # imported lazily, only for 16-bit RGB files PIL cannot read (refused without it)
               "modeling_vlm2geovec", "processing_vlm2geovec"}
    for name in ("modeling_vlm2geovec.py", "processing_vlm2geovec.py", "st_vlm2geovec.py"):
        tree = ast.parse((REPO_ROOT / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in allowed, f"{name} imports {root}, which a checkpoint's remote code cannot rely on"


def test_installed_top_level_names_are_project_specific():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    names = setuptools["py-modules"] + setuptools["packages"]
    assert all("vlm2geovec" in name or name.startswith("rsmeb_eval") for name in names), names
    assert setuptools["package-dir"] == {"vlm2geovec_train": "train"}


def test_every_source_folder_is_packaged():
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for root, name in (("vlm2geovec", "vlm2geovec"), ("rsmeb_eval", "rsmeb_eval"), ("train", "vlm2geovec_train")):
        for folder in [REPO_ROOT / root, *(p for p in (REPO_ROOT / root).rglob("*") if p.is_dir())]:
            if "__pycache__" in folder.parts or not any(folder.glob("*.py")):
                continue
            dotted = ".".join([name, *folder.relative_to(REPO_ROOT / root).parts])
            assert dotted in listed, f"{folder} holds Python files but {dotted} is not in pyproject's packages"
