"""The layering in DESIGN.md, kept honest: a module imports only its own layer or below.

LAYERS lists exactly the modules and packages under src/onnxferry: a new one fails until it is
placed, and a name that does not exist (yet) fails until it is removed. DESIGN.md's future
modules (registry, signing, package, batch, explain, ...) join when they land.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "onnxferry"

LAYERS: list[set[str]] = [
    {"_version", "errors", "indexing", "signature", "safety", "atomic", "native"},
    {"model", "saving", "graphs", "data", "report", "inspection", "plots", "locales"},
    {
        "runtime",
        "denormals",
        "customops",
        "feeds",
        "measure",
        "energy",
        "precision",
        "ovsession",
        "devices",
        "ort_crashes",
        "stft",
        "unfused",
        "qdq",
    },
    {"parity", "bisect", "bench", "check", "golden", "view", "torchgraph"},
    {"convert", "optimize", "compare", "doctor", "explain"},  # compare: also against a source
    {"deploy", "signing", "registry", "batch", "learn"},
    {"serve"},
    {"package", "ci"},  # writes what serve runs (ferry.toml, probes, metrics names)
    {"cli", "__init__", "__main__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}

HEAVY = (
    "torch", "tensorflow", "keras", "sklearn", "ray", "shap", "rich", "click", "onnx", "optuna",
    "flwr", "onnxruntime_extensions",
)  # fmt: skip


def _module_name(path: Path) -> str:
    """The top-level module or package a file belongs to ("convert" for convert/torch/load.py)."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _package_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            depth = len(path.relative_to(PACKAGE).parts) - 1  # packages below onnxferry
            if node.level <= depth:
                continue  # inside the same top-level package: convert/torch/x -> .y, ..base
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnxferry."):
            found.add((node.module or "").split(".")[1])
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def _existing() -> set[str]:
    """The modules (``x.py``) and packages (``x/__init__.py``) directly under onnxferry."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return modules | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def test_layers_list_exactly_the_modules_that_exist() -> None:
    listed = [name for names in LAYERS for name in names]
    assert len(listed) == len(set(listed)), "a name is in two layers"
    existing = _existing()
    assert set(listed) - existing == set(), "listed but not under src/onnxferry: remove them"
    assert existing - set(listed) == set(), "not placed in a layer: add them to LAYERS"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_or_below(path: Path) -> None:
    name = _module_name(path)
    assert name in LAYER_OF, f"{name} has no layer; add it to LAYERS (and DESIGN.md)"
    for imported in _package_imports(path):
        assert imported in LAYER_OF, f"{name} imports unknown module {imported}"
        assert LAYER_OF[imported] <= LAYER_OF[name], (
            f"{name} (layer {LAYER_OF[name]}) imports {imported} (layer {LAYER_OF[imported]})"
        )


def test_import_onnxferry_loads_no_heavy_framework() -> None:
    code = f"import sys, onnxferry; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`import onnxferry` imported {out}"


def test_the_readme_layer_table_lists_these_layers() -> None:
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+|top) \| ([^|]+) \|", readme, flags=re.MULTILINE)
    tabled = [set(re.findall(r"`(\w+)`", modules)) for _, modules in rows]
    assert tabled == [names - {"_version"} for names in LAYERS]
