"""Random valid models with every way exporters write a dim, through every verb.

Hypothesis builds models of elementwise ops (so any shape runs), one chain per input to its
own output (declared with the input's dims, fresh names or unknown dims), whose inputs mix dtypes
and dim kinds: fixed sizes, symbols shared between inputs or not, the placeholders exporters
write for "unknown" ("?", "-1", "None", "", "unk__7", "p2o.DynamicDimension.0"), dims with
neither value nor name, and negative dim values. Each model is saved and run through
``ferry inspect``, ``ferry compare M M``, ``ferry bench`` and ``ferry test`` on golden data
from an ONNX Runtime run at concrete sizes, and the server's request validation sees the
same feed that ONNX Runtime ran: no verb ends in an internal error (exit 3) or a traceback.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnxferry.cli import main
from onnxferry.errors import FerryError
from onnxferry.model import Model
from onnxferry.serve.protocol import ProtocolError, decode_infer_request
from tests.real_models import DimSpec, Feeds, value_info, write_golden

INTERNAL_ERROR = 3
PLACEHOLDERS = ["?", "-1", "None", "", "unk__7", "p2o.DynamicDimension.0"]
SHARED = ["batch", "sequence", "N"]

# dtype -> (numpy dtype, V2 datatype, unary ops that ONNX Runtime's CPU provider runs on it)
DTYPES: dict[int, tuple[type[Any], str, list[str]]] = {
    TensorProto.FLOAT: (np.float32, "FP32", ["Identity", "Add", "Neg", "Abs", "Relu", "Cast"]),
    TensorProto.FLOAT16: (np.float16, "FP16", ["Identity", "Add", "Neg", "Abs", "Relu", "Cast"]),
    TensorProto.DOUBLE: (np.float64, "FP64", ["Identity", "Add", "Neg", "Abs", "Sign", "Cast"]),
    TensorProto.INT32: (np.int32, "INT32", ["Identity", "Add", "Neg", "Abs", "Cast"]),
    TensorProto.INT64: (np.int64, "INT64", ["Identity", "Add", "Neg", "Sign", "Cast"]),
    TensorProto.BOOL: (np.bool_, "BOOL", ["Identity", "Not", "Cast"]),
}
OPSETS = {13: 7, 17: 8, 21: 10}  # opset -> IR version


@dataclass(frozen=True)
class Dim:
    """One dim of a random input: how the model writes it and what the feed gives it."""

    kind: str  # fixed, shared, own, placeholder, missing, negative
    written: DimSpec
    key: str  # dims with the same key get the same size in the feed


@dataclass(frozen=True)
class Case:
    proto: onnx.ModelProto
    feeds: Feeds


@st.composite
def dims(draw: st.DrawFn, input_index: int, axis: int) -> Dim:
    kind = draw(st.sampled_from(["fixed", "shared", "own", "placeholder", "missing", "negative"]))
    if kind == "fixed":
        size = draw(st.integers(1, 3))
        return Dim(kind, size, f"fixed{size}")
    if kind == "shared":
        name = draw(st.sampled_from(SHARED))
        return Dim(kind, name, name)
    if kind == "own":
        name = f"in{input_index}_axis{axis}"
        return Dim(kind, name, name)
    if kind == "placeholder":
        # the same text gets the same size: the feed fits either reading of a repeated one
        text = draw(st.sampled_from(PLACEHOLDERS))
        return Dim(kind, text, f"placeholder:{text}")
    if kind == "missing":
        return Dim(kind, None, f"missing{input_index}_{axis}")
    return Dim(kind, -1, f"negative{input_index}_{axis}")


def _chain(name: str, elem_type: int, ops: list[str], output: str) -> list[onnx.NodeProto]:
    nodes = []
    current = name
    for k, op in enumerate(ops):
        last = k == len(ops) - 1
        out = output if last else f"{name}_t{k}"
        if op == "Add":
            nodes.append(helper.make_node("Add", [current, current], [out]))
        elif op == "Cast":  # to float and back: the output keeps the input's dtype
            wide = f"{name}_wide{k}"
            nodes.append(helper.make_node("Cast", [current], [wide], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Cast", [wide], [out], to=elem_type))
        else:
            nodes.append(helper.make_node(op, [current], [out]))
        current = out
    return nodes


def _random(np_type: type[Any], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if np_type is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(np_type, np.integer):
        return rng.integers(-50, 50, shape).astype(np_type)
    return rng.standard_normal(shape).astype(np_type)


@dataclass(frozen=True)
class InputSpec:
    """One input: its dtype and dims, the ops from it to its output, and how the output
    writes its dims: as the input's ("same"), every dim unknown, or fresh names per dim (as
    tf2onnx's unk__N or the TorchScript exporter's "Add_output_dim_0")."""

    elem_type: int
    dims: list[Dim]
    ops: list[str]
    output_dims: str = "same"


def build_case(
    specs: list[InputSpec], sizes: dict[str, int], opset: int = 21, seed: int = 0
) -> Case:
    """The model (one op chain per input to its own output) and a feed at concrete sizes:
    ``sizes`` by dim key, fixed dims their own size."""
    rng = np.random.default_rng(seed)
    inputs, outputs, nodes = [], [], []
    feeds: Feeds = {}
    for i, spec in enumerate(specs):
        written = [d.written for d in spec.dims]
        name, out = f"input_{i}", f"output_{i}"
        inputs.append(value_info(name, spec.elem_type, written))
        if spec.output_dims == "same":
            output_written = written
        elif spec.output_dims == "unknown":
            output_written = [None] * len(written)
        else:
            output_written = [
                d.written if d.kind == "fixed" else f"{out}_dim_{axis}"
                for axis, d in enumerate(spec.dims)
            ]
        outputs.append(value_info(out, spec.elem_type, output_written))
        nodes.extend(_chain(name, spec.elem_type, spec.ops, out))
        shape = tuple(
            d.written if isinstance(d.written, int) and d.kind == "fixed" else sizes[d.key]
            for d in spec.dims
        )
        feeds[name] = _random(DTYPES[spec.elem_type][0], shape, rng)
    graph = helper.make_graph(nodes, "random", inputs, outputs)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=OPSETS[opset]
    )
    onnx.checker.check_model(proto, full_check=True)
    return Case(proto, feeds)


@st.composite
def input_specs(draw: st.DrawFn, index: int) -> InputSpec:
    elem_type = draw(st.sampled_from(sorted(DTYPES)))
    rank = draw(st.integers(0, 3))
    return InputSpec(
        elem_type,
        [draw(dims(index, axis)) for axis in range(rank)],
        draw(st.lists(st.sampled_from(DTYPES[elem_type][2]), min_size=1, max_size=3)),
        draw(st.sampled_from(["same", "unknown", "fresh"])),
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    specs = [draw(input_specs(i)) for i in range(draw(st.integers(1, 3)))]
    keys = dict.fromkeys(d.key for spec in specs for d in spec.dims if d.kind != "fixed")
    sizes = {key: draw(st.integers(1, 4)) for key in keys}
    opset = draw(st.sampled_from(sorted(OPSETS)))
    return build_case(specs, sizes, opset, seed=draw(st.integers(0, 2**32 - 1)))


# Pinned: a scalar of every dtype, and every dim kind (at most 4 dims per input, as real
# models have: the verbs pick a size per open dim, so their inputs grow as size**rank).
SCALARS = build_case([InputSpec(t, [], ["Identity"]) for t in DTYPES], {})
EVERY_DIM_KIND = build_case(
    [
        InputSpec(
            TensorProto.FLOAT,
            [
                Dim("fixed", 2, "fixed2"),
                Dim("shared", "batch", "batch"),
                Dim("own", "in0_axis2", "in0_axis2"),
                Dim("placeholder", "?", "placeholder:?"),
            ],
            ["Add", "Relu"],
        ),
        InputSpec(
            TensorProto.FLOAT16,
            [Dim("placeholder", text, f"placeholder:{text}") for text in PLACEHOLDERS[1:5]],
            ["Neg"],
            "unknown",
        ),
        InputSpec(
            TensorProto.DOUBLE,
            [
                Dim("placeholder", PLACEHOLDERS[5], f"placeholder:{PLACEHOLDERS[5]}"),
                Dim("missing", None, "missing2"),
                Dim("negative", -1, "negative2"),
            ],
            ["Abs"],
        ),
        InputSpec(TensorProto.INT64, [Dim("shared", "batch", "batch")], ["Neg"], "fresh"),
    ],
    {"batch": 3, "in0_axis2": 2, "missing2": 1, "negative2": 2}
    | {f"placeholder:{text}": 1 + k % 3 for k, text in enumerate(PLACEHOLDERS)},
)


def _ferry(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    argv = [str(a) for a in args]
    code = main(argv)
    out, err = capsys.readouterr()
    if code == INTERNAL_ERROR:  # the traceback, for the assertion message
        main(["-v", *argv])
        err = f"{err}\n--- again with -v ---\n{capsys.readouterr().err}"
    return code, out, err


def _problem(result: tuple[int, str, str], allowed: set[int], what: str) -> str | None:
    """What is wrong with a verb's outcome (None when nothing is)."""
    code, out, err = result
    if code not in allowed:
        return f"{what}: exit {code}: {err.strip()}"
    if "Traceback" in err or "Traceback" in out:
        return f"{what}: a traceback: {err.strip()}"
    return None


def _v2_body(feeds: Feeds) -> bytes:
    """A KServe V2 JSON request carrying the feeds, as tritonclient sends it."""
    inputs = []
    for name, value in feeds.items():
        dtype = next(v2 for np_type, v2, _ in DTYPES.values() if value.dtype == np_type)
        inputs.append(
            {
                "name": name,
                "datatype": dtype,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
        )
    return json.dumps({"inputs": inputs}).encode()


def _describe(case: Case) -> str:
    """The inputs as written (dtype and dims), the feed's shapes and the ops, for messages."""
    written = {}
    for v in case.proto.graph.input:
        tensor_type = v.type.tensor_type
        spelled: list[DimSpec] = [
            d.dim_value
            if d.HasField("dim_value")
            else (d.dim_param if d.HasField("dim_param") else None)
            for d in tensor_type.shape.dim
        ]
        written[v.name] = f"{TensorProto.DataType.Name(tensor_type.elem_type)}{spelled}"
    feeds = {k: list(v.shape) for k, v in case.feeds.items()}
    ops = [n.op_type for n in case.proto.graph.node]
    opset = case.proto.opset_import[0].version
    return f"inputs {written}, feeds {feeds}, ops {ops}, opset {opset}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases())
def test_random_models_never_crash_a_verb(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    check_every_verb(capsys, case)


@pytest.mark.parametrize("case", [SCALARS, EVERY_DIM_KIND], ids=["scalars", "every_dim_kind"])
def test_pinned_models_never_crash_a_verb(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    check_every_verb(capsys, case)


def check_every_verb(capsys: pytest.CaptureFixture[str], case: Case) -> None:
    """inspect, compare, bench and test through the CLI, then the server's validation, on one
    model; every problem found is reported together."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(case.proto, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        expected = dict(zip(names, session.run(names, case.feeds), strict=True))
        golden = write_golden(Path(tmp) / "golden", case.feeds, expected)

        inspected = _ferry(capsys, "inspect", path, "--json")
        problems = [_problem(inspected, {0}, "inspect")]
        if inspected[0] == 0:
            signature = json.loads(inspected[1])["result"]["signature"]
            names = [s["name"] for s in signature["inputs"]]
            if names != list(case.feeds):
                problems.append(f"inspect: inputs {names}")
        problems += [
            _problem(_ferry(capsys, *verb), allowed, str(verb[0]))
            for verb, allowed in [
                (("compare", path, path, "--samples", 1), {0}),
                (("bench", path, "--iterations", 2, "--warmup", 1), {0, 1, 2}),
                (("test", path, golden), {0}),
            ]
        ]
        problems.append(_served(path, case.feeds))
        found = [p for p in problems if p is not None]
        assert not found, "\n".join([_describe(case), *found])


def _served(path: Path, feeds: Feeds) -> str | None:
    """What the server would say to a request carrying the feed ONNX Runtime just ran (the
    signature's validation, then the V2 request decoder): it must take it unchanged."""
    try:
        signature = Model.load(path).signature
        signature.validate(feeds)
        request = decode_infer_request(_v2_body(feeds), None, signature)
    except ProtocolError as e:  # a FeedError too: catch it first
        return f"server request decoding: refused the feed ORT ran: {e}"
    except FerryError as e:
        return f"server validation: refused the feed ORT ran: {e}"
    if list(request.inputs) != list(feeds):
        return f"server request decoding: inputs {list(request.inputs)}"
    for name, value in feeds.items():
        got = request.inputs[name]
        if got.dtype != value.dtype or got.shape != value.shape or not np.array_equal(got, value):
            return f"server request decoding: {name} became {got.dtype}{list(got.shape)}"
    return None
