"""Every source framework and every optimization pass has a test that exercises it.

"Exercises" is read from the tests' code (their syntax trees, so comments and docstrings do not
count), not from their text:

- a pass is exercised when some test module calls its class (``Float16()``,
  ``Float16.from_params(...)``), or makes a call with its recipe name among the arguments
  (``make_pass("fp16")``, ``Recipe.of(["fold", "fp16"])``, a ``parametrize`` list, directly or
  through a module-level constant), or parses a recipe naming it (``name = "fp16"``);
- a framework is exercised when some test module calls the loader the dispatcher uses for it
  (``load_sklearn(...)``), or calls anything with ``framework="<name>"``. LOADERS says which
  loader that is, and a test checks that the dispatcher really calls it.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from onnxferry.convert import FRAMEWORKS, ConvertOptions
from onnxferry.convert.dispatch import load_source
from onnxferry.optimize import BUILTIN

TESTS = Path(__file__).parent

LOADERS: dict[str, tuple[str, str]] = {
    "torch": ("onnxferry.convert.torch", "load_torch"),
    "keras": ("onnxferry.convert.keras", "load_keras"),
    "tf": ("onnxferry.convert.keras", "load_saved_model"),
    "tflite": ("onnxferry.convert.tflite", "load_tflite"),
    "sklearn": ("onnxferry.convert.sklearn", "load_sklearn"),
    "onnx": ("onnxferry.convert.onnx", "load_onnx"),
}
"""Per framework: the module and name of the loader ``convert``'s dispatcher calls."""


@cache
def _modules() -> dict[str, ast.Module]:
    """The syntax trees of the test modules (this one aside)."""
    return {
        path.name: ast.parse(path.read_text(), str(path))
        for path in sorted(TESTS.glob("test_*.py"))
        if path.name != Path(__file__).name
    }


def _constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level assignments: name -> value (to follow ``parametrize(..., PASSES)``)."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.value is not None:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value
        elif (
            isinstance(node, ast.AnnAssign)
            and node.value is not None
            and isinstance(node.target, ast.Name)
        ):
            found[node.target.id] = node.value
    return found


def _calls(tree: ast.Module) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _callee(call: ast.Call) -> set[str]:
    """The names a call goes through: ``a.b.c(...)`` -> {"a", "b", "c"}."""
    names: set[str] = set()
    node: ast.expr = call.func
    while isinstance(node, ast.Attribute):
        names.add(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        names.add(node.id)
    return names


def _argument_strings(call: ast.Call, constants: dict[str, ast.expr]) -> set[str]:
    """String constants among a call's arguments, at any depth, module constants followed."""
    found: set[str] = set()
    pending: list[ast.AST] = [*call.args, *(k.value for k in call.keywords)]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Name) and node.id in constants and node.id not in seen:
            seen.add(node.id)
            pending.append(constants[node.id])
        elif not isinstance(node, ast.Call):  # a nested call counts on its own
            pending.extend(ast.iter_child_nodes(node))
    return found


def _exercising_pass(name: str, cls: type[Any]) -> list[str]:
    recipe_line = re.compile(rf"""^\s*name\s*=\s*["']{re.escape(name)}["']\s*$""", re.M)
    where = []
    for module, tree in _modules().items():
        constants = _constants(tree)
        for call in _calls(tree):
            strings = _argument_strings(call, constants)
            if (
                cls.__name__ in _callee(call)
                or name in strings
                or any(recipe_line.search(s) for s in strings)
            ):
                where.append(module)
                break
    return where


def _exercising_framework(framework: str, loader: str) -> list[str]:
    where = []
    for module, tree in _modules().items():
        for call in _calls(tree):
            keyword = any(
                k.arg == "framework"
                and isinstance(k.value, ast.Constant)
                and k.value.value == framework
                for k in call.keywords
            )
            if keyword or loader in _callee(call):
                where.append(module)
                break
    return where


@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_pass_has_a_test(name: str) -> None:
    cls = BUILTIN.get(name)
    assert _exercising_pass(name, cls), (
        f"pass {name!r} ({cls.__module__}:{cls.__name__}) has no test: call "
        f"make_pass({name!r}) or {cls.__name__}(...) in a tests/test_*.py and check its result"
    )


def test_every_framework_has_a_loader_listed() -> None:
    assert set(LOADERS) == set(FRAMEWORKS), "map each of FRAMEWORKS to its loader in LOADERS"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_dispatcher_calls_the_listed_loader(
    framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, loader = LOADERS[framework]
    sentinel = object()
    monkeypatch.setattr(importlib.import_module(module), loader, lambda *a, **k: sentinel)
    assert load_source("source", ConvertOptions(), framework=framework) is sentinel


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_framework_has_a_test(framework: str) -> None:
    _, loader = LOADERS[framework]
    assert _exercising_framework(framework, loader), (
        f"framework {framework!r} has no test: call {loader}(...) or convert(..., "
        f"framework={framework!r}) in a tests/test_*.py and check its parity"
    )


def test_the_criteria_ignore_comments_and_docstrings(tmp_path: Path) -> None:
    tree = ast.parse(
        '"""make_pass("fp16"); load_onnx(x)"""\n'
        "# make_pass('fp16'); load_onnx(x); Float16()\n"
        "def test_x():\n"
        '    """Recipe.of(["fp16"])"""\n'
        '    text = "fp16"\n'
    )
    assert not any(
        "fp16" in _argument_strings(c, _constants(tree)) or {"Float16", "load_onnx"} & _callee(c)
        for c in _calls(tree)
    )
    tree = ast.parse('PASSES = [("fp16", {})]\n@parametrize("p", PASSES)\ndef test_x(p): ...\n')
    assert any("fp16" in _argument_strings(c, _constants(tree)) for c in _calls(tree))
