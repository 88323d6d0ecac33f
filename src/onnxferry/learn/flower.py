"""Flower's rounds in simulation on this machine: the ClientApp, the ServerApp and the Ray
backend behind ``federated``.

    plan = RoundsPlan(ClientPlan("model.onnx", digest, ("a/train.npz", "b/train.npz"), "y"),
                      rounds=3, strategy="fedprox", mu=0.01)
    outcome = run_rounds(plan, initial_weights, on_round=lambda r, weights: {"accuracy": 0.9})
    outcome.train[1]["train-loss"], outcome.clients[1]["accuracy"], outcome.server[1]

One simulated SuperNode per client shard (its partition id is its place in ``shards``). Each
round the ServerApp's strategy (Flower's ``FedAvg``, or ``FedProx`` with ``proximal-mu`` in the
train config) sends the weights, every client loads them into the torch module converted from
the ONNX model, trains its shard with ``training.fit`` (FedProx's proximal term on top) and
replies with its weights and sample count; the strategy averages them, weighted by samples.
Then each client scores the averaged weights on its shard (Flower's federated evaluation), and
``on_round(round, weights)`` runs on the server (round 0: the weights before training).

Clients run in Ray actors, ``cpus`` of them at once (one CPU each), in a Ray instance started
here (``ray.init(num_cpus=cpus)``); Flower's backend shuts it down at the end. The actors block
the import of TensorFlow: Flower imports it, when installed, into every worker (seconds and
hundreds of MiB each) only to offer GPU memory growth. Flower's telemetry is off unless
FLWR_TELEMETRY_ENABLED says otherwise. An error in a client (its data, its training) stops the
run with that error, one line, rather than averaging the replies that came back.

Flower 1.42 marks ``run_simulation`` (its Python entry to the simulation) deprecated in favour
of ``flwr run``, which wants a Flower app project and a SuperLink; this module is where that
change would land.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import errors
from ..errors import FerryError, InputError, UsageError, one_line

STRATEGIES = ("fedavg", "fedprox")

Weights = dict[str, np.ndarray]
"""Trainable weights by ONNX tensor name."""

OnRound = Callable[[int, Weights], Mapping[str, float]]
"""The server's evaluation after each round (and at round 0): figures for the round."""


@dataclass(frozen=True)
class ClientPlan:
    """What every client needs: the model (path and digest, checked), the shards by partition
    id (.npz files: the model's inputs and ``labels_key``), and how to train locally."""

    model: str
    digest: str
    shards: tuple[str, ...]
    labels_key: str | None
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0


@dataclass(frozen=True)
class RoundsPlan:
    """The run: the clients' plan, the rounds, the strategy and the CPUs Ray may use."""

    clients: ClientPlan
    rounds: int
    strategy: str = "fedavg"
    mu: float = 0.0
    cpus: int = 2
    verbose: bool = False

    def __post_init__(self) -> None:
        check_plan(self.rounds, self.strategy, self.mu, self.cpus, len(self.clients.shards))


def check_plan(rounds: int, strategy: str, mu: float, cpus: int, clients: int) -> None:
    """UsageError for settings a run cannot have."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}", hint=f"use {' or '.join(STRATEGIES)}")
    if rounds < 1:
        raise UsageError(f"rounds must be at least 1, not {rounds}", hint="--rounds 3")
    if mu < 0 or (strategy == "fedprox" and mu == 0):
        raise UsageError(f"FedProx needs a positive --mu, not {mu:g}", hint="--mu 0.01 (or fedavg)")
    if mu > 0 and strategy != "fedprox":
        raise UsageError("--mu is FedProx's", hint="add --strategy fedprox, or drop --mu")
    if cpus < 1:
        raise UsageError(f"cpus must be at least 1, not {cpus}")
    if clients < 1:
        raise UsageError("no clients given", hint="--clients DIR1,DIR2")


@dataclass
class RoundsOutcome:
    """Flower's figures by round: the clients' training (``train-loss``, weighted by samples),
    their evaluation of the averaged weights on their shards (``accuracy``, ``loss``), and
    what ``on_round`` returned (from round 0); ``weights``: the last round's average."""

    train: dict[int, dict[str, float]] = field(default_factory=dict)
    clients: dict[int, dict[str, float]] = field(default_factory=dict)
    server: dict[int, dict[str, float]] = field(default_factory=dict)
    weights: Weights = field(default_factory=dict)


def run_rounds(plan: RoundsPlan, initial: Weights, on_round: OnRound) -> RoundsOutcome:
    """Run ``plan.rounds`` rounds of Flower in simulation from ``initial``; see the module
    docstring. Errors from ``on_round`` or a client stop the run and are raised here."""
    flwr = import_flower()
    outcome = RoundsOutcome()
    server = _server_app(plan, initial, on_round, outcome)
    client = client_app(plan.clients)
    with _quiet_flower(plan.verbose), _ray(plan):
        flwr.simulation.run_simulation(
            server,
            client,
            num_supernodes=len(plan.clients.shards),
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
            verbose_logging=plan.verbose,
        )
    if len(outcome.server) < plan.rounds + 1:
        raise RuntimeError(f"Flower stopped after {max(outcome.server, default=0)} rounds")
    return outcome


# --- the server ---------------------------------------------------------------------------


def _server_app(
    plan: RoundsPlan, initial: Weights, on_round: OnRound, outcome: RoundsOutcome
) -> Any:
    from flwr.app import Array, ArrayRecord, MetricRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg, FedProx

    base = FedProx if plan.strategy == "fedprox" else FedAvg
    strict = type(f"Strict{base.__name__}", (_StrictReplies, base), {})
    clients = len(plan.clients.shards)
    options: dict[str, Any] = {
        "min_train_nodes": clients,
        "min_evaluate_nodes": clients,
        "min_available_nodes": clients,
    }
    if plan.strategy == "fedprox":
        options["proximal_mu"] = plan.mu
    app = ServerApp()

    def evaluate(server_round: int, arrays: Any) -> Any:
        figures = dict(on_round(server_round, to_weights(arrays)))
        outcome.server[server_round] = figures
        record: dict[str, Any] = dict(figures)
        return MetricRecord(record)

    @app.main()
    def main(grid: Any, context: Any) -> None:
        result = strict(**options).start(
            grid=grid,
            initial_arrays=ArrayRecord({k: Array(np.asarray(v)) for k, v in initial.items()}),
            num_rounds=plan.rounds,
            evaluate_fn=evaluate,
        )
        outcome.train = _figures(result.train_metrics_clientapp)
        outcome.clients = _figures(result.evaluate_metrics_clientapp)
        outcome.weights = to_weights(result.arrays)

    return app


class _StrictReplies:
    """Mixed into Flower's strategy: a reply that carries an error stops the run with it
    (Flower would average the replies that came back and go on)."""

    def aggregate_train(self, server_round: int, replies: Any) -> Any:
        replies = list(replies)
        raise_client_error(replies)
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
        replies = list(replies)
        raise_client_error(replies)
        return super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]


def raise_client_error(replies: list[Any]) -> None:
    """Raise the first error among the replies: a FerryError a client sent back as such, or
    RuntimeError with the last line of what Flower caught."""
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(
                f"a Flower client failed: {one_line(reply.error.reason, 400, line='last')}"
            )
        error = sent_error(reply.content)
        if error is not None:
            raise error


def sent_error(content: Any) -> FerryError | None:
    """The FerryError a client's reply content carries (``ERROR_KEY``), if any."""
    if ERROR_KEY not in content:
        return None
    record = content[ERROR_KEY]
    kind = getattr(errors, str(record["kind"]), None)
    if not (isinstance(kind, type) and issubclass(kind, FerryError)):
        kind = InputError
    return kind(str(record["message"]))


def _figures(metrics: Mapping[int, Any]) -> dict[int, dict[str, float]]:
    return {r: {k: float(v) for k, v in record.items()} for r, record in metrics.items()}


def to_weights(arrays: Any) -> Weights:
    """A Flower ``ArrayRecord`` as numpy arrays by name."""
    return {name: array.numpy() for name, array in arrays.items()}


# --- the clients --------------------------------------------------------------------------

ERROR_KEY = "ferry-error"
"""A client's reply that holds a FerryError instead of results: {"kind", "message"}."""


def client_app(plan: ClientPlan) -> Any:
    """The ClientApp: ``train`` and ``evaluate`` on the shard of the node's partition."""
    import_flower()
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Any, context: Any) -> Any:
        partition = int(context.node_config["partition-id"])
        return _reply(message, lambda: client_train(plan, message.content, partition))

    @app.evaluate()
    def evaluate(message: Any, context: Any) -> Any:
        partition = int(context.node_config["partition-id"])
        return _reply(message, lambda: client_evaluate(plan, message.content, partition))

    return app


def _reply(message: Any, work: Callable[[], Any]) -> Any:
    from flwr.app import ConfigRecord, Message, RecordDict

    try:
        content = work()
    except FerryError as e:
        content = RecordDict(
            {ERROR_KEY: ConfigRecord({"kind": type(e).__name__, "message": str(e)})}
        )
    return Message(content=content, reply_to=message)


def client_train(plan: ClientPlan, content: Any, partition: int) -> Any:
    """One client's round on the shard of ``partition``: load the weights of the message's
    ``content`` (a RecordDict), train, and return the new weights, ``num-examples`` and
    ``train-loss`` (the reply's content)."""
    import_flower()
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    from .training import TrainConfig, fit

    config = content["config"]
    module, data = _client_state(plan, partition)
    load_weights(module, to_weights(content["arrays"]))
    server_round = int(config.get("server-round", 0))
    train_config = TrainConfig(
        epochs=plan.local_epochs,
        lr=plan.lr,
        batch_size=plan.batch_size,
        seed=plan.seed + 1000 * server_round + partition,
        prox_mu=float(config.get("proximal-mu", 0.0)),
    )
    log = fit(module, data, train_config)
    weights = trainable_weights(module)
    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord(
                {"num-examples": len(data), "train-loss": log.curve[-1].train_loss}
            ),
        }
    )


def client_evaluate(plan: ClientPlan, content: Any, partition: int) -> Any:
    """One client's evaluation of the averaged weights on its shard: ``accuracy``, ``loss``."""
    import_flower()
    from flwr.app import MetricRecord, RecordDict

    from .training import evaluate

    module, data = _client_state(plan, partition)
    load_weights(module, to_weights(content["arrays"]))
    loss, accuracy = evaluate(module, data)
    metrics: dict[str, Any] = {"num-examples": len(data), "loss": loss, "accuracy": accuracy}
    return RecordDict({"metrics": MetricRecord(metrics)})


_CLIENT_CACHE: dict[tuple[ClientPlan, int], tuple[Any, Any]] = {}
"""Per actor process: the converted module and the shard, built on first use."""


def _client_state(plan: ClientPlan, partition: int) -> tuple[Any, Any]:
    key = (plan, partition)
    if key not in _CLIENT_CACHE:
        from ..model import Model
        from ..torchgraph.module import to_torch
        from .shards import load_shard

        model = Model.load(plan.model)
        if model.digest != plan.digest:
            raise InputError(
                f"{plan.model} changed while the federated run used it",
                hint="leave the model file alone until the run ends",
            )
        module = to_torch(model, check=False)  # the server checked this file's conversion
        data = load_shard(plan.shards[partition], model, plan.labels_key).dataset(module)
        _CLIENT_CACHE[key] = (module, data)
    return _CLIENT_CACHE[key]


def trainable_weights(module: Any) -> Weights:
    """The module's trainable parameters as numpy arrays, by ONNX tensor name."""
    names = {path: name for name, path in module.tensor_paths.items()}
    return {
        names[path]: p.detach().cpu().numpy().copy()
        for path, p in module.named_parameters()
        if p.requires_grad and path in names
    }


def load_weights(module: Any, weights: Mapping[str, np.ndarray]) -> None:
    """Copy ``weights`` (by ONNX tensor name) into the module's parameters."""
    import torch

    with torch.no_grad():
        for name, value in weights.items():
            module.parameter(name).copy_(torch.from_numpy(np.asarray(value)))


# --- Flower and Ray -----------------------------------------------------------------------


def import_flower() -> Any:
    """``flwr`` with its simulation parts, imported once: TensorFlow kept out, the warning
    filters as they were (Flower sets DeprecationWarning to "once" for the whole process),
    and typer's deprecation warning about click (Flower's logger imports typer) silenced."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        with warnings.catch_warnings(), _no_tensorflow():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"typer(\.|$)")
            import flwr
            import flwr.simulation
    except ImportError as e:
        raise UsageError(
            f"federated learning needs Flower with its simulation extra ({one_line(e, 120)})",
            hint="pip install 'onnxferry[learn]'",
        ) from e
    return flwr


@contextlib.contextmanager
def _no_tensorflow() -> Iterator[None]:
    """Make ``import tensorflow`` fail for a while, unless TensorFlow is already loaded."""
    if "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


def worker_setup() -> None:
    """Ray's worker setup hook: keep TensorFlow out of the client actors (module docstring)."""
    sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]


@contextlib.contextmanager
def _ray(plan: RoundsPlan) -> Iterator[None]:
    """A local Ray instance with ``plan.cpus`` CPUs for Flower's backend (which shuts it
    down); shut down here too if Flower stopped before it could."""
    import ray

    if not ray.is_initialized():
        with warnings.catch_warnings():
            # Ray 2.55 announces a change to CUDA_VISIBLE_DEVICES for actors without GPUs;
            # the clients ask for none, so it is not the user's to act on.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
            try:
                ray.init(
                    num_cpus=plan.cpus,
                    include_dashboard=False,
                    logging_level=logging.DEBUG if plan.verbose else logging.WARNING,
                    log_to_driver=plan.verbose,
                    runtime_env={"worker_process_setup_hook": worker_setup},
                )
            except Exception as e:  # Ray's own errors, or an OSError from its processes
                raise InputError(
                    f"Ray could not start a local instance for Flower: {one_line(e, 200)}",
                    hint="run with -v for Ray's logs; free memory in /dev/shm or give --cpus",
                ) from e
    try:
        yield
    finally:
        if ray.is_initialized():
            ray.shutdown()


@contextlib.contextmanager
def _quiet_flower(verbose: bool) -> Iterator[None]:
    """Flower logs every step at INFO (and its Python API's deprecation): errors only, unless
    verbose."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
