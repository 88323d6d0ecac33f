"""Inputs that are not plain tensors: an optional tensor is fed like its element by every
verb and served; a sequence input (no array stands for it) is one line naming its type, from
every verb that makes or reads inputs, and a version the server refuses to load."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry.serve.server import running
from onnxferry.serve.settings import ServeSettings
from tests.helpers import Run

SEQUENCE_LINE = (
    "input 'xs' is a sequence (seq(tensor(FLOAT))), not a tensor: no array stands for it, so "
    "ferry can neither make nor read inputs for it"
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nontensor")
    xs = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, ["n", 4])
    stack = helper.make_node("ConcatFromSequence", ["xs"], ["y"], axis=0)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 4])
    graph = helper.make_graph([stack], "seqin", [xs], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(root / "seqin.onnx"))  # fmt: skip
    element = helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 4])
    o = helper.make_value_info("o", helper.make_optional_type_proto(element))
    nodes = [
        helper.make_node("OptionalGetElement", ["o"], ["e"]),
        helper.make_node("Relu", ["e"], ["y"]),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "optin", [o], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              str(root / "optin.onnx"))  # fmt: skip
    np.savez(root / "xs.npz", xs=np.ones((3, 4), np.float32))
    np.savez(root / "o.npz", o=np.array([[-1, 2, -3, 4]], np.float32))
    return root


@pytest.mark.parametrize(
    "verb",
    [
        ("compare", "{m}", "{m}"),
        ("bench", "{m}", "--iterations", "3"),
        ("optimize", "{m}", "--auto", "-o", "{tmp}/o.onnx"),
        ("compare", "{m}", "{m}", "--inputs", "{root}/xs.npz"),
        ("test", "{m}", "{root}/xs.npz"),
        ("explain", "{m}", "--inputs", "{root}/xs.npz", "-o", "{tmp}/e"),
        ("batch", "{m}", "{root}/xs.npz", "-o", "{tmp}/b"),
        ("package", "{m}", "--target", "mobile", "-o", "{tmp}/p"),
    ],
    ids=lambda v: " ".join(v[:1] + tuple(a for a in v[2:] if a.startswith("--"))),
)
def test_a_sequence_input_is_one_line_from_every_verb(
    ferry: Run, models: Path, tmp_path: Path, verb: tuple[str, ...]
) -> None:
    args = [a.format(m=models / "seqin.onnx", root=models, tmp=tmp_path) for a in verb]
    code, _, err = ferry(*args)
    assert code == 2, err
    assert SEQUENCE_LINE in err and err.count("\n") == 1, err


def test_an_optional_tensor_input_is_fed_like_its_element(
    ferry: Run, models: Path, tmp_path: Path
) -> None:
    model = models / "optin.onnx"
    inspected = json.loads(ferry("inspect", model, "--json")[1])["result"]["signature"]
    assert inspected["inputs"][0]["dtype"] == "optional(FLOAT)"
    assert inspected["inputs"][0]["kind"] == "optional"
    for args in (("compare", model, model), ("bench", model, "--iterations", "3"),
                 ("batch", model, models / "o.npz", "-o", tmp_path / "b")):  # fmt: skip
        code, _, err = ferry(*args)
        assert code == 0, (args, err)


def test_the_server_serves_an_optional_input_and_refuses_a_sequence_one(models: Path) -> None:
    with running(models / "optin.onnx") as url:
        body = {"inputs": [{"name": "o", "datatype": "FP32", "shape": [1, 4],
                            "data": [-1, 2, -3, 4]}]}  # fmt: skip
        request = urllib.request.Request(f"{url}/v2/models/optin/infer", json.dumps(body).encode())
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert answer["outputs"][0]["data"] == [0, 2, 0, 4]
    with running(models / "seqin.onnx", settings=ServeSettings(repository_api=True)) as url:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/v2/models/seqin/ready", timeout=30)
        info.value.close()
        assert info.value.code in (400, 503)
        index = urllib.request.Request(f"{url}/v2/repository/index", b"{}")
        rows = json.loads(urllib.request.urlopen(index, timeout=30).read())
        assert "which the V2 protocol cannot carry" in rows[0]["reason"], rows
