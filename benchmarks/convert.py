"""Cost of verification in `onnxferry.convert`, against the cost of exporting, in one process.

    .venv/bin/python benchmarks/convert.py

For a BERT-style encoder (transformers config, random weights) and a small CNN, it measures:
- export alone: what a user runs today, torch.onnx.export with each exporter (dynamo and
  TorchScript), timed by hand;
- onnxferry.convert: the same exports plus verification (reference runs in torch, ONNX
  Runtime runs on several shapes, parity, and timing the passing candidates to pick one).
Verification time = convert time - the exporters' own time inside convert. Target: at most
0.5x the export time. A warm-up conversion runs first so one-time imports are not counted.
Exit 1 when a target is missed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET = 0.5
ROUNDS = 3


def cnn() -> tuple[Any, dict[str, Any], dict[str, dict[int, str]]]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    ).eval()
    return net, {"input": torch.randn(2, 3, 32, 32)}, {"input": {0: "batch"}}


def bert() -> tuple[Any, dict[str, Any], dict[str, dict[int, str]]]:
    import torch
    import transformers

    config = transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=1000,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model: Any = transformers.BertModel(config)
    model.eval()
    example = {
        "input_ids": torch.randint(0, 1000, (2, 16)),
        "attention_mask": torch.ones(2, 16, dtype=torch.int64),
        "token_type_ids": torch.zeros(2, 16, dtype=torch.int64),
    }
    return model, example, {name: {0: "batch", 1: "seq"} for name in example}


def positional(model: Any, names: list[str]) -> Any:
    """``model`` called with positional inputs (the TorchScript exporter passes them so)."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            out = self.model(**dict(zip(names, args, strict=True)))
            return out.to_tuple() if hasattr(out, "to_tuple") else out

    return Wrapper().eval()


def export_alone(model: Any, example: dict[str, Any], axes: dict[str, dict[int, str]]) -> float:
    """Seconds for torch.onnx.export with both exporters, as a user would call them."""
    import torch

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = list(example)
        dims = {name: torch.export.Dim(name) for spec in axes.values() for name in spec.values()}
        shapes = {k: {a: dims[n] for a, n in v.items()} for k, v in axes.items()}
        start = time.perf_counter()
        torch.onnx.export(
            model, (), f"{tmp}/d.onnx", kwargs=example, dynamo=True, input_names=names,
            dynamic_shapes=shapes, verbose=False,
        )  # fmt: skip
        torch.onnx.export(
            positional(model, names), tuple(example.values()), f"{tmp}/t.onnx", dynamo=False,
            input_names=names, dynamic_axes=axes,
        )  # fmt: skip
        return time.perf_counter() - start


def convert_once(
    model: Any, example: dict[str, Any], axes: dict[str, dict[int, str]]
) -> tuple[float, float]:
    """(total seconds of onnxferry.convert, seconds spent inside the exporters)."""
    import onnxferry

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = onnxferry.convert(model, Path(tmp) / "m.onnx", example_inputs=example, dynamic=axes)
        total = time.perf_counter() - start
    attempts = out.provenance[-1].result.attempts
    return total, sum(a.export_s or 0.0 for a in attempts)


def measure(name: str, build: Callable[[], tuple[Any, dict[str, Any], Any]]) -> bool:
    model, example, axes = build()
    convert_once(model, example, axes)  # warm-up: imports and the exporters' first-call setup
    alone, totals, exports = [], [], []
    for _ in range(ROUNDS):
        alone.append(export_alone(model, example, axes))
        total, export = convert_once(model, example, axes)
        totals.append(total)
        exports.append(export)
    export_s = statistics.median(exports)
    verify_s = statistics.median(t - e for t, e in zip(totals, exports, strict=True))
    ratio = verify_s / export_s
    print(f"{name}:")
    print(f"  export alone (torch.onnx.export, both exporters): {statistics.median(alone):.2f} s")
    print(f"  export inside convert:                            {export_s:.2f} s")
    print(f"  verification (everything else in convert):        {verify_s:.2f} s")
    print(f"  convert total:                                    {statistics.median(totals):.2f} s")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"{verdict} {name}: verification / export = {ratio:.2f} (target <= {TARGET})")
    return ratio <= TARGET


def main() -> int:
    results = [measure("cnn", cnn), measure("bert", bert)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
