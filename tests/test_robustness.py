"""Bad input never crashes: corrupted models and data files give a FerryError, never a bug.

Hypothesis flips, drops and truncates bytes of valid files; every outcome must be a clean
load or one of onnxferry's own errors (exit 1 or 2), never another exception (exit 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxferry.check import check
from onnxferry.data import load_feeds, load_test_cases
from onnxferry.errors import FerryError
from onnxferry.model import Model
from tests.helpers import mlp

VALID_MODEL = mlp().SerializeToString()


@st.composite
def corrupted(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes changed, a slice dropped, or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "drop", "truncate"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] = draw(st.integers(0, 255))
        elif kind == "drop":
            del out[at : at + draw(st.integers(1, 16))]
        else:
            del out[at:]
    return bytes(out)


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(blob=corrupted(VALID_MODEL))
def test_corrupted_model_loads_or_raises_a_ferry_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(blob)
    try:
        model = Model.load(path)
    except FerryError as e:
        assert e.exit_code == 2
        assert "\n" not in str(e)
        return
    # Whatever loaded must be describable without crashing.
    assert model.summary()["digest"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=corrupted(VALID_MODEL))
def test_check_on_a_corrupted_model_never_crashes(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(blob)
    try:
        report = check(path)
    except FerryError as e:
        assert e.exit_code == 2
        return
    assert report.exit_code in (0, 1)


def _valid_npz(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.npz"
    np.savez(path, x=np.ones((2, 4), np.float32), probs=np.zeros((2, 3), np.float32))
    return path.read_bytes()


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _valid_npz(tmp_path_factory.mktemp("npz"))


@_SETTINGS
@given(data=st.data())
def test_corrupted_npz_reads_or_raises_a_ferry_error(
    tmp_path: Path, npz_bytes: bytes, data: st.DataObject
) -> None:
    path = tmp_path / "feeds.npz"
    path.write_bytes(data.draw(corrupted(npz_bytes)))
    signature = Model.from_proto(mlp()).signature
    for read in (lambda: load_feeds(path, signature), lambda: load_test_cases(path, signature)):
        try:
            read()
        except FerryError as e:
            assert e.exit_code == 2
