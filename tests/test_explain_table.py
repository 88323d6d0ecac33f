"""Explaining a table model (one ``[batch, 1]`` input per DataFrame column, as skl2onnx writes
a ColumnTransformer pipeline), string categories among the columns: every method ranks the
column the model reads first, SHAP adds up, and the files name the columns.

Ground truth: a passenger survives when they embarked at "C", whatever their age and fare;
the logistic regression reads the one-hot of the port and little else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
pytest.importorskip("shap")
pytest.importorskip("lime")

from onnxferry.data import save_npz
from onnxferry.errors import DataError
from onnxferry.explain import MethodUnavailable, explain
from onnxferry.explain.table import TableCoder, table_columns
from onnxferry.model import Model
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

PORTS = np.array(["S", "C", "Q"], dtype=object)


def _columns(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.uniform(1, 80, (rows, 1)).astype(np.float32),
        "embarked": PORTS[rng.integers(0, 3, rows)].reshape(-1, 1),
        "fare": rng.exponential(30, (rows, 1)).astype(np.float32),
    }


def _port_model(tmp_path: Path) -> Path:
    """skl2onnx's own conversion of a DataFrame pipeline: scaled age and fare, one-hot port,
    a logistic regression fitted on survival = (port == "C")."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    table = {k: v.reshape(-1) for k, v in _columns(300, seed=0).items()}
    frame = pd.DataFrame(table)
    columns = make_column_transformer(
        (StandardScaler(), ["age", "fare"]), (OneHotEncoder(), ["embarked"])
    )
    pipeline = make_pipeline(columns, LogisticRegression(C=10.0))
    pipeline.fit(frame, frame.embarked == "C")
    types = [
        ("age", FloatTensorType([None, 1])),
        ("embarked", StringTensorType([None, 1])),
        ("fare", FloatTensorType([None, 1])),
    ]
    proto = convert_sklearn(
        pipeline, initial_types=types, options={id(pipeline): {"zipmap": False}}
    )
    path = tmp_path / "titanic.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def test_a_table_models_inputs_are_its_columns(tmp_path: Path) -> None:
    model = Model.load(_port_model(tmp_path))
    assert table_columns(model.signature) == ["age", "embarked", "fare"]
    coder = TableCoder.fit(model, ["age", "embarked", "fare"], [_columns(4, seed=1)])
    assert coder.categorical == (1,) and set(coder.categories[1]) == {"S", "C", "Q"}
    rows = coder.encode(_columns(4, seed=1))
    assert rows.shape == (4, 3) and rows.dtype == np.float64
    back = coder.decode(rows + 0.2)  # a perturbed code rounds to its category
    assert back["embarked"].tolist() == _columns(4, seed=1)["embarked"].tolist()
    assert back["age"].dtype == np.float32 and back["age"].shape == (4, 1)


@pytest.mark.parametrize("method", ["kernelshap", "permutation", "lime", "occlusion"])
def test_every_method_ranks_the_category_the_model_reads_first(tmp_path: Path, method: str) -> None:
    """Before, the first input (age) was explained alone, the port held fixed."""
    path = _port_model(tmp_path)
    inputs = _columns(6, seed=2)
    background = _columns(40, seed=3)
    explanation = explain(path, inputs, method, background=background, target=1)
    assert explanation.attributions.shape == (6, 3)
    assert explanation.input_name == "age, embarked, fare"
    ports, counts = np.unique(background["embarked"], return_counts=True)
    hidden = ports[np.argmax(counts)]  # occlusion hides a category behind the commonest one
    for i in range(6):
        if method == "occlusion" and inputs["embarked"][i, 0] == hidden:
            assert explanation.attributions[i, 1] == 0  # hiding it changes nothing
            continue
        assert explanation.ranking(i)[0] == 1, (method, explanation.attributions[i])
        top = explanation.to_dict()["explanations"][i]["top"][0]
        assert top["feature"] == "embarked" and top["value"] == inputs["embarked"][i, 0]
    if method != "occlusion" or hidden != "C":
        leaving = [i for i in range(6) if inputs["embarked"][i, 0] == "C"]
        assert leaving and all(explanation.attributions[i, 1] > 0 for i in leaving)


def test_shap_on_a_table_adds_up_to_f_minus_the_expected_f(tmp_path: Path) -> None:
    path = _port_model(tmp_path)
    inputs, background = _columns(5, seed=4), _columns(30, seed=5)
    explanation = explain(path, inputs, "kernelshap", background=background, target=1)
    runner = OrtRunner(Model.load(path))
    expected = runner.run(background)["probabilities"][:, 1].mean()
    scores = runner.run(inputs)["probabilities"][:, 1]
    np.testing.assert_allclose(explanation.base_values, expected, atol=1e-5)
    np.testing.assert_allclose(explanation.attributions.sum(axis=1), scores - expected, atol=1e-4)


def test_a_tables_background_needs_every_column_and_gradients_say_why_not(
    tmp_path: Path,
) -> None:
    path = _port_model(tmp_path)
    inputs = _columns(3, seed=6)
    partial: dict[str, Any] = {"age": inputs["age"]}
    with pytest.raises(DataError, match="an array per column"):
        explain(path, inputs, "kernelshap", background=partial)
    with pytest.raises(MethodUnavailable, match="a table of 3 inputs"):
        explain(path, inputs, "integrated-gradients")
    one = explain(path, inputs, "occlusion", input_name="age", background=inputs)
    assert one.attributions.shape == (3, 1)  # naming an input explains that input alone


def test_ferry_explain_writes_the_columns_by_name(tmp_path: Path, ferry: Run) -> None:
    path = _port_model(tmp_path)
    inputs = save_npz(tmp_path / "rows.npz", _columns(8, seed=7))
    code, _, err = ferry("explain", path, "--inputs", inputs, "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert report["result"]["input"] == "age, embarked, fare"
    assert {t["feature"] for t in report["result"]["explanations"][0]["top"]} == {
        "age",
        "embarked",
        "fare",
    }
    assert any("a table of 3 columns" in n for n in report["notes"])
    assert (tmp_path / "out" / "importance.png").stat().st_size > 0


def test_the_served_explain_endpoint_explains_the_columns(tmp_path: Path) -> None:
    """POST /v2/models/titanic/explain with the three columns of a request: attributions
    [rows, 3] and the columns named."""
    httpx = pytest.importorskip("httpx")
    from onnxferry.serve.server import running

    path = _port_model(tmp_path)
    rows = _columns(4, seed=8)
    kinds = {"age": "FP32", "embarked": "BYTES", "fare": "FP32"}
    body = {
        "inputs": [
            {"name": k, "shape": [4, 1], "datatype": kinds[k], "data": v.ravel().tolist()}
            for k, v in rows.items()
        ],
        "parameters": {"method": "kernelshap", "target": 1},
    }
    with running(path) as url:
        response = httpx.post(f"{url}/v2/models/titanic/explain", json=body, timeout=60)
    assert response.status_code == 200, response.text
    found = {o["name"]: o for o in response.json()["outputs"]}
    assert found["attributions"]["shape"] == [4, 3]
    assert found["columns"]["data"] == ["age", "embarked", "fare"]
    attributions = np.asarray(found["attributions"]["data"]).reshape(4, 3)
    assert (np.argmax(np.abs(attributions), axis=1) == 1).all()
