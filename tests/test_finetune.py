"""`ferry finetune` on a real small task, offline: a CNN trained on sklearn's digits 0-6,
exported by ferry's convert, then fine-tuned to a new head (digits 7-9) and to more data (all
ten digits), with held-out accuracy improving; frozen weights stay bit-identical; a user block
with its own torch.autograd.Function trains through its own backward; lineage in the registry;
bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from sklearn import datasets

from onnxferry.learn import FinetuneResult, finetune, to_torch, train_epochs
from onnxferry.learn.training import Dataset, evaluate
from onnxferry.model import Model
from onnxferry.registry import Registry
from tests.helpers import Run, convert_with_dynamo, onnx_text, save


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """Small batches gain nothing from intra-op threads, and lose much on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


OLD_CLASSES = 7
"""The pre-trained model knows digits 0..6; 7, 8 and 9 are new."""


def _digits() -> tuple[np.ndarray, np.ndarray]:
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]  # [1797, 1, 8, 8]
    order = np.random.default_rng(0).permutation(len(x))
    return x[order], data.target[order].astype(np.int64)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return _digits()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, digits: Any) -> Path:
    """A small CNN trained (seeded, plain torch) on digits 0..6, exported by ferry's convert."""
    x, y = digits
    known = y < OLD_CLASSES
    xt, yt = torch.from_numpy(x[known][:600]), torch.from_numpy(y[known][:600])
    torch.manual_seed(0)

    class Cnn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 16, 3, padding=1)
            self.fc = torch.nn.Linear(16 * 2 * 2, 10)

        def forward(self, x: Any) -> Any:
            x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc(torch.flatten(x, 1))

    net = Cnn()
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(6):
        for i in range(0, len(xt), 64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[i : i + 64]), yt[i : i + 64])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    net.eval()
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    convert_with_dynamo(net, path, (xt[:2],))  # the node names below are dynamo's
    return path


def _new_digits(digits: Any, folder: Path) -> tuple[Path, Path]:
    """Digits 7..9 relabelled 0..2: 240 rows to train on, the rest held out."""
    x, y = digits
    new = y >= OLD_CLASSES
    xn, yn = x[new], y[new] - OLD_CLASSES
    np.savez(folder / "train.npz", image=xn[:240], label=yn[:240])
    np.savez(folder / "val.npz", image=xn[240:], label=yn[240:])
    return folder / "train.npz", folder / "val.npz"


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_a_new_head_learns_new_classes_and_frozen_weights_stay_bit_identical(
    pretrained: Path, digits: Any, tmp_path: Path
) -> None:
    train, val = _new_digits(digits, tmp_path)
    tuned = finetune(pretrained, train, "label", eval_data=val, new_head=3,
                     freeze_until="max_pool2d_1", epochs=5, lr=1e-2,
                     output=tmp_path / "tuned.onnx")  # fmt: skip
    result = tuned.last_report(FinetuneResult).result
    assert result.accuracy_after > 0.85
    assert result.accuracy_after > result.accuracy_before + 0.3
    assert result.head is not None and (result.head.classes_before, result.head.classes) == (10, 3)
    assert result.frozen == ["c1.bias", "c1.weight", "c2.bias", "c2.weight"]
    assert result.trainable == 3 * 64 + 3  # the new head only
    assert result.conversion_parity is not None and result.conversion_parity.ok
    assert result.export_parity is not None and result.export_parity.ok
    before, after = _initializers(pretrained), _initializers(tmp_path / "tuned.onnx")
    for name in result.frozen:
        assert after[name].tobytes() == before[name].tobytes(), name
    assert after["fc.weight"].shape == (3, 64)
    assert len(result.training.curve) == 5
    assert result.training.curve[-1].train_loss < result.training.curve[0].train_loss
    page = tuned.last_report(FinetuneResult).to_html()
    assert "training curve" in page and "<svg" in page


def test_more_data_improves_held_out_accuracy_on_every_digit(
    pretrained: Path, digits: Any, tmp_path: Path
) -> None:
    x, y = digits
    rows = {"x": x[:600], "y": y[:600]}
    held = {"x": x[1400:], "y": y[1400:]}
    tuned = finetune(pretrained, rows, "y", eval_data=held, epochs=8, lr=5e-3, seed=1)
    result = tuned.last_report(FinetuneResult).result
    assert result.accuracy_before < 0.8  # it never saw 7, 8 or 9
    assert result.accuracy_after > result.accuracy_before + 0.15
    assert result.output is None and tuned.path is None  # not written: no output given


CLIP_BLOCK = """
import torch

CALLS = []


class _StraightThroughClip(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad):
        CALLS.append(grad.shape)
        return grad  # straight through the clip


class StraightThroughClip(torch.nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return _StraightThroughClip.apply(x)
"""


def test_a_user_block_trains_through_its_own_autograd_function(
    pretrained: Path, digits: Any, tmp_path: Path
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(CLIP_BLOCK, "blocks.py", "exec"), namespace)  # what --replace loads
    train, val = _new_digits(digits, tmp_path)
    tuned = finetune(pretrained, train, "label", eval_data=val, new_head=3, epochs=2, lr=1e-2,
                     replace={"node_relu": namespace["StraightThroughClip"]},
                     output=tmp_path / "ste.onnx")  # fmt: skip
    result = tuned.last_report(FinetuneResult).result
    assert len(namespace["CALLS"]) > 0  # its backward ran, once per training step
    assert result.replaced == {"node_relu": ["node_relu"]}
    ops = [n.op_type for n in onnx.load(tmp_path / "ste.onnx").graph.node]
    assert "Clip" in ops and ops.count("Relu") == 1  # exported as what its forward computes
    assert result.export_parity is not None and result.export_parity.ok


def test_the_cli_fine_tunes_registers_with_its_parent_and_reports(
    pretrained: Path, digits: Any, tmp_path: Path, ferry: Run
) -> None:
    train, val = _new_digits(digits, tmp_path)
    (tmp_path / "blocks.py").write_text(CLIP_BLOCK)
    registry = tmp_path / "reg"
    parent = Registry.open(registry, create=True).add(pretrained, "digits")
    code, out, err = ferry("finetune", pretrained, "--data", train, "--labels", "label",
                           "--eval", val, "--new-head", "3", "--epochs", "2", "--lr", "1e-2",
                           "--replace", f"node_relu_1={tmp_path / 'blocks.py'}:StraightThroughClip",
                           "-o", tmp_path / "tuned.onnx", "--json",
                           "--report", tmp_path / "report.html",
                           "--registry", registry, "--name", "digits")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)["result"]
    assert report["registered"] == "digits:2" and report["parent"] == parent.ref
    assert report["replaced"] == {"node_relu_1": ["node_relu_1"]}
    assert report["accuracy_after"] > report["accuracy_before"]
    assert [e["epoch"] for e in report["training"]["curve"]] == [1, 2]
    versions = Registry.open(registry).versions("digits")
    assert [v.version for v in versions] == [1, 2]
    assert "<svg" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--labels", "nope"], "no labels under 'nope'"),
        (["--labels", "label", "--freeze-until", "no_such_tensor"], "no tensor or node"),
        (["--labels", "label", "--new-head", "1"], "at least 2 classes"),
        (["--labels", "label", "--new-head", str(10**17)], "of memory available"),  # was torch's
        (["--labels", "label", "--epochs", "0"], "epochs must be at least 1"),
        (["--labels", "label", "--replace", "node_relu"], "expected NODES=FILE.py:NAME"),
        (["--labels", "label", "--replace", "node_relu=missing.py:Clip"], "no such file"),
        (["--labels", "label", "--replace", "no_node=blocks.py:X"], "has no node 'no_node'"),
        (["--labels", "label", "--registry", "reg"], "--registry and --name go together"),
        (["--labels", "wrong"], "no labels under 'wrong'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    pretrained: Path, digits: Any, tmp_path: Path, ferry: Run, args: list[str], expected: str
) -> None:
    train, _ = _new_digits(digits, tmp_path)
    (tmp_path / "blocks.py").write_text("X = 1\n")
    code, _, err = ferry("finetune", pretrained, "--data", train, *args,
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2, err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "out.onnx").exists()


def test_samples_of_another_shape_are_one_line(
    pretrained: Path, tmp_path: Path, ferry: Run
) -> None:
    """openWakeWord's features given to an image model: the sample shape is named (it was an
    internal error inside torch's conv)."""
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 16, 96), np.float32), y=np.arange(10) % 2)
    code, _, err = ferry("finetune", pretrained, "--data", tmp_path / "d.npz", "--labels", "y",
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "input 'x' holds samples of shape [16, 96], but the model takes [" in err, err
    assert not (tmp_path / "out.onnx").exists()


def test_labels_beyond_the_head_say_to_add_a_new_head(
    pretrained: Path, tmp_path: Path, ferry: Run
) -> None:
    x = np.zeros((10, 1, 8, 8), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.full(10, 12, np.int64))
    code, _, err = ferry("finetune", pretrained, "--data", tmp_path / "d.npz", "--labels", "y",
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2
    assert "label 12 is out of range for a model with 10 classes" in err and "--new-head 13" in err


def test_a_sequence_of_scores_per_row_is_not_a_classifier(tmp_path: Path, ferry: Run) -> None:
    """An output of [batch, steps, classes] (a text recognizer's CTC scores) has no one class
    per row to learn: one line, exit 2, nothing written."""
    model = onnx_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, float[4, 6] w) => (float[N, 2, 3] y) {
            m = MatMul (x, w)
            shape = Constant <value = int64[3] {0, 2, 3}> ()
            r = Reshape (m, shape)
            y = Softmax <axis = -1> (r)
        }
    """,
        check=False,
    )
    w = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(w, "w"))
    del model.graph.input[1]
    path = save(model, tmp_path / "seq.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((6, 4), np.float32), y=np.arange(6) % 3)
    code, _, err = ferry("finetune", path, "--data", tmp_path / "d.npz", "--labels", "y",
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2, err
    assert err.count("\n") == 1 and "more than one class score per row" in err, err
    assert not (tmp_path / "out.onnx").exists()


def _binary_head(path: Path, scores: int = 1, head: str = "Sigmoid") -> Path:
    """x[N, 4] -> MatMul + Add -> ``head``: ``scores`` scores per row (one sigmoid score: a
    binary classifier, as openWakeWord's wake-word heads), zero weights that know nothing."""
    model = onnx_text(
        f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 4] x, float[4, {scores}] w, float[{scores}] b) => (float[N, {scores}] p) {{
            m = MatMul (x, w)
            z = Add (m, b)
            p = {head} (z)
        }}
    """,
        check=False,
    )
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, scores)) * 0.01).astype(np.float32)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.zeros(scores, np.float32), "b"),
        ]
    )
    del model.graph.input[1:]
    return save(model, path)


@pytest.mark.parametrize(("head", "scores"), [("Sigmoid", 1), ("LogSoftmax", 2), ("Softmax", 2)])
def test_a_probability_head_trains_and_is_scored_as_onnx_runtime_gives_it(
    tmp_path: Path, head: str, scores: int
) -> None:
    """One sigmoid score per row is class 1's probability: labels 0 and 1 train it (the loss
    on its logit z as the two classes' logits (0, z)), and the written model still gives one
    probability per row. The written model's loss is taken on what its output is: a
    LogSoftmax's log-probabilities as they are (their log gave ln 2 whatever the model)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    tuned = finetune(
        _binary_head(tmp_path / "head.onnx", scores, head), {"x": x, "labels": y}, epochs=30,
        lr=0.05, patience=None, output=tmp_path / "tuned.onnx",
    )  # fmt: skip
    result = tuned.last_report(FinetuneResult).result
    assert result.accuracy_before < 0.75 < 0.95 <= result.accuracy_after, result
    assert result.loss_after < np.log(2) - 0.2 < result.loss_before + 0.01, result
    (output,) = Model.load(tmp_path / "tuned.onnx").signature.outputs
    assert output.shape is not None and output.shape[1] == scores


def test_several_sigmoid_scores_per_row_are_one_line(tmp_path: Path, ferry: Run) -> None:
    path = _binary_head(tmp_path / "multi.onnx", scores=3)
    np.savez(tmp_path / "d.npz", x=np.ones((6, 4), np.float32), y=np.arange(6) % 2)
    code, _, err = ferry("finetune", path, "--data", tmp_path / "d.npz", "--labels", "y",
                         "-o", tmp_path / "out.onnx")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "multi-label" in err, err


def test_train_epochs_is_the_step_a_federated_client_runs(pretrained: Path, digits: Any) -> None:
    x, y = digits
    module = to_torch(pretrained)
    held = Dataset.of(module, x[1400:], y[1400:])
    loss_before, _ = evaluate(module, held)
    seen: list[dict[str, Any]] = []
    trained = train_epochs(module, x[:320], y[:320], 2, 5e-3, prox_mu=0.01, progress=seen.append)
    assert trained is module
    assert evaluate(module, held)[0] < loss_before
    assert seen[-1]["epoch"] == 2 and seen[-1]["batch"] == seen[-1]["batches"] == 10


def test_a_head_whose_weight_an_old_export_reshapes_is_replaced_and_learns(
    tmp_path: Path,
) -> None:
    """Old exports (the model zoo's GoogLeNet) feed their classifier's Gemm a Reshape of its
    weight: the new head reads a fresh weight directly, the reshape is dropped, and it learns
    a task that its features make easy (the sign of feature 0)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {
        "w": rng.standard_normal((5, 4, 1, 1)).astype(np.float32),
        "to_2d": np.array([5, 4], np.int64),
        "b": np.zeros(5, np.float32),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["w", "to_2d"], ["w2d"], name="weight_reshape"),
            helper.make_node("Gemm", ["x", "w2d", "b"], ["logits"], name="fc", transB=1),
            helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
        ],
        "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    source = tmp_path / "old.onnx"
    onnx.save(proto, str(source))
    x = rng.standard_normal((200, 4)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=(x[:, 0] > 0).astype(np.int64))
    tuned = finetune(source, tmp_path / "train.npz", "y", new_head=2, epochs=20, lr=5e-2,
                     output=tmp_path / "tuned.onnx")  # fmt: skip
    result = tuned.last_report(FinetuneResult).result
    assert result.head is not None and result.head.reshaped_by == ["weight_reshape"]
    assert (result.head.classes_before, result.head.classes) == (5, 2)
    assert result.accuracy_after > 0.9
    assert result.export_parity is not None and result.export_parity.ok
    tuned_proto = onnx.load(str(tmp_path / "tuned.onnx"))
    assert "Reshape" not in {n.op_type for n in tuned_proto.graph.node}
