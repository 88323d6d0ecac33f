"""Trained models for optimize tests and benchmarks, built offline and seeded, cached on disk.

    enc = trained_encoder(SMALL_ENCODER)          # 2 layers, hidden 64: seconds to train
    enc = trained_encoder(MINILM_ENCODER)         # 6 layers, hidden 384, 6 heads: minutes
    enc.path, enc.stats["mlm_accuracy"]           # the .onnx (dynamo exporter via ferry's
    feeds = encoder_inputs(enc.spec, 48, seed=1)  # convert) and what training reached
    cnn = trained_cnn(SMALL_CNN)                  # a ResNet-style CNN on sklearn digits
    x_test, y_test = digits_split(cnn.spec.size)[2:]

Random weights flatter quantization: the activation outlier channels that break int8 come from
training. These models are trained here, with no download:

- the encoder (BERT-like, post-LayerNorm, GELU, like MiniLM) learns masked tokens and the
  topic of documents in a synthetic language: topics with their own nouns, verbs and
  adjectives, number agreement between subject and verb, prepositional phrases, sentences
  joined into documents of 8 to 128 tokens. Exported at batch 1, sequence 128, with inputs
  ``input_ids`` and ``attention_mask`` and one output, ``embedding``: the mask-weighted mean
  of the last hidden states (a sentence embedding, as sentence-transformers pools).
- the CNN (a stem, residual stages of two 3x3 convolutions with BatchNorm, global average
  pooling, a linear head) classifies scikit-learn's bundled digits, upsampled from 8x8.
  Input ``image [1, 1, size, size]``, output ``logits [1, 10]``.

``stats["outliers"]`` is, per checked activation (the inputs of each FFN MatMul, each layer's
output), the largest per-channel max |activation| over the median channel's (random weights
give about 1.3; the real all-MiniLM-L6-v2 shows 5 to 9 in its hidden states, one channel).

The cache is ``$ONNXFERRY_TEST_CACHE`` (default ``~/.cache/onnxferry/trained-models``); a
model's key hashes the source of what builds it, the spec, and the torch version, so editing
a builder retrains, and a cached model is never stale. Training takes a file lock, so parallel tests
wait for one training instead of repeating it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxferry.atomic import write_text_atomic

if TYPE_CHECKING:
    from onnxferry.model import Model

Feeds = dict[str, np.ndarray]

PAD, CLS, MASK = 0, 1, 2
SPECIAL = 3


# --- the cache --------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(
        os.environ.get("ONNXFERRY_TEST_CACHE")
        or Path.home() / ".cache" / "onnxferry" / "trained-models"
    )


def builder_source(parts: Sequence[Any]) -> str:
    """The source text of the functions and classes that build a model."""
    return "\n".join(inspect.getsource(p) for p in parts)


def cache_key(spec: Any, source: str) -> str:
    """16 hex digits over the builder's source, the spec and the torch version."""
    import torch

    blob = json.dumps([source, repr(spec), str(torch.__version__)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Trained:
    """A trained, exported model: its .onnx, spec, training figures, and whether it came from
    the cache."""

    path: Path
    spec: Any
    stats: dict[str, Any]
    cached: bool


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached(
    name: str, spec: Any, build: Any, parts: Sequence[Any], root: Path | None = None
) -> Trained:
    """The model ``build(spec, path) -> stats`` writes, from the cache when the key of its
    spec and of the source of ``parts`` (what ``build`` runs) is there."""
    root = root or cache_dir()
    stem = root / f"{name}-{cache_key(spec, builder_source(parts))}"
    onnx_path, stats_path = stem.with_suffix(".onnx"), stem.with_suffix(".json")
    with _locked(stem.with_suffix(".lock")):
        if onnx_path.exists() and stats_path.exists():
            return Trained(onnx_path, spec, json.loads(stats_path.read_text()), True)
        stats = build(spec, onnx_path)
        write_text_atomic(stats_path, json.dumps(stats, indent=1))
    return Trained(onnx_path, spec, stats, False)


# --- the synthetic language -------------------------------------------------------------------


@dataclass(frozen=True)
class Language:
    """Topics with their own words, shared function words, number agreement."""

    topics: int = 8
    nouns: int = 24  # per topic, each with a singular and a plural form
    verbs: int = 12  # per topic, each with a singular and a plural form
    adjectives: int = 12  # per topic
    function_words: int = 24  # determiners (singular, plural), prepositions, conjunctions

    @property
    def per_topic(self) -> int:
        return 2 * self.nouns + 2 * self.verbs + self.adjectives

    @property
    def vocab(self) -> int:
        return SPECIAL + self.function_words + self.topics * self.per_topic


LANGUAGE = Language()


def _topic_word(lang: Language, topic: int, offset: int) -> int:
    return SPECIAL + lang.function_words + topic * lang.per_topic + offset


def _noun_phrase(lang: Language, rng: np.random.Generator, topic: int, plural: bool) -> list[int]:
    fw = SPECIAL
    det = fw + int(rng.integers(0, 4)) + (4 if plural else 0)  # 4 singular, 4 plural
    words = [det]
    for _ in range(int(rng.integers(0, 3))):
        words.append(_topic_word(lang, topic, 2 * lang.nouns + 2 * lang.verbs
                                 + int(rng.integers(0, lang.adjectives))))  # fmt: skip
    noun = int(rng.integers(0, lang.nouns))
    words.append(_topic_word(lang, topic, 2 * noun + int(plural)))
    return words


def _sentence(lang: Language, rng: np.random.Generator, topic: int) -> list[int]:
    def pick() -> int:
        return topic if rng.random() < 0.85 else int(rng.integers(0, lang.topics))

    plural = bool(rng.random() < 0.5)
    words = _noun_phrase(lang, rng, pick(), plural)
    verb = int(rng.integers(0, lang.verbs))
    words.append(_topic_word(lang, pick(), 2 * lang.nouns + 2 * verb + int(plural)))
    words += _noun_phrase(lang, rng, pick(), bool(rng.random() < 0.5))
    while rng.random() < 0.4:
        words.append(SPECIAL + 8 + int(rng.integers(0, 10)))  # a preposition
        words += _noun_phrase(lang, rng, pick(), bool(rng.random() < 0.5))
    return words


def document(lang: Language, rng: np.random.Generator, topic: int, length: int) -> list[int]:
    """[CLS] then sentences on ``topic`` joined by conjunctions, cut to ``length`` tokens."""
    words = [CLS]
    while len(words) < length:
        if len(words) > 1:
            words.append(SPECIAL + 18 + int(rng.integers(0, lang.function_words - 18)))
        words += _sentence(lang, rng, topic)
    return words[:length]


def documents(
    lang: Language, count: int, sequence: int, seed: int, lengths: tuple[int, int] = (8, 128)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` documents padded to ``sequence``: (ids, mask, topics); lengths drawn
    log-uniformly within ``lengths`` (capped at ``sequence``)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, sequence), np.int64)
    mask = np.zeros((count, sequence), np.int64)
    topics = rng.integers(0, lang.topics, count)
    low, high = lengths[0], min(lengths[1], sequence)
    for i in range(count):
        n = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        doc = document(lang, rng, int(topics[i]), n)
        ids[i, : len(doc)] = doc
        mask[i, : len(doc)] = 1
    return ids, mask, topics.astype(np.int64)


# --- the encoder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderSpec:
    layers: int
    hidden: int
    heads: int
    intermediate: int
    steps: int
    batch: int = 16
    train_sequence: int = 64  # training documents; the export takes SEQUENCE
    sequence: int = 128
    lr: float = 1e-3
    seed: int = 0
    language: Language = field(default_factory=Language)


MINILM_ENCODER = EncoderSpec(
    layers=6, hidden=384, heads=6, intermediate=1536, steps=150, train_sequence=32
)
SMALL_ENCODER = EncoderSpec(
    layers=2, hidden=64, heads=4, intermediate=256, steps=100, train_sequence=32, lr=2e-3
)


def encoder_module(spec: EncoderSpec) -> Any:
    """A BERT-like post-LN encoder; ``forward(input_ids, attention_mask)`` gives the mean-pooled
    embedding and ``.hidden(...)`` the last hidden states."""
    import torch
    from torch import nn

    head_dim = spec.hidden // spec.heads

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(spec.hidden, 3 * spec.hidden)
            self.out = nn.Linear(spec.hidden, spec.hidden)
            self.norm1 = nn.LayerNorm(spec.hidden, eps=1e-12)
            self.up = nn.Linear(spec.hidden, spec.intermediate)
            self.down = nn.Linear(spec.intermediate, spec.hidden)
            self.norm2 = nn.LayerNorm(spec.hidden, eps=1e-12)

        def forward(self, x: Any, bias: Any) -> Any:
            b, t, _ = x.shape
            qkv = self.qkv(x).reshape(b, t, 3, spec.heads, head_dim).permute(2, 0, 3, 1, 4)
            scores = qkv[0] @ qkv[1].transpose(-2, -1) / math.sqrt(head_dim) + bias
            att = (torch.softmax(scores, dim=-1) @ qkv[2]).transpose(1, 2).reshape(b, t, -1)
            x = self.norm1(x + self.out(att))
            return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(spec.language.vocab, spec.hidden)
            self.positions = nn.Embedding(spec.sequence, spec.hidden)
            self.norm = nn.LayerNorm(spec.hidden, eps=1e-12)
            self.layers = nn.ModuleList([Layer() for _ in range(spec.layers)])

        def hidden(self, input_ids: Any, attention_mask: Any) -> Any:
            t = input_ids.shape[1]
            x = self.norm(self.tokens(input_ids) + self.positions.weight[:t])
            bias = ((1.0 - attention_mask.to(x.dtype)) * -10000.0)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            return x

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            h = self.hidden(input_ids, attention_mask)
            m = attention_mask.to(h.dtype)[:, :, None]
            return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)

    return Encoder()


def _mask_tokens(ids: Any, mask: Any, generator: Any) -> tuple[Any, Any]:
    """BERT's masking: 15% of real tokens (not [CLS]) to predict; 80% of them become [MASK]."""
    import torch

    chosen = (torch.rand(ids.shape, generator=generator) < 0.15) & (mask > 0) & (ids != CLS)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    replace = chosen & (torch.rand(ids.shape, generator=generator) < 0.8)
    return torch.where(replace, torch.full_like(ids, MASK), ids), labels


def train_encoder(spec: EncoderSpec) -> tuple[Any, dict[str, Any]]:
    """Masked-token and topic training (AdamW, warmup then linear decay); returns (module,
    stats): held-out masked-token and topic accuracy, seconds, loss, outlier ratios."""
    import torch
    from torch import nn

    torch.manual_seed(spec.seed)
    net = encoder_module(spec)
    lang = spec.language
    mlm_head = nn.Linear(spec.hidden, lang.vocab)
    topic_head = nn.Linear(spec.hidden, lang.topics)
    params = [*net.parameters(), *mlm_head.parameters(), *topic_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
    warmup = max(1, spec.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.05, (spec.steps - s) / spec.steps))
    )
    ids_np, mask_np, topics_np = documents(
        lang, spec.steps * spec.batch, spec.train_sequence, spec.seed, (8, spec.train_sequence)
    )
    ids, mask, topics = map(torch.from_numpy, (ids_np, mask_np, topics_np))
    generator = torch.Generator().manual_seed(spec.seed)
    start = time.perf_counter()
    net.train()
    loss: Any = torch.zeros(())
    for step in range(spec.steps):
        rows = slice(step * spec.batch, (step + 1) * spec.batch)
        masked, labels = _mask_tokens(ids[rows], mask[rows], generator)
        h = net.hidden(masked, mask[rows])
        m = mask[rows].to(h.dtype)[:, :, None]
        pooled = (h * m).sum(1) / m.sum(1)
        loss = nn.functional.cross_entropy(
            mlm_head(h).reshape(-1, lang.vocab), labels.reshape(-1), ignore_index=-100
        ) + nn.functional.cross_entropy(topic_head(pooled), topics[rows])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
    seconds = time.perf_counter() - start
    net.eval()
    t_ids, t_mask, t_topics = map(
        torch.from_numpy, documents(lang, 256, spec.sequence, spec.seed + 10_000)
    )
    with torch.no_grad():
        masked, labels = _mask_tokens(t_ids, t_mask, torch.Generator().manual_seed(1))
        h = net.hidden(masked, t_mask)
        picked = labels >= 0
        mlm = float((mlm_head(h)[picked].argmax(-1) == labels[picked]).float().mean())
        topic = float((topic_head(net(t_ids, t_mask)).argmax(-1) == t_topics).float().mean())
    stats = {
        "train_s": round(seconds, 1),
        "final_loss": round(float(loss.item()), 4),
        "mlm_accuracy": round(mlm, 4),
        "topic_accuracy": round(topic, 4),
        "topic_chance": round(1 / lang.topics, 4),
        "outliers": outlier_ratios(net, t_ids[:64], t_mask[:64]),
    }
    return net, stats


def outlier_ratios(net: Any, ids: Any, mask: Any) -> dict[str, float]:
    """Per encoder layer: the largest per-channel max |activation| (real tokens only) over the
    median channel's, at the inputs of the FFN's two MatMuls (``up``: after the first
    LayerNorm; ``down``: after GELU) and at the layer's output (``out``)."""
    import torch

    seen: dict[str, Any] = {}
    hooks = []

    def keep(key: str) -> Any:
        def hook(_m: Any, args: Any, out: Any = None) -> None:
            seen[key] = (args[0] if out is None else out).detach()

        return hook

    for i, layer in enumerate(net.layers):
        hooks.append(layer.up.register_forward_pre_hook(keep(f"layer{i}.up")))
        hooks.append(layer.down.register_forward_pre_hook(keep(f"layer{i}.down")))
        hooks.append(layer.norm2.register_forward_hook(keep(f"layer{i}.out")))
    with torch.no_grad():
        net(ids, mask)
    for h in hooks:
        h.remove()
    real = mask.bool()
    ratios = {}
    for key, value in seen.items():
        per_channel = value[real].abs().amax(dim=0)
        ratios[key] = round(float(per_channel.max() / per_channel.median()), 2)
    return ratios


def export_torch(module: Any, feeds: Feeds, path: Path) -> Model:
    """ferry's convert with only the dynamo exporter, all shapes static, verified on ``feeds``."""
    from onnxferry.convert import convert
    from onnxferry.convert.dispatch import load_source, options_for
    from onnxferry.convert.torch.export import DYNAMO

    options = options_for(inputs=[feeds], dynamic={})
    source = load_source(module, options, framework="torch")
    source.candidates = [c for c in source.candidates if c.exporter == DYNAMO]
    return convert(source, path, inputs=[feeds], dynamic={})


def _checkpointed(path: Path, train: Any, module: Any) -> tuple[Any, dict[str, Any]]:
    """``train()``'s (module, stats), or the weights and stats saved beside ``path`` by an
    earlier build whose export failed: training is the slow part."""
    import torch

    weights, stats_path = path.with_suffix(".pt"), path.with_suffix(".train.json")
    if weights.exists() and stats_path.exists():
        net = module()
        net.load_state_dict(torch.load(weights))
        return net.eval(), json.loads(stats_path.read_text())
    net, stats = train()
    torch.save(net.state_dict(), weights)
    write_text_atomic(stats_path, json.dumps(stats))
    return net, stats


def _build_encoder(spec: EncoderSpec, path: Path) -> dict[str, Any]:
    net, stats = _checkpointed(path, lambda: train_encoder(spec), lambda: encoder_module(spec))
    feeds = encoder_inputs(spec, 1, seed=spec.seed + 20_000)[0]
    start = time.perf_counter()
    export_torch(net, feeds, path)
    stats["export_s"] = round(time.perf_counter() - start, 1)
    return stats


def trained_encoder(spec: EncoderSpec = SMALL_ENCODER, root: Path | None = None) -> Trained:
    name = f"encoder-{spec.layers}x{spec.hidden}"
    return cached(name, spec, _build_encoder, ENCODER_PARTS, root)


def encoder_inputs(spec: EncoderSpec, count: int, seed: int) -> list[Feeds]:
    """``count`` batch-1 feeds, half short documents (8 to 24 tokens), half long (64 to the
    full sequence), alternating, padded to ``spec.sequence``."""
    short = documents(spec.language, (count + 1) // 2, spec.sequence, seed, (8, 24))
    long = documents(spec.language, count // 2, spec.sequence, seed + 1, (64, spec.sequence))
    out: list[Feeds] = []
    for i in range(count):
        ids, mask, _ = short if i % 2 == 0 else long
        out.append(
            {"input_ids": ids[i // 2 : i // 2 + 1], "attention_mask": mask[i // 2 : i // 2 + 1]}
        )
    return out


# --- the CNN ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CnnSpec:
    widths: tuple[int, ...]
    epochs: int
    size: int = 32
    blocks: int = 1  # residual blocks per stage
    lr: float = 3e-3
    seed: int = 0


RESNET_CNN = CnnSpec(widths=(32, 64, 128), epochs=4)
SMALL_CNN = CnnSpec(widths=(8, 16, 32), epochs=5, size=16)


def digits_split(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's bundled digits scaled to [0, 1], upsampled (bilinear) to ``size`` x ``size``:
    (x_train, y_train, x_test, y_test), a stratified 70 / 30 split, x as [n, 1, size, size]."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x: Any = torch.from_numpy((data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target.astype(np.int64), test_size=0.3, random_state=0, stratify=data.target
    )
    return x_train, y_train, x_test, y_test


def cnn_module(spec: CnnSpec) -> Any:
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.skip = (
                nn.Identity()
                if stride == 1 and c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                   nn.BatchNorm2d(c_out))
            )  # fmt: skip
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.relu(self.body(x) + self.skip(x))

    layers: list[Any] = [
        nn.Conv2d(1, spec.widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(spec.widths[0]),
        nn.ReLU(),
    ]
    c = spec.widths[0]
    for i, width in enumerate(spec.widths):
        for j in range(spec.blocks):
            layers.append(Block(c, width, 2 if i > 0 and j == 0 else 1))
            c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(*layers)

        def forward(self, image: Any) -> Any:
            return self.layers(image)

    return Net()


def train_cnn(spec: CnnSpec) -> tuple[Any, dict[str, Any]]:
    """Adam with a one-cycle schedule, batches of 32, small random shifts; returns (module,
    stats) with the held-out accuracy."""
    import torch

    torch.manual_seed(spec.seed)
    net = cnn_module(spec)
    x_train, y_train, x_test, y_test = digits_split(spec.size)
    tx, ty = torch.from_numpy(x_train), torch.from_numpy(y_train)
    batches = math.ceil(len(tx) / 32)
    optimizer = torch.optim.Adam(net.parameters(), lr=spec.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.lr, total_steps=spec.epochs * batches
    )
    generator = torch.Generator().manual_seed(spec.seed)
    shift = max(1, spec.size // 16)
    start = time.perf_counter()
    net.train()
    loss: Any = torch.zeros(())
    for _ in range(spec.epochs):
        order: Any = torch.randperm(len(tx), generator=generator)
        for idx in order.split(32):
            dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
            batch = torch.roll(tx[idx], shifts=(dx, dy), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(net(batch), ty[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        predicted = net(torch.from_numpy(x_test)).argmax(-1).numpy()
    stats = {
        "train_s": round(seconds, 1),
        "final_loss": round(float(loss.item()), 4),
        "test_accuracy": round(float((predicted == y_test).mean()), 4),
    }
    return net, stats


def _build_cnn(spec: CnnSpec, path: Path) -> dict[str, Any]:
    net, stats = _checkpointed(path, lambda: train_cnn(spec), lambda: cnn_module(spec))
    x_test = digits_split(spec.size)[2]
    start = time.perf_counter()
    export_torch(net, {"image": x_test[:1]}, path)
    stats["export_s"] = round(time.perf_counter() - start, 1)
    return stats


def trained_cnn(spec: CnnSpec = SMALL_CNN, root: Path | None = None) -> Trained:
    widths = "-".join(map(str, spec.widths))
    return cached(f"cnn-{widths}-{spec.size}px", spec, _build_cnn, CNN_PARTS, root)


ENCODER_PARTS = (
    Language, _topic_word, _noun_phrase, _sentence, document, documents, EncoderSpec,
    encoder_module, _mask_tokens, train_encoder, outlier_ratios, export_torch, _checkpointed,
    _build_encoder, encoder_inputs,
)  # fmt: skip
CNN_PARTS = (
    CnnSpec, digits_split, cnn_module, train_cnn, export_torch, _checkpointed, _build_cnn
)  # fmt: skip
