"""Bisection to the first diverging tensor, with real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxferry.bisect import bisect
from onnxferry.model import Model
from onnxferry.parity import Divergence, Tolerance, compare_runners
from onnxferry.runtime import OrtRunner, SessionConfig

from .helpers import mlp, mlp_feeds, mlp_with_logits


def test_bisect_finds_the_first_diverging_node() -> None:
    (x,) = mlp_feeds(1)
    found = bisect(Model.from_proto(mlp()), Model.from_proto(mlp(noise=0.1)), x)
    assert isinstance(found, Divergence)
    assert (found.tensor, found.node, found.op_type, found.position) == ("l0", "fc2", "MatMul", 3)
    assert found.max_abs is not None
    assert found.max_abs > 1e-3
    assert found.required_atol is not None
    assert found.required_atol > Tolerance().atol
    # the other direction finds the same tensor
    back = bisect(Model.from_proto(mlp(noise=0.1)), Model.from_proto(mlp()), x)
    assert back is not None
    assert back.tensor == "l0"
    assert bisect(Model.from_proto(mlp()), Model.from_proto(mlp()), x) is None
    assert found.to_dict()["tensor"] == "l0"


def test_bisect_reads_external_data_without_touching_the_model_dir(tmp_path: Path) -> None:
    paths = []
    for name, proto in (("a", mlp()), ("b", mlp(noise=0.1))):
        folder = tmp_path / name
        folder.mkdir()
        onnx.save_model(
            proto,
            str(folder / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="weights.bin",
            size_threshold=0,
        )
        paths.append(folder / "model.onnx")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    (x,) = mlp_feeds(1)
    found = bisect(Model.load(paths[0]), Model.load(paths[1]), x)
    assert found is not None
    assert found.tensor == "l0"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_same_model_on_cpu_with_different_graph_optimization() -> None:
    model = Model.from_proto(mlp_with_logits(mlp()))
    plain = SessionConfig(graph_optimization="disable")
    fused = SessionConfig(graph_optimization="all")
    sets = mlp_feeds(3)
    parity = compare_runners(
        OrtRunner(model, config=plain), OrtRunner(model, config=fused), sets, Tolerance()
    )
    assert parity.ok, parity.summary()
    found = bisect(model, model, sets[0], reference_config=plain, candidate_config=fused)
    assert found is None
