"""Example inputs for a torch module: forward's parameters, the example tensors from the
user, samples or shapes, and how forward takes them (by position or by keyword).

    params = forward_params(module)
    inputs = build_inputs(module, params, (torch.randn(2, 3),), options)
    inputs.names, inputs.keyword      # ["x"], False
    inputs.call(module)               # forward on the examples

An argument given as a tuple, list or dict of tensors (``forward(self, inputs)`` with
``x, lengths = inputs``) becomes one ONNX input a tensor, named by its place:
``inputs_0``, ``inputs_1`` (``{arg}_{key}`` in a dict); ``call`` and ``args_kwargs`` put
them back together.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...feeds import realistic_feeds
from ...signature import DType, Signature, TensorSpec, dtype_from_numpy
from ..base import ConversionError, ConvertOptions
from .state import kept_state


@dataclass(frozen=True)
class _Param:
    name: str
    positional: bool
    required: bool
    kind: str = "Tensor"
    """Its type where forward declares it (TorchScript's schema): "Tensor", "int", ..."""


@dataclass
class ForwardParams:
    items: list[_Param]
    var_positional: bool = False
    var_keyword: bool = False

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.items]

    @property
    def positional(self) -> list[str]:
        return [p.name for p in self.items if p.positional]


def forward_params(module: Any) -> ForwardParams:
    """forward's parameters (self excluded), from its Python or TorchScript signature."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        schema = getattr(module.forward, "schema")  # noqa: B009 (a ScriptMethod)
        items = [
            _Param(a.name, True, not a.has_default_value(), str(a.type))
            for a in schema.arguments[1:]
            if a.name != "self"
        ]
        return ForwardParams(items)
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return ForwardParams([], var_positional=True, var_keyword=True)
    params = ForwardParams([])
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            params.var_positional = True
        elif p.kind is p.VAR_KEYWORD:
            params.var_keyword = True
        else:
            positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            params.items.append(_Param(p.name, positional, p.default is p.empty))
    return params


@dataclass(frozen=True)
class Nested:
    """How one forward argument given as a tuple, list or dict is rebuilt from its tensors:
    torch's pytree spec, and which of its leaves are inputs (None leaves stay None)."""

    spec: Any
    inputs: tuple[bool, ...]

    def rebuild(self, tensors: Sequence[Any]) -> Any:
        from torch.utils import _pytree

        given = iter(tensors)
        leaves = [next(given) if is_input else None for is_input in self.inputs]
        return _pytree.tree_unflatten(leaves, self.spec)


@dataclass
class ExampleInputs:
    """The example inputs: names in forward's order, tensors, and how forward takes them.
    ``names`` and ``tensors`` are the ONNX inputs; an argument in ``nested`` takes several
    of them, in order."""

    names: list[str]
    tensors: list[Any]
    keyword: bool
    arguments: list[str] = field(default_factory=list)
    """forward's arguments, in order (``names`` when none is nested)."""
    nested: dict[str, Nested] = field(default_factory=dict)
    replaced: set[str] = field(default_factory=set)
    """Tensor attributes forward replaced on the module (``state.kept_state``, put back)."""

    @property
    def argument_names(self) -> list[str]:
        return self.arguments or self.names

    def call(self, module: Any, tensors: Sequence[Any] | None = None) -> Any:
        """forward on ``tensors`` (default: the examples), from the module's state at load."""
        args, kwargs = self.args_kwargs(self.tensors if tensors is None else tensors)
        with kept_state(module) as replaced:
            result = module(*args, **kwargs)
        self.replaced.update(replaced)
        return result

    def args_kwargs(self, tensors: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """forward's arguments from one value an input (a tensor, or anything laid out like
        the inputs: torch.export's dynamic shapes)."""
        values = list(tensors)
        if len(values) != len(self.names):
            raise ValueError(f"{len(values)} values for {len(self.names)} inputs")
        arguments: dict[str, Any] = {}
        for name in self.argument_names:
            nested = self.nested.get(name)
            taken = sum(nested.inputs) if nested else 1
            part, values = values[:taken], values[taken:]
            arguments[name] = nested.rebuild(part) if nested else part[0]
        if self.keyword:
            return (), arguments
        return tuple(arguments.values()), {}


def build_inputs(
    module: Any, params: ForwardParams, example: Any, options: ConvertOptions
) -> ExampleInputs:
    import torch

    _check_kinds(params)
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
        _check_required(params, names)
        return _flattened(dict(zip(names, example, strict=True)), keyword=False)
    if isinstance(example, Mapping):
        by_name = _regrouped(params, {str(k): v for k, v in example.items() if v is not None})
        _check_known(params, list(by_name))
        _check_required(params, list(by_name))
        names = _in_forward_order(params, list(by_name))
        scripted = isinstance(module, torch.jit.ScriptModule)
        keyword = not (scripted and _leading(params, names))  # TorchScript: by position
        return _flattened({n: by_name[n] for n in names}, keyword)
    if example is not None:
        raise ConversionError(
            f"example inputs must be a tensor, a tuple of tensors or a dict of tensors, "
            f"not a {type(example).__name__}",
            hint="return (module, (tensor, ...)) or (module, {name: tensor}) from the factory",
        )
    given: dict[str, Any] = {}
    if options.sample_inputs:
        sample = options.sample_inputs[0]
        given = {n: tensor_from_numpy(n, v) for n, v in sample.items()}
    elif options.input_shapes:
        shapes = {n: tuple(s) for n, s in options.input_shapes.items()}
        given = dict(
            zip(shapes, _generated(shapes, value_ranges(module, list(shapes))), strict=True)
        )
    if given:
        arguments = _regrouped(params, given)
        _check_known(params, list(arguments))
        _check_required(params, list(arguments))
        names = _in_forward_order(params, list(arguments))
        return _flattened({n: arguments[n] for n in names}, keyword=not _leading(params, names))
    _check_required(params, [])
    return ExampleInputs([], [], keyword=False)


def _regrouped(params: ForwardParams, given: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs by name as forward's arguments: ``inputs_0``, ``inputs_1``, ... given for an
    argument ``inputs`` that nothing else gives become the tuple it takes (the names its
    ONNX inputs get, ``_flattened``); every other name stays as it is."""
    arguments: dict[str, Any] = {}
    places: dict[str, dict[int, Any]] = {}
    for name, value in given.items():
        found = re.fullmatch(r"(.+)_(\d+)", name)
        argument = found[1] if found and name not in params.names else None
        if found is None or argument not in params.names or argument in given:
            arguments[name] = value
        else:
            places.setdefault(found[1], {})[int(found[2])] = value
    for argument, values in places.items():
        if sorted(values) != list(range(len(values))):
            arguments.update({f"{argument}_{i}": v for i, v in values.items()})
            continue  # not a tuple's places: left for _check_known to name
        arguments[argument] = tuple(values[i] for i in range(len(values)))
    return arguments


def _check_known(params: ForwardParams, names: Sequence[str]) -> None:
    if params.var_keyword:
        return
    unknown = [n for n in names if n not in params.names]
    if unknown:
        raise ConversionError(
            f"forward() has no parameter {unknown[0]!r}",
            hint=f"its parameters are: {', '.join(params.names) or 'none'}",
        )


def _check_required(params: ForwardParams, names: Sequence[str]) -> None:
    missing = [p.name for p in params.items if p.required and p.name not in names]
    if not missing:
        return
    shapes = " ".join(f"--input-shape {n}=1x3x224x224" for n in missing)
    raise ConversionError(
        f"forward() needs argument{'s' if len(missing) > 1 else ''} "
        f"{', '.join(repr(n) for n in missing)} that no example input gives",
        hint=f"give {shapes} or --inputs samples.npz with {', '.join(missing)} (an argument "
        f"taking a tuple as {missing[0]}_0, {missing[0]}_1, ...)",
    )


def _check_kinds(params: ForwardParams) -> None:
    """ConversionError for a required argument that forward declares other than a tensor
    (Silero VAD's TorchScript takes ``int sr``): an ONNX model's inputs are tensors."""
    scalar = next((p for p in params.items if p.required and "Tensor" not in p.kind), None)
    if scalar is not None:
        raise ConversionError(
            f"forward() takes {scalar.name!r} as {scalar.kind}, not a tensor, and an ONNX "
            "model's inputs are tensors",
            hint=f"convert a module that calls this one with {scalar.name} fixed (a factory "
            "file.py:function returning it)",
        )


def _flattened(arguments: Mapping[str, Any], keyword: bool) -> ExampleInputs:
    """ExampleInputs for forward's arguments by name: a tensor is one input; a tuple, list or
    dict of tensors (nested too) one input a tensor, named by its place."""
    import torch
    from torch.utils import _pytree

    names: list[str] = []
    tensors: list[Any] = []
    nested: dict[str, Nested] = {}
    for argument, value in arguments.items():
        if isinstance(value, torch.Tensor) or not isinstance(value, (tuple, list, dict)):
            names.append(argument)
            tensors.append(value)
            continue
        leaves, spec = _pytree.tree_flatten_with_path(value)
        for path, leaf in leaves:
            if leaf is not None:
                names.append("_".join([argument, *(_key(k) for k in path)]))
                tensors.append(leaf)
        nested[argument] = Nested(spec, tuple(leaf is not None for _, leaf in leaves))
    _check_tensors(names, tensors)
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ConversionError(
            f"two example inputs would both be named {twice!r}",
            hint="rename the argument or the dict key that repeats another input's name",
        )
    return ExampleInputs(names, tensors, keyword, list(arguments), nested)


def _key(key: Any) -> str:
    """One step of a pytree path as a name part: an index, a dict key, a field."""
    for attribute in ("idx", "key", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _check_tensors(names: Sequence[str], values: Sequence[Any]) -> None:
    import torch

    for name, value in zip(names, values, strict=True):
        if not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"example input {name!r} is a {type(value).__name__}, not a tensor",
                hint="give tensors (alone, or in tuples, lists and dicts); fix other "
                "arguments inside the module",
            )


def _leading(params: ForwardParams, names: Sequence[str]) -> bool:
    """True when ``names`` are forward's first positional parameters, in order."""
    return list(names) == params.positional[: len(names)]


def tensor_from_numpy(name: str, array: np.ndarray) -> Any:
    """``array`` as a torch tensor; bfloat16 (ml_dtypes' dtype, which torch does not take
    from NumPy) through float32, exactly."""
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(torch.bfloat16)
    try:
        return torch.from_numpy(np.array(array, copy=True))
    except TypeError as e:
        raise ConversionError(
            f"sample input {name!r} has dtype {array.dtype}, which torch cannot hold",
            hint="give numeric or bool arrays",
        ) from e


def _in_forward_order(params: ForwardParams, names: Sequence[str]) -> list[str]:
    order = {n: i for i, n in enumerate(params.names)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), list(names).index(n)))


def _generated(
    shapes: Mapping[str, tuple[int, ...]], ranges: Mapping[str, tuple[int, int]]
) -> list[Any]:
    """Example tensors at ``shapes`` with the values every verb generates
    (``feeds.realistic_feeds``): int64 for ids and masks (told by name), else float32."""
    import torch

    def dtype(name: str) -> DType:
        lowered = name.lower()
        index = "mask" in lowered or lowered.endswith("_ids") or lowered == "ids"
        return dtype_from_numpy(np.int64 if index else np.float32)

    signature = Signature(tuple(TensorSpec(n, dtype(n), s) for n, s in shapes.items()), ())
    arrays = realistic_feeds(signature, shapes=shapes, value_ranges=ranges)
    return [torch.from_numpy(arrays[n]) for n in shapes]


def value_ranges(module: Any, names: Sequence[str]) -> dict[str, tuple[int, int]]:
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


def resize(tensor: Any, axes: Mapping[int, int]) -> Any:
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
