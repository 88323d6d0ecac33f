"""An exporter's failure as one line: the unsupported operator and the module it sits in,
a dynamic axis the model fixes, a branch on tensor values, or the exporter's first line.

    except Exception as e:
        raise export_error(DYNAMO, e) from e
    # ConversionError: torch.onnx (dynamo) cannot export operator aten::linalg_eig in
    # module 'block': no ONNX translation for it
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from ...errors import FerryError
from ..base import ConversionError
from .quiet import torch_error

OP_HINT = "try --opset N, the other exporter, or translate it with --custom-export FILE"

_OP_PATTERNS = (
    re.compile(
        r"No ONNX function found for <OpOverload\(op='(?P<op>[\w.]+)', overload='(?P<ov>\w+)'"
    ),
    re.compile(r"Exporting the operator '(?P<op>[\w:.]+)' to ONNX opset version \d+"),
    re.compile(r"unrecognized namespace (?P<op>[\w:.]+)"),
    re.compile(r"Unsupported: ONNX export of operator (?P<op>[\w:.]+)"),
)


def export_error(
    exporter: str, error: BaseException, printed: str = "", wrapper: str = ""
) -> FerryError:
    """One-line ConversionError for an exporter's failure: the unsupported operator and the
    module it sits in, a dynamic axis the model fixes, or the exporter's own first line.
    ``printed`` is what the exporter printed (the TorchScript exporter prints its graph, with
    each node's module scope, when it fails); ``wrapper`` the attribute that holds the model
    in the module it traced."""
    if isinstance(error, FerryError):
        return error
    texts = [str(e) for e in _chain(error)]
    for text in texts:
        for pattern in _OP_PATTERNS:
            match = pattern.search(text)
            if match:
                op = _op_name(match["op"].rstrip("."))
                where = _module_of(op, error) or _scope_of(op, printed, wrapper)
                in_module = f" in module {where!r}" if where else ""
                return ConversionError(
                    f"{exporter} cannot export operator {op}{in_module}: no ONNX translation "
                    "for it",
                    hint=OP_HINT,
                )
    for text in texts:
        match = re.search(r"Constraints violated \((?P<dims>[^)]*)\)", text)
        if match:
            fixed = re.search(r"specialized it to be a constant \((\d+)\)", text)
            to = f" to {fixed[1]}" if fixed else ""
            return ConversionError(
                f"{exporter}: torch.export cannot keep {match['dims']} dynamic: the model fixes "
                f"it{to}",
                hint=f"make that axis static (--dynamic without {match['dims']}) or use the "
                "other exporter",
            )
    if any("data-dependent" in text for text in texts):
        return ConversionError(
            f"{exporter}: the model branches on tensor values, which torch.export cannot "
            f"trace ({torch_error(_innermost(error))})",
            hint="write the branch with torch.cond, or use the other exporter",
        )
    return ConversionError(
        f"{exporter} failed: {torch_error(_innermost(error))}",
        hint="try the other exporter or another --opset",
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _innermost(error: BaseException) -> BaseException:
    return list(_chain(error))[-1] if error.__cause__ is not None else error


def _op_name(op: str) -> str:
    """ "aten.linalg_eig" and "aten::linalg_eig" both read aten::linalg_eig."""
    if "::" in op:
        return op
    namespace, _, rest = op.partition(".")
    return f"{namespace}::{rest}" if rest else op


def _module_of(op: str, error: BaseException) -> str | None:
    """The module path (e.g. "encoder.layer.0") of the graph node calling ``op`` that the
    exporter was translating when it failed (found in the traceback's frames)."""
    wanted = op.replace("::", ".")
    for node in _failed_nodes(error):
        target = str(getattr(node, "target", ""))
        if target == wanted or target.startswith(wanted + "."):
            stack = node.meta.get("nn_module_stack") or {}
            paths = [str(v[0]) for v in stack.values() if v and v[0]]
            return paths[-1] if paths else None
    return None


def _scope_of(op: str, printed: str, wrapper: str) -> str | None:
    """The module path of ``op`` in a TorchScript graph dump, e.g. "block" from
    ``= ferry::double(%13), scope: Wrapper::/Net::model/Doubler::block``."""
    wanted = _op_name(op)
    for line in printed.splitlines():
        match = re.search(r"= (\S+)\(.*scope: (\S+)", line)
        if match and match[1] == wanted:
            names = [part.rpartition("::")[2] for part in match[2].split("/")]
            path = [n for n in names if n]
            if wrapper and path and path[0] == wrapper:
                path = path[1:]
            return ".".join(path) or None
    return None


def _failed_nodes(error: BaseException) -> Iterator[Any]:
    import torch

    for e in _chain(error):
        tb = e.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, torch.fx.Node) and value.op == "call_function":
                    yield value
            tb = tb.tb_next
