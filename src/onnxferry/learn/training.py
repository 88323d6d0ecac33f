"""Training a converted module on arrays: the loop ``finetune`` and ``federated`` share.

    module = train_epochs(module, x, y, epochs=3, lr=1e-3)          # returns the module
    log = fit(module, Dataset.of(module, x, y), TrainConfig(epochs=5, patience=3),
              eval_set=Dataset.of(module, x_val, y_val), progress=lambda p: None)
    log.curve, log.best_epoch, log.stopped_early
    accuracy(module, Dataset.of(module, x_val, y_val))               # top-1, 0..1

The loss is cross-entropy on the logits: the output itself, or the input of the Softmax
(LogSoftmax) that produces it (``logits_tensor``); a Sigmoid's one score per row (a binary
head, as openWakeWord's) is its logit z taken as the two classes' logits (0, z). AdamW over
the parameters that require gradients, a cosine (or step, or constant) schedule per epoch,
seeded shuffling; with an eval set, the weights of the best epoch (lowest eval loss) are
restored at the end and training stops after ``patience`` epochs without improvement.
``prox_mu`` adds FedProx's proximal term, mu/2 * ||w - w_start||^2, for federated clients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, UsageError

if TYPE_CHECKING:
    from ..signature import TensorSpec

SCHEDULES = ("cosine", "step", "constant")

_SOFTMAX = ("Softmax", "LogSoftmax")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: epochs, learning rate, batch size, schedule, seed, early stopping."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    schedule: str = "cosine"
    seed: int = 0
    patience: int | None = None  # epochs without eval improvement before stopping
    prox_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"epochs must be at least 1, not {self.epochs}", hint="--epochs 5")
        if not self.lr > 0:
            raise UsageError(f"the learning rate must be positive, not {self.lr}", hint="--lr 1e-3")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, not {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise UsageError(
                f"unknown schedule {self.schedule!r}", hint=f"use one of {', '.join(SCHEDULES)}"
            )


@dataclass
class Dataset:
    """Input arrays by the module's input names, and integer class labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def of(cls, module: Any, x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray) -> Dataset:
        """Arrays for ``module``: one array for a one-input model, or a dict by input name."""
        names = list(module.input_names)
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            if missing:
                raise DataError(
                    f"no data for input {missing[0]!r}",
                    hint=f"the model's inputs are {', '.join(names)}",
                )
            inputs = {n: np.asarray(x[n]) for n in names}
        elif len(names) == 1:
            inputs = {names[0]: np.asarray(x)}
        else:
            raise DataError(
                f"the model has {len(names)} inputs ({', '.join(names)}); one array given",
                hint="give the arrays by input name",
            )
        dtypes = getattr(module, "input_dtypes", {})
        inputs = {
            n: a.astype(dtypes[n], copy=False) if n in dtypes else a for n, a in inputs.items()
        }
        labels = np.asarray(y)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"labels must be a 1-D array of integer classes, not {labels.dtype} "
                f"{list(labels.shape)}",
                hint="store class indices (0..C-1) under the labels key",
            )
        for name, array in inputs.items():
            _check_sample_shape(name, array, getattr(module, "input_specs", {}).get(name))
            if array.shape[:1] != labels.shape:
                raise DataError(
                    f"input {name!r} has {array.shape[0] if array.ndim else 0} rows but there "
                    f"are {labels.shape[0]} labels",
                    hint="give one label per sample",
                )
        return cls(inputs, labels.astype(np.int64))


def _check_sample_shape(name: str, array: np.ndarray, spec: TensorSpec | None) -> None:
    """DataError unless each sample (``array`` past its first axis) has the rank and fixed
    dims the model's input declares past its batch axis."""
    if spec is None or spec.shape is None:
        return
    declared = spec.shape[1:]
    fits = array.ndim == len(spec.shape) and all(
        not isinstance(want, int) or want == have
        for want, have in zip(declared, array.shape[1:], strict=True)
    )
    if not fits:
        raise DataError(
            f"input {name!r} holds samples of shape {list(array.shape[1:])}, but the model takes "
            f"{spec.shape_text()}",
            hint="give one sample per row, shaped as the model's input past its batch axis",
        )


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    lr: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class TrainingLog:
    """Per-epoch figures, and which epoch's weights the module holds at the end."""

    curve: list[Epoch] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "curve": [e.to_dict() for e in self.curve],
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


Progress = Callable[[dict[str, Any]], None]
"""Called after every batch: {"epoch", "epochs", "batch", "batches", "loss"}."""


def train_epochs(
    module: Any,
    x: np.ndarray | Mapping[str, np.ndarray],
    y: np.ndarray,
    epochs: int,
    lr: float,
    *,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.01,
    schedule: str = "cosine",
    prox_mu: float = 0.0,
    progress: Progress | None = None,
) -> Any:
    """Train ``module`` (an ``OnnxModule``) for ``epochs`` on arrays; returns it, trained in
    place. The step a federated client runs: no eval set, no early stopping."""
    config = TrainConfig(epochs, lr, batch_size, weight_decay, schedule, seed, None, prox_mu)
    fit(module, Dataset.of(module, x, y), config, progress=progress)
    return module


def fit(
    module: Any,
    train: Dataset,
    config: TrainConfig,
    *,
    eval_set: Dataset | None = None,
    progress: Progress | None = None,
) -> TrainingLog:
    """Train in place; see the module docstring. Returns the per-epoch log."""
    import torch

    if len(train) == 0:
        raise DataError("the training data has no samples", hint="give at least one row")
    torch.manual_seed(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise UsageError(
            "every parameter is frozen: nothing to train",
            hint="freeze less (--freeze-until an earlier tensor) or add --new-head",
        )
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    start = [p.detach().clone() for p in params] if config.prox_mu > 0 else []
    logits_name = logits_tensor(module)
    generator = np.random.default_rng(config.seed)
    batches = math.ceil(len(train) / config.batch_size)
    log = TrainingLog()
    best: tuple[float, dict[str, Any]] | None = None
    waited = 0
    for epoch in range(config.epochs):
        lr = _rate(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        module.train()
        order = generator.permutation(len(train))
        total = 0.0
        for b in range(batches):
            rows = order[b * config.batch_size : (b + 1) * config.batch_size]
            loss = _loss(module, train, rows, logits_name)
            if config.prox_mu > 0:
                proximal = sum(((p - s) ** 2).sum() for p, s in zip(params, start, strict=True))
                loss = loss + config.prox_mu / 2 * proximal
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            if progress is not None:
                progress(
                    {
                        "epoch": epoch + 1,
                        "epochs": config.epochs,
                        "batch": b + 1,
                        "batches": batches,
                        "loss": float(loss.detach()),
                    }
                )
        module.eval()
        record = Epoch(epoch + 1, total / len(train), lr)
        log.curve.append(record)
        if eval_set is None:
            continue
        record.eval_loss, record.eval_accuracy = evaluate(module, eval_set)
        if best is None or record.eval_loss < best[0]:
            best = (record.eval_loss, copy.deepcopy(module.state_dict()))
            log.best_epoch, waited = epoch + 1, 0
        else:
            waited += 1
            if config.patience is not None and waited >= config.patience:
                log.stopped_early = True
                break
    module.eval()
    if best is not None:
        module.load_state_dict(best[1])
    elif log.curve:
        log.best_epoch = log.curve[-1].epoch
    return log


def evaluate(module: Any, data: Dataset, batch_size: int = 256) -> tuple[float, float]:
    """(mean cross-entropy, top-1 accuracy) of the module on ``data``."""
    import torch

    module.eval()
    name = logits_tensor(module)
    losses, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            logits = _logits(module, data, rows, name)
            labels = torch.from_numpy(data.labels[rows])
            _check_classes(logits, labels)
            losses += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
    return losses / max(len(data), 1), correct / max(len(data), 1)


def accuracy(module: Any, data: Dataset) -> float:
    """Top-1 accuracy (0..1) of the module's first output on ``data``."""
    return evaluate(module, data)[1]


def logits_tensor(module: Any) -> str:
    """The tensor the loss is taken on: the first output, or the input of the Softmax,
    LogSoftmax or Sigmoid that produces it."""
    output = module.output_names[0]
    step = _producer(module, output)
    return str(step.inputs[0]) if output_head(module) else str(output)


def output_head(module: Any) -> str:
    """What the first output is: "Softmax" (probabilities), "LogSoftmax" (their logs),
    "Sigmoid" (a binary classifier's one score per row, class 1's probability, as
    openWakeWord's heads), or "" (logits)."""
    step = _producer(module, module.output_names[0])
    kind = step.node.op_type if step is not None else ""
    return kind if kind in (*_SOFTMAX, "Sigmoid") else ""


def _producer(module: Any, tensor: str) -> Any:
    """The step whose node produces ``tensor``, or None."""
    return next((s for s in module.steps if tensor in s.outputs and s.node is not None), None)


def _loss(module: Any, data: Dataset, rows: np.ndarray, name: str) -> Any:
    import torch

    logits = _logits(module, data, rows, name)
    labels = torch.from_numpy(data.labels[rows])
    _check_classes(logits, labels)
    return torch.nn.functional.cross_entropy(logits, labels)


def _logits(module: Any, data: Dataset, rows: np.ndarray, name: str) -> Any:
    import torch

    feeds = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in data.inputs.items()}
    logits = module.tensors(feeds, [name])[name]
    if logits.dim() != 2:
        scores = [int(d) for d in logits.shape[1:] if int(d) != 1]
        if len(scores) > 1:  # [N, T, C]: a sequence of scores per row (CTC), not one class
            raise UsageError(
                f"the model's scores {name!r} come as {list(logits.shape)} for {len(rows)} "
                "rows: more than one class score per row (a sequence or a map); finetune "
                "trains classifiers, one label per row",
                hint="give a model whose output is [batch, classes] (or [batch, classes, 1, 1])",
            )
        logits = logits.reshape(logits.shape[0], -1)
    if output_head(module) == "Sigmoid":
        if int(logits.shape[1]) != 1:
            raise UsageError(
                f"the model's {int(logits.shape[1])} sigmoid scores per row are labels that "
                "hold together (multi-label); finetune trains one class per row",
                hint="give a model whose output is a softmax, or one sigmoid score per row",
            )
        # one logit z for class 1: the logits (0, z) give softmax (1 - sigmoid(z), sigmoid(z))
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits.float()


def _check_classes(logits: Any, labels: Any) -> None:
    classes = int(logits.shape[1])
    if labels.numel() and (int(labels.max()) >= classes or int(labels.min()) < 0):
        raise DataError(
            f"label {int(labels.max())} is out of range for a model with {classes} classes",
            hint=f"labels must be 0..{classes - 1}, or pass --new-head {int(labels.max()) + 1}",
        )


def _rate(config: TrainConfig, epoch: int) -> float:
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    if config.schedule == "step":
        return config.lr * 0.1 ** (epoch // max(1, config.epochs // 3))
    return config.lr
