"""`ferry federated`: Flower's rounds in simulation over an ONNX model's weights.

One real run (Ray, three clients, sklearn's digits split by label groups) checks that held-out
accuracy rises round after round, that every round is written verified, reported with its plot
and registered with its lineage. The client's training step (FedProx's proximal term) and the
server's handling of a client's error run on Flower's own message types without Ray; bad input
is one line before Flower starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxferry.errors import DataError
from onnxferry.learn.flower import (
    ERROR_KEY,
    ClientPlan,
    client_train,
    import_flower,
    sent_error,
    to_weights,
    trainable_weights,
)
from onnxferry.learn.shards import load_shard, shard_file
from onnxferry.model import Model
from tests.helpers import Run, save

GROUPS = ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9))
"""Each client sees only its label group: as non-IID as a split gets."""


def digits_mlp(seed: int = 0, hidden: int = 32) -> onnx.ModelProto:
    """x[batch, 64] -> Gemm -> Relu -> Gemm -> logits[batch, 10], untrained (He init)."""
    rng = np.random.default_rng(seed)
    weights = {
        "fc1.weight": rng.standard_normal((64, hidden)) * np.sqrt(2 / 64),
        "fc1.bias": np.zeros(hidden),
        "fc2.weight": rng.standard_normal((hidden, 10)) * np.sqrt(1 / hidden),
        "fc2.bias": np.zeros(10),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        ],
        "digits_mlp",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w.astype(np.float32), n) for n, w in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx, val.npz (360 rows) and clients/c0..c2/train.npz, one label group each."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    save(digits_mlp(), root / "model.onnx")
    x, y = load_digits(return_X_y=True)  # float64 in 0..16: cast and scaled as a user might
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order] / 16.0, y[order]
    np.savez(root / "val.npz", x=x[:360], y=y[:360])
    for i, group in enumerate(GROUPS):
        keep = np.isin(y[360:], group)
        (root / "clients" / f"c{i}").mkdir(parents=True)
        np.savez(root / "clients" / f"c{i}" / "train.npz", x=x[360:][keep], y=y[360:][keep])
    return root


# Ray 2.55 drops its helper processes' Popen objects without waiting for them (as in
# tests/test_batch_ray.py): Python's ResourceWarning, which it hides outside tests.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_rounds_raise_held_out_accuracy_on_digits_split_by_label(
    digits: Path, tmp_path: Path, ferry: Run
) -> None:
    clients = ",".join(str(digits / "clients" / f"c{i}") for i in range(3))
    out, registry = tmp_path / "fed", tmp_path / "reg"
    code, stdout, stderr = ferry(
        "federated", digits / "model.onnx", "--clients", clients, "--rounds", 4,
        "--local-epochs", 3, "--lr", 1e-2, "--eval", digits / "val.npz", "-o", out,
        "--registry", registry, "--name", "digits-fed", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(stdout)["result"]
    history = report["history"]
    accuracy = [r["accuracy"] for r in history]
    assert [r["round"] for r in history] == [0, 1, 2, 3, 4]
    # Untrained: chance. Each client knows 3-4 digits; the average learns all ten, round by
    # round (seeded: 0.13, 0.41, 0.61, 0.64, 0.69 here).
    assert accuracy[0] < 0.2
    assert accuracy[-1] > accuracy[1] > accuracy[0]
    assert accuracy[-1] - accuracy[0] > 0.35
    assert all(r["clients_accuracy"] > 0.2 for r in history[1:])
    assert all(r["train_loss"] > 0 for r in history[1:])
    for r in history[1:]:
        written = Model.load(r["path"])
        assert written.digest == r["digest"]
        assert r["parity"]["ok"], r["parity"]
    assert [r["registered"] for r in history[1:]] == [f"digits-fed:{v}" for v in (1, 2, 3, 4)]
    assert [r["parent"] for r in history[1:]] == [None, "digits-fed:1", "digits-fed:2",
                                                  "digits-fed:3"]  # fmt: skip
    assert [c["samples"] for c in report["clients"]] == [
        int(np.isin(np.load(digits / "clients" / f"c{i}" / "train.npz")["y"], g).sum())
        for i, g in enumerate(GROUPS)
    ]
    page = (out / "report.html").read_text()
    assert "accuracy per round" in page
    assert "<svg" in page
    assert json.loads((out / "report.json").read_text())["result"]["history"] == history


def test_fedprox_keeps_a_client_nearer_the_round_weights(digits: Path) -> None:
    import_flower()  # first: it keeps TensorFlow out and typer's warning quiet
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from onnxferry.torchgraph.module import to_torch

    start = trainable_weights(to_torch(digits / "model.onnx", check=False))
    model = Model.load(digits / "model.onnx")
    shard = str(digits / "clients" / "c0")
    plan = ClientPlan(str(model.path), model.digest, (shard,), "y", local_epochs=2, lr=1e-2)

    def moved(mu: float) -> float:
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in start.items()}),
                "config": ConfigRecord({"server-round": 1, "proximal-mu": mu}),
            }
        )
        reply = client_train(plan, content, partition=0)
        assert reply["metrics"]["num-examples"] == len(np.load(shard + "/train.npz")["y"])
        trained = to_weights(reply["arrays"])
        return sum(float(np.sum((trained[k] - start[k]) ** 2)) for k in start)

    assert moved(10.0) < 0.5 * moved(0.0)


def test_a_client_s_error_comes_back_as_that_error() -> None:
    import_flower()
    from flwr.app import ConfigRecord, RecordDict

    content = RecordDict(
        {ERROR_KEY: ConfigRecord({"kind": "DataError", "message": "client c0: no labels"})}
    )
    error = sent_error(content)
    assert isinstance(error, DataError)
    assert str(error) == "client c0: no labels"
    assert sent_error(RecordDict({"config": ConfigRecord({"server-round": 1})})) is None


def test_a_shard_is_the_client_directory_s_train_npz_or_its_only_npz(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    np.savez(tmp_path / "a" / "part.npz", x=np.zeros((2, 64), np.float32), y=np.zeros(2, int))
    assert shard_file(tmp_path / "a") == tmp_path / "a" / "part.npz"
    np.savez(tmp_path / "a" / "more.npz", x=np.zeros((2, 64), np.float32))
    with pytest.raises(DataError, match=r"2 \.npz files and no train\.npz"):
        shard_file(tmp_path / "a")
    model = Model.load(save(digits_mlp(), tmp_path / "m.onnx"))
    np.savez(tmp_path / "a" / "train.npz", features=np.ones((3, 64)), label=np.arange(3))
    shard = load_shard(tmp_path / "a", model)  # one other key feeds the one input
    assert shard.inputs["x"].dtype == np.float32
    assert shard.classes == {0: 1, 1: 1, 2: 1}


def _client(root: Path, name: str, **arrays: Any) -> str:
    (root / name).mkdir(parents=True, exist_ok=True)
    np.savez(root / name / "train.npz", **arrays)
    return str(root / name)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "client {tmp}/nope: no such file or directory; check the path"),
        ("shape", "client {tmp}/narrow: input 'x' expects shape [batch, 64], got [2, 32]"),
        ("rows", "client {tmp}/rows: input 'x' has 3 rows but there are 2 labels"),
        ("labels", "client {tmp}/nolabels: no labels (keys: x)"),
        ("range", "label 12 is out of range for a model with 10 classes"),
        ("eval", "--eval {tmp}/val.npz: input 'x' expects dtype float32"),
        ("fedprox", "FedProx needs a positive --mu, not 0"),
        ("registry", "--registry and --name go together"),
        ("twice", "a client directory is named twice"),
    ],
)
def test_bad_input_is_one_line_before_flower_starts(
    case: str, message: str, digits: Path, tmp_path: Path, ferry: Run
) -> None:
    good = str(digits / "clients" / "c0")
    x = np.zeros((2, 64), np.float32)
    clients = {
        "missing": [good, str(tmp_path / "nope")],
        "shape": [good, _client(tmp_path, "narrow", x=np.zeros((2, 32)), y=np.zeros(2, int))],
        "rows": [good, _client(tmp_path, "rows", x=np.zeros((3, 64)), y=np.zeros(2, int))],
        "labels": [good, _client(tmp_path, "nolabels", x=x)],
        "range": [good, _client(tmp_path, "range", x=x, y=np.array([1, 12]))],
        "twice": [good, good],
    }.get(case, [good])
    extras: dict[str, list[object]] = {
        "eval": ["--eval", tmp_path / "val.npz"],
        "fedprox": ["--strategy", "fedprox"],
        "registry": ["--registry", tmp_path / "reg"],
    }
    np.savez(tmp_path / "val.npz", x=np.zeros((2, 64), np.int32), y=np.zeros(2, int))
    code, stdout, stderr = ferry(
        "federated", digits / "model.onnx", "--clients", ",".join(clients), "-o",
        tmp_path / "out", *extras.get(case, []),
    )  # fmt: skip
    assert code == 2, stderr
    assert stderr.count("\n") == 1
    assert stderr.startswith("ferry: error: ")
    assert message.format(tmp=tmp_path) in stderr
    assert not (tmp_path / "out").exists()
