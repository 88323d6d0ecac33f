"""ONNX Runtime optimizers that crash the process: matched on the model, turned off for it.

The model here is the shape of microsoft/onnxruntime#28392's reproducer: a float16 Transpose
into a MatMul, as every attention block of a transformer converted to float16 whole holds.
Whether a given onnxruntime still crashes on it is not asserted (that would pin one version);
what is asserted is that ferry's sessions, run in a child process so a crash shows as a
signal and not as a dead test worker, come through on every level and verb that makes one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.model import Model
from onnxferry.ort_crashes import float16_transpose_into_matmul, known_crashes

from .helpers import save


def transpose_into_matmul(
    dtype: int = TensorProto.FLOAT16, *, through_cast: bool = False, then: str = "MatMul"
) -> onnx.ModelProto:
    """``x[batch, frames, 32]`` -> Transpose(1, 0, 2) -> (Cast to float) -> ``then`` ->
    ``y``; ``then`` is MatMul (with a 32x8 weight) or a one-input op."""
    numpy_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    weight_type = np.float32 if through_cast else numpy_type
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2])]
    if through_cast:
        nodes.append(helper.make_node("Cast", ["t"], ["tc"], to=TensorProto.FLOAT))
    into = "tc" if through_cast else "t"
    inits = []
    if then == "MatMul":
        nodes.append(helper.make_node("MatMul", [into, "w"], ["y"]))
        inits.append(numpy_helper.from_array(np.full((32, 8), 0.125, weight_type), "w"))
    else:
        nodes.append(helper.make_node(then, [into], ["y"]))
    out_type = TensorProto.FLOAT if through_cast else dtype
    width = 8 if then == "MatMul" else 32
    graph = helper.make_graph(
        nodes,
        "attention_input",
        [helper.make_tensor_value_info("x", dtype, ["batch", "frames", 32])],
        [helper.make_tensor_value_info("y", out_type, ["frames", "batch", width])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def in_a_branch(body: onnx.ModelProto) -> onnx.ModelProto:
    """``body``'s graph as the then-branch of an If on a bool input."""
    branch = helper.make_graph(list(body.graph.node), "then", [], list(body.graph.output))
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y_else"])],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT16, ["batch", "frames", 32])],
    )
    node = helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)
    graph = helper.make_graph(
        [node],
        "branchy",
        [*body.graph.input, helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        list(body.graph.initializer),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --- matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "matched"),
    [
        pytest.param(transpose_into_matmul(), True, id="float16"),
        pytest.param(transpose_into_matmul(through_cast=True), True, id="float16-cast-float"),
        pytest.param(in_a_branch(transpose_into_matmul()), True, id="float16-in-an-if"),
        pytest.param(transpose_into_matmul(TensorProto.FLOAT), False, id="float32"),
        pytest.param(transpose_into_matmul(then="Relu"), False, id="float16-no-matmul"),
    ],
)
def test_the_float16_transpose_into_matmul_pattern_is_found(
    proto: onnx.ModelProto, matched: bool
) -> None:
    assert float16_transpose_into_matmul(proto) is matched


@pytest.mark.parametrize(
    ("level", "machine", "turned_off"),
    [
        ("all", "x86_64", ["NchwcTransformer"]),
        ("layout", "AMD64", ["NchwcTransformer"]),
        ("extended", "x86_64", []),  # NCHWc is a layout optimization
        ("basic", "x86_64", []),
        ("all", "aarch64", []),  # no NCHWc blocks on arm
    ],
)
def test_nchwc_is_turned_off_only_at_the_levels_and_machines_it_runs_on(
    level: str, machine: str, turned_off: list[str]
) -> None:
    model = Model.from_proto(transpose_into_matmul())
    crashes = known_crashes(model, level, machine)
    assert [crash.optimizer for crash in crashes] == turned_off
    assert all("onnxruntime#28392" in crash.why for crash in crashes)


def test_a_float32_model_keeps_every_optimizer() -> None:
    model = Model.from_proto(transpose_into_matmul(TensorProto.FLOAT))
    assert known_crashes(model, "all", "x86_64") == []


# --- sessions come through -----------------------------------------------------------------------


def _survives(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child Python; a crash is a negative return code, not a dead test."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.mark.parametrize("level", ["all", "layout", "extended"])
def test_ferry_sessions_on_the_pattern_run_and_match_the_unoptimized_model(
    tmp_path: Path, level: str
) -> None:
    path = save(transpose_into_matmul(), tmp_path / "model.onnx")
    done = _survives(
        """
        import sys
        import numpy as np
        from onnxferry.model import Model
        from onnxferry.runtime import OrtRunner, SessionConfig

        model = Model.load(sys.argv[1])
        x = np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float16)
        got = OrtRunner(model, config=SessionConfig(graph_optimization=sys.argv[2])).run({"x": x})
        plain = OrtRunner(model, config=SessionConfig(graph_optimization="disable")).run({"x": x})
        assert got["y"].shape == (5, 2, 8), got["y"].shape
        np.testing.assert_allclose(got["y"], plain["y"], rtol=1e-2, atol=1e-2)
        print("ran")
        """,
        path,
        level,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ran"


def test_ferry_check_on_the_pattern_passes(tmp_path: Path) -> None:
    path = save(transpose_into_matmul(), tmp_path / "model.onnx")
    done = _survives("from onnxferry.cli import main; raise SystemExit(main())", "check", path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_ort_graph_at_layout_level_writes_the_pattern_and_says_what_it_turned_off(
    tmp_path: Path,
) -> None:
    path = save(transpose_into_matmul(), tmp_path / "model.onnx")
    done = _survives(
        """
        import sys
        from pathlib import Path
        from onnxferry.model import Model
        from onnxferry.optimize import PassContext
        from onnxferry.optimize.graph import OrtGraph

        work = Path(sys.argv[2])
        work.mkdir()
        result = OrtGraph(level="layout").apply(Model.load(sys.argv[1]), PassContext(work))
        print("\\n".join(result.notes))
        """,
        path,
        tmp_path / "work",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    machine_has_nchwc = known_crashes(Model.load(path), "layout") != []
    turned_off = "turned off onnxruntime's NchwcTransformer" in done.stdout
    assert turned_off is machine_has_nchwc, done.stdout
