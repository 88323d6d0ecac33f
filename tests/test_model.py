"""Model: the safe loader, metadata, and atomic save, on real files in tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from onnxferry.errors import (
    InputError,
    InvalidModelError,
    ModelLoadError,
    UnsafeModelError,
    UsageError,
)
from onnxferry.model import Model, resolve_model_path
from onnxferry.safety import iter_tensors

from .helpers import (
    RELU,
    SITE_TENSORS,
    find_tensor,
    mlp,
    onnx_text,
    save,
    save_external,
    tensor_sites,
)

SITE_FEEDS = {
    "x": np.array([10.0, 20.0], np.float32),
    "cond": np.array(True),
    "seq": np.ones((3, 2), np.float32),
}
X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -3.0, 0.0]], np.float32)


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def one_line(e: pytest.ExceptionInfo[Exception]) -> str:
    text = str(e.value)
    assert "\n" not in text
    assert "Traceback" not in text
    assert isinstance(e.value, InputError)
    assert e.value.hint, "every error says what to do"
    return text


# --- a good model and its metadata -------------------------------------------------------------


def test_load_gives_every_property(tmp_path: Path) -> None:
    proto = mlp()
    proto.producer_name, proto.producer_version = "exporter", "1.2"
    helper.set_model_props(proto, {"author": "ferry", "task": "classify"})
    path = save(proto, tmp_path / "model.onnx")

    model = Model.load(path)

    assert model.path == path
    assert model.name == tmp_path.name  # "<dir>/model.onnx" is named after its directory
    sig = model.signature
    assert [(s.name, s.dtype.onnx_name, s.shape) for s in sig.inputs] == [
        ("x", "FLOAT", ("batch", 4))
    ]
    assert [(s.name, s.dtype.onnx_name, s.shape) for s in sig.outputs] == [
        ("probs", "FLOAT", ("batch", 3))
    ]
    assert model.ir_version == 10
    assert model.opset_imports == {"ai.onnx": 21}
    assert model.producer == "exporter 1.2"
    assert model.metadata_props == {"author": "ferry", "task": "classify"}
    assert model.ops_histogram == {"MatMul": 2, "Add": 2, "Relu": 1, "Softmax": 1}
    assert model.parameter_count == 4 * 8 + 8 + 8 * 3 + 3
    assert model.external_files == ()
    assert model.size_bytes == path.stat().st_size
    assert model.digest == sha256(path)
    summary = model.summary()
    assert summary["node_count"] == 6
    assert summary["external_data_files"] == []
    assert summary["signature"]["inputs"][0]["name"] == "x"


def test_histogram_and_parameters_reach_subgraphs_and_functions(tmp_path: Path) -> None:
    model = Model.load(save(tensor_sites(), tmp_path / "sites.onnx"))

    assert model.ops_histogram == {
        "Add": 8,  # 4 main, Loop body 1, Scan body 2, function 1
        "Constant": 7,  # 3 main, one in each of then_branch, Loop, Scan, function
        "Identity": 2,  # else_branch, Loop body
        "If": 1,
        "Loop": 1,
        "Scan": 1,
        "local::AddK": 1,
        "custom::Holder": 1,
    }
    assert model.opset_imports == {"ai.onnx": 21, "local": 1, "custom": 1}
    # initializer w, one stored sparse value; Constants: const_value, the sparse one, then,
    # the Loop's trip count (value_int), Loop body, Scan body, the function's.
    assert model.parameter_count == 2 + 1 + (2 + 1 + 2 + 1 + 2 + 2 + 2)


def test_parameters_in_constant_nodes_count_like_initializers() -> None:
    as_initializer = mlp()
    as_constants = mlp()
    graph = as_constants.graph
    for tensor in reversed(graph.initializer):
        graph.node.insert(0, helper.make_node("Constant", [], [tensor.name], value=tensor))
    del graph.initializer[:]
    graph.node.insert(0, helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0]))
    graph.node.insert(0, helper.make_node("Constant", [], ["j"], value_float=3.0))
    expected = Model.from_proto(as_initializer).parameter_count
    assert Model.from_proto(as_constants).parameter_count == expected + 2 + 1


def test_weight_type_is_the_float_type_of_most_weight_elements() -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    assert Model.from_proto(mlp()).weight_type == "FLOAT"
    half = convert_float_to_float16(mlp(), keep_io_types=True)  # float32 in and out
    assert Model.from_proto(half).weight_type == "FLOAT16"
    in_constants = mlp()  # Paddle's way: every weight in a Constant node
    graph = in_constants.graph
    for tensor in reversed(graph.initializer):
        graph.node.insert(0, helper.make_node("Constant", [], [tensor.name], value=tensor))
    del graph.initializer[:]
    assert Model.from_proto(convert_float_to_float16(in_constants)).weight_type == "FLOAT16"
    no_weights = helper.make_model(
        helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "relu",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [2])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [2])],
        )
    )
    assert Model.from_proto(no_weights).weight_type is None


def test_import_does_not_load_onnx() -> None:
    code = "import sys, onnxferry.model; assert 'onnx' not in sys.modules, 'onnx imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_proto_is_in_memory() -> None:
    proto = onnx_text(RELU)
    model = Model.from_proto(proto)
    assert model.path is None
    assert model.name == "relu"
    assert model.size_bytes == len(proto.SerializeToString())
    assert model.digest == hashlib.sha256(proto.SerializeToString()).hexdigest()


# --- external data: digest, size, files --------------------------------------------------------


def test_external_data_counts_in_digest_and_size(tmp_path: Path) -> None:
    path = save_external(mlp(), tmp_path / "model.onnx")
    data = tmp_path / "weights.bin"

    model = Model.load(path)

    assert model.external_files == (data.resolve(),)
    assert model.size_bytes == path.stat().st_size + data.stat().st_size
    assert model.digest == sha256(path, data)
    assert model.summary()["external_data_files"] == [str(data.resolve())]
    np.testing.assert_allclose(
        run(path, {"x": X})[0], run(save(mlp(), tmp_path / "i.onnx"), {"x": X})[0]
    )

    content = bytearray(data.read_bytes())
    content[-1] ^= 0xFF  # same size, one bit pattern changed
    data.write_bytes(bytes(content))
    assert Model.load(path).digest != model.digest


def test_every_site_may_hold_external_data(tmp_path: Path) -> None:
    # The onnx checker cannot read sparse indices from external data, so those stay inline.
    names = [n for n in SITE_TENSORS if n not in ("s_indices", "held", "held_sparse")]
    inline = tensor_sites(custom_node=False)
    path = save_external(inline, tmp_path / "m" / "model.onnx", names)

    model = Model.load(path)

    assert model.external_files == ((tmp_path / "m" / "weights.bin").resolve(),)
    external = [s.tensor.name for s in iter_tensors(model.proto) if s.tensor.external_data]
    assert sorted(external) == sorted(names)
    expected = run(save(inline, tmp_path / "inline.onnx"), SITE_FEEDS)
    for got, want in zip(run(path, SITE_FEEDS), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_external_files_are_distinct_in_first_reference_order(tmp_path: Path) -> None:
    first = save_external(tensor_sites(), tmp_path / "first.onnx", ["w", "then_value"], "a.bin")
    proto = onnx.load(str(first), load_external_data=False)
    path = save_external(proto, tmp_path / "model.onnx", ["const_value"], "b.bin")
    first.unlink()
    proto = onnx.load(str(path), load_external_data=False)
    for entry in find_tensor(proto, "then_value").external_data:
        if entry.key == "location":
            entry.value = "./a.bin"  # the same file, spelled differently
    onnx.save(proto, str(path))

    model = Model.load(path)

    assert model.external_files == ((tmp_path / "a.bin").resolve(), (tmp_path / "b.bin").resolve())


# --- directories ----------------------------------------------------------------------------


def test_directory_with_one_model(tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "classifier.onnx")
    (tmp_path / "README.txt").write_text("notes")
    assert Model.load(tmp_path).path == path
    assert resolve_model_path(tmp_path) == path


def test_directory_prefers_model_onnx(tmp_path: Path) -> None:
    save(onnx_text(RELU), tmp_path / "a.onnx")
    path = save(mlp(), tmp_path / "model.onnx")
    save(onnx_text(RELU), tmp_path / "z.onnx")
    assert Model.load(tmp_path).path == path


def test_directory_without_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError) as info:
        Model.load(tmp_path)
    text = one_line(info)
    assert "no .onnx model" in text
    assert "'notes.txt', 'weights.bin'" in text
    assert "model.onnx" in text


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        Model.load(tmp_path)
    assert "it is empty" in one_line(info)


def test_directory_with_several_models(tmp_path: Path) -> None:
    save(onnx_text(RELU), tmp_path / "a.onnx")
    save(mlp(), tmp_path / "b.onnx")
    with pytest.raises(ModelLoadError) as info:
        Model.load(tmp_path)
    text = one_line(info)
    assert "2 models ('a.onnx', 'b.onnx')" in text
    assert "model.onnx" in text


# --- bad input --------------------------------------------------------------------------------


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nope.onnx"


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    return path


def _random(tmp_path: Path) -> Path:
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated(fraction: float) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        data = mlp().SerializeToString()
        path = tmp_path / "truncated.onnx"
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return make


def _text(tmp_path: Path) -> Path:
    path = tmp_path / "text.onnx"
    path.write_text(RELU)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)
    return path


def _not_a_model(tmp_path: Path) -> Path:
    # A valid protobuf of another message type: parses, but holds no graph.
    path = tmp_path / "tensor.onnx"
    path.write_bytes(onnx.numpy_helper.from_array(np.ones(4, np.float32)).SerializeToString())
    return path


BAD_INPUTS = {
    "missing": (_missing, "no such file or directory"),
    "empty file": (_empty, "empty"),
    "random bytes": (_random, "not an ONNX model"),
    "truncated 10%": (_truncated(0.1), "not"),
    "truncated 50%": (_truncated(0.5), "not"),
    "truncated 90%": (_truncated(0.9), "not"),
    "text file": (_text, "not an ONNX model"),
    "fifo": (_fifo, "not a regular file"),
    "other message": (_not_a_model, "not an ONNX model"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_clear_line(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        Model.load(path)
    text = one_line(info)
    assert str(path) in text
    assert expected in text
    assert not isinstance(info.value, UnsafeModelError)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: setattr(p, "ir_version", 99), "ir_version"),
        (lambda p: p.graph.node.append(helper.make_node("NoSuchOp", ["x"], ["z"])), "NoSuchOp"),
        (lambda p: p.graph.node[0].ClearField("op_type"), "op_type"),
    ],
    ids=["ir_version", "unknown op", "no op_type"],
)
def test_checker_failure_is_invalid_model_when_strict(
    tmp_path: Path, change: Callable[[onnx.ModelProto], None], expected: str
) -> None:
    proto = mlp()
    change(proto)
    path = save(proto, tmp_path / "model.onnx")
    with pytest.raises(InvalidModelError) as info:
        Model.load(path, strict=True)
    text = one_line(info)
    assert "onnx checker" in text
    assert expected in text
    # Not a gate by default: the model is described, and running it is ONNX Runtime's call.
    assert Model.load(path).signature.input_names == ["x"]


# --- external data that escapes or lies ---------------------------------------------------------

Edit = Callable[[Path, Path, dict[str, str]], None]
"""(model directory, outside directory, external_data entries to edit in place)."""


def _move_out(model_dir: Path, outside: Path) -> Path:
    outside.mkdir(exist_ok=True)
    return Path(shutil.move(model_dir / "weights.bin", outside / "weights.bin"))


def _relocate(location: str, *, move: bool = True) -> Edit:
    def edit(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
        if move:
            _move_out(model_dir, outside)
        entries["location"] = location.replace("OUTSIDE", str(outside))

    return edit


def _symlink_file(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    (model_dir / "weights.bin").symlink_to(_move_out(model_dir, outside))


def _symlink_dir(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    _move_out(model_dir, outside)
    (model_dir / "sub").symlink_to(outside, target_is_directory=True)
    entries["location"] = "sub/weights.bin"


def _inner_symlink(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    # A link that stays inside the directory is still refused: no links at all.
    (model_dir / "real").mkdir()
    shutil.move(model_dir / "weights.bin", model_dir / "real" / "weights.bin")
    (model_dir / "alias").symlink_to("real", target_is_directory=True)
    entries["location"] = "alias/weights.bin"


def _hardlink(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    os.link(_move_out(model_dir, outside), model_dir / "weights.bin")


def _missing_file(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    (model_dir / "weights.bin").unlink()


def _directory(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    (model_dir / "weights.bin").unlink()
    (model_dir / "weights.bin").mkdir()


def _fifo_file(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    (model_dir / "weights.bin").unlink()
    os.mkfifo(model_dir / "weights.bin")


def _entry(key: str, value: str | None) -> Edit:
    def edit(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
        if value is None:
            entries.pop(key)
        else:
            entries[key] = value

    return edit


def _past_end(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    size = (model_dir / "weights.bin").stat().st_size
    entries["length"] = str(size - int(entries["offset"]) + 1)


def _offset_past_end(model_dir: Path, outside: Path, entries: dict[str, str]) -> None:
    entries.pop("length")
    entries["offset"] = str((model_dir / "weights.bin").stat().st_size + 1)


ESCAPES: dict[str, tuple[Edit, str]] = {
    "parent": (_relocate("../outside/weights.bin"), "climbs out with '..'"),
    "parent nested": (_relocate("sub/../../outside/weights.bin"), "'..'"),
    "parent backslash": (_relocate("..\\outside\\weights.bin"), "'..'"),
    "absolute": (_relocate("OUTSIDE/weights.bin"), "absolute path"),
    "absolute inside": (_relocate("/etc/passwd", move=False), "absolute path"),
    "symlink file": (_symlink_file, "symbolic link ('weights.bin')"),
    "symlink dir": (_symlink_dir, "symbolic link ('sub')"),
    "symlink inside": (_inner_symlink, "symbolic link ('alias')"),
    "hard link": (_hardlink, "hard link"),
    "missing": (_missing_file, "does not exist"),
    "directory": (_directory, "not a regular file"),
    "fifo": (_fifo_file, "not a regular file"),
    "no location": (_entry("location", None), "gives no location"),
    "offset negative": (_entry("offset", "-1"), "has offset '-1', not a non-negative integer"),
    "offset float": (_entry("offset", "1.5"), "not a non-negative integer"),
    "length negative": (_entry("length", "-8"), "has length '-8', not a non-negative integer"),
    "length text": (_entry("length", "eight"), "not a non-negative integer"),
    "length past end": (_past_end, "too short for offset"),
    "offset past end": (_offset_past_end, "shorter than offset"),
}

SITE_PLACES = {
    "w": "initializer of graph 'sites'",
    "s": "values of sparse initializer 's' of graph 'sites'",
    "s_indices": "indices of sparse initializer 's' of graph 'sites'",
    "const_value": "attribute 'value' of Constant node making 'c'",
    "cs_values": "sparse tensor 'cs_values' in attribute 'sparse_value'",
    "then_value": "graph 'then_branch' of If node making 'y_if'",
    "loop_value": "graph 'body' of Loop node making 'y_loop'",
    "scan_value": "graph 'body' of Scan node making 'y_scan'",
    "function_value": "function 'local.AddK'",
    "held": "attribute 'payload' of node 'holder' (Holder)",
    "held_sparse": "sparse tensor 'held_sparse' in attribute 'sparse_payload' of node 'holder'",
}


def _escaping_model(tmp_path: Path, site: str, edit: Edit) -> tuple[Path, str]:
    """The sites model with only ``site`` in external data, then ``edit`` applied."""
    model_dir = tmp_path / "model"
    path = save_external(tensor_sites(), model_dir / "model.onnx", [site])
    proto = onnx.load(str(path), load_external_data=False)
    tensor = find_tensor(proto, site)
    entries = {e.key: e.value for e in tensor.external_data}
    edit(model_dir, tmp_path / "outside", entries)
    del tensor.external_data[:]
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path, entries.get("location", "")


@pytest.mark.parametrize("site", SITE_TENSORS)
@pytest.mark.parametrize("escape", ESCAPES)
def test_unsafe_external_data_is_refused(tmp_path: Path, escape: str, site: str) -> None:
    edit, expected = ESCAPES[escape]
    path, location = _escaping_model(tmp_path, site, edit)

    with pytest.raises(UnsafeModelError) as info:
        Model.load(path)

    text = one_line(info)
    assert f"tensor {site!r}" in text
    assert SITE_PLACES[site] in text
    assert expected in text
    if location:
        assert repr(location) in text


def test_sites_model_is_loadable_before_the_edits(tmp_path: Path) -> None:
    # The escape tests above start from this model; without an edit it loads.
    for site in SITE_TENSORS:
        if site in ("s_indices", "held", "held_sparse"):
            continue  # not readable by the onnx checker / ONNX Runtime from external data
        path = save_external(tensor_sites(), tmp_path / site / "model.onnx", [site])
        assert len(Model.load(path).external_files) == 1


# --- size limit -------------------------------------------------------------------------------


def test_size_limit_covers_external_data(tmp_path: Path) -> None:
    path = save_external(mlp(hidden=64), tmp_path / "model.onnx")
    total = path.stat().st_size + (tmp_path / "weights.bin").stat().st_size

    assert Model.load(path, max_size=total).size_bytes == total
    with pytest.raises(UnsafeModelError) as info:
        Model.load(path, max_size=total - 1)
    text = one_line(info)
    assert f"({total} bytes)" in text
    assert f"({total - 1} bytes)" in text
    assert "max_size" in text


def test_file_past_protobuf_limit_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(2**31 + 1)  # sparse: takes no disk space
    with pytest.raises(ModelLoadError) as info:
        Model.load(path)
    assert "past the 2 GiB" in one_line(info)


def test_size_limit_checked_before_reading(tmp_path: Path) -> None:
    path = save(mlp(), tmp_path / "model.onnx")
    size = path.stat().st_size
    with pytest.raises(UnsafeModelError) as info:
        Model.load(path, max_size=size // 2)
    assert f"({size} bytes)" in one_line(info)


# --- atomic save --------------------------------------------------------------------------------


def test_save_writes_one_file_atomically(tmp_path: Path) -> None:
    proto = mlp()
    target = tmp_path / "out" / "deep" / "model.onnx"

    saved = Model.from_proto(proto).save(target)

    assert listing(target.parent) == ["model.onnx"]
    assert target.read_bytes() == proto.SerializeToString()
    assert saved.path == target
    assert saved.external_files == ()
    assert saved.digest == sha256(target)


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    target = save(onnx_text(RELU), tmp_path / "model.onnx")
    saved = Model.from_proto(mlp()).save(target)
    assert listing(tmp_path) == ["model.onnx"]
    assert saved.ops_histogram["MatMul"] == 2


def test_failed_save_onto_a_directory_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    (tmp_path / "model.onnx" / "keep.txt").write_text("keep")

    with pytest.raises(InputError) as info:
        Model.from_proto(mlp()).save(tmp_path / "model.onnx")

    assert "cannot write" in one_line(info)
    assert listing(tmp_path) == ["model.onnx"]
    assert listing(tmp_path / "model.onnx") == ["keep.txt"]


def test_failed_save_keeps_the_previous_model(tmp_path: Path) -> None:
    # The data file cannot be put in place (a directory is there): the model file that was
    # at the target stays as it was, and no temporary file is left.
    old = save(onnx_text(RELU), tmp_path / "model.onnx").read_bytes()
    (tmp_path / "model.data").mkdir()

    with pytest.raises(InputError):
        Model.from_proto(mlp(hidden=256)).save(tmp_path / "model.onnx", external_data=True)

    assert listing(tmp_path) == ["model.data", "model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == old


def test_failed_save_puts_the_previous_data_file_back(tmp_path: Path) -> None:
    # The data file is renamed into place first; when the model file then cannot be, the
    # previous data file comes back.
    (tmp_path / "model.data").write_bytes(b"previous data")
    (tmp_path / "model.onnx").mkdir()

    with pytest.raises(InputError):
        Model.from_proto(mlp(hidden=256)).save(tmp_path / "model.onnx", external_data=True)

    assert listing(tmp_path) == ["model.data", "model.onnx"]
    assert (tmp_path / "model.data").read_bytes() == b"previous data"


def test_failed_save_from_changed_external_data(tmp_path: Path) -> None:
    source = Model.load(save_external(mlp(hidden=64), tmp_path / "src" / "model.onnx"))
    with open(tmp_path / "src" / "weights.bin", "r+b") as f:
        f.truncate(100)  # the data file changed after loading
    out = tmp_path / "out"
    old = save(onnx_text(RELU), out / "model.onnx").read_bytes()

    with pytest.raises(UnsafeModelError) as info:
        source.save(out / "model.onnx")

    assert "too short for offset" in one_line(info)
    assert listing(out) == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == old


def test_save_carries_external_data_to_a_new_directory(tmp_path: Path) -> None:
    names = [n for n in SITE_TENSORS if n not in ("s_indices", "held", "held_sparse")]
    inline = tensor_sites(custom_node=False)
    expected = run(save(inline, tmp_path / "inline.onnx"), SITE_FEEDS)
    source = Model.load(save_external(inline, tmp_path / "a" / "model.onnx", names))

    saved = source.save(tmp_path / "b" / "copy.onnx")
    shutil.rmtree(tmp_path / "a")

    assert listing(tmp_path / "b") == ["copy.data", "copy.onnx"]
    assert saved.external_files == ((tmp_path / "b" / "copy.data").resolve(),)
    reloaded = Model.load(tmp_path / "b")
    assert reloaded.digest == saved.digest
    for got, want in zip(run(reloaded.path or Path(), SITE_FEEDS), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_save_over_its_own_files(tmp_path: Path) -> None:
    path = save_external(mlp(hidden=64), tmp_path / "model.onnx", location="model.data")
    expected = run(path, {"x": X})[0]

    saved = Model.load(path).save(path)

    assert listing(tmp_path) == ["model.data", "model.onnx"]
    np.testing.assert_array_equal(run(saved.path or Path(), {"x": X})[0], expected)


def test_save_with_external_data_true(tmp_path: Path) -> None:
    proto = mlp(hidden=256)  # w1 (4x256) and w2 (256x3) reach 1 KiB; b1, b2 do not
    saved = Model.from_proto(proto).save(tmp_path / "model.onnx", external_data=True)

    assert listing(tmp_path) == ["model.data", "model.onnx"]
    external = {s.tensor.name for s in iter_tensors(saved.proto) if s.tensor.external_data}
    assert external == {"w1", "w2", "b1"}  # b1 has 256 floats = 1 KiB
    assert saved.parameter_count == Model.from_proto(proto).parameter_count
    np.testing.assert_array_equal(
        run(saved.path or Path(), {"x": X})[0], run(save(proto, tmp_path / "i.onnx"), {"x": X})[0]
    )


def test_save_with_external_data_false_inlines_everything(tmp_path: Path) -> None:
    source = Model.load(save_external(mlp(), tmp_path / "a" / "model.onnx"))
    saved = source.save(tmp_path / "b" / "model.onnx", external_data=False)
    assert listing(tmp_path / "b") == ["model.onnx"]
    assert saved.external_files == ()
    assert saved.proto.SerializeToString() == mlp().SerializeToString()


def test_save_in_memory_model_with_external_references(tmp_path: Path) -> None:
    path = save_external(mlp(), tmp_path / "model.onnx")
    model = Model.from_proto(onnx.load(str(path), load_external_data=False))
    with pytest.raises(InputError) as info:
        model.save(tmp_path / "out" / "model.onnx")
    assert "Model.load" in one_line(info)
    assert not (tmp_path / "out").exists()


# --- past protobuf's 2 GiB ----------------------------------------------------------------------

BIG = """
<ir_version: 10, opset_import: ["" : 21]>
big (float[1] x) => (float y) {
    total = ReduceSum <keepdims = 0> (weights)
    x1 = Squeeze (x)
    y = Add (total, x1)
}
"""


@pytest.fixture
def roomy_tmp(tmp_path: Path) -> Iterator[Path]:
    """A fresh folder in RAM (/dev/shm) when it has room for a few GB, else ``tmp_path``:
    writing 2 GiB took 27 s of this test's 36 on a VM's disk (about 80 MB/s), 1 s in RAM. The
    code under test is the same either way; only the disk is not what is tested."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shutil.disk_usage(shm).free < 6 * 2**30:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="ferry-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_model_over_2_gib_round_trips(roomy_tmp: Path) -> None:
    tmp_path = roomy_tmp
    count = (2**31 + 2**26) // 4  # float32 elements: 2 GiB + 64 MiB of weights
    proto = onnx_text(BIG, check=False)
    tensor = proto.graph.initializer.add()  # built in place: copying it would double memory
    tensor.name, tensor.data_type = "weights", onnx.TensorProto.FLOAT
    tensor.dims.append(count)
    tensor.raw_data = bytes(4 * count)
    model = Model.from_proto(proto)
    with pytest.raises(UsageError) as info:
        model.save(tmp_path / "one.onnx", external_data=False)
    assert "2 GiB" in one_line(info)
    assert listing(tmp_path) == []

    saved = model.save(tmp_path / "big.onnx")
    del model, proto, tensor

    data = tmp_path / "big.data"
    assert listing(tmp_path) == ["big.data", "big.onnx"]
    assert saved.external_files == (data.resolve(),)
    assert data.stat().st_size >= 4 * count
    assert (tmp_path / "big.onnx").stat().st_size < 4096
    reloaded = Model.load(tmp_path)
    assert reloaded.parameter_count == count
    assert reloaded.size_bytes == (tmp_path / "big.onnx").stat().st_size + data.stat().st_size
    del saved, reloaded
    (y,) = run(tmp_path / "big.onnx", {"x": np.array([1.5], np.float32)})
    assert float(y) == 1.5


@pytest.mark.parametrize(
    ("head", "said", "hint"),
    [
        (b"\x18\x00\x00\x00ORTM\x00\x00", "an ONNX Runtime format (.ort) model", "--target mobile"),
        (b"\x1c\x00\x00\x00TFL3\x00\x00", "a TensorFlow Lite model", "ferry convert"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file", "ferry convert"),
        (b"PK\x03\x04\x14\x00\x00\x00", "a zip archive", "ferry convert"),
        (b"\x80\x04\x95\x10\x00\x00\x00\x00", "a Python pickle", "--trust-pickle"),
    ],
    ids=["ort", "tflite", "hdf5", "zip", "pickle"],
)
def test_another_model_format_is_named_with_what_to_do(
    head: bytes, said: str, hint: str, tmp_path: Path
) -> None:
    """A .ort, .tflite, Keras, PyTorch or pickle file given where an ONNX model goes."""
    path = tmp_path / "model.bin"
    path.write_bytes(head + bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError) as caught:
        Model.load(path)
    message = caught.value.message
    assert said in message and message.endswith("not an ONNX model"), message
    assert hint in (caught.value.hint or "")
