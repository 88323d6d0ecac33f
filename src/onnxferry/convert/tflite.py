"""TFLite flatbuffers as conversion sources.

    source = load_tflite("model.tflite", ConvertOptions())
    source.reference.run(feeds)                 # the TFLite interpreter, {name: array}
    source.candidates[0].export(Path("out.onnx"))   # tf2onnx.convert.from_tflite

Names: when the model has one signature covering all its inputs and outputs (what
``TFLiteConverter`` writes), inputs and outputs take the signature's names ("features",
"output_0"); otherwise the interpreter's tensor names without a ":0" suffix
("serving_default_x"). The exported ONNX model is renamed to match.

The reference runs on ``ai_edge_litert``'s interpreter when installed, else on
``tf.lite.Interpreter`` (deprecated in TensorFlow 2.21 but working; its warning is silenced).
That interpreter does not verify the flatbuffer and can segfault on a corrupt one, so a file is
first decoded in Python (tables, offsets and indices in range) and then loaded once in a child
process (about 4 s: the child imports TensorFlow); a crash there is an InputError here.
tf2onnx 1.17's ``from_tflite`` keeps a dynamic batch (shape_signature -1) and writes IR 8 up to
opset 18 (higher opsets as in ``convert.tf_common``); for it, weights stored sparse are made
dense first and a real FFT taken for its real part a matrix product (``tflite_rewrite``). A
streaming model's resource variables become state inputs and outputs (``tflite_state``): the
reference then runs that rewrite, held first to the original call after call, and a note
says how to stream the ONNX model. The
source's second opinion (``Source.second_reference``) is the same file on LiteRT's reference
kernels: what they and the default XNNPACK kernels give apart is the source's own noise
(``convert.verdict``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import FeedError, InputError, one_line
from ..feeds import describe_shapes
from ..signature import Signature, TensorSpec, dtype_from_numpy
from .base import Candidate, ConversionError, ConvertOptions, Source
from .tf_common import (
    common_batch_name,
    convert_with_tf2onnx,
    finish_export,
    import_tf,
    natural_key,
    output_shape,
    quiet_native,
    quiet_tf,
    resolve_opset,
    source_shape,
)
from .tflite_rewrite import for_tf2onnx, sparse_tensors
from .tflite_state import (
    STATE_OUTPUT_SUFFIX,
    Stateless,
    has_variables,
    stateless_model,
    stream_difference,
)

if TYPE_CHECKING:
    import onnx

__all__ = ["TFLiteRunner", "litert_interpreter", "load_tflite"]

log = logging.getLogger("onnxferry")

_Tensor = tuple[str, dict[str, Any]]
"""A tensor's name in the signature and its interpreter details."""

TFLITE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier of a TFLite model, at bytes 4..8."""


def load_tflite(path: str | Path, options: ConvertOptions) -> Source:
    """A ``.tflite`` flatbuffer to convert; InputError (exit 2) for a file that is not one."""
    opset = resolve_opset(options)
    runner = TFLiteRunner(path, options)
    details: dict[str, Any] = {"tensorflow": str(import_tf().__version__), "opset": opset}
    notes: list[str] = []
    content = None
    if has_variables(runner.path):
        stateless = _stateless(runner.path)
        content = stateless.content
        runner = TFLiteRunner(path, options, probe=False, content=content)
        details["states"] = [
            {"input": s.name, "output": s.output, "initial": _initial(s.initial)}
            for s in stateless.states
        ]
        notes.append(_states_note(stateless))
    sig = runner.signature
    return Source(
        framework="tflite",
        description=(
            f"{runner.path}: TFLite model with {len(sig.inputs)} inputs, {len(sig.outputs)} outputs"
        ),
        reference=runner,
        candidates=[Candidate("tf2onnx", lambda out: runner.export_tf2onnx(out, opset))],
        second_reference=lambda: TFLiteRunner(
            path, options, probe=False, kernels="reference", content=content
        ),
        details=details,
        notes=notes,
    )


_STREAM_STEPS = 8
"""Calls the original and its stateless rewrite must agree on, states fed back."""


def _stateless(path: Path) -> Stateless:
    """The file with its variables as inputs and outputs, checked call after call against
    the original; InputError when they cannot be moved or the rewrite differs."""
    stateless = stateless_model(path)
    if stateless is None:
        raise InputError(
            f"{path}: the model keeps state in resource variables (VAR_HANDLE, READ_VARIABLE, "
            "ASSIGN_VARIABLE), used in a way onnxferry cannot turn into inputs and outputs",
            hint="export the model without streaming state (its states as explicit inputs "
            "and outputs)",
        )
    difference = stream_difference(
        lambda: litert_interpreter(path, "reference", keep_all_tensors=True),
        stateless,
        lambda: litert_interpreter(path, "reference", content=stateless.content),
        _STREAM_STEPS,
    )
    if difference != 0:
        raise InputError(
            f"{path}: with its variables as inputs and outputs the model gives other values "
            f"over {_STREAM_STEPS} calls (max abs {difference:.3g})",
            hint="export the model without streaming state (its states as explicit inputs "
            "and outputs)",
        )
    return stateless


def _fill(initial: np.ndarray) -> int | float | None:
    """The one value a state starts at everywhere, or None."""
    values = np.unique(initial)
    return values[0].item() if values.size == 1 else None


def _initial(initial: np.ndarray) -> Any:
    """A state's starting value for the report: its one value, else every value."""
    fill = _fill(initial)
    return initial.tolist() if fill is None else fill


def _states_note(stateless: Stateless) -> str:
    """How to run the converted model as a stream."""
    fills = [_fill(s.initial) for s in stateless.states]
    start = "at its initial value (the report's details)"
    if None not in fills and len(set(fills)) == 1:
        start = f"filled with {fills[0]}"
    return (
        f"stateful: its {len(stateless.states)} variables are inputs "
        f"({', '.join(s.name for s in stateless.states)}) and their next values outputs (the same "
        f"names + {STATE_OUTPUT_SUFFIX!r}); start a stream with every state {start} and feed each "
        f"output back as its input on the next call (checked against the original over "
        f"{_STREAM_STEPS} calls)"
    )


class TFLiteRunner:
    """Runs a TFLite model in the TFLite interpreter; implements Runner.

    Each run resizes the inputs to the feeds' shapes (only dims the model leaves open,
    shape_signature -1, may change; FeedError otherwise) and reallocates when they changed.
    ``kernels="reference"`` runs TFLite's reference kernels (``BUILTIN_REF``: plain C++, no
    XNNPACK delegate) instead of its default optimized ones: the model's second opinion.
    """

    def __init__(
        self,
        path: str | Path,
        options: ConvertOptions | None = None,
        *,
        probe: bool = True,
        kernels: Literal["default", "reference"] = "default",
        content: bytes | None = None,
    ) -> None:
        options = options or ConvertOptions()
        self.path = Path(path)
        self.content = content
        """A rewrite of the file to run instead (``tflite_state``: its state as inputs)."""
        _check_flatbuffer(self.path)
        if probe:
            _probe(self.path)
        self.name = f"{self.path.stem}@tflite" + (
            " (reference kernels)" if kernels != "default" else ""
        )
        try:
            self.interpreter = litert_interpreter(self.path, kernels, content=content)
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except Exception as e:
            raise _cannot_load(self.path, one_line(e)) from e
        named = _signature_names(self.interpreter, inputs, outputs)
        in_names, out_names = named or (_tensor_names(inputs), _tensor_names(outputs))

        def ordered(names: dict[int, str], details: list[dict[str, Any]]) -> list[_Tensor]:
            pairs = [(names[int(d["index"])], d) for d in details]
            return sorted(pairs, key=lambda p: natural_key(p[0])) if named else pairs

        self._inputs = ordered(in_names, inputs)
        self._outputs = ordered(out_names, outputs)
        self._shapes = {d["index"]: tuple(int(x) for x in d["shape"]) for _, d in self._inputs}
        self._declared = dict(self._shapes)
        self._allocated = False
        specs = [
            TensorSpec(name, dtype_from_numpy(d["dtype"]), source_shape(name, _dims(d), options))
            for name, d in self._inputs
        ]
        batch = common_batch_name(specs)
        out_specs = [
            TensorSpec(name, dtype_from_numpy(d["dtype"]), output_shape(_dims(d), batch))
            for name, d in self._outputs
        ]
        self._signature = Signature(tuple(specs), tuple(out_specs))
        self.tensor_names = {d["name"]: name for name, d in (*self._inputs, *self._outputs)}
        """The interpreter's tensor names -> the signature's names."""

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.signature.validate(feeds)
        interpreter = self.interpreter
        for name, detail in self._inputs:
            index = detail["index"]
            shape = tuple(feeds[name].shape)
            if shape != self._shapes[index]:
                try:
                    interpreter.resize_tensor_input(index, list(shape), strict=True)
                except Exception as e:
                    raise FeedError(
                        f"input {name!r}: the TFLite model cannot take shape {list(shape)} "
                        f"({one_line(e)})",
                        hint="only dims the model leaves open (-1) may change",
                    ) from e
                self._shapes[index] = shape
                self._allocated = False
        try:
            if not self._allocated:
                with quiet_native("litert"):
                    interpreter.allocate_tensors()
                self._allocated = True
            for name, detail in self._inputs:
                interpreter.set_tensor(detail["index"], np.ascontiguousarray(feeds[name]))
            interpreter.invoke()
        except Exception as e:
            if self._shapes != self._declared:  # the file is whole: these sizes do not run
                shapes = describe_shapes({n: self._shapes[d["index"]] for n, d in self._inputs})
                raise FeedError(
                    f"the TFLite model cannot run on {shapes} ({one_line(e)})",
                    hint="give the sizes it declares, or those it was made for",
                ) from e
            raise InputError(
                f"{self.path}: the TFLite interpreter failed ({one_line(e)})", hint=_REPAIR
            ) from e
        return {name: np.array(interpreter.get_tensor(d["index"])) for name, d in self._outputs}

    def _kept(self) -> Any:
        """An interpreter on this file on reference kernels, every tensor kept after a run."""
        return litert_interpreter(
            self.path, "reference", keep_all_tensors=True, content=self.content
        )

    def export_tf2onnx(self, path: Path, opset: int) -> None:
        """tf2onnx.convert.from_tflite, renamed to the reference's names."""

        # tf2onnx reads only dense constants and a real FFT's magnitude: the rewritten file is
        # converted, and parity still runs the original (or its stateless rewrite)
        given = self.path
        if self.content is not None:
            given = path.with_name("stateless.tflite")
            given.write_bytes(self.content)
        source = for_tf2onnx(given, path.with_name("rewritten.tflite"), self._kept) or given
        sparse = sparse_tensors(given)

        def convert(export_opset: int) -> onnx.ModelProto:
            import tf2onnx

            proto: onnx.ModelProto
            with _no_interpreter_warning(), quiet_native("litert"):  # tf2onnx reads shapes
                proto, _ = tf2onnx.convert.from_tflite(str(source), opset=export_opset)
            return proto

        try:
            proto = convert_with_tf2onnx(convert, opset, framework="TFLite")
        except ConversionError as e:
            if not sparse or source != given:
                raise
            raise ConversionError(
                f"tf2onnx: the model keeps {len(sparse)} weights sparse (e.g. {sparse[0]!r}, "
                "expanded by DENSIFY at run time) where they cannot be made dense",
                hint="convert the model from its source without sparsity",
            ) from e
        finish_export(proto, self.signature, path, self.tensor_names)


_REPAIR = "check that the file is a whole .tflite model; re-convert or re-copy it"
_PROBE_MARK = "onnxferry-probe: "
_PROBE_TIMEOUT_S = 600


def _probe(path: Path) -> None:
    """Load the model in a child process first: TFLite's interpreter does not verify the
    flatbuffer, and a corrupt one can crash the process that loads it (a segfault)."""
    code = "from onnxferry.convert.tflite import _probe_main; _probe_main()"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),  # find this onnxferry
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning("%s: the TFLite load check took over %d s; skipped", path, _PROBE_TIMEOUT_S)
        return
    if done.returncode < 0:
        raise InputError(
            f"{path}: the TFLite interpreter crashes on this file (signal {-done.returncode}); "
            "the flatbuffer is corrupt",
            hint="re-convert or re-copy the model",
        )
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith(_PROBE_MARK)]
        if not lines:  # the child failed before reaching the model: not the file's fault
            tail = one_line(done.stderr, line="last")
            log.warning("%s: the TFLite load check could not run (%s); skipped", path, tail)
            return
        raise _cannot_load(path, lines[-1].removeprefix(_PROBE_MARK))


def _cannot_load(path: Path, detail: str) -> InputError:
    """The interpreter's refusal as one line: a custom op it lacks is named as such (the file
    is whole; the op's kernel lives in the app that made it, e.g. MediaPipe), anything else
    points at the file."""
    custom = re.search(r"unresolved custom op: (\w+)", detail)
    if custom:
        return InputError(
            f"{path}: the model uses the custom op {custom[1]}, which the TFLite interpreter "
            "here does not implement, so it cannot run to check a conversion",
            hint="convert the model from its source framework, or from a .tflite built "
            "without the custom op",
        )
    return InputError(
        f"{path}: the TFLite interpreter cannot load the model ({detail})", hint=_REPAIR
    )


def _probe_main() -> None:
    """The child of ``_probe``: load, allocate and (for numeric inputs) invoke once."""
    try:
        interpreter = litert_interpreter(Path(sys.argv[1]))
        interpreter.allocate_tensors()
        inputs = interpreter.get_input_details()
    except Exception as e:
        print(_PROBE_MARK + one_line(e), file=sys.stderr)
        raise SystemExit(3) from None
    if all(np.dtype(d["dtype"]).kind in "biuf" for d in inputs):
        with contextlib.suppress(Exception):  # data-dependent failures are not load failures
            for d in inputs:
                interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            interpreter.invoke()


def _check_flatbuffer(path: Path) -> None:
    """InputError unless ``path`` holds a TFLite flatbuffer whose structure holds together:
    the interpreter does not verify the buffer and crashes the process on a corrupt one."""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise InputError(f"{path}: {what}, not a TFLite model", hint="give a .tflite file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read the file ({e.strerror or e})") from e
    if data[4:8] != TFLITE_IDENTIFIER:
        raise InputError(
            f"{path}: not a TFLite flatbuffer (no TFL3 identifier at bytes 4..8)",
            hint="give a .tflite file written by the TFLite converter",
        )
    problem = _structure_problem(data)
    if problem:
        raise InputError(
            f"{path}: a corrupt or truncated TFLite flatbuffer ({problem})",
            hint="re-convert or re-copy the model",
        )


def _structure_problem(data: bytes) -> str | None:
    """What is wrong with the flatbuffer's tables and indices, or None. Decoding in Python
    raises on offsets past the end instead of reading stray memory."""
    try:
        import_tf()
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:  # pragma: no cover - the schema ships with tensorflow
        return None
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:
        return f"cannot decode it: {one_line(e, 120)}"
    if model.version != 3:
        return f"schema version {model.version}, expected 3"
    subgraphs, buffers = model.subgraphs or [], model.buffers or []
    if not subgraphs:
        return "no subgraphs"
    opcodes = len(model.operatorCodes or [])
    for buffer in buffers:
        if buffer.offset and buffer.offset + buffer.size > len(data):
            return "a buffer reaches past the end of the file"
    for graph in subgraphs:
        tensors = graph.tensors or []
        if any(not 0 <= t.buffer < max(len(buffers), 1) for t in tensors):
            return "a tensor names a buffer that does not exist"
        indices = [*_ints(graph.inputs), *_ints(graph.outputs)]
        for op in graph.operators or []:
            if not 0 <= op.opcodeIndex < opcodes:
                return "an operator names an opcode that does not exist"
            indices += [*_ints(op.inputs), *_ints(op.outputs)]
        if any(not -1 <= i < len(tensors) for i in indices):
            return "an operator or graph names a tensor that does not exist"
    return None


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def litert_interpreter(
    path: Path,
    kernels: str = "default",
    *,
    keep_all_tensors: bool = False,
    content: bytes | None = None,
) -> Any:
    """LiteRT's interpreter when installed, else TensorFlow's, on the kernels asked for;
    ``keep_all_tensors`` keeps intermediate tensors readable after a run; ``content``: a
    flatbuffer to run instead of the file (a rewrite of it)."""
    try:
        litert: Any = importlib.import_module("ai_edge_litert.interpreter")
        make, resolvers = litert.Interpreter, litert.OpResolverType
    except ImportError:
        tf = import_tf()
        make, resolvers = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    resolver = resolvers.BUILTIN_REF if kernels == "reference" else resolvers.AUTO
    with _no_interpreter_warning(), quiet_tf():
        where: dict[str, Any] = {"model_path": str(path)}
        if content is not None:
            where = {"model_content": content}
        return make(
            **where,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=keep_all_tensors,
        )


@contextlib.contextmanager
def _no_interpreter_warning() -> Iterator[None]:
    """Silence tf.lite.Interpreter's deprecation warning (it still works in TF 2.21), and its
    warning that keeping every tensor is for debugging (densifying needs one run so)."""
    with warnings.catch_warnings():
        for message in ("is deprecated", "Enabling `experimental_preserve_all_tensors`"):
            warnings.filterwarnings(
                "ignore", message=rf"\s*Warning: .*{message}", category=UserWarning
            )
        yield


def _signature_names(
    interpreter: Any, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> tuple[dict[int, str], dict[int, str]] | None:
    """{tensor index: name} for inputs and outputs from the model's only signature, if it
    covers every input and output tensor."""
    try:
        keys = list(interpreter.get_signature_list())
        if len(keys) != 1:
            return None
        runner = interpreter.get_signature_runner(keys[0])
        in_map = {int(d["index"]): n for n, d in runner.get_input_details().items()}
        out_map = {int(d["index"]): n for n, d in runner.get_output_details().items()}
    except Exception:  # an interpreter without signature support
        return None
    if set(in_map) != {int(d["index"]) for d in inputs}:
        return None
    if set(out_map) != {int(d["index"]) for d in outputs}:
        return None
    return in_map, out_map


def _tensor_names(details: list[dict[str, Any]]) -> dict[int, str]:
    names = {int(d["index"]): str(d["name"]).removesuffix(":0") for d in details}
    if len(set(names.values())) != len(names):
        names = {int(d["index"]): str(d["name"]) for d in details}
    return names


def _dims(detail: Mapping[str, Any]) -> list[int | None]:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    return [None if int(d) < 0 else int(d) for d in shape]
