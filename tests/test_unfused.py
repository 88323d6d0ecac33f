"""`unfused`: ONNX Runtime's fused transformer operators written back as standard ONNX, held
to what ONNX Runtime computes with the fused ones, on padded rows."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxferry.unfused import fused_ops, unfuse

HIDDEN, HEADS, VOCAB, SEQ = 8, 2, 20, 6
Feeds = dict[str, np.ndarray]


def _weights(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[str],
    weights: dict[str, np.ndarray],
    opset: int,
) -> onnx.ModelProto:
    """Float outputs of the rank of the first input's (every output here is)."""
    rank = len(inputs[0].type.tensor_type.shape.dim) + (inputs[0].name == "ids")
    dims: list[int | str] = [f"d{i}" for i in range(rank)]
    graph = helper.make_graph(
        nodes,
        "fused",
        inputs,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name in outputs],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _float(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ids(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "sequence"])


def gelus(opset: int) -> onnx.ModelProto:
    """com.microsoft Gelu, BiasGelu and FastGelu with and without its bias."""
    ms = {"domain": "com.microsoft"}
    return _model(
        [
            helper.make_node("Gelu", ["x"], ["erf"], **ms),
            helper.make_node("BiasGelu", ["x", "bias"], ["biased"], **ms),
            helper.make_node("FastGelu", ["x", "bias"], ["fast"], **ms),
            helper.make_node("FastGelu", ["x"], ["fast_plain"], **ms),
        ],
        [_float("x", ["batch", HIDDEN])],
        ["erf", "biased", "fast", "fast_plain"],
        {"bias": _weights(HIDDEN)},
        opset,
    )


def norms(opset: int) -> onnx.ModelProto:
    """SkipLayerNormalization with a bias and its sum read, and LayerNormalization (in the
    ONNX domain even before opset 17, as ONNX Runtime's optimizer writes it)."""
    return _model(
        [
            helper.make_node(
                "SkipLayerNormalization",
                ["x", "skip", "gamma", "beta", "bias"],
                ["normed", "", "", "summed"],
                domain="com.microsoft",
                epsilon=1e-5,
            ),
            helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["plain"], epsilon=1e-5),
        ],
        [_float("x", ["batch", SEQ, HIDDEN]), _float("skip", ["batch", SEQ, HIDDEN])],
        ["normed", "summed", "plain"],
        {
            "gamma": _weights(HIDDEN),
            "beta": _weights(HIDDEN, seed=1),
            "bias": _weights(HIDDEN, seed=2),
        },
        opset,
    )


def encoder(opset: int, *, raw_mask: bool = False, causal: bool = False) -> onnx.ModelProto:
    """EmbedLayerNormalization (word, position, segment; its mask_index the row lengths)
    into Attention; with ``raw_mask`` the Attention reads the int32 mask itself."""
    ms = {"domain": "com.microsoft"}
    mask = "mask" if raw_mask else "mask_index"
    return _model(
        [
            helper.make_node(
                "EmbedLayerNormalization",
                ["ids", "segments", "word", "position", "segment", "gamma", "beta", "mask"],
                ["embedded", "mask_index"],
                epsilon=1e-12,
                **ms,
            ),
            helper.make_node(
                "Attention",
                ["embedded", "qkv", "qkv_bias", mask],
                ["attended"],
                num_heads=HEADS,
                unidirectional=int(causal),
                **ms,
            ),
        ],
        [_ids("ids"), _ids("segments"), _ids("mask")],
        ["attended", "embedded"],
        {
            "word": _weights(VOCAB, HIDDEN),
            "position": _weights(SEQ, HIDDEN, seed=1),
            "segment": _weights(2, HIDDEN, seed=2),
            "gamma": _weights(HIDDEN, seed=3),
            "beta": _weights(HIDDEN, seed=4),
            "qkv": _weights(HIDDEN, 3 * HIDDEN),
            "qkv_bias": _weights(3 * HIDDEN),
        },
        opset,
    )


def _feeds(model: onnx.ModelProto) -> Feeds:
    rng = np.random.default_rng(1)
    names = [i.name for i in model.graph.input]
    if "ids" in names:
        mask = np.ones((3, SEQ), np.int32)
        mask[1, 4:], mask[2, 2:] = 0, 0  # padded rows
        return {
            "ids": rng.integers(0, VOCAB, (3, SEQ), dtype=np.int32),
            "segments": rng.integers(0, 2, (3, SEQ), dtype=np.int32),
            "mask": mask,
        }
    shape = (3, SEQ, HIDDEN) if "skip" in names else (3, HIDDEN)
    return {n: rng.standard_normal(shape).astype(np.float32) * 2 for n in names}


def _run(model: onnx.ModelProto, feeds: Feeds) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


CASES: dict[str, Callable[[int], onnx.ModelProto]] = {
    "gelus": gelus,
    "norms": norms,
    "encoder": encoder,
    "raw mask": lambda opset: encoder(opset, raw_mask=True),
    "causal": lambda opset: encoder(opset, raw_mask=True, causal=True),
}


@pytest.mark.parametrize("opset", [14, 17])
@pytest.mark.parametrize("case", list(CASES))
def test_each_fused_operator_is_what_onnx_runtime_computes(case: str, opset: int) -> None:
    """Written back, no com.microsoft node is left, the onnx checker passes the model, and
    ONNX Runtime gives what it gave with the fused operators, padded rows included."""
    fused = CASES[case](opset)
    feeds = _feeds(fused)
    want = _run(fused, feeds)
    standard = onnx.ModelProto()
    standard.CopyFrom(fused)
    counts = unfuse(standard)
    assert counts and counts == fused_ops(fused)
    assert not [n for n in standard.graph.node if n.domain]
    if opset < 17:  # ONNX defines LayerNormalization from 17 on
        assert "LayerNormalization" not in {n.op_type for n in standard.graph.node}
    onnx.checker.check_model(standard, full_check=True)
    for got, expected in zip(_run(standard, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)


def test_what_is_not_written_here_is_left_as_it_is() -> None:
    """An Attention with a past state, a LayerNormalization whose mean is read: kept."""
    past = encoder(17)
    attention = past.graph.node[1]
    attention.input.append("past")
    attention.output.append("present")
    mean = norms(17)
    mean.graph.node[1].output.append("mean")
    mean.graph.output.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, None))
    assert unfuse(past) == {"EmbedLayerNormalization": 1}
    assert unfuse(mean) == {"SkipLayerNormalization": 1}
    assert [n.op_type for n in past.graph.node if n.domain] == ["Attention"]


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)
def test_a_bert_through_onnx_runtime_s_optimizer_runs_as_standard_onnx(tmp_path: Path) -> None:
    """A BERT exported by torch and fused by ONNX Runtime's transformers optimizer (what
    Optimum's O2-O4 files hold): written back, the same outputs on padded rows; the torch
    translation (integrated gradients) takes it."""
    from onnxferry.model import Model
    from onnxferry.torchgraph import to_torch

    path = ort_optimized_bert(tmp_path)
    fused = onnx.load(str(path))
    assert {"Attention", "EmbedLayerNormalization"} <= set(fused_ops(fused))
    feeds = bert_feeds()
    want = _run(fused, feeds)
    counts = unfuse(fused)
    assert not [n for n in fused.graph.node if n.domain], counts
    for got, expected in zip(_run(fused, feeds), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    module = to_torch(Model.load(path), feeds=[feeds])
    assert module.parity.ok


def ort_optimized_bert(tmp: Path) -> Path:
    """A 1-layer BERT (random weights, from its config) exported by torch and fused by ONNX
    Runtime's transformers optimizer: EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    transformers: Any = importlib.import_module("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config).eval()

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> Any:
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state, out.pooler_output

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.from_numpy(v) for v in bert_feeds().values())
    raw = tmp / "bert.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter warns of its own deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder().eval(), example, str(raw), input_names=names,
            output_names=["last_hidden_state", "pooler_output"], opset_version=14,
            dynamo=False, dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
        )  # fmt: skip
        fused = optimize_model(str(raw), model_type="bert", num_heads=4, hidden_size=32)
    fused.save_model_to_file(str(tmp / "bert_fused.onnx"))
    return tmp / "bert_fused.onnx"


def bert_feeds() -> Feeds:
    rng = np.random.default_rng(2)
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0
    return {
        "input_ids": rng.integers(0, 50, (2, 12)),
        "attention_mask": mask,
        "token_type_ids": np.zeros((2, 12), np.int64),
    }
