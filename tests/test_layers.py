"""The package's layers: every import of an mvbook module points down (or sideways), never up.

The layers of DESIGN, bottom to top. A module may import modules of its own layer or of a lower
one; methods may not import each other. The check reads every module's source (``ast``), so it
also sees imports inside functions, which a plain ``import`` of each module would not run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import mvbook

ROOT = Path(mvbook.__file__).resolve().parent

#: (layer name, module prefixes), bottom first.
LAYERS = (
    ("core", ("mvbook", "mvbook.validation", "mvbook.runtime", "mvbook.geometry", "mvbook.crops",
              "mvbook.heatmaps", "mvbook.volumetric", "mvbook.metrics", "mvbook.skeletons",
              "mvbook.viz", "mvbook.results", "mvbook.notebook", "mvbook.dense")),
    ("data", ("mvbook.studio", "mvbook.data")),
    ("training", ("mvbook.train", "mvbook.nn")),
    ("zoo", ("mvbook.zoo",)),
    ("methods", ("mvbook.methods",)),
    ("book", ("mvbook.report", "mvbook.assign", "mvbook.book", "mvbook.cli", "mvbook.__main__")),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"module {module} is in no layer of LAYERS: add it")
    return rank


def _method(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "methods" else None


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """``(imported mvbook module, line)`` for every import statement of the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "mvbook"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mvbook":
                # ``from mvbook.methods import weak25d`` imports the submodule weak25d
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
    return found


MODULES = sorted(ROOT.rglob("*.py"))


def test_every_module_is_in_a_layer():
    for path in MODULES:
        _layer(_module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_imports_point_down(path):
    module = _module_name(path)
    own = _layer(module)
    bad = []
    for target, line in _imports(path, module):
        if _layer(target) > own:
            bad.append(f"line {line}: {target} ({LAYERS[_layer(target)][0]}) is above "
                       f"{module} ({LAYERS[own][0]})")
        if _method(module) and _method(target) and _method(target) != _method(module):
            bad.append(f"line {line}: method {_method(module)} imports method {_method(target)}")
    assert not bad, "\n".join(bad)


def test_modules_import_in_layer_order():
    # importing the layers bottom up works: no module needs one above it at import time
    for _, prefixes in LAYERS:
        for path in MODULES:
            module = _module_name(path)
            if module.endswith("__main__"):
                continue
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                importlib.import_module(module)


def test_the_check_sees_an_upward_import(tmp_path):
    # a core module importing a method is caught (the test can fail), and so is a method
    # importing another
    fake = tmp_path / "mvbook" / "heatmaps_bad.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from mvbook.methods import weak25d\n")
    found = _imports(fake, "mvbook.heatmaps_bad")
    assert found == [("mvbook.methods.weak25d", 2)]
    assert _layer("mvbook.methods.weak25d") > _layer("mvbook.heatmaps_bad")
    assert _method("mvbook.methods.weak25d.data") != _method("mvbook.methods.learnable_triangulation")
