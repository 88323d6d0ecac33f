"""scikit-learn table pipelines (a ColumnTransformer picking DataFrame columns by name, string
categories among them) to ONNX: one input per column, verified on generated rows of the
categories the encoders know. Such a pipeline was an internal error ("Specifying the columns
using strings is only supported for dataframes")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("skl2onnx")
pd = pytest.importorskip("pandas")

from sklearn.compose import make_column_transformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402

import onnxferry  # noqa: E402
from onnxferry.convert.base import ConversionError, ConvertOptions  # noqa: E402
from onnxferry.convert.sklearn import load_sklearn  # noqa: E402
from onnxferry.convert.sklearn.table import table_layout  # noqa: E402
from onnxferry.data import save_npz  # noqa: E402
from onnxferry.errors import InputError, UsageError  # noqa: E402
from onnxferry.runtime import OrtRunner  # noqa: E402
from tests.helpers import Run  # noqa: E402


def passengers(rows: int = 400, seed: int = 0) -> tuple[Any, np.ndarray]:
    """A Titanic-like table: numbers, string categories and an integer category."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(1, 80, rows).astype(float),
            "fare": rng.exponential(30, rows),
            "sex": rng.choice(["male", "female"], rows),
            "embarked": rng.choice(["S", "C", "Q"], rows),
            "pclass": rng.integers(1, 4, rows),
        }
    )
    survived = ((frame.sex == "female") ^ (frame.age < 10) | (frame.pclass == 1)).astype(int)
    return frame, survived.to_numpy()


def classifier() -> Pipeline:
    frame, survived = passengers()
    columns = make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), ["age", "fare"]),
        (OneHotEncoder(handle_unknown="ignore"), ["sex", "embarked", "pclass"]),
    )
    return make_pipeline(columns, LogisticRegression()).fit(frame, survived)


def feeds_of(frame: Any, model: onnxferry.Model) -> dict[str, np.ndarray]:
    """A DataFrame's columns as the model's inputs, [rows, 1] each."""
    return {
        s.name: np.asarray(frame[s.name]).reshape(-1, 1).astype(s.dtype.numpy)
        for s in model.signature.inputs
    }


def test_a_table_classifier_takes_one_input_per_column_and_matches_sklearn(
    tmp_path: Path,
) -> None:
    pipeline = classifier()
    model = onnxferry.convert(pipeline, tmp_path / "titanic.onnx")
    kinds = [(s.name, s.dtype.onnx_name, s.shape) for s in model.signature.inputs]
    assert kinds == [
        ("age", "FLOAT", ("batch", 1)),
        ("fare", "FLOAT", ("batch", 1)),
        ("sex", "STRING", ("batch", 1)),
        ("embarked", "STRING", ("batch", 1)),
        ("pclass", "INT64", ("batch", 1)),
    ]
    held_out, _ = passengers(50, seed=1)
    held_out.loc[0, "embarked"] = "Z"  # a port the encoder never saw: ignored by both
    outputs = OrtRunner(model).run(feeds_of(held_out, model))
    np.testing.assert_array_equal(outputs["label"], pipeline.predict(held_out))
    np.testing.assert_allclose(
        outputs["probabilities"], pipeline.predict_proba(held_out), atol=1e-5
    )


def test_the_generated_rows_hold_the_known_categories() -> None:
    source = load_sklearn(classifier(), ConvertOptions())
    assert source.details["columns"] == {
        "age": "float",
        "fare": "float",
        "sex": "string",
        "embarked": "string",
        "pclass": "int",
    }
    for feeds in source.verification_feeds():
        assert set(feeds["sex"].ravel()) <= {"male", "female"}
        assert set(feeds["embarked"].ravel()) <= {"S", "C", "Q"}
        assert set(feeds["pclass"].ravel().tolist()) <= {1, 2, 3}


def test_a_table_regressor_keeps_its_numbers_in_float64(tmp_path: Path) -> None:
    frame, _ = passengers()
    target = frame.fare * 2 + (frame.sex == "male") * 10
    columns = make_column_transformer(
        (OneHotEncoder(), ["sex", "embarked"]), (StandardScaler(), ["age", "fare"])
    )
    pipeline = make_pipeline(columns, Ridge()).fit(frame, target)
    model = onnxferry.convert(pipeline, tmp_path / "fare.onnx")
    assert model.signature.input("fare").dtype.onnx_name == "DOUBLE"
    held_out, _ = passengers(20, seed=2)
    got = OrtRunner(model).run(feeds_of(held_out, model))["variable"][:, 0]
    np.testing.assert_allclose(got, pipeline.predict(held_out), rtol=1e-9)


def test_samples_name_every_column_and_set_its_type(tmp_path: Path) -> None:
    pipeline = classifier()
    frame, _ = passengers(8, seed=3)
    given = {c: frame[c].to_numpy().reshape(-1, 1) for c in frame.columns}  # [rows, 1] each
    given["sex"], given["embarked"] = given["sex"].astype(str), given["embarked"].astype(str)
    with pytest.raises(ConversionError, match=r"float64: .*Imputer"):  # the samples' float64
        onnxferry.convert(pipeline, tmp_path / "float64.onnx", inputs=given)
    given["age"], given["fare"] = given["age"].astype(np.float32), given["fare"].astype(np.float32)
    rows = save_npz(tmp_path / "rows.npz", given)
    model = onnxferry.convert(pipeline, tmp_path / "given.onnx", inputs=rows)
    assert model.signature.input("age").dtype.onnx_name == "FLOAT"
    del given["fare"]
    with pytest.raises(InputError, match="'fare' is missing"):
        onnxferry.convert(pipeline, tmp_path / "missing.onnx", inputs=given)
    with pytest.raises(UsageError, match="one input per column"):
        onnxferry.convert(pipeline, tmp_path / "shape.onnx", input_shapes={"age": (4, 1)})


def test_a_saved_table_pipeline_converts_from_the_cli(ferry: Run, tmp_path: Path) -> None:
    import joblib

    joblib.dump(classifier(), tmp_path / "titanic.joblib")
    out = tmp_path / "titanic.onnx"
    code, _, err = ferry("convert", tmp_path / "titanic.joblib", "--trust-pickle", "-o", out)
    assert code == 0, err
    assert out.is_file()


def test_columns_picked_by_position_keep_one_float_array() -> None:
    x = np.random.default_rng(0).standard_normal((40, 3))
    columns = make_column_transformer((StandardScaler(), [0, 1]), remainder="passthrough")
    pipeline = make_pipeline(columns, LogisticRegression()).fit(x, x[:, 0] > 0)
    assert table_layout(pipeline, ConvertOptions()) is None
    source = load_sklearn(pipeline, ConvertOptions())
    assert [s.name for s in source.reference.signature.inputs] == ["input"]


def test_every_verb_reads_the_categories_from_the_onnx_graph(tmp_path: Path) -> None:
    """The converted model alone (bench, serve's warm-up, optimize): its OneHotEncoders' string
    and integer categories, not random words and [0, 8)."""
    from onnxferry.feeds import plan_feeds

    model = onnxferry.convert(classifier(), tmp_path / "titanic.onnx")
    feeds = plan_feeds(model).with_batch(16).feeds(seed=0)
    assert set(feeds["sex"].ravel()) == {"male", "female"}
    assert set(feeds["embarked"].ravel()) <= {"S", "C", "Q"}
    assert set(feeds["pclass"].ravel().tolist()) <= {1, 2, 3}
