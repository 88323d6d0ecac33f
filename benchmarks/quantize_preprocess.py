"""Does ORT's ``quant_pre_process`` change what ``quantize_dynamic`` writes, or its speed?

    .venv/bin/python benchmarks/quantize_preprocess.py [--model M.onnx] [--rounds 7]

Four int8 models from one fp32 model: ``quantize_dynamic`` on the model as it is and after
``quant_pre_process`` (shape inference, no graph optimization: what ferry's int8_dynamic does
by default), each per tensor and per channel. Printed: each model's commonest operators, and
its p50 at batch 1 timed side by side with the original (``--rounds`` rounds of 20 runs, the
models taking turns; speedup = median of the per-round ratios). Default model: the trained
6x384 encoder of optimize_v2.py (trained once, then from tests/trained_models.py's cache),
fed sequences of 128 tokens.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.trained_models
from tests.trained_models import MINILM_ENCODER, encoder_inputs, trained_encoder

from machine import cpu_summary, load_average


def variants(source: Path, workdir: Path) -> dict[str, Path]:
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / "pre.onnx"
    quant_pre_process(str(source), str(pre), skip_optimization=True)
    models = {"original": source}
    for per_channel in (False, True):
        for name, start in (("quantize_dynamic", source), ("pre-processed", pre)):
            label = f"{name}{' per channel' if per_channel else ''}"
            out = workdir / f"{label.replace(' ', '-')}.onnx"
            quantize_dynamic(str(start), str(out), per_channel=per_channel)
            models[label] = out
    return models


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="an fp32 model (default: the trained encoder)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    print(cpu_summary())
    print(f"onnxruntime {ort.__version__}, load average {load_average()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    if args.model is None:
        source = trained_encoder(MINILM_ENCODER).path
        feeds = encoder_inputs(MINILM_ENCODER, 1, seed=1000)[0]
    else:
        source = args.model
        feeds = None
    with tempfile.TemporaryDirectory() as name:
        models = variants(source, Path(name))
        sessions = {k: ort.InferenceSession(str(v), providers=["CPUExecutionProvider"])
                    for k, v in models.items()}  # fmt: skip
        if feeds is None:
            from onnxferry.feeds import plan_feeds
            from onnxferry.model import Model

            feeds = plan_feeds(Model.load(source), dims={"batch": 1}).feeds(seed=0)
        for label, path in models.items():
            ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            print(f"{label}: {', '.join(f'{k} {v}' for k, v in ops.most_common(4))}")
        p50: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for label, session in sessions.items():
                for _ in range(3):
                    session.run(None, feeds)
                runs = []
                for _ in range(20):
                    start = time.perf_counter()
                    session.run(None, feeds)
                    runs.append(time.perf_counter() - start)
                p50[label].append(statistics.median(runs) * 1e3)
    base = p50["original"]
    for label, values in p50.items():
        ratios = [b / v for b, v in zip(base, values, strict=True)]
        print(f"{label}: p50 {statistics.median(values):.3f} ms, speedup "
              f"{statistics.median(ratios):.3f}x (rounds "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
