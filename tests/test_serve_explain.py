"""POST /v2/models/{m}[/versions/{v}]/explain on a real server, with a real HTTP client: the
attributions rank the features the model uses, SHAP's efficiency holds, the server's caps and
the request's deadline are enforced, auth applies, and the endpoint is documented and counted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxferry
from onnxferry.serve.server import running
from onnxferry.serve.settings import ServeSettings
from tests.helpers import gru_with_one_state

KEY = "explain-key-0123456789"
WEIGHTS = np.array([0, 0, 3.0, 0, 0, -2.0, 0, 0], np.float32)
"""The model's output is x @ WEIGHTS: only features 2 and 5 matter."""
X = [[1.0, 1.0, 2.0, 1.0, 1.0, 1.5, 1.0, 1.0]]
BACKGROUND = [[0.0] * 8, [0.5] * 8, [1.0] * 8, [-0.5] * 8]


def linear(path: Path) -> Path:
    w = numpy_helper.from_array(WEIGHTS.reshape(8, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return linear(tmp_path_factory.mktemp("explain") / "linear.onnx")


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[str]:
    settings = ServeSettings(api_keys=(KEY,), explain_max_evals=5000)
    with running(model, settings=settings) as url:
        yield url


def explain(url: str, rows: list[list[float]], key: str | None = KEY, **parameters: Any) -> Any:
    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [len(rows), 8],
                "datatype": "FP32",
                "data": np.ravel(rows).tolist(),
            }
        ],
        "parameters": parameters,
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v2/models/linear/explain", json=body, headers=headers, timeout=60)


def outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
        for o in response.json()["outputs"]
    }


@pytest.mark.parametrize(
    "method", ["occlusion", "kernelshap", "permutation", "lime", "integrated-gradients"]
)
def test_every_method_ranks_the_features_the_model_uses_first(server: str, method: str) -> None:
    found = outputs(explain(server, [*X, *BACKGROUND], method=method, max_evals=4000))
    attributions = found["attributions"]
    assert attributions.shape == (5, 8)
    top = set(np.argsort(-np.abs(attributions[0]))[:2].tolist())
    assert top == {2, 5}, attributions[0]


@pytest.mark.parametrize("method", ["kernelshap", "integrated-gradients"])
def test_attributions_add_up_to_the_score_minus_the_base(server: str, method: str) -> None:
    found = outputs(explain(server, [*X, *BACKGROUND], method=method))
    gap = found["scores"] - found["base_values"]
    np.testing.assert_allclose(found["attributions"].sum(axis=1), gap, atol=1e-3)
    assert found["scores"][0] == pytest.approx(float(np.asarray(X[0]) @ WEIGHTS), abs=1e-5)


def test_a_version_path_answers_too(server: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": X[0]}]}
    response = httpx.post(
        f"{server}/v2/models/linear/versions/1/explain",
        json={**body, "parameters": {"method": "occlusion"}},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert outputs(response)["attributions"].shape == (1, 8)


def test_the_endpoint_is_behind_the_same_keys(server: str) -> None:
    assert explain(server, X, key=None, method="occlusion").status_code == 401
    assert explain(server, X, key="wrong", method="occlusion").status_code == 401


@pytest.mark.parametrize(
    ("parameters", "status", "words"),
    [
        ({"method": "magic"}, 400, "unknown method 'magic'"),
        ({"method": "occlusion", "max_evals": "many"}, 400, "max_evals must be int"),
        ({"method": "occlusion", "target": 3}, 400, "target"),
        ({"method": "kernelshap", "max_evals": 1}, 400, "max_evals"),
        ({"method": "integrated-gradients", "max_evals": 8}, 400, "gradients needs at least"),
        ({"method": "lime", "seed": -1}, 400, "seed must be from 0 to 4294967295"),
        ({"method": "kernelshap", "seed": 2**40}, 400, "seed must be from 0 to 4294967295"),
    ],
)
def test_bad_parameters_are_one_line_errors(
    server: str, parameters: dict[str, Any], status: int, words: str
) -> None:
    response = explain(server, [*X, *BACKGROUND], **parameters)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error


def test_the_request_deadline_is_enforced(server: str) -> None:
    response = explain(server, [*X, *BACKGROUND] * 20, method="kernelshap", timeout=2000)
    assert response.status_code == 504, response.text
    assert "deadline" in response.json()["error"]
    # and the server keeps serving
    assert outputs(explain(server, X, method="occlusion"))["attributions"].shape == (1, 8)


def test_the_server_caps_evaluations(model: Path) -> None:
    with running(model, settings=ServeSettings(explain_max_evals=20)) as url:
        response = explain(url, [*X, *BACKGROUND], key=None, method="kernelshap", max_evals=9999)
        assert response.status_code == 400 and "model evaluations" in response.json()["error"]


def test_explanations_are_documented_and_counted(server: str) -> None:
    outputs(explain(server, X, method="occlusion"))
    headers = {"Authorization": f"Bearer {KEY}"}
    paths = httpx.get(f"{server}/openapi.json", headers=headers).json()["paths"]
    assert "post" in paths["/v2/models/{model}/explain"]
    assert "post" in paths["/v2/models/{model}/versions/{version}/explain"]
    metrics = httpx.get(f"{server}/metrics", headers=headers).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("ferry_explanations_total{") and 'method="occlusion"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "ferry_explain_evaluations_total" in metrics


def test_the_kind_of_an_input_its_shape_cannot_tell_is_a_parameter(tmp_path: Path) -> None:
    """x: [batch, 7, 8] floats is neither an image nor a row of features by its shape (a
    sequence model's input): 400 asking for the kind, as the endpoint takes it (the command
    line's ``--kind``, which it said, is ``parameters.kind``); with ``kind`` it is
    explained."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        "sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 7, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    path = tmp_path / "sequence.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    rows = np.random.default_rng(0).normal(size=(2, 7, 8)).astype(np.float32)
    body: dict[str, Any] = {
        "inputs": [
            {"name": "x", "shape": [2, 7, 8], "datatype": "FP32", "data": rows.ravel().tolist()}
        ],
        "parameters": {"method": "occlusion"},
    }
    with running(path) as url:
        asked = httpx.post(f"{url}/v2/models/sequence/explain", json=body, timeout=60)
        asked_for = asked.json()["error"]
        assert asked.status_code == 400 and "give the kind: parameters.kind " in asked_for
        assert "--" not in asked_for, asked_for  # the command line's options are not the API's
        body["parameters"]["kind"] = "tabular"
        answered = httpx.post(f"{url}/v2/models/sequence/explain", json=body, timeout=60)
        assert outputs(answered)["attributions"].shape == (2, 7, 8)


def test_a_value_that_is_not_a_number_is_400_and_the_server_keeps_serving(tmp_path: Path) -> None:
    """y = log(x @ w): finite on the row sent, -inf on occlusion's baseline (zeros)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["sum"]), helper.make_node("Log", ["sum"], ["y"])],
        "logsum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.ones((8, 1), np.float32), "w")],
    )
    path = tmp_path / "logsum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    body = {
        "inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32", "data": [1.0] * 8}],
        "parameters": {"method": "occlusion"},
    }
    with running(path) as url:
        response = httpx.post(f"{url}/v2/models/logsum/explain", json=body, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert "is -inf on 1 of 2 rows" in error and "\n" not in error
        assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200


def test_a_model_whose_state_holds_one_row_explains_each_row_alone(tmp_path: Path) -> None:
    """A GRU given ``h0: [1, 1, 2]`` refuses two rows at once: the executor's error was a 500
    for the explanation's probe; now its rows run one at a time, as on the command line."""
    path = tmp_path / "gru.onnx"
    onnx.save(gru_with_one_state(), path)
    x = np.random.default_rng(9).standard_normal((2, 5, 3)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "x", "shape": [2, 5, 3], "datatype": "FP32", "data": x.ravel().tolist()},
            {"name": "h0", "shape": [1, 1, 2], "datatype": "FP32", "data": [0.0, 0.0]},
        ],
        "parameters": {"method": "occlusion", "kind": "signal"},
    }
    with running(path) as url:
        served = outputs(httpx.post(f"{url}/v2/models/gru/explain", json=body, timeout=60))
    state = np.zeros((1, 1, 2), np.float32)
    for i in range(2):
        row = {"x": x[i : i + 1], "h0": state}
        alone = onnxferry.explain(path, row, "occlusion", kind="signal")
        np.testing.assert_allclose(served["attributions"][i], alone.attributions[0], atol=1e-5)
