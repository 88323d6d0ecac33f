"""Tiny models written as ONNX text, shared by the tests.

proto = onnx_text('''
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[N, 4] x) => (float[N, 4] y) { y = Relu(x) }
''')
path = save(proto, tmp_path / "m.onnx")
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, parser
from onnx.external_data_helper import set_external_data

from onnxferry.model import Model

Run = Callable[..., tuple[int, str, str]]
"""The ``ferry`` fixture (tests/conftest.py): CLI arguments in, (exit code, stdout, stderr) out."""


def onnx_text(text: str, *, check: bool = True) -> onnx.ModelProto:
    """Parse ONNX text format into a model (and run the checker unless told not to)."""
    proto = parser.parse_model(text)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def save(proto: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def deep_mlp(width: int, hidden: int, out: int, name: str = "mlp") -> onnx.ModelProto:
    """x[N, width] -> MatMul-Relu-MatMul-Relu-MatMul -> y[N, out], seeded weights: compute
    heavy enough per row for pipelines and benchmarks (ferry batch's tests and its benchmark)."""
    rng = np.random.default_rng(0)
    shapes = [(width, hidden), (hidden, hidden), (hidden, out)]
    weights = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", out])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


MISDECLARED = """
<ir_version: 8, opset_import: ["" : 13]>
swapped (float[1, k] x) => (float[1, k] y) {
    s = Shape(x)
    zero = Constant<value = int64[1] {0}>()
    one = Constant<value = int64[1] {1}>()
    rows = Gather(s, zero)
    cols = Gather(s, one)
    t = Concat<axis = 0>(cols, rows)
    y = Reshape(x, t)
}
"""
"""x[1, k] reshaped to [k, 1] by shape arithmetic and declared [1, k]: an output whose declared
shape is wrong (ddddocr's recognizer declares [1, seqlen] and gives [time, 1, classes]), which
shape inference cannot see through: only a run tells."""


RELU = """
<ir_version: 10, opset_import: ["" : 21]>
relu (float[batch, 4] x) => (float[batch, 4] y) { y = Relu(x) }
"""


def mlp(seed: int = 0, hidden: int = 8, classes: int = 3, noise: float = 0.0) -> onnx.ModelProto:
    """x[batch,4] -> MatMul+Add -> Relu -> MatMul+Add -> Softmax -> probs[batch,classes].

    ``noise`` perturbs the second layer's weights, for a model that differs slightly.
    Intermediate tensors are named h1, h2, logits so two variants share names.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, hidden)).astype(np.float32)
    b1 = rng.standard_normal(hidden).astype(np.float32)
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32)
    w2 = (w2 + noise * np.abs(w2)).astype(np.float32)
    b2 = rng.standard_normal(classes).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
        helper.make_node("Relu", ["h1"], ["h2"], name="act"),
        helper.make_node("MatMul", ["h2", "w2"], ["l0"], name="fc2"),
        helper.make_node("Add", ["l0", "b2"], ["logits"], name="fc2_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", onnx.TensorProto.FLOAT, ["batch", classes])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


TENSOR_SITES = """
<ir_version: 10, opset_import: ["" : 21, "local" : 1]>
sites (float[2] x, bool cond, float[3, 2] seq)
    => (float[2] y_main, float[2] y_if, float[2] y_loop, float[2] y_scan, float[2] y_fn)
<float[2] w = {1.0, 2.0}>
{
    c = Constant <value = float[2] const_value {3.0, 4.0}> ()
    wc = Add (w, c)
    xw = Add (x, wc)
    xs = Add (xw, s)
    y_main = Add (xs, cs)
    y_if = If (cond) <
        then_branch = then_g () => (float[2] t) {
            t = Constant <value = float[2] then_value {5.0, 6.0}> ()
        },
        else_branch = else_g () => (float[2] e) { e = Identity (x) }
    >
    trip = Constant <value_int = 2> ()
    y_loop = Loop (trip, cond, x) <
        body = loop_g (int64 i, bool c_in, float[2] acc) => (bool c_out, float[2] acc_out) {
            c_out = Identity (c_in)
            k = Constant <value = float[2] loop_value {1.0, 1.0}> ()
            acc_out = Add (acc, k)
        }
    >
    y_scan, scan_out = Scan (x, seq) <
        num_scan_inputs = 1,
        body = scan_g (float[2] s_in, float[2] xi) => (float[2] s_out, float[2] yi) {
            k = Constant <value = float[2] scan_value {1.0, 2.0}> ()
            s_out = Add (s_in, k)
            yi = Add (xi, s_in)
        }
    >
    y_fn = local.AddK (x)
}
<domain: "local", opset_import: ["" : 21]>
AddK (a) => (b) {
    k = Constant <value = float[2] function_value {7.0, 8.0}> ()
    b = Add (a, k)
}
"""

SITE_TENSORS = {
    "w": "graph initializer",
    "s": "sparse initializer values",
    "s_indices": "sparse initializer indices",
    "const_value": "Constant value attribute",
    "cs_values": "Constant sparse_value attribute",
    "then_value": "If then_branch",
    "loop_value": "Loop body",
    "scan_value": "Scan body",
    "function_value": "model-local function",
    "held": "custom node tensors attribute",
    "held_sparse": "custom node sparse_tensors attribute",
}
"""The named tensors of ``tensor_sites()`` and where each one sits."""


def tensor_sites(*, custom_node: bool = True) -> onnx.ModelProto:
    """A model with a tensor in every place ONNX allows one (see SITE_TENSORS), each with its
    data in raw_data so it can be moved to external data.

    Inputs x float[2], cond bool, seq float[3, 2]. ``custom_node`` adds a node of domain
    "custom" whose ``tensors`` and ``sparse_tensors`` attributes hold "held" and "held_sparse";
    ONNX Runtime cannot run that node.
    """
    proto = onnx_text(TENSOR_SITES, check=False)
    graph = proto.graph
    graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([1.5], np.float32), "s"),
            numpy_helper.from_array(np.array([1], np.int64), "s_indices"),
            [2],
        )
    )
    sparse_value = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([2.5], np.float32), "cs_values"),
        numpy_helper.from_array(np.array([0], np.int64), "cs_indices"),
        [2],
    )
    graph.node.insert(
        0, helper.make_node("Constant", [], ["cs"], name="sparse_const", sparse_value=sparse_value)
    )
    if custom_node:
        proto.opset_import.append(helper.make_opsetid("custom", 1))
        held = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "held")
        held_sparse = helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([3.0], np.float32), "held_sparse"),
            numpy_helper.from_array(np.array([0], np.int64), "held_sparse_indices"),
            [2],
        )
        holder = helper.make_node("Holder", [], ["h"], name="holder", domain="custom")
        holder.attribute.extend(
            [
                helper.make_attribute("payload", [held]),
                helper.make_attribute("sparse_payload", [held_sparse]),
            ]
        )
        graph.node.append(holder)
    for tensor in all_tensors(proto):
        if not tensor.HasField("raw_data"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    onnx.checker.check_model(proto)
    return proto


def all_tensors(message: Any) -> Iterator[onnx.TensorProto]:
    """Every TensorProto inside a protobuf message, found by reflection over its fields."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if field.is_repeated else [value]:
            if isinstance(item, onnx.TensorProto):
                yield item
            else:
                yield from all_tensors(item)


def find_tensor(proto: onnx.ModelProto, name: str) -> onnx.TensorProto:
    """The tensor called ``name`` anywhere in ``proto``."""
    for tensor in all_tensors(proto):
        if tensor.name == name:
            return tensor
    raise KeyError(name)


def save_external(
    proto: onnx.ModelProto,
    path: Path,
    names: Iterable[str] | None = None,
    location: str = "weights.bin",
    *,
    gap: int = 16,
) -> Path:
    """Save a copy of ``proto`` at ``path`` with the data of the named tensors (default: every
    tensor with raw data) written to ``location`` next to it, ``gap`` zero bytes before each."""
    proto_copy = onnx.ModelProto()
    proto_copy.CopyFrom(proto)
    wanted = set(names) if names is not None else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / location, "wb") as f:
        for tensor in all_tensors(proto_copy):
            chosen = wanted is None or tensor.name in wanted
            if not chosen or not tensor.HasField("raw_data"):
                continue
            f.write(b"\0" * gap)
            data = tensor.raw_data
            set_external_data(tensor, location, offset=f.tell(), length=len(data))
            f.write(data)
            tensor.ClearField("raw_data")
    onnx.save(proto_copy, str(path))
    return path


def mlp_with_logits(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The mlp with its pre-softmax logits as a second output."""
    out = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])
    proto.graph.output.append(out)
    return proto


def mlp_feeds(n: int, batch: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, 4)).astype(np.float32)} for _ in range(n)]


# --- optimize: graph and fp16 passes ---------------------------------------------------------


def conv_bn_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv -> BatchNormalization -> Relu -> Flatten -> MatMul+Add -> Relu ->
    y[N,5]: Conv+BN and MatMul+Add+Relu are what graph optimizers fold and fuse."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], positive: bool = False) -> onnx.TensorProto:
        values = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape)
        return numpy_helper.from_array(values.astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b"], ["ad"], name="fc_bias"),
        helper.make_node("Relu", ["ad"], ["y"], name="relu2"),
    ]
    inits = [
        init("cw", (4, 3, 3, 3)),
        init("cb", (4,)),
        init("s", (4,), positive=True),
        init("bb", (4,)),
        init("m", (4,)),
        init("v", (4,), positive=True),
        init("w", (4 * 8 * 8, 5)),
        init("b", (5,)),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn_mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


FOLDABLE = """
<ir_version: 10, opset_import: ["" : 21]>
foldable (float[N, 4] x) => (float[N, 4] y) {
    c1 = Constant <value = float[4] {1.0, 2.0, 3.0, 4.0}> ()
    c2 = Constant <value = float[4] {0.5, 0.25, 0.125, 2.0}> ()
    s = Mul (c1, c2)
    e = Exp (s)
    y = Add (x, e)
    dead = Relu (x)
    dead_too = Mul (dead, c1)
}
"""
"""Five nodes that are constant (c1, c2, s, e) or dead (dead, dead_too) around one live Add."""


def scaled(*factors: float, names: bool = True) -> onnx.ModelProto:
    """y = x * factors[0] * factors[1] * ...: a chain of Mul nodes mul0, mul1, ... (unnamed if
    not ``names``) with initializers k0, k1, ... and intermediates t0, t1, ..."""
    outputs = [f"t{i}" for i in range(len(factors) - 1)] + ["y"]
    inputs = ["x", *outputs[:-1]]
    nodes = [
        helper.make_node("Mul", [inp, f"k{i}"], [out], name=f"mul{i}" if names else "")
        for i, (inp, out) in enumerate(zip(inputs, outputs, strict=True))
    ]
    inits = [
        numpy_helper.from_array(np.array([k], np.float32), f"k{i}") for i, k in enumerate(factors)
    ]
    graph = helper.make_graph(
        nodes,
        "scaled",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float = 60) -> None:
    """Poll a ``ferry serve`` process's ``/v2/health/ready`` on ``port`` until it answers 200;
    fail with its stderr if it exits first, or after ``limit`` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert process.poll() is None, process.communicate()[1].decode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


def convert_with_dynamo(module: Any, path: Path, example: tuple[Any, ...]) -> Model:
    """ferry's convert (verified) of a torch module with the dynamo exporter only: convert keeps
    the fastest exporter that passes, and tests that name nodes (``node_conv2d``) need the
    dynamo exporter's names whichever is faster on the day."""
    from onnxferry.convert import convert
    from onnxferry.convert.dispatch import load_source, options_for
    from onnxferry.convert.torch.export import DYNAMO

    source = load_source(module, options_for(), framework="torch", example_inputs=example)
    source.candidates = [c for c in source.candidates if c.exporter == DYNAMO]
    return convert(source, path)


STREAM = """
<ir_version: 9, opset_import: ["" : 18]>
stream (float[steps, 4] x, float[1, 4] state) => (float[steps] y) {
    zero = Constant <value = int64 {0}> ()
    one = Constant <value = int64[1] {1}> ()
    running = CumSum(x, zero)
    carried = Add(running, state)
    y = ReduceSum <keepdims = 0> (carried, one)
}
"""
"""Rows as the steps of one stream: each step's score carries every step before it and a
state given whole for the call (faster-whisper's Silero VAD does so with its LSTM)."""


def gru_with_one_state() -> onnx.ModelProto:
    """x[batch, 5, 3] -> GRU (hidden 2) from a state ``h0: [1, 1, 2]`` -> its last state
    [batch, 2]: the batch axis is open, but the state holds one row, so ONNX Runtime refuses
    two rows at once (Microsoft's AECMOS models, exported by PyTorch 1.9, are built so)."""
    rng = np.random.default_rng(8)
    weights = {"w": (1, 6, 3), "r": (1, 6, 2)}
    nodes = [
        helper.make_node("Transpose", ["x"], ["steps"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["steps", "w", "r", "", "", "h0"], ["", "last"], hidden_size=2),
        helper.make_node("Squeeze", ["last", "zero"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero")]
    inits += [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in weights.items()
    ]
    graph = helper.make_graph(
        nodes,
        "gru",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 3]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def graph_network(declared: bool = True) -> onnx.ModelProto:
    """h = x @ W; out[dst] += h[src] for each edge (src, dst) = edge_index[:, e]: the sum of
    a node's neighbours, as GCN without its normalization. ``declared``: with the shapes of
    every tensor in ``value_info`` (as the dynamo exporter writes them), else none (as the
    TorchScript exporter), for ONNX's shape inference to find."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4), np.float32), "w")
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis1")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Gather", ["edge_index", "zero"], ["src"], axis=0),
        helper.make_node("Gather", ["edge_index", "one"], ["dst"], axis=0),
        helper.make_node("Gather", ["h", "src"], ["messages"], axis=0),
        helper.make_node("Unsqueeze", ["dst", "axis1"], ["dst_column"]),
        helper.make_node("Shape", ["messages"], ["message_shape"]),
        helper.make_node("Expand", ["dst_column", "message_shape"], ["targets"]),
        helper.make_node("Mul", ["h", "zero_f"], ["empty"]),
        helper.make_node(
            "ScatterElements", ["empty", "targets", "messages"], ["out"], axis=0, reduction="add"
        ),
    ]
    zero_f = numpy_helper.from_array(np.array(0, np.float32), "zero_f")
    graph = helper.make_graph(
        nodes,
        "gnn",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["nodes", 8]),
            helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "edges"]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["nodes", 4])],
        [w, zero, one, axis, zero_f],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model) if declared else model


def qdq_model() -> onnx.ModelProto:
    """x[N, 4] -> QuantizeLinear (uint8) -> DequantizeLinear -> MatMul with an int8 weight
    dequantized per output channel (axis 1) -> y[N, 3]: a statically quantized (QDQ) layer,
    as ONNX Runtime's quantizer writes one."""
    rng = np.random.default_rng(13)
    weight = rng.integers(-127, 128, (4, 3)).astype(np.int8)
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["w"], axis=1),
            helper.make_node("MatMul", ["xd", "w"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
            numpy_helper.from_array(weight, "wq"),
            numpy_helper.from_array(np.array([0.01, 0.02, 0.03], np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros(3, np.int8), "w_zero"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def table_model() -> onnx.ModelProto:
    """age float[N, 1], city string[N, 1] (a LabelEncoder), n int64[N, 1], member bool[N]:
    y = [age, city's code, n, member] per row."""
    nodes = [
        helper.make_node(
            "LabelEncoder",
            ["city"],
            ["code"],
            domain="ai.onnx.ml",
            keys_strings=["Lyon", "Oslo"],
            values_floats=[0.0, 1.0],
        ),
        helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["member"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "one"], ["m2"]),
        helper.make_node("Concat", ["age", "code", "nf", "m2"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "table",
        [
            helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("city", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("member", TensorProto.BOOL, ["N"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("one", TensorProto.INT64, [1], [1])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def recurrent(
    dims: tuple[str, str] = ("seq_len", "batch_size"), batch_first: bool = False
) -> onnx.ModelProto:
    """x[dims[0], dims[1], 4] -> LSTM (hidden 3, layout 0) -> y[..., 3], as PyTorch's LSTM
    exports: time-major (``x[seq_len, batch_size, 4]``), or with ``batch_first`` a Transpose
    from ``x[batch, seq, 4]`` to the time-major layout the operator reads, and back."""
    rng = np.random.default_rng(0)
    swap = [1, 0, 2]
    into, out = ("x_time", "y_time") if batch_first else ("x", "y")
    nodes = [
        helper.make_node("LSTM", [into, "W", "R"], ["h"], hidden_size=3),  # h[seq, 1, batch, 3]
        helper.make_node("Squeeze", ["h", "axis_1"], [out]),
    ]
    if batch_first:
        nodes.insert(0, helper.make_node("Transpose", ["x"], ["x_time"], perm=swap))
        nodes.append(helper.make_node("Transpose", ["y_time"], ["y"], perm=swap))
    graph = helper.make_graph(
        nodes,
        "recurrent",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*dims, 3])],
        [
            numpy_helper.from_array(rng.standard_normal((1, 12, 4)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal((1, 12, 3)).astype(np.float32), "R"),
            numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def sparse_weights_model(
    *, coordinates: bool = False, x_width: int = 16
) -> tuple[onnx.ModelProto, np.ndarray]:
    """y = x @ W + b with W[16, 8] (80 % zeros) kept as a ``sparse_initializer``, its
    positions linear (``[NNZ]``) or ``coordinates`` (``[NNZ, 2]``); and W dense. ``x_width``
    other than 16 makes a model whose shapes do not fit."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    at = np.flatnonzero(w)
    index = np.stack(np.unravel_index(at, w.shape), axis=1) if coordinates else at
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(w.reshape(-1)[at], "w"),
        numpy_helper.from_array(index.astype(np.int64), "w_index"),
        list(w.shape),
    )
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "sparse_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", x_width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [b],
        sparse_initializer=[sparse],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return proto, w
