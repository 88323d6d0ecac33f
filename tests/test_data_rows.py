"""Tables of rows as --inputs: a CSV (header row) or Parquet file, a column per input of a
table model, or a one-input model's features in the file's column order; every value typed
as its input, and a cell that does not parse named by row and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxferry.data import load_feeds
from onnxferry.errors import DataError
from onnxferry.model import Model
from tests.helpers import Run, onnx_text, save, table_model

ROWS = "age,city,n,member\n31.5,Oslo,2,true\n,Lyon,3.0,0\n52,Oslo,1,yes\n"


FEATURES = """
<ir_version: 8, opset_import: ["" : 17]>
features (float[N, 3] x) => (float[N, 3] y) { y = Relu(x) }
"""
"""A one-input model of three features."""


def test_a_csv_gives_each_input_its_column_typed_as_the_input(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(ROWS)
    model = Model.from_proto(table_model())
    (feeds,) = load_feeds(tmp_path / "rows.csv", model.signature)
    assert feeds["age"].dtype == np.float32 and feeds["age"].shape == (3, 1)
    assert np.isnan(feeds["age"][1, 0])  # an empty cell of a number column, as pandas reads it
    assert feeds["city"].tolist() == [["Oslo"], ["Lyon"], ["Oslo"]]
    assert feeds["n"].dtype == np.int64 and feeds["n"].ravel().tolist() == [2, 3, 1]
    assert feeds["member"].tolist() == [True, False, True]


def test_parquet_reads_as_the_csv_does(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    table = pa.table(
        {
            "age": [31.5, None, 52.0],
            "city": ["Oslo", "Lyon", "Oslo"],
            "n": [2, 3, 1],
            "member": [True, False, True],
            "ignored": ["a", "b", "c"],
        }
    )
    pq.write_table(table, tmp_path / "rows.parquet")
    (tmp_path / "rows.csv").write_text(ROWS)
    model = Model.from_proto(table_model())
    (parquet,) = load_feeds(tmp_path / "rows.parquet", model.signature)
    (csv,) = load_feeds(tmp_path / "rows.csv", model.signature)
    for name in model.signature.input_names:
        np.testing.assert_array_equal(parquet[name], csv[name])
        assert parquet[name].dtype == csv[name].dtype


def test_a_one_input_model_takes_every_column_in_order(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("a,b,c\n1,-2,3\n4,5,-6\n")
    model = Model.from_proto(onnx_text(FEATURES))
    (feeds,) = load_feeds(tmp_path / "rows.csv", model.signature)
    assert feeds["x"].tolist() == [[1, -2, 3], [4, 5, -6]] and feeds["x"].dtype == np.float32
    (tmp_path / "wide.csv").write_text("a,b,c,d\n1,2,3,4\n")
    with pytest.raises(DataError, match="has 4 columns; input 'x' takes 3 features"):
        load_feeds(tmp_path / "wide.csv", model.signature)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("age,city,n,member\n1,Oslo,2.5,true\n", "row 1, column 'n': '2.5' is not an integer"),
        ("age,city,n,member\nold,Oslo,2,true\n", "row 1, column 'age': 'old' is not a number"),
        ("age,city,n,member\n1,Oslo,2,maybe\n", "'maybe' is not true or false"),
        ("age,city,n,member\n1,Oslo,2\n", "line 2 has 3 values, the header 4"),
        ("age,city,member\n1,Oslo,true\n", "has no column 'n'"),
        ("", "is empty"),
    ],
)
def test_a_bad_table_is_one_line(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "rows.csv").write_text(text)
    with pytest.raises(DataError, match=words.replace("(", r"\(")) as info:
        load_feeds(tmp_path / "rows.csv", Model.from_proto(table_model()).signature)
    assert "\n" not in str(info.value)


def test_verbs_take_a_csv_as_inputs(tmp_path: Path, ferry: Run) -> None:
    path = save(table_model(), tmp_path / "table.onnx")
    (tmp_path / "rows.csv").write_text(ROWS.replace(",Lyon", "7,Lyon"))
    code, _, err = ferry("compare", path, path, "--inputs", tmp_path / "rows.csv")
    assert code == 0, err
    code, out, err = ferry("bench", path, "--inputs", tmp_path / "rows.csv", "--duration", "0.05")
    assert code == 0, err
    code, out, err = ferry(
        "explain", path, "--inputs", tmp_path / "rows.csv", "-o", tmp_path / "explained", "--json"
    )
    assert code == 0, err
    explained = json.loads(out)["result"]
    assert explained["input"] == "age, city, n, member"
    assert load_feeds(tmp_path / "rows.csv", Model.load(path).signature)[0]["age"][1, 0] == 7


def test_convert_points_a_table_of_rows_to_compare(tmp_path: Path, ferry: Run) -> None:
    """Typed by no signature yet, a CSV's numbers would decide a float64 model; convert says
    to check the converted model on the rows instead."""
    (tmp_path / "rows.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="not converted yet") as info:
        load_feeds(tmp_path / "rows.csv")
    assert "ferry compare OUT.onnx SOURCE --inputs" in str(info.value)
    path = save(onnx_text(FEATURES), tmp_path / "m.onnx")
    code, _, err = ferry(
        "convert", path, "-o", tmp_path / "out.onnx", "--inputs", tmp_path / "rows.csv"
    )
    assert code == 2 and "not converted yet" in err
