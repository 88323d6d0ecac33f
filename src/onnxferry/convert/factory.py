"""Model factories: ``FILE.py:FUNCTION``, a function that builds the model in code (any
framework), for models whose file holds weights only (a torch ``state_dict``, Keras's
``save_weights``) or that need their library's code to build.

    built = run_factory("train.py:make")   # make() -> model, or (model, example inputs)
    built.model, built.example, built.description   # Net(...), None, "Net from train.py:make"
    is_factory("train.py:make"), is_factory("net.pt")  # True, False

The function returns the model: a torch module or ExportedProgram, a Keras model, a fitted
scikit-learn estimator (or booster); or a pair, the model and example inputs (torch: a tuple
of tensors, positional, or a dict by keyword, an argument that takes a tuple of tensors given
as one; any other framework: arrays in the model's input order, or ``{input name: array}``;
one array shapes a subclassed Keras model's input).
Importing the file runs its code; what the factory warns goes into the report's notes.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..customops import python_file
from ..errors import InputError, missing_module_hint, one_line
from .base import ConversionError
from .tf_common import quiet_native

_FACTORY = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_]\w*)$")


@dataclass
class Built:
    """What a factory returned: the model, its example inputs (or None), and a description
    naming both the model's type and the factory."""

    model: Any
    example: Any
    description: str
    notes: list[str]
    """What the factory's code warned while it ran (a library's deprecations), for the
    report instead of the terminal."""


def is_factory(source: Any) -> bool:
    """Whether ``source`` names a factory, ``FILE.py:FUNCTION``."""
    return isinstance(source, (str, Path)) and _FACTORY.match(str(source)) is not None


def run_factory(spec: str | Path) -> Built:
    """Import ``FILE.py`` and call ``FUNCTION()``. InputError (one line) for a missing file,
    a failed import or no such function; ConversionError for a factory that raises."""
    match = _FACTORY.match(str(spec))
    if match is None:
        raise InputError(f"{spec} is not a factory", hint="give it as FILE.py:FUNCTION")
    file, func = Path(match["file"]), match["func"]
    if not file.is_file():
        raise InputError(f"{file}: no such file", hint="give the factory as FILE.py:FUNCTION")
    # a factory that imports TensorFlow would print its start-up lines (absl, oneDNN, CUDA
    # stubs) on stderr: they go to the debug log, as when ferry imports it (import_tf)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with quiet_native("the factory"), python_file(file, what="the factory file") as code:
        factory = getattr(code, func, None)
        if not callable(factory):
            found = [n for n, v in vars(code).items() if inspect.isfunction(v)]
            raise InputError(
                f"{file} has no function {func!r}",
                hint=f"functions in it: {', '.join(found) or 'none'}",
            )
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = factory()
        except (Exception, SystemExit) as e:
            raise ConversionError(
                f"the factory {spec} raised {_error(e)}",
                hint=missing_module_hint(
                    e, "fix the factory so it returns the model, or (model, example inputs)"
                ),
            ) from e
    example = None
    if isinstance(result, tuple) and len(result) == 2:
        result, example = result
    warned = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
    notes = [f"the factory warned: {one_line(text, 300)}" for text in list(warned)[:_WARNINGS]]
    if len(warned) > _WARNINGS:
        notes.append(f"the factory warned {len(warned) - _WARNINGS} more times")
    return Built(result, example, f"{type(result).__name__} from {spec}", notes)


_WARNINGS = 3
"""Distinct warnings of a factory kept as notes."""


def _error(error: BaseException) -> str:
    """One line for what the factory raised (torch's errors shortened as torch's loader
    does)."""
    if type(error).__module__.startswith("torch"):
        from .torch.quiet import torch_error

        return torch_error(error)
    return one_line(error, line="first", named=True)
