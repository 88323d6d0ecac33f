"""Custom layers: the user's translations to ONNX, from a ``--custom-export`` Python file.

    rules = load_custom_export(Path("export_rules.py"))
    rules.translation_table     # {torch.ops.mylib.swish.default: swish_onnx}: dynamo's
    rules.symbolics             # {"mylib::swish": swish_symbolic}: TorchScript's
    with rules.registered():    # TorchScript's symbolics registered, then removed
        ...

The file defines either or both:

- ``custom_translation_table``: a dict from a torch operator (``torch.ops.NS.OP.default``)
  to an ONNX Script function, handed to ``torch.onnx.export(dynamo=True,
  custom_translation_table=...)``. The function may decompose into standard operators
  (``onnxscript.opset18.Mul``) or call a custom-domain one (an ``onnxscript.values.Op`` with
  an ``onnx.defs.OpSchema``, e.g. domain ``ai.onnx.contrib``).
- ``symbolics``: a dict from ``"NS::OP"`` to a symbolic function ``(g, *inputs) -> value``,
  registered with ``torch.onnx.register_custom_op_symbolic`` for the TorchScript exporter's
  export only; optionally ``custom_opsets`` ({domain: version}) for the domains it writes.

The file is imported after the model's own file, so the model's custom torch operators exist
when it names them. An exported custom-domain operator must run in ONNX Runtime for parity
(onnxruntime-extensions' operators, or ``--custom-ops`` with an ``onnx_op`` implementation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...customops import python_file
from ...errors import UsageError


@dataclass(frozen=True)
class CustomExport:
    """The translations one ``--custom-export`` file gives each exporter."""

    path: Path
    translation_table: dict[Any, Callable[..., Any]] = field(default_factory=dict)
    symbolics: dict[str, Callable[..., Any]] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def registered(self) -> Iterator[None]:
        """The symbolics registered for the TorchScript exporter (from opset 1, so at every
        opset), unregistered afterwards so they do not outlive this export."""
        from torch.onnx import (  # type: ignore[attr-defined]  # deprecated, not in __all__
            register_custom_op_symbolic,
            unregister_custom_op_symbolic,
        )

        done: list[str] = []
        try:
            for name, function in self.symbolics.items():
                try:
                    register_custom_op_symbolic(name, function, 1)
                except Exception as e:
                    raise UsageError(
                        f"{self.path}: torch refuses the symbolic for {name!r}: {e}",
                        hint='name the operator "NAMESPACE::OP" (its torch.library name)',
                    ) from e
                done.append(name)
            yield
        finally:
            for name in done:
                unregister_custom_op_symbolic(name, 1)


def load_custom_export(path: Path) -> CustomExport:
    """Import ``path`` and read its ``custom_translation_table``, ``symbolics`` and
    ``custom_opsets``; InputError when the import fails, UsageError when it defines neither
    translation or one of the wrong shape (one line each)."""
    with python_file(path, what="the --custom-export file") as module:
        table = _mapping(path, module, "custom_translation_table")
        symbolics = _mapping(path, module, "symbolics")
        opsets = _mapping(path, module, "custom_opsets")
    if not table and not symbolics:
        raise UsageError(
            f"{path} defines neither custom_translation_table nor symbolics",
            hint="define custom_translation_table = {torch.ops.NS.OP.default: onnxscript_fn} "
            '(dynamo) and/or symbolics = {"NS::OP": symbolic_fn} (TorchScript)',
        )
    for key, value in [*table.items(), *symbolics.items()]:
        if not callable(value):
            raise UsageError(
                f"{path}: the translation for {key!r} is a {type(value).__name__}, not a function",
                hint="map each operator to the function that writes its ONNX",
            )
    for name in symbolics:
        if not isinstance(name, str) or "::" not in name:
            raise UsageError(
                f"{path}: symbolics key {name!r} is not an operator name",
                hint='name each operator "NAMESPACE::OP", e.g. "mylib::swish"',
            )
    return CustomExport(
        path,
        dict(table),
        {str(k): v for k, v in symbolics.items()},
        {str(k): int(v) for k, v in opsets.items()},
    )


def _mapping(path: Path, module: Any, name: str) -> Mapping[Any, Any]:
    value = getattr(module, name, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(
            f"{path}: {name} is a {type(value).__name__}, not a dict",
            hint=f"define {name} as a dict",
        )
    return value
