"""``ferry package --target tflite`` on every real model of benchmarks/real_models.py: a table.

    .venv/bin/python benchmarks/tflite_models.py [--only a,b]

One row per model (the zoo's, the built quirks, those from public wheels): exit code,
seconds, whether the parity check passed and whether onnx2tf's strict mode was needed, and
the parity figures (or the first words of the one-line refusal). Run it at two commits to
see what a change to the tflite target does to time and outcome; the CPU goes first.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.real_models

from machine import cpu_summary
from onnxferry.cli import main as ferry
from real_models import models


def row(name: str, path: Path, out: Path) -> str:
    stdout, stderr = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = ferry(["package", str(path), "--target", "tflite", "--json", "-o", str(out)])
    seconds = time.perf_counter() - start
    if code in (0, 1):
        result = json.loads(stdout.getvalue())["result"]
        parity = result["checks"][0]
        strict = any("strict mode:" in n for n in result["notes"])
        figures = parity["detail"][parity["detail"].find("max abs") :].split(")")[0]
        said = f"parity {'ok' if parity['ok'] else 'FAILED'}, strict {strict}: {figures}"
    else:
        said = stderr.getvalue().strip().splitlines()[-1].removeprefix("ferry: error: ")[:90]
    return f"| {name} | {code} | {seconds:.1f} | {said} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="these models only, e.g. ppocr_rec,smart_turn")
    options = parser.parse_args()
    only = set(options.only.split(",")) if options.only else None
    print(f"machine: {cpu_summary()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| model | exit | s | outcome |\n|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, _, _ in models(Path(tmp)):
            if only is None or name in only:
                print(row(name, path, Path(tmp) / f"{name}-tflite"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
