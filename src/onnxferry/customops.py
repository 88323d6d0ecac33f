"""Custom operators: onnxruntime-extensions' prebuilt ones, and the user's Python ones.

    load_custom_ops("my_ops.py", trust=True)    # runs the file: its @onnx_op functions register
    loaded_custom_ops()                          # {"/abs/my_ops.py": ["Swish"]}
    extension_domains(model)                     # {"ai.onnx.contrib"}: a tokenizer model's
    register_extensions(options, model)          # runtime.session_options does it for all
    unknown_operator(model, ort_message)         # None, or the one line naming the operator

Every session ferry makes comes from ``runtime.session_options``, which calls
``register_extensions``: a model that imports a domain onnxruntime-extensions provides
(``ai.onnx.contrib``, ``com.microsoft.extensions``) gets the extensions' library registered,
so its prebuilt operators (tokenizers, string and image operators) run in every verb.

User operators are Python functions decorated with ``onnxruntime_extensions.onnx_op``; they
live in domain ``ai.onnx.contrib`` and run through the same library, in this process.
Loading their file runs its code, so ``load_custom_ops`` refuses unless ``trust`` is given
(``--custom-ops FILE --trust-custom-ops`` on the command line), and imports each file once.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import InputError, UnknownOperatorError, UsageError, missing_module_hint, one_line
from .graphs import iter_nodes

if TYPE_CHECKING:
    import onnxruntime as ort

    from .model import Model

EXTENSION_DOMAINS = frozenset({"ai.onnx.contrib", "com.microsoft.extensions"})
"""The operator domains onnxruntime-extensions' library provides."""

PYTHON_OPS_DOMAIN = "ai.onnx.contrib"
"""Where ``onnx_op`` functions live (onnxruntime-extensions' default domain)."""

_LOADED: dict[Path, list[str]] = {}


def extensions_installed() -> bool:
    """True when onnxruntime-extensions and its operator library are installed."""
    return extensions_library() is not None


def extension_domains(model: Model) -> set[str]:
    """The domains ``model`` imports that onnxruntime-extensions provides."""
    return set(model.opset_imports) & EXTENSION_DOMAINS


def register_extensions(options: ort.SessionOptions, model: Model) -> bool:
    """Register onnxruntime-extensions' library (its prebuilt operators and the loaded
    ``onnx_op`` functions) on ``options`` when ``model`` needs it and it is installed;
    True when registered. Without the package, the session's load fails and
    ``unknown_operator`` says how to provide the operator."""
    if not extension_domains(model):
        return False
    library = extensions_library()
    if library is None:
        return False
    _bind_to_itself(library)
    options.register_custom_ops_library(str(library))
    return True


@cache
def _bind_to_itself(library: Path) -> object:
    """Load ``library`` first, binding its symbols to its own definitions (RTLD_DEEPBIND),
    where the C library has that (glibc). It exports the RE2 it is built with; loaded after
    TensorFlow, which exports another RE2, its regex operators called TensorFlow's and
    matched nothing: Keras' TextVectorization kept every punctuation mark, silently
    (``ferry convert`` of a Keras text model runs both in one process). The handle is kept:
    ONNX Runtime's own load of the path then finds it loaded."""
    import ctypes
    import os

    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None:
        return None
    return ctypes.CDLL(str(library), mode=os.RTLD_NOW | deepbind)


@cache
def extensions_library() -> Path | None:
    """The onnxruntime-extensions operator library (what its ``get_library_path`` names),
    found without importing the package, which imports transformers and torch (seconds)."""
    spec = importlib.util.find_spec("onnxruntime_extensions")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            library = Path(folder) / f"_extensions_pydll{suffix}"
            if library.is_file():
                return library
    return None


def load_custom_ops(path: str | Path, *, trust: bool = False) -> list[str]:
    """Import a Python file of ``onnxruntime_extensions.onnx_op`` operators; the operator
    types it defines. Each file is imported once per process (a second call returns the
    first one's types). Its operators then run in every session of a model that uses them.

    UsageError (exit 2) without ``trust`` (importing the file runs its code), for a file
    that defines no ``onnx_op`` operator, and for one that defines an operator type another
    loaded file defines (sessions could not load either then); InputError when
    onnxruntime-extensions is not installed, the file is missing or its import fails.
    """
    file = Path(path)
    if not trust:
        raise UsageError(
            f"{file}: custom operators are Python code, and loading them runs it",
            hint="pass --trust-custom-ops (trust=True) if the file comes from a trusted source",
        )
    if not file.is_file():
        raise InputError(f"{file}: no such file", hint="give the Python file of @onnx_op operators")
    key = file.resolve()
    if key in _LOADED:
        return list(_LOADED[key])
    if not extensions_installed():
        raise InputError(
            f"{file}: Python custom operators need onnxruntime-extensions, which is not installed",
            hint="pip install onnxruntime-extensions",
        )
    library = extensions_library()
    if library is not None:
        _bind_to_itself(library)  # before the package's import loads it the usual way
    opdef = importlib.import_module("onnxruntime_extensions").Opdef  # untyped: no stubs
    with python_file(file, what="the custom operators file") as module:
        ops = [str(v.op_type) for v in vars(module).values() if isinstance(v, opdef)]
    if not ops:
        raise UsageError(
            f"{file} defines no custom operator",
            hint="decorate each operator's function with onnxruntime_extensions.onnx_op",
        )
    _LOADED[key] = ops
    for other, types in _LOADED.items():
        twice = sorted(set(ops) & set(types)) if other != key else []
        if twice:  # both registered now: every session with the domain would fail to load
            raise UsageError(
                f"{file} defines {', '.join(twice)} again (first defined in {other}); "
                "onnxruntime cannot hold two kernels of one operator",
                hint="give each operator once, in one file (and restart a Python session)",
            )
    return list(ops)


def loaded_custom_ops() -> dict[str, list[str]]:
    """The files ``load_custom_ops`` imported in this process, with their operator types."""
    return {str(path): list(ops) for path, ops in _LOADED.items()}


@contextmanager
def python_file(file: Path, *, what: str = "the Python file") -> Iterator[ModuleType]:
    """``file`` imported as a fresh module, its directory on ``sys.path`` while the block
    runs (so it and what the block calls import their siblings); InputError (one line) when
    it is missing or its import fails. The module stays in ``sys.modules`` under a unique
    name (for pickling and torch).

        with python_file(Path("net.py"), what="the factory file") as module:
            model = module.make()
    """
    if not file.is_file():
        raise InputError(f"{file}: no such file", hint=f"give {what} as a path to a .py file")
    stem = re.sub(r"\W", "_", file.stem)
    name = f"onnxferry_user_{stem}_{secrets.token_hex(4)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise InputError(f"{file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(file.parent.resolve())
    sys.path.insert(0, folder)
    try:
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise InputError(
                f"{file}: importing {what} failed: {one_line(e, 300, line='first', named=True)}",
                hint=missing_module_hint(e, "fix the error in the file"),
            ) from e
        yield module
    finally:
        with suppress(ValueError):
            sys.path.remove(folder)


# --- an operator no runtime knows ---------------------------------------------------------

_UNKNOWN = (
    # a custom domain's operator that no registered library has
    (r"(?P<domain>[\w.]*):(?P<op>\w+)\(-?\d+\) is not a registered function/op", "implements"),
    # an operator of a known domain with no schema at the model's opset
    (r"No Op registered for (?P<op>\w+) with domain_version of \d+", "implements"),
    # an operator with a schema but no kernel for its version or its input types
    (r"Could not find an implementation for (?P<op>\w+)\(\d+\)", "has a kernel of"),
)


OLDEST_OPSET = 7
"""The oldest ai.onnx opset ONNX Runtime supports: PyTorch 0.x's opset-6 exports have no CPU
kernel for Add, Gemm, PRelu, BatchNormalization, ..."""


def unknown_operator(model: Model, message: str) -> UnknownOperatorError | None:
    """The one-line error for ONNX Runtime's ``message`` when it says an operator of
    ``model`` has no implementation, naming the operator, its domain and opset and the three
    ways to provide it; None for any other message."""
    found = [(m, verb) for pattern, verb in _UNKNOWN if (m := re.search(pattern, message))]
    if not found:
        return None
    match, verb = found[0]
    op = match["op"]
    domain = match.groupdict().get("domain") or _domain_of(model, op)
    opset = model.opset_imports.get(domain)
    where = model.path or model.name
    at = f" (opset {opset})" if opset is not None else ""
    uncommon = _uncommon_types(model) if verb == "has a kernel of" else ""
    if uncommon and domain == "ai.onnx":  # a standard operator, in a type it lacks
        return UnknownOperatorError(
            f"onnxruntime cannot load {where}: no runtime here has a kernel of its operator "
            f"{domain}::{op}{at} in {uncommon}",
            hint="export the model in float32 (torch: module.float(); "
            "`ferry optimize` then picks a precision ONNX Runtime runs fast)",
            operator=op,
            domain=domain,
            opset=opset,
            types=uncommon,
        )
    if domain == "ai.onnx" and opset is not None and opset < OLDEST_OPSET:
        return UnknownOperatorError(
            f"onnxruntime cannot load {where}: its opset {opset} is older than ONNX Runtime "
            f"runs (no kernel for {domain}::{op}{at})",
            hint=f"`ferry convert {where} -o NEW.onnx` raises it to a newer opset, verified "
            "against onnx's reference implementation of the original",
            operator=op,
            domain=domain,
            opset=opset,
        )
    types = " for these input types" if verb == "has a kernel of" else ""
    return UnknownOperatorError(
        f"onnxruntime cannot load {where}: no runtime here {verb} its operator "
        f"{domain}::{op}{at}{types}",
        hint=_ways(domain),
        operator=op,
        domain=domain,
        opset=opset,
    )


_UNCOMMON = {10: "float16", 16: "bfloat16", 17: "float8", 18: "float8", 19: "float8"} | {
    20: "float8",
    21: "int4",
    22: "uint4",
    23: "float4",
}
"""Element types ONNX Runtime's CPU provider has few kernels for, by TensorProto number."""


def _uncommon_types(model: Model) -> str:
    """The uncommon element types of the model's inputs and weights ("bfloat16"), joined."""
    graph = model.proto.graph
    found = [t.data_type for t in graph.initializer]
    found += [v.type.tensor_type.elem_type for v in graph.input]
    return ", ".join(sorted({_UNCOMMON[t] for t in found if t in _UNCOMMON}))


def _domain_of(model: Model, op: str) -> str:
    for node in iter_nodes(model.proto):
        if node.op_type == op:
            return node.domain or "ai.onnx"
    return "ai.onnx"


def _ways(domain: str) -> str:
    if not extensions_installed():
        extensions = "onnxruntime-extensions (pip install onnxruntime-extensions)"
    elif domain in EXTENSION_DOMAINS:
        extensions = "onnxruntime-extensions (installed here, without this operator)"
    else:
        extensions = f"onnxruntime-extensions (its domains: {', '.join(sorted(EXTENSION_DOMAINS))})"
    return (
        f"provide it with {extensions}; with a Python onnxruntime_extensions.onnx_op in domain "
        f"{PYTHON_OPS_DOMAIN}, loaded by --custom-ops OPS.py --trust-custom-ops; or with an "
        "onnxruntime custom-op shared library (or rewrite the model without it)"
    )
