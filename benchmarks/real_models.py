"""Every verb on the model-zoo models that ship inside the onnx wheel: a table for RESULTS.md.

    .venv/bin/python benchmarks/real_models.py [--time-budget 5]

For each ``onnx/backend/test/data/light/light_*.onnx`` it runs, in one process through the CLI,
``inspect``, ``check``, ``compare M M``, ``test`` (golden data from the shipped reference
output and the input onnx's backend runner made it from), ``bench --iterations 20``,
``optimize --auto --time-budget N`` and one served request (a real server on loopback and
tritonclient), and prints one Markdown row per model: each verb's exit code (ok, or the
first words of its one-line error) and wall time. The CPU and its int8 extensions go first.
Exit 1 if any verb ended in an internal error (exit 3).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from tests.real_models import (
    light_input,
    light_model_paths,
    light_reference_path,
    load_reference,
    write_golden,
)

from machine import cpu_summary
from onnxferry.cli import main

VERBS = ("inspect", "check", "compare", "test", "bench", "optimize --auto", "serve")


def run_cli(*args: object) -> tuple[int, str, float]:
    """(exit code, the error line if any, seconds) of one `ferry` command in this process."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    seconds = time.perf_counter() - start
    line = next((ln for ln in err.getvalue().splitlines() if "error" in ln), "")
    return code, line, seconds


def serve_once(path: Path, feeds: dict[str, np.ndarray]) -> tuple[int, str, float]:
    """Start the server on the model, send one request with tritonclient, compare to ORT."""
    import onnxruntime as ort
    import tritonclient.http as httpclient

    from onnxferry.serve.server import running

    start = time.perf_counter()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    with running(path) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        inputs = []
        for name, array in feeds.items():
            tensor = httpclient.InferInput(name, list(array.shape), "FP32")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(path.stem, inputs)
    seconds = time.perf_counter() - start
    for out, want in zip(session.get_outputs(), expected, strict=True):
        if not np.allclose(result.as_numpy(out.name), want, rtol=1e-5, atol=1e-6):
            return 1, f"output {out.name} differs from onnxruntime", seconds
    return 0, "", seconds


def cell(code: int, line: str, seconds: float) -> str:
    status = "ok" if code == 0 else f"exit {code}: {line.removeprefix('ferry: error: ')[:60]}"
    return f"{status} ({seconds:.1f} s)"


def model_row(path: Path, time_budget: float) -> list[tuple[int, str, float]]:
    """(exit code, error line, seconds) of every verb on one light model."""
    import onnx

    proto = onnx.load(str(path))
    feeds = light_input(proto)
    reference = {proto.graph.output[0].name: load_reference(light_reference_path(path))}
    with tempfile.TemporaryDirectory() as tmp:
        golden = write_golden(Path(tmp) / "golden", feeds, reference)
        fast = Path(tmp) / "fast.onnx"
        auto = ("--auto", "--inputs", golden, "--time-budget", time_budget)
        return [
            run_cli("inspect", path),
            run_cli("check", path),
            run_cli("compare", path, path),
            run_cli("test", path, golden),
            run_cli("bench", path, "--iterations", 20),
            run_cli("optimize", path, "-o", fast, *auto),
            serve_once(path, feeds),
        ]


def main_(time_budget: float) -> int:
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | " + " | ".join(VERBS) + " |")
    print("|---" * (len(VERBS) + 1) + "|")
    internal = 0
    for path in light_model_paths():
        row = model_row(path, time_budget)
        internal += sum(code == 3 for code, _, _ in row)
        cells = " | ".join(cell(*result) for result in row)
        print(f"| {path.stem.removeprefix('light_')} | {cells} |", flush=True)
    return 1 if internal else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=5.0)
    sys.exit(main_(parser.parse_args().time_budget))
