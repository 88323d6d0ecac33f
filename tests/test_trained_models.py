"""tests/trained_models.py: the small variants train to a useful accuracy, export through
ferry's convert (dynamo) with parity, and the cache is keyed by the builder's source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from onnxferry.convert import Conversion
from tests.trained_models import (
    ENCODER_PARTS,
    LANGUAGE,
    SMALL_CNN,
    SMALL_ENCODER,
    builder_source,
    cache_key,
    cached,
    digits_split,
    documents,
    encoder_inputs,
    export_torch,
    train_cnn,
    train_encoder,
)

torch = pytest.importorskip("torch")


def _onnx_outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, f)[0] for f in feeds])


def _torch_outputs(net: Any, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [net(*(torch.from_numpy(v) for v in f.values())).numpy() for f in feeds]
        )


def test_the_synthetic_language_pads_and_keeps_lengths_in_range() -> None:
    ids, mask, topics = documents(LANGUAGE, 64, 128, seed=0, lengths=(8, 24))
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 8 and lengths.max() <= 24
    assert (ids[mask == 0] == 0).all() and (ids[:, 0] == 1).all()  # [PAD] after, [CLS] first
    assert ids.max() < LANGUAGE.vocab and set(topics.tolist()) <= set(range(LANGUAGE.topics))
    feeds = encoder_inputs(SMALL_ENCODER, 6, seed=1)
    real = [int(f["attention_mask"].sum()) for f in feeds]
    assert all(f["input_ids"].shape == (1, 128) for f in feeds)
    assert max(real[0::2]) <= 24 and min(real[1::2]) >= 64  # short and long alternate


@pytest.mark.slow  # about a minute on an idle 2-core machine: training, then the dynamo export
def test_the_small_encoder_learns_topics_and_exports_with_parity(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    net, stats = train_encoder(SMALL_ENCODER)
    assert stats["topic_accuracy"] >= 0.5, stats  # chance is 1/8
    assert set(stats["outliers"]) == {f"layer{i}.{k}" for i in range(2) for k in
                                      ("up", "down", "out")}  # fmt: skip
    feeds = encoder_inputs(SMALL_ENCODER, 4, seed=3)
    model = export_torch(net, feeds[0], tmp_path / "encoder.onnx")
    assert model.last_report(Conversion).result.chosen == "torch.onnx (dynamo)"
    assert [s.shape for s in model.signature.inputs] == [(1, 128), (1, 128)]
    np.testing.assert_allclose(
        _onnx_outputs(tmp_path / "encoder.onnx", feeds),
        _torch_outputs(net, feeds),
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.mark.slow  # about a minute on an idle 2-core machine: training, then the dynamo export
def test_the_small_cnn_learns_digits_and_exports_with_parity(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    net, stats = train_cnn(SMALL_CNN)
    assert stats["test_accuracy"] >= 0.9, stats
    x_test = digits_split(SMALL_CNN.size)[2]
    feeds = [{"image": x_test[i : i + 1]} for i in range(16)]
    export_torch(net, feeds[0], tmp_path / "cnn.onnx")
    got, want = _onnx_outputs(tmp_path / "cnn.onnx", feeds), _torch_outputs(net, feeds)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_the_cache_is_keyed_by_the_builder_source(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(spec: Any, path: Path) -> dict[str, Any]:
        calls.append(path)
        path.write_bytes(b"onnx")
        return {"spec": spec}

    def other_build(spec: Any, path: Path) -> dict[str, Any]:  # another source, another key
        return build(spec, path)

    first = cached("toy", 1, build, [build], root=tmp_path)
    again = cached("toy", 1, build, [build], root=tmp_path)
    assert (first.cached, again.cached, again.path, len(calls)) == (False, True, first.path, 1)
    assert json.loads(first.path.with_suffix(".json").read_text()) == {"spec": 1}
    edited = cached("toy", 1, other_build, [other_build], root=tmp_path)
    other_spec = cached("toy", 2, build, [build], root=tmp_path)
    assert not edited.cached and not other_spec.cached and len(calls) == 3
    assert len({first.path, edited.path, other_spec.path}) == 3
    source = builder_source(ENCODER_PARTS)
    assert "def train_encoder" in source and "def encoder_module" in source
    assert cache_key(SMALL_ENCODER, source) != cache_key(SMALL_ENCODER, source + "# edit")
