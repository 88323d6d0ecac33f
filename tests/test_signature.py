"""TensorSpec, Signature and the dtype tables."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry.errors import FeedError
from onnxferry.signature import (
    DTYPES,
    Signature,
    TensorSpec,
    dtype_from_numpy,
    dtype_from_onnx,
    dtype_from_v2,
    is_placeholder,
)
from tests.helpers import onnx_text

V2_NAMES = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
}  # fmt: skip


def test_every_v2_datatype_maps_to_onnx_and_numpy() -> None:
    assert {d.v2 for d in DTYPES if d.v2} == V2_NAMES
    for name in V2_NAMES:
        dtype = dtype_from_v2(name)
        assert dtype_from_onnx(dtype.onnx) is dtype
        assert dtype.onnx_name == TensorProto.DataType.Name(dtype.onnx)
    assert dtype_from_v2("fp32").numpy == np.float32
    assert dtype_from_v2("BF16").numpy.name == "bfloat16"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.onnx_name)
def test_numpy_table_agrees_with_onnx(dtype: object) -> None:
    from onnxferry.signature import DType

    assert isinstance(dtype, DType)
    expected = helper.tensor_dtype_to_np_dtype(dtype.onnx)
    assert dtype.numpy == expected
    assert dtype_from_numpy(dtype.numpy) is dtype


def test_strings_map_to_bytes() -> None:
    assert dtype_from_numpy(np.array(["a"]).dtype).v2 == "BYTES"
    assert dtype_from_numpy(np.array([b"a"]).dtype).onnx_name == "STRING"


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(FeedError, match="unknown V2 datatype 'FP8'"):
        dtype_from_v2("FP8")
    with pytest.raises(FeedError, match="ONNX element type 999"):
        dtype_from_onnx(999)


ALL_TYPES = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[batch, 3] f, float16[batch] h, double[2] d, bfloat16[batch] b, int64[batch, seq] ids,
   int32[seq] i32, uint8[4] u8, int8[4] i8, bool[batch] flag, string[batch] text, float[N, ?] q)
  => (float[batch, 3] y) { y = Identity(f) }
"""


def test_signature_reads_dtypes_and_symbolic_dims() -> None:
    sig = Signature.from_onnx(onnx_text(ALL_TYPES))
    f, h, d, b, ids, i32, u8, i8, flag, text, q = sig.inputs
    assert f.shape == ("batch", 3) and f.v2_datatype == "FP32"
    assert h.dtype.v2 == "FP16" and d.shape == (2,) and b.dtype.v2 == "BF16"
    assert ids.shape == ("batch", "seq") and ids.dtype.numpy == np.int64
    assert text.dtype.v2 == "BYTES" and flag.dtype.v2 == "BOOL"
    assert q.shape == ("N", None) and q.shape_text() == "[N, ?]"
    assert sig.output_names == ["y"]
    assert sig.to_dict()["inputs"][0] == {
        "name": "f",
        "dtype": "FLOAT",
        "kind": "tensor",
        "v2_datatype": "FP32",
        "numpy_dtype": "float32",
        "shape": ["batch", 3],
        "shape_as_written": ["batch", 3],
    }


# Each spelling of "unknown" the exporters write, and a real name shared by two inputs.
PLACEHOLDERS: list[int | str | None] = [-1, -7, None, "?", "-1", "None", "", "unk__12"]
PLACEHOLDERS += ["unk_3", "p2o.DynamicDimension.0"]


def _placeholder_model(dims: list[int | str | None]) -> onnx.ModelProto:
    """x[dims..., height] + y[height]: every placeholder is its own unknown; height is shared."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [*dims, "height"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["height"])
    out = helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", [x, y], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_every_placeholder_spelling_is_an_independent_unknown() -> None:
    import onnxruntime as ort

    proto = _placeholder_model(PLACEHOLDERS)
    sig = Signature.from_onnx(proto)
    x = sig.input("x")
    assert x.shape == (*[None] * len(PLACEHOLDERS), "height")
    assert x.as_written == (*PLACEHOLDERS, "height")
    assert x.to_dict()["shape_as_written"] == [*PLACEHOLDERS, "height"]
    assert x.shape_text() == "[" + ", ".join(["?"] * len(PLACEHOLDERS)) + ", height]"
    # Every unknown takes its own size, as ONNX Runtime allows; the shared name must agree.
    sizes = tuple(range(1, len(PLACEHOLDERS) + 1))
    feeds = {
        "x": np.ones((*sizes, 3), dtype=np.float32),
        "y": np.ones(3, dtype=np.float32),
    }
    sig.validate(feeds)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, feeds)[0].shape == (*sizes, 3)
    with pytest.raises(FeedError, match="height"):
        sig.validate({**feeds, "y": np.ones(4, dtype=np.float32)})


@pytest.mark.parametrize("name", ["batch", "sequence", "height", "N", "s0", "input_dynamic_axes_1"])
def test_real_names_are_not_placeholders(name: str) -> None:
    assert not is_placeholder(name)


@pytest.fixture
def sig() -> Signature:
    return Signature.from_onnx(
        onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (float[batch, 3] x, int64[batch, seq] ids) => (float[batch, 3] y) { y = Identity(x) }
        """)
    )


def _feeds(batch: int = 2, seq: int = 5) -> dict[str, np.ndarray]:
    return {
        "x": np.zeros((batch, 3), np.float32),
        "ids": np.zeros((batch, seq), np.int64),
    }


def test_validate_accepts_matching_feeds(sig: Signature) -> None:
    sig.validate(_feeds())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.pop("ids"), "missing input 'ids'"),
        (lambda f: f.update(z=f["x"]), "unknown input 'z'"),
        (lambda f: f.update(x=f["x"].astype(np.float64)), "'x' expects dtype float32.*got float64"),
        (lambda f: f.update(x=f["x"][0]), "'x' expects rank 2 .*got rank 1"),
        (
            lambda f: f.update(x=np.zeros((2, 4), np.float32)),
            r"'x' expects shape .*dim 1 must be 3",
        ),
        (lambda f: f.update(ids=np.zeros((3, 5), np.int64)), "'ids' has batch=3.*'x' has batch=2"),
        (lambda f: f.update(x=[[0.0] * 3] * 2), "'x' is a list, not a numpy array"),
    ],
    ids=["missing", "unknown", "dtype", "rank", "dim", "symbol-mismatch", "not-array"],
)
def test_validate_names_the_tensor(sig: Signature, change: object, message: str) -> None:
    feeds: dict[str, object] = dict(_feeds())
    change(feeds)  # type: ignore[operator]
    with pytest.raises(FeedError, match=message):
        sig.validate(feeds)


def test_validate_string_input_rejects_numbers() -> None:
    proto = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["s"], ["o"])],
            "g",
            [helper.make_tensor_value_info("s", TensorProto.STRING, [None])],
            [helper.make_tensor_value_info("o", TensorProto.STRING, [None])],
        )
    )
    onnx.checker.check_model(proto)
    sig = Signature.from_onnx(proto)
    sig.validate({"s": np.array(["a", "b"], dtype=object)})
    with pytest.raises(FeedError, match="expects strings"):
        sig.validate({"s": np.array([1.0])})


def test_a_damaged_name_that_is_not_utf8_reads_as_text() -> None:
    info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    damaged = onnx.ValueInfoProto()
    damaged.ParseFromString(info.SerializeToString().replace(b"batch", b"b\xffa\xfeh"))
    spec = TensorSpec.from_value_info(damaged)
    assert spec.shape == ("b\ufffda\ufffdh", 3)


@pytest.mark.parametrize(
    ("dims", "axes"),
    [
        # Silero VAD: the state's batch is its second axis; the sample rate is one value
        (
            {"input": ["batch", 512], "state": [2, "batch", 128], "sr": []},
            {"input": 0, "state": 1, "sr": None},
        ),
        # the same exported without dim names (spox): the state's lone open dim is its batch
        (
            {"input": [None, None], "state": [2, None, 128], "sr": []},
            {"input": 0, "state": 1, "sr": None},
        ),
        # ... but not a named dim other than the batch, nor with no rows in front
        ({"x": [None, 4], "s": [2, "layers", 8]}, {"x": 0, "s": None}),
        ({"x": [1, 4], "s": [2, None, 8]}, {"x": None, "s": None}),
        # placeholders ("?", unk__N) and other names at the front are open leading dims
        ({"x": ["?", 3], "y": ["N", 4], "z": [1, 4]}, {"x": 0, "y": 0, "z": None}),
        # a batch-1 export has no rows to take; an unknown rank has them in front
        ({"x": [1, 3, 8, 8], "y": None}, {"x": None, "y": 0}),
        # PyTorch's time-major LSTM input: the batch is where a name says so, not in front
        ({"x": ["seq_len", "batch_size", 8]}, {"x": 1}),
        ({"x": ["time", "N", 8], "h": [1, "N", 16]}, {"x": 1, "h": 1}),
        ({"x": ["N", "seq_len", 8]}, {"x": 0}),  # a batch in front stays
    ],
)
def test_row_axes_follow_the_named_batch_dim_wherever_it_stands(
    dims: dict[str, list[int | str | None] | None], axes: dict[str, int | None]
) -> None:
    inputs = tuple(
        TensorSpec.from_value_info(helper.make_tensor_value_info(n, TensorProto.FLOAT, d))
        for n, d in dims.items()
    )
    assert Signature(inputs, ()).row_axes() == axes


def _spec(name: str, dims: list[int | str | None] | None) -> TensorSpec:
    return TensorSpec.from_value_info(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))


def test_the_batch_symbol_is_a_dim_named_as_one_where_the_commonest_leading_dim_is_not() -> None:
    """RoIAlign's inputs: two lead with ``num_rois``, the images with ``batch``; a time-major
    LSTM's input leads with ``seq_len``."""
    roi_align = (_spec("x", ["batch", 8, 4, 4]), _spec("rois", ["num_rois", 4]))
    assert Signature((*roi_align, _spec("ids", ["num_rois"])), ()).batch_symbol() == "batch"
    assert Signature((_spec("x", ["seq_len", "batch_size", 8]),), ()).batch_symbol() == (
        "batch_size"
    )
    assert Signature((_spec("x", ["seq", "features"]),), ()).batch_symbol() == "seq"


def test_output_row_axis_where_the_batch_is_named_or_like_the_input_it_mirrors() -> None:
    """Silero VAD: as the torch export names it (``stateN[2, batch, 128]``), and as spox
    writes it, no dim named anywhere (``stateN`` shaped like ``state[2, ?, 128]``)."""
    named = Signature(
        (_spec("input", ["batch", 512]), _spec("state", [2, "batch", 128])),
        (_spec("output", ["batch", 1]), _spec("stateN", [2, "batch", 128])),
    )
    assert named.output_row_axis("stateN", (2, 4, 128)) == 1
    assert named.output_row_axis("output", (4, 1)) == 0
    unnamed = Signature(
        (_spec("input", [None, None]), _spec("state", [2, None, 128])),
        (_spec("output", [None, 1]), _spec("stateN", [None, None, None])),
    )
    assert unnamed.output_row_axis("stateN", (2, 4, 128)) == 1
    assert unnamed.output_row_axis("output", (4, 1)) == 0
    assert unnamed.output_row_axis("stateN", (3, 4, 128)) == 0  # not shaped like the state


def test_outputs_that_fold_their_rows_into_another_axis_are_told_apart() -> None:
    """AttaCut's ``view(-1)`` of ``[batch, chars]`` scores, as torch writes it; a dim that only
    contains the batch's name, an expression of other dims and tf2onnx's unrelated names are
    not."""
    inputs = (_spec("inputs_0", ["batch", 2, "chars"]), _spec("inputs_1", ["batch"]))
    outputs: dict[str, list[int | str | None]] = {
        "flat": ["batch*chars"],
        "doubled": ["2*batch", 4],
        "shifted": ["batch - 1"],
        "rows": ["batch", "chars"],
        "also_rows": ["batch", "2*chars"],
        "named_alike": ["batch_chars"],
        "others": ["2*chars"],
        "tf2onnx": ["unk__52", 4],
        "unknown": [None],
    }
    signature = Signature(inputs, tuple(_spec(n, d) for n, d in outputs.items()))
    assert signature.merged_row_outputs() == ["flat", "doubled", "shifted"]
    no_batch = Signature((_spec("x", [3, 4]),), (_spec("y", ["2*n"]),))
    assert no_batch.merged_row_outputs() == []


def _value(name: str, type_proto: onnx.TypeProto) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, type_proto)


def test_non_tensor_types_have_their_kind_and_type_text() -> None:
    """An optional tensor reads as its element (an array feeds it); sequences, maps and
    sparse tensors keep object dtype and no shape, and say what they are."""
    float_rows = helper.make_tensor_type_proto(TensorProto.FLOAT, ["n", 4])
    cases = {
        "opt": (helper.make_optional_type_proto(float_rows), "optional", "optional(FLOAT)"),
        "seq": (helper.make_sequence_type_proto(float_rows), "sequence", "seq(tensor(FLOAT))"),
        "map": (
            helper.make_map_type_proto(TensorProto.STRING, float_rows),
            "map",
            "map(STRING, tensor(FLOAT))",
        ),
        "sparse": (
            helper.make_sparse_tensor_type_proto(TensorProto.FLOAT, [3, 3]),
            "sparse tensor",
            "sparse_tensor(FLOAT)",
        ),
        "opt_seq": (
            helper.make_optional_type_proto(helper.make_sequence_type_proto(float_rows)),
            "optional sequence",
            "optional(seq(tensor(FLOAT)))",
        ),
    }
    for name, (type_proto, kind, text) in cases.items():
        spec = TensorSpec.from_value_info(_value(name, type_proto))
        assert (spec.kind, spec.type_text) == (kind, text), name
        assert spec.to_dict()["dtype"] == text and spec.to_dict()["kind"] == kind
    opt = TensorSpec.from_value_info(_value("opt", cases["opt"][0]))
    assert opt.is_array and opt.dtype.onnx_name == "FLOAT" and opt.shape == ("n", 4)
    nested = TensorSpec.from_value_info(_value("opt_seq", cases["opt_seq"][0]))
    assert not nested.is_array and nested.shape is None  # no array stands for it either
    plain = TensorSpec.from_value_info(helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]))
    assert (plain.kind, plain.type_text, plain.is_array) == ("tensor", "FLOAT", True)


def test_a_sequence_input_is_refused_in_one_line_when_fed() -> None:
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, ["n", 4])
    spec = TensorSpec.from_value_info(seq)
    sig = Signature((spec,), ())
    with pytest.raises(FeedError, match=r"input 'xs' is a sequence \(seq\(tensor\(FLOAT\)\)\)"):
        sig.validate({"xs": np.ones((2, 4), np.float32)})


def test_unknown_output_dims_take_the_name_of_the_input_dim_they_follow() -> None:
    """tf2onnx writes ``unk__N`` for an output's sequence axis; over runs of other sizes the
    dim is the input's ``seq``. A dim as large as two names, or of one size, stays unknown."""
    sig = Signature.from_onnx(
        onnx_text(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[batch, seq, 4] x, float[batch, width] w, float[batch, 2] v)
                => (float[batch, unk__7, 4] y, float[unk__8] z, float[unk__9, 2] u) {
                y = Identity(x)
                axis = Constant<value = int64[1] {0}>()
                z = ReduceSum<keepdims = 0>(w, axis)
                u = Identity(v)
            }
            """
        )
    )
    feeds = [
        {"x": np.zeros((1, 8, 4)), "w": np.zeros((1, 5)), "v": np.zeros((1, 2))},
        {"x": np.zeros((4, 13, 4)), "w": np.zeros((4, 5)), "v": np.zeros((4, 2))},
    ]
    outputs = [
        {"y": np.zeros((1, 8, 4)), "z": np.zeros(5), "u": np.zeros((1, 2))},
        {"y": np.zeros((4, 13, 4)), "z": np.zeros(5), "u": np.zeros((4, 2))},
    ]
    assert sig.dims_following_inputs(feeds, outputs) == {"y": {1: "seq"}, "u": {0: "batch"}}
    same = [{**f, "w": np.zeros((len(f["x"]), f["x"].shape[1]))} for f in feeds]
    assert sig.dims_following_inputs(same, outputs) == {"u": {0: "batch"}}  # seq or width
    assert sig.dims_following_inputs(feeds[:1], outputs[:1]) == {}  # one size: nothing to see
    assert sig.dims_following_inputs(feeds, [{}, {}]) == {}  # outputs not arrays (a ZipMap)
