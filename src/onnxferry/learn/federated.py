"""`ferry federated`: federated averaging over an ONNX model's weights, Flower in simulation.

    final = federated("digits.onnx", ["clients/a", "clients/b", "clients/c"], "fed/",
                      rounds=3, eval_data="val.npz")          # fed/round-1.onnx ... round-3.onnx
    run = final.last_report(FederatedRun).result
    [r.accuracy for r in run.history]                       # held-out accuracy, rounds 0..3
    federated(..., strategy="fedprox", mu=0.01, local_epochs=2)
    federated(..., registry="reg/", name="digits-fed")      # each round a version; lineage chain

Each client directory holds its shard (``train.npz``, or its only .npz: the model's inputs and
integer labels, see ``shards``); every shard is read and checked here before Flower starts, so
a bad one is one line naming its directory. The model becomes a torch module (``to_torch``,
checked against ONNX Runtime on the first shard's rows); its trainable weights (float
initializers) are what the clients train and the server averages: Flower's ``FedAvg``, weighted
by samples, or ``FedProx`` (the clients add mu/2 * ||w - w_round||^2 to their loss). See
``flower`` for how the rounds run.

After every round the averaged weights go into the server's module and out through the
finetune path's export (``onnxferry.convert`` with the TorchScript exporter, parity against
the module: a mismatch is a VerificationError and the run stops) to ``round-N.onnx``, written
atomically; with ``eval_data``, the written model is scored by ONNX Runtime (accuracy, loss),
and round 0 scores the model as given. ``report.json`` and ``report.html`` (accuracy per
round, plotted) go next to the rounds. With ``registry`` and ``name`` every round is a new
version whose parent is the previous round's (round 1's: ``parent``, or the registered version
of the input model if there is one).

Secure aggregation is out of scope: the server sees every client's weights in the clear.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FerryError, UsageError
from ..model import Model
from ..parity import Parity, Tolerance
from ..report import Report, Table
from .flower import (
    ClientPlan,
    RoundsPlan,
    Weights,
    check_plan,
    load_weights,
    run_rounds,
    trainable_weights,
)
from .shards import Shard, load_shard

SAMPLE_ROWS = 8
"""Rows of the first shard that check the ONNX -> torch conversion and each round's export."""


@dataclass
class Client:
    """One client: its directory, the file read, its samples and their labels."""

    source: str
    file: str
    samples: int
    classes: dict[int, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Round:
    """One round's figures: 0 is the model as given. ``accuracy`` / ``loss``: the written model
    on the eval data (ONNX Runtime); ``clients_*``: Flower's federated evaluation (each client
    on its shard, weighted by samples); ``train_loss``: the clients' last local epoch."""

    round: int
    path: str | None = None
    digest: str | None = None
    accuracy: float | None = None
    loss: float | None = None
    train_loss: float | None = None
    clients_accuracy: float | None = None
    clients_loss: float | None = None
    parity: Parity | None = None
    registered: str | None = None
    parent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = dict(vars(self))
        fields["parity"] = self.parity.to_dict() if self.parity else None
        return fields


@dataclass
class FederatedRun:
    """What `federated` did (ReportBody): the clients, the settings and every round."""

    source: str
    outdir: str
    strategy: str
    mu: float
    rounds: int
    local_epochs: int
    lr: float
    batch_size: int
    eval_data: str | None
    clients: list[Client]
    history: list[Round] = field(default_factory=list)
    conversion_parity: Parity | None = None
    exporter: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.parity is None or r.parity.ok for r in self.history)

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in vars(self).items() if k not in ("clients", "history")}
        fields["conversion_parity"] = (
            self.conversion_parity.to_dict() if self.conversion_parity else None
        )
        fields["clients"] = [c.to_dict() for c in self.clients]
        fields["history"] = [r.to_dict() for r in self.history]
        return fields

    def tables(self) -> list[Table]:
        strategy = f"{self.strategy} (mu {self.mu:g})" if self.strategy == "fedprox" else "fedavg"
        return [
            Table(
                f"federated {self.source}: {strategy}, {self.rounds} rounds x "
                f"{self.local_epochs} local epochs -> {self.outdir}",
                ("client", "file", "samples", "labels"),
                [(c.source, c.file, c.samples, _labels_text(c.classes)) for c in self.clients],
            ),
            Table(
                f"rounds (accuracy and loss on {self.eval_data or 'no eval data'})",
                (
                    "round",
                    "model",
                    "accuracy",
                    "loss",
                    "clients accuracy",
                    "train loss",
                    "export max abs",
                    "registered",
                ),
                [
                    (
                        r.round,
                        Path(r.path).name if r.path else "(given)",
                        r.accuracy,
                        r.loss,
                        r.clients_accuracy,
                        r.train_loss,
                        r.parity.max_abs if r.parity else None,
                        r.registered,
                    )
                    for r in self.history
                ],
            ),
        ]

    def figures(self) -> list[str]:
        from ..plots import lines_svg

        series: dict[str, list[tuple[float, float]]] = {}
        for label, attribute in (
            ("eval accuracy", "accuracy"),
            ("clients accuracy", "clients_accuracy"),
        ):
            points = [
                (float(r.round), float(getattr(r, attribute)))
                for r in self.history
                if getattr(r, attribute) is not None
            ]
            if points:
                series[label] = points
        if not series:
            return []
        return [lines_svg(series, "round", "accuracy", "accuracy per round")]


def federated(
    model: Model | str | Path,
    clients: Sequence[str | Path],
    outdir: str | Path,
    *,
    rounds: int = 3,
    strategy: str = "fedavg",
    mu: float = 0.0,
    local_epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 32,
    labels_key: str | None = None,
    eval_data: str | Path | None = None,
    seed: int = 0,
    cpus: int = 2,
    tolerance: Tolerance | None = None,
    registry: str | Path | None = None,
    name: str | None = None,
    parent: str | None = None,
    verbose: bool = False,
    progress: Callable[[Round], None] | None = None,
) -> Model:
    """Run ``rounds`` of federated training over ``clients`` (directories, or .npz files) and
    write every round's model, verified, into ``outdir``; see the module docstring. Returns
    the last round's Model; its report is ``model.last_report(FederatedRun)``. UsageError /
    DataError / FeedError (exit 2) for bad options or data; VerificationError (exit 1) when
    a conversion does not match. ``progress`` sees each round's record as it is written
    (without the clients' figures, which Flower hands over at the end)."""
    from ..torchgraph.module import refuse_branches, to_torch

    started = time.perf_counter()
    if (registry is None) != (name is None):
        raise UsageError("--registry and --name go together", hint="give both, or neither")
    if local_epochs < 1:
        raise UsageError(f"local epochs must be at least 1, not {local_epochs}")
    check_plan(rounds, strategy, mu, cpus, len(clients))
    source = model if isinstance(model, Model) else Model.load(model)
    if source.path is None:
        raise UsageError("federated needs the model as a file", hint="save it first")
    if isinstance(clients, (str, Path)):
        raise UsageError("clients must be a list of directories", hint='["a/", "b/"]')
    if len(set(map(str, clients))) != len(clients):
        raise UsageError("a client directory is named twice", hint="list each once")
    shards = [load_shard(c, source, labels_key) for c in clients]
    held = None
    if eval_data is not None:
        held = load_shard(eval_data, source, labels_key, what=f"--eval {eval_data}")
    sample = {k: v[:SAMPLE_ROWS] for k, v in shards[0].inputs.items()}
    module = to_torch(source, feeds=[sample], tolerance=tolerance)
    refuse_branches(module, "each round's export back to ONNX, a trace")
    _check_labels(module, [*shards, *([held] if held else [])])
    plan = RoundsPlan(
        ClientPlan(
            str(source.path),
            source.digest,
            tuple(str(s.source) for s in shards),
            labels_key,
            local_epochs,
            lr,
            batch_size,
            seed,
        ),
        rounds,
        strategy,
        mu,
        cpus,
        verbose,
    )
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    run = FederatedRun(
        source=source.name,
        outdir=str(out),
        strategy=strategy,
        mu=mu,
        rounds=rounds,
        local_epochs=local_epochs,
        lr=lr,
        batch_size=batch_size,
        eval_data=str(eval_data) if eval_data is not None else None,
        clients=[
            Client(str(c), str(s.source), s.samples, s.classes)
            for c, s in zip(clients, shards, strict=True)
        ],
        conversion_parity=module.parity,
    )
    writer = _RoundWriter(source, module, out, sample, held, tolerance, run, progress)
    if registry is not None and name is not None:
        writer.registry = _Lineage(registry, name, parent, source)
    outcome = run_rounds(plan, trainable_weights(module), writer.on_round)
    for r in run.history:
        r.train_loss = outcome.train.get(r.round, {}).get("train-loss")
        r.clients_accuracy = outcome.clients.get(r.round, {}).get("accuracy")
        r.clients_loss = outcome.clients.get(r.round, {}).get("loss")
    run.seconds = time.perf_counter() - started
    report = Report("federated", run)
    report.save(out / "report.json")
    report.save_html(out / "report.html", title=f"onnxferry federated {source.name}")
    final = writer.final
    assert final is not None  # run_rounds ran every round or raised
    final.provenance.append(report)
    return final


# --- rounds -----------------------------------------------------------------------------------


class _RoundWriter:
    """The server's evaluation hook: round 0 scores the given model; every later round exports
    the averaged weights, verified, scores the written model and registers it."""

    def __init__(
        self,
        source: Model,
        module: Any,
        out: Path,
        sample: Mapping[str, np.ndarray],
        held: Shard | None,
        tolerance: Tolerance | None,
        run: FederatedRun,
        progress: Callable[[Round], None] | None,
    ) -> None:
        self.source, self.module, self.out = source, module, out
        self.sample, self.held, self.tolerance, self.run = dict(sample), held, tolerance, run
        self.progress = progress
        self.registry: _Lineage | None = None
        self.final: Model | None = None

    def on_round(self, server_round: int, weights: Weights) -> dict[str, float]:
        record = Round(server_round)
        if server_round == 0:
            model = self.source
        else:
            model = self._export(server_round, weights)
            record.path, record.digest = str(model.path), model.digest
            record.parity = _last_parity(model)
            self.final = model
        figures: dict[str, float] = {}
        if self.held is not None:
            record.loss, record.accuracy = self._score(model)
            figures = {"accuracy": record.accuracy, "loss": record.loss}
        if self.registry is not None and server_round > 0:
            record.registered, record.parent = self.registry.add(model)
        self.run.history.append(record)
        if self.progress is not None:
            self.progress(record)
        return figures

    def _export(self, server_round: int, weights: Weights) -> Model:
        from ..convert import Conversion, convert
        from .finetune import export_source

        load_weights(self.module, weights)
        path = self.out / f"round-{server_round}.onnx"
        model = convert(
            export_source(self.module, self.sample),
            path,
            inputs=[self.sample],
            tolerance=self.tolerance,
        )
        self.run.exporter = model.last_report(Conversion).result.chosen
        return model

    def _score(self, model: Model) -> tuple[float, float]:
        from .finetune import onnx_scores
        from .training import output_head

        assert self.held is not None
        return onnx_scores(model, self.held.dataset(self.module), output_head(self.module))


def _last_parity(model: Model) -> Parity | None:
    from ..convert import Conversion

    conversion = model.last_report(Conversion).result
    chosen = next((a for a in conversion.attempts if a.exporter == conversion.chosen), None)
    return chosen.parity if chosen else None


class _Lineage:
    """Registers each round as the next version of ``name``, parented on the round before."""

    def __init__(self, registry: str | Path, name: str, parent: str | None, source: Model):
        from ..registry import Registry

        self.registry = Registry.open(registry, create=True)
        self.name = name
        self.parent = parent or next(
            (v.ref for v in self.registry.versions() if v.digest == source.digest), None
        )

    def add(self, model: Model) -> tuple[str, str | None]:
        assert model.path is not None
        parent = self.parent
        record = self.registry.add(model.path, self.name, parent=parent)
        self.parent = record.ref
        return record.ref, parent


# --- checks -----------------------------------------------------------------------------------


def _check_labels(module: Any, shards: Sequence[Shard]) -> None:
    """Every label must be a class the model scores: one line naming the shard if not."""
    from .training import Dataset, evaluate

    for shard in shards:
        top = int(shard.labels.max())
        row = {k: v[:1] for k, v in shard.inputs.items()}
        try:
            evaluate(module, Dataset(row, np.array([top], np.int64)))
        except FerryError as e:
            raise type(e)(f"{shard.source}: {e.message}", hint=e.hint) from e


def _labels_text(classes: Mapping[int, int]) -> str:
    """Labels as text: a range ("0-3") when consecutive, else a list ("1,5")."""
    keys = sorted(classes)
    if keys and keys == list(range(keys[0], keys[-1] + 1)) and len(keys) > 2:
        return f"{keys[0]}-{keys[-1]}"
    return ",".join(map(str, keys))
