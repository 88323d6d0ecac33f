"""A streaming TFLite model's state as inputs and outputs: what ONNX, which has no variables,
can hold.

    stateless = stateless_model(Path("okay_nabu.tflite"))     # None: the model keeps no state
    stateless.content                                        # the rewritten flatbuffer (bytes)
    [(s.name, s.output, s.initial.shape) for s in stateless.states]
    # [("stream_6/states", "stream_6/states_out", (1, 2, 1, 40)), ...]

Streaming models (ESPHome's micro wake words, Keras' streaming layers) keep the frames they
have seen in resource variables: a ``CALL_ONCE`` fills them from an init graph on the first
call, each call ``READ_VARIABLE``s them and ``ASSIGN_VARIABLE``s their next values. tf2onnx
converts none of those ops. Each variable read once and then assigned once in the main graph
becomes an input (its name, e.g. ``stream_6/states``) and its next value an output (the name
with ``_out``), the variable ops and the init graph go, and the init graph's values are kept
as each state's ``initial`` value: a caller starts a stream from them and feeds each output
back as the same-named input on the next call. Any other use of variables is left alone
(None), and tf2onnx then says what it cannot convert.

``stream_difference`` runs the original file call after call and the rewritten one with its
states fed back, on LiteRT's reference kernels, and compares their outputs and each state's
next value (in the original, the tensor its ASSIGN_VARIABLE stores): 0 when the rewrite keeps
what the model computes, which conversion requires before it verifies the ONNX model against
the rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .tflite_rewrite import model_bytes, operator_name, read_model, tensor_name

VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"})
STATE_OUTPUT_SUFFIX = "_out"


@dataclass(frozen=True)
class State:
    """One variable as an input ``name`` and an output ``output``, starting at ``initial``;
    ``tensor``: the output's index among the tensors of the main graph, the same in the
    original file (where it is the value assigned)."""

    name: str
    output: str
    initial: np.ndarray
    tensor: int


@dataclass(frozen=True)
class Stateless:
    """The rewritten flatbuffer and its states, in the order they were added as inputs."""

    content: bytes
    states: list[State]


def has_variables(path: Path) -> bool:
    """Whether the main graph uses resource variables (the ops in ``VARIABLE_OPS``)."""
    model = read_model(path)
    main = (model.subgraphs or [None])[0]
    return main is not None and any(
        operator_name(model, op) in VARIABLE_OPS for op in main.operators or []
    )


def stateless_model(path: Path) -> Stateless | None:
    """The model with its variables as inputs and outputs (module docstring), or None."""
    model = read_model(path)
    if not model.subgraphs or len(model.subgraphs) != 2:
        return None  # the main graph and CALL_ONCE's init graph, nothing else
    main, init = model.subgraphs
    ops = [(operator_name(model, op), op) for op in main.operators or []]
    if not any(name in VARIABLE_OPS for name, _ in ops):
        return None
    initial = _initial_values(model, init)
    if initial is None:
        return None
    handles = {int(op.outputs[0]): _shared_name(op) for name, op in ops if name == "VAR_HANDLE"}
    reads: dict[str, int] = {}
    assigns: dict[str, int] = {}
    for name, op in ops:
        if name == "CALL_ONCE" and op.builtinOptions.initSubgraphIndex != 1:
            return None
        if name == "READ_VARIABLE":
            variable = handles.get(int(op.inputs[0]))
            if variable is None or variable in reads or variable in assigns:
                return None  # read twice, or after its assignment
            reads[variable] = int(op.outputs[0])
        elif name == "ASSIGN_VARIABLE":
            variable = handles.get(int(op.inputs[0]))
            if variable is None or variable not in reads or variable in assigns:
                return None
            assigns[variable] = int(op.inputs[1])
        elif name not in VARIABLE_OPS and set(map(int, op.inputs)) & set(handles):
            return None  # a handle used by another op
    if (
        set(reads) != set(assigns)
        or set(reads) != set(handles.values())
        or set(reads) - set(initial)
    ):
        return None
    states = []
    for variable, read in reads.items():
        main.tensors[read].name = variable.encode()
        output = variable + STATE_OUTPUT_SUFFIX
        main.tensors[assigns[variable]].name = output.encode()
        main.inputs = [*main.inputs, read]
        main.outputs = [*main.outputs, assigns[variable]]
        _add_to_signature(model, variable, read, output, assigns[variable])
        states.append(State(variable, output, initial[variable], assigns[variable]))
    main.operators = [op for name, op in ops if name not in VARIABLE_OPS]
    model.subgraphs = [main]
    return Stateless(model_bytes(model), states)


def stream_difference(
    original: Callable[[], Any], stateless: Stateless, rewritten: Callable[[], Any], steps: int
) -> float:
    """Largest difference between the original's outputs and assigned states, call after call,
    and the rewrite's with its states fed back from their initial values; ``original()``
    (keeping every tensor, to read the assigned ones) and ``rewritten()`` make interpreters
    (allocated here) on the two files."""
    first, second = original(), rewritten()
    first.allocate_tensors()
    second.allocate_tensors()
    names = {s.name for s in stateless.states}
    ins = {_plain(d["name"]): d for d in second.get_input_details()}
    outs = {_plain(d["name"]): d for d in second.get_output_details()}
    state = {s.name: s.initial for s in stateless.states}
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(steps):
        feeds = {}
        for detail in first.get_input_details():
            feeds[_plain(detail["name"])] = _random(detail, rng)
            first.set_tensor(detail["index"], feeds[_plain(detail["name"])])
        first.invoke()
        for name, detail in ins.items():
            value = state[name] if name in names else feeds.get(name)
            if value is None:
                return float("inf")  # an input of the original is missing
            second.set_tensor(detail["index"], value)
        second.invoke()
        pairs = [(d["index"], outs[_plain(d["name"])]["index"]) for d in first.get_output_details()]
        pairs += [(s.tensor, outs[s.output]["index"]) for s in stateless.states]
        for mine, theirs in pairs:
            want = first.get_tensor(mine).astype(np.float64)
            got = second.get_tensor(theirs).astype(np.float64)
            worst = max(worst, float(np.abs(want - got).max(initial=0.0)))
        for s in stateless.states:
            state[s.name] = np.array(second.get_tensor(outs[s.output]["index"]))
    return worst


def _initial_values(model: Any, init: Any) -> dict[str, np.ndarray] | None:
    """Variable name -> its value from the init graph (VAR_HANDLE, then ASSIGN_VARIABLE of a
    constant), or None when the init graph does anything else."""
    handles: dict[int, str] = {}
    values: dict[str, np.ndarray] = {}
    for op in init.operators or []:
        name = operator_name(model, op)
        if name == "VAR_HANDLE":
            handles[int(op.outputs[0])] = _shared_name(op)
        elif name == "ASSIGN_VARIABLE" and int(op.inputs[0]) in handles:
            value = _constant(model, init.tensors[int(op.inputs[1])])
            if value is None:
                return None
            values[handles[int(op.inputs[0])]] = value
        else:
            return None
    return values


def _constant(model: Any, tensor: Any) -> np.ndarray | None:
    from tensorflow.lite.python import schema_py_generated as schema

    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8}
    dtypes |= {schema.TensorType.FLOAT32: np.float32, schema.TensorType.INT16: np.int16}
    dtypes |= {schema.TensorType.INT32: np.int32, schema.TensorType.FLOAT16: np.float16}
    dtype = dtypes.get(tensor.type)
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if dtype is None or data is None:
        return None
    shape = [int(d) for d in tensor.shape]
    value: np.ndarray = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype)
    shaped: np.ndarray = value.reshape(shape).copy()
    return shaped


def _shared_name(op: Any) -> str:
    return tensor_name(op.builtinOptions.sharedName)


def _add_to_signature(model: Any, name: str, read: int, output: str, assigned: int) -> None:
    from tensorflow.lite.python import schema_py_generated as schema

    for signature in model.signatureDefs or []:
        if signature.subgraphIndex != 0:
            continue
        for group, label, index in (("inputs", name, read), ("outputs", output, assigned)):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = label.encode(), index
            setattr(signature, group, [*(getattr(signature, group) or []), entry])


def _plain(name: str) -> str:
    """An interpreter's tensor name without the ``serving_default_`` prefix or ``:0``."""
    return str(name).removeprefix("serving_default_").split(":")[0]


def _random(detail: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    shape = [int(d) for d in detail["shape"]]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)
