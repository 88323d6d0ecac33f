"""The PyTorch loader: every model is exported by each candidate and checked against torch.

Each test builds a tiny model in-process, loads it with ``load_torch``, exports it with each
exporter to ``tmp_path``, and compares ONNX Runtime with the module on the same feeds at two
batch sizes (and two sequence lengths where the model has one).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import onnx
import torch
from onnx import numpy_helper

import onnxferry
from onnxferry.convert.base import ConversionError, ConvertOptions, Source
from onnxferry.convert.dispatch import Conversion
from onnxferry.convert.torch import DYNAMO, TORCHSCRIPT, load_torch
from onnxferry.errors import FerryError, UnknownOperatorError
from onnxferry.feeds import realistic_feeds
from onnxferry.model import Model
from onnxferry.parity import Parity, Tolerance, compare_outputs
from onnxferry.runtime import OrtRunner
from tests.helpers import Run

Feeds = dict[str, np.ndarray]


def export_all(source: Source, tmp_path: Path) -> dict[str, Model | ConversionError]:
    """Each candidate's exported model, or the ConversionError it raised."""
    models: dict[str, Model | ConversionError] = {}
    for i, candidate in enumerate(source.candidates):
        path = tmp_path / f"candidate{i}" / "model.onnx"
        path.parent.mkdir(parents=True)
        try:
            candidate.export(path)
        except ConversionError as e:
            models[candidate.exporter] = e
            continue
        models[candidate.exporter] = Model.load(path)
    return models


def parity(source: Source, model: Model, feeds: Sequence[Feeds]) -> Parity:
    """ONNX Runtime on ``model`` against the torch reference on the same feeds."""
    runner = OrtRunner(model)
    return compare_outputs(
        [source.reference.run(f) for f in feeds],
        [runner.run(f) for f in feeds],
        Tolerance(atol=1e-4, rtol=1e-3),
        reference_name=source.reference.name,
        candidate_name=model.name,
    )


def check_exports(
    source: Source, tmp_path: Path, feeds: Sequence[Feeds]
) -> dict[str, Parity | ConversionError]:
    """Every candidate's parity on ``feeds`` (or its export error)."""
    results: dict[str, Parity | ConversionError] = {}
    for exporter, model in export_all(source, tmp_path).items():
        results[exporter] = (
            model if isinstance(model, ConversionError) else parity(source, model, feeds)
        )
    return results


def assert_passes(result: Parity | ConversionError) -> None:
    assert isinstance(result, Parity), f"export failed: {result}"
    assert result.ok, result.summary()


def samples(source: Source, *dims: Mapping[str, int]) -> list[Feeds]:
    signature = source.reference.signature
    return [realistic_feeds(signature, d, seed=i) for i, d in enumerate(dims)]


def assert_one_line(error: FerryError) -> None:
    assert "\n" not in str(error)
    assert error.exit_code == 2


# --- models ----------------------------------------------------------------------------------


class ConvNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 5)
        mean, var = self.bn.running_mean, self.bn.running_var
        assert mean is not None and var is not None
        with torch.no_grad():  # running statistics that are not the identity
            mean.uniform_(-0.5, 0.5)
            var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(image)))
        out: torch.Tensor = self.fc(self.pool(x).flatten(1))
        return out


class Tagger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(4, 6, batch_first=True)
        self.head = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (hidden, _) = self.rnn(x)
        return self.head(out), hidden


class Branchy(torch.nn.Module):
    """Data-dependent control flow: which layer runs depends on the input's values."""

    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(4, 4)
        self.down = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def positive(t: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.up(t))

        def negative(t: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.down(t) - 1.0
            return out

        result: torch.Tensor = torch.cond(x.sum() > 0, positive, negative, (x,))
        return result


class Scripted(torch.nn.Module):
    """TorchScript control flow: an If on the values and a Loop over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.fc(x)
        if bool(y.sum() > 0):
            y = y * 2.0
        for _ in range(x.shape[0]):
            y = y + 0.5
        return y


class ThreeLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 8)
        self.fc3 = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        out: torch.Tensor = self.fc3(x)
        return out


@torch.library.custom_op("ferry_test::double", mutates_args=())
def double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@double.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = double(x)
        return out


class WithCustomOp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.block = Doubler()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.block(self.fc(x))
        return out


class TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


# --- conversions -----------------------------------------------------------------------------


def test_cnn_with_batchnorm_matches_with_both_exporters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = load_torch(ConvNet(), ConvertOptions(), example_inputs=(torch.randn(2, 3, 8, 8),))

    spec = source.reference.signature
    assert [(s.name, s.shape) for s in spec.inputs] == [("image", ("batch", 3, 8, 8))]
    assert [(s.name, s.shape) for s in spec.outputs] == [("output_0", ("batch", 5))]
    assert source.find_divergence is not None
    results = check_exports(source, tmp_path, samples(source, {"batch": 1}, {"batch": 3}))
    assert set(results) == {DYNAMO, TORCHSCRIPT}
    for result in results.values():
        assert_passes(result)


def test_lstm_with_dynamic_batch_and_sequence(tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = ConvertOptions(
        input_shapes={"x": (2, 5, 4)}, dynamic_axes={"x": {0: "batch", 1: "seq"}}
    )
    source = load_torch(Tagger(), options)

    spec = source.reference.signature
    assert spec.inputs[0].shape == ("batch", "seq", 4)
    assert [(s.name, s.shape) for s in spec.outputs] == [
        ("output_0", ("batch", "seq", 3)),
        ("output_1", (1, "batch", 6)),
    ]
    feeds = samples(source, {"batch": 1, "seq": 3}, {"batch": 3, "seq": 7})
    results = check_exports(source, tmp_path, feeds)
    for result in results.values():
        assert_passes(result)
    for i in range(2):  # one ONNX LSTM, its sequence axis dynamic, from both exporters
        model = Model.load(tmp_path / f"candidate{i}" / "model.onnx")
        assert model.ops_histogram["LSTM"] == 1
        assert model.signature.outputs[0].shape == ("batch", "seq", 3)


class StreamingCell(torch.nn.Module):
    """BeatNet's pattern: an LSTM whose state lives in plain attributes that forward replaces
    (``x, (self.hidden, self.cell) = self.lstm(x, (self.hidden, self.cell))``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, batch_first=True)
        self.hidden = torch.zeros(1, 1, 6)
        self.cell = torch.zeros(1, 1, 6)
        self.scale: torch.Tensor | None = None  # made on the first call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            self.scale = torch.full((1, 1, 4), 0.5)
        out, (self.hidden, self.cell) = self.lstm(x * self.scale, (self.hidden, self.cell))
        return torch.as_tensor(out)


def test_a_module_keeping_its_state_between_calls_converts_from_its_state_at_load(
    tmp_path: Path,
) -> None:
    """Both exporters refused it ("Inference tensors cannot be saved for backward": the probe
    run had left an inference tensor in ``self.hidden``), and each reference run would have
    started where the last stopped. Every run now starts from the state at load, as the ONNX
    model does, the module keeps its own tensors, and a note says what is not carried. (The
    dynamo exporter specializes the steps of some processes' traces: one exporter must pass.)"""
    torch.manual_seed(0)
    module = StreamingCell()
    hidden = module.hidden
    options = ConvertOptions(input_shapes={"x": (1, 5, 4)}, dynamic_axes={"x": {1: "steps"}})
    source = load_torch(module, options)
    (note,) = [n for n in source.notes if "state kept between calls" in n]
    assert "changes cell, hidden" in note and "as an input of forward" in note
    feeds = samples(source, {"steps": 3}, {"steps": 7})
    first = source.reference.run(feeds[0])
    np.testing.assert_array_equal(source.reference.run(feeds[0])["output_0"], first["output_0"])
    results = check_exports(source, tmp_path, feeds)
    assert any(isinstance(r, Parity) and r.ok for r in results.values()), results
    assert not [r for r in results.values() if "Inference tensors" in str(r)], results
    assert module.hidden is hidden and module.scale is None


class Running(torch.nn.Module):
    """A running mean kept in a buffer and updated in place by forward."""

    mean: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("mean", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return torch.as_tensor(self.lin(x - self.mean))


def test_a_buffer_updated_in_place_is_put_back_after_every_call(tmp_path: Path) -> None:
    """Each reference run moved the running mean, so no export matched it (both "max abs
    0.04"); now every run starts from the buffer at load, and a note says it changes."""
    torch.manual_seed(0)
    module = Running()
    source = load_torch(module, ConvertOptions(input_shapes={"x": (2, 4)}))
    assert any("changes mean on every call" in n for n in source.notes), source.notes
    results = check_exports(source, tmp_path, samples(source, {"batch": 1}, {"batch": 5}))
    assert any(isinstance(r, Parity) and r.ok for r in results.values()), results
    assert torch.equal(module.mean, torch.zeros(4))


class Strided(torch.nn.Module):
    """A width that must be a multiple of 4 (batdetect2's U-Net takes multiples of 32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = x.reshape(x.shape[0], 8, -1, 4).mean(-1)
        return folded.repeat_interleave(4, dim=-1) + x


def test_an_output_axis_is_named_when_the_model_takes_only_multiples_of_a_stride(
    tmp_path: Path,
) -> None:
    """The output's axes were found by running once more with each input axis one longer: a
    width of 17 fails, so the outputs were guessed static at the example's width (and the
    TorchScript exporter named the axis after a node, "Unsqueezepred_det_dim_3"). A width
    three times the example's runs, and the output's axis takes the input's name."""
    options = ConvertOptions(
        input_shapes={"x": (2, 8, 16)}, dynamic_axes={"x": {0: "batch", 2: "width"}}
    )
    source = load_torch(Strided(), options)
    assert source.reference.signature.outputs[0].shape == ("batch", 8, "width")
    feeds = samples(source, {"batch": 1, "width": 12})
    passed = []  # an exporter may fix the width where the model folds it (TorchScript's trace)
    for exporter, model in export_all(source, tmp_path).items():
        with contextlib.suppress(FerryError):
            if isinstance(model, Model) and parity(source, model, feeds).ok:
                shape = model.signature.outputs[0].shape or ()  # dynamo: "4*((width//4))"
                assert shape[:2] == ("batch", 8) and "width" in str(shape[2]), (exporter, shape)
                passed.append(exporter)
    assert passed


def test_data_dependent_branch_exports_only_with_dynamo(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = load_torch(Branchy(), ConvertOptions(), example_inputs=(torch.randn(2, 4),))

    rng = np.random.default_rng(0)
    positive = np.abs(rng.standard_normal((2, 4))).astype(np.float32)
    negative = -np.abs(rng.standard_normal((5, 4))).astype(np.float32)
    results = check_exports(source, tmp_path, [{"x": positive}, {"x": negative}])
    assert_passes(results[DYNAMO])
    assert isinstance(results[TORCHSCRIPT], ConversionError)  # tracing cannot take torch.cond
    model = Model.load(tmp_path / "candidate0" / "model.onnx")
    assert "If" in model.ops_histogram


class IfBranch(torch.nn.Module):
    """A branch on a tensor's value in Python (torchdiffeq's adaptive solvers, a
    ``if x.max() > 1: x = x / 255``): torch.export refuses it, a trace keeps one side."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().mean() > self.threshold:  # the line the caveat names
            return x * 2
        return x - 1


def test_a_trace_that_fixed_a_branch_on_values_says_where(tmp_path: Path) -> None:
    """A branch the inputs take both ways: the trace fails parity, and the error names the
    line that turned a tensor into a Python boolean and says what to do (was: "loosen
    --atol/--rtol" only). A branch every input takes alike passes, with a note."""
    line = f"tests/test_convert_torch.py:{IfBranch.forward.__code__.co_firstlineno + 1}"
    sometimes = [{"x": np.full((2, 3), 0.1, np.float32)}, {"x": np.full((2, 3), 5, np.float32)}]
    with pytest.raises(FerryError) as caught:
        onnxferry.convert(IfBranch(1.0), tmp_path / "b.onnx", inputs=sometimes)
    message, hint = caught.value.message, caught.value.hint or ""
    assert f"its trace fixed values computed from tensors: a Python boolean at {line}" in message
    assert "torch.where, torch.cond" in hint and "loosen --atol/--rtol" in hint
    model = onnxferry.convert(IfBranch(-1.0), tmp_path / "a.onnx", input_shapes={"x": (2, 3)})
    report = model.last_report(Conversion)
    assert report.result.chosen == TORCHSCRIPT
    (kept,) = [a for a in report.result.attempts if a.exporter == TORCHSCRIPT]
    assert kept.caveats == [f"a Python boolean at {line}"]
    assert report.notes == [
        f"{TORCHSCRIPT} kept branches as the example took them where the code turned a "
        f"tensor (a value or a size) into a Python boolean (at {line}): "
        f"verified on {len(report.result.shapes)} input sets, but inputs that take another "
        "branch may get other outputs"
    ]


def bert_feeds(batch: int, seq: int, seed: int) -> Feeds:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq // 2 :] = 0  # the first row is padded, the others are not
    return {
        "input_ids": rng.integers(0, 100, (batch, seq)).astype(np.int64),
        "attention_mask": mask,
        "token_type_ids": (rng.random((batch, seq)) < 0.5).astype(np.int64),
    }


@pytest.mark.slow
def test_bert_encoder_with_keyword_inputs_and_padding(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=100,
    )
    bert = transformers.BertModel(config)
    example = {k: torch.from_numpy(v) for k, v in bert_feeds(2, 6, seed=9).items()}
    names = ["input_ids", "attention_mask", "token_type_ids"]
    options = ConvertOptions(dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    source = load_torch(bert, options, example_inputs=example)

    spec = source.reference.signature
    assert spec.input_names == names
    assert all(s.shape == ("batch", "seq") for s in spec.inputs)
    assert [(s.name, s.shape) for s in spec.outputs] == [
        ("last_hidden_state", ("batch", "seq", 32)),
        ("pooler_output", ("batch", 32)),
    ]
    assert source.value_ranges == {"input_ids": (0, 100), "token_type_ids": (0, 2)}
    assert not bert.training
    feeds = [bert_feeds(2, 5, seed=0), bert_feeds(3, 9, seed=1)]
    results = check_exports(source, tmp_path, feeds)
    for result in results.values():
        assert_passes(result)


def _decoder() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A Llama-style decoder: grouped-query attention, rotary positions, RMSNorm, SwiGLU."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, use_cache=False,
    )  # fmt: skip
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, -3:] = 0
    ids = torch.randint(5, 90, (2, 12))
    return transformers.LlamaForCausalLM(config), {"input_ids": ids, "attention_mask": mask}


def _speech() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A wav2vec2 CTC model: a convolutional feature encoder on raw samples, a grouped
    convolutional position embedding, a transformer."""
    import transformers

    config = transformers.Wav2Vec2Config(
        vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    return transformers.Wav2Vec2ForCTC(config), {"input_values": torch.randn(2, 1600)}


def _windows() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A Swin classifier: shifted-window attention, patch merging."""
    import transformers

    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
        window_size=4,
    )  # fmt: skip
    return transformers.SwinForImageClassification(config), {
        "pixel_values": torch.rand(2, 3, 32, 32)
    }


@pytest.mark.slow
@pytest.mark.parametrize("build", [_decoder, _speech, _windows], ids=["llama", "wav2vec2", "swin"])
def test_hugging_face_architectures_convert_verified(
    tmp_path: Path, build: Callable[[], tuple[torch.nn.Module, dict[str, torch.Tensor]]]
) -> None:
    """Random-weight Hugging Face models of three families, built from their configs (no hub):
    each converts, verified against torch at the sizes verification generates (24
    architectures were converted so: RESULTS.md, "Hugging Face architectures")."""
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    module, example = build()
    model = onnxferry.convert(module.eval(), tmp_path / "model.onnx", example_inputs=example)
    report = model.last_report(Conversion)
    assert report.ok and report.result.verified
    chosen = next(a for a in report.result.attempts if a.status == "chosen")
    assert chosen.parity is not None and chosen.parity.ok
    assert set(model.signature.input_names) == set(example)


def test_factory_file_returning_module_and_inputs(tmp_path: Path) -> None:
    factory = tmp_path / "model_factory.py"
    factory.write_text(
        "import torch\n"
        "\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = torch.nn.Linear(4, 6)\n"
        "        self.head = torch.nn.Linear(6, 2)\n"
        "\n"
        "    def forward(self, features, scale):\n"
        "        hidden = torch.tanh(self.body(features))\n"
        "        return {'logits': self.head(hidden) * scale, 'hidden': (hidden, hidden + 1)}\n"
        "\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Net(), (torch.randn(2, 4), torch.ones(2, 1))\n"
    )
    source = load_torch(f"{factory}:make", ConvertOptions())

    spec = source.reference.signature
    assert spec.input_names == ["features", "scale"]
    assert [(s.name, s.shape) for s in spec.outputs] == [
        ("logits", ("batch", 2)),
        ("hidden_0", ("batch", 6)),
        ("hidden_1", ("batch", 6)),
    ]
    assert "model_factory.py:make" in source.description
    results = check_exports(source, tmp_path, samples(source, {"batch": 1}, {"batch": 4}))
    for result in results.values():
        assert_passes(result)


class TupleTagger(torch.nn.Module):
    """Older research code's forward: one argument, a tuple unpacked inside (AttaCut's
    ``x, seq_lengths = inputs``), and a dict of optional extras with a None in it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, inputs: Any, extras: Any) -> Any:
        ids, lengths = inputs
        hidden = self.embed(ids) * extras["scale"]
        if extras["mask"] is not None:
            hidden = hidden * extras["mask"].unsqueeze(-1)
        steps = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return self.head(hidden * steps.unsqueeze(-1))


def test_arguments_given_as_tuples_and_dicts_become_one_input_a_tensor(tmp_path: Path) -> None:
    """torch.export takes arguments that are tuples and dicts of tensors; each tensor is one
    ONNX input named by its place, a None stays None, and both exporters pass."""
    torch.manual_seed(0)
    ids, lengths = torch.randint(0, 10, (2, 5)), torch.tensor([5, 3])
    extras = {"scale": torch.ones(2, 1, 1), "mask": None}
    axes = {"inputs_0": {0: "batch", 1: "steps"}, "inputs_1": {0: "batch"}}
    options = ConvertOptions(dynamic_axes={**axes, "extras_scale": {0: "batch"}})
    source = load_torch(TupleTagger(), options, example_inputs=((ids, lengths), extras))

    spec = source.reference.signature
    assert [(s.name, s.shape) for s in spec.inputs] == [
        ("inputs_0", ("batch", "steps")),
        ("inputs_1", ("batch",)),
        ("extras_scale", ("batch", 1, 1)),
    ]
    assert spec.outputs[0].shape == ("batch", "steps", 3)
    feeds = samples(source, {"batch": 1, "steps": 2}, {"batch": 3, "steps": 7})
    for feed in feeds:  # lengths within the steps
        feed["inputs_1"] = np.minimum(feed["inputs_1"], feed["inputs_0"].shape[1])
    results = check_exports(source, tmp_path, feeds)
    assert set(results) == {DYNAMO, TORCHSCRIPT}
    for result in results.values():
        assert_passes(result)


def test_a_tuple_argument_converts_from_the_command_line(ferry: Run, tmp_path: Path) -> None:
    factory = tmp_path / "tagger.py"
    factory.write_text(
        "import torch\n"
        "from tests.test_convert_torch import TupleTagger\n"
        "\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    ids, lengths = torch.randint(0, 10, (2, 5)), torch.tensor([5, 5])\n"
        "    extras = {'scale': torch.ones(2, 1, 1), 'mask': None}\n"
        "    return TupleTagger(), ((ids, lengths), extras)\n"
    )
    code, _, err = ferry("convert", f"{factory}:make", "-o", tmp_path / "t.onnx", "--json")
    assert code == 0, err
    model = Model.load(tmp_path / "t.onnx")
    assert model.signature.input_names == ["inputs_0", "inputs_1", "extras_scale"]
    code, out, err = ferry("compare", tmp_path / "t.onnx", f"{factory}:make", "--json")
    assert code == 0, err


class Masked(torch.nn.Module):
    """AttaCut's forward: one tuple argument, ``x, seq_lengths = inputs``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, lengths = inputs
        steps = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        summed: torch.Tensor = (self.embed(ids) * steps.unsqueeze(-1)).sum(dim=1)
        return summed


def test_samples_named_as_a_tuple_s_places_give_that_argument(ferry: Run, tmp_path: Path) -> None:
    """With no example from the code, ``--inputs`` naming ``inputs_0`` and ``inputs_1`` (the
    names the ONNX inputs get) is the tuple ``forward(self, inputs)`` takes; without them the
    error says so."""
    factory = tmp_path / "masked.py"
    factory.write_text(
        "from tests.test_convert_torch import Masked\n\ndef make():\n    return Masked()\n"
    )
    out = tmp_path / "m.onnx"
    code, _, err = ferry("convert", f"{factory}:make", "-o", out)
    assert code == 2 and "(an argument taking a tuple as inputs_0, inputs_1, ...)" in err, err
    samples = tmp_path / "samples.npz"
    ids = np.random.default_rng(0).integers(0, 10, (3, 6))
    np.savez(samples, inputs_0=ids, inputs_1=np.array([6, 2, 0]))
    code, _, err = ferry("convert", f"{factory}:make", "-o", out, "--inputs", samples)
    assert code == 0, err
    assert Model.load(out).signature.input_names == ["inputs_0", "inputs_1"]
    np.savez(samples, inputs_0=ids, inputs_2=np.array([6, 2, 0]))
    code, _, err = ferry("convert", f"{factory}:make", "-o", out, "--inputs", samples)
    assert code == 2 and "forward() has no parameter 'inputs_0'" in err, err


class Pair(torch.nn.Module):
    def forward(self, x: tuple[torch.Tensor], x_0: torch.Tensor) -> torch.Tensor:
        return x[0] + x_0


@pytest.mark.parametrize(
    ("module", "example", "message"),
    [
        (TupleTagger(), ((torch.zeros(1, 3, dtype=torch.long), 3), {}), "'inputs_1' is a int"),
        (Pair(), ((torch.ones(1),), torch.ones(1)), "two example inputs would both be named 'x_0'"),
    ],
    ids=["a number in the tuple", "a place named like another argument"],
)
def test_what_a_nested_argument_cannot_hold_is_one_line(
    module: torch.nn.Module, example: Any, message: str
) -> None:
    with pytest.raises(ConversionError) as caught:
        load_torch(module, ConvertOptions(), example_inputs=example)
    assert message in str(caught.value), caught.value
    assert_one_line(caught.value)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")
def test_torchscript_file_with_control_flow(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Scripted().eval()), str(path))
    source = load_torch(path, ConvertOptions(input_shapes={"x": (2, 4)}))

    assert source.details["source_kind"] == "torchscript"
    assert source.find_divergence is None
    rng = np.random.default_rng(0)
    big = (np.abs(rng.standard_normal((3, 4))) * 10).astype(np.float32)
    small = (-np.abs(rng.standard_normal((1, 4))) * 10).astype(np.float32)
    feeds = [{"x": big}, {"x": small}]
    results = check_exports(source, tmp_path, feeds)
    assert_passes(results[TORCHSCRIPT])
    model = Model.load(tmp_path / "candidate1" / "model.onnx")
    assert {"If", "Loop"} <= set(model.ops_histogram)
    # torch's TorchScript -> ExportedProgram converter stops at prim::Loop (torch 2.13)
    dynamo = results[DYNAMO]
    assert isinstance(dynamo, ConversionError)
    assert "prim::Loop" in str(dynamo)
    assert_one_line(dynamo)


class Checked(torch.nn.Module):
    """A forward that checks its input, as Silero VAD's TorchScript does its sample rate: 512
    samples, and (``one_row``) a batch of 1."""

    def __init__(self, one_row: bool) -> None:
        super().__init__()
        self.one_row = one_row

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 512:
            raise ValueError(f"Supported chunk sizes: [512], not {x.shape[1]}")
        if self.one_row and x.shape[0] != 1:
            raise ValueError(f"Supported batch: 1, not {x.shape[0]}")
        return x * 2.0


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("one_row", "samples", "said"),
    [
        (False, 100, "the model fails on the example inputs: ValueError: Supported chunk sizes"),
        (True, 512, "the model fails on the inputs x[4,512]: ValueError: Supported batch: 1"),
    ],
    ids=["on the example", "on a verification batch"],
)
def test_a_torchscript_model_that_raises_on_the_inputs_is_one_line(
    ferry: Run, tmp_path: Path, one_row: bool, samples: int, said: str
) -> None:
    """Its own exception, not the TorchScript interpreter's first line ("The following
    operation failed..."), and exit 2, whether the examples or the verification feeds (the
    batch varied) make it raise: on the latter it was an internal error."""
    path = tmp_path / "checked.pt"
    torch.jit.save(torch.jit.script(Checked(one_row).eval()), str(path))
    np.savez(tmp_path / "x.npz", x=np.zeros((1, samples), np.float32))
    code, _, err = ferry("convert", path, "-o", tmp_path / "m.onnx", "--inputs", tmp_path / "x.npz")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert said in err, err


class AtRate(torch.nn.Module):
    def forward(self, x: torch.Tensor, sr: int) -> torch.Tensor:
        return x * float(sr) / 16000.0


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning")
def test_a_torchscript_argument_that_is_not_a_tensor_is_named(ferry: Run, tmp_path: Path) -> None:
    """Silero VAD's TorchScript takes ``forward(x, sr: int)``: given as a tensor, its own
    check of ``sr`` fails and says 16000 is not a supported rate; ferry names the argument."""
    path = tmp_path / "rate.pt"
    torch.jit.save(torch.jit.script(AtRate().eval()), str(path))
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 512), np.float32), sr=np.array(16000))
    code, _, err = ferry("convert", path, "-o", tmp_path / "m.onnx", "--inputs", tmp_path / "x.npz")
    assert code == 2 and err.count("\n") == 1, err
    assert "forward() takes 'sr' as int, not a tensor" in err and "with sr fixed" in err, err


def test_exported_program_file_gets_only_the_dynamo_exporter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    batch = torch.export.Dim("b")
    program = torch.export.export(
        ThreeLayers().eval(), (torch.randn(2, 4),), dynamic_shapes={"x": {0: batch}}
    )
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    source = load_torch(path, ConvertOptions())

    assert [c.exporter for c in source.candidates] == [DYNAMO]
    assert source.reference.signature.inputs[0].shape == ("batch", 4)
    assert source.reference.signature.outputs[0].shape == ("batch", 2)
    results = check_exports(source, tmp_path, samples(source, {"batch": 1}, {"batch": 5}))
    assert_passes(results[DYNAMO])
    model = Model.load(tmp_path / "candidate0" / "model.onnx")
    assert model.signature.inputs[0].shape == ("batch", 4)


def test_sample_inputs_name_the_inputs_and_set_their_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sample = {
        "y": rng.standard_normal((2, 3)).astype(np.float64),
        "x": rng.standard_normal((2, 3)).astype(np.float64),
    }
    source = load_torch(TwoInputs(), ConvertOptions(sample_inputs=[sample]))

    spec = source.reference.signature
    assert [(s.name, s.dtype.onnx_name, s.shape) for s in spec.inputs] == [
        ("x", "DOUBLE", ("batch", 3)),
        ("y", "DOUBLE", ("batch", 3)),
    ]
    assert source.details["inputs_by"] == "position"
    results = check_exports(source, tmp_path, samples(source, {"batch": 1}, {"batch": 6}))
    for result in results.values():
        assert_passes(result)


def test_a_float16_module_converts_verified_at_float16_s_tolerance(tmp_path: Path) -> None:
    """``module.half()`` (how many checkpoints are shared): torch and ONNX Runtime round the
    LayerNorm and GELU in float16 after different ops, a step apart (4.9e-4 near 0.5), so the
    judge is float16's tolerance, and the report says so."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.LayerNorm(64), torch.nn.GELU(), torch.nn.Linear(64, 10)
    )
    module = module.eval().half()
    example = (torch.randn(2, 32).half(),)
    model = onnxferry.convert(module, tmp_path / "half.onnx", example_inputs=example)
    report = model.last_report(Conversion)
    chosen = next(a for a in report.result.attempts if a.status == "chosen")
    assert chosen.parity is not None and chosen.parity.tolerance == Tolerance(1e-2, 1e-2)
    assert "Sequential's weights are float16: verified at float16's tolerance" in " ".join(
        report.notes
    )
    assert model.weight_type == "FLOAT16"
    assert model.signature.inputs[0].dtype.onnx_name == "FLOAT16"


# --- bad input -------------------------------------------------------------------------------


def test_a_bfloat16_module_is_refused_naming_its_type(tmp_path: Path) -> None:
    """Its bfloat16 example reaches torch (NumPy holds it as ml_dtypes' type, which
    ``torch.from_numpy`` refused: "torch cannot hold"); both exports then run only where a
    runtime has bfloat16 kernels, and the error says to export in float32."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 4)).to(torch.bfloat16)
    example = (torch.randn(2, 8).to(torch.bfloat16),)
    with pytest.raises(UnknownOperatorError) as caught:
        onnxferry.convert(module, tmp_path / "bf16.onnx", example_inputs=example)
    assert "which no runtime here runs in bfloat16" in caught.value.message
    assert "module.float()" in (caught.value.hint or "")
    assert not (tmp_path / "bf16.onnx").exists()


def test_factory_that_raises(tmp_path: Path) -> None:
    factory = tmp_path / "broken.py"
    factory.write_text("def make():\n    raise RuntimeError('weights not found\\nsecond line')\n")
    with pytest.raises(ConversionError, match="weights not found") as info:
        load_torch(f"{factory}:make", ConvertOptions())
    assert_one_line(info.value)
    assert "second line" not in str(info.value)


@pytest.mark.parametrize("where", ["import", "call"])
def test_a_factory_missing_a_module_says_which_to_install(tmp_path: Path, where: str) -> None:
    """PESTO's checkpoint pickles omegaconf's DictConfig: unpickling it without omegaconf
    raised ModuleNotFoundError inside the factory, and the hint said to fix the factory."""
    factory = tmp_path / "needs.py"
    line = "import omegaconf_nowhere.dictconfig"
    body = f"{line}\ndef make():\n    pass\n" if where == "import" else f"def make():\n    {line}\n"
    factory.write_text(body)
    with pytest.raises(FerryError, match="omegaconf_nowhere") as info:
        load_torch(f"{factory}:make", ConvertOptions())
    assert_one_line(info.value)
    assert "install the package that provides 'omegaconf_nowhere'" in (info.value.hint or "")


def test_factory_function_that_does_not_exist(tmp_path: Path) -> None:
    factory = tmp_path / "factory.py"
    factory.write_text("def build():\n    return None\n")
    with pytest.raises(FerryError, match="no function 'make'") as info:
        load_torch(f"{factory}:make", ConvertOptions())
    assert_one_line(info.value)
    assert "build" in str(info.value)


def test_missing_forward_argument_is_named() -> None:
    with pytest.raises(ConversionError, match="'y'") as info:
        load_torch(TwoInputs(), ConvertOptions(), example_inputs=(torch.randn(2, 3),))
    assert_one_line(info.value)
    with pytest.raises(ConversionError, match="--input-shape x=") as info:
        load_torch(TwoInputs(), ConvertOptions())
    assert_one_line(info.value)


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(512),
        b"PK\x05\x06" + bytes(18),  # an empty zip archive
    ],
    ids=["random-bytes", "empty-zip"],
)
def test_file_that_is_not_a_torch_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(FerryError, match="not a TorchScript") as info:
        load_torch(path, ConvertOptions(input_shapes={"x": (1, 4)}))
    assert_one_line(info.value)


def test_keras_archive_named_pt(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:  # the layout of a .keras file
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n")
    with pytest.raises(FerryError, match="not a TorchScript") as info:
        load_torch(path, ConvertOptions())
    assert_one_line(info.value)


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(ThreeLayers(), str(path))
    with pytest.raises(FerryError, match="--trust-pickle") as info:
        load_torch(path, ConvertOptions(input_shapes={"x": (2, 4)}))
    assert_one_line(info.value)


def test_unsupported_operator_is_named_with_its_module(tmp_path: Path) -> None:
    source = load_torch(WithCustomOp(), ConvertOptions(), example_inputs=(torch.randn(2, 4),))
    results = export_all(source, tmp_path)

    dynamo, torchscript = results[DYNAMO], results[TORCHSCRIPT]
    assert isinstance(dynamo, ConversionError)
    assert "ferry_test::double" in str(dynamo)
    assert "'block'" in str(dynamo)
    assert "--opset" in str(dynamo)
    assert_one_line(dynamo)
    assert isinstance(torchscript, ConversionError)
    assert "ferry_test::double" in str(torchscript)
    assert "'block'" in str(torchscript)
    assert_one_line(torchscript)


# --- bisection -------------------------------------------------------------------------------


def scaled(model: Model, initializer: str, factor: float) -> Model:
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name == initializer:
            array = numpy_helper.to_array(tensor) * np.float32(factor)
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, initializer))
            return Model.from_proto(proto)
    raise KeyError(initializer)


def test_find_divergence_names_the_first_module_that_differs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = load_torch(ThreeLayers(), ConvertOptions(), example_inputs=(torch.randn(2, 4),))
    models = export_all(source, tmp_path)
    exported, traced = models[DYNAMO], models[TORCHSCRIPT]
    assert isinstance(exported, Model) and isinstance(traced, Model)
    feeds = samples(source, {"batch": 2}, {"batch": 3})
    assert source.find_divergence is not None
    tolerance = Tolerance()

    assert parity(source, exported, feeds).ok
    assert source.find_divergence(exported, feeds[0], tolerance) is None

    broken = scaled(exported, "fc2.weight", 1.5)
    assert not parity(source, broken, feeds).ok
    divergence = source.find_divergence(broken, feeds[0], tolerance)
    assert divergence is not None
    assert divergence.node == "fc2"
    assert divergence.max_abs is not None and divergence.max_abs > 1e-3
    assert divergence.tensor in {o for n in broken.proto.graph.node for o in n.output}

    # the TorchScript exporter records no module scopes: nothing to map, no answer
    assert source.find_divergence(scaled(traced, "fc2.weight", 1.5), feeds[0], tolerance) is None


def _torch_package(path: Path, obj: Any) -> Path:
    """``obj`` pickled at ``models/net.pkl`` in a torch.package archive, as Silero ships its
    models; torch's own modules stay outside it."""
    from torch.package.package_exporter import PackageExporter

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
        with PackageExporter(str(path)) as exporter:
            exporter.extern(["torch.**", "numpy.**"])
            exporter.save_pickle("models", "net.pkl", obj)
    return path


def test_a_module_in_a_torch_package_archive_converts_with_trust(tmp_path: Path) -> None:
    """A torch.package archive was read as a torch.export file (its ``models/`` folder) and
    ended in "We ran into an error when deserializing the saved file"."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    path = _torch_package(tmp_path / "net.pt", net)
    with pytest.raises(FerryError, match=r"is a torch\.package archive .*--trust-pickle") as info:
        load_torch(path, ConvertOptions(input_shapes={"input": (2, 4)}))
    assert_one_line(info.value)
    out = onnxferry.convert(
        path, tmp_path / "net.onnx", trust_pickle=True, input_shapes={"input": [2, 4]}
    )
    assert out.last_report(Conversion).result.verified
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    (y,) = OrtRunner(out).run({out.signature.input_names[0]: x}).values()
    np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_a_torch_package_without_a_module_names_what_it_holds(tmp_path: Path) -> None:
    """Silero's stress and TTS archives pickle a Python wrapper around their network."""
    path = _torch_package(tmp_path / "weights.pt", {"w": torch.zeros(2)})
    with pytest.raises(FerryError) as info:
        load_torch(path, ConvertOptions(trust_pickle=True, input_shapes={"x": (1, 2)}))
    assert_one_line(info.value)
    assert "whose pickles hold dict, not a torch.nn.Module" in str(info.value)
    assert "load_pickle('models', 'net.pkl')" in str(info.value)


def test_a_torch_save_file_from_before_zip_archives_is_read(tmp_path: Path) -> None:
    """PyTorch before 1.6 wrote torch.save files as bare pickles (attacut's model.pth): they
    were "not a zip archive", so not a torch.save file; torch.load reads them."""
    path = tmp_path / "old.pth"
    torch.save(ThreeLayers(), str(path), _use_new_zipfile_serialization=False)
    with pytest.raises(FerryError, match="--trust-pickle") as info:
        load_torch(path, ConvertOptions(input_shapes={"x": (2, 4)}))
    assert_one_line(info.value)
    source = load_torch(path, ConvertOptions(trust_pickle=True, input_shapes={"x": (2, 4)}))
    assert "ThreeLayers pickled in" in source.description


def test_training_checkpoints_give_their_model_or_say_they_hold_weights(tmp_path: Path) -> None:
    """A checkpoint keeping its module under 'model' converts it; PyTorch Lightning's (pesto's
    ``.ckpt``: 'epoch', 'state_dict', ...) is named for what it is, not a bare state_dict."""
    options = ConvertOptions(trust_pickle=True, input_shapes={"x": (2, 4)})
    path = tmp_path / "with_model.pt"
    torch.save({"epoch": 3, "model": ThreeLayers()}, str(path))
    assert "its 'model' entry" in load_torch(path, options).description
    path = tmp_path / "lightning.ckpt"
    torch.save({"epoch": 3, "state_dict": ThreeLayers().state_dict()}, str(path))
    with pytest.raises(FerryError) as info:
        onnxferry.convert(path, tmp_path / "o.onnx", trust_pickle=True)
    assert_one_line(info.value)
    assert "holds a training checkpoint ('epoch', 'state_dict')" in str(info.value)
