"""Denormal floats flushed to zero: on ONNX Runtime's threads and the caller's while a session
runs, never in the caller's own arithmetic afterwards (``denormals``, ``runtime``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxferry import denormals
from onnxferry.bench import bench
from onnxferry.model import Model
from onnxferry.optimize import make_pass
from onnxferry.optimize.base import PassContext
from onnxferry.runtime import OrtRunner, SessionConfig, create_session

pytestmark = pytest.mark.skipif(
    not denormals.supported(), reason="this platform's thread float mode cannot be set"
)

TINY = np.float32(1e-20)  # TINY * TINY = 1e-40: a denormal float32


def tiny_product(size: int) -> onnx.ModelProto:
    """y = x * 1e-30: x = 1e-10 gives 1e-40, denormal."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])
    c = helper.make_tensor("c", TensorProto.FLOAT, [], [1e-30])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["y"])], "g", [x], [y], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flushed_flushes_this_thread_inside_and_restores_it_after() -> None:
    assert TINY * TINY > 0
    with denormals.flushed():
        assert TINY * TINY == 0
        with denormals.flushed(on=False):
            assert TINY * TINY > 0
        assert TINY * TINY == 0
    assert TINY * TINY > 0


@pytest.mark.parametrize("size", [4, 1 << 20])  # the caller's thread alone; the pool's too
def test_a_flushing_session_flushes_on_every_thread_and_leaves_the_caller_as_it_was(
    size: int,
) -> None:
    model = Model.from_proto(tiny_product(size))
    feed = {"x": np.full(size, 1e-10, np.float32)}
    kept = create_session(model, SessionConfig(threads=2)).run(None, feed)[0]
    flushed = create_session(model, SessionConfig(threads=2, flush_denormals=True))
    assert np.all(kept > 0)
    assert not np.any(flushed.run(None, feed)[0])
    assert TINY * TINY > 0


def test_a_model_marked_by_the_pass_flushes_unless_the_config_says_otherwise(
    tmp_path: Path,
) -> None:
    model = Model.from_proto(tiny_product(4))
    marked = make_pass("flush_denormals").apply(model, PassContext(tmp_path)).model
    assert denormals.flushes(marked) and not denormals.flushes(model)
    again = make_pass("flush_denormals").apply(marked, PassContext(tmp_path))
    assert not again.changed
    feed = {"x": np.full(4, 1e-10, np.float32)}
    assert not np.any(OrtRunner(marked).run(feed)["y"])
    kept = OrtRunner(marked, config=SessionConfig(flush_denormals=False)).run(feed)["y"]
    assert np.all(kept > 0)
    assert marked.metadata_props[denormals.MODEL_KEY] == "1"
    report = bench([marked], iterations=3)
    assert any("denormal floats flushed to zero" in n for n in report.notes)


def test_the_first_session_of_a_process_does_not_flush_the_creating_thread(
    tmp_path: Path,
) -> None:
    """ONNX Runtime sets the flush mode of the thread that creates the process's first session
    for good; ferry puts it back, so the caller's numpy keeps its denormals."""
    path = tmp_path / "m.onnx"
    onnx.save(tiny_product(4), path)
    code = textwrap.dedent(f"""
        import numpy as np
        from onnxferry.model import Model
        from onnxferry.runtime import SessionConfig, create_session
        session = create_session(Model.load({str(path)!r}), SessionConfig(flush_denormals=True))
        out = session.run(None, {{"x": np.full(4, 1e-10, np.float32)}})[0]
        print(float(out.max()), float(np.float32(1e-20) * np.float32(1e-20)) > 0)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0.0", "True"]
