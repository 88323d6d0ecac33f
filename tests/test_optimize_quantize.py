"""int8_dynamic and int8_static (ONNX Runtime's quantizer), calibration data, sensitivity
ranking: every pass test ends in a parity check against the float model on batch 1 and 4."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.data import save_npz, save_test_case
from onnxferry.errors import DataError, UsageError
from onnxferry.model import Model
from onnxferry.optimize import PassContext, PassError, make_pass, sensitivity
from onnxferry.optimize.calibration import (
    FeedsReader,
    calibration_feeds,
    checked_calibration,
    load_calibration,
)
from onnxferry.optimize.quantize import DynamicInt8, StaticInt8
from onnxferry.optimize.sensitivity import (
    NodeSensitivity,
    exclude_until,
    rank_dynamic_sensitivity,
    rank_sensitivity,
)
from onnxferry.parity import compare_outputs
from onnxferry.runtime import OrtRunner
from tests.helpers import save, save_external

Feeds = dict[str, np.ndarray]

# --- models ---------------------------------------------------------------------------------


def _dense(layers: list[tuple[np.ndarray, np.ndarray]], name: str, width: int) -> onnx.ModelProto:
    """x[batch, width] -> (MatMul fcK + Add fcK_bias + Relu actK)... -> y, no Relu at the end."""
    nodes, inits, prev = [], [], "x"
    for k, (w, b) in enumerate(layers, 1):
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        nodes.append(helper.make_node("MatMul", [prev, f"w{k}"], [f"m{k}"], name=f"fc{k}"))
        last = k == len(layers)
        out = "y" if last else f"a{k}"
        nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [out], name=f"fc{k}_bias"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{k}"], name=f"act{k}"))
            prev = f"h{k}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", layers[-1][1].size])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def outlier_mlp(seed: int = 0) -> onnx.ModelProto:
    """16 -> 32 -> 8; three weights of the first layer are outliers (8.0 among ~0.3)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 32)) * 0.3).astype(np.float32)
    w1[rng.integers(0, 16, 3), rng.integers(0, 32, 3)] = 8.0
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((32, 8)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    return _dense([(w1, b1), (w2, b2)], "outlier_mlp", 16)


def sensitive_mlp(seed: int = 0) -> onnx.ModelProto:
    """8 -> 16 -> 16 -> 4 where fc2's input has a huge dynamic range: channel 3 of the first
    layer carries a bias of 300 that fc2 ignores (its row of w2 is zero), so a per-tensor
    activation scale for fc2's input rounds every other channel away."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 16)) * 0.5).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    b1[3] = 300.0
    w2 = (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)
    w2[3, :] = 0.0
    b2 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w3 = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    b3 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    return _dense([(w1, b1), (w2, b2), (w3, b3)], "sensitive_mlp", 8)


def masked_attention(seed: int = 0) -> onnx.ModelProto:
    """x[batch, 8] -> scores = x @ wq, masked with -inf where x < -1 -> Softmax -> @ wv -> y:
    the masked scores reach -inf, a range int8 cannot represent. Nodes are named after their
    outputs."""
    rng = np.random.default_rng(seed)
    constants = {
        "wq": rng.standard_normal((8, 8)).astype(np.float32),
        "wv": rng.standard_normal((8, 4)).astype(np.float32),
        "limit": np.array(-1.0, np.float32),
        "zero": np.array(0.0, np.float32),
        "neg_inf": np.array(-np.inf, np.float32),
    }
    steps = [
        ("MatMul", ["x", "wq"], "scores"),
        ("Less", ["x", "limit"], "masked_out"),
        ("Where", ["masked_out", "neg_inf", "zero"], "mask"),
        ("Add", ["scores", "mask"], "logits"),
        ("Softmax", ["logits"], "probs"),  # axis -1 by default (opset 13+)
        ("MatMul", ["probs", "wv"], "y"),
    ]
    graph = helper.make_graph(
        [helper.make_node(op, ins, [out], name=out) for op, ins, out in steps],
        "masked_attention",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(proto, full_check=True)
    return proto


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Conv2d+BatchNorm+ReLU, Conv2d+ReLU, global mean, Linear, exported by torch (TorchScript)."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 5)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.bn(self.c1(x)))
            x = torch.relu(self.c2(x))
            return self.fc(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.randn(2, 3, 16, 16),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )
    return path


# --- helpers --------------------------------------------------------------------------------


def feeds_for(model: Model, n: int = 4, seed: int = 1) -> list[Feeds]:
    """``n`` feed sets at batch 1 and ``n`` at batch 4."""
    rng = np.random.default_rng(seed)
    spec = model.signature.inputs[0]
    rest = [d for d in (spec.shape or ())[1:] if isinstance(d, int)]
    return [
        {spec.name: rng.standard_normal((batch, *rest)).astype(np.float32)}
        for batch in (1, 4)
        for _ in range(n)
    ]


def context(tmp_path: Path, feeds: list[Feeds], calibration: list[Feeds] | None = None) -> Any:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return PassContext(workdir, feeds, calibration)


def cosine_min(reference: Model, candidate: Model, feeds: list[Feeds]) -> float:
    """The worst per-sample cosine over every output (feeds hold batch 1 and batch 4)."""
    assert {f["x"].shape[0] for f in feeds} == {1, 4}
    ref, cand = OrtRunner(reference), OrtRunner(candidate)
    parity = compare_outputs([ref.run(f) for f in feeds], [cand.run(f) for f in feeds])
    values = [o.cosine_min for o in parity.outputs]
    assert all(v is not None for v in values), parity.summary()
    return min(v for v in values if v is not None)


def int8_weight_types(model: Model) -> set[int]:
    """8-bit element types of the quantized weights (ORT names them ``<weight>_quantized``;
    biases, quantized to int32, are left out)."""
    initializers = model.proto.graph.initializer
    return {t.data_type for t in initializers if t.name.endswith("_quantized")} - {INT32}


def zero_point_type(model: Model, tensor: str) -> int:
    return next(int(t.data_type) for t in model.proto.graph.initializer if t.name == tensor)


@pytest.fixture
def untouched(tmp_path: Path) -> Iterator[list[Model]]:
    """Models appended here must be byte for byte the same, on disk and in memory, at the end."""
    models: list[Model] = []
    yield models
    for model in models:
        assert model.path is not None
        assert Model.load(model.path).digest == model.digest
        assert model.proto.SerializeToString() == Model.load(model.path).proto.SerializeToString()


INT8, UINT8, INT32 = onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32

# --- int8_dynamic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "weight_type"),
    [
        ({}, INT8),
        # per-channel int8 weights at full 8 bits can saturate the U8S8 kernels of x86 CPUs
        # without VNNI (VPMADDUBSW); 7-bit weights (reduce_range) are ORT's advice there
        ({"per_channel": True, "reduce_range": True}, INT8),
        ({"weight_type": "uint8"}, UINT8),
        ({"per_channel": True, "weight_type": "uint8"}, UINT8),
    ],
)
def test_int8_dynamic_mlp(
    tmp_path: Path, untouched: list[Model], params: dict[str, Any], weight_type: int
) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    untouched.append(model)
    feeds = feeds_for(model)
    result = make_pass("int8_dynamic", params).apply(model, context(tmp_path, feeds))
    assert result.changed
    assert result.model.path is not None
    assert result.model.path.is_relative_to(tmp_path / "work")
    assert int8_weight_types(result.model) == {weight_type}
    assert result.details["int8_weights"] == 2
    assert result.model.ops_histogram["MatMulInteger"] == 2
    assert any("quant_pre_process" in n and "leave Gemm unquantized" in n for n in result.notes)
    assert cosine_min(model, result.model, feeds) > 0.98


def test_int8_dynamic_per_channel_has_one_scale_per_column(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    feeds = feeds_for(model)
    ctx = context(tmp_path, feeds)
    tensor = DynamicInt8().apply(model, ctx).model
    channel = DynamicInt8(per_channel=True, reduce_range=True).apply(model, ctx).model

    def scale_dims(m: Model) -> list[int]:
        return next(list(t.dims) for t in m.proto.graph.initializer if t.name == "w1_scale")

    assert scale_dims(tensor) == []
    assert scale_dims(channel) == [32]
    assert cosine_min(model, channel, feeds) > 0.98


def test_int8_dynamic_cnn(cnn_path: Path, tmp_path: Path, untouched: list[Model]) -> None:
    model = Model.load(cnn_path)
    untouched.append(model)
    feeds = feeds_for(model)
    result = DynamicInt8().apply(model, context(tmp_path, feeds))
    assert result.model.ops_histogram["ConvInteger"] == 2
    assert int8_weight_types(result.model) == {INT8}
    assert cosine_min(model, result.model, feeds) > 0.98


def test_int8_dynamic_nodes_to_exclude_and_op_types(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    feeds = feeds_for(model)
    ctx = context(tmp_path, feeds)
    result = DynamicInt8(nodes_to_exclude=("fc2",)).apply(model, ctx)
    assert result.details["int8_weights"] == 1
    assert {t.name for t in result.model.proto.graph.initializer} >= {"w2", "w1_quantized"}
    assert cosine_min(model, result.model, feeds) > 0.98
    nothing = DynamicInt8(op_types=("Conv",)).apply(model, ctx)
    assert not nothing.changed
    assert nothing.model is model
    assert any("no node was quantized" in n for n in nothing.notes)


def test_unknown_node_to_exclude_is_a_usage_error(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    with pytest.raises(UsageError, match="'nope', which is not a node") as info:
        DynamicInt8(nodes_to_exclude=("nope",)).apply(model, context(tmp_path, feeds_for(model)))
    assert info.value.exit_code == 2


def test_int8_dynamic_external_data_and_in_memory(tmp_path: Path) -> None:
    proto = outlier_mlp()
    external = Model.load(save_external(proto, tmp_path / "ext" / "model.onnx"))
    assert external.external_files
    feeds = feeds_for(external)
    ctx = context(tmp_path, feeds)
    result = DynamicInt8().apply(external, ctx)
    assert int8_weight_types(result.model) == {INT8}
    assert cosine_min(external, result.model, feeds) > 0.98
    static = StaticInt8().apply(external, ctx)
    assert cosine_min(external, static.model, feeds) > 0.98
    in_memory = DynamicInt8(preprocess=False).apply(Model.from_proto(proto), ctx)
    assert not any("quant_pre_process" in n for n in in_memory.notes)
    assert cosine_min(external, in_memory.model, feeds) > 0.98


def test_already_quantized_model_is_refused(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    ctx = context(tmp_path, feeds_for(model))
    quantized = DynamicInt8().apply(model, ctx).model
    with pytest.raises(PassError, match="int8_static: the model is already quantized"):
        StaticInt8().apply(quantized, ctx)


# --- int8_static ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"per_channel": True},
        {"method": "entropy"},
        {"method": "percentile"},
        {"method": "entropy", "per_channel": True},
        {"activation_type": "int8"},
    ],
)
def test_int8_static_cnn(
    cnn_path: Path, tmp_path: Path, untouched: list[Model], params: dict[str, Any]
) -> None:
    model = Model.load(cnn_path)
    untouched.append(model)
    feeds = feeds_for(model)  # batch 1 and 4: the histogram methods calibrate run by run
    result = make_pass("int8_static", params).apply(model, context(tmp_path, feeds))
    ops = result.model.ops_histogram
    assert ops["QuantizeLinear"] > 0
    assert ops["DequantizeLinear"] > 0
    assert "BatchNormalization" not in ops  # folded into the Conv by quant_pre_process
    assert int8_weight_types(result.model) == {INT8}  # biases are int32
    activation = INT8 if params.get("activation_type") == "int8" else UINT8
    assert zero_point_type(result.model, "x_zero_point") == activation
    assert result.details["calibration_samples"] == len(feeds)
    assert result.details["excluded_nodes"] == []
    assert cosine_min(model, result.model, feeds) > 0.98


def test_int8_static_mlp_and_calibration_cap(tmp_path: Path, untouched: list[Model]) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    untouched.append(model)
    feeds = feeds_for(model)
    rng = np.random.default_rng(7)
    calibration = [{"x": rng.standard_normal((32, 16), np.float32)} for _ in range(10)]
    result = StaticInt8(calibration_samples=5).apply(model, context(tmp_path, feeds, calibration))
    assert result.details["calibration_samples"] == 5
    assert result.model.ops_histogram["Gemm"] == 2  # MatMul+Add fused before quantizing
    assert cosine_min(model, result.model, feeds) > 0.98


@pytest.mark.parametrize("count", [16, 17, 33])
def test_every_calibration_sample_sets_the_ranges(tmp_path: Path, count: int) -> None:
    """The widest sample comes first: its range must survive however many follow."""
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    rng = np.random.default_rng(3)
    calibration = [{"x": rng.uniform(-1, 1, (4, 16)).astype(np.float32)} for _ in range(count)]
    calibration[0]["x"][0, 0] = 50.0
    result = StaticInt8(calibration_samples=count).apply(
        model, context(tmp_path, feeds_for(model), calibration)
    )
    scale = next(
        float(numpy_helper.to_array(t))
        for t in result.model.proto.graph.initializer
        if t.name == "x_scale"
    )
    assert scale * 255 >= 50.0  # uint8 activations: (max - min) / 255


def test_int8_static_rejects_int8_activations_with_uint8_weights() -> None:
    with pytest.raises(UsageError, match="int8 activations with uint8 weights") as info:
        make_pass("int8_static", {"activation_type": "int8", "weight_type": "uint8"})
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="calibration_samples must be at least 1"):
        StaticInt8(calibration_samples=0)


def test_nodes_to_exclude_runs_the_node_in_float(tmp_path: Path) -> None:
    """ORT's nodes_to_exclude alone keeps the Q/DQ pair on the node's input; the pass rewires
    the node to the float tensor (re-applying the Relu the quantizer folded away)."""
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    feeds = feeds_for(model)
    result = StaticInt8(nodes_to_exclude=("fc2",)).apply(model, context(tmp_path, feeds))
    assert result.details["excluded_nodes"] == ["fc2/MatMulAddFusion"]
    graph = result.model.proto.graph
    producer = {out: n for n in graph.node for out in n.output}
    fc2 = next(n for n in graph.node if n.name == "fc2/MatMulAddFusion")
    assert [producer[i].op_type for i in fc2.input if i in producer] == ["Relu"]
    assert "w2" in {t.name for t in graph.initializer}
    assert cosine_min(model, result.model, feeds) > 0.999


# --- calibration data -----------------------------------------------------------------------


def test_calibration_from_npz_stacked_and_single(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    rng = np.random.default_rng(3)
    stacked = save_npz(tmp_path / "stacked.npz", {"x": rng.standard_normal((6, 2, 16), np.float32)})
    single = save_npz(tmp_path / "single.npz", {"x": rng.standard_normal((5, 16), np.float32)})
    sets = load_calibration(stacked, model.signature)
    assert [f["x"].shape for f in sets] == [(2, 16)] * 6
    assert [f["x"].shape for f in load_calibration(single, model.signature)] == [(5, 16)]
    np.save(tmp_path / "stacked.npy", rng.standard_normal((3, 4, 16), np.float32))
    npy = load_calibration(tmp_path / "stacked.npy", model.signature)
    assert [f["x"].shape for f in npy] == [(4, 16)] * 3
    feeds = feeds_for(model)
    result = StaticInt8().apply(model, context(tmp_path, feeds, sets))
    assert result.details["calibration_samples"] == 6
    assert cosine_min(model, result.model, feeds) > 0.98


def test_calibration_from_directories(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    rng = np.random.default_rng(4)
    for i in range(3):
        save_npz(tmp_path / "npz" / f"s{i}.npz", {"x": rng.standard_normal((32, 16), np.float32)})
        x = rng.standard_normal((1, 16), np.float32)
        save_test_case(tmp_path / "pb" / f"test_data_set_{i}", {"x": x}, {})
    npz = load_calibration(tmp_path / "npz", model.signature)
    pb = load_calibration(tmp_path / "pb", model.signature)
    assert (len(npz), len(pb)) == (3, 3)
    feeds = feeds_for(model)
    result = StaticInt8(method="percentile").apply(model, context(tmp_path, feeds, npz + pb))
    assert result.details["calibration_samples"] == 6
    assert cosine_min(model, result.model, feeds) > 0.98


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"input": np.zeros((3, 2, 16), np.float32)}, r"holds \['input'\], not an input"),
        ({"x": np.zeros((3, 2, 15), np.float32)}, r"sample 0: input 'x' expects shape"),
        ({"x": np.zeros((3, 2, 16), np.float64)}, r"sample 0: input 'x' expects dtype float32"),
    ],
)
def test_mismatching_calibration_is_one_line_exit_2(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    path = save_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataError, match=message) as info:
        load_calibration(path, model.signature)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_mismatching_calibration_feeds_fail_the_pass(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    wrong = [{"x": np.zeros((2, 4), np.float32)}]
    with pytest.raises(DataError, match=r"calibration sample 0: input 'x' expects shape") as info:
        StaticInt8().apply(model, context(tmp_path, feeds_for(model), wrong))
    assert info.value.exit_code == 2


def test_empty_calibration_set_is_exit_2(tmp_path: Path) -> None:
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    with pytest.raises(UsageError, match="calibration set is empty") as info:
        StaticInt8().apply(model, context(tmp_path, feeds_for(model), []))
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="calibration set is empty"):
        StaticInt8().apply(model, context(tmp_path, []))
    with pytest.raises(UsageError, match="calibration set is empty"):
        FeedsReader([])


def test_calibration_from_a_user_reader(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader

    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))

    class Reader:
        def __init__(self) -> None:
            self.items = iter(feeds_for(model, n=3, seed=9))

        def get_next(self) -> Feeds | None:
            return next(self.items, None)

    assert len(calibration_feeds(Reader(), model.signature)) == 6
    assert len(calibration_feeds(Reader(), model.signature, limit=2)) == 2
    assert len(calibration_feeds(feeds_for(model), model.signature)) == 8
    reader = FeedsReader(feeds_for(model), model.signature, limit=3)
    assert isinstance(reader, CalibrationDataReader)
    assert len(reader) == 3
    assert len(list(reader)) == 3
    reader.set_range(1, 3)
    assert [f["x"].shape for f in reader] == [(1, 16), (1, 16)]
    reader.rewind()
    assert reader.get_next() is not None

    class Bad:
        def get_next(self) -> object:
            return [1, 2]

    with pytest.raises(DataError, match="not a dict of arrays"):
        calibration_feeds(Bad(), model.signature)
    with pytest.raises(UsageError, match="limit must be at least 1"):
        checked_calibration(feeds_for(model), model.signature, limit=0)


def test_tensors_reaching_inf_stay_unquantized(tmp_path: Path) -> None:
    """ORT would quantize the -inf masked scores with an infinite scale (NaN downstream); the
    nodes around them stay in float, and the histogram methods fail with a hint."""
    model = Model.load(save(masked_attention(), tmp_path / "att.onnx"))
    feeds = feeds_for(model)
    ctx = context(tmp_path, feeds)
    result = StaticInt8().apply(model, ctx)
    fused = "scores/MatMulAddFusion"  # quant_pre_process fused MatMul and the mask's Add
    assert result.details["unbounded_nodes"] == ["mask", fused, "probs"]
    assert result.details["excluded_nodes"] == ["mask", fused, "probs"]
    assert any("reach +-inf or NaN" in n for n in result.notes)
    assert result.model.ops_histogram["QuantizeLinear"] > 0
    assert cosine_min(model, result.model, feeds) > 0.98
    with pytest.raises(PassError, match="method='minmax' handles them"):
        StaticInt8(method="entropy").apply(model, ctx)


def test_a_node_turned_nan_by_int8_ranks_first(tmp_path: Path) -> None:
    from onnxruntime.quantization import quantize_static

    model = Model.load(save(masked_attention(), tmp_path / "att.onnx"))
    feeds = feeds_for(model)
    with np.errstate(all="ignore"):
        quantize_static(str(model.path), str(tmp_path / "q.onnx"), FeedsReader(feeds))
    broken = Model.load(tmp_path / "q.onnx")
    ranking = rank_sensitivity(model, broken, feeds)
    assert ranking[0].error == float("inf")
    assert ranking[0].node in {"logits", "probs"}


# --- sensitivity ----------------------------------------------------------------------------


def test_rank_sensitivity_puts_the_outlier_layer_first(tmp_path: Path) -> None:
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    feeds = feeds_for(model)
    plan = StaticInt8().plan(model, context(tmp_path, feeds))
    quantized = plan.build()
    ranking = rank_sensitivity(plan.source, quantized, feeds)
    assert [r.node for r in ranking] == [
        "fc2/MatMulAddFusion",
        "fc3/MatMulAddFusion",
        "fc1/MatMulAddFusion",
    ]
    first, rest = ranking[0], ranking[1:]
    assert first.op_type == "Gemm"
    assert first.error > 0.01
    assert first.error > 100 * max(r.error for r in rest)
    assert first.cosine < 0.99
    assert first.weights == 16 * 16 + 16
    # upstream errors pile up downstream: fc3's accumulated error is large, its own is not
    fc3 = ranking[1]
    assert fc3.accumulated is not None
    assert fc3.accumulated > 100 * fc3.error
    assert first.to_dict()["node"] == "fc2/MatMulAddFusion"
    per_weight = rank_sensitivity(plan.source, quantized, feeds, by="error_per_weight")
    assert per_weight[0].node == "fc2/MatMulAddFusion"
    # a dynamic int8 model has no Q/DQ pairs to measure
    dynamic = DynamicInt8().apply(model, context(tmp_path, feeds)).model
    assert rank_sensitivity(model, dynamic, feeds) == []


def test_exclude_until_keeps_the_sensitive_layer_in_float(tmp_path: Path) -> None:
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    feeds = feeds_for(model)
    plan = StaticInt8().plan(model, context(tmp_path, feeds))
    quantized = plan.build()

    def judge(candidate: Model) -> bool:
        return cosine_min(model, candidate, feeds) >= 0.99

    assert not judge(quantized)
    ranking = rank_sensitivity(plan.source, quantized, feeds)
    builds: list[list[str]] = []

    def build(excluded: list[str]) -> Model:
        builds.append(list(excluded))
        return plan.build(excluded)

    kept, excluded = exclude_until(plan.source, build, judge, ranking, max_excluded=2)
    assert excluded == ["fc2/MatMulAddFusion"]
    assert builds == [["fc2/MatMulAddFusion"]]
    assert judge(kept)
    assert int8_weight_types(kept) == {INT8}  # fc1 and fc3 stay int8
    with pytest.raises(PassError, match="still out of budget with the 2 most sensitive"):
        exclude_until(plan.source, plan.build, lambda m: False, ranking, max_excluded=2)
    with pytest.raises(PassError, match="no quantized node"):
        exclude_until(plan.source, plan.build, judge, [], max_excluded=2)


@pytest.mark.parametrize("step", [DynamicInt8, StaticInt8], ids=["dynamic", "static"])
def test_trials_staging_their_own_copy_share_one_ranking(tmp_path: Path, step: Any) -> None:
    """An Optuna study applies the same quantizer in many trials, each in its own directory:
    the ranking, a function of the bytes, the feeds and the options, is computed once."""
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    feeds = feeds_for(model)
    sensitivity._rankings.clear()  # an earlier test may have ranked this very model
    before = sensitivity._rankings.computed
    kept = [
        step(exclude_sensitive=count).apply(model, PassContext(tmp_path / f"trial{i}", feeds))
        for i, count in enumerate((1, 2, 1))
    ]
    assert sensitivity._rankings.computed == before + 1
    first = "fc2" if step is DynamicInt8 else "fc2/MatMulAddFusion"
    names = [r.details["sensitive_nodes"] for r in kept]
    assert names[0] == names[2] == [first] and names[1][0] == first and len(names[1]) == 2
    other_feeds = feeds_for(model, seed=2)
    step(exclude_sensitive=1).apply(model, PassContext(tmp_path / "other", other_feeds))
    assert sensitivity._rankings.computed == before + 2  # other feeds: ranked again


def test_rank_dynamic_sensitivity_ranks_the_wide_range_input_first(tmp_path: Path) -> None:
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    ranking = rank_dynamic_sensitivity(model, feeds_for(model), by="error")
    assert ranking[0].node == "fc2"  # its input spans [0, 300]
    assert {r.node for r in ranking} == {"fc1", "fc2", "fc3"}
    assert all(r.op_type == "MatMul" for r in ranking)
    assert ranking[0].weights == 16 * 16
    assert ranking[0].error > 100 * max(r.error for r in ranking[1:])


@pytest.mark.parametrize(("per_channel", "reduce_range"), [(False, False), (True, True)])
def test_rank_dynamic_sensitivity_matches_ort_on_a_single_matmul(
    tmp_path: Path, per_channel: bool, reduce_range: bool
) -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 32)).astype(np.float32) * np.linspace(0.1, 3, 32, dtype=np.float32)
    proto = _dense([(w, np.zeros(32, np.float32))], "one", 64)
    model = Model.load(save(proto, tmp_path / "one.onnx"))
    feeds = [{"x": (rng.standard_normal((4, 64)) * 3 + 1).astype(np.float32)} for _ in range(8)]
    (ranked,) = rank_dynamic_sensitivity(
        model, feeds, per_channel=per_channel, reduce_range=reduce_range
    )
    pass_ = DynamicInt8(per_channel=per_channel, reduce_range=reduce_range, preprocess=False)
    ort_int8 = OrtRunner(pass_.apply(model, context(tmp_path, feeds)).model)
    fp32 = OrtRunner(model)
    sse = sum(float(np.sum((ort_int8.run(f)["y"] - fp32.run(f)["y"]) ** 2)) for f in feeds)
    ssr = sum(float(np.sum(fp32.run(f)["y"] ** 2)) for f in feeds)
    assert ranked.error == pytest.approx(sse / ssr, rel=0.25)


def test_rank_dynamic_sensitivity_covers_gemm_and_gather(tmp_path: Path) -> None:
    """ids -> Gather(table) -> Gemm(transB) -> y: both ranked, the Gemm simulated as ORT runs it."""
    rng = np.random.default_rng(2)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    table[7, 3] = 40.0  # one outlier: per-tensor int8 rounds the rest of the table coarsely
    w = rng.standard_normal((8, 16)).astype(np.float32)  # [N, K] with transB
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
            helper.make_node("Gemm", ["e", "w"], ["y"], name="proj", transB=1),
        ],
        "gg",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = Model.load(save(proto, tmp_path / "gg.onnx"))
    feeds = [{"ids": rng.integers(0, 50, 6)} for _ in range(4)]
    ranking = {r.node: r for r in rank_dynamic_sensitivity(model, feeds)}
    assert set(ranking) == {"embed", "proj"}
    assert ranking["embed"].op_type == "Gather" and ranking["embed"].weights == table.size
    assert ranking["proj"].op_type == "Gemm" and ranking["proj"].weights == w.size
    assert ranking["embed"].error > 1e-4  # the outlier costs the other rows precision


def test_int8_dynamic_excludes_gemm_nodes_too(tmp_path: Path) -> None:
    """ORT rewrites a Gemm to "<name>_MatMul" + Add before reading nodes_to_exclude."""
    rng = np.random.default_rng(4)
    w1, w2 = (rng.standard_normal((16, 16)).astype(np.float32) for _ in range(2))
    b = np.zeros(16, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b"], ["h"], name="g1"),
            helper.make_node("Gemm", ["h", "w2", "b"], ["y"], name="g2"),
        ],
        "gemms",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b, "b"))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    model = Model.load(save(proto, tmp_path / "gemms.onnx"))
    feeds = feeds_for(model)
    one = DynamicInt8(exclude_sensitive=1).apply(model, context(tmp_path, feeds))
    assert one.model.ops_histogram["MatMulInteger"] == 1
    both = DynamicInt8(nodes_to_exclude=("g1", "g2")).apply(model, context(tmp_path, feeds))
    assert not both.changed and "MatMulInteger" not in both.model.ops_histogram


def test_int8_dynamic_exclude_sensitive_keeps_the_worst_matmul_in_float(tmp_path: Path) -> None:
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    feeds = feeds_for(model)
    plain = DynamicInt8().apply(model, context(tmp_path, feeds))
    kept = DynamicInt8(exclude_sensitive=1).apply(model, context(tmp_path, feeds))
    assert kept.details["sensitive_nodes"] == ["fc2"]
    assert kept.details["excluded_nodes"] == ["fc2"]
    assert any("kept the 1 MatMul(s)" in n and "fc2" in n for n in kept.notes)
    assert {n.name for n in kept.model.proto.graph.node if n.op_type == "MatMul"} == {"fc2"}
    kept_loss = 1 - cosine_min(model, kept.model, feeds)
    plain_loss = 1 - cosine_min(model, plain.model, feeds)
    assert kept_loss < plain_loss / 2, (kept_loss, plain_loss)
    with pytest.raises(UsageError, match="exclude_sensitive"):
        DynamicInt8(exclude_sensitive=-1)


def test_exclude_until_doubles_then_bisects() -> None:
    """Past 8 candidates k doubles (1, 2, 4, 8) and then bisects back to the smallest k."""
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i in range(20)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("t20", onnx.TensorProto.FLOAT, [2])],
    )
    fp32 = Model.from_proto(helper.make_model(graph))
    ranking = [NodeSensitivity(f"n{i}", "Relu", 1.0 / (i + 1), 0.9, None, 0) for i in range(20)]
    ranking.append(NodeSensitivity("elsewhere", "Relu", 0.5, 0.9, None, 0))  # not in fp32
    tried: list[int] = []

    def build(excluded: list[str]) -> Model:
        tried.append(len(excluded))
        assert excluded == [f"n{i}" for i in range(len(excluded))]
        return fp32

    model, excluded = exclude_until(fp32, build, lambda m: tried[-1] >= 5, ranking)
    assert tried == [1, 2, 4, 8, 6, 5]
    assert excluded == ["n0", "n1", "n2", "n3", "n4"]
    assert model is fp32


def test_exclude_sensitive_reports_the_nodes_kept_in_float(
    tmp_path: Path, untouched: list[Model]
) -> None:
    model = Model.load(save(sensitive_mlp(), tmp_path / "s.onnx"))
    untouched.append(model)
    feeds = feeds_for(model)
    ctx = context(tmp_path, feeds)
    plain = StaticInt8().apply(model, ctx)
    assert cosine_min(model, plain.model, feeds) < 0.97
    result = make_pass("int8_static", {"exclude_sensitive": 1}).apply(model, ctx)
    assert result.details["excluded_nodes"] == ["fc2/MatMulAddFusion"]
    assert result.details["sensitive_nodes"] == ["fc2/MatMulAddFusion"]
    assert result.details["sensitivity"][0]["node"] == "fc2/MatMulAddFusion"
    assert any("in float: fc2/MatMulAddFusion" in n for n in result.notes)
    assert result.details["int8_weights"] == 2
    assert cosine_min(model, result.model, feeds) > 0.999


def test_per_channel_without_reduce_range_warns_on_cpus_without_vnni(tmp_path: Path) -> None:
    from onnxferry.optimize.cpu_features import x86_without_vnni

    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    feeds = feeds_for(model)
    result = DynamicInt8(per_channel=True).apply(model, context(tmp_path, feeds))
    warned = any("set reduce_range=true" in n for n in result.notes)
    assert warned == x86_without_vnni()
    assert cosine_min(model, result.model, feeds) > 0.9  # u8s8 saturation costs a little


def test_a_failing_pre_process_falls_back_to_the_model_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxruntime.quantization import shape_inference

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("symbolic shape inference failed\nwith details")

    monkeypatch.setattr(shape_inference, "quant_pre_process", broken)
    model = Model.load(save(outlier_mlp(), tmp_path / "mlp.onnx"))
    feeds = feeds_for(model)
    result = StaticInt8().apply(model, context(tmp_path, feeds))
    assert any(
        "quant_pre_process failed (symbolic shape inference failed)" in n for n in result.notes
    )
    assert result.model.ops_histogram["MatMul"] == 2  # not fused to Gemm
    assert cosine_min(model, result.model, feeds) > 0.98


def test_pre_process_leaves_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT's symbolic shape inference dumps "sym_shape_infer_temp.onnx" and uuid-named data
    files into the working directory when it gives up; they must land in the stage folder."""
    from onnxferry.optimize.ort_quantizer import pre_process

    weight = np.ones((64, 64), np.float32)  # large enough to go to an external data file
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Opaque", ["h"], ["y"], domain="custom.test"),
        ],
        "opaque",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")],
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.test", 1)]
    )
    cwd, stage = tmp_path / "cwd", tmp_path / "stage"
    cwd.mkdir()
    stage.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        pre_process(Model.from_proto(proto), stage / "model.onnx", False, False)
    assert list(cwd.iterdir()) == []
    assert (stage / "sym_shape_infer_temp.onnx").exists()
