"""Feeds and golden test data on disk: real files in tmp_path, every dtype, every bad input."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxferry.data import (
    TestCase,
    array_to_tensor,
    load_feeds,
    load_test_cases,
    save_npz,
    save_test_case,
    tensor_to_array,
)
from onnxferry.errors import DataError
from onnxferry.feeds import random_array, realistic_feeds
from onnxferry.signature import DTYPES, DType, Signature, TensorSpec, dtype_from_onnx

from .helpers import mlp, onnx_text, save

DTYPE_IDS = [d.onnx_name for d in DTYPES]


def spec(name: str, dtype: DType | str = "FLOAT", shape: tuple[int, ...] = (2, 3)) -> TensorSpec:
    if isinstance(dtype, str):
        dtype = next(d for d in DTYPES if d.onnx_name == dtype)
    return TensorSpec(name, dtype, shape)


def sig(inputs: list[TensorSpec], outputs: list[TensorSpec] | None = None) -> Signature:
    return Signature(tuple(inputs), tuple(outputs or []))


def sample(dtype: DType, shape: tuple[int, ...] = (2, 3), seed: int = 0) -> np.ndarray:
    return random_array(dtype, shape, np.random.default_rng(seed))


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if want.dtype == object:
        assert got.tolist() == want.tolist()
        assert all(type(v) is str for v in got.flat)
    else:
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


def write_pb(path: Path, array: np.ndarray, name: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(array_to_tensor(array, name).SerializeToString())
    return path


def raises(match: str) -> Any:
    return pytest.raises(DataError, match=match)


# --- every dtype round-trips ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_tensor_round_trip(dtype: DType) -> None:
    array = sample(dtype)
    proto = array_to_tensor(array, "x")
    assert proto.data_type == dtype.onnx
    assert proto.name == "x"
    again = onnx.TensorProto.FromString(proto.SerializeToString())
    back = tensor_to_array(again)
    assert_same(back, array)
    assert back.flags.writeable


def test_ml_dtypes_come_back_as_ml_dtypes() -> None:
    for name, ml in [
        ("BFLOAT16", ml_dtypes.bfloat16),
        ("FLOAT8E4M3FN", ml_dtypes.float8_e4m3fn),
        ("FLOAT8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz),
        ("FLOAT8E5M2", ml_dtypes.float8_e5m2),
        ("FLOAT8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz),
    ]:
        array = np.array([0.5, -2.0, 3.0], dtype=ml)
        back = tensor_to_array(array_to_tensor(array, name))
        assert back.dtype == np.dtype(ml)
        assert back.astype(np.float32).tolist() == [0.5, -2.0, 3.0]


def test_strings_come_back_as_object_arrays_of_str() -> None:
    for array in (
        np.array([["a", "bé"], ["", "ünïcode"]]),
        np.array([["a", "bé"], ["", "ünïcode"]], dtype=object),
        np.array([[b"a", "bé".encode()], [b"", "ünïcode".encode()]]),
    ):
        back = tensor_to_array(array_to_tensor(array, "s"))
        assert back.dtype == object
        assert back.tolist() == [["a", "bé"], ["", "ünïcode"]]


def test_non_utf8_strings_stay_bytes() -> None:
    back = tensor_to_array(array_to_tensor(np.array([b"\xff\xfe", b"ok"], dtype=object), "s"))
    assert back.tolist() == [b"\xff\xfe", "ok"]


def test_scalars_and_empty_tensors_round_trip() -> None:
    for array in (np.float32(1.5), np.zeros((0, 3), np.int64), np.array([], dtype=object)):
        a = np.asarray(array)
        back = tensor_to_array(array_to_tensor(a, "t"))
        assert back.shape == a.shape
        assert back.dtype == a.dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_test_data_set_round_trip(tmp_path: Path, dtype: DType) -> None:
    x, y = sample(dtype, seed=1), sample(dtype, (3,), seed=2)
    signature = sig([spec("x", dtype)], [spec("y", dtype, (3,))])
    save_test_case(tmp_path / "case" / "test_data_set_0", {"x": x}, {"y": y})

    [case] = load_test_cases(tmp_path / "case", signature)
    assert case.name == "test_data_set_0"
    assert_same(case.inputs["x"], x)
    assert_same(case.outputs["y"], y)

    [feeds] = load_feeds(tmp_path / "case" / "test_data_set_0" / "input_0.pb", signature)
    assert_same(feeds["x"], x)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_npz_round_trip(tmp_path: Path, dtype: DType) -> None:
    x, y = sample(dtype, seed=3), sample(dtype, (3,), seed=4)
    signature = sig([spec("x", dtype)], [spec("y", dtype, (3,))])
    save_npz(tmp_path / "golden.npz", {"x": x, "y": y})

    [feeds] = load_feeds(tmp_path / "golden.npz", signature)  # skips the golden output y
    assert list(feeds) == ["x"]
    assert_same(feeds["x"], x)
    [case] = load_test_cases(tmp_path / "golden.npz", signature)
    assert case.name == "golden"
    assert_same(case.inputs["x"], x)
    assert_same(case.outputs["y"], y)


# --- feeds ------------------------------------------------------------------------------------


def test_npz_feeds_with_strings_run_in_onnxruntime(tmp_path: Path) -> None:
    proto = onnx_text("""
        <ir_version: 10, opset_import: ["" : 21]>
        g (string[N] s, float[N] v) => (string[N] t, float[N] w) { t = Identity(s)  w = Neg(v) }
    """)
    model = save(proto, tmp_path / "m.onnx")
    signature = Signature.from_onnx(proto)
    np.savez(tmp_path / "feeds.npz", v=np.ones(2, np.float32), s=np.array(["héllo", ""]))

    [feeds] = load_feeds(tmp_path / "feeds.npz", signature)
    assert list(feeds) == ["s", "v"]  # the model's input order
    assert feeds["s"].dtype == object
    signature.validate(feeds)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    t, w = session.run(None, feeds)
    assert list(t) == ["héllo", ""]
    np.testing.assert_array_equal(w, -np.ones(2, np.float32))


def test_npz_feeds_without_signature_keep_their_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", a=np.arange(3), b=np.array(["x"]))
    [feeds] = load_feeds(tmp_path / "f.npz")
    assert set(feeds) == {"a", "b"}
    assert feeds["b"].tolist() == ["x"]


def test_npz_positional_arrays_map_to_inputs(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.savez(tmp_path / "one.npz", x)
    [feeds] = load_feeds(tmp_path / "one.npz", sig([spec("input.1")]))
    assert list(feeds) == ["input.1"]
    np.testing.assert_array_equal(feeds["input.1"], x)

    np.savez(tmp_path / "two.npz", x, x + 1)
    [feeds] = load_feeds(tmp_path / "two.npz", sig([spec("a"), spec("b")]))
    np.testing.assert_array_equal(feeds["b"], x + 1)


def test_npy_feeds_for_a_single_input_model(tmp_path: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "x.npy", x)
    [feeds] = load_feeds(tmp_path / "x.npy", sig([spec("x")]))
    np.testing.assert_array_equal(feeds["x"], x)

    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    [feeds] = load_feeds(tmp_path / "s.npy", sig([spec("s", "STRING", (2,))]))
    assert feeds["s"].dtype == object


def test_pb_feed_uses_its_name_or_the_single_input(tmp_path: Path) -> None:
    x = np.ones((2, 3), np.float32)
    [feeds] = load_feeds(write_pb(tmp_path / "named.pb", x, "x"))
    assert list(feeds) == ["x"]
    [feeds] = load_feeds(write_pb(tmp_path / "anon.pb", x), sig([spec("data")]))
    assert list(feeds) == ["data"]


def test_feeds_from_directories(tmp_path: Path) -> None:
    signature = sig([spec("a"), spec("b")], [spec("y")])
    for n in (10, 2, 0):
        a = np.full((2, 3), n, np.float32)
        save_test_case(tmp_path / "sets" / f"test_data_set_{n}", {"a": a, "b": a}, {"y": a})
        save_npz(tmp_path / "npz" / f"feeds_{n}.npz", {"b": a, "a": a})
    for folder in ("sets", "npz"):
        sets = load_feeds(tmp_path / folder, signature)
        assert [int(f["a"][0, 0]) for f in sets] == [0, 2, 10]
        assert all(list(f) == ["a", "b"] for f in sets)  # inputs only, in the model's order
    [one] = load_feeds(tmp_path / "sets" / "test_data_set_2", signature)
    assert one["b"][0, 0] == 2


# --- golden test data -------------------------------------------------------------------------


def test_names_by_position_when_tensor_names_are_empty(tmp_path: Path) -> None:
    signature = sig([spec("a"), spec("b")], [spec("y"), spec("z")])
    folder = tmp_path / "test_data_set_0"
    for k in range(2):
        write_pb(folder / f"input_{k}.pb", np.full((2, 3), k, np.float32))
        write_pb(folder / f"output_{k}.pb", np.full((2, 3), 10 + k, np.float32))
    [case] = load_test_cases(folder, signature)
    assert [(n, int(v[0, 0])) for n, v in case.inputs.items()] == [("a", 0), ("b", 1)]
    assert [(n, int(v[0, 0])) for n, v in case.outputs.items()] == [("y", 10), ("z", 11)]


def test_names_in_the_files_win_over_position(tmp_path: Path) -> None:
    signature = sig([spec("a"), spec("b")])
    folder = tmp_path / "set"
    write_pb(folder / "input_0.pb", np.full((2, 3), 1, np.float32), "b")
    write_pb(folder / "input_1.pb", np.full((2, 3), 0, np.float32), "a")
    [case] = load_test_cases(folder, signature)
    assert int(case.inputs["a"][0, 0]) == 0
    assert int(case.inputs["b"][0, 0]) == 1
    assert case.outputs == {}


def test_input_k_sorts_numerically(tmp_path: Path) -> None:
    names = [f"x{k}" for k in range(12)]
    signature = sig([spec(n, shape=(1,)) for n in names])
    folder = tmp_path / "set"
    for k in range(12):
        write_pb(folder / f"input_{k}.pb", np.array([k], np.float32))
    [case] = load_test_cases(folder, signature)
    assert list(case.inputs) == names
    assert {n: int(v[0]) for n, v in case.inputs.items()} == {f"x{k}": k for k in range(12)}


def test_test_data_sets_sort_numerically(tmp_path: Path) -> None:
    signature = sig([spec("x", shape=(1,))])
    for n in (10, 1, 2, 0):
        save_test_case(tmp_path / f"test_data_set_{n}", {"x": np.array([n], np.float32)}, {})
    cases = load_test_cases(tmp_path, signature)
    assert [c.name for c in cases] == [f"test_data_set_{n}" for n in (0, 1, 2, 10)]
    assert [int(c.inputs["x"][0]) for c in cases] == [0, 1, 2, 10]


def test_model_zoo_layout_checks_out_in_onnxruntime(tmp_path: Path) -> None:
    proto = mlp(seed=3)
    model = save(proto, tmp_path / "zoo" / "model.onnx")
    signature = Signature.from_onnx(proto)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for n in range(3):
        feeds = realistic_feeds(signature, {"batch": n + 1}, seed=n)
        [probs] = session.run(None, feeds)
        save_test_case(tmp_path / "zoo" / f"test_data_set_{n}", feeds, {"probs": probs})

    cases = load_test_cases(tmp_path / "zoo", signature)
    assert [c.name for c in cases] == ["test_data_set_0", "test_data_set_1", "test_data_set_2"]
    for case in cases:
        signature.validate(case.inputs)
        [probs] = session.run(None, case.inputs)
        np.testing.assert_allclose(probs, case.outputs["probs"], rtol=0, atol=0)


def test_npz_golden_files_in_a_directory(tmp_path: Path) -> None:
    signature = sig([spec("x", shape=(1,))], [spec("y", shape=(1,))])
    for n in (11, 3):
        v = np.array([n], np.float32)
        save_npz(tmp_path / f"case_{n}.npz", {"y": -v, "x": v})
    cases = load_test_cases(tmp_path, signature)
    assert [c.name for c in cases] == ["case_3", "case_11"]
    assert cases[1].outputs["y"].tolist() == [-11.0]


def test_golden_set_without_outputs(tmp_path: Path) -> None:
    save_test_case(tmp_path / "s", {"x": np.ones((2, 3), np.float32)}, {})
    [case] = load_test_cases(tmp_path / "s", sig([spec("x")], [spec("y")]))
    assert case.outputs == {}


def test_save_test_case_writes_named_files_and_drops_stale_ones(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    a = np.ones((2, 3), np.float32)
    save_test_case(folder, {"a": a, "b": a, "c": a}, {"y": a, "z": a})
    assert save_test_case(folder, {"a": a}, {"y": a}) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["input_0.pb", "output_0.pb"]
    tensor = onnx.load_tensor(str(folder / "input_0.pb"))
    assert tensor.name == "a"


def test_testcase_is_not_collected_by_pytest() -> None:
    assert TestCase.__test__ is False
    assert TestCase("t", {}).outputs == {}


# --- sequences, maps and optionals (outputs of sklearn-like models) ---------------------------


def test_sequence_of_tensors_reads_as_object_array(tmp_path: Path) -> None:
    items = [np.arange(3, dtype=np.float32), np.array(["a", "b"], dtype=object)]
    folder = tmp_path / "set"
    save_test_case(folder, {"x": np.ones((2, 3), np.float32)}, {})
    (folder / "output_0.pb").write_bytes(numpy_helper.from_list(items, "seq").SerializeToString())
    [case] = load_test_cases(folder, sig([spec("x")], [spec("seq")]))
    seq = case.outputs["seq"]
    assert seq.dtype == object
    assert seq.shape == (2,)
    np.testing.assert_array_equal(seq[0], items[0])
    assert seq[1].tolist() == ["a", "b"]


def test_sequence_output_round_trips_through_save_test_case(tmp_path: Path) -> None:
    seq = np.empty(2, dtype=object)
    seq[0], seq[1] = np.arange(2, dtype=np.int64), np.ones((2, 2), np.float32)
    save_test_case(tmp_path / "s", {"x": np.ones((2, 3), np.float32)}, {"seq": seq})
    [case] = load_test_cases(tmp_path / "s", sig([spec("x")], [spec("seq")]))
    got = case.outputs["seq"]
    assert [v.dtype for v in got] == [np.int64, np.float32]
    np.testing.assert_array_equal(got[1], seq[1])


def test_sequence_of_maps_reads_like_zipmap(tmp_path: Path) -> None:
    def zipmap(probs: dict[str, float]) -> onnx.MapProto:
        m = onnx.MapProto(key_type=onnx.TensorProto.STRING)
        m.string_keys.extend(k.encode() for k in probs)
        m.values.elem_type = onnx.SequenceProto.TENSOR
        m.values.tensor_values.extend(
            numpy_helper.from_array(np.array(v, np.float32)) for v in probs.values()
        )
        return m

    seq = onnx.SequenceProto(name="output_probability", elem_type=onnx.SequenceProto.MAP)
    seq.map_values.extend([zipmap({"cat": 0.25, "dog": 0.75}), zipmap({"cat": 1.0, "dog": 0.0})])
    path = tmp_path / "output_0.pb"
    path.write_bytes(seq.SerializeToString())
    write_pb(tmp_path / "input_0.pb", np.ones((2, 3), np.float32))
    signature = sig([spec("x")], [spec("output_probability")])
    [case] = load_test_cases(tmp_path, signature)
    rows = case.outputs["output_probability"].tolist()
    assert rows == [{"cat": 0.25, "dog": 0.75}, {"cat": 1.0, "dog": 0.0}]


def test_optional_tensor_reads_as_one_element_sequence(tmp_path: Path) -> None:
    opt = numpy_helper.from_optional(np.arange(3, dtype=np.int32), "o")
    write_pb(tmp_path / "input_0.pb", np.ones((2, 3), np.float32))
    (tmp_path / "output_0.pb").write_bytes(opt.SerializeToString())
    [case] = load_test_cases(tmp_path, sig([spec("x")], [spec("o")]))
    [value] = case.outputs["o"]
    np.testing.assert_array_equal(value, np.arange(3, dtype=np.int32))


def test_empty_optional_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.pb"
    path.write_bytes(numpy_helper.from_optional(None, "o").SerializeToString())
    with raises(r"o\.pb is empty or not an ONNX TensorProto"):
        load_feeds(path, sig([spec("x")]))


def test_sequence_of_sequences_is_refused(tmp_path: Path) -> None:
    inner = [np.arange(2, dtype=np.float32)]
    path = tmp_path / "s.pb"
    path.write_bytes(numpy_helper.from_list([inner, inner], "s").SerializeToString())
    with raises("holds a sequence of sequence values"):
        load_feeds(path)


# --- bad input: one clear DataError each ------------------------------------------------------


def test_nonexistent_path(tmp_path: Path) -> None:
    with raises(r"nope\.npz does not exist"):
        load_feeds(tmp_path / "nope.npz")
    with raises("does not exist"):
        load_test_cases(tmp_path / "nope", sig([spec("x")]))


def test_empty_directory(tmp_path: Path) -> None:
    with raises("no test data found in .*test_data_set_N"):
        load_feeds(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with raises("no test data found"):
        load_test_cases(tmp_path, sig([spec("x")]))


def test_unknown_file_kinds(tmp_path: Path) -> None:
    path = tmp_path / "feeds.txt"
    path.write_text("1,2,3")
    with raises(r"feeds\.txt is not a feeds file.*a \.csv or \.parquet table"):
        load_feeds(path)
    table = tmp_path / "feeds.csv"  # rows are feeds (data.rows), not golden test data
    table.write_text("x\n1\n")
    with raises(r"feeds\.csv is not golden test data; give .*\.npz"):
        load_test_cases(table, sig([spec("x")]))


def test_corrupt_and_truncated_npz(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with raises("is not a numpy .npz file"):
        load_feeds(garbage)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with raises("is not a numpy .npz file .*empty"):
        load_feeds(empty)
    good = tmp_path / "good.npz"
    np.savez(good, x=np.arange(1000, dtype=np.float32))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    with raises(r"truncated\.npz is unreadable or corrupt"):
        load_feeds(truncated)


def test_npz_needing_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with raises("holds object arrays, which need pickle to load; onnxferry never unpickles"):
        load_feeds(path)
    with raises("need pickle"):
        load_test_cases(path, sig([spec("x")]))
    npy = tmp_path / "objects.npy"
    np.save(npy, np.array(["a", 1], dtype=object), allow_pickle=True)
    with raises("need pickle"):
        load_feeds(npy, sig([spec("x")]))


def test_plain_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feeds.npz"
    path.write_bytes(pickle.dumps({"x": [1, 2, 3]}))
    with raises("is a Python pickle, which onnxferry never loads"):
        load_feeds(path)


def test_npz_member_that_is_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.txt", "hello")
    with raises("member 'x.txt' is not a numpy array"):
        load_feeds(path)


def test_npz_keys_that_are_not_inputs(tmp_path: Path) -> None:
    path = tmp_path / "feeds.npz"
    np.savez(path, x=np.ones((2, 3), np.float32), imgs=np.ones(1), extra=np.ones(1))
    with raises(r"\['imgs', 'extra'\], not inputs of the model; .*\['x'\]"):
        load_feeds(path, sig([spec("x")]))


def test_npz_golden_keys_that_are_neither_inputs_nor_outputs(tmp_path: Path) -> None:
    path = tmp_path / "golden.npz"
    np.savez(path, x=np.ones((2, 3), np.float32), label=np.ones(1))
    with raises(r"\['label'\] which is neither an input nor an output .*outputs \['y'\]"):
        load_test_cases(path, sig([spec("x")], [spec("y")]))


def test_missing_input_names_the_set_and_the_input(tmp_path: Path) -> None:
    signature = sig([spec("a"), spec("b")])
    save_test_case(tmp_path / "test_data_set_0", {"a": np.ones((2, 3), np.float32)}, {})
    with raises("test data set 'test_data_set_0' .* is missing input 'b'"):
        load_test_cases(tmp_path, signature)
    with raises("missing input 'b'"):
        load_feeds(tmp_path, signature)
    np.savez(tmp_path / "only_a.npz", a=np.ones((2, 3), np.float32))
    with raises(r"only_a\.npz.* is missing input 'b'"):
        load_test_cases(tmp_path / "only_a.npz", signature)
    with raises(r"only_a\.npz is missing input 'b'"):
        load_feeds(tmp_path / "only_a.npz", signature)


def test_single_array_files_for_multi_input_models(tmp_path: Path) -> None:
    signature = sig([spec("a"), spec("b")])
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    with raises(r"holds one array but the model has 2 inputs \['a', 'b'\]"):
        load_feeds(tmp_path / "x.npy", signature)
    with raises("holds one unnamed array; pass the model's signature"):
        load_feeds(tmp_path / "x.npy")
    write_pb(tmp_path / "anon.pb", np.ones(3, np.float32))
    with raises("holds one unnamed array"):
        load_feeds(tmp_path / "anon.pb")


def test_unnamed_pb_in_a_set_without_signature(tmp_path: Path) -> None:
    write_pb(tmp_path / "input_0.pb", np.ones(3, np.float32))
    with raises("input_0.pb in test data set .* has no tensor name"):
        load_feeds(tmp_path)


def test_more_files_than_inputs(tmp_path: Path) -> None:
    for k in range(3):
        write_pb(tmp_path / f"input_{k}.pb", np.ones((2, 3), np.float32))
    with raises(r"input_2\.pb in test data set .* matches no input of the model: it has 2"):
        load_test_cases(tmp_path, sig([spec("a"), spec("b")]))


def test_two_files_for_one_input(tmp_path: Path) -> None:
    write_pb(tmp_path / "input_0.pb", np.ones((2, 3), np.float32), "b")
    write_pb(tmp_path / "input_1.pb", np.ones((2, 3), np.float32))
    with raises("has two files for input 'b'"):
        load_test_cases(tmp_path, sig([spec("a"), spec("b")]))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty or not an ONNX TensorProto"),
        (b"\xff\xff\xff\xff garbage \x00\x01", "not an ONNX TensorProto"),
        (
            onnx.TensorProto(
                name="x", data_type=onnx.TensorProto.FLOAT, dims=[2, 3], float_data=[1.0]
            ).SerializeToString(),
            r"input_0\.pb is corrupt: tensor 'x' cannot be read",
        ),
    ],
    ids=["empty", "garbage", "wrong-size"],
)
def test_corrupt_pb(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "input_0.pb").write_bytes(content)
    with raises(match):
        load_test_cases(tmp_path, sig([spec("x")]))


def test_pb_with_external_data_is_refused(tmp_path: Path) -> None:
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "x")
    onnx.external_data_helper.set_external_data(tensor, location="../../etc/passwd")
    tensor.ClearField("raw_data")
    with raises("tensor 'x' keeps its data in an external file"):
        tensor_to_array(tensor)


def test_raw_bytes_without_a_type(tmp_path: Path) -> None:
    path = tmp_path / "bf16.npz"
    save_npz(path, {"x": np.ones(3, dtype=ml_dtypes.bfloat16)})
    with raises(r"array 'x' in .* holds raw \|V2 bytes of unknown type"):
        load_feeds(path)
    with raises("holds raw"):
        load_feeds(path, sig([spec("x", "FLOAT")]))  # 4-byte float cannot be 2 raw bytes


def test_ml_dtypes_pb_feed_without_signature(tmp_path: Path) -> None:
    x = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    [feeds] = load_feeds(write_pb(tmp_path / "x.pb", x, "x"))
    assert_same(feeds["x"], x)


def test_ml_dtypes_saved_by_numpy_get_their_type_from_the_signature(tmp_path: Path) -> None:
    x = np.array([1.0, -2.0, 0.5], dtype=ml_dtypes.float8_e4m3fn)
    np.save(tmp_path / "f8.npy", x)
    [feeds] = load_feeds(tmp_path / "f8.npy", sig([spec("x", "FLOAT8E4M3FN", (3,))]))
    assert_same(feeds["x"], x)
    y = np.array([1.0, 3.0], dtype=ml_dtypes.bfloat16)
    np.savez(tmp_path / "bf16.npz", y=y)
    [feeds] = load_feeds(tmp_path / "bf16.npz", sig([spec("y", "BFLOAT16", (2,))]))
    assert_same(feeds["y"], y)


def test_arrays_onnx_cannot_store() -> None:
    with raises("array 'd' has dtype datetime64"):
        array_to_tensor(np.array(["2024-01-01"], dtype="datetime64[D]"), "d")
    with raises("array 'o' holds a dict"):
        array_to_tensor(np.array([{"a": 1}], dtype=object), "o")


def test_save_npz_refuses_non_string_objects(tmp_path: Path) -> None:
    with raises("array 'o' is an object array not of str"):
        save_npz(tmp_path / "o.npz", {"o": np.array([1, "a"], dtype=object)})
    assert not list(tmp_path.iterdir())


def test_save_npz_is_atomic_and_readable_by_numpy(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.npz"
    save_npz(path, {"s": np.array(["a", "bb"], dtype=object), "b": np.array([b"x"], dtype=object)})
    save_npz(path, {"x": np.arange(3)})  # replaces the old file
    assert [p.name for p in path.parent.iterdir()] == ["f.npz"]
    with np.load(path, allow_pickle=False) as z:
        assert z.files == ["x"]


def test_every_dtype_is_parametrized() -> None:
    assert [dtype_from_onnx(d.onnx) for d in DTYPES] == list(DTYPES)
    assert len(DTYPE_IDS) == len(set(DTYPE_IDS)) == len(DTYPES)
