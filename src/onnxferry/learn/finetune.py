"""`ferry finetune`: ONNX -> torch -> train -> ONNX, verified at both ends.

    tuned = finetune("digits.onnx", "train.npz", labels_key="y", eval_data="val.npz",
                     new_head=3, freeze_until="relu_1", epochs=3, lr=1e-3, output="tuned.onnx")
    result = tuned.last_report(FinetuneResult).result
    result.accuracy_before, result.accuracy_after, result.export_parity.max_abs
    finetune("digits.onnx", "train.npz", "y", epochs=2, output="t2.onnx",
             registry="reg/", name="digits")           # registered, parent version recorded
    finetune("digits.onnx", "train.npz", "y", epochs=2,
             replace={"relu_1": "blocks.py:StraightThroughClip"})   # custom gradients

The path: ``to_torch`` (parity against ONNX Runtime, fails hard), then the surgery (user
blocks from ``replace``, a new head for ``new_head`` classes, frozen weights up to
``freeze_until``, user blocks' included), then ``fit`` (AdamW, cosine schedule, early
stopping on the held-out set), then ``onnxferry.convert`` of the tuned module (its
TorchScript exporter, verified against the module: a mismatch is a VerificationError and
nothing is written). Held-out accuracy is measured before training (torch) and after (ONNX
Runtime on the written model). Without ``eval_data``, a seeded fifth of the training rows is
held out.

``data`` / ``eval_data``: an .npz path or a dict of arrays: the labels under ``labels_key``
(integer classes), every other array an input by name (a single other array feeds a
one-input model whatever its name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UsageError
from ..model import Model
from ..parity import Parity, Tolerance
from ..report import Report, Table
from ..torchgraph.module import refuse_branches, to_torch
from .surgery import Head, replace_block
from .surgery import freeze_until as freeze
from .surgery import new_head as make_head
from .training import Dataset, Progress, TrainConfig, TrainingLog, evaluate, fit, output_head

HELD_OUT_FRACTION = 0.2
"""The share of training rows held out when no eval data is given."""

Arrays = Mapping[str, np.ndarray]


@dataclass
class FinetuneResult:
    """What `finetune` did (ReportBody): data, changes, the curve, accuracy and parity."""

    source: str
    output: str | None
    samples: int
    held_out: int
    held_out_from: str
    epochs: int
    lr: float
    accuracy_before: float
    accuracy_after: float
    loss_before: float
    loss_after: float
    conversion_parity: Parity | None
    export_parity: Parity | None
    training: TrainingLog
    head: Head | None = None
    frozen: list[str] = field(default_factory=list)
    trainable: int = 0
    replaced: dict[str, list[str]] = field(default_factory=dict)
    exporter: str | None = None
    registered: str | None = None
    parent: str | None = None

    @property
    def ok(self) -> bool:
        return self.export_parity is not None and self.export_parity.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "output": self.output,
            "samples": self.samples,
            "held_out": self.held_out,
            "held_out_from": self.held_out_from,
            "epochs": self.epochs,
            "lr": self.lr,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "head": self.head.to_dict() if self.head else None,
            "frozen": self.frozen,
            "trainable_parameters": self.trainable,
            "replaced": self.replaced,
            "training": self.training.to_dict(),
            "conversion_parity": self.conversion_parity.to_dict()
            if self.conversion_parity
            else None,
            "export_parity": self.export_parity.to_dict() if self.export_parity else None,
            "exporter": self.exporter,
            "registered": self.registered,
            "parent": self.parent,
        }

    def tables(self) -> list[Table]:
        held = f"{self.held_out} rows ({self.held_out_from})"
        tables = [
            Table(
                f"finetune {self.source} -> {self.output or '(not written)'}",
                ("held-out", "accuracy before", "accuracy after", "loss before", "loss after"),
                [
                    (
                        held,
                        self.accuracy_before,
                        self.accuracy_after,
                        self.loss_before,
                        self.loss_after,
                    )
                ],
            ),
            Table(
                "training",
                ("epoch", "lr", "train loss", "eval loss", "eval accuracy"),
                [
                    (e.epoch, e.lr, e.train_loss, e.eval_loss, e.eval_accuracy)
                    for e in self.training.curve
                ],
            ),
        ]
        changes: list[tuple[str, str]] = [
            ("trainable parameters", str(self.trainable)),
            ("kept weights of epoch", str(self.training.best_epoch)),
        ]
        if self.training.stopped_early:
            changes.append(("early stop", f"after epoch {self.training.curve[-1].epoch}"))
        if self.head is not None:
            changes.append(
                (
                    "new head",
                    f"{self.head.weight}: {self.head.classes_before} -> "
                    f"{self.head.classes} classes",
                )
            )
        if self.frozen:
            changes.append(("frozen", ", ".join(self.frozen)))
        for block, nodes in self.replaced.items():
            changes.append((f"replaced by {block}", ", ".join(nodes)))
        if self.registered:
            changes.append(("registered", f"{self.registered} (parent {self.parent or 'none'})"))
        tables.append(Table("changes", ("what", "detail"), changes))
        for label, parity in (
            ("onnx -> torch (vs ONNX Runtime)", self.conversion_parity),
            (f"torch -> onnx ({self.exporter})", self.export_parity),
        ):
            if parity is not None:
                tables.append(
                    Table(
                        f"parity {label}",
                        ("max abs", "required atol", "ok"),
                        [(parity.max_abs, _required(parity), parity.ok)],
                    )
                )
        return tables

    def figures(self) -> list[str]:
        from ..plots import lines_svg

        curve = self.training.curve
        series = {"train loss": [(float(e.epoch), e.train_loss) for e in curve]}
        evaluated = [e for e in curve if e.eval_loss is not None]
        if evaluated:
            series["eval loss"] = [(float(e.epoch), float(e.eval_loss or 0)) for e in evaluated]
            series["eval accuracy"] = [
                (float(e.epoch), float(e.eval_accuracy or 0)) for e in evaluated
            ]
        return [lines_svg(series, "epoch", "loss / accuracy", "training curve")]


def finetune(
    model: Model | str | Path,
    data: str | Path | Arrays,
    labels_key: str = "labels",
    *,
    eval_data: str | Path | Arrays | None = None,
    freeze_until: str | None = None,
    new_head: int | None = None,
    replace: Mapping[str, str | Callable[..., Any]] | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
    schedule: str = "cosine",
    patience: int | None = 3,
    weight_decay: float = 0.01,
    seed: int = 0,
    output: str | Path | None = None,
    tolerance: Tolerance | None = None,
    registry: str | Path | None = None,
    name: str | None = None,
    parent: str | None = None,
    progress: Progress | None = None,
) -> Model:
    """Fine-tune an ONNX classifier in torch and export it back, verified; see the module
    docstring. Returns the tuned Model (written to ``output`` when given); its report is
    ``model.last_report(FinetuneResult)``. UsageError / DataError (exit 2) for bad options or
    data; VerificationError (exit 1) when a conversion does not match."""
    from ..convert import Conversion, convert

    config = TrainConfig(epochs, lr, batch_size, weight_decay, schedule, seed, patience)
    if (registry is None) != (name is None):
        raise UsageError("--registry and --name go together", hint="give both, or neither")
    source = model if isinstance(model, Model) else Model.load(model)
    module = to_torch(source, tolerance=tolerance)
    conversion_parity = module.parity
    train_arrays: Arrays = _arrays(data, labels_key, "--data")
    eval_arrays: Arrays
    if eval_data is not None:
        eval_arrays = _arrays(eval_data, labels_key, "--eval")
        held_from = str(eval_data) if isinstance(eval_data, (str, Path)) else "eval data"
    else:
        train_arrays, eval_arrays = _split(train_arrays, labels_key, seed)
        held_from = f"{HELD_OUT_FRACTION:.0%} of the training data"
    replaced = {
        spec: replace_block(module, spec, factory).nodes
        for spec, factory in (replace or {}).items()
    }
    refuse_branches(module, "the export back to ONNX, a trace")
    head = make_head(module, new_head, seed=seed) if new_head is not None else None
    frozen = freeze(module, freeze_until) if freeze_until is not None else []
    train = _dataset(module, train_arrays, labels_key)
    held = _dataset(module, eval_arrays, labels_key)
    loss_before, accuracy_before = evaluate(module, held)
    log = fit(module, train, config, eval_set=held, progress=progress)
    sample = {k: v[:4] for k, v in held.inputs.items()}
    tuned = convert(
        export_source(module, sample),
        output,
        inputs=[sample],
        tolerance=tolerance,
    )
    conversion = tuned.last_report(Conversion).result
    chosen = next(a for a in conversion.attempts if a.exporter == conversion.chosen)
    loss_after, accuracy_after = onnx_scores(tuned, held, output_head(module))
    result = FinetuneResult(
        source=source.name,
        output=str(output) if output is not None else None,
        samples=len(train),
        held_out=len(held),
        held_out_from=held_from,
        epochs=len(log.curve),
        lr=lr,
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        loss_before=loss_before,
        loss_after=loss_after,
        conversion_parity=conversion_parity,
        export_parity=chosen.parity,
        training=log,
        head=head,
        frozen=frozen,
        trainable=sum(int(p.numel()) for p in module.parameters() if p.requires_grad),
        replaced=replaced,
        exporter=conversion.chosen,
    )
    if registry is not None and name is not None:
        _register(tuned, source, registry, name, parent, result)
    tuned.provenance.append(Report("finetune", result))
    return tuned


# --- steps ------------------------------------------------------------------------------------


def _arrays(data: str | Path | Arrays, labels_key: str, option: str) -> dict[str, np.ndarray]:
    from ..data import load_npz_arrays

    arrays = load_npz_arrays(data) if isinstance(data, (str, Path)) else dict(data)
    if labels_key not in arrays:
        raise DataError(
            f"{option}: no labels under {labels_key!r} (arrays: {', '.join(arrays) or 'none'})",
            hint="name the labels array with --labels",
        )
    return arrays


def _split(arrays: Arrays, labels_key: str, seed: int) -> tuple[Arrays, Arrays]:
    rows = len(arrays[labels_key])
    held = max(1, int(rows * HELD_OUT_FRACTION))
    if rows - held < 1:
        raise DataError(
            f"{rows} training rows are too few to hold some out", hint="give --eval data"
        )
    order = np.random.default_rng(seed).permutation(rows)
    keep, out = order[held:], order[:held]
    return {k: v[keep] for k, v in arrays.items()}, {k: v[out] for k, v in arrays.items()}


def _dataset(module: Any, arrays: Arrays, labels_key: str) -> Dataset:
    inputs = {k: v for k, v in arrays.items() if k != labels_key}
    names = list(module.input_names)
    if len(names) == 1 and len(inputs) == 1:
        return Dataset.of(module, next(iter(inputs.values())), arrays[labels_key])
    return Dataset.of(module, inputs, arrays[labels_key])


def export_source(module: Any, sample: Mapping[str, np.ndarray]) -> Any:
    """The tuned module as a conversion Source with the TorchScript exporter only: forward
    takes the ONNX input names by keyword (any spelling), which torch.export does not."""
    import torch

    from ..convert import ConvertOptions
    from ..convert.torch import TORCHSCRIPT, load_torch

    examples = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in sample.items()}
    source = load_torch(module, ConvertOptions(), example_inputs=examples)
    source.candidates = [c for c in source.candidates if c.exporter == TORCHSCRIPT]
    source.description = f"{module.model_name} fine-tuned"
    return source


def onnx_scores(model: Model, data: Dataset, head: str) -> tuple[float, float]:
    """(cross-entropy, accuracy) of the written model under ONNX Runtime; ``head``
    (``training.output_head``) says what its first output is: probabilities ("Softmax", the
    loss takes their log), their logs ("LogSoftmax"), one sigmoid score per row ("Sigmoid",
    class 1's probability) or logits ("")."""
    import torch

    from ..runtime import OrtRunner

    runner = OrtRunner(model)
    name = model.signature.output_names[0]
    chunks = []
    for start in range(0, len(data), 256):
        feeds = {k: v[start : start + 256] for k, v in data.inputs.items()}
        chunks.append(np.asarray(runner.run(feeds)[name], dtype=np.float32))
    scores = torch.from_numpy(np.concatenate(chunks)).reshape(len(data), -1)
    if head == "Sigmoid":
        scores = torch.cat([1 - scores, scores], dim=1)
    labels = torch.from_numpy(data.labels)
    logits = torch.log(scores.clamp_min(1e-12)) if head in ("Softmax", "Sigmoid") else scores
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    return loss, float((scores.argmax(dim=1) == labels).float().mean())


def _register(
    tuned: Model,
    source: Model,
    registry: str | Path,
    name: str,
    parent: str | None,
    result: FinetuneResult,
) -> None:
    from ..registry import Registry

    if tuned.path is None:
        raise UsageError("--registry needs -o: the registry stores a written model")
    reg = Registry.open(registry, create=True)
    if parent is None:
        parent = next((v.ref for v in reg.versions() if v.digest == source.digest), None)
    record = reg.add(tuned.path, name, parent=parent)
    result.registered, result.parent = record.ref, parent


def _required(parity: Parity) -> float | None:
    needed = [o.required_atol for o in parity.outputs if o.required_atol is not None]
    return max(needed) if needed else None
