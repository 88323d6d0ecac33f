"""`onnxferry.optimize(auto=True)` against what a user would run instead, side by side, in one
process.

    .venv/bin/python benchmarks/optimize.py            # full: about 29 minutes on 2 cores, 22
                                                       # of them in ferry's own search
    .venv/bin/python benchmarks/optimize.py --quick    # smaller models, fewer samples
    .venv/bin/python benchmarks/optimize.py --models b # some of a, b, c, d (the targets of
                                                       # the models left out are not judged)

Models (random weights unless trained here; torch.onnx.export, TorchScript exporter, opset 17,
dynamic batch axis; every figure is taken at batch 1):
(a) a BERT-base encoder (transformers BertConfig: 12 layers, hidden 768, 12 heads,
    intermediate 3072), sequence 128; judged by the worst cosine (per input, the whole
    last_hidden_state, as ferry's budget computes it) against the fp32 model on held-out inputs
    with realistic padded attention masks (onnxferry.feeds.realistic_feeds);
(b) a ResNet-50 built by hand (bottlenecks [3, 4, 6, 3], widths 64..2048, BatchNorm whose
    running statistics come from forward passes on random data), 3x224x224; judged by top-1
    agreement with the fp32 model on random inputs;
(c) an MLP 1024 -> 4096 -> 4096 -> 1000 (ReLU); worst cosine;
(d) a small CNN and a small transformer encoder (the 8 rows of an image as 8 tokens) trained
    here on scikit-learn's bundled digits (8x8 images, no download); accuracy on the held-out
    split.

Variants: ONNX Runtime's default session on the fp32 model; onnxslim then the same session;
ORT's ``quantize_dynamic`` with its defaults; ``onnxferry.optimize(auto=True)`` with the budget
that matches the target (a: cosine>=0.999, b: top1>=0.99, c: cosine>=0.999, d:
accuracy-drop<=0.01 with the held-out split as eval_data). Validation inputs given to ferry
are not the held-out inputs the table is judged on, except in (d), where ferry's eval_data is
the held-out split itself. Latency: one default session per variant (ORT's default threads),
onnxferry.measure.measure, variants interleaved within each round, median of the rounds' p50.
Accuracy: models that quantize activations at run time (dynamic int8) run each input at batch 1,
as deployed (their scales come from the whole batch); the others run 25 rows at a time, which
gives the same rows. Each candidate of ferry's search is timed (wall seconds) by wrapping the
function ``auto_search`` calls per candidate; nothing in the search is changed.

Targets (set for an AVX-512 VNNI CPU): (a) ferry >= 2.5x with cosine >= 0.999; (b) ferry
>= 1.8x with top-1 >= 99%; (d) ferry within 1% accuracy of fp32; on every model ferry no
slower than the fastest of the other three. Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from machine import cpu_summary, load_average

Feeds = dict[str, np.ndarray]

BERT_VOCAB = 30522
SEQUENCE = 128
TORCH_THREADS = 2
EVAL_BATCH = 25
RUNTIME_QUANTIZED = frozenset(
    {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"}
)


@dataclass(frozen=True)
class Settings:
    """What --quick changes."""

    quick: bool
    bert_layers: int = 12
    bert_hidden: int = 768
    bert_heads: int = 12
    bert_intermediate: int = 3072
    bert_validation: int = 16  # batch-1 inputs ferry validates on
    bert_eval: int = 48  # held-out batch-1 inputs for the table
    resnet_blocks: tuple[int, ...] = (3, 4, 6, 3)
    resnet_size: int = 224
    resnet_validation: int = 100
    resnet_eval: int = 500
    mlp_widths: tuple[int, ...] = (1024, 4096, 4096, 1000)
    mlp_validation: int = 16
    mlp_eval: int = 64
    digits_epochs: int = 60
    rounds: int = 5  # interleaved latency rounds
    round_s: float = 1.0  # measured seconds per variant per round

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            bert_layers=4,
            bert_hidden=256,
            bert_heads=4,
            bert_intermediate=1024,
            bert_validation=8,
            bert_eval=8,
            resnet_blocks=(1, 1, 1, 1),
            resnet_size=112,
            resnet_validation=32,
            resnet_eval=64,
            mlp_widths=(512, 2048, 2048, 1000),
            mlp_validation=8,
            mlp_eval=16,
            digits_epochs=10,
            rounds=3,
            round_s=0.3,
        )


@dataclass
class Case:
    """One model and how it is judged."""

    key: str
    title: str
    path: Path
    metric: str  # "cosine", "top1" or "accuracy"
    budget: str
    latency_feeds: Feeds
    eval_feeds: list[Feeds]  # batch 1, held out from ferry's validation inputs (not in (d))
    labels: np.ndarray | None = None
    ferry_inputs: list[Feeds] | None = None
    ferry_eval: dict[str, np.ndarray] | None = None
    setup_s: float = 0.0


@dataclass
class Variant:
    name: str
    path: Path
    build_s: float
    p50_ms: float = math.nan
    metric: float = math.nan
    within: bool = False


@dataclass
class Outcome:
    """What one model's side-by-side run found."""

    case: Case
    variants: list[Variant]
    reference_metric: float  # fp32 accuracy for "accuracy", else 1.0
    search: Any = None
    search_setup_s: float = 0.0
    candidate_s: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def default(self) -> Variant:
        return self.variants[0]

    @property
    def ferry(self) -> Variant:
        return self.variants[-1]

    def speedup(self, variant: Variant) -> float:
        return self.default.p50_ms / variant.p50_ms


# --- the machine ---------------------------------------------------------------------------


# --- models --------------------------------------------------------------------------------


def export(module: Any, example: Sequence[Any], names: list[str], output: str, path: Path) -> None:
    """torch.onnx.export (TorchScript exporter), dim 0 of every input dynamic."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(example),
            str(path),
            dynamo=False,
            input_names=list(names),
            output_names=[output],
            dynamic_axes={n: {0: "batch"} for n in [*names, output]},
            opset_version=17,
        )


def rows(feeds: Feeds, count: int) -> list[Feeds]:
    """The first ``count`` rows of a batched feed set, each a batch-1 feed set."""
    return [{k: v[i : i + 1] for k, v in feeds.items()} for i in range(count)]


def bert_case(s: Settings, workdir: Path) -> Case:
    import torch
    import transformers

    from onnxferry.feeds import realistic_feeds
    from onnxferry.model import Model
    from onnxferry.signature import Signature, TensorSpec

    start = time.perf_counter()
    config = transformers.BertConfig(
        hidden_size=s.bert_hidden,
        num_hidden_layers=s.bert_layers,
        num_attention_heads=s.bert_heads,
        intermediate_size=s.bert_intermediate,
        vocab_size=BERT_VOCAB,
    )
    torch.manual_seed(0)
    bert: Any = transformers.BertModel(config)
    bert.eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            out = self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
            return out.last_hidden_state

    example = [torch.ones(1, SEQUENCE, dtype=torch.int64)] * 3
    path = workdir / "bert.onnx"
    export(Encoder().eval(), example, names, "last_hidden_state", path)
    signature = Model.load(path).signature
    batched = Signature(
        tuple(TensorSpec(i.name, i.dtype, (8, SEQUENCE)) for i in signature.inputs),
        signature.outputs,
    )
    ranges = {"input_ids": (0, BERT_VOCAB)}

    def inputs(first_seed: int, count: int) -> list[Feeds]:
        out: list[Feeds] = []
        seed = first_seed
        while len(out) < count:  # odd rows of each batch of 8 are padded, even rows are not
            out += rows(realistic_feeds(batched, seed=seed, value_ranges=ranges), 8)
            seed += 1
        return out[:count]

    validation = inputs(0, s.bert_validation)
    held_out = inputs(1000, s.bert_eval)
    title = (
        f"(a) BERT encoder: {s.bert_layers} layers, hidden {s.bert_hidden}, {s.bert_heads} "
        f"heads, intermediate {s.bert_intermediate}, sequence {SEQUENCE}, random weights"
    )
    return Case(
        "a", title, path, "cosine", "cosine>=0.999", validation[0], held_out,
        ferry_inputs=validation, setup_s=time.perf_counter() - start,
    )  # fmt: skip


def resnet(blocks: Sequence[int], classes: int = 1000) -> Any:
    """ResNet-50's layout (bottleneck blocks, widths 64..2048) without torchvision."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            out = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
            self.skip: nn.Module = nn.Identity()
            if stride != 1 or cin != out:
                self.skip = nn.Sequential(
                    nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for stage, count in enumerate(blocks):
        width = 64 * 2**stage
        for i in range(count):
            layers.append(Bottleneck(cin, width, 2 if i == 0 and stage > 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def resnet_case(s: Settings, workdir: Path) -> Case:
    import torch

    start = time.perf_counter()
    torch.manual_seed(0)
    net = resnet(s.resnet_blocks)
    size = s.resnet_size
    for m in net.modules():  # running statistics as training would leave them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the passes below
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(8, 3, size, size))
    net.eval()
    path = workdir / "resnet.onnx"
    export(net, [torch.randn(1, 3, size, size)], ["image"], "logits", path)
    rng = np.random.default_rng(1)

    def images(count: int) -> list[Feeds]:
        shape = (1, 3, size, size)
        return [{"image": rng.standard_normal(shape, dtype=np.float32)} for _ in range(count)]

    validation, held_out = images(s.resnet_validation), images(s.resnet_eval)
    blocks = ", ".join(map(str, s.resnet_blocks))
    title = f"(b) ResNet-50-like CNN: bottlenecks [{blocks}], 3x{size}x{size}, random weights"
    return Case(
        "b", title, path, "top1", "top1>=0.99", validation[0], held_out,
        ferry_inputs=validation, setup_s=time.perf_counter() - start,
    )  # fmt: skip


def mlp_case(s: Settings, workdir: Path) -> Case:
    import torch
    from torch import nn

    start = time.perf_counter()
    torch.manual_seed(0)
    widths = s.mlp_widths
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers).eval()
    path = workdir / "mlp.onnx"
    export(net, [torch.randn(1, widths[0])], ["x"], "y", path)
    rng = np.random.default_rng(2)

    def vectors(count: int) -> list[Feeds]:
        return [{"x": rng.standard_normal((1, widths[0]), dtype=np.float32)} for _ in range(count)]

    validation, held_out = vectors(s.mlp_validation), vectors(s.mlp_eval)
    title = f"(c) MLP {' -> '.join(map(str, widths))}, ReLU, random weights"
    return Case(
        "c", title, path, "cosine", "cosine>=0.999", validation[0], held_out,
        ferry_inputs=validation, setup_s=time.perf_counter() - start,
    )  # fmt: skip


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, scaled to [0, 1]: a stratified 70 / 30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    return x_train, x_test, y_train, y_test


def small_cnn() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def small_transformer(dim: int = 64, heads: int = 4, depth: int = 2) -> Any:
    """A pre-norm encoder over the 8 rows of a digit (8 tokens of 8 pixels), mean-pooled."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x: Any) -> Any:
            head = dim // heads
            qkv = self.qkv(self.norm1(x)).reshape(-1, 8, 3, heads, head).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head), dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(-1, 8, dim))
            return x + self.ff(self.norm2(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, dim)
            self.position = nn.Parameter(torch.zeros(1, 8, dim))
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, 10)

        def forward(self, x: Any) -> Any:
            h = self.blocks(self.embed(x) + self.position)
            return self.head(self.norm(h).mean(dim=1))

    return Encoder()


def train(net: Any, x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[float, float]:
    """Adam on mini-batches of 32; returns (seconds, final training loss)."""
    import torch

    start = time.perf_counter()
    tx: Any = torch.from_numpy(x)
    ty: Any = torch.from_numpy(y)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    net.train()
    loss: Any = torch.zeros(())
    order: Any = torch.randperm
    for _ in range(epochs):
        for idx in order(len(tx), generator=generator).split(32):
            loss = torch.nn.functional.cross_entropy(net(tx[idx]), ty[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    return time.perf_counter() - start, float(loss.item())


def digits_cases(s: Settings, workdir: Path) -> list[Case]:
    import torch

    x_train, x_test, y_train, y_test = digits()
    cases = []
    models: list[tuple[str, str, Callable[[], Any], tuple[int, ...]]] = [
        ("d-cnn", "small CNN (2 conv + 2 dense)", small_cnn, (1, 8, 8)),
        ("d-transformer", "small transformer (2 layers, dim 64, 4 heads)", small_transformer,
         (8, 8)),
    ]  # fmt: skip
    for key, what, build, shape in models:
        start = time.perf_counter()
        torch.manual_seed(0)
        net = build()
        seconds, loss = train(net, x_train.reshape(-1, *shape), y_train, s.digits_epochs)
        path = workdir / f"{key}.onnx"
        export(net, [torch.zeros(1, *shape)], ["input"], "logits", path)
        test = x_test.reshape(-1, *shape)
        title = (
            f"({key}) {what} trained {seconds:.0f} s ({s.digits_epochs} epochs, final loss "
            f"{loss:.3f}) on sklearn digits: {len(x_train)} train / {len(x_test)} held out"
        )
        cases.append(
            Case(
                key, title, path, "accuracy", "accuracy-drop<=0.01", {"input": test[:1]},
                rows({"input": test}, len(test)), labels=y_test,
                ferry_eval={"input": test, "labels": y_test},
                setup_s=time.perf_counter() - start,
            )
        )  # fmt: skip
    return cases


# --- the variants ---------------------------------------------------------------------------


def session(path: Path) -> Any:
    """ONNX Runtime's default session: every option left at its default."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def slimmed(case: Case, workdir: Path) -> Variant:
    import onnx
    import onnxslim

    start = time.perf_counter()
    path = workdir / f"{case.key}-slim.onnx"
    onnx.save(onnxslim.slim(str(case.path)), str(path))
    return Variant("onnxslim + ORT", path, time.perf_counter() - start)


def dynamic_int8(case: Case, workdir: Path) -> Variant:
    from onnxruntime.quantization import quantize_dynamic

    start = time.perf_counter()
    path = workdir / f"{case.key}-int8.onnx"
    quantize_dynamic(str(case.path), str(path))
    return Variant("ORT quantize_dynamic", path, time.perf_counter() - start)


@contextlib.contextmanager
def candidate_clock(starts: list[tuple[str, float]]) -> Iterator[None]:
    """When each candidate of ferry's auto search starts, read by wrapping the function
    ``auto_search`` calls once per candidate (timing only; nothing else changes). A candidate's
    wall time runs from its start to the next one's, so it includes the latency measurement
    ``auto_search`` makes after ``apply_recipe`` returns."""
    from onnxferry.optimize import auto

    name = "apply_recipe"
    original = getattr(auto, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        starts.append((args[1].label(), time.perf_counter()))
        return original(*args, **kwargs)

    setattr(auto, name, timed)
    try:
        yield
    finally:
        setattr(auto, name, original)


def ferry(case: Case, workdir: Path) -> tuple[Variant, Any, float, list[tuple[str, float]]]:
    """The ferry variant, its search report, the seconds before the first candidate (loading,
    reference outputs, the original's latency) and each candidate's wall seconds (the last
    one's includes choosing and saving)."""
    import onnxferry

    starts: list[tuple[str, float]] = []
    start = time.perf_counter()
    path = workdir / f"{case.key}-ferry.onnx"
    with candidate_clock(starts):
        model = onnxferry.optimize(
            case.path,
            path,
            auto=True,
            budget=case.budget,
            inputs=case.ferry_inputs,
            eval_data=case.ferry_eval,
        )
    end = time.perf_counter()
    search = model.provenance[-1].result
    stamps = [t for _, t in starts] + [end]
    seconds = [(label, stamps[i + 1] - t) for i, (label, t) in enumerate(starts)]
    setup = (stamps[0] if starts else end) - start
    return Variant("onnxferry.optimize auto", path, end - start), search, setup, seconds


# --- measuring ------------------------------------------------------------------------------


def latencies(paths: Sequence[Path], feeds: Feeds, s: Settings) -> list[float]:
    """p50 (ms) per model: one session each, the models take turns within every round (drift
    on a busy machine hits them alike); the median of the rounds' p50s."""
    from onnxferry.measure import measure

    sessions = [session(p) for p in paths]
    probe = measure(sessions[0], feeds, warmup=2, iterations=3)
    iterations = max(5, round(s.round_s / max(statistics.median(probe), 1e-6)))
    per_model: list[list[float]] = [[] for _ in sessions]
    for _ in range(s.rounds):
        for i, sess in enumerate(sessions):
            lat = measure(sess, feeds, warmup=2, iterations=iterations)
            per_model[i].append(statistics.median(lat) * 1e3)
    return [statistics.median(v) for v in per_model]


def batch_dependent(path: Path) -> bool:
    """Whether the model quantizes activations at run time (dynamic int8): its scales come
    from the whole batch, so a row's result depends on the rows run with it."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(n.op_type in RUNTIME_QUANTIZED for n in proto.graph.node)


def outputs(path: Path, feeds: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
    """The model's outputs on each batch-1 feed set: run one by one (as deployed) when the
    model is batch-dependent, else EVAL_BATCH rows at a time (the same rows, faster)."""
    sess = session(path)
    names = [o.name for o in sess.get_outputs()]
    if batch_dependent(path):
        return [dict(zip(names, sess.run(None, f), strict=True)) for f in feeds]
    out: list[dict[str, np.ndarray]] = []
    for start in range(0, len(feeds), EVAL_BATCH):
        chunk = feeds[start : start + EVAL_BATCH]
        values = sess.run(None, {k: np.concatenate([f[k] for f in chunk]) for k in chunk[0]})
        out += [
            {n: v[i : i + 1] for n, v in zip(names, values, strict=True)} for i in range(len(chunk))
        ]
    return out


def margins(reference: Sequence[dict[str, np.ndarray]]) -> str:
    """How decisive the fp32 model's top-1 is on these inputs."""
    logits = np.concatenate([next(iter(o.values())) for o in reference]).astype(np.float64)
    top = np.sort(logits, axis=-1)
    gap = (top[:, -1] - top[:, -2]) / logits.std(axis=-1)
    classes = len(set(logits.argmax(axis=-1).tolist()))
    return (
        f"fp32 top-1 on these inputs: {classes} distinct classes over {len(logits)} inputs; "
        f"top-1 minus top-2 logit, in logit standard deviations: median {np.median(gap):.3f}, "
        f"10th percentile {np.percentile(gap, 10):.3f}"
    )


def score(case: Case, reference: list[dict[str, np.ndarray]], path: Path) -> float:
    from onnxferry.optimize.budget import top1_agreement, worst_cosine

    got = outputs(path, case.eval_feeds)
    if case.metric == "cosine":
        return worst_cosine(reference, got)
    if case.metric == "top1":
        return top1_agreement(reference, got)
    assert case.labels is not None
    predicted = np.concatenate([next(iter(o.values())).argmax(axis=-1) for o in got])
    return float((predicted == case.labels).mean())


def run_case(case: Case, s: Settings, workdir: Path) -> Outcome:
    print(f"\n{case.title}", flush=True)
    variants = [Variant("ORT default (fp32)", case.path, 0.0)]
    variants.append(slimmed(case, workdir))
    variants.append(dynamic_int8(case, workdir))
    print(f"  onnxferry.optimize(auto=True, budget={case.budget!r}) ...", flush=True)
    found, search, setup, seconds = ferry(case, workdir)
    variants.append(found)
    reference = outputs(case.path, case.eval_feeds)
    base = score(case, reference, case.path) if case.metric == "accuracy" else 1.0
    for v in variants:
        v.metric = score(case, reference, v.path)
        if case.metric == "accuracy":
            v.within = v.metric >= base - 0.01
        else:
            v.within = v.metric >= 0.999 if case.metric == "cosine" else v.metric >= 0.99
    for v, p50 in zip(variants, latencies([v.path for v in variants], case.latency_feeds, s),
                      strict=True):  # fmt: skip
        v.p50_ms = p50
    outcome = Outcome(case, variants, base, search, setup, seconds)
    if case.metric == "top1":
        outcome.notes.append(margins(reference))
    print_case(outcome, s)
    outcome.search = None  # it holds every candidate's model in memory
    return outcome


# --- printing -------------------------------------------------------------------------------


def metric_label(case: Case) -> str:
    if case.metric == "cosine":
        return f"worst cosine vs fp32 ({len(case.eval_feeds)} held-out inputs)"
    if case.metric == "top1":
        return f"top-1 agreement with fp32 ({len(case.eval_feeds)} random inputs)"
    return f"accuracy on the held-out split ({len(case.eval_feeds)} digits)"


def target_text(case: Case, base: float) -> str:
    if case.metric == "accuracy":
        return f">= {base - 0.01:.4f} (fp32 {base:.4f} - 0.01)"
    return ">= 0.999" if case.metric == "cosine" else ">= 0.99"


def print_case(o: Outcome, s: Settings) -> None:
    case = o.case
    print(f"  metric: {metric_label(case)}; within target: {target_text(case, o.reference_metric)}")
    print(f"  latency: batch 1, {s.rounds} interleaved rounds, median of the rounds' p50")
    for note in o.notes:
        print(f"  {note}")
    print(f"  {'variant':<26}{'p50 ms':>10}{'speedup':>9}{'metric':>11}  within {'build s':>8}")
    for v in o.variants:
        print(
            f"  {v.name:<26}{v.p50_ms:>10.3f}{o.speedup(v):>8.2f}x{v.metric:>11.6f}  "
            f"{'yes' if v.within else 'NO':<6}{v.build_s:>9.1f}"
        )
    search = o.search
    print(f"  ferry chose: {search.reason}")
    print(
        f"  ferry's search: {len(search.candidates)} candidates; {o.search_setup_s:.1f} s before "
        f"the first (reference outputs, the original's latency); p50 is ferry's own, on its last "
        f"validation input (original {search.baseline_ms:.3f} ms)"
    )
    print(f"    {'candidate':<58}{'wall s':>8}{'p50 ms':>10}{'metric':>11}  kept")
    for i, (c, (label, seconds)) in enumerate(zip(search.candidates, o.candidate_s, strict=False)):
        mark = "*" if i == search.chosen else " "
        ms = c.result.final_ms if c.result.kept else math.nan
        metric = c.result.final_metric if c.result.final_metric is not None else math.nan
        kept = " -> ".join(c.result.kept) or "(nothing: " + _why(c.result.steps) + ")"
        print(f"   {mark}{label[:57]:<58}{seconds:>8.1f}{ms:>10.3f}{metric:>11.6f}  {kept}")


def _why(steps: Sequence[Any]) -> str:
    return "; ".join(f"{s.label} {s.status}: {s.reason}"[:160] for s in steps)


def verdicts(outcomes: Sequence[Outcome]) -> bool:
    by_key = {o.case.key: o for o in outcomes}
    results: list[tuple[bool, str]] = []
    if "a" in by_key:
        a = by_key["a"]
        results.append((
            a.speedup(a.ferry) >= 2.5 and a.ferry.metric >= 0.999,
            f"(a) BERT: ferry {a.speedup(a.ferry):.2f}x with cosine {a.ferry.metric:.6f} "
            "(target >= 2.5x with cosine >= 0.999)",
        ))  # fmt: skip
    if "b" in by_key:
        b = by_key["b"]
        results.append((
            b.speedup(b.ferry) >= 1.8 and b.ferry.metric >= 0.99,
            f"(b) ResNet: ferry {b.speedup(b.ferry):.2f}x with top-1 {b.ferry.metric:.2%} "
            "(target >= 1.8x with top-1 >= 99%)",
        ))  # fmt: skip
    for o in outcomes:
        if o.case.metric == "accuracy":
            drop = o.reference_metric - o.ferry.metric
            results.append((
                drop <= 0.01,
                f"({o.case.key}) ferry accuracy {o.ferry.metric:.4f} vs fp32 "
                f"{o.reference_metric:.4f}: drop {drop:+.4f} (target <= 0.01)",
            ))  # fmt: skip
    for o in outcomes:
        others = o.variants[:-1]
        best = min(others, key=lambda v: v.p50_ms)
        fair = [v for v in others if v.within]
        best_within = min(fair, key=lambda v: v.p50_ms) if fair else None
        note = (
            f"; the fastest other breaks its accuracy target; the fastest other within target "
            f"is {best_within.name} {best_within.p50_ms:.3f} ms (ratio "
            f"{o.ferry.p50_ms / best_within.p50_ms:.3f})"
            if best_within is not None and best_within is not best
            else ""
        )
        results.append((
            o.ferry.p50_ms <= best.p50_ms,
            f"({o.case.key}) ferry p50 {o.ferry.p50_ms:.3f} ms vs fastest other "
            f"{best.name} {best.p50_ms:.3f} ms (ratio {o.ferry.p50_ms / best.p50_ms:.3f}, "
            f"target <= 1){note}",
        ))  # fmt: skip
    print("\nTargets (set for an AVX-512 VNNI CPU; this run's CPU is listed above):")
    for ok, text in results:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    return all(ok for ok, _ in results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller models, fewer samples")
    parser.add_argument(
        "--models", default="a,b,c,d", help="which models, comma-separated (default a,b,c,d)"
    )
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    builders: dict[str, Callable[[Settings, Path], list[Case]]] = {
        "a": lambda s, w: [bert_case(s, w)],
        "b": lambda s, w: [resnet_case(s, w)],
        "c": lambda s, w: [mlp_case(s, w)],
        "d": digits_cases,
    }
    unknown = [m for m in chosen if m not in builders]
    if unknown or not chosen:
        parser.error(f"--models takes a comma-separated subset of a,b,c,d, got {args.models!r}")
    s = Settings.make(args.quick)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(TORCH_THREADS)
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer advice on the root logger
    print(f"mode: {'quick' if s.quick else 'full'}; models: {','.join(chosen)}")
    print(f"cpu: {cpu_summary()}")
    print(
        f"python {platform.python_version()}, onnxruntime {ort.__version__}, torch "
        f"{torch.__version__}; load average at start: {load_average()}"
    )
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="onnxferry-bench-optimize-") as tmp:
        workdir = Path(tmp)
        for key in chosen:
            for case in builders[key](s, workdir):
                outcomes.append(run_case(case, s, workdir))
    ok = verdicts(outcomes)
    print(f"\nwall time {time.perf_counter() - start:.0f} s; load average at end: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
