"""`onnxferry.explain` against the same shap / lime explainer whose model function calls
``session.run`` once per perturbed sample: same explainer, same samples and seed, same result.

    .venv/bin/python benchmarks/explain_speed.py            # a minute or two on 2 busy cores
    .venv/bin/python benchmarks/explain_speed.py --quick    # fewer samples and rounds

Cases (models built here with onnx.helper, random weights, one shared CPU session):
- ``kernelshap tabular``: an MLP 32 -> 256 -> 256 -> 3 (softmax), 50 background rows,
  ``shap.KernelExplainer(..., nsamples=1024, l1_reg=False)`` on 2 rows;
- ``lime tabular``: the same MLP, ``lime_tabular.LimeTabularExplainer`` (regression on the
  class score, continuous features), ``num_samples=5000`` on 2 rows;
- ``kernelshap image``: ``shap.KernelExplainer`` over ferry's SLIC superpixels (50 asked for,
  ferry's default, and 16 for the example model: shap's own work per sample grows with
  them; hidden ones set to the image's mean; background one all-hidden row),
  ``nsamples=1000``, ``l1_reg=False`` on 2 images;
- ``lime image``: ``lime_image.LimeImageExplainer`` over the same superpixels and hide colour,
  ``num_samples=1000``, ``random_seed=0``, on 2 images; ``batch_size`` is ferry's chunk (about
  1 MiB of input) on both sides, so the only difference is one run per chunk or per image.

The image cases run on two models: the bundled example (examples/tiny_classifier, 3x16x16, 10
classes, microseconds a run) and a small CNN (``cnn``: 3x64x64, three 3x3 convolutions of 16,
32 and 64 channels with ReLU, 2x2 max-pools between them, global average pool, Gemm to 10,
softmax), the kind of image classifier a user explains.

The per-sample side is the explainer a user writes by hand: the same explainer object, the
same arguments, numpy's generator seeded the same way before each row, and a model function
that loops over the rows it is given with one ``session.run`` each. ferry's side is
``onnxferry.explain(..., session=...)`` on the same session. Both results must agree (max abs
difference printed, asserted below 1e-4); the ratio is per-sample seconds over ferry's, the
median over rounds (sides interleaved). Target: every ratio >= 5x; exit 1 when one is missed.

A short case runs more rounds: enough for about 2 s of its per-sample side, at most 15.
A second table splits each side's time, from as many more runs of each (after the timed
rounds; each column's median) through a session that adds up the seconds in ``run``: in the
model (``session.run``), ferry's own masking (``Groups.compose``), and the rest (the
explainer's own Python, SLIC, the loop). ``model gain`` is the per-sample side's model seconds
over ferry's: what batching saves in the model itself; ``ceiling`` is the per-sample total
over ferry's time outside the model: the ratio ferry would reach if its model runs took no
time at all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine import cpu_summary, load_average
from onnxferry.explain import explain, masking
from onnxferry.explain.evaluate import default_batch_size
from onnxferry.explain.kinds import plan_layout
from onnxferry.explain.masking import baseline, from_hwc, image_groups, spatial_labels, to_hwc
from onnxferry.model import Model
from onnxferry.runtime import create_session

TARGET = 5.0
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_classifier" / "model.onnx"


def _model(nodes: list[Any], x: Any, out: Any, weights: dict[str, np.ndarray]) -> Model:
    graph = helper.make_graph(
        nodes, "bench", [x], [out], [numpy_helper.from_array(v, k) for k, v in weights.items()]
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return Model.from_proto(proto)


def mlp(features: int = 32, hidden: int = 256, classes: int = 3) -> Model:
    rng = np.random.default_rng(0)
    sizes = [features, hidden, hidden, classes]
    weights, nodes, last = {}, [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        weights[f"w{i}"] = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        weights[f"b{i}"] = rng.normal(size=(b,)).astype(np.float32) * 0.1
        nodes.append(helper.make_node("Gemm", [last, f"w{i}", f"b{i}"], [f"g{i}"]))
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"h{i}"]))
            last = f"h{i}"
    nodes.append(helper.make_node("Softmax", [f"g{len(sizes) - 2}"], ["probs"], axis=-1))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])
    return _model(nodes, x, out, weights)


def cnn(size: int = 64, widths: tuple[int, ...] = (16, 32, 64)) -> Model:
    """3 x ``size`` x ``size`` -> per width: Conv 3x3 (padded), Relu, then 2x2 MaxPool between
    blocks; global average pool, Gemm to 10, softmax."""
    rng = np.random.default_rng(0)
    weights: dict[str, np.ndarray] = {}
    nodes, last, given = [], "x", 3
    for i, width in enumerate(widths):
        scale = np.sqrt(9 * given)
        weights[f"k{i}"] = (rng.normal(size=(width, given, 3, 3)) / scale).astype(np.float32)
        weights[f"kb{i}"] = np.zeros(width, np.float32)
        nodes.append(helper.make_node("Conv", [last, f"k{i}", f"kb{i}"], [f"c{i}"], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        last, given = f"r{i}", width
        if i < len(widths) - 1:
            pool = helper.make_node(
                "MaxPool", [last], [f"m{i}"], kernel_shape=[2, 2], strides=[2, 2]
            )
            nodes.append(pool)
            last = f"m{i}"
    weights["w"] = rng.normal(size=(given, 10)).astype(np.float32)
    weights["b"] = np.zeros(10, np.float32)
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])
    return _model(nodes, x, out, weights)


class Timed:
    """A session that adds up the seconds spent in its ``run``."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.seconds = 0.0

    def run(self, names: Any, feeds: Any, options: Any = None) -> Any:
        start = time.perf_counter()
        try:
            return self.session.run(names, feeds, options)
        finally:
            self.seconds += time.perf_counter() - start


@contextlib.contextmanager
def timed_compose(spent: list[float]) -> Iterator[None]:
    """``Groups.compose`` (ferry's masking) timed into ``spent[0]`` while inside."""
    original = masking.Groups.compose

    def compose(
        self: masking.Groups, sample: np.ndarray, hidden: np.ndarray, masks: np.ndarray
    ) -> np.ndarray:
        start = time.perf_counter()
        try:
            return original(self, sample, hidden, masks)
        finally:
            spent[0] += time.perf_counter() - start

    masking.Groups.compose = compose  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        masking.Groups.compose = original  # type: ignore[method-assign]


@dataclass
class Split:
    """One more run of each side: totals, seconds in session.run, in ferry's masking."""

    ferry: float
    ferry_model: float
    ferry_masking: float
    loop: float
    loop_model: float

    @property
    def gain(self) -> float:
        return self.loop_model / self.ferry_model

    @property
    def ceiling(self) -> float:
        return self.loop / (self.ferry - self.ferry_model)


@dataclass
class Case:
    name: str
    evaluations: int
    ferry_s: list[float]
    loop_s: list[float]
    max_diff: float
    split: Split

    @property
    def ratio(self) -> float:
        return statistics.median(self.loop_s) / statistics.median(self.ferry_s)


def _per_sample(
    session: Any, target: int, names: tuple[str, str] = ("x", "probs")
) -> tuple[Callable[[np.ndarray], np.ndarray], list[int]]:
    """A model function with one session.run per row, and its run counter."""
    runs = [0]
    name, output = names

    def f(rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows))
        for i, row in enumerate(np.asarray(rows, np.float32)):
            out[i] = session.run([output], {name: row[None]})[0][0, target]
            runs[0] += 1
        return out

    return f, runs


def _quiet_shap() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

    return shap


def kernelshap_tabular(session: Any, model: Model, rows: int, nsamples: int) -> tuple[Any, ...]:
    shap = _quiet_shap()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 32)).astype(np.float32)
    bg = rng.normal(size=(50, 32)).astype(np.float32)

    def ferry() -> tuple[np.ndarray, int]:
        e = explain(model, x, "kernelshap", background=bg, samples=nsamples, session=session)
        return e.attributions, e.evaluations

    targets = session.run(["probs"], {"x": x})[0].argmax(axis=1)

    def loop() -> tuple[np.ndarray, int]:
        values, count = [], 0
        for i in range(rows):
            f, runs = _per_sample(session, int(targets[i]))
            np.random.seed(0)
            explainer = shap.KernelExplainer(f, bg.astype(np.float64))
            phi = explainer.shap_values(
                x[i : i + 1].astype(np.float64), nsamples=nsamples, l1_reg=False, silent=True
            )
            values.append(np.asarray(phi).reshape(-1))
            count += runs[0]
        return np.stack(values), count + rows  # + ferry's one run per row for its target

    return ferry, loop


def lime_tabular(session: Any, model: Model, rows: int, samples: int) -> tuple[Any, ...]:
    from lime.lime_tabular import LimeTabularExplainer

    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, 32)).astype(np.float32)
    bg = rng.normal(size=(50, 32)).astype(np.float32)
    targets = session.run(["probs"], {"x": x})[0].argmax(axis=1)

    def ferry() -> tuple[np.ndarray, int]:
        e = explain(model, x, "lime", background=bg, samples=samples, session=session)
        return e.attributions, e.evaluations

    def loop() -> tuple[np.ndarray, int]:
        values, count = [], 0
        for i in range(rows):
            f, runs = _per_sample(session, int(targets[i]))
            explainer = LimeTabularExplainer(
                bg.astype(np.float64),
                mode="regression",
                discretize_continuous=False,
                feature_selection="none",
                random_state=0,
            )
            exp = explainer.explain_instance(
                x[i].astype(np.float64), f, num_features=32, num_samples=samples
            )
            row = np.zeros(32)
            for j, w in exp.local_exp[1]:
                row[j] = w
            values.append(row)
            count += runs[0]
        return np.stack(values), count + rows

    return ferry, loop


def _image_setup(session: Any, model: Model, rows: int) -> tuple[Any, ...]:
    """Random images for the model's first input, their layout, samples and argmax targets."""
    spec, output = model.signature.inputs[0], model.signature.output_names[0]
    shape = [int(d) for d in spec.shape[1:]]  # type: ignore[arg-type, index]
    x = np.random.default_rng(2).uniform(size=(rows, *shape)).astype(np.float32)
    layout, samples = plan_layout(spec, x)
    targets = session.run([output], {spec.name: x})[0].argmax(axis=1)
    return (spec.name, output), x, layout, samples, targets


def kernelshap_image(
    session: Any, model: Model, rows: int, nsamples: int, segments: int = 50
) -> tuple[Any, ...]:
    shap = _quiet_shap()
    names, x, layout, samples, targets = _image_setup(session, model, rows)

    def ferry() -> tuple[np.ndarray, int]:
        e = explain(model, x, "kernelshap", samples=nsamples, segments=segments, session=session)
        return e.attributions, e.evaluations

    def loop() -> tuple[np.ndarray, int]:
        values, count = [], 0
        for i in range(rows):
            groups = image_groups(samples[i], layout, segments)
            hidden = baseline(layout, samples[i], None)
            f, runs = _per_sample(session, int(targets[i]), names)

            def masked(
                z: np.ndarray, i: int = i, f: Any = f, groups: Any = groups, hidden: Any = hidden
            ) -> Any:
                return f(groups.compose(samples[i], hidden, z))

            np.random.seed(0)
            explainer = shap.KernelExplainer(masked, np.zeros((1, groups.count)))
            phi = explainer.shap_values(
                np.ones((1, groups.count)), nsamples=nsamples, l1_reg=False, silent=True
            )
            values.append(groups.spread(np.asarray(phi).reshape(-1)))
            count += runs[0]
        return np.stack(values), count + rows

    return ferry, loop


def lime_image(session: Any, model: Model, rows: int, num_samples: int) -> tuple[Any, ...]:
    from lime.lime_image import LimeImageExplainer

    names, x, layout, samples, targets = _image_setup(session, model, rows)
    batch = default_batch_size(layout, np.dtype(np.float32))  # ferry's chunk, given to lime

    def ferry() -> tuple[np.ndarray, int]:
        e = explain(model, x, "lime", samples=num_samples, session=session)
        return e.attributions, e.evaluations

    def loop() -> tuple[np.ndarray, int]:
        values, count = [], 0
        for i in range(rows):
            groups = image_groups(samples[i], layout, 50)
            hidden = baseline(layout, samples[i], None)
            segments = spatial_labels(groups, layout)
            f, runs = _per_sample(session, int(targets[i]), names)

            def classify(images: np.ndarray, f: Any = f) -> np.ndarray:
                return f(from_hwc(np.asarray(images), layout))[:, None]  # type: ignore[no-any-return]

            with contextlib.redirect_stderr(io.StringIO()):  # lime's tqdm bar
                explanation = LimeImageExplainer(random_state=0).explain_instance(
                    to_hwc(samples[i], layout),  # float32, as ferry gives it
                    classify,
                    labels=(0,),
                    top_labels=None,
                    hide_color=to_hwc(hidden, layout),
                    num_features=groups.count,
                    num_samples=num_samples,
                    batch_size=batch,
                    segmentation_fn=lambda image, s=segments: s,
                    random_seed=0,
                )
            weights = np.zeros(groups.count)
            for segment, weight in explanation.local_exp[0]:
                weights[segment] = weight
            values.append(groups.spread(weights))
            count += runs[0]
        return np.stack(values), count + rows

    return ferry, loop


Build = Callable[[Any], tuple[Any, ...]]
"""A case's sides for a session: ``build(session) -> (ferry, loop)``."""


def run(name: str, build: Build, session: Any, rounds: int) -> Case:
    ferry, loop = build(session)
    ferry()  # warm-up: imports, numba, the session's first runs
    start = time.perf_counter()
    loop()
    # Short cases get more rounds (up to 15): about 2 s of per-sample runs in all.
    rounds = min(max(rounds, 15), max(rounds, math.ceil(2.0 / (time.perf_counter() - start))))
    ferry_s: list[float] = []
    loop_s: list[float] = []
    for r in range(rounds):
        order = (
            [("ferry", ferry), ("loop", loop)] if r % 2 == 0 else [("loop", loop), ("ferry", ferry)]
        )
        results = {}
        for side, fn in order:
            start = time.perf_counter()
            results[side] = fn()
            (ferry_s if side == "ferry" else loop_s).append(time.perf_counter() - start)
    (a, evals_a), (b, evals_b) = results["ferry"], results["loop"]
    assert evals_a == evals_b, f"{name}: {evals_a} evaluations against {evals_b}"
    diff = float(np.abs(a - b).max())
    assert diff < 1e-4, f"{name}: results differ by {diff}"
    splits = [split(build, session) for _ in range(rounds)]
    medians = [statistics.median(values) for values in zip(*map(astuple, splits), strict=True)]
    return Case(name, evals_a, ferry_s, loop_s, diff, Split(*medians))


def split(build: Build, session: Any) -> Split:
    """One more run of each side through ``Timed`` sessions, ferry's masking timed too."""
    timed_ferry, timed_loop = Timed(session), Timed(session)
    ferry, _ = build(timed_ferry)
    _, loop = build(timed_loop)
    timed_ferry.seconds = timed_loop.seconds = 0.0
    spent = [0.0]
    with timed_compose(spent):
        start = time.perf_counter()
        ferry()
        ferry_s = time.perf_counter() - start
    start = time.perf_counter()
    loop()
    loop_s = time.perf_counter() - start
    return Split(ferry_s, timed_ferry.seconds, spent[0], loop_s, timed_loop.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="run the cases whose name holds this text")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    scale = 4 if args.quick else 1
    tabular, tiny, image = mlp(), Model.load(EXAMPLE), cnn()
    tab_session, tiny_session, img_session = (create_session(m) for m in (tabular, tiny, image))
    n = 1000 // scale
    plan: list[tuple[str, Build, Any]] = [
        (
            "kernelshap tabular",
            lambda s: kernelshap_tabular(s, tabular, 2, 1024 // scale),
            tab_session,
        ),
        ("lime tabular", lambda s: lime_tabular(s, tabular, 2, 5000 // scale), tab_session),
        (
            "kernelshap image 3x16x16 (example)",
            lambda s: kernelshap_image(s, tiny, 2, n),
            tiny_session,
        ),
        (
            "kernelshap image 3x16x16 (example), 16 superpixels",
            lambda s: kernelshap_image(s, tiny, 2, n, 16),
            tiny_session,
        ),
        ("kernelshap image 3x64x64 (cnn)", lambda s: kernelshap_image(s, image, 2, n), img_session),
        ("lime image 3x16x16 (example)", lambda s: lime_image(s, tiny, 2, n), tiny_session),
        ("lime image 3x64x64 (cnn)", lambda s: lime_image(s, image, 2, n), img_session),
    ]
    cases = [run(name, build, s, rounds) for name, build, s in plan if (args.only or "") in name]
    import onnxruntime

    print(f"machine: {cpu_summary()}; load average {load_average()}")
    print(f"onnxruntime {onnxruntime.__version__}, rounds {rounds}, median seconds")
    print("| case | evaluations | ferry s | per-sample s | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in cases:
        print(
            f"| {c.name} | {c.evaluations} | {statistics.median(c.ferry_s):.3f} | "
            f"{statistics.median(c.loop_s):.3f} | {c.ratio:.1f}x | {c.max_diff:.1e} |"
        )
    print()
    print(
        "| case | ferry s | in session.run | ferry's masking | rest | per-sample s | "
        "in session.run | rest | model gain | ceiling |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        t = c.split
        print(
            f"| {c.name} | {t.ferry:.3f} | {t.ferry_model:.3f} | {t.ferry_masking:.3f} | "
            f"{t.ferry - t.ferry_model - t.ferry_masking:.3f} | {t.loop:.3f} | "
            f"{t.loop_model:.3f} | {t.loop - t.loop_model:.3f} | {t.gain:.1f}x | {t.ceiling:.1f}x |"
        )
    missed = [c.name for c in cases if c.ratio < TARGET]
    print(f"target >= {TARGET:g}x: {'met' if not missed else 'missed by ' + ', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
