"""PyTorch models as conversion sources: modules, factory files, TorchScript and torch.export.

    source = load_torch(net, ConvertOptions(), example_inputs=(torch.randn(2, 3, 32, 32),))
    source = load_torch("models/net.py:make", options)  # make() -> module or (module, inputs)
    source = load_torch("net.ts", ConvertOptions(input_shapes={"x": (1, 3, 32, 32)}))
    source = load_torch("net.pt2", ConvertOptions())     # torch.export.save'd, with its inputs
    source.reference.run({"x": x})                       # the module itself, {name: array}
    [c.exporter for c in source.candidates]  # ["torch.onnx (dynamo)", "torch.onnx (torchscript)"]

Inputs are named after ``forward``'s parameters: a tuple of example tensors fills them in
order, a dict (``input_ids``, ``attention_mask``, ...) by keyword. Outputs are the forward's
result flattened: dict and transformers ``ModelOutput`` keys keep their names
(``last_hidden_state``), everything else is ``output_0``, ``output_1``, ... in order. Dynamic
axes follow ``ConvertOptions.axes_for``; each name becomes one ``torch.export.Dim`` shared by
every input that uses it, and the reference signature carries the same names.

"torch.onnx (dynamo)" is ``torch.onnx.export(dynamo=True, dynamic_shapes=...)``, which runs
``torch.export.export(strict=False)`` with its own while-loop decompositions for LSTM/GRU and
size-oblivious 0/1 dims, then translates; a TorchScript module goes through torch's TS2EP
converter first. "torch.onnx (torchscript)" traces the module (opset 20 at most) through a
wrapper that takes the inputs by position and returns a flat tuple. Either names an unsupported
operator with the module it sits in. With torch 2.13: ``torch.cond`` exports only with dynamo
(an ONNX ``If``); TorchScript control flow only with the TorchScript exporter (``If``/``Loop``;
TS2EP stops at ``prim::Loop``); an LSTM keeps a dynamic sequence with both (dynamo declares the
output's sequence axis static, which is relaxed here after the reference showed it varies).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import inspect
import io
import logging
import math
import os
import re
import secrets
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from ..errors import FerryError, InputError
from ..model import Model
from ..parity import Divergence, Tolerance, judge_output
from ..runtime import OrtRunner, runtime_limits
from ..signature import Dim, Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConversionError, ConvertOptions, Source

if TYPE_CHECKING:
    import onnx

__all__ = [
    "DYNAMO",
    "TORCHSCRIPT",
    "TorchRunner",
    "find_module_divergence",
    "flatten_outputs",
    "load_torch",
]

log = logging.getLogger("onnxferry")

DYNAMO = "torch.onnx (dynamo)"
TORCHSCRIPT = "torch.onnx (torchscript)"

DEFAULT_OPSET = 20
"""The ai.onnx opset written when the user names none (capped at what ONNX Runtime loads)."""

TORCHSCRIPT_MAX_OPSET = 20
"""The highest opset the TorchScript exporter writes."""

OP_HINT = "try --opset N, the other exporter, or register a custom op"

_EXTERNAL_DATA_BYTES = 1536 * 1024**2
"""Parameters past this size go to an external data file (protobuf stops at 2 GiB)."""

_FACTORY_RE = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_]\w*)$")
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


# --- the loader ----------------------------------------------------------------------------


def load_torch(source: Any, options: ConvertOptions, *, example_inputs: Any = None) -> Source:
    """A Source for a torch model: an ``nn.Module``, ``"file.py:function"`` (a factory that
    returns a module, or ``(module, example_inputs)``), a TorchScript file, or an
    ``ExportedProgram`` / ``.pt2`` file.

    Example inputs come from ``example_inputs`` (a tuple of tensors, positional, or a dict,
    by keyword), then ``options.sample_inputs``, then ``options.input_shapes`` (float32;
    int64 for ``*_ids`` and ``*mask*`` inputs). Raises ConversionError or InputError (exit 2,
    one line) for a file torch cannot load, a factory that fails, or a forward argument
    that no input gives.
    """
    torch = _import_torch()
    loaded = _resolve(source, options)
    if example_inputs is None:
        example_inputs = loaded.example
    module = loaded.module
    params = _forward_params(module)
    inputs = _example_inputs(module, params, example_inputs, options)
    outputs, output_names = _probe_outputs(module, inputs)
    input_specs, dims = _input_specs(inputs, loaded.program, options)
    output_specs = _output_specs(module, inputs, dims, outputs, output_names)
    signature = Signature(tuple(input_specs), tuple(output_specs))
    label = _label(module, loaded)
    reference = TorchRunner(module, inputs.names, inputs.keyword, output_names, signature, label)
    plan = _ExportPlan(loaded, inputs, signature, dims, options)
    candidates = [Candidate(DYNAMO, plan.export_dynamo)]
    if loaded.program is None:
        candidates.append(Candidate(TORCHSCRIPT, plan.export_torchscript))
    find_divergence = None
    if loaded.kind == "module":
        find_divergence = functools.partial(find_module_divergence, reference)
    return Source(
        framework="torch",
        description=loaded.description,
        reference=reference,
        candidates=candidates,
        value_ranges=_value_ranges(module, inputs.names),
        find_divergence=find_divergence,
        details={
            "torch_version": str(torch.__version__),
            "module": label,
            "source_kind": loaded.kind,
            "inputs_by": "keyword" if inputs.keyword else "position",
        },
    )


@dataclass
class _Loaded:
    module: Any  # nn.Module, ScriptModule, or an ExportedProgram's module()
    kind: str  # "module", "torchscript", "exported program"
    description: str
    program: Any = None  # the ExportedProgram, for that kind
    example: Any = None  # example inputs the factory or program brought


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InputError(
            "converting a PyTorch model needs torch, which is not installed",
            hint="pip install 'onnxferry[torch]'",
        ) from None
    return torch


def _resolve(source: Any, options: ConvertOptions) -> _Loaded:
    import torch

    if isinstance(source, torch.export.ExportedProgram):
        return _from_program(source, "a torch.export ExportedProgram")
    if isinstance(source, torch.nn.Module):
        return _from_module(source, None, f"a {type(source).__name__} module")
    if isinstance(source, (str, Path)):
        text = str(source)
        match = _FACTORY_RE.match(text)
        if match:
            return _from_factory(Path(match["file"]), match["func"], text)
        return _from_file(Path(text), options)
    raise InputError(
        f"a {type(source).__name__} is not a PyTorch model",
        hint="give a torch.nn.Module, an ExportedProgram, a FILE.py:FUNCTION factory, "
        "a TorchScript file or a .pt2 file",
    )


def _from_module(module: Any, example: Any, description: str) -> _Loaded:
    import torch

    module.eval()
    kind = "torchscript" if isinstance(module, torch.jit.ScriptModule) else "module"
    return _Loaded(module, kind, description, None, example)


def _from_program(program: Any, description: str) -> _Loaded:
    example = getattr(program, "example_inputs", None)
    if isinstance(example, tuple) and len(example) == 2 and not example[1]:
        example = tuple(example[0])
    elif isinstance(example, tuple) and len(example) == 2 and not example[0]:
        example = dict(example[1])
    else:
        example = None
    module = program.module()
    return _Loaded(module, "exported program", description, program, example)


def _from_factory(file: Path, func: str, spec: str) -> _Loaded:
    import torch

    if not file.is_file():
        raise InputError(f"{file}: no such file", hint="give the factory as FILE.py:FUNCTION")
    stem = re.sub(r"\W", "_", file.stem)
    name = f"onnxferry_factory_{stem}_{secrets.token_hex(4)}"
    module_spec = importlib.util.spec_from_file_location(name, file)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"{file}: cannot be imported as a Python module")
    code = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = code
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        try:
            module_spec.loader.exec_module(code)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise ConversionError(
                f"{file}: importing the factory file failed: {_one_line(e)}",
                hint="fix the error in the file",
            ) from e
        factory = getattr(code, func, None)
        if not callable(factory):
            found = [n for n, v in vars(code).items() if inspect.isfunction(v)]
            raise InputError(
                f"{file} has no function {func!r}",
                hint=f"functions in it: {', '.join(found) or 'none'}",
            )
        try:
            result = factory()
        except (Exception, SystemExit) as e:
            raise ConversionError(
                f"the factory {spec} raised {_one_line(e)}",
                hint="fix the factory so it returns a torch.nn.Module",
            ) from e
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(file.parent.resolve()))
    example = None
    if isinstance(result, tuple) and len(result) == 2:
        result, example = result
    if isinstance(result, torch.export.ExportedProgram):
        loaded = _from_program(result, f"the ExportedProgram from {spec}")
        loaded.example = example if example is not None else loaded.example
        return loaded
    if not isinstance(result, torch.nn.Module):
        raise ConversionError(
            f"the factory {spec} returned a {type(result).__name__}, not a torch.nn.Module",
            hint="return the module, or (module, example_inputs)",
        )
    return _from_module(result, example, f"{type(result).__name__} from {spec}")


def _from_file(path: Path, options: ConvertOptions) -> _Loaded:
    import torch

    if not path.exists():
        raise InputError(f"{path}: no such file", hint="check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a file", hint="give a TorchScript or .pt2 file")
    if path.suffix == ".py":
        raise InputError(
            f"{path} is Python source; name the function that builds the model",
            hint=f"give {path}:FUNCTION (a function that returns the module)",
        )
    hint = (
        "save the model with torch.jit.save or torch.export.save, or give a factory "
        "FILE.py:FUNCTION that builds it"
    )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise InputError(
            f"{path}: not a TorchScript, torch.export or torch.save file (not a zip archive)",
            hint=hint,
        ) from None
    tails = {n.split("/", 1)[-1] for n in names}
    try:
        if "archive_format" in tails or any(n.startswith("models/") for n in tails):
            with _quiet():
                program = torch.export.load(str(path))
            return _from_program(program, f"the ExportedProgram in {path}")
        if "constants.pkl" in tails or any(n.startswith("code/") for n in tails):
            with _quiet():  # torch 2.13 deprecates TorchScript, and says so on every load
                load = torch.jit.load
                module = load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
            return _from_module(module, None, f"the TorchScript module in {path}")
    except Exception as e:
        raise InputError(f"{path}: torch cannot load it: {_one_line(e)}", hint=hint) from e
    if "data.pkl" in tails:
        return _from_pickle(path, options, hint)
    raise InputError(f"{path}: not a TorchScript, torch.export or torch.save file", hint=hint)


def _from_pickle(path: Path, options: ConvertOptions, hint: str) -> _Loaded:
    import torch

    if not options.trust_pickle:
        raise InputError(
            f"{path} is a pickled torch.save file, and unpickling it runs code",
            hint=f"pass --trust-pickle if you trust its origin, or {hint.split(', or ')[-1]}",
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{path}: torch cannot load it: {_one_line(e)}", hint=hint) from e
    if isinstance(obj, torch.nn.Module):
        return _from_module(obj, None, f"the {type(obj).__name__} pickled in {path}")
    if isinstance(obj, Mapping):
        raise InputError(
            f"{path} holds a state_dict (weights only), not a model",
            hint="give a factory FILE.py:FUNCTION that builds the model and loads these weights",
        )
    raise InputError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module", hint=hint)


def _label(module: Any, loaded: _Loaded) -> str:
    if loaded.program is not None:
        return "ExportedProgram"
    name = getattr(module, "original_name", None) or type(module).__name__
    return str(name)


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    positional: bool
    required: bool


@dataclass
class _Params:
    items: list[_Param]
    var_positional: bool = False
    var_keyword: bool = False

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.items]

    @property
    def positional(self) -> list[str]:
        return [p.name for p in self.items if p.positional]


def _forward_params(module: Any) -> _Params:
    """forward's parameters (self excluded), from its Python or TorchScript signature."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        schema = getattr(module.forward, "schema")  # noqa: B009 (a ScriptMethod)
        items = [
            _Param(a.name, True, not a.has_default_value())
            for a in schema.arguments[1:]
            if a.name != "self"
        ]
        return _Params(items)
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return _Params([], var_positional=True, var_keyword=True)
    params = _Params([])
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            params.var_positional = True
        elif p.kind is p.VAR_KEYWORD:
            params.var_keyword = True
        else:
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            params.items.append(_Param(p.name, positional, p.default is p.empty))
    return params


@dataclass
class _Inputs:
    """The example inputs: names in forward's order, tensors, and how forward takes them."""

    names: list[str]
    tensors: list[Any]
    keyword: bool

    def call(self, module: Any, tensors: Sequence[Any] | None = None) -> Any:
        values = list(self.tensors if tensors is None else tensors)
        if self.keyword:
            return module(**dict(zip(self.names, values, strict=True)))
        return module(*values)

    def args_kwargs(self, tensors: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.keyword:
            return (), dict(zip(self.names, tensors, strict=True))
        return tuple(tensors), {}


def _example_inputs(module: Any, params: _Params, example: Any, options: ConvertOptions) -> _Inputs:
    import torch

    if isinstance(example, torch.Tensor):
        example = (example,)
    if isinstance(example, list):
        example = tuple(example)
    if isinstance(example, tuple):
        positional = params.positional
        if len(example) > len(positional) and not params.var_positional:
            raise ConversionError(
                f"{len(example)} example inputs given, but forward() takes "
                f"{len(positional)} positional argument(s): {', '.join(positional) or 'none'}",
                hint="give one example tensor per forward argument",
            )
        names = [*positional, *(f"input_{i}" for i in range(len(positional), len(example)))]
        names = names[: len(example)]
        _check_tensors(names, example)
        _check_required(params, names)
        return _Inputs(names, list(example), keyword=False)
    if isinstance(example, Mapping):
        given = {str(k): v for k, v in example.items() if v is not None}
        _check_known(params, list(given))
        _check_tensors(list(given), list(given.values()))
        _check_required(params, list(given))
        names = _in_forward_order(params, list(given))
        scripted = isinstance(module, torch.jit.ScriptModule)
        keyword = not (scripted and _leading(params, names))  # TorchScript: by position
        return _Inputs(names, [given[n] for n in names], keyword)
    if example is not None:
        raise ConversionError(
            f"example inputs must be a tensor, a tuple of tensors or a dict of tensors, "
            f"not a {type(example).__name__}",
            hint="return (module, (tensor, ...)) or (module, {name: tensor}) from the factory",
        )
    if options.sample_inputs:
        sample = options.sample_inputs[0]
        _check_known(params, list(sample))
        _check_required(params, list(sample))
        names = _in_forward_order(params, list(sample))
        tensors = [_from_numpy(n, sample[n]) for n in names]
        return _Inputs(names, tensors, keyword=not _leading(params, names))
    if options.input_shapes:
        _check_known(params, list(options.input_shapes))
        _check_required(params, list(options.input_shapes))
        names = _in_forward_order(params, list(options.input_shapes))
        ranges = _value_ranges(module, names)
        tensors = [_generated(n, options.input_shapes[n], ranges.get(n)) for n in names]
        return _Inputs(names, tensors, keyword=not _leading(params, names))
    _check_required(params, [])
    return _Inputs([], [], keyword=False)


def _check_known(params: _Params, names: Sequence[str]) -> None:
    if params.var_keyword:
        return
    unknown = [n for n in names if n not in params.names]
    if unknown:
        raise ConversionError(
            f"forward() has no parameter {unknown[0]!r}",
            hint=f"its parameters are: {', '.join(params.names) or 'none'}",
        )


def _check_required(params: _Params, names: Sequence[str]) -> None:
    missing = [p.name for p in params.items if p.required and p.name not in names]
    if not missing:
        return
    shapes = " ".join(f"--input-shape {n}=1x3x224x224" for n in missing)
    raise ConversionError(
        f"forward() needs argument{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(n) for n in missing)} that no example input gives",
        hint=f"give {shapes} or --inputs samples.npz with {', '.join(missing)}",
    )


def _check_tensors(names: Sequence[str], values: Sequence[Any]) -> None:
    import torch

    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"example input {name!r} is a {type(value).__name__}, not a tensor",
                hint="give tensors only; fix other arguments inside the module",
            )


def _leading(params: _Params, names: Sequence[str]) -> bool:
    """True when ``names`` are forward's first positional parameters, in order."""
    return list(names) == params.positional[: len(names)]


def _from_numpy(name: str, array: np.ndarray) -> Any:
    import torch

    try:
        return torch.from_numpy(np.array(array, copy=True))
    except TypeError as e:
        raise ConversionError(
            f"sample input {name!r} has dtype {array.dtype}, which torch cannot hold",
            hint="give numeric or bool arrays",
        ) from e


def _in_forward_order(params: _Params, names: Sequence[str]) -> list[str]:
    order = {n: i for i, n in enumerate(params.names)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), list(names).index(n)))


def _generated(name: str, shape: Sequence[int], value_range: tuple[int, int] | None) -> Any:
    """A random example for one input: float32 normal, or int64 for ids and masks."""
    import torch

    generator = torch.Generator().manual_seed(0)
    lowered = name.lower()
    if "mask" in lowered:
        return torch.ones(tuple(shape), dtype=torch.int64)
    if lowered.endswith("_ids") or lowered == "ids":
        low, high = value_range or (0, 2)
        return torch.randint(low, max(high, low + 1), tuple(shape), generator=generator)
    return torch.randn(tuple(shape), generator=generator)


def _value_ranges(module: Any, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Bounds for integer inputs of transformers models (read from ``module.config``)."""
    config = getattr(module, "config", None)
    ranges: dict[str, tuple[int, int]] = {}
    bounds = {
        "input_ids": getattr(config, "vocab_size", None),
        "token_type_ids": getattr(config, "type_vocab_size", None),
        "position_ids": getattr(config, "max_position_embeddings", None),
    }
    for name in names:
        key = "input_ids" if name.endswith("input_ids") else name
        bound = bounds.get(key)
        if isinstance(bound, int) and bound > 0:
            ranges[name] = (0, bound)
    return ranges


# --- signature -----------------------------------------------------------------------------


def _input_specs(
    inputs: _Inputs, program: Any, options: ConvertOptions
) -> tuple[list[TensorSpec], dict[str, dict[int, str]]]:
    """Input specs and, per input, its dynamic axes {axis: name}."""
    specs: list[TensorSpec] = []
    dims: dict[str, dict[int, str]] = {}
    symbolic = _program_dims(program, inputs.names) if program is not None else None
    for name, tensor in zip(inputs.names, inputs.tensors, strict=True):
        rank = tensor.dim()
        axes = {a: n for a, n in options.axes_for(name, rank).items() if -rank <= a < rank}
        axes = {a % rank: n for a, n in axes.items()}
        if symbolic is not None:  # a program's dims are fixed: dynamic where it is
            own = symbolic.get(name, {})
            axes = {a: axes.get(a, own[a]) for a in own}
        dims[name] = axes
        shape: tuple[Dim, ...] = tuple(axes.get(i, int(d)) for i, d in enumerate(tensor.shape))
        specs.append(TensorSpec(name, dtype_from_numpy(_numpy_dtype(tensor)), shape))
    return specs, dims


def _program_dims(program: Any, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """{input: {axis: symbol}} for the symbolic dims of an ExportedProgram's user inputs."""
    user = list(program.graph_signature.user_inputs)
    found: dict[str, dict[int, str]] = {}
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for name, node_name in zip(names, user, strict=False):
        node = placeholders.get(node_name)
        value = node.meta.get("val") if node is not None else None
        shape = getattr(value, "shape", ())
        found[name] = {i: str(d) for i, d in enumerate(shape) if not isinstance(d, int)}
    return found


def _numpy_dtype(tensor: Any) -> np.dtype[Any]:
    import torch

    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        bf16: np.dtype[Any] = np.dtype(ml_dtypes.bfloat16)
        return bf16
    dtype: np.dtype[Any] = torch.empty((), dtype=tensor.dtype).numpy().dtype
    return dtype


def _probe_outputs(module: Any, inputs: _Inputs) -> tuple[list[Any], list[str]]:
    """Run the module once on the examples: its flat tensor outputs and their names."""
    import torch

    try:
        with torch.inference_mode():
            result = inputs.call(module)
    except FerryError:
        raise
    except Exception as e:
        raise ConversionError(
            f"the model fails on the example inputs: {_one_line(e)}",
            hint="check the example inputs (--inputs, --input-shape)",
        ) from e
    leaves = flatten_outputs(result)
    return [v for _, v in leaves], [n for n, _ in leaves]


def flatten_outputs(value: Any) -> list[tuple[str, Any]]:
    """(name, tensor) for each tensor in a forward's result, in the order torch.export and the
    TorchScript exporter flatten it: dict and ModelOutput keys keep their names, positional
    entries are "output_0", "output_1", ... (the index among all tensors)."""
    leaves: list[tuple[tuple[str | int, ...], Any]] = []
    _collect(value, (), leaves)
    names: list[str] = []
    for index, (path, _) in enumerate(leaves):
        if all(isinstance(p, int) for p in path):
            name = f"output_{index}"
        else:  # {"hidden": (a, b)} -> hidden_0, hidden_1; (a, {"x": b}) -> output_1_x
            name = "_".join(str(p) for p in path)
            name = f"output_{name}" if isinstance(path[0], int) else name
        while name in names:
            name = f"{name}_{index}"
        names.append(name)
    return [(n, v) for n, (_, v) in zip(names, leaves, strict=True)]


def _collect(value: Any, path: tuple[str | int, ...], out: list[tuple[Any, Any]]) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        out.append((path, value))
    elif value is None:
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, (*path, str(key)), out)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        for key, item in zip(value._fields, value, strict=True):
            _collect(item, (*path, str(key)), out)
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _collect(item, (*path, i), out)
    else:
        where = "".join(f"[{p!r}]" for p in path) or "itself"
        raise ConversionError(
            f"the model returns a {type(value).__name__} at output {where}; only tensors "
            "(in tuples, lists and dicts) convert to ONNX",
            hint="return tensors from forward (wrap the model in a module that does)",
        )


def _output_specs(
    module: Any,
    inputs: _Inputs,
    dims: Mapping[str, Mapping[int, str]],
    outputs: Sequence[Any],
    names: Sequence[str],
) -> list[TensorSpec]:
    """Output specs whose dynamic dims are found by running once more with every dynamic
    input axis resized: an output dim that follows an axis's size takes its name."""
    import torch

    sizes: dict[str, int] = {}
    for name, tensor in zip(inputs.names, inputs.tensors, strict=True):
        for axis, dim in dims[name].items():
            sizes.setdefault(dim, int(tensor.shape[axis]))
    grown = {dim: size + 1 + i for i, (dim, size) in enumerate(sizes.items())}
    probe: list[Any] | None = None
    if sizes:
        resized = [
            _resize(t, {a: grown[d] for a, d in dims[n].items()})
            for n, t in zip(inputs.names, inputs.tensors, strict=True)
        ]
        try:
            with torch.inference_mode():
                probe = [v for _, v in flatten_outputs(inputs.call(module, resized))]
        except Exception as e:  # a model that only runs at some sizes: guess from the first
            log.debug("torch: resized probe run failed (%s); guessing output dims", e)
        if probe is not None and len(probe) != len(outputs):
            probe = None
    specs: list[TensorSpec] = []
    for i, (name, tensor) in enumerate(zip(names, outputs, strict=True)):
        shape: list[Dim] = []
        for axis, size in enumerate(tensor.shape):
            other = probe[i].shape[axis] if probe is not None and probe[i].dim() > axis else None
            shape.append(_output_dim(name, axis, int(size), other, sizes, grown))
        specs.append(TensorSpec(name, dtype_from_numpy(_numpy_dtype(tensor)), tuple(shape)))
    return specs


def _output_dim(
    name: str,
    axis: int,
    size: int,
    other: int | None,
    sizes: Mapping[str, int],
    grown: Mapping[str, int],
) -> Dim:
    for dim, first in sizes.items():
        follows = other == grown[dim] if other is not None else axis == 0 and first > 1
        if size == first and follows:
            return dim
    if other is not None and other != size:
        return f"{name}_dim{axis}"
    return size


def _resize(tensor: Any, axes: Mapping[int, int]) -> Any:
    """``tensor`` with each axis in ``axes`` made that long by repeating its contents."""
    import torch

    for axis, size in axes.items():
        have = int(tensor.shape[axis])
        if have == size:
            continue
        if have == 0:
            shape = list(tensor.shape)
            shape[axis] = size
            tensor = torch.zeros(shape, dtype=tensor.dtype)
            continue
        copies = math.ceil(size / have)
        tensor = torch.cat([tensor] * copies, dim=axis).narrow(axis, 0, size)
    return tensor


# --- the reference runner ------------------------------------------------------------------


class TorchRunner:
    """Runs the torch module on numpy feeds (under ``torch.inference_mode``); a Runner.

    runner.run({"x": x})   # {"output_0": array}, named as the exported model's outputs
    """

    def __init__(
        self,
        module: Any,
        input_names: Sequence[str],
        keyword: bool,
        output_names: Sequence[str],
        signature: Signature,
        label: str,
    ) -> None:
        self.module = module
        self.input_names = list(input_names)
        self.keyword = keyword
        self.output_names = list(output_names)
        self._signature = signature
        self.name = f"torch:{label}"

    @property
    def signature(self) -> Signature:
        return self._signature

    def call(self, feeds: Mapping[str, np.ndarray]) -> Any:
        """The module's raw result for numpy feeds (no inference_mode, no conversion)."""

        tensors = [_from_numpy(n, feeds[n]) for n in self.input_names]
        if self.keyword:
            return self.module(**dict(zip(self.input_names, tensors, strict=True)))
        return self.module(*tensors)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._signature.validate(feeds)
        with torch.inference_mode():
            leaves = flatten_outputs(self.call(feeds))
        if len(leaves) != len(self.output_names):
            raise FerryError(
                f"{self.name} returned {len(leaves)} tensors for these feeds, but "
                f"{len(self.output_names)} ({', '.join(self.output_names)}) on the examples",
                hint="make forward return the same structure for every input shape",
            )
        return {
            name: _to_numpy(value)
            for name, (_, value) in zip(self.output_names, leaves, strict=True)
        }


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        array: np.ndarray = tensor.float().numpy().astype(ml_dtypes.bfloat16)
        return array
    return np.asarray(tensor.numpy())


# --- exporters -----------------------------------------------------------------------------


@dataclass
class _ExportPlan:
    """What both exporters need: the module or program, example tensors, names and axes."""

    loaded: _Loaded
    inputs: _Inputs
    signature: Signature
    dims: dict[str, dict[int, str]]
    options: ConvertOptions

    def _examples(self) -> list[Any]:
        """Example tensors with every dynamic axis at least 2 long (torch.export fixes axes
        of size 0 and 1)."""
        return [
            _resize(t, {a: 2 for a in self.dims[n] if t.shape[a] < 2})
            for n, t in zip(self.inputs.names, self.inputs.tensors, strict=True)
        ]

    def _dynamic_shapes(self) -> dict[str, dict[int, Any]] | tuple[dict[int, Any], ...] | None:
        """torch.export's dynamic shapes: one ``Dim`` per axis name, shared by every input
        that names it (so they must agree in size); by name for keyword inputs, else in order.
        """
        import torch

        if not any(self.dims.values()):
            return None
        made: dict[str, Any] = {}
        shapes: dict[str, dict[int, Any]] = {}
        for name in self.inputs.names:
            axes = self.dims[name]
            for dim in axes.values():
                if dim not in made:
                    made[dim] = torch.export.Dim(_identifier(dim, len(made)))
            shapes[name] = {axis: made[dim] for axis, dim in axes.items()}
        return shapes if self.inputs.keyword else tuple(shapes.values())

    def _opset(self, exporter_max: int) -> int:
        if self.options.opset is not None:
            if self.options.opset > exporter_max:
                raise ConversionError(
                    f"the exporter writes opset {exporter_max} at most, not {self.options.opset}",
                    hint=f"pass --opset {exporter_max} or lower, or use the other exporter",
                )
            return self.options.opset
        return min(DEFAULT_OPSET, exporter_max, runtime_limits()[1])

    def export_dynamo(self, path: Path) -> None:
        import torch

        opset = self._opset(_dynamo_max_opset())
        target = self.loaded.program
        args: tuple[Any, ...] = ()
        kwargs: dict[str, Any] | None = None
        # A program's dims are its own; its symbols (s0, ...) are renamed after export.
        dynamic_shapes = self._dynamic_shapes() if target is None else None
        with _quiet():
            if target is None:
                args, kwargs = self.inputs.args_kwargs(self._examples())
                target = self.loaded.module
            if isinstance(target, torch.jit.ScriptModule):
                target = _script_to_program(target, args, kwargs)
                args, kwargs = (), None
            try:
                torch.onnx.export(
                    target,
                    args,
                    str(path),
                    kwargs=kwargs or None,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    input_names=self.signature.input_names,
                    output_names=self.signature.output_names,
                    opset_version=opset,
                    external_data=_parameter_bytes(self.loaded.module) > _EXTERNAL_DATA_BYTES,
                )
            except Exception as e:
                raise _export_error(DYNAMO, e) from e
        _match_names(path, self.signature, DYNAMO)

    def export_torchscript(self, path: Path) -> None:
        import torch

        opset = self._opset(TORCHSCRIPT_MAX_OPSET)
        examples = self._examples()
        target = self.loaded.module
        # Plain modules are traced through a wrapper that takes the inputs by position and
        # returns a flat tuple; a TorchScript module cannot be called from a trace.
        wrapped = not isinstance(target, torch.jit.ScriptModule)
        if wrapped:
            target = _positional(target, self.inputs.names, self.inputs.keyword)
        axes: dict[str, dict[int, str]] = {n: dict(a) for n, a in self.dims.items() if a}
        for spec in self.signature.outputs:
            named = {i: d for i, d in enumerate(spec.shape or ()) if isinstance(d, str)}
            if named:
                axes[spec.name] = named
        with _quiet() as output:
            try:
                torch.onnx.export(
                    target,
                    tuple(examples),
                    str(path),
                    dynamo=False,
                    input_names=self.signature.input_names,
                    output_names=self.signature.output_names,
                    dynamic_axes=axes or None,
                    opset_version=opset,
                )
            except Exception as e:
                raise _export_error(
                    TORCHSCRIPT, e, output.text(), _WRAPPED if wrapped else ""
                ) from e
        _match_names(
            path, self.signature, TORCHSCRIPT, strip_prefix=_WRAPPED + "." if wrapped else ""
        )


def _script_to_program(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    """A TorchScript module as an ExportedProgram (torch's TS2EP converter, experimental)."""
    try:
        from torch._export.converter import TS2EPConverter

        return TS2EPConverter(module, args, kwargs).convert()
    except Exception as e:
        raise ConversionError(
            f"{DYNAMO}: torch cannot convert the TorchScript module to an ExportedProgram: "
            f"{_one_line(e)}",
            hint="use the torchscript exporter, or export the Python module instead",
        ) from e


_WRAPPED = "model"
"""The attribute that holds the model inside the TorchScript exporter's wrapper."""


def _positional(model: Any, names: Sequence[str], keyword: bool) -> Any:
    """A module that takes the inputs positionally, calls ``model`` with them (by keyword
    where it takes them so) and returns its outputs as one flat tuple of tensors: what the
    TorchScript exporter traces. It is in eval mode: that exporter traces in the outer
    module's mode and afterwards sets every submodule to it."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            setattr(self, _WRAPPED, model)

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            inner = getattr(self, _WRAPPED)
            kwargs = dict(zip(names, tensors, strict=True)) if keyword else {}
            result = inner(**kwargs) if keyword else inner(*tensors)
            return tuple(v for _, v in flatten_outputs(result))

    return Positional().eval()


def _identifier(name: str, index: int) -> str:
    ident = re.sub(r"\W", "_", name)
    if not ident or ident[0].isdigit():
        ident = f"d{index}_{ident}"
    return ident


def _dynamo_max_opset() -> int:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return DEFAULT_OPSET


def _parameter_bytes(module: Any) -> int:
    try:
        tensors = [*module.parameters(), *module.buffers()]
    except Exception:
        return 0
    return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


def _match_names(path: Path, signature: Signature, exporter: str, strip_prefix: str = "") -> None:
    """Check the written model's input and output names; give its symbolic dims the
    signature's names (an ExportedProgram calls them s0, s1, ...) and its initializers the
    module's parameter names (without ``strip_prefix``). Rewrites the file if anything changed.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    got_in, got_out = [v.name for v in inputs], [v.name for v in graph.output]
    if got_in != signature.input_names or got_out != signature.output_names:
        raise ConversionError(
            f"{exporter} wrote inputs {got_in} and outputs {got_out}, expected "
            f"{signature.input_names} and {signature.output_names}",
            hint="the model may ignore an input or return a structure that changes with shapes",
        )
    dims: dict[str, str] = {}
    for value, spec in zip(inputs, signature.inputs, strict=True):
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape or (), strict=False):
            if isinstance(want, str) and dim.HasField("dim_value"):
                raise ConversionError(
                    f"{exporter} fixed {want!r} of input {spec.name!r} to {dim.dim_value}: the "
                    "model's code specializes that axis",
                    hint=f"make it static (--dynamic without {want}) or use the other exporter",
                )
            if isinstance(want, str) and dim.dim_param and dim.dim_param != want:
                dims.setdefault(dim.dim_param, want)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in dims:
                dim.dim_param = dims[dim.dim_param]
    relaxed = False
    for value, spec in zip(graph.output, signature.outputs, strict=True):
        # torch.onnx can declare an output dim static that follows a dynamic input (an
        # LSTM's sequence, torch 2.13); the reference showed it varies, so it is named.
        for dim, want in zip(value.type.tensor_type.shape.dim, spec.shape or (), strict=False):
            if isinstance(want, str) and dim.HasField("dim_value"):
                dim.dim_param = want
                relaxed = True
    names: dict[str, str] = {}
    if strip_prefix:
        taken = _value_names(graph)
        for name in initializers:
            short = name.removeprefix(strip_prefix)
            if short != name and short not in taken:
                names[name] = short
                taken.add(short)
        _rename_values(graph, names)
    if dims or names or relaxed:
        onnx.save(proto, str(path))


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {t.name for t in graph.initializer}
    names |= {o for node in graph.node for o in node.output}
    return names


def _rename_values(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    """Rename initializers and every use of them, in subgraphs too."""
    if not names:
        return
    for tensor in graph.initializer:
        tensor.name = names.get(tensor.name, tensor.name)
    for value in graph.input:
        value.name = names.get(value.name, value.name)
    _rename_uses(graph, names)


def _rename_uses(graph: onnx.GraphProto, names: Mapping[str, str]) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs)
            if attribute.HasField("g"):
                subgraphs.append(attribute.g)
            for sub in subgraphs:
                _rename_uses(sub, names)


# --- errors --------------------------------------------------------------------------------

_OP_PATTERNS = (
    re.compile(
        r"No ONNX function found for <OpOverload\(op='(?P<op>[\w.]+)', overload='(?P<ov>\w+)'"
    ),
    re.compile(r"Exporting the operator '(?P<op>[\w:.]+)' to ONNX opset version \d+"),
    re.compile(r"unrecognized namespace (?P<op>[\w:.]+)"),
    re.compile(r"Unsupported: ONNX export of operator (?P<op>[\w:.]+)"),
)


def _export_error(
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
            f"trace ({_one_line(_innermost(error))})",
            hint="write the branch with torch.cond, or use the other exporter",
        )
    return ConversionError(
        f"{exporter} failed: {_one_line(_innermost(error))}",
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


def _one_line(error: BaseException) -> str:
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    text = re.sub(r"\x1b\[[0-9;]*m", "", lines[0] if lines else "")
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text[:300]


@dataclass
class _Output:
    """What torch printed inside ``_quiet``: Python prints and the native (C++) streams."""

    python: io.StringIO
    native: BinaryIO

    def text(self) -> str:
        self.native.seek(0)
        return self.python.getvalue() + self.native.read().decode(errors="replace")


@contextlib.contextmanager
def _quiet() -> Iterator[_Output]:
    """Silence torch while exporting: progress prints, warnings, torch's log messages and what
    its C++ code writes to the process's stdout and stderr (kept for error messages)."""
    native = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the with block below)
    output = _Output(io.StringIO(), native)
    loggers = [logging.getLogger("torch")]
    loggers += [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    with (
        native,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(output.python),
        contextlib.redirect_stderr(output.python),
        _native_streams_to(output.native.fileno()),
    ):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL + 1)
        try:
            yield output
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


@contextlib.contextmanager
def _native_streams_to(fd: int) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``fd`` (nothing happens where they cannot be)."""
    saved: list[tuple[int, int]] = []
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    try:
        for target in (1, 2):
            saved.append((target, os.dup(target)))
            os.dup2(fd, target)
    except OSError:
        pass
    try:
        yield
    finally:
        for target, copy in saved:
            os.dup2(copy, target)
            os.close(copy)


# --- bisection -----------------------------------------------------------------------------


def find_module_divergence(
    reference: TorchRunner,
    model: Model,
    feeds: Mapping[str, np.ndarray],
    tolerance: Tolerance,
) -> Divergence | None:
    """The first module (in execution order) whose output differs from the ONNX tensor it
    maps to, or None when nothing maps or nothing differs.

    The dynamo exporter tags each node with ``pkg.torch.onnx.name_scopes``; the last node of a
    module's scope computes that module's output. Forward hooks capture the module outputs;
    the ONNX tensors are exposed as graph outputs and computed with ONNX Runtime.
    """
    try:
        return _find_module_divergence(reference, model, feeds, tolerance)
    except Exception as e:  # bisection is a diagnosis: never the reason a conversion fails
        log.debug("torch: cannot bisect %s (%s)", model.name, e)
        return None


def _find_module_divergence(
    reference: TorchRunner,
    model: Model,
    feeds: Mapping[str, np.ndarray],
    tolerance: Tolerance,
) -> Divergence | None:
    last = _last_nodes(model.proto)
    if not last:
        return None
    captured = _capture_modules(reference, feeds, set(last))
    if not captured:
        return None
    tensors = [out for path, _ in captured for out in last[path][1].output if out]
    values = _run_exposed(model, feeds, tensors)
    for position, (path, outputs) in enumerate(captured):
        node = last[path][1]
        for tensor in node.output:
            cand = values.get(tensor)
            if cand is None:
                continue
            refs = [o for o in outputs if o.shape == cand.shape]
            if not refs:
                continue
            atol, rtol = tolerance.atol, tolerance.rtol
            result = judge_output(tensor, [refs[0]], [cand], atol, rtol)
            if not result.passed:
                return Divergence(
                    tensor=tensor,
                    node=path,
                    op_type=node.op_type,
                    position=position,
                    max_abs=result.max_abs,
                    max_rel=result.max_rel,
                    required_atol=result.required_atol,
                    problem=result.problem,
                )
            break
    return None


def _last_nodes(proto: onnx.ModelProto) -> dict[str, tuple[int, onnx.NodeProto]]:
    """Module path -> (index, last node in its scope) of the main graph, from the name scopes
    the dynamo exporter records on each node."""
    last: dict[str, tuple[int, onnx.NodeProto]] = {}
    for index, node in enumerate(proto.graph.node):
        scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), None)
        if scopes is None:
            continue
        try:
            parsed = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        if not isinstance(parsed, list):
            continue
        for path in parsed[:-1]:
            if isinstance(path, str) and path:
                last[path] = (index, node)
    return last


def _capture_modules(
    reference: TorchRunner, feeds: Mapping[str, np.ndarray], paths: set[str]
) -> list[tuple[str, list[np.ndarray]]]:
    """(module path, its output tensors as arrays) for each module in ``paths``, in the order
    the modules finished (a module called more than once: its last call)."""
    import torch

    done: dict[str, list[np.ndarray]] = {}
    handles = []

    def hook(path: str) -> Callable[..., None]:
        def record(module: Any, args: Any, output: Any) -> None:
            arrays = [_to_numpy(t) for _, t in _tensor_leaves(output)]
            done.pop(path, None)
            done[path] = arrays

        return record

    try:
        for path, module in reference.module.named_modules():
            if path in paths:
                handles.append(module.register_forward_hook(hook(path)))
        with torch.inference_mode():
            reference.call(feeds)
    finally:
        for handle in handles:
            handle.remove()
    return list(done.items())


def _tensor_leaves(value: Any) -> list[tuple[str, Any]]:
    try:
        return flatten_outputs(value)
    except ConversionError:
        return []


def _run_exposed(
    model: Model, feeds: Mapping[str, np.ndarray], tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (node outputs of the main graph) for ``feeds``."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    if model.path is not None and model.external_files:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, str(model.path.parent))
    present = {o.name for o in proto.graph.output}
    wanted = list(dict.fromkeys(tensors))
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in present)
    runner = OrtRunner(Model.from_proto(proto), validate=False)
    return runner.run(feeds, output_names=wanted)
