"""A request is held to its model's max_batch_size over HTTP, as Triton holds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxferry.serve.server import running
from tests.helpers import RELU, onnx_text, save

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


def test_more_rows_than_max_batch_size_is_a_400_and_the_model_keeps_serving(
    tmp_path: Path,
) -> None:
    save(onnx_text(RELU), tmp_path / "repo" / "relu" / "1" / "model.onnx")
    (tmp_path / "repo" / "relu" / "ferry.toml").write_text("max_batch_size = 4\n")
    with running(tmp_path / "repo") as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        assert client.get_model_config("relu")["max_batch_size"] == 4

        def infer(batch: int) -> np.ndarray:
            x = np.linspace(-1, 1, batch * 4, dtype=np.float32).reshape(batch, 4)
            tensor = httpclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            got: np.ndarray = client.infer("relu", [tensor]).as_numpy("y")
            np.testing.assert_array_equal(got, np.maximum(x, 0))
            return got

        with pytest.raises(InferenceServerException, match="max_batch_size of 4") as info:
            infer(9)
        assert info.value.status() == "400"
        assert infer(4).shape == (4, 4)
