"""The data layer (`vlm2geovec.data`) is the package's own: the package does not depend on its benchmark."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "vlm2geovec"
# The one place the package names the benchmark: the command line's `vlm2geovec rsmeb ...` subcommand, registered
# while the parser is built (never at import). Everything else must stand without rsmeb_eval.
ALLOWED = {("vlm2geovec/cli.py", "build_parser")}


def _rsmeb_imports(path, root=REPO_ROOT) -> set[tuple[str, str]]:
    """(file, enclosing function or '<module>') of every import statement in `path` that names rsmeb_eval."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or ""]
            if any(name == "rsmeb_eval" or name.startswith("rsmeb_eval.") for name in names):
                found.add((path.relative_to(root).as_posix(), where))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_no_package_module_imports_the_benchmark():
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        found |= _rsmeb_imports(path)
    assert found <= ALLOWED, sorted(found - ALLOWED)


def test_the_scan_sees_an_import_of_the_benchmark(tmp_path):
    # the scanner itself must catch both import forms, at module level and inside a function
    probe = tmp_path / "probe.py"
    probe.write_text("import os, rsmeb_eval.assets\ndef f():\n    from rsmeb_eval.schema import row_to_item\n"
                     "from rsmeb_evaluation import x\n")
    assert _rsmeb_imports(probe, tmp_path) == {("probe.py", "<module>"), ("probe.py", "f")}


def test_importing_every_package_module_loads_no_benchmark_module():
    script = """
import importlib, json, pkgutil, sys
import vlm2geovec
names = sorted(m.name for m in pkgutil.walk_packages(vlm2geovec.__path__, "vlm2geovec."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "rsmeb": sorted(m for m in sys.modules if m.split(".")[0] == "rsmeb_eval")}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"vlm2geovec.corpus", "vlm2geovec.data.assets", "vlm2geovec.data.items", "vlm2geovec.cli"} <= set(
        report["modules"])
    assert report["rsmeb"] == []


def test_the_benchmarks_old_names_are_the_data_layers_objects():
    import rsmeb_eval.assets
    import rsmeb_eval.schema
    from rsmeb_eval import assets as via_package
    from vlm2geovec.data import assets, items

    # the shim is the module itself: private helpers and monkeypatching reach the one copy
    assert rsmeb_eval.assets is assets and via_package is assets
    assert rsmeb_eval.assets._extract is assets._extract
    for name in ("ITEM_COLUMNS", "item_features", "row_to_item", "item_modalities", "empty_item"):
        assert getattr(rsmeb_eval.schema, name) is getattr(items, name)


def test_vendored_countries_ship_with_the_package():
    from vlm2geovec.data import assets

    assert assets.NATURALEARTH_FILE.parent == PACKAGE / "data"
    assert len(json.loads(assets.NATURALEARTH_FILE.read_text(encoding="utf-8"))["features"]) == 177
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"vlm2geovec.data" = ["*.geojson", "LICENSE"]' in pyproject and '"vlm2geovec.data",' in pyproject


def test_row_to_item_and_atomic_write(tmp_path):
    from vlm2geovec.data.io import atomic_write
    from vlm2geovec.data.items import item_modalities, row_to_item

    row = {"image": {"bytes": b"png", "path": None}, "text": "a pier", "bbox": [(1, 2, 3, 4)], "lat": 1.5, "lon": None}
    assert row_to_item(row) == {"image": b"png", "bbox": [[1, 2, 3, 4]], "coords": (1.5, None), "text": "a pier"}
    assert item_modalities(row) == ("image", "text", "bbox", "coords")
    target = tmp_path / "sub" / "out.json"
    atomic_write(target, lambda tmp: tmp.write_text("{}"))
    assert target.read_text() == "{}" and [p.name for p in target.parent.iterdir()] == ["out.json"]

    def failing(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    try:
        atomic_write(target, failing)
    except OSError:
        pass
    # the old file stays whole and no temporary file is left behind
    assert target.read_text() == "{}" and [p.name for p in target.parent.iterdir()] == ["out.json"]
