"""Sequence and map outputs (scikit-learn's ZipMap) are declared BYTES and sent as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.serve.server import running

httpclient = pytest.importorskip("tritonclient.http")


def _zipmap_model(path: Path) -> Path:
    """A LogisticRegression through skl2onnx with its default ZipMap: output_probability is
    seq(map(int64, float))."""
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    proto = to_onnx(LogisticRegression().fit(x, y), x[:1], target_opset=17)
    path.parent.mkdir(parents=True)
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_zipmap_probabilities_are_json_per_row(tmp_path: Path, binary: bool) -> None:
    path = _zipmap_model(tmp_path / "repo" / "clf" / "1" / "model.onnx")
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: x})
    with running(tmp_path / "repo") as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        outputs = {o["name"]: o for o in client.get_model_metadata("clf")["outputs"]}
        assert outputs["output_probability"]["datatype"] == "BYTES"
        tensor = httpclient.InferInput("X", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        wanted = [
            httpclient.InferRequestedOutput(name, binary_data=binary)
            for name in ("output_label", "output_probability")
        ]
        result = client.infer("clf", [tensor], outputs=wanted)
    np.testing.assert_array_equal(result.as_numpy("output_label"), labels)
    rows = result.as_numpy("output_probability")
    assert rows.shape == (3,)
    for row, expected in zip(rows, probabilities, strict=True):
        text = row.decode() if isinstance(row, bytes) else row
        got = json.loads(text)
        assert set(got) == {str(k) for k in expected}
        for key, value in expected.items():
            assert got[str(key)] == pytest.approx(value, rel=1e-6)
